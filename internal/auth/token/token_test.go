package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/phr-project/phr/internal/auth/internal/jwstest"
	"github.com/phr-project/phr/internal/auth/oauth"
)

const (
	testIss = "https://phr.example/auth"
	testAud = "https://phr.example/fhir"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newIssuer(t testing.TB, alg string, clk *clock) (*Issuer, *Key) {
	t.Helper()
	k, err := GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Issuer: testIss, Audience: testAud, Signing: k}
	if clk != nil {
		cfg.Now = clk.now
	}
	i, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return i, k
}

func sampleClaims(now time.Time) Claims {
	return Claims{
		Subject: "user-1", ClientID: "app-1", Scope: "launch/patient patient/*.rs",
		Patient: "pat-9", FHIRUser: "Patient/pat-9", Expiry: now.Add(5 * time.Minute),
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	for _, alg := range []string{EdDSA, ES256} {
		t.Run(alg, func(t *testing.T) {
			clk := &clock{time.Unix(1_800_000_000, 0)}
			iss, key := newIssuer(t, alg, clk)
			want := sampleClaims(clk.t)
			want.NotBefore = clk.t
			tok, err := iss.Sign(want)
			if err != nil {
				t.Fatal(err)
			}
			got, err := iss.Verify(tok)
			if err != nil {
				t.Fatal(err)
			}
			if got.ID == "" || got.Issuer != testIss || got.Audience != testAud || !got.IssuedAt.Equal(clk.t) {
				t.Errorf("defaults not filled: %+v", got)
			}
			want.ID, want.Issuer, want.Audience, want.IssuedAt = got.ID, testIss, testAud, clk.t
			if got != want {
				t.Errorf("claims = %+v\nwant     %+v", got, want)
			}
			// The header names the key and the RFC 9068 type.
			hdr := decodeSegment(t, tok, 0)
			if hdr["kid"] != key.ID || hdr["typ"] != Type || hdr["alg"] != alg {
				t.Errorf("header = %v", hdr)
			}
		})
	}
}

func decodeSegment(t *testing.T, tok string, i int) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[i])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// forge signs claims with the standard-library JWS builder (see jwstest),
// with header entries added to {"alg": alg, "typ": "JWT"}.
func forge(t *testing.T, alg string, key any, header, claims map[string]any) string {
	t.Helper()
	s, err := jwstest.Sign(alg, key, header, claims)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerifyRejects(t *testing.T) {
	clk := &clock{time.Unix(1_800_000_000, 0)}
	iss, key := newIssuer(t, EdDSA, clk)
	good, err := iss.Sign(sampleClaims(clk.t))
	if err != nil {
		t.Fatal(err)
	}
	otherAud, _ := New(Config{Issuer: testIss, Audience: "https://elsewhere/fhir", Signing: key})
	otherIss, _ := New(Config{Issuer: "https://evil.example", Audience: testAud, Signing: key})
	stranger, _ := newIssuer(t, EdDSA, clk)
	validClaims := map[string]any{"iss": testIss, "aud": testAud, "sub": "u", "exp": clk.t.Add(time.Minute).Unix()}
	pubDER, _ := x509.MarshalPKIXPublicKey(key.public)

	mustSign := func(i *Issuer, c Claims) string {
		s, err := i.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	parts := strings.Split(good, ".")
	tamperedClaims := map[string]any{"iss": testIss, "aud": testAud, "sub": "admin", "exp": clk.t.Add(time.Hour).Unix(), "scope": "system/*.cruds"}
	tc, _ := json.Marshal(tamperedClaims)

	untyped, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key.signer},
		(&jose.SignerOptions{}).WithHeader("kid", key.ID))
	vc, _ := json.Marshal(validClaims)
	untypedJWS, _ := untyped.Sign(vc)
	untypedTok, _ := untypedJWS.CompactSerialize()

	cases := map[string]struct {
		token string
		want  string
	}{
		"expired": {mustSign(iss, Claims{Subject: "u", Expiry: clk.t.Add(-time.Minute)}), "expired"},
		"not yet valid": {mustSign(iss, Claims{Subject: "u", Expiry: clk.t.Add(time.Hour), NotBefore: clk.t.Add(10 * time.Minute)}),
			"not valid before"},
		"issued in the future": {mustSign(iss, Claims{Subject: "u", Expiry: clk.t.Add(time.Hour), IssuedAt: clk.t.Add(10 * time.Minute)}),
			"issued in the future"},
		"wrong audience":                      {mustSign(otherAud, sampleClaims(clk.t)), "aud"},
		"wrong issuer":                        {mustSign(otherIss, sampleClaims(clk.t)), "iss"},
		"unknown kid":                         {mustSign(stranger, sampleClaims(clk.t)), "kid"},
		"tampered payload":                    {parts[0] + "." + base64.RawURLEncoding.EncodeToString(tc) + "." + parts[2], "signature does not verify"},
		"alg none":                            {forge(t, "none", nil, map[string]any{"typ": Type, "kid": key.ID}, validClaims), `alg "none"`},
		"HS256 with the public key as secret": {forge(t, "HS256", pubDER, map[string]any{"typ": Type, "kid": key.ID}, validClaims), `alg "HS256"`},
		"ES256 on an EdDSA issuer":            {forge(t, "ES256", mustP256(t), map[string]any{"typ": Type, "kid": key.ID}, validClaims), `alg "ES256"`},
		"no typ":                              {untypedTok, "typ"},
		"garbage":                             {"not.a.jwt", "not a compact JWS"},
		"empty":                               {"", "not a compact JWS"},
		"no exp":                              {forge(t, "EdDSA", key.signer, map[string]any{"typ": Type, "kid": key.ID}, map[string]any{"iss": testIss, "aud": testAud}), "no exp"},
	}
	for name, c := range cases {
		_, err := iss.Verify(c.token)
		var oe *oauth.Error
		if !errors.As(err, &oe) || oe.Code != oauth.InvalidToken {
			t.Errorf("%s: err = %v, want invalid_token", name, err)
			continue
		}
		if !strings.Contains(oe.Description, c.want) {
			t.Errorf("%s: description %q, want it to mention %q", name, oe.Description, c.want)
		}
	}
	if _, err := iss.Verify(good); err != nil {
		t.Fatalf("good token rejected: %v", err)
	}
}

func mustP256(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestCachedTokenStillExpires(t *testing.T) {
	clk := &clock{time.Unix(1_800_000_000, 0)}
	iss, _ := newIssuer(t, EdDSA, clk)
	tok, _ := iss.Sign(Claims{Subject: "u", Expiry: clk.t.Add(time.Minute)})
	if _, err := iss.Verify(tok); err != nil {
		t.Fatal(err)
	}
	if n := iss.cache.len(); n != 1 {
		t.Fatalf("cache holds %d tokens, want 1", n)
	}
	if _, err := iss.Verify(tok); err != nil {
		t.Fatal(err)
	}
	clk.t = clk.t.Add(time.Minute + DefaultLeeway + time.Second)
	if _, err := iss.Verify(tok); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("cached token past exp: err = %v", err)
	}
	if n := iss.cache.len(); n != 0 {
		t.Fatalf("expired token left in cache (%d entries)", n)
	}
}

func TestCacheIsBoundedLRU(t *testing.T) {
	c := newCache(cacheShards * 4)
	var keys [][32]byte
	for i := range 1000 {
		k := sha256.Sum256([]byte(fmt.Sprint(i)))
		keys = append(keys, k)
		c.put(k, Claims{Subject: fmt.Sprint(i)})
		if i == 10 {
			// Touch the first key so it is the most recently used in its shard.
			c.get(keys[0])
		}
	}
	if n := c.len(); n > cacheShards*4 {
		t.Fatalf("cache grew to %d entries, bound %d", n, cacheShards*4)
	}
	last := keys[len(keys)-1]
	if cl, ok := c.get(last); !ok || cl.Subject != "999" {
		t.Fatal("most recent entry evicted")
	}
	if _, ok := c.get(keys[0]); ok {
		t.Fatal("entry from long ago survived 1000 inserts into a 64-entry cache")
	}
}

func TestKeyRotation(t *testing.T) {
	clk := &clock{time.Unix(1_800_000_000, 0)}
	iss, oldKey := newIssuer(t, EdDSA, clk)
	oldTok, _ := iss.Sign(sampleClaims(clk.t))
	if _, err := iss.Verify(oldTok); err != nil {
		t.Fatal(err)
	}
	newKey, _ := GenerateKey(ES256)
	if err := iss.SetKeys(newKey, oldKey.Public()); err != nil {
		t.Fatal(err)
	}
	newTok, _ := iss.Sign(sampleClaims(clk.t))
	if kid := decodeSegment(t, newTok, 0)["kid"]; kid != newKey.ID {
		t.Fatalf("new token signed with kid %v, want %s", kid, newKey.ID)
	}
	for _, tok := range []string{oldTok, newTok} {
		if _, err := iss.Verify(tok); err != nil {
			t.Fatalf("after rotation: %v", err)
		}
	}
	set := iss.JWKS()
	if len(set.Keys) != 2 || set.Keys[0].KeyID != newKey.ID || len(set.Key(oldKey.ID)) != 1 {
		t.Fatalf("JWKS = %+v", set)
	}
	for _, k := range set.Keys {
		if !k.IsPublic() || k.Use != "sig" || k.Algorithm == "" {
			t.Fatalf("JWKS key %s not a public signing key with alg: %+v", k.KeyID, k)
		}
	}
	// Dropping the old key revokes its tokens at once, cache or not.
	if err := iss.SetKeys(newKey); err != nil {
		t.Fatal(err)
	}
	if _, err := iss.Verify(oldTok); err == nil {
		t.Fatal("token of a dropped key still verifies")
	}
	if _, err := iss.Verify(newTok); err != nil {
		t.Fatal(err)
	}
	if err := iss.SetKeys(oldKey.Public()); err == nil {
		t.Fatal("public-only key accepted as signing key")
	}
}

func TestKeySerialisation(t *testing.T) {
	for _, alg := range []string{EdDSA, ES256} {
		k, err := GenerateKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		jwk, err := k.MarshalJWK()
		if err != nil {
			t.Fatal(err)
		}
		pemBytes, err := k.MarshalPEM()
		if err != nil {
			t.Fatal(err)
		}
		pubPEM, _ := k.Public().MarshalPEM()
		pubJWK, _ := k.Public().MarshalJWK()
		if strings.Contains(string(pubJWK), `"d"`) {
			t.Fatalf("%s public JWK carries the private part: %s", alg, pubJWK)
		}
		for name, data := range map[string][]byte{"jwk": jwk, "pem": pemBytes, "public pem": pubPEM, "public jwk": pubJWK} {
			back, err := ParseKey(data)
			if err != nil {
				t.Fatalf("%s %s: %v", alg, name, err)
			}
			wantSign := !strings.HasPrefix(name, "public")
			if back.ID != k.ID || back.Algorithm() != alg || back.CanSign() != wantSign {
				t.Fatalf("%s %s: round trip gave id %s alg %s canSign %v", alg, name, back.ID, back.Algorithm(), back.CanSign())
			}
		}
		// A key read back from the store signs tokens the original verifies.
		back, _ := ParseKey(jwk)
		signer, _ := New(Config{Issuer: testIss, Audience: testAud, Signing: back})
		verifier, _ := New(Config{Issuer: testIss, Audience: testAud, Signing: k})
		tok, _ := signer.Sign(sampleClaims(time.Now()))
		if _, err := verifier.Verify(tok); err != nil {
			t.Fatalf("%s: token from reloaded key: %v", alg, err)
		}
	}

	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384DER, _ := x509.MarshalPKCS8PrivateKey(p384)
	bad := map[string]string{
		"hello": "neither a JWK",
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsaDER})):    "not supported",
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p384DER})):   "P-384",
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})): "PEM block type",
		`{"kty":"oct","k":"c2VjcmV0"}`: "not supported",
	}
	for in, want := range bad {
		if _, err := ParseKey([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseKey(%.30q) err = %v, want %q", in, err, want)
		}
	}
}

func benchIssuer(b testing.TB, alg string, cacheSize int) (*Issuer, string) {
	k, err := GenerateKey(alg)
	if err != nil {
		b.Fatal(err)
	}
	iss, err := New(Config{Issuer: testIss, Audience: testAud, Signing: k, CacheSize: cacheSize})
	if err != nil {
		b.Fatal(err)
	}
	tok, err := iss.Sign(sampleClaims(time.Now()))
	if err != nil {
		b.Fatal(err)
	}
	return iss, tok
}

// BenchmarkVerify measures one verification on one core: "cold" checks the
// signature every time (cache off), "cached" repeats a verified token.
// verifies/s is per core; the server has two.
func BenchmarkVerify(b *testing.B) {
	for _, alg := range []string{EdDSA, ES256} {
		for _, mode := range []struct {
			name string
			size int
		}{{"cold", -1}, {"cached", 0}} {
			b.Run(alg+"/"+mode.name, func(b *testing.B) {
				iss, tok := benchIssuer(b, alg, mode.size)
				b.ReportAllocs()
				for b.Loop() {
					if _, err := iss.Verify(tok); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifies/s")
			})
		}
	}
}

// BenchmarkVerifyCachedParallel measures cached verification from all
// cores at once over 1,000 distinct live tokens, the shape of a busy server.
func BenchmarkVerifyCachedParallel(b *testing.B) {
	iss, _ := benchIssuer(b, EdDSA, 0)
	toks := make([]string, 1000)
	for n := range toks {
		c := sampleClaims(time.Now())
		c.Subject = fmt.Sprint("user-", n)
		toks[n], _ = iss.Sign(c)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		n := 0
		for pb.Next() {
			if _, err := iss.Verify(toks[n%len(toks)]); err != nil {
				b.Error(err)
				return
			}
			n++
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifies/s")
}

func BenchmarkSign(b *testing.B) {
	for _, alg := range []string{EdDSA, ES256} {
		b.Run(alg, func(b *testing.B) {
			iss, _ := newIssuer(b, alg, nil)
			c := sampleClaims(time.Now())
			b.ReportAllocs()
			for b.Loop() {
				if _, err := iss.Sign(c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestConcurrentVerify runs verifications of many tokens from several
// goroutines through a cache small enough to evict constantly, while keys
// rotate; run with -race it checks the cache's locking.
func TestConcurrentVerify(t *testing.T) {
	clk := &clock{time.Unix(1_800_000_000, 0)}
	k, _ := GenerateKey(EdDSA)
	iss, err := New(Config{Issuer: testIss, Audience: testAud, Signing: k, CacheSize: cacheShards, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	toks := make([]string, 64)
	for n := range toks {
		c := sampleClaims(clk.t)
		c.Subject = fmt.Sprint("user-", n)
		if toks[n], err = iss.Sign(c); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for n := range 200 {
				i := (g*31 + n) % len(toks)
				c, err := iss.Verify(toks[i])
				if err != nil || c.Subject != fmt.Sprint("user-", i) {
					errs <- fmt.Errorf("token %d: subject %q, err %v", i, c.Subject, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			if err := iss.SetKeys(k); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := iss.cache.len(); n > cacheShards {
		t.Fatalf("cache holds %d entries, bound %d", n, cacheShards)
	}
}

// FuzzVerify feeds mangled tokens to Verify: it must never panic, and
// nothing but the genuine token's claims may come out (a different spelling
// of the same JWS, such as other unused base64 bits, is no forgery). The
// cache is off, so every input is checked.
func FuzzVerify(f *testing.F) {
	k, _ := GenerateKey(EdDSA)
	iss, _ := New(Config{Issuer: testIss, Audience: testAud, Signing: k, CacheSize: -1})
	good, _ := iss.Sign(sampleClaims(time.Now().Add(time.Hour)))
	want, err := iss.Verify(good)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-2])
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("..")
	f.Fuzz(func(t *testing.T, tok string) {
		if got, err := iss.Verify(tok); err == nil && got != want {
			t.Fatalf("token %q verified with claims %+v", tok, got)
		}
	})
}

// TestVerifyCachedAllocatesNothing: a request with a token already
// verified costs no heap allocation for the check (it runs on every API
// request; the garbage collector's work shows in the read latency).
func TestVerifyCachedAllocatesNothing(t *testing.T) {
	iss, tok := benchIssuer(t, EdDSA, 0)
	if _, err := iss.Verify(tok); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := iss.Verify(tok); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("a cached Verify allocates %.1f times, want 0", n)
	}
}
