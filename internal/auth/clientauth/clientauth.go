// Package clientauth authenticates SMART Backend Services clients by their
// signed JWT client assertion (RFC 7523, SMART App Launch 2.2
// client-confidential-asymmetric), the private_key_jwt method the token
// endpoint advertises.
//
// The rules checked, each failure an *oauth.Error (invalid_client unless
// noted) whose description is safe to return:
//   - header alg RS384 or ES384 (more only if the Verifier is configured
//     for them; none and HS* never), kid present, typ "JWT" if present,
//     jku, if present, equal to the client's registered JWKS URL;
//   - iss = sub = a registered client_id;
//   - the signature verifies with the client's key of that kid, taken from
//     its inline JWKS or its JWKS URL (cached per Cache-Control, refetched
//     once for an unknown kid);
//   - aud is exactly the token endpoint URL;
//   - exp present, not past, at most 5 minutes ahead (with a small skew);
//     nbf, if present, not in the future; iat and other claims ignored;
//   - jti present and not seen before for this client within its lifetime.
package clientauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/phr-project/phr/internal/auth/jwks"
	"github.com/phr-project/phr/internal/auth/oauth"
)

// AssertionType is the client_assertion_type value the token endpoint must
// see with a client assertion.
const AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// Client is what the server knows about a registered backend client: its
// keys, either inline or at a URL, never both.
type Client struct {
	ID string
	// JWKS is an inline JSON Web Key Set document.
	JWKS []byte
	// JWKSURL is where the client publishes its key set.
	JWKSURL string
}

// ErrUnknownClient is what a ClientKeys returns (wrapped or not) for a
// client_id that is not registered.
var ErrUnknownClient = errors.New("unknown client")

// ClientKeys finds a registered client; the store implements it.
type ClientKeys interface {
	// Client returns the registration for clientID, or an error wrapping
	// ErrUnknownClient.
	Client(ctx context.Context, clientID string) (Client, error)
}

// ErrReplayed is what a JTIChecker returns (wrapped or not) for a jti it has
// already seen.
var ErrReplayed = errors.New("jti already used")

// JTIChecker remembers assertion ids so that a captured assertion cannot be
// used twice; the store implements it for all replicas, MemoryJTIs for one
// process.
type JTIChecker interface {
	// UseJTI records jti for clientID until expires, or returns an error
	// wrapping ErrReplayed if it is already recorded and not yet expired.
	// Recording must be atomic: of two concurrent calls with one jti, one
	// fails.
	UseJTI(ctx context.Context, clientID, jti string, expires time.Time) error
}

// Defaults for the zero Verifier fields.
const (
	DefaultMaxLifetime = 5 * time.Minute
	DefaultSkew        = 60 * time.Second
	maxAssertionBytes  = 16 << 10
	minRSABits         = 2048
)

// DefaultAlgorithms are the assertion algorithms SMART requires servers to
// support.
var DefaultAlgorithms = []string{"RS384", "ES384"}

// acceptable lists every algorithm a Verifier may be configured for: the
// asymmetric ones. none and HS* are absent, so no configuration enables them.
var acceptable = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}

// Verifier checks client assertions. The zero value accepts RS384 and
// ES384, fetches JWKS URLs through a private jwks.Cache with default
// settings, allows 5 minutes of lifetime and 60 seconds of skew.
type Verifier struct {
	// Keys fetches and caches JWKS URLs; nil means a cache owned by the
	// Verifier, created on first use.
	Keys *jwks.Cache
	// Algorithms replaces DefaultAlgorithms (e.g. to add RS256 for a
	// legacy client). Only asymmetric algorithms are allowed.
	Algorithms []string
	// MaxLifetime is how far ahead exp may be (DefaultMaxLifetime).
	MaxLifetime time.Duration
	// Skew is the clock difference tolerated on exp and nbf (DefaultSkew).
	Skew time.Duration

	ownKeys jwks.Cache
}

var defaultVerifier Verifier

// VerifyClientAssertion checks assertion with the default Verifier; see
// Verifier.VerifyClientAssertion.
func VerifyClientAssertion(ctx context.Context, assertion, tokenURL string, lookup ClientKeys, replay JTIChecker, now time.Time) (string, error) {
	return defaultVerifier.VerifyClientAssertion(ctx, assertion, tokenURL, lookup, replay, now)
}

func fail(format string, args ...any) (string, error) {
	return "", oauth.Errorf(oauth.InvalidClient, format, args...)
}

// assertionClaims is the part of the payload that is checked.
type assertionClaims struct {
	Issuer    string           `json:"iss"`
	Subject   string           `json:"sub"`
	Audience  jwt.Audience     `json:"aud"`
	Expiry    *jwt.NumericDate `json:"exp"`
	NotBefore *jwt.NumericDate `json:"nbf"`
	ID        string           `json:"jti"`
}

// VerifyClientAssertion authenticates a client by its assertion for the
// token endpoint at tokenURL (the exact URL clients must put in aud) and
// returns its client_id. now is the server's clock, passed in so callers and
// tests agree on it.
func (v *Verifier) VerifyClientAssertion(ctx context.Context, assertion, tokenURL string, lookup ClientKeys, replay JTIChecker, now time.Time) (string, error) {
	if assertion == "" {
		return "", oauth.Errorf(oauth.InvalidRequest, "client_assertion is missing")
	}
	if len(assertion) > maxAssertionBytes {
		return fail("client_assertion is longer than %d bytes", maxAssertionBytes)
	}
	algs, err := v.algorithms()
	if err != nil {
		return "", oauth.Wrap(oauth.ServerError, err, "client authentication is misconfigured")
	}
	jws, err := jose.ParseSignedCompact(assertion, algs)
	if err != nil {
		var bad *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &bad) {
			return fail("client_assertion alg %q is not accepted; use one of %s", bad.Got, strings.Join(v.algNames(), ", "))
		}
		return fail("client_assertion is not a compact JWS (three base64url parts): %v", err)
	}
	sig := jws.Signatures[0]
	h := sig.Protected
	if sig.Unprotected.KeyID != "" || sig.Unprotected.Algorithm != "" || sig.Unprotected.ExtraHeaders != nil {
		return fail("client_assertion has unprotected header fields")
	}
	if h.KeyID == "" {
		return fail("client_assertion header has no kid")
	}
	if typ, ok := h.ExtraHeaders[jose.HeaderType]; ok {
		if s, _ := typ.(string); !strings.EqualFold(s, "JWT") {
			return fail("client_assertion header typ %v is not JWT", typ)
		}
	}
	if h.JSONWebKey != nil {
		return fail("client_assertion must not embed its key (jwk header); keys come from the registration")
	}
	jku, hasJKU := h.ExtraHeaders["jku"]

	var claims assertionClaims
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &claims); err != nil {
		return fail("client_assertion claims are not a valid JSON object: %v", err)
	}
	if claims.Issuer == "" {
		return fail("client_assertion has no iss (it must be the client_id)")
	}
	if claims.Subject != claims.Issuer {
		return fail("client_assertion sub %q differs from iss %q; both must be the client_id", claims.Subject, claims.Issuer)
	}
	clientID := claims.Issuer

	client, err := lookup.Client(ctx, clientID)
	if err != nil {
		if errors.Is(err, ErrUnknownClient) {
			return fail("client %q is not registered", clientID)
		}
		return "", oauth.Wrap(oauth.ServerError, fmt.Errorf("look up client %s: %w", clientID, err), "could not look up the client")
	}
	if hasJKU {
		s, _ := jku.(string)
		if client.JWKSURL == "" || s != client.JWKSURL {
			return fail("client_assertion jku %v does not match the JWKS URL registered for client %q", jku, clientID)
		}
	}

	keys, err := v.clientKeys(ctx, client, h.KeyID)
	if err != nil {
		return "", err
	}
	verified := false
	for _, k := range keys {
		if k.Algorithm != "" && k.Algorithm != h.Algorithm {
			continue
		}
		if fitErr := keyFits(h.Algorithm, k.Key); fitErr != nil {
			if len(keys) == 1 {
				return fail("client key %q cannot verify %s: %v", h.KeyID, h.Algorithm, fitErr)
			}
			continue
		}
		if _, err := jws.Verify(k.Key); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return fail("client_assertion signature does not verify with client %q key %q", clientID, h.KeyID)
	}

	if !claims.Audience.Contains(tokenURL) {
		return fail("client_assertion aud %q is not the token endpoint %s", []string(claims.Audience), tokenURL)
	}
	skew := cmpOr(v.Skew, DefaultSkew)
	if claims.Expiry == nil {
		return fail("client_assertion has no exp")
	}
	exp := claims.Expiry.Time()
	if now.After(exp.Add(skew)) {
		return fail("client_assertion expired at %s", exp.UTC().Format(time.RFC3339))
	}
	if maxLife := cmpOr(v.MaxLifetime, DefaultMaxLifetime); exp.After(now.Add(maxLife + skew)) {
		return fail("client_assertion exp %s is more than %s ahead", exp.UTC().Format(time.RFC3339), maxLife)
	}
	if claims.NotBefore != nil && now.Add(skew).Before(claims.NotBefore.Time()) {
		return fail("client_assertion is not valid before %s", claims.NotBefore.Time().UTC().Format(time.RFC3339))
	}
	if claims.ID == "" {
		return fail("client_assertion has no jti")
	}
	if err := replay.UseJTI(ctx, clientID, claims.ID, exp.Add(skew)); err != nil {
		if errors.Is(err, ErrReplayed) {
			return fail("client_assertion jti %q was already used", claims.ID)
		}
		return "", oauth.Wrap(oauth.ServerError, fmt.Errorf("record jti for %s: %w", clientID, err), "could not record the assertion id")
	}
	return clientID, nil
}

func cmpOr(v, def time.Duration) time.Duration {
	if v > 0 {
		return v
	}
	return def
}

func (v *Verifier) algNames() []string {
	if len(v.Algorithms) > 0 {
		return v.Algorithms
	}
	return DefaultAlgorithms
}

func (v *Verifier) algorithms() ([]jose.SignatureAlgorithm, error) {
	var out []jose.SignatureAlgorithm
	for _, a := range v.algNames() {
		if !slices.Contains(acceptable, a) {
			return nil, fmt.Errorf("client assertion algorithm %q cannot be enabled; only %s", a, strings.Join(acceptable, ", "))
		}
		out = append(out, jose.SignatureAlgorithm(a))
	}
	return out, nil
}

func (v *Verifier) clientKeys(ctx context.Context, c Client, kid string) ([]jose.JSONWebKey, error) {
	switch {
	case c.JWKSURL != "" && len(c.JWKS) > 0:
		return nil, oauth.Errorf(oauth.ServerError, "client %q is registered with both an inline JWKS and a JWKS URL", c.ID)
	case c.JWKSURL != "":
		cache := v.Keys
		if cache == nil {
			cache = &v.ownKeys
		}
		keys, err := cache.Key(ctx, c.JWKSURL, kid)
		if errors.Is(err, jwks.ErrUnknownKID) {
			return nil, oauth.Wrap(oauth.InvalidClient, err, "client %q has no key with kid %q at its JWKS URL", c.ID, kid)
		}
		if err != nil {
			return nil, oauth.Wrap(oauth.InvalidClient, err, "could not fetch the JWKS of client %q from its registered URL", c.ID)
		}
		return keys, nil
	case len(c.JWKS) > 0:
		set, err := jwks.ParseSet(c.JWKS)
		if err != nil {
			return nil, oauth.Wrap(oauth.InvalidClient, err, "the registered JWKS of client %q is unusable", c.ID)
		}
		keys := set.Key(kid)
		if len(keys) == 0 {
			return nil, oauth.Errorf(oauth.InvalidClient, "client %q has no registered key with kid %q", c.ID, kid)
		}
		return keys, nil
	default:
		return nil, oauth.Errorf(oauth.InvalidClient, "client %q has no registered keys", c.ID)
	}
}

// keyFits checks that key can verify alg, so a mismatch reads as such
// rather than as a bad signature, and refuses RSA keys under 2048 bits.
func keyFits(alg string, key any) error {
	switch {
	case strings.HasPrefix(alg, "RS"), strings.HasPrefix(alg, "PS"):
		k, ok := key.(*rsa.PublicKey)
		if !ok {
			return fmt.Errorf("%s needs an RSA key, the key is %T", alg, key)
		}
		if k.N.BitLen() < minRSABits {
			return fmt.Errorf("RSA key of %d bits is shorter than %d", k.N.BitLen(), minRSABits)
		}
		return nil
	case strings.HasPrefix(alg, "ES"):
		k, ok := key.(*ecdsa.PublicKey)
		if !ok {
			return fmt.Errorf("%s needs an EC key, the key is %T", alg, key)
		}
		want := map[string]elliptic.Curve{"ES256": elliptic.P256(), "ES384": elliptic.P384(), "ES512": elliptic.P521()}[alg]
		if k.Curve != want {
			return fmt.Errorf("%s needs curve %s, the key is on %s", alg, want.Params().Name, k.Curve.Params().Name)
		}
		return nil
	}
	return fmt.Errorf("algorithm %s is not supported", alg)
}
