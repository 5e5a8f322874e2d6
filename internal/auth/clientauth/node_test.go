package clientauth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// nodeAssertion runs tools/jsverify/assertion.mjs, which signs with the npm
// jose package, and returns the assertion it prints. It skips the test when
// node or the script's node_modules are absent.
func nodeAssertion(t *testing.T, args ...string) string {
	t.Helper()
	dir, err := filepath.Abs("../../../tools/jsverify")
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on the PATH; install Node.js and run `npm ci --prefix tools/jsverify` to check assertions signed by the npm jose package")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "jose")); err != nil {
		t.Skip("tools/jsverify/node_modules is missing; run `npm ci --prefix tools/jsverify` to check assertions signed by the npm jose package")
	}
	cmd := exec.CommandContext(t.Context(), node, append([]string{filepath.Join(dir, "assertion.mjs")}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node assertion.mjs %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return strings.TrimSpace(stdout.String())
}

func writePKCS8(t *testing.T, key crypto.Signer) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestNodeSignedAssertions(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	// The JWK key file has no kid: the script names the key by its RFC 7638
	// thumbprint, which must agree with go-jose's.
	tp, err := (&jose.JSONWebKey{Key: &ec.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	thumb := base64.RawURLEncoding.EncodeToString(tp)
	privJWK, _ := json.Marshal(jose.JSONWebKey{Key: ec})
	jwkPath := filepath.Join(t.TempDir(), "key.jwk")
	if err := os.WriteFile(jwkPath, privJWK, 0o600); err != nil {
		t.Fatal(err)
	}
	reg := registry{
		"node-ec":  {ID: "node-ec", JWKS: jwksJSON(t, jose.JSONWebKey{Key: &ec.PublicKey, KeyID: "ec-kid"}, jose.JSONWebKey{Key: &ec.PublicKey, KeyID: thumb})},
		"node-rsa": {ID: "node-rsa", JWKS: jwksJSON(t, jose.JSONWebKey{Key: &rk.PublicKey, KeyID: "rsa-kid", Algorithm: "RS384"})},
	}
	cases := []struct {
		name   string
		client string
		args   []string
	}{
		{"ES384 PEM", "node-ec", []string{"--key", writePKCS8(t, ec), "--kid", "ec-kid"}},
		{"ES384 JWK, thumbprint kid", "node-ec", []string{"--key", jwkPath}},
		{"RS384 PEM", "node-rsa", []string{"--key", writePKCS8(t, rk), "--kid", "rsa-kid", "--alg", "RS384"}},
	}
	replay := &MemoryJTIs{}
	for _, c := range cases {
		a := nodeAssertion(t, append([]string{"--client-id", c.client, "--aud", tokenURL}, c.args...)...)
		id, err := (&Verifier{}).VerifyClientAssertion(context.Background(), a, tokenURL, reg, replay, time.Now())
		if err != nil || id != c.client {
			t.Fatalf("%s: Node-signed assertion: id %q, err %v", c.name, id, err)
		}
		// The same assertion again is a replay.
		if _, err := (&Verifier{}).VerifyClientAssertion(context.Background(), a, tokenURL, reg, replay, time.Now()); err == nil {
			t.Fatalf("%s: replayed Node-signed assertion accepted", c.name)
		}
	}
	// A Node-signed assertion for another audience is refused.
	a := nodeAssertion(t, "--client-id", "node-ec", "--aud", tokenURL+"x", "--key", jwkPath)
	if _, err := (&Verifier{}).VerifyClientAssertion(context.Background(), a, tokenURL, reg, replay, time.Now()); err == nil {
		t.Fatal("Node-signed assertion for another aud accepted")
	}
}
