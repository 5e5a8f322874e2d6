package importer

import (
	"context"

	"github.com/phr-project/phr/internal/index"
)

// A patient's own shared resources (records: owner.go) are theirs alone,
// yet two patients of one store who take their records from the same
// hospital bring the same Practitioner under the same source id, in the
// same words. Were the source's identity map and digests one for both, the
// second patient's Practitioner would be an exact duplicate of the first's
// (skipped), or map to the first one's copy, and their Encounters would
// point at what they cannot read; an admin's import of the hospital would
// point its records at the first patient's copy too. The same holds for a
// Binary (a leaflet the hospital gives every patient), which is a
// patient's by its securityContext. So what a patient-scoped run records
// of the shared types a patient may own, and of Binaries, is recorded
// under a source key of its own, the source and the patient
// (identSource); everything else under the source, as before.

// patientKeySep separates the source from the patient in identSource; a
// control character no source label has (PostgreSQL text takes it, unlike
// NUL).
const patientKeySep = "\x1fpatient/"

// confined reports whether the run is a patient-scoped token's.
func (r *Run) confined() bool { return r.p != nil && r.p.Patient() != "" }

// patientSource is the source key under which a patient-scoped run records
// what its patient owns (see above); "" for other runs.
func (r *Run) patientSource() string {
	if !r.confined() {
		return ""
	}
	return r.source + patientKeySep + r.p.Patient()
}

// identSource is the source key of the identity map and digests for items
// of type typ in this run (see above).
func (r *Run) identSource(typ string) string {
	if k := r.patientSource(); k != "" && (typ == "Binary" || index.Ownable(typ)) {
		return k
	}
	return r.source
}

// lookupIdentities reads the identity map entries of the run's source for
// the source ids of each type in byType (see lookupIdentity).
func (r *Run) lookupIdentities(ctx context.Context, byType map[string][]string) (map[string][4]string, error) {
	known := map[string][4]string{}
	for typ, sids := range byType {
		if err := r.imp.lookupIdentity(ctx, r.identSource(typ), typ, sids, known); err != nil {
			return nil, err
		}
	}
	return known, nil
}

// seenHashes marks in out the digests of items that the run's source sent
// before, each under its type's source key.
func (r *Run) seenHashes(ctx context.Context, items []*item, out map[string]bool) error {
	byKey := map[string][]string{}
	for _, it := range items {
		if it.hash != "" && it.act != actReject && !it.del {
			k := r.identSource(it.typ)
			byKey[k] = append(byKey[k], it.hash)
		}
	}
	for k, hashes := range byKey {
		if err := r.imp.seenHashes(ctx, k, hashes, out); err != nil {
			return err
		}
	}
	return nil
}

// forksShared reports whether an item that the identity map took for the
// resource stored under its own source id is checked again by
// referenceData: a patient-scoped run's item of a type the patient may
// own.
func (r *Run) forksShared(it *item) bool {
	return r.confined() && index.Ownable(it.typ) && it.localID == it.sid
}

// referenceData returns those of items (forksShared) that the identity
// map took for the store's reference data (no patient owns it), with
// their local ids cleared, for resolveTaken to decide again: one that says
// the same is still that resource, and one that says something else (the
// hospital's newer version of a Practitioner that an admin imported
// before the patient did) becomes the patient's own copy under a new id,
// where before it was rejected, since a patient may not change reference
// data.
func (r *Run) referenceData(ctx context.Context, items []*item) ([]*item, error) {
	var out []*item
	for _, it := range items {
		cur, err := r.readVisible(ctx, it.typ, it.localID)
		if err != nil {
			return nil, err
		}
		if cur == nil || cur.Deleted {
			continue
		}
		unowned, err := r.imp.rec.Unowned(cur)
		if err != nil {
			return nil, err
		}
		if unowned {
			it.localID = ""
			out = append(out, it)
		}
	}
	return out, nil
}
