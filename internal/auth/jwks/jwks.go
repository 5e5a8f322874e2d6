// Package jwks fetches JSON Web Key Sets from URLs and caches them for as long
// as the publisher's Cache-Control allows, so that verifying a signed JWT from
// a backend client or an external OpenID issuer costs no network round trip
// in the common case.
//
// A key ID missing from a cached set triggers one refetch (the publisher may
// have rotated keys), but at most once per MinRefetch interval per URL, so a
// stream of tokens with made-up key IDs cannot turn the server into a
// request amplifier against the publisher.
package jwks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Defaults for the zero Cache fields.
const (
	// DefaultTTL is used when a response says nothing about freshness.
	DefaultTTL = 5 * time.Minute
	// DefaultMaxTTL caps a publisher's max-age so a key revocation is seen
	// within a day at worst.
	DefaultMaxTTL = 24 * time.Hour
	// DefaultMinRefetch spaces out unknown-kid refetches of one URL.
	DefaultMinRefetch = 10 * time.Second
	// DefaultMaxStale is how long past expiry a set is still used when a
	// refresh fails, so a publisher's brief outage does not lock clients out.
	DefaultMaxStale = time.Hour
	// DefaultMaxBytes bounds a fetched document.
	DefaultMaxBytes = 1 << 20
)

// ErrUnknownKID is returned (wrapped) when no key in the set has the kid.
var ErrUnknownKID = errors.New("no key with that kid")

// Cache fetches and caches key sets by URL. The zero value is ready to use
// with http.DefaultClient and the defaults above; it is safe for concurrent
// use.
type Cache struct {
	// Client does the fetching; nil means http.DefaultClient. Give it a
	// timeout: a slow publisher otherwise holds a token request open.
	Client *http.Client
	// DefaultTTL, MaxTTL, MinRefetch, MaxStale and MaxBytes override the
	// package defaults when non-zero.
	DefaultTTL time.Duration
	MaxTTL     time.Duration
	MinRefetch time.Duration
	MaxStale   time.Duration
	MaxBytes   int64
	// AllowHTTP permits plain http URLs on any host. Without it only https
	// is fetched, except on loopback addresses (tests, local tools).
	AllowHTTP bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	entries map[string]*entry
}

type entry struct {
	mu      sync.Mutex // held while fetching, so concurrent misses fetch once
	keys    *jose.JSONWebKeySet
	fetched time.Time
	expires time.Time
	fetches int
}

func (c *Cache) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func orDefault[T int64 | time.Duration](v, def T) T {
	if v != 0 {
		return v
	}
	return def
}

func (c *Cache) entry(u string) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[string]*entry)
	}
	e := c.entries[u]
	if e == nil {
		e = &entry{}
		c.entries[u] = e
	}
	return e
}

// Get returns the key set at u, fetching it when it is not cached or no
// longer fresh.
func (c *Cache) Get(ctx context.Context, u string) (*jose.JSONWebKeySet, error) {
	e := c.entry(u)
	e.mu.Lock()
	defer e.mu.Unlock()
	return c.fresh(ctx, u, e)
}

// fresh returns e's keys, refetching when expired; e.mu must be held.
func (c *Cache) fresh(ctx context.Context, u string, e *entry) (*jose.JSONWebKeySet, error) {
	now := c.now()
	if e.keys != nil && now.Before(e.expires) {
		return e.keys, nil
	}
	if err := c.refresh(ctx, u, e); err != nil {
		if e.keys != nil && now.Before(e.expires.Add(orDefault(c.MaxStale, DefaultMaxStale))) {
			slog.WarnContext(ctx, "jwks: refresh failed, using the expired key set", "url", u, "err", err)
			return e.keys, nil
		}
		return nil, err
	}
	return e.keys, nil
}

func (c *Cache) refresh(ctx context.Context, u string, e *entry) error {
	body, expires, err := c.FetchJSON(ctx, u)
	if err != nil {
		return err
	}
	set, err := ParseSet(body)
	if err != nil {
		return fmt.Errorf("jwks %s: %w", u, err)
	}
	e.keys, e.fetched, e.expires = set, c.now(), expires
	e.fetches++
	return nil
}

// Key returns the keys at u whose kid equals kid. When none has it and the
// cached set was fetched at least MinRefetch ago, the set is fetched once
// more: the publisher may have added a key since.
func (c *Cache) Key(ctx context.Context, u, kid string) ([]jose.JSONWebKey, error) {
	e := c.entry(u)
	e.mu.Lock()
	defer e.mu.Unlock()
	before := e.fetches
	set, err := c.fresh(ctx, u, e)
	if err != nil {
		return nil, err
	}
	if keys := set.Key(kid); len(keys) > 0 {
		return keys, nil
	}
	if e.fetches == before && c.now().Sub(e.fetched) >= orDefault(c.MinRefetch, DefaultMinRefetch) {
		if err := c.refresh(ctx, u, e); err != nil {
			return nil, err
		}
		if keys := e.keys.Key(kid); len(keys) > 0 {
			return keys, nil
		}
	}
	return nil, fmt.Errorf("jwks %s: kid %q: %w", u, kid, ErrUnknownKID)
}

// StatusError is FetchJSON's error for an answer other than 200 OK.
type StatusError struct {
	URL    string
	Code   int    // the HTTP status code
	Status string // the status line's text, "404 Not Found"
}

func (e *StatusError) Error() string { return fmt.Sprintf("fetch %s: status %s", e.URL, e.Status) }

// FetchJSON GETs a JSON document (a key set, an OpenID configuration) with
// the Cache's client, URL policy and size limit, and returns it with the time
// until which Cache-Control (or Expires) lets it be reused.
func (c *Cache) FetchJSON(ctx context.Context, u string) ([]byte, time.Time, error) {
	if err := c.checkURL(u); err != nil {
		return nil, time.Time{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("fetch %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	client := c.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("fetch %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, time.Time{}, &StatusError{URL: u, Code: resp.StatusCode, Status: resp.Status}
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !(mt == "application/json" || strings.HasSuffix(mt, "+json")) {
			return nil, time.Time{}, fmt.Errorf("fetch %s: content type %q is not JSON", u, ct)
		}
	}
	limit := orDefault(c.MaxBytes, DefaultMaxBytes)
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("fetch %s: reading body: %w", u, err)
	}
	if int64(len(body)) > limit {
		return nil, time.Time{}, fmt.Errorf("fetch %s: body larger than %d bytes", u, limit)
	}
	now := c.now()
	ttl := Freshness(resp.Header, now, orDefault(c.DefaultTTL, DefaultTTL))
	return body, now.Add(min(ttl, orDefault(c.MaxTTL, DefaultMaxTTL))), nil
}

func (c *Cache) checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("key set URL %q: %w", raw, err)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && (c.AllowHTTP || isLoopback(u.Hostname())):
	default:
		return fmt.Errorf("key set URL %q: only https URLs are fetched", raw)
	}
	if u.Host == "" {
		return fmt.Errorf("key set URL %q: no host", raw)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Freshness reads how long a response may be reused: Cache-Control max-age,
// zero for no-store or no-cache, else Expires minus Date (or now), else def.
func Freshness(h http.Header, now time.Time, def time.Duration) time.Duration {
	if cc := h.Values("Cache-Control"); len(cc) > 0 {
		for _, line := range cc {
			for d := range strings.SplitSeq(line, ",") {
				name, value, _ := strings.Cut(strings.TrimSpace(d), "=")
				switch strings.ToLower(name) {
				case "no-store", "no-cache":
					return 0
				case "max-age":
					n, err := strconv.ParseInt(strings.Trim(value, `"`), 10, 64)
					if err != nil || n < 0 {
						return 0
					}
					return time.Duration(min(n, int64(1<<31))) * time.Second
				}
			}
		}
	}
	if exp := h.Get("Expires"); exp != "" {
		t, err := http.ParseTime(exp)
		if err != nil {
			return 0 // RFC 9111: an invalid Expires means already expired
		}
		base := now
		if d, err := http.ParseTime(h.Get("Date")); err == nil {
			base = d
		}
		return max(t.Sub(base), 0)
	}
	return def
}

// ParseSet reads a JWKS document. Keys that cannot be used for signatures
// (unknown key types or curves, "use":"enc") are skipped rather than failing
// the whole set, since publishers mix them in; private parts are dropped.
// A set with no usable key is an error.
func ParseSet(data []byte) (*jose.JSONWebKeySet, error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("key set is not a JSON object with a keys array: %w", err)
	}
	set := &jose.JSONWebKeySet{}
	var skipped []error
	for i, r := range raw.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(r); err != nil {
			skipped = append(skipped, fmt.Errorf("keys[%d]: %w", i, err))
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if _, symmetric := k.Key.([]byte); symmetric {
			skipped = append(skipped, fmt.Errorf("keys[%d]: symmetric keys are not accepted", i))
			continue
		}
		pub := k.Public()
		if !pub.Valid() || !pub.IsPublic() {
			skipped = append(skipped, fmt.Errorf("keys[%d]: not a usable public key", i))
			continue
		}
		set.Keys = append(set.Keys, pub)
	}
	if len(set.Keys) == 0 {
		if len(skipped) > 0 {
			return nil, fmt.Errorf("key set has no usable signature key: %w", errors.Join(skipped...))
		}
		return nil, errors.New("key set has no signature keys")
	}
	return set, nil
}
