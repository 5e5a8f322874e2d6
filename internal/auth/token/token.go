// Package token issues and verifies the server's own access tokens: JWTs
// (RFC 9068 "at+jwt") signed with the server's key.
//
// Verification sits in front of every FHIR request, and the server must
// serve at least 10,000 authenticated reads per second on 2 cores, so Verify
// keeps a bounded LRU of tokens it has already verified, keyed by the
// SHA-256 of the token: a repeated token costs a hash and a map lookup
// instead of a signature check (see the benchmarks).
//
// Keys rotate without downtime: one key signs, any number of older keys
// (public halves) still verify until the tokens they signed expire, and all
// of them are published in the JWKS. Each token names its key in the kid
// header.
package token

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/phr-project/phr/internal/auth/oauth"
)

// Claims are what an access token says. Scope is the space-separated granted
// scope list (parse it with the scope package); Patient is the launch
// context patient id, required with patient/ scopes; FHIRUser is the user's
// FHIR resource (e.g. "Practitioner/123"), if any.
type Claims struct {
	Issuer    string
	Subject   string
	Audience  string
	ClientID  string
	Scope     string
	Patient   string
	FHIRUser  string
	Expiry    time.Time
	IssuedAt  time.Time
	NotBefore time.Time
	ID        string
}

// wireClaims is the JSON form; times are NumericDate seconds.
type wireClaims struct {
	Issuer    string           `json:"iss,omitempty"`
	Subject   string           `json:"sub,omitempty"`
	Audience  jwt.Audience     `json:"aud,omitempty"`
	ClientID  string           `json:"client_id,omitempty"`
	Scope     string           `json:"scope,omitempty"`
	Patient   string           `json:"patient,omitempty"`
	FHIRUser  string           `json:"fhirUser,omitempty"`
	Expiry    *jwt.NumericDate `json:"exp,omitempty"`
	IssuedAt  *jwt.NumericDate `json:"iat,omitempty"`
	NotBefore *jwt.NumericDate `json:"nbf,omitempty"`
	ID        string           `json:"jti,omitempty"`
}

// Type is the JWS typ header of access tokens (RFC 9068). Verify requires
// it, so an ID token or other JWT signed with the same key is never taken
// for an access token.
const Type = "at+jwt"

// Defaults for the zero Config fields.
const (
	DefaultLeeway    = 30 * time.Second
	DefaultCacheSize = 100_000
)

// Config sets up an Issuer.
type Config struct {
	// Issuer is the iss claim: the server's base URL.
	Issuer string
	// Audience is the aud claim Verify requires: the FHIR base URL.
	Audience string
	// Signing signs new tokens; it must hold a private key.
	Signing *Key
	// Verification are further keys that verify but do not sign (retired
	// signing keys whose tokens may still be live).
	Verification []*Key
	// Leeway is the clock skew allowed on exp, nbf and iat (DefaultLeeway
	// when zero).
	Leeway time.Duration
	// CacheSize bounds the verified-token cache (DefaultCacheSize when
	// zero; negative disables the cache).
	CacheSize int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Issuer signs and verifies access tokens. It is safe for concurrent use.
type Issuer struct {
	iss, aud string
	leeway   time.Duration
	now      func() time.Time
	cache    *cache

	mu      sync.RWMutex
	signKey *Key
	signer  jose.Signer
	keys    map[string]*Key
	algs    []jose.SignatureAlgorithm
}

// New returns an Issuer for cfg.
func New(cfg Config) (*Issuer, error) {
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, errors.New("token issuer: Issuer and Audience are required")
	}
	i := &Issuer{iss: cfg.Issuer, aud: cfg.Audience, leeway: cfg.Leeway, now: cfg.Now}
	if i.leeway == 0 {
		i.leeway = DefaultLeeway
	}
	if i.now == nil {
		i.now = time.Now
	}
	size := cfg.CacheSize
	if size == 0 {
		size = DefaultCacheSize
	}
	if size > 0 {
		i.cache = newCache(size)
	}
	if err := i.SetKeys(cfg.Signing, cfg.Verification...); err != nil {
		return nil, err
	}
	return i, nil
}

// SetKeys replaces the keys: signing signs from now on and verifies, the
// others only verify. Rotation is SetKeys(newKey, oldKey.Public()); once
// the old key's tokens have expired, SetKeys(newKey) drops it. The verified
// token cache is emptied, so a dropped key's tokens stop working at once.
func (i *Issuer) SetKeys(signing *Key, verification ...*Key) error {
	if signing == nil || !signing.CanSign() {
		return errors.New("token issuer: the signing key must hold a private key")
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: signing.alg, Key: signing.signer},
		(&jose.SignerOptions{}).WithType(Type).WithHeader(jose.HeaderKey("kid"), signing.ID))
	if err != nil {
		return fmt.Errorf("token issuer: signer for key %s: %w", signing.ID, err)
	}
	keys := map[string]*Key{}
	var algs []jose.SignatureAlgorithm
	for _, k := range append([]*Key{signing}, verification...) {
		if k == nil {
			return errors.New("token issuer: nil verification key")
		}
		if prev, dup := keys[k.ID]; dup {
			if eq, ok := prev.public.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(k.public) {
				return fmt.Errorf("token issuer: two different keys share kid %s", k.ID)
			}
			continue
		}
		keys[k.ID] = k.Public()
		if !slices.Contains(algs, k.alg) {
			algs = append(algs, k.alg)
		}
	}
	i.mu.Lock()
	i.signKey, i.signer, i.keys, i.algs = signing, signer, keys, algs
	i.mu.Unlock()
	if i.cache != nil {
		i.cache.purge()
	}
	return nil
}

// JWKS returns the public keys (signing and verification) as a JSON Web Key
// Set, for the server's jwks endpoint.
func (i *Issuer) JWKS() jose.JSONWebKeySet {
	i.mu.RLock()
	defer i.mu.RUnlock()
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{i.signKey.JWK()}}
	for id, k := range i.keys {
		if id != i.signKey.ID {
			set.Keys = append(set.Keys, k.JWK())
		}
	}
	return set
}

// NewID returns a random token id (jti): 128 bits, base64url.
func NewID() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Sign issues a token for c. Issuer and Audience default to the Issuer's,
// IssuedAt to now, ID to a random jti; Expiry is required, because a token
// that never expires cannot be contained.
func (i *Issuer) Sign(c Claims) (string, error) {
	if c.Expiry.IsZero() {
		return "", errors.New("sign access token: Expiry is required")
	}
	if c.Issuer == "" {
		c.Issuer = i.iss
	}
	if c.Audience == "" {
		c.Audience = i.aud
	}
	if c.IssuedAt.IsZero() {
		c.IssuedAt = i.now()
	}
	if c.ID == "" {
		c.ID = NewID()
	}
	w := wireClaims{
		Issuer: c.Issuer, Subject: c.Subject, Audience: jwt.Audience{c.Audience}, ClientID: c.ClientID,
		Scope: c.Scope, Patient: c.Patient, FHIRUser: c.FHIRUser, ID: c.ID,
		Expiry: jwt.NewNumericDate(c.Expiry), IssuedAt: jwt.NewNumericDate(c.IssuedAt),
	}
	if !c.NotBefore.IsZero() {
		w.NotBefore = jwt.NewNumericDate(c.NotBefore)
	}
	payload, err := json.Marshal(w)
	if err != nil {
		return "", fmt.Errorf("sign access token: %w", err)
	}
	i.mu.RLock()
	signer := i.signer
	i.mu.RUnlock()
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign access token: %w", err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("sign access token: %w", err)
	}
	return s, nil
}

func invalid(format string, args ...any) error {
	return oauth.Errorf(oauth.InvalidToken, format, args...)
}

// Verify checks a token's signature (against the key its kid names), typ,
// iss, aud, exp, nbf and iat, and returns its claims. Failures are
// *oauth.Error with code invalid_token and a description safe to send in a
// WWW-Authenticate header. Verified tokens are cached until they expire.
func (i *Issuer) Verify(token string) (Claims, error) {
	now := i.now()
	var sum [32]byte
	if i.cache != nil {
		sum = tokenSum(token)
		if c, ok := i.cache.get(sum); ok {
			if now.After(c.Expiry.Add(i.leeway)) {
				i.cache.remove(sum)
				return Claims{}, invalid("access token expired at %s", c.Expiry.UTC().Format(time.RFC3339))
			}
			return c, nil
		}
	}
	c, err := i.verify(token, now)
	if err != nil {
		return Claims{}, err
	}
	if i.cache != nil {
		i.cache.put(sum, c)
	}
	return c, nil
}

// tokenSum is the cache key of a token: its SHA-256, hashed from the
// string's own bytes. A []byte(token) conversion would copy the token (a
// few hundred bytes) to the heap on every request, since it is longer than
// the compiler's stack buffer for conversions; Sum256 only reads them.
func tokenSum(token string) [32]byte {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
}

func (i *Issuer) verify(token string, now time.Time) (Claims, error) {
	if len(token) > 8192 {
		return Claims{}, invalid("access token longer than 8192 bytes")
	}
	i.mu.RLock()
	keys, algs := i.keys, i.algs
	i.mu.RUnlock()
	jws, err := jose.ParseSignedCompact(token, algs)
	if err != nil {
		var bad *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &bad) {
			return Claims{}, invalid("access token alg %q is not accepted", bad.Got)
		}
		return Claims{}, invalid("access token is not a compact JWS")
	}
	h := jws.Signatures[0].Protected
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(strings.TrimPrefix(strings.ToLower(typ), "application/"), Type) {
		return Claims{}, invalid("access token typ %q is not %q", typ, Type)
	}
	if h.KeyID == "" {
		return Claims{}, invalid("access token has no kid")
	}
	key := keys[h.KeyID]
	if key == nil {
		return Claims{}, invalid("access token kid %q is not a key of this server", h.KeyID)
	}
	if string(key.alg) != h.Algorithm {
		return Claims{}, invalid("access token alg %q does not match key %s", h.Algorithm, key.ID)
	}
	payload, err := jws.Verify(key.public)
	if err != nil {
		return Claims{}, invalid("access token signature does not verify")
	}
	var w wireClaims
	if err := json.Unmarshal(payload, &w); err != nil {
		return Claims{}, invalid("access token claims are not a valid JSON object")
	}
	if w.Issuer != i.iss {
		return Claims{}, invalid("access token iss %q is not this server", w.Issuer)
	}
	if !w.Audience.Contains(i.aud) {
		return Claims{}, invalid("access token aud %q does not include %s", []string(w.Audience), i.aud)
	}
	if w.Expiry == nil {
		return Claims{}, invalid("access token has no exp")
	}
	exp := w.Expiry.Time()
	if now.After(exp.Add(i.leeway)) {
		return Claims{}, invalid("access token expired at %s", exp.UTC().Format(time.RFC3339))
	}
	c := Claims{
		Issuer: w.Issuer, Subject: w.Subject, Audience: i.aud, ClientID: w.ClientID, Scope: w.Scope,
		Patient: w.Patient, FHIRUser: w.FHIRUser, Expiry: exp, ID: w.ID,
	}
	if w.NotBefore != nil {
		c.NotBefore = w.NotBefore.Time()
		if now.Add(i.leeway).Before(c.NotBefore) {
			return Claims{}, invalid("access token not valid before %s", c.NotBefore.UTC().Format(time.RFC3339))
		}
	}
	if w.IssuedAt != nil {
		c.IssuedAt = w.IssuedAt.Time()
		if now.Add(i.leeway).Before(c.IssuedAt) {
			return Claims{}, invalid("access token issued in the future (%s)", c.IssuedAt.UTC().Format(time.RFC3339))
		}
	}
	return c, nil
}
