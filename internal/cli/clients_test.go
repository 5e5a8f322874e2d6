package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

func TestClientsAndUsersCommands(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "ES384"}}})
	jwksFile := filepath.Join(dir, "jwks.json")
	os.WriteFile(jwksFile, set, 0o600)
	data := filepath.Join(dir, "data")

	code, out, errOut := run(t, "clients", "add", "--data", data, "--name", "Lab system", "--jwks", jwksFile, "--scope", "system/*.read")
	if code != 0 {
		t.Fatalf("clients add: %d %s", code, errOut)
	}
	m := regexp.MustCompile(`client_id: (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no client_id in %q", out)
	}
	id := m[1]
	if code, out, _ = run(t, "clients", "list", "--data", data); code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "Lab system") {
		t.Fatalf("clients list: %d %s", code, out)
	}
	// A private key must not be registered; nor a client without keys.
	priv, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key, KeyID: "k1", Algorithm: "ES384"}}})
	os.WriteFile(jwksFile, priv, 0o600)
	if code, _, errOut = run(t, "clients", "add", "--data", data, "--name", "x", "--jwks", jwksFile, "--scope", "system/*.rs"); code != 2 || !strings.Contains(errOut, "private") {
		t.Fatalf("private JWKS accepted: %d %s", code, errOut)
	}
	if code, _, errOut = run(t, "clients", "add", "--data", data, "--name", "x", "--scope", "system/*.rs"); code != 2 {
		t.Fatalf("client without keys accepted: %d %s", code, errOut)
	}
	if code, _, _ = run(t, "clients", "remove", "--data", data, id); code != 0 {
		t.Fatal("clients remove failed")
	}
	if _, out, _ = run(t, "clients", "list", "--data", data); strings.Contains(out, id) {
		t.Fatalf("removed client still listed: %s", out)
	}

	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("correct horse battery\n"), 0o600)
	if code, out, errOut = run(t, "users", "add", "--data", data, "--email", "Ann@Example.org", "--role", "patient", "--patient", "p1", "--password-file", pw); code != 0 {
		t.Fatalf("users add: %d %s", code, errOut)
	}
	if code, _, errOut = run(t, "users", "add", "--data", data, "--email", "bob@example.org", "--role", "patient", "--password-file", pw); code != 2 || !strings.Contains(errOut, "Patient") {
		t.Fatalf("patient user without --patient: %d %s", code, errOut)
	}
	if code, _, errOut = run(t, "users", "add", "--data", data, "--email", "ann@example.org", "--role", "admin", "--password-file", pw); code != 2 || !strings.Contains(errOut, "exists") {
		t.Fatalf("duplicate email: %d %s", code, errOut)
	}
	if _, out, _ = run(t, "users", "list", "--data", data); !strings.Contains(out, "ann@example.org") || !strings.Contains(out, "p1") {
		t.Fatalf("users list: %s", out)
	}
	if code, _, _ = run(t, "users", "remove", "--data", data, "ann@example.org"); code != 0 {
		t.Fatal("users remove failed")
	}
	if _, out, _ = run(t, "users", "list", "--data", data); strings.Contains(out, "ann@") {
		t.Fatalf("removed user still listed: %s", out)
	}
}
