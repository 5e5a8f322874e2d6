package records

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sync"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/index"
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
// such a pointer: a write of theirs whose attachment points at a Binary of
// this server they may not see (or that does not exist yet) is refused
// (checkAttachments), and a Binary they write always has a securityContext
// naming their record (ConfineBinary, checkBinary), so it is theirs by the
// first rule. They may change or delete only Binaries whose securityContext
// names their record: one without (an admin's, perhaps pointed at by
// several records) stays as it is.

// PatientOwned reports whether resources of type typ may belong to one
// patient's record or another's: the compartment types, Binary (by its
// securityContext, see above) and the shared types a patient may own
// (index.Ownable, see owner.go). A patient-confined principal's reads of
// them are checked resource by resource, and it may write them (the other
// shared types, Bundle and Parameters, it may only read).
func PatientOwned(typ string) bool { return !Shared(typ) || typ == "Binary" || index.Ownable(typ) }

// AttachmentTypes are the compartment types with Attachment elements,
// whose attachments may point at a Binary.
var AttachmentTypes = sync.OnceValue(func() []string {
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
	err := s.store.ScanCompartment(ctx, p.Patient(), AttachmentTypes(), func(r *store.Resource) bool {
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
	return s.securityContextOf(ctx, p, v, Pending{})
}

// securityContextOf is securityContextVisible for a parsed Binary; pending
// names resources a writer is storing for p that the store may not hold
// yet.
func (s *Service) securityContextOf(ctx context.Context, p access.Principal, v *fhirjson.Value, pending Pending) (ok, has bool, err error) {
	sc := v.Get("securityContext")
	if sc == nil {
		return false, false, nil
	}
	ref, ok := s.localReference(sc.GetString("reference"))
	if !ok || ref.Type == "Binary" {
		return false, true, nil
	}
	if ref.Type == "Patient" && ref.ID == p.Patient() {
		return true, true, nil
	}
	if pending.accepted(ref.Type, ref.ID) {
		return true, true, nil
	}
	if ref.Type == "Patient" {
		return false, true, nil
	}
	cur, err := s.store.Read(ctx, ref.Type, ref.ID)
	if errors.Is(err, store.ErrNotFound) {
		return pending.later(ref.Type, ref.ID), true, nil
	}
	if err != nil {
		return false, true, nil
	}
	ok, err = s.visibleLive(ctx, p, cur)
	return ok, true, err
}

// Pending tells records' checks what a writer is storing for a
// patient-confined principal in writes not committed yet. The zero value
// is none.
type Pending struct {
	// Accepted names resources the writer stores having checked them as
	// records does (or that fail the whole write if they fail): an
	// attachment may point at such a Binary, a securityContext name such
	// a resource.
	Accepted func(typ, id string) bool
	// Later names resources the writer will store later in the same
	// write, not checked yet (an importer's deferred items). A Binary's
	// securityContext may name one while the store holds nothing under
	// its id: should it then fail its checks, the Binary names what does
	// not exist, and is seen by no patient. An attachment may not point
	// at one (that would make another's Binary, or one stored later
	// under that id, the patient's).
	Later func(typ, id string) bool
}

func (pe Pending) accepted(typ, id string) bool { return pe.Accepted != nil && pe.Accepted(typ, id) }
func (pe Pending) later(typ, id string) bool    { return pe.Later != nil && pe.Later(typ, id) }

// confineBinary gives a Binary that patient-confined p writes without a
// securityContext the one that makes it theirs: that of cur, the version
// it replaces (nil for none), when cur has one, else their Patient. Over a
// current version without one (a Binary that is not theirs to change, see
// above) it adds nothing, so that the same content sent again is found
// unchanged rather than refused.
func confineBinary(p access.Principal, res *fhirjson.Value, cur *store.Resource) {
	if res.Get("securityContext") != nil {
		return
	}
	sc := fhirjson.NewObject(fhirjson.Field{Name: "reference", Value: fhirjson.NewString("Patient/" + p.Patient())})
	if cur != nil && !cur.Deleted && cur.JSON != nil {
		old, err := fhirjson.Parse(cur.JSON)
		if err != nil {
			return
		}
		if sc = old.Get("securityContext"); sc == nil {
			return
		}
	}
	res.SetAfter("securityContext", sc, "contentType", "meta", "id", "resourceType")
}

// checkBinary checks a Binary that patient-confined p writes (prep) over
// old (nil for none): its securityContext must name their record, and
// old's too (binaryOwned).
func (s *Service) checkBinary(ctx context.Context, p access.Principal, prep *prepared, old *store.Resource, pending Pending) error {
	ok, has, err := s.securityContextOf(ctx, p, prep.tree, pending)
	switch {
	case err != nil:
		return err
	case !has:
		return fhir.Forbidden("Binary/%s has no securityContext: a patient-scoped token writes only Binaries whose securityContext names their own record", prep.id)
	case !ok:
		return fhir.Forbidden("Binary/%s: its securityContext names what is not part of this patient's record", prep.id)
	}
	if old == nil {
		return nil
	}
	if ok, err := s.binaryOwned(ctx, p, old); err != nil {
		return err
	} else if !ok {
		return fhir.Forbidden("Binary/%s is not this patient's to change: its securityContext does not name their record", prep.id)
	}
	return nil
}

// binaryOwned reports whether patient-confined p may write over or delete
// the Binary whose current version cur is: when the live version (the one
// a deletion ended) has a securityContext naming their record.
func (s *Service) binaryOwned(ctx context.Context, p access.Principal, cur *store.Resource) (bool, error) {
	live, err := s.liveVersion(ctx, cur)
	if err != nil {
		return false, err
	}
	if live == nil {
		return true, nil
	}
	if live.Deleted || live.JSON == nil {
		return false, nil
	}
	ok, has, err := s.securityContextVisible(ctx, p, live)
	return ok && has, err
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

// PatientSecurityContext decides by a Binary's securityContext whether a
// principal confined to patient may see it (ok), and whether it has one
// (has), for work done on a patient's behalf without their token: a
// patient's Bulk Data export, a background job. A Binary without one is
// theirs only through their attachments, which the caller judges.
func (s *Service) PatientSecurityContext(ctx context.Context, patient string, res *store.Resource) (ok, has bool, err error) {
	if res.JSON == nil {
		return false, false, nil
	}
	return s.securityContextVisible(ctx, patientOnly(patient), res)
}

// BinariesInContext calls fn with the id of each current Binary whose
// securityContext names a patient that want accepts: their Patient, or a
// resource of their compartment. Such a Binary is part of the patient's
// record even when no attachment points at it (content a patient or
// their app stored before, or without, the document that describes it),
// so their exports carry it. The securityContexts are read from the
// index (index.SecurityContextParam), not from every Binary.
func (s *Service) BinariesInContext(ctx context.Context, want func(patient string) bool, fn func(id string)) error {
	var werr error
	err := s.store.ScanReferences(ctx, "Binary", index.SecurityContextParam, func(id, ref string) bool {
		pats, err := s.patientsNamed(ctx, ref)
		if err != nil {
			werr = err
			return false
		}
		if slices.ContainsFunc(pats, want) {
			fn(id)
		}
		return true
	})
	if err != nil {
		return err
	}
	return werr
}

// securityContextPatients returns the patients whose record the
// securityContext of a stored Binary version names (patientsNamed); none
// for a Binary without one, or one that does not parse.
func (s *Service) securityContextPatients(ctx context.Context, res *store.Resource) ([]string, error) {
	if res.Deleted || res.JSON == nil || !bytes.Contains(res.JSON, []byte(`"securityContext"`)) {
		return nil, nil
	}
	v, err := fhirjson.Parse(res.JSON)
	if err != nil {
		return nil, nil
	}
	return s.patientsNamed(ctx, v.Get("securityContext").GetString("reference"))
}

// patientsNamed returns the patients whose record a Binary's
// securityContext reference names: the Patient it names, or the patients
// of the resource it names in their compartment; none for what is not a
// resource of this server, or another Binary.
func (s *Service) patientsNamed(ctx context.Context, reference string) ([]string, error) {
	ref, ok := s.localReference(reference)
	switch {
	case !ok || ref.Type == "Binary":
		return nil, nil
	case ref.Type == "Patient":
		return []string{ref.ID}, nil
	}
	return s.store.Compartments(ctx, ref.Type, ref.ID)
}

// securityContextsIndexed is the setting that marks a store whose Binaries
// all have their index.SecurityContextParam rows (IndexSecurityContexts).
const securityContextsIndexed = "index-backfill:Binary." + index.SecurityContextParam

// IndexSecurityContexts gives the Binaries stored before the index had
// index.SecurityContextParam (which BinariesInContext reads) their rows,
// once per store: the server calls it when it starts. Binaries without a
// securityContext have none to add. It reads the Binaries in pages, and
// rewrites the index rows of each page's in one transaction, with the
// version read again there; one written since has its rows already.
func (s *Service) IndexSecurityContexts(ctx context.Context) error {
	if _, err := s.store.GetKV(ctx, securityContextsIndexed); err == nil {
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	var ids []string
	flush := func() error {
		if len(ids) == 0 {
			return nil
		}
		err := s.store.Write(ctx, func(tx store.Tx) error {
			rx, ok := tx.(store.Reindexer)
			if !ok {
				return fmt.Errorf("the store cannot rewrite index rows")
			}
			for _, id := range ids {
				cur, err := tx.Current(ctx, "Binary", id)
				if errors.Is(err, store.ErrNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				if cur.Deleted || cur.JSON == nil {
					continue
				}
				v, err := fhirjson.Parse(cur.JSON)
				if err != nil {
					continue // what does not parse has nothing to index
				}
				e, err := s.indexer.Extract("Binary", v)
				if err != nil {
					// What was stored is kept as it is: the server
					// starts, and this Binary is found as before the
					// index had the parameter (by its attachments).
					slog.WarnContext(ctx, "index the securityContext of a stored Binary", "id", id, "err", err)
					continue
				}
				if err := rx.Reindex(ctx, cur, e, Patients("Binary", id, e)); err != nil {
					return err
				}
			}
			return nil
		})
		ids = ids[:0]
		if err != nil {
			return fmt.Errorf("index the securityContext of stored Binaries: %w", err)
		}
		return nil
	}
	var werr error
	err := s.store.ScanType(ctx, "Binary", func(res *store.Resource) bool {
		if res.JSON == nil || !bytes.Contains(res.JSON, []byte(`"securityContext"`)) {
			return true
		}
		if ids = append(ids, res.ID); len(ids) == 500 {
			werr = flush()
		}
		return werr == nil
	})
	if err == nil {
		err = werr
	}
	if err == nil {
		err = flush()
	}
	if err != nil {
		return err
	}
	return s.store.PutKV(ctx, securityContextsIndexed, []byte("1"))
}

// patientOnly is a principal confined to one patient, for visibility
// checks made on a patient's behalf outside their request.
type patientOnly string

func (patientOnly) Allows(access.Interaction, string) bool { return true }
func (p patientOnly) Patient() string                      { return string(p) }
func (patientOnly) Filters(string) []url.Values            { return nil }
func (p patientOnly) Subject() string                      { return "Patient/" + string(p) }

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
// p's), unless pending has accepted it. Without this, a patient could make
// another's Binary theirs by pointing a DocumentReference of their own at
// it.
func (s *Service) checkAttachments(ctx context.Context, p access.Principal, typ, id string, raw []byte, pending Pending) error {
	if p.Patient() == "" {
		return nil
	}
	for _, bid := range s.localBinaries(raw) {
		if pending.accepted("Binary", bid) {
			continue
		}
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
