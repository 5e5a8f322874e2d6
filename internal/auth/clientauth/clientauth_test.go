package clientauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/phr-project/phr/internal/auth/internal/jwstest"
	"github.com/phr-project/phr/internal/auth/jwks"
	"github.com/phr-project/phr/internal/auth/oauth"
)

const tokenURL = "https://phr.example/auth/token"

// signJWT signs with the standard-library JWS builder (see jwstest).
func signJWT(t testing.TB, alg string, key any, header, claims map[string]any) string {
	t.Helper()
	s, err := jwstest.Sign(alg, key, header, claims)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// registry is an in-memory client registry, the store's role.
type registry map[string]Client

func (r registry) Client(_ context.Context, id string) (Client, error) {
	c, ok := r[id]
	if !ok {
		return Client{}, fmt.Errorf("client %s: %w", id, ErrUnknownClient)
	}
	return c, nil
}

func jwksJSON(t testing.TB, keys ...jose.JSONWebKey) []byte {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type fixture struct {
	now     time.Time
	ec      *ecdsa.PrivateKey // kid "ec-1", inline client "inline"
	rsa     *rsa.PrivateKey   // kid "rsa-1", URL client "remote"
	reg     registry
	jwksURL string
	hits    *atomic.Int32
	served  *[]jose.JSONWebKey
	mu      *sync.Mutex
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ec, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{now: time.Unix(1_800_000_000, 0), ec: ec, rsa: rk, hits: &atomic.Int32{}, mu: &sync.Mutex{}}
	served := []jose.JSONWebKey{{Key: &rk.PublicKey, KeyID: "rsa-1", Algorithm: "RS384", Use: "sig"}}
	f.served = &served
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		f.mu.Lock()
		defer f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=300")
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: *f.served})
	}))
	t.Cleanup(srv.Close)
	f.jwksURL = srv.URL + "/jwks.json"
	f.reg = registry{
		"inline": {ID: "inline", JWKS: jwksJSON(t, jose.JSONWebKey{Key: &ec.PublicKey, KeyID: "ec-1", Algorithm: "ES384", Use: "sig"})},
		"remote": {ID: "remote", JWKSURL: f.jwksURL},
	}
	return f
}

func (f *fixture) claims(client string) map[string]any {
	return map[string]any{
		"iss": client, "sub": client, "aud": tokenURL,
		"exp": f.now.Add(4 * time.Minute).Unix(), "iat": f.now.Unix(),
		"jti": base64.RawURLEncoding.EncodeToString(randBytes(12)),
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func (f *fixture) verifier() *Verifier {
	return &Verifier{Keys: &jwks.Cache{Now: func() time.Time { return f.now }}}
}

func TestValidAssertions(t *testing.T) {
	f := newFixture(t)
	v := f.verifier()
	replay := &MemoryJTIs{Now: func() time.Time { return f.now }}
	ctx := context.Background()

	es := signJWT(t, "ES384", f.ec, map[string]any{"kid": "ec-1"}, f.claims("inline"))
	id, err := v.VerifyClientAssertion(ctx, es, tokenURL, f.reg, replay, f.now)
	if err != nil || id != "inline" {
		t.Fatalf("ES384 inline: id %q err %v", id, err)
	}
	for n := range 3 {
		rs := signJWT(t, "RS384", f.rsa, map[string]any{"kid": "rsa-1", "jku": f.jwksURL}, f.claims("remote"))
		id, err := v.VerifyClientAssertion(ctx, rs, tokenURL, f.reg, replay, f.now)
		if err != nil || id != "remote" {
			t.Fatalf("RS384 via URL (%d): id %q err %v", n, id, err)
		}
	}
	if n := f.hits.Load(); n != 1 {
		t.Fatalf("JWKS URL fetched %d times for 3 assertions within max-age, want 1", n)
	}
	// No typ header, aud as an array, exp just inside the lifetime plus skew.
	c := f.claims("inline")
	c["aud"] = []string{"https://other.example", tokenURL}
	c["exp"] = f.now.Add(DefaultMaxLifetime + 30*time.Second).Unix()
	a := signJWT(t, "ES384", f.ec, map[string]any{"kid": "ec-1", "typ": nil}, c)
	if _, err := v.VerifyClientAssertion(ctx, a, tokenURL, f.reg, replay, f.now); err != nil {
		t.Fatalf("lenient but valid assertion rejected: %v", err)
	}
	// exp a little in the past is within the skew.
	c = f.claims("inline")
	c["exp"] = f.now.Add(-20 * time.Second).Unix()
	a = signJWT(t, "ES384", f.ec, map[string]any{"kid": "ec-1"}, c)
	if _, err := v.VerifyClientAssertion(ctx, a, tokenURL, f.reg, replay, f.now); err != nil {
		t.Fatalf("assertion 20s past exp (skew 60s) rejected: %v", err)
	}
}

func TestRejectedAssertions(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	other, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	smallRSA, _ := rsa.GenerateKey(rand.Reader, 1024)
	pubDER, _ := x509.MarshalPKIXPublicKey(&f.ec.PublicKey)
	f.reg["small"] = Client{ID: "small", JWKS: jwksJSON(t, jose.JSONWebKey{Key: &smallRSA.PublicKey, KeyID: "s", Algorithm: "RS384"})}
	f.reg["mixed"] = Client{ID: "mixed", JWKS: jwksJSON(t, jose.JSONWebKey{Key: &f.rsa.PublicKey, KeyID: "k"})}
	f.reg["nokeys"] = Client{ID: "nokeys"}

	with := func(client string, change map[string]any) map[string]any {
		c := f.claims(client)
		for k, v := range change {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	ecKid := map[string]any{"kid": "ec-1"}
	hs256 := signJWT(t, "HS256", pubDER, ecKid, f.claims("inline"))
	replayed := signJWT(t, "ES384", f.ec, ecKid, f.claims("inline"))

	cases := []struct {
		name, assertion, want string
		code                  string
	}{
		{"wrong aud", signJWT(t, "ES384", f.ec, ecKid, with("inline", map[string]any{"aud": "https://phr.example/auth/token/"})), "aud", ""},
		{"expired exp", signJWT(t, "ES384", f.ec, ecKid, with("inline", map[string]any{"exp": f.now.Add(-2 * time.Minute).Unix()})), "expired", ""},
		{"exp too far ahead", signJWT(t, "ES384", f.ec, ecKid, with("inline", map[string]any{"exp": f.now.Add(10 * time.Minute).Unix()})), "more than 5m0s ahead", ""},
		{"no exp", signJWT(t, "ES384", f.ec, ecKid, with("inline", map[string]any{"exp": nil})), "no exp", ""},
		{"no jti", signJWT(t, "ES384", f.ec, ecKid, with("inline", map[string]any{"jti": nil})), "no jti", ""},
		{"nbf in future", signJWT(t, "ES384", f.ec, ecKid, with("inline", map[string]any{"nbf": f.now.Add(3 * time.Minute).Unix()})), "not valid before", ""},
		{"replayed jti", replayed, "already used", ""},
		{"unknown kid inline", signJWT(t, "ES384", f.ec, map[string]any{"kid": "ec-2"}, f.claims("inline")), `no registered key with kid "ec-2"`, ""},
		{"unknown kid at URL", signJWT(t, "RS384", f.rsa, map[string]any{"kid": "rsa-9"}, f.claims("remote")), `no key with kid "rsa-9"`, ""},
		{"no kid", signJWT(t, "ES384", f.ec, nil, f.claims("inline")), "no kid", ""},
		{"bad signature", signJWT(t, "ES384", other, ecKid, f.claims("inline")), "signature does not verify", ""},
		{"alg none", signJWT(t, "none", nil, ecKid, f.claims("inline")), `alg "none" is not accepted`, ""},
		{"HS256 keyed with the public key", hs256, `alg "HS256" is not accepted`, ""},
		{"RS256 not configured", signJWT(t, "RS256", f.rsa, map[string]any{"kid": "rsa-1"}, f.claims("remote")), `alg "RS256" is not accepted`, ""},
		{"jku mismatch", signJWT(t, "RS384", f.rsa, map[string]any{"kid": "rsa-1", "jku": "https://attacker.example/jwks.json"}, f.claims("remote")), "jku", ""},
		{"jku on inline client", signJWT(t, "ES384", f.ec, map[string]any{"kid": "ec-1", "jku": f.jwksURL}, f.claims("inline")), "jku", ""},
		{"embedded jwk", signJWT(t, "ES384", other, map[string]any{"kid": "ec-1", "jwk": map[string]any{"kty": "EC", "crv": "P-384",
			"x": b64(other.PublicKey.X.FillBytes(make([]byte, 48))), "y": b64(other.PublicKey.Y.FillBytes(make([]byte, 48)))}}, f.claims("inline")), "embed", ""},
		{"typ not JWT", signJWT(t, "ES384", f.ec, map[string]any{"kid": "ec-1", "typ": "at+jwt"}, f.claims("inline")), "typ", ""},
		{"iss differs from sub", signJWT(t, "ES384", f.ec, ecKid, with("inline", map[string]any{"sub": "remote"})), "differs from iss", ""},
		{"no iss", signJWT(t, "ES384", f.ec, ecKid, with("inline", map[string]any{"iss": nil, "sub": nil})), "no iss", ""},
		{"unknown client", signJWT(t, "ES384", f.ec, ecKid, f.claims("nobody")), `client "nobody" is not registered`, ""},
		{"client without keys", signJWT(t, "ES384", f.ec, ecKid, f.claims("nokeys")), "no registered keys", ""},
		{"RSA key under 2048 bits", signJWT(t, "RS384", smallRSA, map[string]any{"kid": "s"}, f.claims("small")), "shorter than 2048", ""},
		{"EC alg with an RSA key", signJWT(t, "ES384", f.ec, map[string]any{"kid": "k"}, f.claims("mixed")), "needs an EC key", ""},
		{"not a JWS", "abc.def", "not a compact JWS", ""},
		{"empty", "", "missing", oauth.InvalidRequest},
	}
	v := f.verifier()
	replay := &MemoryJTIs{Now: func() time.Time { return f.now }}
	if _, err := v.VerifyClientAssertion(ctx, replayed, tokenURL, f.reg, replay, f.now); err != nil {
		t.Fatalf("first use of the replayed assertion: %v", err)
	}
	for _, c := range cases {
		_, err := v.VerifyClientAssertion(ctx, c.assertion, tokenURL, f.reg, replay, f.now)
		code := c.code
		if code == "" {
			code = oauth.InvalidClient
		}
		var oe *oauth.Error
		if !errors.As(err, &oe) || oe.Code != code {
			t.Errorf("%s: err = %v, want %s", c.name, err, code)
			continue
		}
		if !strings.Contains(oe.Description, c.want) {
			t.Errorf("%s: description %q does not mention %q", c.name, oe.Description, c.want)
		}
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func TestConfiguredAlgorithms(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	replay := &MemoryJTIs{}
	v := f.verifier()
	v.Algorithms = []string{"RS384", "ES384", "RS256"}
	a := signJWT(t, "RS256", f.rsa, map[string]any{"kid": "rsa-1"}, f.claims("remote"))
	// The published key says alg RS384, so RS256 must still fail for it.
	if _, err := v.VerifyClientAssertion(ctx, a, tokenURL, f.reg, replay, f.now); err == nil {
		t.Fatal("RS256 accepted for a key published with alg RS384")
	}
	f.mu.Lock()
	*f.served = append(*f.served, jose.JSONWebKey{Key: &f.rsa.PublicKey, KeyID: "rsa-legacy", Use: "sig"})
	f.mu.Unlock()
	v.Keys.MinRefetch = time.Nanosecond
	a = signJWT(t, "RS256", f.rsa, map[string]any{"kid": "rsa-legacy"}, f.claims("remote"))
	f.now = f.now.Add(time.Second) // let the unknown-kid refetch happen
	if id, err := v.VerifyClientAssertion(ctx, a, tokenURL, f.reg, replay, f.now); err != nil || id != "remote" {
		t.Fatalf("configured RS256 with a rotated-in key: %q %v", id, err)
	}
	if n := f.hits.Load(); n != 2 {
		t.Fatalf("%d JWKS fetches, want 2 (one refetch for the new kid)", n)
	}

	for _, bad := range []string{"HS256", "none"} {
		v := &Verifier{Algorithms: []string{"ES384", bad}}
		a := signJWT(t, "ES384", f.ec, map[string]any{"kid": "ec-1"}, f.claims("inline"))
		_, err := v.VerifyClientAssertion(ctx, a, tokenURL, f.reg, replay, f.now)
		if oauth.Code(err) != oauth.ServerError || !strings.Contains(err.Error(), bad) {
			t.Errorf("Verifier configured with %s: err = %v, want server_error naming it", bad, err)
		}
	}
}

func TestReplayIsAtomic(t *testing.T) {
	f := newFixture(t)
	v := f.verifier()
	replay := &MemoryJTIs{Now: func() time.Time { return f.now }}
	a := signJWT(t, "ES384", f.ec, map[string]any{"kid": "ec-1"}, f.claims("inline"))
	var ok atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := v.VerifyClientAssertion(context.Background(), a, tokenURL, f.reg, replay, f.now); err == nil {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if n := ok.Load(); n != 1 {
		t.Fatalf("%d of 8 concurrent uses of one assertion succeeded, want 1", n)
	}
}

func TestMemoryJTIsForget(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	m := &MemoryJTIs{Now: func() time.Time { return now }}
	ctx := context.Background()
	if err := m.UseJTI(ctx, "c", "j", now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := m.UseJTI(ctx, "other", "j", now.Add(time.Minute)); err != nil {
		t.Fatalf("same jti for another client: %v", err)
	}
	if err := m.UseJTI(ctx, "c", "j", now.Add(time.Minute)); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay: err = %v", err)
	}
	now = now.Add(2 * time.Minute)
	if err := m.UseJTI(ctx, "c", "j", now.Add(time.Minute)); err != nil {
		t.Fatalf("jti after its lifetime: %v", err)
	}
	m.mu.Lock()
	n := len(m.seen)
	m.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d entries kept, want 1 (expired ones pruned)", n)
	}
}

func BenchmarkVerifyClientAssertion(b *testing.B) {
	for _, alg := range []string{"ES384", "RS384"} {
		b.Run(alg, func(b *testing.B) {
			var key crypto.Signer
			var reg registry
			if alg == "ES384" {
				k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
				key, reg = k, registry{"c": {ID: "c", JWKS: jwksJSON(b, jose.JSONWebKey{Key: &k.PublicKey, KeyID: "k"})}}
			} else {
				k, _ := rsa.GenerateKey(rand.Reader, 2048)
				key, reg = k, registry{"c": {ID: "c", JWKS: jwksJSON(b, jose.JSONWebKey{Key: &k.PublicKey, KeyID: "k"})}}
			}
			now := time.Now()
			assertions := make([]string, 0, 256)
			for n := range cap(assertions) {
				assertions = append(assertions, signJWT(b, alg, key, map[string]any{"kid": "k"}, map[string]any{
					"iss": "c", "sub": "c", "aud": tokenURL, "exp": now.Add(time.Minute).Unix(), "jti": fmt.Sprint(n)}))
			}
			v := &Verifier{}
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				// A fresh replay store per call keeps every jti new.
				if _, err := v.VerifyClientAssertion(context.Background(), assertions[n%len(assertions)], tokenURL, reg, &MemoryJTIs{}, now); err != nil {
					b.Fatal(err)
				}
				n++
			}
		})
	}
}
