package oidc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
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

// idp is a real OpenID provider's metadata and key endpoints on 127.0.0.1.
type idp struct {
	srv            *httptest.Server
	rsa            *rsa.PrivateKey
	ec             *ecdsa.PrivateKey
	discoveryHits  atomic.Int32
	jwksHits       atomic.Int32
	mu             sync.Mutex
	keys           []jose.JSONWebKey
	jwksCC         string
	discoveryIssue string // overrides the issuer in the discovery document
}

func newIDP(t *testing.T) *idp {
	t.Helper()
	p := &idp{jwksCC: "max-age=120"}
	var err error
	if p.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if p.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	p.keys = []jose.JSONWebKey{
		{Key: &p.rsa.PublicKey, KeyID: "r1", Use: "sig"},
		{Key: &p.ec.PublicKey, KeyID: "e1", Algorithm: "ES256", Use: "sig"},
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/realm/.well-known/openid-configuration":
			p.discoveryHits.Add(1)
			iss := p.srv.URL + "/realm"
			if p.discoveryIssue != "" {
				iss = p.discoveryIssue
			}
			w.Header().Set("Cache-Control", "max-age=3600")
			json.NewEncoder(w).Encode(map[string]any{"issuer": iss, "jwks_uri": p.srv.URL + "/realm/certs"})
		case "/realm/certs":
			p.jwksHits.Add(1)
			w.Header().Set("Cache-Control", p.jwksCC)
			json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: p.keys})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *idp) issuer() string { return p.srv.URL + "/realm" }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func sign(t *testing.T, alg string, key any, header, claims map[string]any) string {
	t.Helper()
	s, err := jwstest.Sign(alg, key, header, claims)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (p *idp) claims(now time.Time) map[string]any {
	return map[string]any{
		"iss": p.issuer(), "sub": "user-7", "aud": []string{"phr", "account"},
		"exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix(), "nbf": now.Unix(),
		"ext": map[string]any{"patient": "Patient/p-42"},
		"scp": []string{"patient/*.rs", "openid"},
	}
}

func TestVerifyMapsClaims(t *testing.T) {
	p := newIDP(t)
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	v, err := NewVerifier(&jwks.Cache{Now: clk.now}, Issuer{
		URL: p.issuer(), Audience: []string{"phr"}, PatientClaim: "ext.patient", ScopeClaim: "scp",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range []struct {
		alg string
		key any
		kid string
	}{{"RS256", p.rsa, "r1"}, {"ES256", p.ec, "e1"}, {"PS256", p.rsa, "r1"}, {"RS384", p.rsa, "r1"}} {
		tok := sign(t, c.alg, c.key, map[string]any{"kid": c.kid}, p.claims(clk.now()))
		id, err := v.Verify(ctx, tok, clk.now())
		if err != nil {
			t.Fatalf("%s: %v", c.alg, err)
		}
		if id.Subject != "user-7" || id.Patient != "p-42" || id.Scope != "patient/*.rs openid" || id.Issuer != p.issuer() {
			t.Fatalf("%s: identity %+v", c.alg, id)
		}
	}
	if d, j := p.discoveryHits.Load(), p.jwksHits.Load(); d != 1 || j != 1 {
		t.Fatalf("discovery fetched %d times, JWKS %d times, want 1 and 1", d, j)
	}
	// A token without kid is tried against the keys that fit its alg.
	tok := sign(t, "ES256", p.ec, nil, p.claims(clk.now()))
	if _, err := v.Verify(ctx, tok, clk.now()); err != nil {
		t.Fatalf("no kid: %v", err)
	}
	// A space-separated scope string in the default claim.
	v2, _ := NewVerifier(&jwks.Cache{Now: clk.now}, Issuer{URL: p.issuer(), Audience: []string{"account"}, JWKSURL: p.srv.URL + "/realm/certs"})
	c := p.claims(clk.now())
	c["scope"] = " user/*.rs   launch "
	id, err := v2.Verify(ctx, sign(t, "RS256", p.rsa, map[string]any{"kid": "r1"}, c), clk.now())
	if err != nil || id.Scope != "user/*.rs launch" || id.Patient != "" {
		t.Fatalf("scope string: %+v %v", id, err)
	}
	if p.discoveryHits.Load() != 1 {
		t.Fatal("discovery used although a JWKS URL was configured")
	}
}

func TestJWKSCacheHonoursCacheControl(t *testing.T) {
	p := newIDP(t)
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	v, err := NewVerifier(&jwks.Cache{Now: clk.now, MinRefetch: time.Second}, Issuer{URL: p.issuer(), Audience: []string{"phr"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	verify := func() {
		t.Helper()
		tok := sign(t, "RS256", p.rsa, map[string]any{"kid": "r1"}, p.claims(clk.now()))
		if _, err := v.Verify(ctx, tok, clk.now()); err != nil {
			t.Fatal(err)
		}
	}
	verify()
	clk.advance(100 * time.Second)
	verify()
	if n := p.jwksHits.Load(); n != 1 {
		t.Fatalf("JWKS fetched %d times within max-age=120, want 1", n)
	}
	clk.advance(30 * time.Second)
	verify()
	if n := p.jwksHits.Load(); n != 2 {
		t.Fatalf("JWKS fetched %d times after max-age passed, want 2", n)
	}
	// The provider rotates in a key: the unknown kid triggers one refetch.
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.mu.Lock()
	p.keys = append(p.keys, jose.JSONWebKey{Key: &k2.PublicKey, KeyID: "e2", Use: "sig"})
	p.mu.Unlock()
	clk.advance(2 * time.Second)
	if _, err := v.Verify(ctx, sign(t, "ES256", k2, map[string]any{"kid": "e2"}, p.claims(clk.now())), clk.now()); err != nil {
		t.Fatalf("rotated key: %v", err)
	}
	if n := p.jwksHits.Load(); n != 3 {
		t.Fatalf("JWKS fetched %d times, want 3", n)
	}
	// With no-store every verification fetches the set again.
	p.mu.Lock()
	p.jwksCC = "no-store"
	p.mu.Unlock()
	clk.advance(200 * time.Second)
	verify()
	verify()
	if n := p.jwksHits.Load(); n != 5 {
		t.Fatalf("JWKS fetched %d times with no-store, want 5", n)
	}
}

func TestVerifyRejects(t *testing.T) {
	p := newIDP(t)
	other := newIDP(t)
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	secret := []byte("0123456789abcdef0123456789abcdef")
	v, err := NewVerifier(&jwks.Cache{Now: clk.now}, Issuer{URL: p.issuer(), Audience: []string{"phr"}, PatientClaim: "patient"},
		Issuer{URL: "https://hmac.example", Audience: []string{"phr"}, SharedSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	now := clk.now()
	with := func(change map[string]any) map[string]any {
		c := p.claims(now)
		for k, val := range change {
			if val == nil {
				delete(c, k)
			} else {
				c[k] = val
			}
		}
		return c
	}
	r1 := map[string]any{"kid": "r1"}
	pubDER, _ := x509.MarshalPKIXPublicKey(&p.rsa.PublicKey)
	smallSecret := []byte("short")
	cases := map[string]struct{ token, want string }{
		"untrusted issuer": {sign(t, "RS256", other.rsa, r1, other.claims(now)), "not trusted"},
		"wrong aud":        {sign(t, "RS256", p.rsa, r1, with(map[string]any{"aud": "someone-else"})), "aud"},
		"expired":          {sign(t, "RS256", p.rsa, r1, with(map[string]any{"exp": now.Add(-5 * time.Minute).Unix()})), "expired"},
		"no exp":           {sign(t, "RS256", p.rsa, r1, with(map[string]any{"exp": nil})), "no exp"},
		"nbf in future":    {sign(t, "RS256", p.rsa, r1, with(map[string]any{"nbf": now.Add(time.Hour).Unix()})), "not valid before"},
		"iat in future":    {sign(t, "RS256", p.rsa, r1, with(map[string]any{"iat": now.Add(time.Hour).Unix()})), "issued in the future"},
		"bad signature":    {sign(t, "RS256", other.rsa, r1, p.claims(now)), "signature does not verify"},
		"unknown kid":      {sign(t, "RS256", p.rsa, map[string]any{"kid": "zz"}, p.claims(now)), `kid "zz"`},
		"alg none":         {sign(t, "none", nil, r1, p.claims(now)), `alg "none"`},
		"HS256 keyed with the public key": {sign(t, "HS256", pubDER, r1, p.claims(now)),
			`alg "HS256" is not accepted for issuer`},
		"ES256 alg with the RSA kid": {sign(t, "ES256", p.ec, r1, p.claims(now)), "signature does not verify"},
		"HS256 with the wrong secret": {sign(t, "HS256", append(smallSecret, secret...), nil,
			map[string]any{"iss": "https://hmac.example", "aud": "phr", "exp": now.Add(time.Minute).Unix()}), "signature does not verify"},
		"patient claim not a string": {sign(t, "RS256", p.rsa, r1, with(map[string]any{"patient": 42})), "patient"},
		"scope claim not a string":   {sign(t, "RS256", p.rsa, r1, with(map[string]any{"scope": map[string]any{"a": 1}})), "scopes"},
		"garbage":                    {"a.b.c", "not a compact JWS"},
	}
	for name, c := range cases {
		_, err := v.Verify(context.Background(), c.token, now)
		var oe *oauth.Error
		if !errors.As(err, &oe) || oe.Code != oauth.InvalidToken {
			t.Errorf("%s: err = %v, want invalid_token", name, err)
			continue
		}
		if !strings.Contains(oe.Description, c.want) {
			t.Errorf("%s: description %q does not mention %q", name, oe.Description, c.want)
		}
	}
	if n := other.discoveryHits.Load() + other.jwksHits.Load(); n != 0 {
		t.Fatalf("the untrusted issuer was contacted %d times", n)
	}
	// The configured shared secret does verify HS256 for its issuer.
	good := sign(t, "HS256", secret, nil, map[string]any{"iss": "https://hmac.example", "sub": "s", "aud": "phr", "exp": now.Add(time.Minute).Unix()})
	if id, err := v.Verify(context.Background(), good, now); err != nil || id.Subject != "s" {
		t.Fatalf("HS256 with configured secret: %+v %v", id, err)
	}
}

func TestDiscoveryIssuerMismatch(t *testing.T) {
	p := newIDP(t)
	p.discoveryIssue = "https://impostor.example"
	v, _ := NewVerifier(nil, Issuer{URL: p.issuer(), Audience: []string{"phr"}})
	now := time.Now()
	_, err := v.Verify(context.Background(), sign(t, "RS256", p.rsa, map[string]any{"kid": "r1"}, p.claims(now)), now)
	if oauth.Code(err) != oauth.ServerError || !strings.Contains(err.Error(), "does not match the configured") {
		t.Fatalf("err = %v, want a server_error about the discovery issuer", err)
	}
}

func TestNewVerifierRejectsUnsafeConfig(t *testing.T) {
	cases := map[string]Issuer{
		"HS256 without secret": {URL: "https://a", Audience: []string{"x"}, Algorithms: []string{"HS256"}},
		"none":                 {URL: "https://a", Audience: []string{"x"}, Algorithms: []string{"none"}},
		"short secret":         {URL: "https://a", Audience: []string{"x"}, SharedSecret: []byte("short")},
		"no audience":          {URL: "https://a"},
		"no URL":               {Audience: []string{"x"}},
	}
	for name, cfg := range cases {
		if _, err := NewVerifier(nil, cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewVerifier(nil); err == nil {
		t.Error("no issuers accepted")
	}
}
