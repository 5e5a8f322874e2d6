package authserver_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/phr-project/phr/internal/auth/oidc"
	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/server/servertest"
)

// TestExternalIssuer runs an OpenID provider on 127.0.0.1 (discovery +
// JWKS with Cache-Control) and checks that the server accepts its tokens,
// maps the patient claim to the compartment, and refuses wrong aud, expired,
// not-yet-valid and foreign tokens.
func TestExternalIssuer(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var jwksFetches, discoveryFetches atomic.Int32
	var issuer string
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=3600")
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			discoveryFetches.Add(1)
			json.NewEncoder(w).Encode(map[string]string{"issuer": issuer, "jwks_uri": issuer + "/keys"})
		case "/keys":
			jwksFetches.Add(1)
			json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "idp-1", Algorithm: "RS256", Use: "sig"}}})
		default:
			http.NotFound(w, r)
		}
	}))
	defer idp.Close()
	issuer = idp.URL

	s := servertest.Start(t, "sqlite", servertest.Options{Configure: func(c *server.Config) {
		c.OIDC = []oidc.Issuer{{URL: issuer, Audience: []string{"phr"}, PatientClaim: "ext.patient_id"}}
		c.OIDCScope = "patient/*.rs"
	}})
	ann := create(t, s, "Patient", `{"resourceType":"Patient"}`)
	bob := create(t, s, "Patient", `{"resourceType":"Patient"}`)

	sign := func(k *rsa.PrivateKey, kid string, claims map[string]any) string {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
		if err != nil {
			t.Fatal(err)
		}
		p, _ := json.Marshal(claims)
		jws, err := signer.Sign(p)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := jws.CompactSerialize()
		return out
	}
	now := time.Now()
	claims := func(mod func(map[string]any)) map[string]any {
		c := map[string]any{"iss": issuer, "sub": "ann@hospital", "aud": "phr", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix(),
			"scope": "openid profile", "ext": map[string]any{"patient_id": ann}}
		if mod != nil {
			mod(c)
		}
		return c
	}
	good := sign(key, "idp-1", claims(nil))
	for range 3 {
		if r := s.Do("GET", "Patient/"+ann, good, nil); r.Status != 200 {
			t.Fatalf("IdP token reading its patient: %d %s", r.Status, r.Body)
		}
	}
	if r := s.Do("GET", "Patient/"+bob, good, nil); r.Status != http.StatusForbidden && r.Status != http.StatusNotFound {
		t.Fatalf("IdP token reading another patient: %d %s", r.Status, r.Body)
	}
	if r := s.Do("POST", "Patient", good, `{"resourceType":"Patient"}`); r.Status != http.StatusForbidden {
		t.Fatalf("IdP token with the default read scope wrote: %d %s", r.Status, r.Body)
	}
	if n := jwksFetches.Load(); n != 1 {
		t.Errorf("JWKS fetched %d times; max-age=3600 should keep it cached", n)
	}
	if n := discoveryFetches.Load(); n != 1 {
		t.Errorf("discovery fetched %d times", n)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	bad := map[string]string{
		"wrong aud":        sign(key, "idp-1", claims(func(c map[string]any) { c["aud"] = "someone-else" })),
		"expired":          sign(key, "idp-1", claims(func(c map[string]any) { c["exp"] = now.Add(-10 * time.Minute).Unix() })),
		"not yet valid":    sign(key, "idp-1", claims(func(c map[string]any) { c["nbf"] = now.Add(10 * time.Minute).Unix() })),
		"untrusted iss":    sign(key, "idp-1", claims(func(c map[string]any) { c["iss"] = "https://evil.example" })),
		"bad signature":    sign(other, "idp-1", claims(nil)),
		"unknown kid":      sign(other, "idp-2", claims(nil)),
		"no patient claim": sign(key, "idp-1", claims(func(c map[string]any) { delete(c, "ext") })),
	}
	for name, tok := range bad {
		r := s.Do("GET", "Patient/"+ann, tok, nil)
		if r.Status != http.StatusUnauthorized && !(name == "no patient claim" && r.Status == http.StatusForbidden) {
			t.Errorf("%s: %d %s", name, r.Status, r.Body)
		}
		if name == "wrong aud" && !strings.Contains(string(r.Body), "aud") {
			t.Errorf("wrong aud: the error does not say so: %s", r.Body)
		}
	}
}
