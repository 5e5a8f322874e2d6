package token

import (
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

// DetachedType is the typ header of detached signatures, so that they are
// never mistaken for access tokens (whose typ is Type).
const DetachedType = "phr-detached+jws"

// SignDetached signs payload with the issuer's current signing key and
// returns a JWS with detached content (RFC 7515 appendix F):
// "header..signature". Exports sign the SHA-256 digest of a file with it;
// the verifier recomputes the digest and checks the signature over it.
func (i *Issuer) SignDetached(payload []byte) (string, error) {
	i.mu.RLock()
	k := i.signKey
	i.mu.RUnlock()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.signer},
		(&jose.SignerOptions{}).WithType(DetachedType).WithHeader(jose.HeaderKey("kid"), k.ID))
	if err != nil {
		return "", fmt.Errorf("detached signature: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("detached signature: %w", err)
	}
	return jws.DetachedCompactSerialize()
}

// VerifyDetached checks a detached JWS over payload against the issuer's
// keys and returns the kid of the key that signed it.
func (i *Issuer) VerifyDetached(sig string, payload []byte) (string, error) {
	return VerifyDetached(sig, payload, i.JWKS())
}

// VerifyDetached checks a detached JWS over payload against a key set
// (such as a server's published JWKS) and returns the signing key's kid.
func VerifyDetached(sig string, payload []byte, keys jose.JSONWebKeySet) (string, error) {
	jws, err := jose.ParseDetached(sig, payload, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
	if err != nil {
		return "", fmt.Errorf("not a detached JWS: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return "", errors.New("the JWS must have exactly one signature")
	}
	h := jws.Signatures[0].Header
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != DetachedType {
		return "", fmt.Errorf("the JWS typ is %q, not %q", typ, DetachedType)
	}
	cands := keys.Keys
	if h.KeyID != "" {
		cands = keys.Key(h.KeyID)
		if len(cands) == 0 {
			return "", fmt.Errorf("no key with kid %q in the key set", h.KeyID)
		}
	}
	for _, k := range cands {
		if _, err := jws.Verify(k.Public()); err == nil {
			return k.KeyID, nil
		}
	}
	return "", errors.New("the signature does not match the content with any of the keys")
}
