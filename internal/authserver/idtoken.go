package authserver

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/phr-project/phr/internal/auth/authdb"
)

// kvIDKey is the store setting holding the RSA key that signs ID tokens.
// SMART App Launch requires RS256 for ID tokens, while access tokens use
// the server's EdDSA key (internal/auth/token), so the two keys differ.
const kvIDKey = "auth/id-token-key"

// idKey returns the ID token signing key, creating it on first use (RSA
// key generation takes a moment, so servers that never issue ID tokens
// never pay for it).
func (s *Server) idKey(ctx context.Context) (*rsa.PrivateKey, string, error) {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	if s.idPriv != nil {
		return s.idPriv, s.idKid, nil
	}
	fresh, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, "", fmt.Errorf("generate ID token key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(fresh)
	if err != nil {
		return nil, "", fmt.Errorf("encode ID token key: %w", err)
	}
	stored, err := s.db.InitSetting(ctx, kvIDKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		return nil, "", err
	}
	blk, _ := pem.Decode(stored)
	if blk == nil {
		return nil, "", errors.New("the stored ID token key is not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, "", fmt.Errorf("read the stored ID token key: %w", err)
	}
	priv, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, "", errors.New("the stored ID token key is not RSA")
	}
	pub, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	sum := sha256.Sum256(pub)
	s.idPriv, s.idKid = priv, "id-"+base64.RawURLEncoding.EncodeToString(sum[:12])
	return s.idPriv, s.idKid, nil
}

// signIDToken issues an OpenID Connect ID token for the user u to client.
func (s *Server) signIDToken(ctx context.Context, u authdb.User, clientID string, withFHIRUser bool, now time.Time) (string, error) {
	key, kid, err := s.idKey(ctx)
	if err != nil {
		return "", err
	}
	claims := map[string]any{"iss": s.base, "sub": u.ID, "aud": clientID, "iat": now.Unix(), "exp": now.Add(s.o.TokenTTL).Unix(), "email": u.Email}
	if withFHIRUser && u.Role == authdb.RolePatient {
		claims["fhirUser"] = s.fhir + "/Patient/" + u.Patient
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		return "", fmt.Errorf("ID token signer: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign ID token: %w", err)
	}
	return jws.CompactSerialize()
}

// serveJWKS publishes the access token keys and the ID token key.
func (s *Server) serveJWKS(w http.ResponseWriter, r *http.Request) {
	set := s.o.Tokens.JWKS()
	if key, kid, err := s.idKey(r.Context()); err == nil {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &key.PublicKey, KeyID: kid, Algorithm: string(jose.RS256), Use: "sig"})
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, http.StatusOK, set)
}

// openIDConfiguration is the OpenID Connect discovery document, which
// apps use to verify ID tokens (issuer and jwks_uri).
func (s *Server) openIDConfiguration(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                s.base,
		"jwks_uri":                              s.base + "/auth/jwks",
		"authorization_endpoint":                s.base + "/auth/authorize",
		"token_endpoint":                        s.tokenURL,
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"scopes_supported":                      []string{"openid", "fhirUser"},
		"claims_supported":                      []string{"iss", "sub", "aud", "exp", "iat", "fhirUser", "email"},
		"code_challenge_methods_supported":      []string{"S256"},
		"grant_types_supported":                 []string{"authorization_code", "refresh_token", "client_credentials"},
		"token_endpoint_auth_methods_supported": []string{"private_key_jwt", "none"},
	})
}
