// Package jwstest builds signed JWTs with the standard library alone, for
// tests of the verifiers: checking go-jose-based verification against an
// independent JWS implementation catches misuse that a round trip through
// the same library would hide. It can also build what no honest signer
// would: alg none, HMAC keyed with a public key, arbitrary headers.
package jwstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
)

var hashes = map[string]crypto.Hash{
	"RS256": crypto.SHA256, "RS384": crypto.SHA384, "RS512": crypto.SHA512,
	"PS256": crypto.SHA256, "PS384": crypto.SHA384, "PS512": crypto.SHA512,
	"ES256": crypto.SHA256, "ES384": crypto.SHA384, "ES512": crypto.SHA512,
	"HS256": crypto.SHA256, "HS384": crypto.SHA384, "HS512": crypto.SHA512,
}

// Sign returns a compact JWS of claims. The header starts as
// {"alg": alg, "typ": "JWT"}; entries of header are added, and a nil value
// removes one. key is an *ecdsa.PrivateKey, *rsa.PrivateKey,
// ed25519.PrivateKey (EdDSA) or []byte (HS*),
// and is ignored for alg "none", whose signature is empty.
func Sign(alg string, key any, header, claims map[string]any) (string, error) {
	h := map[string]any{"alg": alg, "typ": "JWT"}
	for k, v := range header {
		if v == nil {
			delete(h, k)
		} else {
			h[k] = v
		}
	}
	hb, err := json.Marshal(h)
	if err != nil {
		return "", fmt.Errorf("jwstest: header: %w", err)
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("jwstest: claims: %w", err)
	}
	input := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
	if alg == "none" {
		return input + ".", nil
	}
	if k, ok := key.(ed25519.PrivateKey); ok && alg == "EdDSA" {
		return input + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(k, []byte(input))), nil
	}
	hash, ok := hashes[alg]
	if !ok {
		return "", fmt.Errorf("jwstest: alg %s not supported", alg)
	}
	hw := hash.New()
	hw.Write([]byte(input))
	digest := hw.Sum(nil)
	var sig []byte
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, digest)
		if err != nil {
			return "", fmt.Errorf("jwstest: %w", err)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		sig = make([]byte, 2*size)
		r.FillBytes(sig[:size])
		s.FillBytes(sig[size:])
	case *rsa.PrivateKey:
		if alg[0] == 'P' {
			sig, err = rsa.SignPSS(rand.Reader, k, hash, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			sig, err = rsa.SignPKCS1v15(rand.Reader, k, hash, digest)
		}
		if err != nil {
			return "", fmt.Errorf("jwstest: %w", err)
		}
	case []byte:
		m := hmac.New(hash.New, k)
		m.Write([]byte(input))
		sig = m.Sum(nil)
	default:
		return "", fmt.Errorf("jwstest: key type %T not supported", key)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}
