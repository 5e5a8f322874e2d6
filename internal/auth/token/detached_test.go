package token

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/jsverify"
)

func TestDetached(t *testing.T) {
	key, err := GenerateKey("")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := New(Config{Issuer: "https://a", Audience: "https://a", Signing: key})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("the export"))
	sig, err := iss.SignDetached(sum[:])
	if err != nil {
		t.Fatal(err)
	}
	if parts := strings.Split(sig, "."); len(parts) != 3 || parts[1] != "" {
		t.Fatalf("not a detached compact JWS: %s", sig)
	}
	if kid, err := iss.VerifyDetached(sig, sum[:]); err != nil || kid != key.ID {
		t.Fatalf("verify: kid %q, %v", kid, err)
	}
	other := sha256.Sum256([]byte("the export, modified"))
	if _, err := iss.VerifyDetached(sig, other[:]); err == nil {
		t.Fatal("a signature verified over other content")
	}
	k2, _ := GenerateKey("")
	iss2, _ := New(Config{Issuer: "https://a", Audience: "https://a", Signing: k2})
	if _, err := iss2.VerifyDetached(sig, sum[:]); err == nil {
		t.Fatal("a signature verified with another server's keys")
	}
	// An access token is not a detached signature.
	if _, err := iss.VerifyDetached(strings.Replace(sig, ".", ".e30.", 1), sum[:]); err == nil {
		t.Fatal("a JWS with an attached payload was accepted")
	}
}

// TestDetachedJose checks the detached signature with the npm jose package.
func TestDetachedJose(t *testing.T) {
	key, _ := GenerateKey("")
	iss, err := New(Config{Issuer: "https://a", Audience: "https://a", Signing: key})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("the export"))
	sig, err := iss.SignDetached(sum[:])
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		Valid bool
		Kid   string
		Typ   string
		Error string
	}
	for _, tc := range []struct {
		payload []byte
		valid   bool
	}{{sum[:], true}, {[]byte("something else"), false}} {
		var res result
		jsverify.Run(t, "detached.mjs", map[string]any{"jws": sig, "payload": base64.RawURLEncoding.EncodeToString(tc.payload), "jwks": iss.JWKS()}, &res)
		if res.Valid != tc.valid || (tc.valid && (res.Kid != key.ID || res.Typ != DetachedType)) {
			t.Errorf("jose on payload %x: %+v, want valid=%v", tc.payload[:4], res, tc.valid)
		}
	}
}
