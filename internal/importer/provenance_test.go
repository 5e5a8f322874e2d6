package importer_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// provenanceBundle is a search result of Provenances, as much as the tests read.
type provenanceBundle struct {
	Total int `json:"total"`
	Entry []struct {
		Resource struct {
			ID        string `json:"id"`
			Extension []struct {
				URL            string `json:"url"`
				ValueReference struct {
					Reference string `json:"reference"`
				} `json:"valueReference"`
			} `json:"extension"`
			Target []struct {
				Reference string `json:"reference"`
			} `json:"target"`
			Entity []struct {
				What struct {
					Identifier struct{ System, Value string } `json:"identifier"`
				} `json:"what"`
			} `json:"entity"`
		} `json:"resource"`
	} `json:"entry"`
}

// TestImportProvenancePerPatient: an import chunk that spans patients
// writes one Provenance per patient (and one for shared resources); a
// patient finds the Provenance of their own versions by target, and never
// sees another patient's.
func TestImportProvenancePerPatient(t *testing.T) {
	const ndjson = `{"resourceType":"Organization","id":"org1","name":"Clinic"}
{"resourceType":"Patient","id":"pa","name":[{"family":"A"}]}
{"resourceType":"Patient","id":"pb","name":[{"family":"B"}]}
{"resourceType":"Observation","id":"oa","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/pa"},"performer":[{"reference":"Organization/org1"}]}
{"resourceType":"Observation","id":"ob","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/pb"}}
`
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			admin := s.AdminToken()
			sum, issues, st := postImport(t, s, admin, "https://ehr.example/fhir", "application/x-ndjson", strings.NewReader(ndjson))
			if st != 200 {
				t.Fatalf("import: %d %v", st, issues)
			}
			want(t, "import", sum, "created", 5)
			search := func(tok, q string) provenanceBundle {
				t.Helper()
				resp := s.Do("GET", q, tok, nil)
				if resp.Status != 200 {
					t.Fatalf("%s: %d %s", q, resp.Status, resp.Body)
				}
				var b provenanceBundle
				if err := json.Unmarshal(resp.Body, &b); err != nil {
					t.Fatal(err)
				}
				return b
			}
			// Three Provenances: patient a's, patient b's, the Organization's.
			all := search(admin, "Provenance?_count=50")
			if all.Total != 3 {
				t.Fatalf("admin sees %d Provenances, want 3", all.Total)
			}
			patientsOf := map[string]string{}
			for _, e := range all.Entry {
				var pats, targets []string
				for _, x := range e.Resource.Extension {
					if x.URL == index.ProvenancePatientExtension {
						pats = append(pats, x.ValueReference.Reference)
					}
				}
				for _, x := range e.Resource.Target {
					targets = append(targets, x.Reference)
				}
				patientsOf[strings.Join(targets, " ")] = strings.Join(pats, " ")
				batch := ""
				for _, en := range e.Resource.Entity {
					if en.What.Identifier.System == "urn:phr:import-batch" {
						batch = en.What.Identifier.Value
					}
				}
				if batch != "1" {
					t.Errorf("Provenance/%s names batch %q, want 1", e.Resource.ID, batch)
				}
			}
			wantGroups := map[string]string{
				"Organization/org1/_history/1":                    "",
				"Patient/pa/_history/1 Observation/oa/_history/1": "Patient/pa",
				"Patient/pb/_history/1 Observation/ob/_history/1": "Patient/pb",
			}
			for targets, pats := range wantGroups {
				got, ok := patientsOf[targets]
				if !ok || got != pats {
					t.Errorf("Provenance of %s: patients %q (found %v), want %q; all: %v", targets, got, ok, pats, patientsOf)
				}
			}

			tokA := s.Token("patient/*.read", "pa")
			tokB := s.Token("patient/*.read", "pb")
			// A finds the Provenance of her Observation and of herself.
			for _, target := range []string{"Observation/oa", "Patient/pa"} {
				b := search(tokA, "Provenance?target="+target)
				if b.Total != 1 || len(b.Entry) != 1 {
					t.Fatalf("patient a: Provenance?target=%s: %d found", target, b.Total)
				}
				id := b.Entry[0].Resource.ID
				if resp := s.Do("GET", "Provenance/"+id, tokA, nil); resp.Status != 200 {
					t.Errorf("patient a reads her Provenance/%s: %d", id, resp.Status)
				}
				if resp := s.Do("GET", "Provenance/"+id, tokB, nil); resp.Status != 404 && resp.Status != 403 {
					t.Errorf("patient b reads a's Provenance/%s: %d", id, resp.Status)
				}
			}
			b := search(tokA, "Observation?_id=oa&_revinclude=Provenance:target")
			if len(b.Entry) != 2 {
				t.Errorf("patient a: _revinclude=Provenance:target gives %d entries, want 2", len(b.Entry))
			}
			// A never sees B's Provenance, nor the system-level one.
			if b := search(tokA, "Provenance?target=Observation/ob"); b.Total != 0 {
				t.Errorf("patient a sees %d Provenances of b's Observation", b.Total)
			}
			if b := search(tokA, "Provenance?_count=50"); b.Total != 1 {
				t.Errorf("patient a sees %d Provenances, want 1 (her own)", b.Total)
			}
			if b := search(tokB, "Provenance?patient=pa"); b.Total != 0 {
				t.Errorf("patient b: Provenance?patient=pa gives %d", b.Total)
			}

			// A later import that does not touch the Patient resource:
			// its Provenance targets only the Observation and still
			// belongs to a's record.
			later := `{"resourceType":"Observation","id":"oa2","status":"final","code":{"text":"height"},"subject":{"reference":"Patient/pa"}}` + "\n"
			sum, issues, _ = postImport(t, s, admin, "https://ehr.example/fhir", "application/x-ndjson", strings.NewReader(later))
			want(t, "later import", sum, "created", 1)
			b = search(tokA, "Provenance?target=Observation/oa2")
			if b.Total != 1 || len(b.Entry[0].Resource.Target) != 1 {
				t.Fatalf("patient a: Provenance?target=Observation/oa2: %+v", b)
			}
			if b := search(tokA, "Provenance?patient=pa&_count=50"); b.Total != 2 {
				t.Errorf("patient a: Provenance?patient=pa gives %d, want 2", b.Total)
			}
			if b := search(tokB, "Provenance?target=Observation/oa2"); b.Total != 0 {
				t.Errorf("patient b sees %d Provenances of a's Observation", b.Total)
			}
			if resp := s.Do("GET", "Provenance/"+b.Entry[0].Resource.ID, tokB, nil); resp.Status != 404 && resp.Status != 403 {
				t.Errorf("patient b reads a's later Provenance: %d", resp.Status)
			}
		})
	}
}
