package records

import (
	"bytes"
	"context"
	"net/http"
	"slices"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/store"
)

// A resource of a shared type (a Medication, a Practitioner, an
// Organization) is reference data that every patient may read. A person
// who brings their own record brings such resources too: the Medication
// their prescriptions name, the clinic that treats them. Were those
// visible to every patient of the store, a family's store would tell each
// member what the others take and where they are treated. So a shared
// resource that a patient-confined principal writes is owned by them: it
// carries index.OwnerExtension naming their Patient, which puts it in
// their compartment (Patients), and other patients neither see it nor find
// it (search, includes, exports). A shared resource without an owner (an
// admin's, a hospital's import) stays visible to all, and read-only to
// patients.

// Confine makes what patient-confined p writes theirs, where the type
// decides it by content: a Binary gets a securityContext (confineBinary),
// a resource of an ownable shared type an owner (confineOwner). cur is the
// version it replaces (nil for none). Other principals' writes of an
// ownable type keep the owner cur has when they name none: an admin who
// corrects a patient's Medication does not publish it to every patient.
func Confine(p access.Principal, typ string, res *fhirjson.Value, cur *store.Resource) {
	confined := p != nil && p.Patient() != ""
	switch {
	case typ == "Binary" && confined:
		confineBinary(p, res, cur)
	case index.Ownable(typ):
		confineOwner(p, res, cur)
	}
}

// confineOwner gives a shared resource written without an owner the one of
// cur, the version it replaces, when cur has one, else, when
// patient-confined p writes it, their Patient. Over a current version
// without one (reference data that is not theirs to change) it adds
// nothing, so that the same content sent again is found unchanged rather
// than refused.
func confineOwner(p access.Principal, res *fhirjson.Value, cur *store.Resource) {
	if ownerExtension(res) != nil {
		return
	}
	var ext *fhirjson.Value
	switch live := cur != nil && !cur.Deleted && cur.JSON != nil; {
	case live && !bytes.Contains(cur.JSON, []byte(index.OwnerExtension)):
		return // reference data, no one's to own
	case live:
		old, err := fhirjson.Parse(cur.JSON)
		if err != nil {
			return
		}
		ext = ownerExtension(old)
	case p != nil && p.Patient() != "":
		ext = fhirjson.NewObject(
			fhirjson.Field{Name: "url", Value: fhirjson.NewString(index.OwnerExtension)},
			fhirjson.Field{Name: "valueReference", Value: fhirjson.NewObject(fhirjson.Field{Name: "reference", Value: fhirjson.NewString("Patient/" + p.Patient())})},
		)
	}
	if ext == nil {
		return
	}
	exts := res.Get("extension")
	if exts == nil || exts.Kind != fhirjson.Array {
		exts = fhirjson.NewArray()
		res.SetAfter("extension", exts, "contained", "text", "language", "implicitRules", "meta", "id", "resourceType")
	}
	exts.Items = append(exts.Items, ext)
}

// keepsOwner refuses a version prep of a shared resource without an owner
// over old, a live version with one (Confine carries the owner where the
// writer knows the version it replaces; a transaction's entries are
// prepared before): a patient's own resource does not become reference
// data that every patient sees by an update that leaves the owner out.
func keepsOwner(prep *prepared, old *store.Resource) error {
	if old == nil || old.Deleted || !index.Ownable(prep.typ) || !bytes.Contains(old.JSON, []byte(index.OwnerExtension)) || ownerExtension(prep.tree) != nil {
		return nil
	}
	return fhir.Errorf(http.StatusUnprocessableEntity, "business-rule", "%s/%s is part of a patient's record (its owner extension %s names them); an update must keep that extension", prep.typ, prep.id, index.OwnerExtension)
}

// ownerExtension returns the first OwnerExtension of res (nil for none).
func ownerExtension(res *fhirjson.Value) *fhirjson.Value {
	exts := res.Get("extension")
	if exts == nil || exts.Kind != fhirjson.Array {
		return nil
	}
	for _, e := range exts.Items {
		if e.GetString("url") == index.OwnerExtension {
			return e
		}
	}
	return nil
}

// owners returns the patients who own a stored version of a shared type
// (none for reference data without an owner, or a deletion).
func (s *Service) owners(res *store.Resource) ([]string, error) {
	if res.Deleted || !bytes.Contains(res.JSON, []byte(index.OwnerExtension)) {
		return nil, nil
	}
	return s.patientsOfStored(res)
}

// Unowned reports whether no patient owns a stored version (always true
// for types a patient cannot own). Matching by identifier for callers that
// are not patient-confined takes only such resources: a hospital's
// records must not point at one patient's private copy of a Practitioner.
func (s *Service) Unowned(res *store.Resource) (bool, error) {
	if !index.Ownable(res.Type) {
		return true, nil
	}
	own, err := s.owners(res)
	return len(own) == 0, err
}

// PatientsOwn reports whether a stored version of a type outside the
// patient compartments is part of a patient's record all the same: a
// shared resource a patient owns, or a Binary whose securityContext names
// a Patient or a resource of a patient's compartment. An import that finds
// such a resource holding an id reports so (another source did not send
// it).
func (s *Service) PatientsOwn(ctx context.Context, res *store.Resource) (bool, error) {
	if res.Type != "Binary" {
		ok, err := s.Unowned(res)
		return !ok, err
	}
	pats, err := s.securityContextPatients(ctx, res)
	return len(pats) > 0, err
}

// sharedVisible reports whether patient-confined p may see a version of a
// shared type: one without an owner, or one they own.
func (s *Service) sharedVisible(p access.Principal, res *store.Resource) (bool, error) {
	own, err := s.owners(res)
	if err != nil {
		return false, err
	}
	return len(own) == 0 || slices.Contains(own, p.Patient()), nil
}

// sharedOwned reports whether patient-confined p may write over or delete
// the shared resource whose current version cur is: when the live version
// (the one a deletion ended) is owned by them.
func (s *Service) sharedOwned(ctx context.Context, p access.Principal, cur *store.Resource) (bool, error) {
	live, err := s.liveVersion(ctx, cur)
	if err != nil {
		return false, err
	}
	if live == nil {
		return true, nil
	}
	own, err := s.owners(live)
	if err != nil {
		return false, err
	}
	return slices.Contains(own, p.Patient()), nil
}

// checkShared checks a shared resource that patient-confined p writes
// (prep) over old (nil for none): of an ownable type, owned by them, and
// over a version they own.
func (s *Service) checkShared(ctx context.Context, p access.Principal, prep *prepared, old *store.Resource, pending Pending) error {
	if !index.Ownable(prep.typ) {
		return fhir.Forbidden("a patient-scoped token cannot write %s resources, which are outside every patient compartment", prep.typ)
	}
	if !slices.Contains(prep.put.Patients, p.Patient()) {
		return fhir.Forbidden("%s/%s would not be this patient's: a patient-scoped token writes %s resources whose owner extension (%s) names Patient/%s", prep.typ, prep.id, prep.typ, index.OwnerExtension, p.Patient())
	}
	if err := s.checkAttachments(ctx, p, prep.typ, prep.id, prep.put.JSON, pending); err != nil {
		return err
	}
	if old == nil {
		return nil
	}
	if ok, err := s.sharedOwned(ctx, p, old); err != nil {
		return err
	} else if !ok {
		return fhir.Forbidden("%s/%s is not this patient's to change: it is reference data of the store, or another patient's", prep.typ, prep.id)
	}
	return nil
}
