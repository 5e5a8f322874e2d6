package records

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/r4"
	"github.com/phr-project/phr/internal/store"
)

// A Binary is in no patient compartment, yet it is the most sensitive
// part of a record: the PDF of a report, a scan, a clinical note. A
// patient-confined principal sees a Binary only when
//   - its securityContext names a resource the principal may see (FHIR's
//     own mechanism; the patient themself, or a resource of their record),
//     or, without a securityContext,
//   - an attachment of a current resource in their compartment points at
//     it (its url is Binary/[id], or [base]/Binary/[id] of this server).
//
// The second rule holds because a patient-confined principal cannot make
// such a pointer: it may not write a Binary (Shared), and a write of
// theirs whose attachment points at a Binary of this server they may not
// see is refused (checkAttachments).

// confinedRead reports whether a patient-confined principal's reads of
// type typ are checked resource by resource: the compartment types, and
// Binary.
func confinedRead(typ string) bool { return !Shared(typ) || typ == "Binary" }

// attachmentTypes are the compartment types with Attachment elements,
// whose attachments may point at a Binary.
var attachmentTypes = sync.OnceValue(func() []string {
	var out []string
	for _, typ := range r4.ResourceTypes() {
		if Shared(typ) {
			continue
		}
		t := r4.LookupType(typ)
		if t == nil {
			continue
		}
		for _, e := range t.Elements {
			if slices.Contains(e.Types, "Attachment") {
				out = append(out, typ)
				break
			}
		}
	}
	return out
})

// binaryVisible decides whether patient-confined p may see a version of a
// Binary (see above).
func (s *Service) binaryVisible(ctx context.Context, p access.Principal, res *store.Resource) (bool, error) {
	if res.Deleted || res.JSON == nil {
		return false, nil
	}
	if ok, has, err := s.securityContextVisible(ctx, p, res); has || err != nil {
		return ok, err
	}
	found := false
	err := s.store.ScanCompartment(ctx, p.Patient(), attachmentTypes(), func(r *store.Resource) bool {
		found = slices.Contains(s.localBinaries(r.JSON), res.ID)
		return !found
	})
	if err != nil {
		return false, fmt.Errorf("find what points at Binary/%s: %w", res.ID, err)
	}
	return found, nil
}

// securityContextVisible decides by a Binary's securityContext (has)
// whether patient-confined p may see it: when it names the patient or
// something p may see. has is false for a Binary without one.
func (s *Service) securityContextVisible(ctx context.Context, p access.Principal, res *store.Resource) (ok, has bool, err error) {
	v, err := fhirjson.Parse(res.JSON)
	if err != nil {
		return false, true, fmt.Errorf("parse stored Binary/%s: %w", res.ID, err)
	}
	sc := v.Get("securityContext")
	if sc == nil {
		return false, false, nil
	}
	ref, ok := s.localReference(sc.GetString("reference"))
	if !ok || ref.Type == "Binary" {
		return false, true, nil
	}
	if ref.Type == "Patient" {
		return ref.ID == p.Patient(), true, nil
	}
	cur, err := s.store.Read(ctx, ref.Type, ref.ID)
	if err != nil {
		return false, true, nil
	}
	ok, err = s.visibleLive(ctx, p, cur)
	return ok, true, err
}

// SecurityContextAllows reports whether the principal of ctx may see the
// Binary res by its securityContext: true without one, or for a principal
// that is not patient-confined. An export of the patient's record, which
// finds Binaries through its attachments, asks it of each.
func (s *Service) SecurityContextAllows(ctx context.Context, res *store.Resource) (bool, error) {
	p, err := principal(ctx)
	if err != nil {
		return false, err
	}
	if p.Patient() == "" || res.JSON == nil {
		return true, nil
	}
	ok, has, err := s.securityContextVisible(ctx, p, res)
	return ok || !has, err
}

// localReference parses a reference to a resource of this server:
// relative, or absolute under its base.
func (s *Service) localReference(ref string) (fhir.Reference, bool) {
	r, ok := fhir.ParseReference(ref)
	if !ok || r.Type == "" || r.ID == "" || r.Base != "" && r.Base != s.baseURL {
		return fhir.Reference{}, false
	}
	return r, true
}

// localBinaries returns the ids of this server's Binaries that the
// attachments of a resource's JSON point at (BinariesOf).
func (s *Service) localBinaries(raw []byte) []string { return BinariesOf(raw, s.baseURL, false) }

// BinariesOf returns the ids of the Binaries of the server with FHIR base
// base that a resource's JSON points at: the url of its attachments
// (Binary/[id] or [base]/Binary/[id]) and, with refs, its references. A
// quick look for "Binary/" spares the parse of the many resources
// without one.
func BinariesOf(raw []byte, base string, refs bool) []string {
	if !bytes.Contains(raw, []byte("Binary/")) {
		return nil
	}
	v, err := fhirjson.Parse(raw)
	if err != nil {
		return nil
	}
	var out []string
	var walk func(v *fhirjson.Value)
	walk = func(v *fhirjson.Value) {
		switch v.Kind {
		case fhirjson.Object:
			for _, f := range v.Fields {
				if (f.Name == "url" || refs && f.Name == "reference") && f.Value.Kind == fhirjson.String {
					if r, ok := fhir.ParseReference(f.Value.Str); ok && r.Type == "Binary" && (r.Base == "" || r.Base == base) {
						out = append(out, r.ID)
					}
				} else {
					walk(f.Value)
				}
			}
		case fhirjson.Array:
			for _, it := range v.Items {
				walk(it)
			}
		}
	}
	walk(v)
	return out
}

// checkAttachments refuses a write of patient-confined p whose
// attachments point at a Binary of this server that p may not see (or
// that does not exist: one stored later under that id would be taken for
// p's). Without this, a patient could make another's Binary theirs by
// pointing a DocumentReference of their own at it.
func (s *Service) checkAttachments(ctx context.Context, p access.Principal, typ, id string, raw []byte) error {
	if p.Patient() == "" {
		return nil
	}
	for _, bid := range s.localBinaries(raw) {
		b, err := s.store.Read(ctx, "Binary", bid)
		ok := false
		if err == nil {
			if ok, err = s.binaryVisible(ctx, p, b); err != nil {
				return err
			}
		}
		if !ok {
			return fhir.Forbidden("%s/%s: an attachment points at Binary/%s, which is not part of this patient's record", typ, id, bid)
		}
	}
	return nil
}
