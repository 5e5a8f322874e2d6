package importer_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
	"github.com/phr-project/phr/internal/synthea"
)

// TestReimportOwnExport: a patient exports their record (.phr and an
// encrypted .sphr) and imports it back under a new source name: it is
// recognised as the record's own data - nothing new, nothing rejected,
// no conflicts - also after the record moved on.
func TestReimportOwnExport(t *testing.T) {
	dir := synthea.Require(t)
	files, err := synthea.Files(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			admin := s.AdminToken()
			var pid string
			for _, f := range files {
				b, err := gunzip(f)
				if err != nil {
					t.Fatal(err)
				}
				sum, issues, st := postImport(t, s, admin, "https://ehr.example/fhir", "application/fhir+json", bytes.NewReader(b))
				if st != 200 || sum["rejected"] != 0 {
					t.Fatalf("%s: %d %v %v", f, st, sum, issues[:min(5, len(issues))])
				}
			}
			resp := s.Do("GET", "Patient?_count=1&_elements=id", admin, nil)
			var pb struct {
				Entry []struct{ Resource struct{ ID string } }
			}
			if err := json.Unmarshal(resp.Body, &pb); err != nil || len(pb.Entry) != 1 {
				t.Fatalf("patient: %v %s", err, resp.Body)
			}
			pid = pb.Entry[0].Resource.ID
			tok := s.Token("patient/*.*", pid)
			phr := s.Do("GET", "Patient/"+pid+"/$phr-export?outputFormat=phr", tok, nil)
			sphr := s.Do("GET", "Patient/"+pid+"/$phr-export?outputFormat=sphr", tok, nil, "X-PHR-Passphrase", "a long enough passphrase")
			if phr.Status != 200 || sphr.Status != 200 {
				t.Fatalf("export: %d %.300s / %d %.300s", phr.Status, phr.Body, sphr.Status, sphr.Body)
			}
			check := func(what string, sum summary, issues []string, st int) {
				t.Helper()
				if st != 200 {
					t.Fatalf("%s: %d %v", what, st, issues)
				}
				for _, f := range []string{"created", "updated", "conflicts", "rejected"} {
					if sum[f] != 0 {
						t.Errorf("%s: %s = %v (summary %v): %v", what, f, sum[f], sum, issues[:min(8, len(issues))])
					}
				}
				if sum["unchanged"] < 100 {
					t.Errorf("%s: unchanged %v", what, sum["unchanged"])
				}
			}
			sum, issues, st := postImport(t, s, tok, "my own export", "application/x-ndjson", bytes.NewReader(phr.Body))
			check(".phr under a new source", sum, issues, st)
			sum, issues, st = postImport(t, s, tok, "my phone", "application/zip", bytes.NewReader(sphr.Body), "X-PHR-Passphrase", "a long enough passphrase")
			check(".sphr under another source", sum, issues, st)
			// The record moves on (a new version of the patient); the old
			// export still brings nothing new.
			p := s.Do("GET", "Patient/"+pid, admin, nil)
			upd := bytes.Replace(p.Body, []byte(`"gender":"`), []byte(`"active":true,"gender":"`), 1)
			if r := s.Do("PUT", "Patient/"+pid, admin, upd, "Content-Type", "application/fhir+json"); r.Status != 200 {
				t.Fatalf("update: %d %s", r.Status, r.Body)
			}
			sum, issues, st = postImport(t, s, tok, "an old copy", "application/x-ndjson", bytes.NewReader(phr.Body))
			check("old .phr after an update", sum, issues, st)
			if !strings.Contains(strings.Join(issues, "\n"), "now at version 2") {
				t.Errorf("no note that the record moved on: %v", issues[:min(5, len(issues))])
			}
		})
	}
}
