package importer

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/shc"
)

// healthCards imports SMART Health Cards (package shc): a .smart-health-card
// file, a card's JWS or the text of its QR codes, as Find found them in
// data. Each card's FHIR Bundle is imported as a collection Bundle of the
// run's source, after its signature is checked with the issuer's key when
// Importer.CardKeys finds one, and against the issuer's revocation list
// for that key when it has one. A card whose signature does not verify,
// that its issuer revoked, or that cannot be read, is rejected whole and
// kept as it is in the quarantine; one that could not be checked is
// imported with a warning.
func (r *Run) healthCards(cards []string, ferr error, data []byte) error {
	name := r.fileName
	if ferr != nil {
		it := &item{line: 1, raw: data}
		it.reject(issue("error", "structure", "", "a SMART Health Card that cannot be read: %v", ferr))
		return r.process(&chunk{items: []*item{it}})
	}
	for i, jws := range cards {
		where := name + " line 1"
		if len(cards) > 1 {
			where = fmt.Sprintf("%s, card %d of %d", where, i+1, len(cards))
		}
		reject := func(format string, args ...any) error {
			it := &item{line: 1, raw: []byte(jws)}
			it.reject(issue("error", "invalid", "", format, args...))
			if len(cards) > 1 {
				it.issues[0].Diagnostics = fmt.Sprintf("card %d of %d: %s", i+1, len(cards), it.issues[0].Diagnostics)
			}
			return r.process(&chunk{items: []*item{it}})
		}
		card, err := shc.Parse(jws)
		if err != nil {
			if err := reject("not a SMART Health Card: %v", err); err != nil {
				return err
			}
			continue
		}
		b, err := fhirjson.Parse(card.Bundle)
		if err != nil || b.GetString("resourceType") != "Bundle" {
			if err := reject("the SMART Health Card of %s holds no FHIR Bundle", card.Issuer); err != nil {
				return err
			}
			continue
		}
		issued := "with no issue date"
		if !card.NotBefore.IsZero() {
			issued = "issued " + card.NotBefore.Format("2006-01-02")
		}
		about := fmt.Sprintf("a SMART Health Card of %s, %s", orUnnamed(card.Issuer), issued)
		checked, err := r.checkCard(card)
		switch {
		case errors.Is(err, shc.ErrNotChecked):
			r.report(fhir.Issue{Severity: "information", Code: "informational", Diagnostics: fmt.Sprintf("%s: %s: its signature is valid (key %s)", where, about, checked)})
			r.report(fhir.Issue{Severity: "warning", Code: "security", Diagnostics: fmt.Sprintf("%s: %s: whether its issuer revoked it was not checked: %v", where, about, err)})
		case errors.Is(err, shc.ErrSignature) || (err != nil && !errors.Is(err, shc.ErrNoKey)):
			if err := reject("%s: %v; nothing of it was imported", about, err); err != nil {
				return err
			}
			continue
		case err != nil:
			r.report(fhir.Issue{Severity: "warning", Code: "security", Diagnostics: fmt.Sprintf("%s: %s: its signature was not checked: %v", where, about, err)})
		default:
			r.report(fhir.Issue{Severity: "information", Code: "informational", Diagnostics: fmt.Sprintf("%s: %s: its signature is valid (key %s)", where, about, checked)})
		}
		if card.FHIRVersion != "" && card.FHIRVersion != "4.0.1" {
			r.report(fhir.Issue{Severity: "warning", Code: "not-supported", Diagnostics: fmt.Sprintf("%s: the card says FHIR %s; it is read as R4 (4.0.1)", where, card.FHIRVersion)})
		}
		if err := r.bundleTree(b, nil, 1); err != nil {
			return err
		}
	}
	return nil
}

// revocations checks cards against their issuers' revocation lists
// (shc.Issuers does).
type revocations interface {
	CheckRevocation(ctx context.Context, card *shc.Card) error
}

// checkCard verifies a card's signature with the keys Importer.CardKeys
// finds, and returns the kid of the key that verified it; then, when
// CardKeys can, whether the issuer revoked the card (shc.ErrRevoked), or
// that this could not be checked (shc.ErrNotChecked).
func (r *Run) checkCard(card *shc.Card) (string, error) {
	if r.imp.CardKeys == nil {
		return "", fmt.Errorf("%w: no issuer keys are configured (--shc-keys, --shc-fetch-keys)", shc.ErrNoKey)
	}
	keys, err := r.imp.CardKeys.Key(r.ctx, card.Issuer, card.KeyID)
	if err != nil {
		return "", err
	}
	var first error
	for _, k := range keys {
		err := card.Verify(k)
		if err == nil {
			if rv, ok := r.imp.CardKeys.(revocations); ok {
				return card.KeyID, rv.CheckRevocation(r.ctx, card)
			}
			return card.KeyID, nil
		}
		if first == nil {
			first = err
		}
	}
	return "", first
}

func orUnnamed(iss string) string {
	if strings.TrimSpace(iss) == "" {
		return "an unnamed issuer"
	}
	return iss
}

// payloadBundle returns the FHIR Bundle of a SMART Health Card's payload
// (the JSON a card's JWS signs: iss, nbf, vc.credentialSubject.fhirBundle),
// or nil when v is not one.
func payloadBundle(v *fhirjson.Value) *fhirjson.Value {
	if v.Kind != fhirjson.Object || v.Get("resourceType") != nil {
		return nil
	}
	b := v.Get("vc").Get("credentialSubject").Get("fhirBundle")
	if b.GetString("resourceType") != "Bundle" {
		return nil
	}
	return b
}

// cardPayload imports the Bundle of a card's payload read without its
// signature (what a decoder of cards shows, or the examples of the
// specification): nothing vouches for it, no more than for any Bundle
// file, so it is imported as such, with a warning that says it was not
// verified and how to have it verified.
func (r *Run) cardPayload(payload, b *fhirjson.Value) error {
	where := r.fileName + " line 1"
	about := "a SMART Health Card of " + orUnnamed(payload.GetString("iss"))
	r.report(fhir.Issue{Severity: "warning", Code: "security", Diagnostics: fmt.Sprintf("%s: the payload of %s without its signature: its Bundle is imported, but nothing shows that the issuer issued it (import the .smart-health-card file or its QR code to have the signature checked)", where, about)})
	if fv := payload.Get("vc").Get("credentialSubject").GetString("fhirVersion"); fv != "" && fv != "4.0.1" {
		r.report(fhir.Issue{Severity: "warning", Code: "not-supported", Diagnostics: fmt.Sprintf("%s: the card says FHIR %s; it is read as R4 (4.0.1)", where, fv)})
	}
	return r.bundleTree(b, nil, 1)
}
