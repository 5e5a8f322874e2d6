// Package shc reads SMART Health Cards (https://spec.smarthealth.cards):
// the signed, compressed FHIR Bundles that pharmacies, labs and
// immunization registries hand out as files (.smart-health-card), as QR
// codes (shc:/ numeric text) and inside SMART Health Links.
//
// A card is a compact JWS: a header {"zip":"DEF","alg":"ES256","kid":...},
// a payload that is raw DEFLATE of a JSON verifiable credential
// {iss, nbf, vc:{type, credentialSubject:{fhirVersion, fhirBundle}}}, and
// an ES256 signature by the issuer's key, published at
// iss + "/.well-known/jwks.json" under kid (the key's JWK thumbprint).
package shc

import (
	"bytes"
	"compress/flate"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/phr-project/phr/internal/auth/jwks"
)

// MaxPayload bounds a card's inflated payload. Cards are meant for QR
// codes, a few kilobytes; the bound keeps a crafted one from inflating
// without limit.
const MaxPayload = 4 << 20

// Card is a decoded health card. Its signature is not checked by Parse;
// see Verify.
type Card struct {
	// JWS is the card as issued.
	JWS string
	// KeyID and Alg are the header's kid and alg.
	KeyID, Alg string
	// Issuer is the payload's iss, the issuer's base URL.
	Issuer string
	// NotBefore is the payload's nbf: when the card was issued.
	NotBefore time.Time
	// Types is vc.type (https://smarthealth.cards#health-card and the
	// kinds of record it holds).
	Types []string
	// FHIRVersion is vc.credentialSubject.fhirVersion.
	FHIRVersion string
	// Bundle is vc.credentialSubject.fhirBundle: the FHIR Bundle's JSON.
	Bundle []byte
	// RevocationID is vc.rid, by which the issuer can revoke the card
	// (see CRL); "" when it has none.
	RevocationID string
}

// Parse decodes a card's JWS: its header, and its payload inflated.
func Parse(jws string) (*Card, error) {
	jws = strings.TrimSpace(jws)
	parts := strings.Split(jws, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("a health card is a compact JWS of three parts separated by dots; this has %d", len(parts))
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, fmt.Errorf("JWS header: not base64url: %w", err)
	}
	var h struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Zip string `json:"zip"`
	}
	if err := json.Unmarshal(hb, &h); err != nil {
		return nil, fmt.Errorf("JWS header: not a JSON object: %w", err)
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("JWS payload: not base64url: %w", err)
	}
	if h.Zip == "DEF" {
		zr := flate.NewReader(bytes.NewReader(pb))
		pb, err = io.ReadAll(io.LimitReader(zr, MaxPayload+1))
		if err != nil {
			return nil, fmt.Errorf("JWS payload: not raw DEFLATE data (header zip DEF): %w", err)
		}
		if len(pb) > MaxPayload {
			return nil, fmt.Errorf("JWS payload: inflates to more than %d bytes", MaxPayload)
		}
	}
	var p struct {
		Iss string          `json:"iss"`
		Nbf json.Number     `json:"nbf"`
		VC  json.RawMessage `json:"vc"`
	}
	d := json.NewDecoder(bytes.NewReader(pb))
	d.UseNumber()
	if err := d.Decode(&p); err != nil {
		return nil, fmt.Errorf("JWS payload: not a JSON object: %w", err)
	}
	var vc struct {
		Type              []string `json:"type"`
		RID               string   `json:"rid"`
		CredentialSubject struct {
			FHIRVersion string          `json:"fhirVersion"`
			FHIRBundle  json.RawMessage `json:"fhirBundle"`
		} `json:"credentialSubject"`
	}
	if len(p.VC) == 0 {
		return nil, errors.New("JWS payload: no vc (verifiable credential)")
	}
	if err := json.Unmarshal(p.VC, &vc); err != nil {
		return nil, fmt.Errorf("JWS payload: vc: %w", err)
	}
	if len(vc.CredentialSubject.FHIRBundle) == 0 || vc.CredentialSubject.FHIRBundle[0] != '{' {
		return nil, errors.New("JWS payload: vc.credentialSubject.fhirBundle is missing or not an object")
	}
	c := &Card{JWS: jws, KeyID: h.Kid, Alg: h.Alg, Issuer: p.Iss, Types: vc.Type,
		FHIRVersion: vc.CredentialSubject.FHIRVersion, Bundle: vc.CredentialSubject.FHIRBundle, RevocationID: vc.RID}
	if p.Nbf != "" {
		f, err := p.Nbf.Float64()
		if err != nil || f < 0 || f > math.MaxInt32*4 {
			return nil, fmt.Errorf("JWS payload: nbf %q is not a time in seconds", p.Nbf)
		}
		sec, frac := math.Modf(f)
		c.NotBefore = time.Unix(int64(sec), int64(frac*1e9)).UTC()
	}
	return c, nil
}

// ErrSignature is returned (wrapped) by Verify when the signature does not
// verify with the key: the card was altered, or another key signed it.
var ErrSignature = errors.New("the signature does not verify")

// Verify checks the card's ES256 signature with key, a P-256 public key
// whose kid (when it has one) is the card's.
func (c *Card) Verify(key jose.JSONWebKey) error {
	if c.Alg != "ES256" {
		return fmt.Errorf("the card is signed with %q; health cards use ES256", c.Alg)
	}
	if key.KeyID != "" && key.KeyID != c.KeyID {
		return fmt.Errorf("the key's kid %q is not the card's %q", key.KeyID, c.KeyID)
	}
	pub, ok := key.Key.(*ecdsa.PublicKey)
	if !ok {
		if pk, isPriv := key.Key.(*ecdsa.PrivateKey); isPriv {
			pub = &pk.PublicKey
		} else {
			return fmt.Errorf("key %q is not an EC key", key.KeyID)
		}
	}
	if pub.Curve != elliptic.P256() {
		return fmt.Errorf("key %q is not on the P-256 curve", key.KeyID)
	}
	i := strings.LastIndexByte(c.JWS, '.')
	sig, err := base64.RawURLEncoding.DecodeString(c.JWS[i+1:])
	if err != nil || len(sig) != 64 {
		return fmt.Errorf("%w: it is not 64 bytes of base64url (ES256's r and s)", ErrSignature)
	}
	sum := sha256.Sum256([]byte(c.JWS[:i]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(pub, sum[:], r, s) {
		return fmt.Errorf("%w with key %q: the card was altered, or another key signed it", ErrSignature, key.KeyID)
	}
	return nil
}

// Keys finds an issuer's public key by kid.
type Keys interface {
	Key(ctx context.Context, issuer, kid string) ([]jose.JSONWebKey, error)
}

// ErrNoKey is returned (wrapped) by a Keys with no key for a card.
var ErrNoKey = errors.New("no key for the card")

// Find returns the JWS of each card that data holds, when it is one of the
// forms cards travel in: a health card file ({"verifiableCredential":[...]},
// as .smart-health-card files and SMART Health Links hold them), a compact
// JWS, or the text of QR codes (shc:/ numeric, one per line or run
// together, chunked ones shc:/i/n/... in any order). ok is false when data is none of these;
// err says what is wrong with one that is.
func Find(data []byte) (jws []string, ok bool, err error) {
	t := bytes.TrimSpace(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")))
	switch {
	case len(t) > 0 && t[0] == '{':
		if !bytes.Contains(t, []byte(`"verifiableCredential"`)) {
			return nil, false, nil
		}
		var f struct {
			ResourceType string            `json:"resourceType"`
			VC           []json.RawMessage `json:"verifiableCredential"`
		}
		if json.Unmarshal(t, &f) != nil || f.ResourceType != "" || f.VC == nil {
			return nil, false, nil
		}
		for i, raw := range f.VC {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, true, fmt.Errorf("verifiableCredential[%d] is not a string (a card's JWS)", i)
			}
			jws = append(jws, s)
		}
		if len(jws) == 0 {
			return nil, true, errors.New("verifiableCredential is empty: the file holds no card")
		}
		return jws, true, nil
	case bytes.HasPrefix(t, []byte("shc:/")):
		// One text per line, or run together (files of one QR code each,
		// concatenated).
		jws, err := fromQR(strings.Split(strings.Join(strings.Fields(string(t)), ""), "shc:/")[1:])
		return jws, true, err
	case looksJWS(t):
		return []string{string(t)}, true, nil
	}
	return nil, false, nil
}

// looksJWS reports whether t is a compact JWS whose header is JSON.
func looksJWS(t []byte) bool {
	if !bytes.HasPrefix(t, []byte("eyJ")) || bytes.Count(t, []byte(".")) != 2 {
		return false
	}
	for _, c := range t {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// fromQR decodes the texts of QR codes (what follows shc:/ in each) into
// JWSs: each single one is a card, and chunks i/n/... are joined in order.
func fromQR(bodies []string) ([]string, error) {
	var out []string
	chunks := map[int]string{}
	total := 0
	for _, body := range bodies {
		parts := strings.Split(body, "/")
		switch len(parts) {
		case 1:
			jws, err := numeric(parts[0])
			if err != nil {
				return nil, err
			}
			out = append(out, jws)
		case 3:
			i, err1 := strconv.Atoi(parts[0])
			n, err2 := strconv.Atoi(parts[1])
			if err1 != nil || err2 != nil || n < 1 || i < 1 || i > n || n > 99 {
				return nil, fmt.Errorf("shc:/%s/%s/...: not a chunk number i/n", parts[0], parts[1])
			}
			if total != 0 && total != n {
				return nil, fmt.Errorf("the QR texts are chunks of cards of %d and %d chunks; import one card's chunks at a time", total, n)
			}
			total = n
			jws, err := numeric(parts[2])
			if err != nil {
				return nil, err
			}
			if _, dup := chunks[i]; dup {
				return nil, fmt.Errorf("chunk %d of %d appears twice", i, n)
			}
			chunks[i] = jws
		default:
			return nil, fmt.Errorf("shc:/%.20s...: neither a whole card nor a chunk i/n", body)
		}
	}
	if total > 0 {
		if len(chunks) != total {
			var have []int
			for i := range chunks {
				have = append(have, i)
			}
			sort.Ints(have)
			return nil, fmt.Errorf("the card has %d chunks and only %v are here", total, have)
		}
		var b strings.Builder
		for i := 1; i <= total; i++ {
			b.WriteString(chunks[i])
		}
		out = append(out, b.String())
	}
	return out, nil
}

// numeric decodes shc numeric mode: each pair of digits is a character,
// its code minus 45.
func numeric(d string) (string, error) {
	if len(d)%2 != 0 {
		return "", errors.New("the QR text's numeric part has an odd number of digits")
	}
	b := make([]byte, len(d)/2)
	for i := range b {
		hi, lo := d[2*i]-'0', d[2*i+1]-'0'
		if hi > 9 || lo > 9 {
			return "", fmt.Errorf("the QR text has %q where digits belong", d[2*i:2*i+2])
		}
		v := int(hi)*10 + int(lo)
		if v > 'z'-45 {
			return "", fmt.Errorf("the QR text's pair %02d is past the base64url alphabet", v)
		}
		b[i] = byte(v + 45)
	}
	return string(b), nil
}

// Issuers finds issuers' keys: first among Trusted, the keys the user
// gave (key sets of issuers they trust, matched by kid, which health
// cards require to be the key's thumbprint), then, when Fetch is set, in
// the key set the issuer publishes at iss + "/.well-known/jwks.json". It
// also checks cards against the issuers' revocation lists
// (CheckRevocation).
type Issuers struct {
	Trusted []jose.JSONWebKey
	// TrustedLists are the revocation lists of trusted keys that declare
	// them (LoadRevocation), by kid.
	TrustedLists map[string]KeyLists
	Fetch        *jwks.Cache

	mu    sync.Mutex
	lists map[string]fetchedList // by URL
}

// Key returns the keys with kid for issuer.
func (is *Issuers) Key(ctx context.Context, issuer, kid string) ([]jose.JSONWebKey, error) {
	var out []jose.JSONWebKey
	for _, k := range is.Trusted {
		if k.KeyID == kid {
			out = append(out, k)
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	if is.Fetch == nil {
		return nil, fmt.Errorf("%w: no trusted key has kid %q (give the issuer's key set with --shc-keys, or let phr fetch it with --shc-fetch-keys)", ErrNoKey, kid)
	}
	if issuer == "" {
		return nil, fmt.Errorf("%w: the card names no issuer to fetch keys from", ErrNoKey)
	}
	keys, err := is.Fetch.Key(ctx, strings.TrimSuffix(issuer, "/")+"/.well-known/jwks.json", kid)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoKey, err)
	}
	return keys, nil
}

// LoadKeys reads key sets (JWKS files) for Issuers.Trusted.
func LoadKeys(paths ...string) ([]jose.JSONWebKey, error) {
	var out []jose.JSONWebKey
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("health card keys: %w", err)
		}
		set, err := jwks.ParseSet(b)
		if err != nil {
			return nil, fmt.Errorf("health card keys %s: %w", p, err)
		}
		out = append(out, set.Keys...)
	}
	return out, nil
}
