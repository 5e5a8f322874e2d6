package importer_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/importer"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// TestIdentifierMatchAcrossChunks imports one resource per chunk, so that
// each is prepared while the previous one is being written: a business
// identifier carried by the chunk in flight still matches (the next chunk
// waits for it). An identifier that several committed resources carry
// matches none of them whose other identifiers contradict the incoming
// one's, whether or not the next chunk waits: it is ambiguous only when
// several candidates are left.
func TestIdentifierMatchAcrossChunks(t *testing.T) {
	prac := func(id string, idents ...string) string {
		var parts []string
		for _, s := range idents {
			sys, val, _ := strings.Cut(s, "|")
			parts = append(parts, fmt.Sprintf(`{"system":%q,"value":%q}`, sys, val))
		}
		return fmt.Sprintf(`{"resourceType":"Practitioner","id":%q,"identifier":[%s],"name":[{"family":%q}]}`, id, strings.Join(parts, ","), id)
	}
	lines := []string{
		// q2 carries q1's only identifier: the same practitioner.
		prac("q1", "urn:v|1"),
		prac("q2", "urn:v|1"),
		// p2 shares urn:z|5 with p1 but not its urn:w licence: separate,
		// with a warning. p3, p4, p5 carry urn:z|5 too, and a urn:w licence
		// of their own that each earlier one contradicts: separate, with
		// nothing to report (urn:z|5 names a group).
		prac("p1", "urn:z|5", "urn:w|1"),
		prac("p2", "urn:z|5", "urn:w|2"),
		prac("p3", "urn:z|5", "urn:w|3"),
		prac("p4", "urn:z|5", "urn:w|4"),
		prac("p5", "urn:z|5", "urn:w|5"),
		// p6 has urn:z|5 alone: every one of them is a candidate, ambiguous.
		prac("p6", "urn:z|5"),
		// p7 has p2's licence: p2, the one candidate its licence does not
		// contradict (p2's text, so nothing changes).
		strings.Replace(prac("p7", "urn:z|5", "urn:w|2"), `"family":"p7"`, `"family":"p2"`, 1),
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			app := openApp(t, d)
			imp := importer.New(app.Store, app.Records)
			imp.ChunkSize = 1
			ctx := access.With(context.Background(), access.System{Name: "test"})
			var issues []fhir.Issue
			run, err := imp.Begin(ctx, importer.Options{Source: "https://clinic.example/fhir", Report: func(is fhir.Issue) { issues = append(issues, is) }})
			if err != nil {
				t.Fatal(err)
			}
			if err := run.NDJSON(strings.NewReader(strings.Join(lines, "\n")+"\n"), "p.ndjson"); err != nil {
				t.Fatal(err)
			}
			sum, err := run.Finish("done")
			if err != nil {
				t.Fatal(err)
			}
			var n int
			if err := app.Store.QueryRow(ctx, `SELECT COUNT(*) FROM resource WHERE type = 'Practitioner' AND NOT deleted`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 7 {
				t.Errorf("%d practitioners, want 7 (q1 = q2, p1..p6 apart, p7 = p2); summary %+v", n, sum)
			}
			if sum.Created != 7 || sum.Updated != 1 || sum.Unchanged != 1 {
				t.Errorf("summary %+v, want 7 created, 1 updated (q2, another name) and 1 unchanged (p7)", sum)
			}
			var ambiguous, differ []string
			for _, is := range issues {
				switch {
				case strings.Contains(is.Diagnostics, "match several existing"):
					ambiguous = append(ambiguous, is.Diagnostics)
				case strings.Contains(is.Diagnostics, "identifiers differ"):
					differ = append(differ, is.Diagnostics)
				}
			}
			if len(ambiguous) != 1 || !strings.Contains(ambiguous[0], "line 8:") {
				t.Errorf("ambiguous matches reported: %q, want one, of p6 (line 8)", ambiguous)
			}
			if len(differ) != 1 || !strings.Contains(differ[0], "line 4:") {
				t.Errorf("contradicting identifiers reported: %q, want one, of p2 (line 4)", differ)
			}
			if t.Failed() {
				for _, is := range issues {
					t.Log(is.Severity, is.Diagnostics)
				}
			}
			var local string
			if err := app.Store.QueryRow(ctx, `SELECT local_id FROM import_identity WHERE type = 'Practitioner' AND source_id = 'p7'`).Scan(&local); err != nil || local != "p2" {
				t.Errorf("p7 is stored as %q (%v), want p2", local, err)
			}
		})
	}
}

// TestTwoItemsOneResource imports chunks in which two items resolve to one
// local resource: one through the source's identity map and one by
// business identifier, or both by one identifier. Each is merged against
// the version the one before it wrote, as if they had come in separate
// chunks; the chunk was written in one transaction before, with two
// versions numbered after the same current one, and the import failed.
func TestTwoItemsOneResource(t *testing.T) {
	pat := func(id, gender string) string {
		idp := ""
		if id != "" {
			idp = fmt.Sprintf(`"id":%q,`, id)
		}
		return fmt.Sprintf(`{"resourceType":"Patient",%s"identifier":[{"system":"urn:mrn","value":"2"}],"gender":%q}`, idp, gender)
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			app := openApp(t, d)
			imp := importer.New(app.Store, app.Records)
			ctx := access.With(context.Background(), access.System{Name: "test"})
			run := func(source, name, body string) importer.Summary {
				t.Helper()
				r, err := imp.Begin(ctx, importer.Options{Source: source})
				if err != nil {
					t.Fatal(err)
				}
				if strings.HasPrefix(body, `{"resourceType":"Bundle"`) {
					err = r.Bundle(strings.NewReader(body), name)
				} else {
					err = r.NDJSON(strings.NewReader(body), name)
				}
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				sum, err := r.Finish("done")
				if err != nil {
					t.Fatal(err)
				}
				return sum
			}
			count := func(q string) int {
				t.Helper()
				var n int
				if err := app.Store.QueryRow(ctx, q).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			const a, b = "https://a.example/fhir", "https://b.example/fhir"
			run(a, "1.ndjson", pat("d", "unknown")+"\n")
			// e matches d by identifier, d is d: two versions, in order.
			sum := run(a, "2.ndjson", pat("e", "male")+"\n"+pat("d", "female")+"\n")
			if sum.Updated != 2 || sum.Created != 0 {
				t.Errorf("second import: %+v, want 2 updated", sum)
			}
			if n := count(`SELECT COUNT(*) FROM resource WHERE type = 'Patient'`); n != 1 {
				t.Errorf("%d patients, want 1", n)
			}
			if n := count(`SELECT version FROM resource WHERE type = 'Patient' AND id = 'd'`); n != 3 {
				t.Errorf("Patient/d is at version %d, want 3", n)
			}
			res, err := app.Records.Read(ctx, "Patient", "d")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(res.JSON), `"female"`) {
				t.Errorf("Patient/d is %s, want the last line's (female)", res.JSON)
			}
			// Another source sends two patients without ids that both
			// match d: both are conflicts, nothing is overwritten.
			bundle := `{"resourceType":"Bundle","type":"collection","entry":[{"resource":` + pat("", "male") + `},{"resource":` + pat("", "other") + `}]}`
			sum = run(b, "3.json", bundle)
			if sum.Conflicts != 2 || sum.Created != 0 || sum.Updated != 0 {
				t.Errorf("third import: %+v, want 2 conflicts", sum)
			}
			if n := count(`SELECT COUNT(*) FROM resource_version WHERE type = 'Patient'`); n != 3 {
				t.Errorf("%d patient versions after the conflicts, want 3", n)
			}
			// Again: nothing new.
			if sum := run(a, "2.ndjson", pat("e", "male")+"\n"+pat("d", "female")+"\n"); sum.Updated+sum.Created+sum.Conflicts != 0 {
				t.Errorf("re-import: %+v, want nothing written", sum)
			}
		})
	}
}

// TestPatientScopedIdentifierMatch imports, with a patient-scoped token,
// an Observation whose identifier another patient's Observation carries:
// it is not matched to that one (which the token may not see) but stored
// in the token's own record, and the answer does not name the other.
func TestPatientScopedIdentifierMatch(t *testing.T) {
	obs := func(id, patient, value string) string {
		return fmt.Sprintf(`{"resourceType":"Observation","id":%q,"identifier":[{"system":"urn:lab:accession","value":"A-77"}],"status":"final","code":{"text":"glucose"},"subject":{"reference":"Patient/%s"},"valueString":%q}`+"\n", id, patient, value)
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			admin := s.AdminToken()
			sum, issues, st := postImport(t, s, admin, "lab-b", "application/x-ndjson", strings.NewReader(`{"resourceType":"Patient","id":"pb"}`+"\n"+obs("ob", "pb", "high")))
			if st != 200 || sum["created"] != 2 {
				t.Fatalf("the other patient's import: %d %v %v", st, sum, issues)
			}
			pa := s.Token("patient/*.cruds", "pa")
			sum, issues, st = postImport(t, s, pa, "lab-a", "application/x-ndjson", strings.NewReader(obs("oa", "pa", "normal")))
			if st != 200 || sum["created"] != 1 || sum["rejected"] != 0 || sum["conflicts"] != 0 {
				t.Errorf("patient-scoped import: %d %v %v", st, sum, issues)
			}
			for _, is := range issues {
				if strings.Contains(is, "Observation/ob") || strings.Contains(is, "another patient") {
					t.Errorf("the answer tells of the other patient's Observation: %s", is)
				}
			}
			r := s.Do("GET", "Observation?identifier=urn:lab:accession|A-77", pa, nil)
			if !bytes.Contains(r.Body, []byte(`"normal"`)) || bytes.Contains(r.Body, []byte(`"high"`)) {
				t.Errorf("the patient's search: %.800s", r.Body)
			}
			r = s.Do("GET", "Observation/ob", admin, nil)
			if !bytes.Contains(r.Body, []byte(`"high"`)) || !bytes.Contains(r.Body, []byte(`"versionId":"1"`)) {
				t.Errorf("the other patient's Observation changed: %.800s", r.Body)
			}
		})
	}
}

// TestPatientScopedFirstPatient: a patient-scoped import into a record
// that has no Patient resource yet takes the first Patient for the
// record's, and compares the next with that one: another person's
// Patient, and what points at it, are rejected.
func TestPatientScopedFirstPatient(t *testing.T) {
	lines := `{"resourceType":"Patient","id":"p-a","name":[{"family":"Alpha"}],"birthDate":"2000-01-01"}
{"resourceType":"Observation","id":"o-a","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p-a"}}
{"resourceType":"Patient","id":"p-b","name":[{"family":"Beta"}],"birthDate":"1990-05-05"}
{"resourceType":"Observation","id":"o-b","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p-b"}}
`
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			tok := s.Token("patient/*.cruds", "newbie")
			sum, issues, st := postImport(t, s, tok, "clinic", "application/x-ndjson", strings.NewReader(lines))
			if st != 200 {
				t.Fatalf("import: %d %v", st, issues)
			}
			want(t, "first patient", sum, "created", 2)
			want(t, "first patient", sum, "rejected", 2)
			if j := strings.Join(issues, "\n"); !strings.Contains(j, "line 3: this Patient is not the record's patient (Patient/newbie): born 1990-05-05, not 2000-01-01") {
				t.Errorf("the second Patient's rejection does not say why: %s", j)
			}
			if r := s.Do("GET", "Patient/newbie", tok, nil); !bytes.Contains(r.Body, []byte(`"Alpha"`)) {
				t.Errorf("Patient/newbie: %d %.300s", r.Status, r.Body)
			}
		})
	}
}
