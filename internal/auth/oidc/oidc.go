// Package oidc verifies bearer JWTs issued by external OpenID Connect
// providers that the server is configured to trust (a hospital's identity
// provider, Keycloak, Auth0, ...), so their users can call the FHIR API
// without a token from this server.
//
// Only configured issuers are trusted: a token naming any other iss is
// refused before anything is fetched, so a token cannot make the server
// call out to a host of the sender's choosing. Keys come from the issuer's
// JWKS, found by OpenID discovery (/.well-known/openid-configuration,
// jwks_uri) or configured directly, and cached per Cache-Control.
package oidc

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/phr-project/phr/internal/auth/jwks"
	"github.com/phr-project/phr/internal/auth/oauth"
)

// DefaultAlgorithms are accepted when an Issuer lists none.
var DefaultAlgorithms = []string{"RS256", "ES256", "RS384", "ES384", "PS256"}

var asymmetric = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}

var hmacAlgs = []string{"HS256", "HS384", "HS512"}

// ErrUntrusted is wrapped by Verify's error for a token whose issuer is
// not configured (it is probably not meant for this verifier at all).
var ErrUntrusted = errors.New("issuer not trusted")

// DefaultLeeway is the clock skew allowed on exp, nbf and iat.
const DefaultLeeway = 60 * time.Second

// Issuer configures one trusted token issuer.
type Issuer struct {
	// URL is the issuer identifier, exactly as tokens carry it in iss.
	URL string
	// Audience lists accepted aud values; a token must name at least one.
	Audience []string
	// JWKSURL, when set, is used instead of discovery.
	JWKSURL string
	// Algorithms replaces DefaultAlgorithms. HS256/HS384/HS512 may be listed
	// only together with SharedSecret; none never.
	Algorithms []string
	// SharedSecret is the HMAC key for an issuer that signs with HS*. When
	// set and Algorithms is empty, HS256 is the only algorithm accepted.
	// It must be at least 32 bytes.
	SharedSecret []byte
	// PatientClaim names the claim that holds the patient id ("" for none).
	// A dotted path reaches into nested objects ("ext.patient") when no
	// top-level claim has the whole name. "Patient/123" yields "123".
	PatientClaim string
	// ScopeClaim names the claim that holds the scopes, a space-separated
	// string or an array of strings; "" means "scope". Dotted paths as for
	// PatientClaim.
	ScopeClaim string
	// Leeway replaces DefaultLeeway.
	Leeway time.Duration
}

// Identity is what a verified external token says about its bearer.
type Identity struct {
	Issuer  string
	Subject string
	// Patient is the mapped patient id, "" when the claim is absent.
	Patient string
	// Scope is the mapped scopes joined with spaces.
	Scope  string
	Expiry time.Time
	// Claims holds every claim, for mappings beyond patient and scope.
	Claims map[string]any
}

type issuer struct {
	cfg    Issuer
	algs   []string
	leeway time.Duration

	mu         sync.Mutex // guards the discovered jwks_uri
	jwksURL    string
	discovered time.Time // when jwksURL expires (discovery only)
}

// Verifier checks tokens from the configured issuers. It is safe for
// concurrent use.
type Verifier struct {
	keys    *jwks.Cache
	issuers map[string]*issuer
	algs    []jose.SignatureAlgorithm
}

// NewVerifier returns a Verifier trusting issuers, fetching discovery
// documents and key sets through keys (nil means a new jwks.Cache with
// default settings). Configuration mistakes (HS* without a secret, short
// secrets, none, no audience) are errors here, not at the first token.
func NewVerifier(keys *jwks.Cache, issuers ...Issuer) (*Verifier, error) {
	if keys == nil {
		keys = &jwks.Cache{}
	}
	v := &Verifier{keys: keys, issuers: make(map[string]*issuer)}
	for _, cfg := range issuers {
		if cfg.URL == "" {
			return nil, errors.New("oidc: issuer with no URL")
		}
		if _, dup := v.issuers[cfg.URL]; dup {
			return nil, fmt.Errorf("oidc: issuer %s configured twice", cfg.URL)
		}
		if len(cfg.Audience) == 0 {
			return nil, fmt.Errorf("oidc: issuer %s: no audience configured; tokens meant for other services would be accepted", cfg.URL)
		}
		algs := cfg.Algorithms
		if len(algs) == 0 {
			algs = DefaultAlgorithms
			if len(cfg.SharedSecret) > 0 {
				algs = []string{"HS256"}
			}
		}
		for _, a := range algs {
			switch {
			case slices.Contains(asymmetric, a):
			case slices.Contains(hmacAlgs, a):
				if len(cfg.SharedSecret) == 0 {
					return nil, fmt.Errorf("oidc: issuer %s: %s needs a SharedSecret", cfg.URL, a)
				}
			default:
				return nil, fmt.Errorf("oidc: issuer %s: algorithm %q is not accepted", cfg.URL, a)
			}
			if !slices.Contains(v.algs, jose.SignatureAlgorithm(a)) {
				v.algs = append(v.algs, jose.SignatureAlgorithm(a))
			}
		}
		if len(cfg.SharedSecret) > 0 && len(cfg.SharedSecret) < 32 {
			return nil, fmt.Errorf("oidc: issuer %s: SharedSecret of %d bytes is shorter than 32", cfg.URL, len(cfg.SharedSecret))
		}
		leeway := cfg.Leeway
		if leeway == 0 {
			leeway = DefaultLeeway
		}
		v.issuers[cfg.URL] = &issuer{cfg: cfg, algs: algs, leeway: leeway}
	}
	if len(v.issuers) == 0 {
		return nil, errors.New("oidc: no issuers configured")
	}
	return v, nil
}

func invalid(format string, args ...any) error {
	return oauth.Errorf(oauth.InvalidToken, format, args...)
}

type standardClaims struct {
	Issuer    string           `json:"iss"`
	Subject   string           `json:"sub"`
	Audience  jwt.Audience     `json:"aud"`
	Expiry    *jwt.NumericDate `json:"exp"`
	NotBefore *jwt.NumericDate `json:"nbf"`
	IssuedAt  *jwt.NumericDate `json:"iat"`
}

// Verify checks token against its issuer's configuration and keys at time
// now and returns the bearer's identity. Failures are *oauth.Error with code
// invalid_token (or server_error when the issuer's keys cannot be fetched).
func (v *Verifier) Verify(ctx context.Context, token string, now time.Time) (Identity, error) {
	if len(token) > 16<<10 {
		return Identity{}, invalid("token longer than 16384 bytes")
	}
	jws, err := jose.ParseSignedCompact(token, v.algs)
	if err != nil {
		var bad *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &bad) {
			return Identity{}, invalid("token alg %q is not accepted", bad.Got)
		}
		return Identity{}, invalid("token is not a compact JWS")
	}
	h := jws.Signatures[0].Protected
	payload := jws.UnsafePayloadWithoutVerification()
	var std standardClaims
	if err := json.Unmarshal(payload, &std); err != nil {
		return Identity{}, invalid("token claims are not a valid JSON object")
	}
	iss := v.issuers[std.Issuer]
	if iss == nil {
		return Identity{}, oauth.Wrap(oauth.InvalidToken, ErrUntrusted, "token issuer %q is not trusted", std.Issuer)
	}
	if !slices.Contains(iss.algs, h.Algorithm) {
		return Identity{}, invalid("token alg %q is not accepted for issuer %s", h.Algorithm, std.Issuer)
	}
	if h.JSONWebKey != nil {
		return Identity{}, invalid("token must not embed its key (jwk header)")
	}
	if err := v.verifySignature(ctx, iss, jws, h); err != nil {
		return Identity{}, err
	}

	if !slices.ContainsFunc(iss.cfg.Audience, std.Audience.Contains) {
		return Identity{}, invalid("token aud %q is not one of %q", []string(std.Audience), iss.cfg.Audience)
	}
	if std.Expiry == nil {
		return Identity{}, invalid("token has no exp")
	}
	exp := std.Expiry.Time()
	if now.After(exp.Add(iss.leeway)) {
		return Identity{}, invalid("token expired at %s", exp.UTC().Format(time.RFC3339))
	}
	if std.NotBefore != nil && now.Add(iss.leeway).Before(std.NotBefore.Time()) {
		return Identity{}, invalid("token not valid before %s", std.NotBefore.Time().UTC().Format(time.RFC3339))
	}
	if std.IssuedAt != nil && now.Add(iss.leeway).Before(std.IssuedAt.Time()) {
		return Identity{}, invalid("token issued in the future (%s)", std.IssuedAt.Time().UTC().Format(time.RFC3339))
	}

	var all map[string]any
	dec := json.NewDecoder(strings.NewReader(string(payload)))
	dec.UseNumber()
	if err := dec.Decode(&all); err != nil {
		return Identity{}, invalid("token claims are not a valid JSON object")
	}
	id := Identity{Issuer: std.Issuer, Subject: std.Subject, Expiry: exp, Claims: all}
	if c := iss.cfg.PatientClaim; c != "" {
		if val, ok := claim(all, c); ok {
			s, isString := val.(string)
			if !isString || s == "" {
				return Identity{}, invalid("token claim %q (patient) is not a non-empty string", c)
			}
			id.Patient = strings.TrimPrefix(s, "Patient/")
		}
	}
	scopeClaim := cmpOr(iss.cfg.ScopeClaim, "scope")
	if val, ok := claim(all, scopeClaim); ok {
		switch s := val.(type) {
		case string:
			id.Scope = strings.Join(strings.Fields(s), " ")
		case []any:
			parts := make([]string, 0, len(s))
			for _, e := range s {
				str, ok := e.(string)
				if !ok {
					return Identity{}, invalid("token claim %q (scopes) holds a non-string", scopeClaim)
				}
				parts = append(parts, str)
			}
			id.Scope = strings.Join(parts, " ")
		default:
			return Identity{}, invalid("token claim %q (scopes) is neither a string nor an array of strings", scopeClaim)
		}
	}
	return id, nil
}

func cmpOr(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

// claim finds name in claims: the top-level claim of that exact name, else
// a dotted path through nested objects.
func claim(claims map[string]any, name string) (any, bool) {
	if v, ok := claims[name]; ok {
		return v, true
	}
	var cur any = claims
	for part := range strings.SplitSeq(name, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func (v *Verifier) verifySignature(ctx context.Context, iss *issuer, jws *jose.JSONWebSignature, h jose.Header) error {
	if strings.HasPrefix(h.Algorithm, "HS") {
		if _, err := jws.Verify(iss.cfg.SharedSecret); err != nil {
			return invalid("token signature does not verify")
		}
		return nil
	}
	u, err := iss.keysURL(ctx, v.keys)
	if err != nil {
		return oauth.Wrap(oauth.ServerError, err, "could not find the keys of issuer %s", iss.cfg.URL)
	}
	var keys []jose.JSONWebKey
	if h.KeyID != "" {
		keys, err = v.keys.Key(ctx, u, h.KeyID)
		if errors.Is(err, jwks.ErrUnknownKID) {
			return invalid("token kid %q is not a key of issuer %s", h.KeyID, iss.cfg.URL)
		}
	} else {
		var set *jose.JSONWebKeySet
		if set, err = v.keys.Get(ctx, u); err == nil {
			keys = set.Keys
		}
	}
	if err != nil {
		return oauth.Wrap(oauth.ServerError, err, "could not fetch the keys of issuer %s", iss.cfg.URL)
	}
	for _, k := range keys {
		if (k.Algorithm != "" && k.Algorithm != h.Algorithm) || !keyFits(h.Algorithm, k.Key) {
			continue
		}
		if _, err := jws.Verify(k.Key); err == nil {
			return nil
		}
	}
	return invalid("token signature does not verify with the keys of issuer %s", iss.cfg.URL)
}

func keyFits(alg string, key any) bool {
	switch alg[:2] {
	case "RS", "PS":
		_, ok := key.(*rsa.PublicKey)
		return ok
	case "ES":
		_, ok := key.(*ecdsa.PublicKey)
		return ok
	}
	return false
}

// keysURL returns the issuer's JWKS URL: the configured one, or jwks_uri
// from its discovery document, cached as long as that document may be.
func (i *issuer) keysURL(ctx context.Context, c *jwks.Cache) (string, error) {
	if i.cfg.JWKSURL != "" {
		return i.cfg.JWKSURL, nil
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	now := time.Now()
	if c.Now != nil {
		now = c.Now()
	}
	if i.jwksURL != "" && now.Before(i.discovered) {
		return i.jwksURL, nil
	}
	u := strings.TrimSuffix(i.cfg.URL, "/") + "/.well-known/openid-configuration"
	body, expires, err := c.FetchJSON(ctx, u)
	if err != nil {
		if i.jwksURL != "" {
			return i.jwksURL, nil // keep the last known jwks_uri through an outage
		}
		return "", fmt.Errorf("oidc discovery: %w", err)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("oidc discovery %s: %w", u, err)
	}
	if doc.Issuer != i.cfg.URL {
		return "", fmt.Errorf("oidc discovery %s: issuer %q does not match the configured %q", u, doc.Issuer, i.cfg.URL)
	}
	if doc.JWKSURI == "" {
		return "", fmt.Errorf("oidc discovery %s: no jwks_uri", u)
	}
	i.jwksURL, i.discovered = doc.JWKSURI, expires
	return i.jwksURL, nil
}
