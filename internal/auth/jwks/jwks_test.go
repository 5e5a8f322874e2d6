package jwks

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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
)

// publisher is a real JWKS endpoint on 127.0.0.1 whose keys, headers and
// status can be changed between requests.
type publisher struct {
	srv    *httptest.Server
	mu     sync.Mutex
	keys   []jose.JSONWebKey
	cc     string
	status int
	hits   atomic.Int32
}

func newPublisher(t *testing.T, cacheControl string, kids ...string) *publisher {
	t.Helper()
	p := &publisher{cc: cacheControl, status: http.StatusOK}
	for _, kid := range kids {
		p.add(t, kid)
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.hits.Add(1)
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.status != http.StatusOK {
			http.Error(w, "down", p.status)
			return
		}
		if p.cc != "" {
			w.Header().Set("Cache-Control", p.cc)
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: p.keys})
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *publisher) add(t *testing.T, kid string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.keys = append(p.keys, jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: "ES384", Use: "sig"})
	p.mu.Unlock()
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestCacheHonoursMaxAge(t *testing.T) {
	p := newPublisher(t, "public, max-age=60", "a")
	clk := &clock{time.Now()}
	c := &Cache{Now: clk.now}
	ctx := context.Background()
	for range 3 {
		set, err := c.Get(ctx, p.srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		if len(set.Key("a")) != 1 {
			t.Fatal("key a missing")
		}
	}
	if n := p.hits.Load(); n != 1 {
		t.Fatalf("%d fetches within max-age, want 1", n)
	}
	clk.advance(59 * time.Second)
	c.Get(ctx, p.srv.URL)
	if n := p.hits.Load(); n != 1 {
		t.Fatalf("%d fetches at 59s, want 1", n)
	}
	clk.advance(2 * time.Second)
	c.Get(ctx, p.srv.URL)
	if n := p.hits.Load(); n != 2 {
		t.Fatalf("%d fetches after max-age passed, want 2", n)
	}
}

func TestCacheNoStoreRefetches(t *testing.T) {
	p := newPublisher(t, "no-store", "a")
	c := &Cache{}
	for range 3 {
		if _, err := c.Get(context.Background(), p.srv.URL); err != nil {
			t.Fatal(err)
		}
	}
	if n := p.hits.Load(); n != 3 {
		t.Fatalf("%d fetches with no-store, want 3", n)
	}
}

func TestCacheMaxTTLCapsMaxAge(t *testing.T) {
	p := newPublisher(t, "max-age=31536000", "a")
	clk := &clock{time.Now()}
	c := &Cache{Now: clk.now, MaxTTL: time.Hour}
	c.Get(context.Background(), p.srv.URL)
	clk.advance(time.Hour + time.Second)
	c.Get(context.Background(), p.srv.URL)
	if n := p.hits.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2: MaxTTL must cap a year-long max-age", n)
	}
}

func TestUnknownKidRefetchesOnce(t *testing.T) {
	p := newPublisher(t, "max-age=3600", "a")
	clk := &clock{time.Now()}
	c := &Cache{Now: clk.now, MinRefetch: 30 * time.Second}
	ctx := context.Background()
	if _, err := c.Key(ctx, p.srv.URL, "a"); err != nil {
		t.Fatal(err)
	}
	// The publisher rotates in key b; the cached set is still fresh.
	p.add(t, "b")
	clk.advance(31 * time.Second)
	keys, err := c.Key(ctx, p.srv.URL, "b")
	if err != nil || len(keys) != 1 {
		t.Fatalf("rotated key b not found after refetch: %v", err)
	}
	if n := p.hits.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	// An unknown kid right after a fetch does not fetch again.
	_, err = c.Key(ctx, p.srv.URL, "nope")
	if !errors.Is(err, ErrUnknownKID) {
		t.Fatalf("err = %v, want ErrUnknownKID", err)
	}
	if n := p.hits.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (refetch spacing)", n)
	}
	// Later, an unknown kid triggers exactly one refetch.
	clk.advance(31 * time.Second)
	_, err = c.Key(ctx, p.srv.URL, "nope")
	if !errors.Is(err, ErrUnknownKID) {
		t.Fatalf("err = %v, want ErrUnknownKID", err)
	}
	if n := p.hits.Load(); n != 3 {
		t.Fatalf("%d fetches, want 3", n)
	}
}

func TestStaleSetUsedWhileRefreshFails(t *testing.T) {
	p := newPublisher(t, "max-age=60", "a")
	clk := &clock{time.Now()}
	c := &Cache{Now: clk.now, MaxStale: 10 * time.Minute}
	ctx := context.Background()
	if _, err := c.Get(ctx, p.srv.URL); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.status = http.StatusServiceUnavailable
	p.mu.Unlock()
	clk.advance(5 * time.Minute)
	if _, err := c.Key(ctx, p.srv.URL, "a"); err != nil {
		t.Fatalf("stale set not used during outage: %v", err)
	}
	clk.advance(10 * time.Minute)
	if _, err := c.Get(ctx, p.srv.URL); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("err = %v, want the 503 once past MaxStale", err)
	}
}

func TestFetchRejectsBadResponses(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/html":
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte("<html>"))
		case "/big":
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"keys":[` + strings.Repeat(" ", 2048) + `]}`))
		case "/empty":
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"keys":[]}`))
		case "/missing":
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	c := &Cache{MaxBytes: 1024}
	ctx := context.Background()
	cases := map[string]string{
		"/html":    "is not JSON",
		"/big":     "larger than 1024 bytes",
		"/empty":   "no signature keys",
		"/missing": "404",
	}
	for path, want := range cases {
		_, err := c.Get(ctx, srv.URL+path)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", path, err, want)
		}
	}
	// Plain http to a non-loopback host is refused before any request.
	_, err := c.Get(ctx, "http://keys.example.org/jwks.json")
	if err == nil || !strings.Contains(err.Error(), "only https") {
		t.Errorf("plain http: err = %v", err)
	}
}

func TestParseSet(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	priv, _ := json.Marshal(jose.JSONWebKey{Key: k, KeyID: "priv", Algorithm: "ES256"})
	pub, _ := json.Marshal(jose.JSONWebKey{Key: &k.PublicKey, KeyID: "enc", Use: "enc"})
	doc := `{"keys":[` + string(priv) + `,` + string(pub) + `,{"kty":"weird","kid":"w"},{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0","kid":"hs"}]}`
	set, err := ParseSet([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 || set.Keys[0].KeyID != "priv" || !set.Keys[0].IsPublic() {
		t.Fatalf("keys = %+v, want only the public half of kid priv", set.Keys)
	}
	if _, err := ParseSet([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"hs"}]}`)); err == nil || !strings.Contains(err.Error(), "symmetric") {
		t.Errorf("symmetric-only set: err = %v", err)
	}
	if _, err := ParseSet([]byte(`[1,2]`)); err == nil {
		t.Error("array accepted as a key set")
	}
}

func TestFreshness(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	def := 7 * time.Minute
	cases := []struct {
		h    http.Header
		want time.Duration
	}{
		{http.Header{}, def},
		{http.Header{"Cache-Control": {"public, max-age=120"}}, 2 * time.Minute},
		{http.Header{"Cache-Control": {"max-age=\"30\""}}, 30 * time.Second},
		{http.Header{"Cache-Control": {"no-cache, max-age=120"}}, 0},
		{http.Header{"Cache-Control": {"private", "max-age=5"}}, 5 * time.Second},
		{http.Header{"Cache-Control": {"max-age=-1"}}, 0},
		{http.Header{"Expires": {now.Add(time.Hour).Format(http.TimeFormat)}}, time.Hour},
		{http.Header{"Expires": {now.Add(time.Hour).Format(http.TimeFormat)}, "Date": {now.Add(-time.Hour).Format(http.TimeFormat)}}, 2 * time.Hour},
		{http.Header{"Expires": {"0"}}, 0},
		{http.Header{"Cache-Control": {"max-age=10"}, "Expires": {now.Add(time.Hour).Format(http.TimeFormat)}}, 10 * time.Second},
	}
	for _, c := range cases {
		if got := Freshness(c.h, now, def); got != c.want {
			t.Errorf("Freshness(%v) = %v, want %v", c.h, got, c.want)
		}
	}
}
