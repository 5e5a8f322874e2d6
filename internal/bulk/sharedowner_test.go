package bulk_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/store/storetest"
)

// TestPatientExportOwnedShared: a shared resource a patient owns (records:
// owner.go) is part of their record. Their Patient-level export brings it
// even when nothing of the record points at it, and another patient's
// export does not, even when a resource of theirs points at it; reference
// data nobody owns comes when it is referenced. A deletion since is
// reported to its owner's export only.
func TestPatientExportOwnedShared(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			e := start(t, d, nil)
			owned := func(patient, code string) map[string]any {
				return map[string]any{
					"extension": []any{map[string]any{"url": index.OwnerExtension, "valueReference": map[string]any{"reference": "Patient/" + patient}}},
					"code":      map[string]any{"text": code},
				}
			}
			request := func(id, patient, med string) {
				e.put("MedicationRequest", id, map[string]any{"status": "active", "intent": "order", "subject": map[string]any{"reference": "Patient/" + patient},
					"medicationReference": map[string]any{"reference": "Medication/" + med}})
			}
			e.put("Patient", "alice", map[string]any{"gender": "female"})
			e.put("Patient", "bob", map[string]any{"gender": "male"})
			e.put("Medication", "a-med", owned("alice", "a"))
			e.put("Medication", "a-spare", owned("alice", "spare"))
			e.put("Medication", "b-med", owned("bob", "b"))
			e.put("Medication", "common", map[string]any{"code": map[string]any{"text": "common"}})
			e.put("Medication", "unused", map[string]any{"code": map[string]any{"text": "unused"}})
			request("r1", "alice", "a-med")
			request("r2", "alice", "b-med")
			request("r3", "alice", "common")
			request("r4", "bob", "b-med")
			meds := func(got []string) []string {
				var out []string
				for _, id := range got {
					if strings.HasPrefix(id, "Medication/") {
						out = append(out, id)
					}
				}
				return out
			}
			alice, bob := e.s.Token("patient/*.read", "alice"), e.s.Token("patient/*.read", "bob")
			for _, c := range []struct {
				who, tok, path string
				want           []string
			}{
				{"alice", alice, "Patient/$export", []string{"Medication/a-med", "Medication/a-spare", "Medication/common"}},
				{"bob", bob, "Patient/$export", []string{"Medication/b-med"}},
				{"the admin", e.admin, "Patient/$export", []string{"Medication/a-med", "Medication/a-spare", "Medication/b-med", "Medication/common"}},
				{"alice", alice, "$export", []string{"Medication/a-med", "Medication/a-spare", "Medication/common"}},
			} {
				if got := meds(e.ids(c.tok, e.wait(c.tok, e.kick(c.tok, c.path)))); !slices.Equal(got, c.want) {
					t.Errorf("%s %s: %v, want %v", c.who, c.path, got, c.want)
				}
			}
			time.Sleep(5 * time.Millisecond)
			since := time.Now().UTC()
			time.Sleep(5 * time.Millisecond)
			e.del("Medication", "a-spare")
			e.del("Medication", "b-med")
			e.del("Medication", "unused")
			if got := e.deletedSince(alice, since); slices.Contains(got, "Medication/b-med") || !slices.Contains(got, "Medication/a-spare") {
				t.Errorf("alice's deletions since: %v", got)
			}
			if got := e.deletedSince(bob, since); slices.Contains(got, "Medication/a-spare") || !slices.Contains(got, "Medication/b-med") {
				t.Errorf("bob's deletions since: %v", got)
			}
		})
	}
}
