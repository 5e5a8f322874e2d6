package authserver_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/phr-project/phr/internal/auth/token"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// backend is a registered backend-services client with its private key.
type backend struct {
	id   string
	kid  string
	alg  jose.SignatureAlgorithm
	key  crypto.Signer
	jwks []byte
}

func newBackend(t testing.TB, alg jose.SignatureAlgorithm, kid string) *backend {
	t.Helper()
	var key crypto.Signer
	var err error
	switch alg {
	case jose.ES384:
		key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case jose.RS384:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		t.Fatal(err)
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: kid, Algorithm: string(alg), Use: "sig"}}}
	j, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return &backend{kid: kid, alg: alg, key: key, jwks: j}
}

// register registers the backend through the admin API.
func (b *backend) register(t testing.TB, s *servertest.Server, scope string, extra map[string]any) {
	t.Helper()
	body := map[string]any{"name": "backend " + b.kid, "scope": scope}
	if _, ok := extra["jwks_url"]; !ok {
		body["jwks"] = json.RawMessage(b.jwks)
	}
	for k, v := range extra {
		body[k] = v
	}
	resp := s.Do("POST", "/admin/clients", s.AdminToken(), body, "Content-Type", "application/json")
	if resp.Status != http.StatusCreated {
		t.Fatalf("register client: %d %s", resp.Status, resp.Body)
	}
	b.id = resp.JSON(t)["id"].(string)
}

type assertionOpts struct {
	aud, iss, sub, jti, kid, jku string
	exp                          time.Duration
	key                          crypto.Signer
	alg                          jose.SignatureAlgorithm
}

func (b *backend) assertion(t testing.TB, tokenURL string, o assertionOpts) string {
	t.Helper()
	if o.aud == "" {
		o.aud = tokenURL
	}
	if o.iss == "" {
		o.iss = b.id
	}
	if o.sub == "" {
		o.sub = o.iss
	}
	if o.jti == "" {
		o.jti = token.NewID()
	}
	if o.kid == "" {
		o.kid = b.kid
	}
	if o.exp == 0 {
		o.exp = 4 * time.Minute
	}
	if o.key == nil {
		o.key = b.key
	}
	if o.alg == "" {
		o.alg = b.alg
	}
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", o.kid)
	if o.jku != "" {
		opts = opts.WithHeader("jku", o.jku)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: o.alg, Key: o.key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	payload, _ := json.Marshal(map[string]any{"iss": o.iss, "sub": o.sub, "aud": o.aud, "jti": o.jti,
		"exp": now.Add(o.exp).Unix(), "iat": now.Unix()})
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// handMade builds a JWS with any header and a signature function, for
// algorithms go-jose refuses to produce (none) or that must be refused (HS256).
func handMade(header, claims map[string]any, sign func(input []byte) []byte) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	return input + "." + base64.RawURLEncoding.EncodeToString(sign([]byte(input)))
}

type tokenResult struct {
	status int
	header http.Header
	body   map[string]any
}

func postToken(t *testing.T, s *servertest.Server, form url.Values) tokenResult {
	t.Helper()
	resp, err := s.Client.PostForm(s.URL+"/auth/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("token response %d is not JSON: %s", resp.StatusCode, b)
	}
	return tokenResult{resp.StatusCode, resp.Header, m}
}

func ccForm(scope, assertion string) url.Values {
	return url.Values{"grant_type": {"client_credentials"}, "scope": {scope},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertion}}
}

func TestBackendServices(t *testing.T) {
	for _, dialect := range storetest.Dialects() {
		t.Run(dialect, func(t *testing.T) { testBackendServices(t, dialect) })
	}
}

func testBackendServices(t *testing.T, dialect string) {
	s := servertest.Start(t, dialect)
	tokenURL := s.URL + "/auth/token"

	// Some data to read.
	pat := s.Do("POST", "Patient", s.AdminToken(), `{"resourceType":"Patient","name":[{"family":"Backend"}]}`)
	if pat.Status != http.StatusCreated {
		t.Fatalf("create patient: %d %s", pat.Status, pat.Body)
	}
	patID := pat.JSON(t)["id"].(string)

	es := newBackend(t, jose.ES384, "es-1")
	es.register(t, s, "system/*.read", nil)
	rs := newBackend(t, jose.RS384, "rs-1")
	rs.register(t, s, "system/Patient.rs system/Observation.rs", nil)

	t.Run("discovery", func(t *testing.T) {
		for _, path := range []string{"/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"} {
			resp := s.Do("GET", path, "", nil)
			if resp.Status != 200 || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("%s: %d %s", path, resp.Status, resp.Header.Get("Content-Type"))
			}
			m := resp.JSON(t)
			if m["token_endpoint"] != tokenURL || m["authorization_endpoint"] != s.URL+"/auth/authorize" {
				t.Errorf("%s endpoints: %v %v", path, m["token_endpoint"], m["authorization_endpoint"])
			}
			for _, k := range []string{"grant_types_supported", "capabilities", "code_challenge_methods_supported",
				"token_endpoint_auth_methods_supported", "token_endpoint_auth_signing_alg_values_supported", "scopes_supported"} {
				if _, ok := m[k]; !ok {
					t.Errorf("%s lacks %s", path, k)
				}
			}
			b, _ := json.Marshal(m)
			for _, want := range []string{`"client_credentials"`, `"authorization_code"`, `"S256"`, `"RS384"`, `"ES384"`, `"private_key_jwt"`,
				`"client-confidential-asymmetric"`, `"permission-v1"`, `"permission-v2"`, `"launch-standalone"`, `"context-standalone-patient"`} {
				if !strings.Contains(string(b), want) {
					t.Errorf("%s lacks %s", path, want)
				}
			}
		}
	})

	t.Run("ES384 v1 scope", func(t *testing.T) {
		r := postToken(t, s, ccForm("system/*.read", es.assertion(t, tokenURL, assertionOpts{})))
		if r.status != 200 {
			t.Fatalf("token: %d %v", r.status, r.body)
		}
		if r.header.Get("Cache-Control") != "no-store" {
			t.Errorf("Cache-Control %q", r.header.Get("Cache-Control"))
		}
		if r.body["expires_in"] != float64(300) || r.body["scope"] != "system/*.read" || !strings.EqualFold(r.body["token_type"].(string), "bearer") {
			t.Errorf("token response %v", r.body)
		}
		if _, ok := r.body["refresh_token"]; ok {
			t.Error("client_credentials returned a refresh token")
		}
		at := r.body["access_token"].(string)
		if got := s.Do("GET", "Patient/"+patID, at, nil); got.Status != 200 {
			t.Fatalf("read with the token: %d %s", got.Status, got.Body)
		}
		if got := s.Do("POST", "Patient", at, `{"resourceType":"Patient"}`); got.Status != http.StatusForbidden {
			t.Fatalf("write with a read-only token: %d %s", got.Status, got.Body)
		}
	})

	t.Run("RS384 v2 scope subset", func(t *testing.T) {
		// system/*.rs asked, system/Patient.rs + Observation.rs registered:
		// the subset is granted, nothing more.
		r := postToken(t, s, ccForm("system/*.rs", rs.assertion(t, tokenURL, assertionOpts{})))
		if r.status != 200 {
			t.Fatalf("token: %d %v", r.status, r.body)
		}
		if r.body["scope"] != "system/Patient.rs system/Observation.rs" {
			t.Errorf("granted %q", r.body["scope"])
		}
		at := r.body["access_token"].(string)
		if got := s.Do("GET", "Patient/"+patID, at, nil); got.Status != 200 {
			t.Fatalf("read with the token: %d %s", got.Status, got.Body)
		}
		enc := s.Do("POST", "Encounter", s.AdminToken(), `{"resourceType":"Encounter","status":"finished","class":{"code":"AMB"}}`)
		if got := s.Do("GET", "Encounter/"+enc.JSON(t)["id"].(string), at, nil); got.Status != http.StatusForbidden {
			t.Fatalf("read of an unscoped type: %d %s", got.Status, got.Body)
		}
	})

	t.Run("v2 query scope", func(t *testing.T) {
		q := newBackend(t, jose.ES384, "q-1")
		q.register(t, s, "system/Observation.rs?category=laboratory", nil)
		r := postToken(t, s, ccForm("system/Observation.rs?category=laboratory", q.assertion(t, tokenURL, assertionOpts{})))
		if r.status != 200 || r.body["scope"] != "system/Observation.rs?category=laboratory" {
			t.Fatalf("token: %d %v", r.status, r.body)
		}
	})

	expired := func() string {
		tok, err := s.App.Tokens.Sign(token.Claims{Subject: es.id, ClientID: es.id, Scope: "system/*.read", IssuedAt: time.Now().Add(-time.Hour), Expiry: time.Now().Add(-10 * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	other, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	replayed := es.assertion(t, tokenURL, assertionOpts{})
	if r := postToken(t, s, ccForm("system/*.read", replayed)); r.status != 200 {
		t.Fatalf("first use of the assertion: %d %v", r.status, r.body)
	}
	good := func(o assertionOpts) string { return es.assertion(t, tokenURL, o) }
	noneClaims := map[string]any{"iss": es.id, "sub": es.id, "aud": tokenURL, "jti": token.NewID(), "exp": time.Now().Add(4 * time.Minute).Unix()}
	algNone := handMade(map[string]any{"alg": "none", "typ": "JWT", "kid": es.kid}, noneClaims, func([]byte) []byte { return nil })
	hs256 := handMade(map[string]any{"alg": "HS256", "typ": "JWT", "kid": es.kid}, noneClaims, func(in []byte) []byte {
		m := hmac.New(sha256.New, es.jwks) // the classic key-confusion attack: the public key as HMAC secret
		m.Write(in)
		return m.Sum(nil)
	})

	cases := []struct {
		name   string
		form   url.Values
		status int
		code   string
	}{
		{"wrong aud", ccForm("system/*.read", good(assertionOpts{aud: s.URL + "/fhir"})), 401, "invalid_client"},
		{"expired exp", ccForm("system/*.read", good(assertionOpts{exp: -5 * time.Minute})), 401, "invalid_client"},
		{"too-long exp", ccForm("system/*.read", good(assertionOpts{exp: 15 * time.Minute})), 401, "invalid_client"},
		{"replayed jti", ccForm("system/*.read", replayed), 401, "invalid_client"},
		{"unknown kid", ccForm("system/*.read", good(assertionOpts{kid: "nope"})), 401, "invalid_client"},
		{"bad signature", ccForm("system/*.read", good(assertionOpts{key: other})), 401, "invalid_client"},
		{"alg none", ccForm("system/*.read", algNone), 401, "invalid_client"},
		{"HS256", ccForm("system/*.read", hs256), 401, "invalid_client"},
		{"unknown client", ccForm("system/*.read", good(assertionOpts{iss: "not-registered"})), 401, "invalid_client"},
		{"sub differs from iss", ccForm("system/*.read", good(assertionOpts{sub: "someone-else"})), 401, "invalid_client"},
		{"jku not registered", ccForm("system/*.read", good(assertionOpts{jku: "https://evil.example/jwks"})), 401, "invalid_client"},
		{"wrong grant type", func() url.Values {
			f := ccForm("system/*.read", good(assertionOpts{}))
			f.Set("grant_type", "password")
			return f
		}(), 400, "unsupported_grant_type"},
		{"wrong assertion type", func() url.Values {
			f := ccForm("system/*.read", good(assertionOpts{}))
			f.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
			return f
		}(), 400, "invalid_request"},
		{"no assertion", url.Values{"grant_type": {"client_credentials"}, "scope": {"system/*.read"}}, 400, "invalid_request"},
		{"scope escalation", ccForm("system/*.write", good(assertionOpts{})), 400, "invalid_scope"},
		{"scope of another type", ccForm("system/Encounter.rs", rs.assertion(t, tokenURL, assertionOpts{})), 400, "invalid_scope"},
		{"patient scope by a backend", ccForm("patient/*.rs", good(assertionOpts{})), 400, "invalid_scope"},
		{"malformed scope", ccForm("system/*.xyz", good(assertionOpts{})), 400, "invalid_scope"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := postToken(t, s, c.form)
			if r.status != c.status || r.body["error"] != c.code {
				t.Fatalf("got %d %v, want %d %s", r.status, r.body, c.status, c.code)
			}
			if d, _ := r.body["error_description"].(string); d == "" {
				t.Error("no error_description")
			}
			if _, ok := r.body["access_token"]; ok {
				t.Error("an access token came with an error")
			}
			if r.header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q", r.header.Get("Cache-Control"))
			}
		})
	}

	t.Run("escalation grants a subset", func(t *testing.T) {
		r := postToken(t, s, ccForm("system/*.cruds", good(assertionOpts{})))
		if r.status != 200 || r.body["scope"] != "system/*.rs" {
			t.Fatalf("got %d %v, want system/*.rs only", r.status, r.body)
		}
	})

	t.Run("expired access token", func(t *testing.T) {
		if got := s.Do("GET", "Patient/"+patID, expired(), nil); got.Status != http.StatusUnauthorized {
			t.Fatalf("expired token: %d %s", got.Status, got.Body)
		}
	})

	t.Run("token from an untrusted issuer", func(t *testing.T) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k}, (&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", "x"))
		p, _ := json.Marshal(map[string]any{"iss": "https://idp.example", "aud": s.FHIR, "sub": "mallory", "scope": "system/*.*", "exp": time.Now().Add(time.Hour).Unix()})
		jws, _ := signer.Sign(p)
		tok, _ := jws.CompactSerialize()
		if got := s.Do("GET", "Patient/"+patID, tok, nil); got.Status != http.StatusUnauthorized {
			t.Fatalf("untrusted issuer: %d %s", got.Status, got.Body)
		}
	})

	t.Run("JWKS URL with jku", func(t *testing.T) {
		u := newBackend(t, jose.ES384, "url-1")
		fetches := 0
		keys := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fetches++
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "max-age=600")
			w.Write(u.jwks)
		}))
		defer keys.Close()
		u.register(t, s, "system/*.rs", map[string]any{"jwks_url": keys.URL + "/jwks.json"})
		for i := range 2 {
			r := postToken(t, s, ccForm("system/*.rs", u.assertion(t, tokenURL, assertionOpts{jku: keys.URL + "/jwks.json"})))
			if r.status != 200 {
				t.Fatalf("token %d via JWKS URL: %d %v", i, r.status, r.body)
			}
		}
		if fetches != 1 {
			t.Errorf("JWKS fetched %d times; Cache-Control max-age=600 should keep it", fetches)
		}
		r := postToken(t, s, ccForm("system/*.rs", u.assertion(t, tokenURL, assertionOpts{jku: keys.URL + "/other.json"})))
		if r.status != 401 || r.body["error"] != "invalid_client" {
			t.Fatalf("jku mismatch: %d %v", r.status, r.body)
		}
	})

	t.Run("admin API refuses non-admins", func(t *testing.T) {
		body := map[string]any{"name": "x", "scope": "system/*.rs", "jwks": json.RawMessage(es.jwks)}
		if got := s.Do("POST", "/admin/clients", "", body); got.Status != 401 {
			t.Errorf("no token: %d", got.Status)
		}
		if got := s.Do("POST", "/admin/clients", s.Token("system/*.rs", ""), body); got.Status != 403 {
			t.Errorf("read-only system token: %d", got.Status)
		}
		if got := s.Do("GET", "/admin/users", s.Token("patient/*.*", patID), nil); got.Status != 403 {
			t.Errorf("patient token: %d", got.Status)
		}
		bad := s.Do("POST", "/admin/clients", s.AdminToken(), map[string]any{"name": "x", "scope": "system/*.rs"})
		if bad.Status != 400 || !strings.Contains(string(bad.Body), "keys") {
			t.Errorf("client without keys: %d %s", bad.Status, bad.Body)
		}
		list := s.Do("GET", "/admin/clients", s.AdminToken(), nil)
		if list.Status != 200 || !strings.Contains(string(list.Body), es.id) {
			t.Errorf("list clients: %d %s", list.Status, list.Body)
		}
		if got := s.Do("DELETE", "/admin/clients/"+rs.id, s.AdminToken(), nil); got.Status != 204 {
			t.Errorf("remove client: %d %s", got.Status, got.Body)
		}
		r := postToken(t, s, ccForm("system/*.rs", rs.assertion(t, tokenURL, assertionOpts{})))
		if r.status != 401 || r.body["error"] != "invalid_client" {
			t.Errorf("token for a removed client: %d %v", r.status, r.body)
		}
	})
}
