package bulkclient

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// assertionType is the client_assertion_type of a JWT client assertion.
const assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// Backend gets access tokens with SMART Backend Services: the
// client_credentials grant authenticated by a JWT signed with the
// client's private key (RS384 for RSA keys, ES384 for P-384 keys, ES256
// for P-256 keys). Tokens are reused until shortly before they expire.
type Backend struct {
	ClientID string
	// TokenURL is the token endpoint; when empty it is discovered from
	// [Base]/.well-known/smart-configuration.
	TokenURL string
	// Base is the FHIR base, for discovery.
	Base string
	// Scope requested (default "system/*.read").
	Scope string
	// Key is the private key; KeyID its kid (the JWKS entry the server
	// registered).
	Key   crypto.Signer
	KeyID string
	HTTP  *http.Client

	mu      sync.Mutex
	token   string
	expires time.Time
}

// LoadKey reads a private key from a PEM file (PKCS#8, PKCS#1 or SEC 1) or
// a JWK (a private JSON Web Key, or a key set whose first private key is
// used); it returns the key and the kid found in a JWK.
func LoadKey(data []byte) (crypto.Signer, string, error) {
	trimmed := strings.TrimSpace(string(data))
	if strings.HasPrefix(trimmed, "{") {
		var set jose.JSONWebKeySet
		if json.Unmarshal(data, &set) == nil && len(set.Keys) > 0 {
			for _, k := range set.Keys {
				if s, ok := k.Key.(crypto.Signer); ok && !k.IsPublic() {
					return s, k.KeyID, nil
				}
			}
			return nil, "", errors.New("the key set has no private key")
		}
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(data); err != nil {
			return nil, "", fmt.Errorf("not a JWK: %w", err)
		}
		s, ok := k.Key.(crypto.Signer)
		if !ok || k.IsPublic() {
			return nil, "", errors.New("the JWK is not a private RSA or EC key")
		}
		return s, k.KeyID, nil
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, "", errors.New("not a PEM private key or a JWK")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, "", nil
		}
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, "", nil
	}
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return k, "", nil
	}
	return nil, "", fmt.Errorf("PEM block %q is not a private key this client can use", block.Type)
}

func algorithm(k crypto.Signer) (jose.SignatureAlgorithm, error) {
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return jose.RS384, nil
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P384():
			return jose.ES384, nil
		case elliptic.P256():
			return jose.ES256, nil
		}
	}
	return "", fmt.Errorf("unsupported key type %T (use RSA or EC P-384)", k)
}

// Assertion returns a signed client assertion for the token endpoint.
func (b *Backend) Assertion(tokenURL string) (string, error) {
	alg, err := algorithm(b.Key)
	if err != nil {
		return "", err
	}
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if b.KeyID != "" {
		opts = opts.WithHeader("kid", b.KeyID)
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: b.Key}, opts)
	if err != nil {
		return "", err
	}
	var jti [16]byte
	rand.Read(jti[:])
	now := time.Now()
	claims := jwt.Claims{Issuer: b.ClientID, Subject: b.ClientID, Audience: jwt.Audience{tokenURL},
		Expiry: jwt.NewNumericDate(now.Add(4 * time.Minute)), IssuedAt: jwt.NewNumericDate(now), ID: hex.EncodeToString(jti[:])}
	return jwt.Signed(sig).Claims(claims).Serialize()
}

func (b *Backend) http() *http.Client {
	if b.HTTP != nil {
		return b.HTTP
	}
	return &http.Client{Timeout: time.Minute}
}

// Discover finds the token endpoint in the server's SMART configuration.
func (b *Backend) Discover(ctx context.Context) (string, error) {
	u := strings.TrimSuffix(b.Base, "/") + "/.well-known/smart-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := b.http().Do(req)
	if err != nil {
		return "", fmt.Errorf("discover the token endpoint: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("discover the token endpoint: %s answered %d", u, resp.StatusCode)
	}
	var conf struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&conf); err != nil || conf.TokenEndpoint == "" {
		return "", fmt.Errorf("discover the token endpoint: %s has no token_endpoint", u)
	}
	return conf.TokenEndpoint, nil
}

// Token implements TokenSource.
func (b *Backend) Token(ctx context.Context) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.token != "" && time.Until(b.expires) > 30*time.Second {
		return b.token, nil
	}
	if b.TokenURL == "" {
		u, err := b.Discover(ctx)
		if err != nil {
			return "", err
		}
		b.TokenURL = u
	}
	assertion, err := b.Assertion(b.TokenURL)
	if err != nil {
		return "", fmt.Errorf("sign the client assertion: %w", err)
	}
	scope := b.Scope
	if scope == "" {
		scope = "system/*.read"
	}
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {scope},
		"client_assertion_type": {assertionType}, "client_assertion": {assertion}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := b.http().Do(req)
	if err != nil {
		return "", fmt.Errorf("token request: %w", err)
	}
	defer resp.Body.Close()
	var tr struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&tr); err != nil {
		return "", fmt.Errorf("token response (HTTP %d) is not JSON: %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK || tr.AccessToken == "" {
		return "", fmt.Errorf("token request refused (HTTP %d): %s %s", resp.StatusCode, tr.Error, tr.Description)
	}
	if tr.ExpiresIn <= 0 {
		tr.ExpiresIn = 300
	}
	b.token, b.expires = tr.AccessToken, time.Now().Add(time.Duration(tr.ExpiresIn)*time.Second)
	return b.token, nil
}
