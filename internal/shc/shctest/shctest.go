// Package shctest issues SMART Health Cards for tests, as issuers do:
// the payload compressed with raw DEFLATE, signed with ES256.
package shctest

import (
	"bytes"
	"compress/flate"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// Issuer is a signing key and its public JWK, whose kid is the key's
// thumbprint as health cards require.
type Issuer struct {
	Key *ecdsa.PrivateKey
	JWK jose.JSONWebKey
}

// NewIssuer makes a P-256 key.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwk := jose.JSONWebKey{Key: &key.PublicKey, Use: "sig", Algorithm: "ES256"}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	jwk.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	return &Issuer{Key: key, JWK: jwk}
}

// Sign issues a card with payload (the verifiable credential's JSON),
// under the header kid given (the issuer's own kid when empty).
func (is *Issuer) Sign(t testing.TB, kid string, payload []byte) string {
	t.Helper()
	if kid == "" {
		kid = is.JWK.KeyID
	}
	var z bytes.Buffer
	zw, err := flate.NewWriter(&z, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(payload)
	zw.Close()
	in := base64.RawURLEncoding.EncodeToString([]byte(`{"zip":"DEF","alg":"ES256","kid":"`+kid+`"}`)) + "." + base64.RawURLEncoding.EncodeToString(z.Bytes())
	sum := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, is.Key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// Card issues a card of issuer iss holding a FHIR Bundle's JSON.
func (is *Issuer) Card(t testing.TB, iss, bundle string) string {
	t.Helper()
	return is.Sign(t, "", fmt.Appendf(nil, `{"iss":%q,"nbf":1764000000,"vc":{"type":["https://smarthealth.cards#health-card","https://smarthealth.cards#immunization"],"credentialSubject":{"fhirVersion":"4.0.1","fhirBundle":%s}}}`, iss, bundle))
}

// File wraps cards as a .smart-health-card file holds them.
func File(cards ...string) string {
	var b bytes.Buffer
	b.WriteString(`{"verifiableCredential":[`)
	for i, c := range cards {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q", c)
	}
	b.WriteString("]}")
	return b.String()
}
