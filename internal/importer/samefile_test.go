package importer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/importer"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// TestSameFileTwoSources: one file imported under two source labels (a
// zip and then its unpacked folder, a file and then the same through the
// portal) is one record. A resource another source stored under the same
// id with the same content, references included, is that resource, not
// another to store under a new id; one that says something else, or whose
// references lead to other resources, still is another (merge rule 1).
// The order of the file does not matter.
func TestSameFileTwoSources(t *testing.T) {
	ndjson := strings.Join([]string{
		`{"resourceType":"Patient","id":"p1","gender":"female"}`,
		`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/p1"}}`,
		`{"resourceType":"Observation","id":"o2","status":"final","code":{"text":"height"},"contained":[{"resourceType":"Device","id":"d"}],"device":{"reference":"#d"}}`,
	}, "\n") + "\n"
	bundle := `{"resourceType":"Bundle","type":"collection","entry":[
		{"fullUrl":"urn:uuid:6a1d1a3e-0000-4000-8000-000000000001","resource":{"resourceType":"Patient","id":"bp","gender":"male"}},
		{"fullUrl":"urn:uuid:6a1d1a3e-0000-4000-8000-000000000002","resource":{"resourceType":"Condition","id":"bc","code":{"text":"flu"},"subject":{"reference":"urn:uuid:6a1d1a3e-0000-4000-8000-000000000001"}}}]}`
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			app := openApp(t, d)
			imp := importer.New(app.Store, app.Records)
			noRename := func(name string, issues []fhir.Issue) {
				t.Helper()
				for _, is := range issues {
					if strings.Contains(is.Diagnostics, "already exists from another source") {
						t.Errorf("%s: %s", name, is.Diagnostics)
					}
				}
			}
			if sum, issues := importReader(t, imp, "a.zip", "ndjson", strings.NewReader(ndjson)); sum.Created != 3 {
				t.Fatalf("first source: %+v %v", sum, issues)
			}
			sum, issues := importReader(t, imp, "a-folder", "ndjson", strings.NewReader(ndjson))
			if sum.Created != 0 || sum.Unchanged != 3 || sum.Conflicts != 0 {
				t.Errorf("the same file from a second source: %+v %v", sum, issues)
			}
			noRename("second source", issues)
			// The second source's identity map holds them now: its
			// re-import finds them by it.
			if sum, issues := importReader(t, imp, "a-folder", "ndjson", strings.NewReader(ndjson)); sum.Unchanged != 3 || sum.Created != 0 {
				t.Errorf("second source again: %+v %v", sum, issues)
			}
			// A third source whose Patient p1 says something else: that
			// is another patient, and its Observation o1 (about that
			// patient) another observation; o2 is the same.
			edited := strings.Replace(ndjson, `"gender":"female"`, `"gender":"male"`, 1)
			sum, issues = importReader(t, imp, "other", "ndjson", strings.NewReader(edited))
			if sum.Created != 2 || sum.Unchanged != 1 || sum.Conflicts != 0 {
				t.Errorf("an edited copy from a third source: %+v %v", sum, issues)
			}
			renamed := 0
			for _, is := range issues {
				if strings.Contains(is.Diagnostics, "already exists from another source") {
					renamed++
				}
			}
			if renamed != 2 {
				t.Errorf("third source: %d renamed, want Patient/p1 and Observation/o1: %v", renamed, issues)
			}
			ctx := access.With(context.Background(), access.System{Name: "test"})
			if res, err := app.Records.Read(ctx, "Observation", "o1"); err != nil || res.Version != 1 || !strings.Contains(string(res.JSON), `"Patient/p1"`) {
				t.Errorf("Observation/o1 changed: %v %+v", err, res)
			}
			// A Bundle whose references are urn:uuid: fullUrls.
			if sum, issues := importReader(t, imp, "lab-1", "bundle", strings.NewReader(bundle)); sum.Created != 2 {
				t.Fatalf("Bundle: %+v %v", sum, issues)
			}
			sum, issues = importReader(t, imp, "lab-2", "bundle", strings.NewReader(bundle))
			if sum.Created != 0 || sum.Unchanged != 2 {
				t.Errorf("the same Bundle from a second source: %+v %v", sum, issues)
			}
			noRename("Bundle from a second source", issues)
			// An item before the one it points at waits for it; two that
			// point at each other are not told apart, and get new ids.
			rev := `{"resourceType":"Observation","id":"o9","status":"final","code":{"text":"w"},"subject":{"reference":"Patient/p9"}}` + "\n" +
				`{"resourceType":"Observation","id":"o8","status":"final","code":{"text":"a"},"hasMember":[{"reference":"Observation/o7"}]}` + "\n" +
				`{"resourceType":"Observation","id":"o7","status":"final","code":{"text":"b"},"hasMember":[{"reference":"Observation/o8"}]}` + "\n" +
				`{"resourceType":"Patient","id":"p9"}` + "\n"
			if sum, issues := importReader(t, imp, "rev-1", "ndjson", strings.NewReader(rev)); sum.Created != 4 {
				t.Fatalf("reversed: %+v %v", sum, issues)
			}
			sum, issues = importReader(t, imp, "rev-2", "ndjson", strings.NewReader(rev))
			if sum.Created != 2 || sum.Unchanged != 2 {
				t.Errorf("reversed, from a second source: %+v %v", sum, issues)
			}
			for _, is := range issues {
				if strings.Contains(is.Diagnostics, "already exists") && !strings.Contains(is.Diagnostics, "Observation/o8") && !strings.Contains(is.Diagnostics, "Observation/o7") {
					t.Errorf("reversed, from a second source: %s", is.Diagnostics)
				}
			}
			// A resource pointing at one that a later chunk brings (a
			// record's export lists the Practitioners after what points
			// at them) is taken for the stored one; when the later one
			// turns out to be another, the first is a conflict.
			fw := `{"resourceType":"Observation","id":"o5","status":"final","code":{"text":"w"},"performer":[{"reference":"Practitioner/dr1"}]}` + "\n" +
				`{"resourceType":"Practitioner","id":"dr1","name":[{"family":"Who"}]}` + "\n"
			one := importer.New(app.Store, app.Records)
			one.ChunkSize = 1
			if sum, issues := importReader(t, one, "fw-1", "ndjson", strings.NewReader(fw)); sum.Created != 2 {
				t.Fatalf("forward: %+v %v", sum, issues)
			}
			if sum, issues := importReader(t, one, "fw-2", "ndjson", strings.NewReader(fw)); sum.Created != 0 || sum.Unchanged != 2 {
				t.Errorf("forward, from a second source: %+v %v", sum, issues)
			}
			sum, issues = importReader(t, one, "fw-3", "ndjson", strings.NewReader(strings.Replace(fw, "Who", "Else", 1)))
			if sum.Created != 1 || sum.Conflicts != 1 {
				t.Errorf("forward to another Practitioner, from a third source: %+v %v", sum, issues)
			}
		})
	}
}

// TestPatientScopedSameAsStored: a patient who uploads, under a label of
// their own, what the record already holds from the hospital finds it
// unchanged; the same upload of another patient's resource is not taken
// for that resource (nor told that it exists).
func TestPatientScopedSameAsStored(t *testing.T) {
	pat := func(id, family string) string {
		return `{"resourceType":"Patient","id":"` + id + `","name":[{"family":"` + family + `"}],"birthDate":"1980-02-03"}` + "\n"
	}
	obs := func(id, patient string) string {
		return `{"resourceType":"Observation","id":"` + id + `","status":"final","code":{"text":"pulse"},"subject":{"reference":"Patient/` + patient + `"}}` + "\n"
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			admin := s.AdminToken()
			sum, issues, st := postImport(t, s, admin, "hospital", "application/x-ndjson", strings.NewReader(pat("pa", "Alpha")+obs("oa", "pa")+pat("pb", "Beta")+obs("ob", "pb")))
			if st != 200 || sum["created"] != 4 {
				t.Fatalf("the hospital's import: %d %v %v", st, sum, issues)
			}
			pa := s.Token("patient/*.cruds", "pa")
			sum, issues, st = postImport(t, s, pa, "my-phone", "application/x-ndjson", strings.NewReader(pat("pa", "Alpha")+obs("oa", "pa")))
			if st != 200 || sum["unchanged"] != 2 || sum["created"] != 0 || sum["conflicts"] != 0 {
				t.Errorf("the patient's own data under another label: %d %v %v", st, sum, issues)
			}
			sum, issues, st = postImport(t, s, pa, "my-phone-2", "application/x-ndjson", strings.NewReader(obs("ob", "pb")))
			if st != 200 || sum["unchanged"] != 0 || sum["created"] != 0 {
				t.Errorf("another patient's Observation: %d %v %v", st, sum, issues)
			}
			if r := s.Do("GET", "Observation/ob", admin, nil); !bytes.Contains(r.Body, []byte(`"versionId":"1"`)) || !bytes.Contains(r.Body, []byte(`"Patient/pb"`)) {
				t.Errorf("the other patient's Observation changed: %.500s", r.Body)
			}
		})
	}
}

// TestPatientScopedOtherRecords: a patient-scoped import never writes
// into another patient's resource, live or deleted, and never takes one
// for its own. An exact copy of another record's version (its id,
// versionId and lastUpdated) is stored under a new id like any upload
// whose id another record uses, not refused as that record's (which would
// confirm the version exists). An id the source once gave another
// patient's resource, since deleted, writes nothing: writing over it would
// put the other patient's versions in this patient's history.
func TestPatientScopedOtherRecords(t *testing.T) {
	obs := func(id, patient, extra string) string {
		return `{"resourceType":"Observation","id":"` + id + `",` + extra + `"status":"final","code":{"text":"pulse"},"subject":{"reference":"Patient/` + patient + `"}}` + "\n"
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			admin := s.AdminToken()
			sum, issues, st := postImport(t, s, admin, "hospital", "application/x-ndjson", strings.NewReader(`{"resourceType":"Patient","id":"pa"}`+"\n"+`{"resourceType":"Patient","id":"pb"}`+"\n"+obs("ob", "pb", "")+obs("gone", "pb", "")))
			if st != 200 || sum["created"] != 4 {
				t.Fatalf("the hospital's import: %d %v %v", st, sum, issues)
			}
			if r := s.Do("DELETE", "Observation/gone", admin, nil); r.Status >= 300 {
				t.Fatalf("delete: %d %s", r.Status, r.Body)
			}
			var stored struct {
				Meta struct{ VersionID, LastUpdated string }
			}
			if err := json.Unmarshal(s.Do("GET", "Observation/ob", admin, nil).Body, &stored); err != nil || stored.Meta.LastUpdated == "" {
				t.Fatalf("read Observation/ob: %v %+v", err, stored)
			}
			pa := s.Token("patient/*.cruds", "pa")
			copyOfOb := obs("ob", "pa", `"meta":{"versionId":"`+stored.Meta.VersionID+`","lastUpdated":"`+stored.Meta.LastUpdated+`"},`)
			sum, issues, st = postImport(t, s, pa, "my-export", "application/x-ndjson", strings.NewReader(copyOfOb))
			if st != 200 || sum["created"] != 1 || sum["rejected"] != 0 {
				t.Errorf("a copy of another record's version: %d %v %v", st, sum, issues)
			}
			for _, is := range issues {
				if strings.Contains(is, "another patient") {
					t.Errorf("the answer tells of another record's version: %s", is)
				}
			}
			sum, issues, st = postImport(t, s, pa, "hospital", "application/x-ndjson", strings.NewReader(obs("gone", "pa", "")))
			if st != 200 || sum["created"]+sum["updated"]+sum["conflicts"] != 0 {
				t.Errorf("the id of another patient's deleted resource: %d %v %v", st, sum, issues)
			}
			r := s.Do("GET", "Observation/gone/_history", admin, nil)
			if !bytes.Contains(r.Body, []byte(`"total":2`)) || bytes.Contains(r.Body, []byte("Patient/pa")) {
				t.Errorf("the other patient's deleted Observation changed: %.800s", r.Body)
			}
			if r := s.Do("GET", "Observation/ob", admin, nil); !bytes.Contains(r.Body, []byte(`"versionId":"1"`)) || !bytes.Contains(r.Body, []byte(`"Patient/pb"`)) {
				t.Errorf("the other patient's Observation changed: %.500s", r.Body)
			}
		})
	}
}

// TestSecondSourceFastForward: a source that once said exactly what the
// current version says (the same resource under its id, or matched by an
// identifier) updates it with its newer versions, as a branch level with
// another fast-forwards. One that said less, or whose version is no longer
// current, still makes a conflict: nothing another source said is
// overwritten unseen.
func TestSecondSourceFastForward(t *testing.T) {
	pat := func(id, upd, extra string) string {
		return `{"resourceType":"Patient","id":"` + id + `","meta":{"lastUpdated":"` + upd + `"},"identifier":[{"system":"urn:mrn","value":"` + id + `"}],"name":[{"family":"Level"}]` + extra + `}` + "\n"
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			app := openApp(t, d)
			imp := importer.New(app.Store, app.Records)
			ctx := access.With(context.Background(), access.System{Name: "test"})
			version := func(id string) int64 {
				t.Helper()
				res, err := app.Records.Read(ctx, "Patient", id)
				if err != nil {
					t.Fatal(err)
				}
				return res.Version
			}
			run := func(source, in string) importer.Summary {
				t.Helper()
				sum, _ := importReader(t, imp, source, "ndjson", strings.NewReader(in))
				return sum
			}
			if sum := run("hospital", pat("f1", "2025-01-01T00:00:00Z", "")+pat("f2", "2025-01-01T00:00:00Z", `,"gender":"male"`)); sum.Created != 2 {
				t.Fatalf("hospital: %+v", sum)
			}
			// The server the hospital's file came from: f1 the same (by
			// id), f2 the same under another id (by identifier), and a
			// third saying less than the hospital (no gender).
			server := pat("f1", "2025-06-01T00:00:00Z", "") + strings.Replace(pat("f2", "2025-06-01T00:00:00Z", `,"gender":"male"`), `"id":"f2"`, `"id":"s2"`, 1)
			if sum := run("server", server); sum.Unchanged != 2 || sum.Created != 0 {
				t.Fatalf("server, first pull: %+v", sum)
			}
			// Its newer versions update both.
			server2 := pat("f1", "2025-07-01T00:00:00Z", `,"birthDate":"1970-01-01"`) + strings.Replace(pat("f2", "2025-07-01T00:00:00Z", `,"gender":"male","birthDate":"1971-01-01"`), `"id":"f2"`, `"id":"s2"`, 1)
			if sum := run("server", server2); sum.Updated != 2 || sum.Conflicts != 0 {
				t.Errorf("server, second pull: %+v", sum)
			}
			if version("f1") != 2 || version("f2") != 2 {
				t.Errorf("versions: f1 %d, f2 %d", version("f1"), version("f2"))
			}
			// The hospital's own newer version now meets the server's: a
			// conflict.
			if sum := run("hospital", pat("f1", "2025-08-01T00:00:00Z", `,"gender":"female"`)); sum.Conflicts != 1 || sum.Updated != 0 {
				t.Errorf("hospital after the server's update: %+v", sum)
			}
			// In one run: the same as the current version, then newer.
			if sum := run("hospital", pat("f3", "2025-01-01T00:00:00Z", "")); sum.Created != 1 {
				t.Fatalf("f3: %+v", sum)
			}
			if sum := run("phone", pat("f3", "2025-01-01T00:00:00Z", "")+pat("f3", "2025-02-01T00:00:00Z", `,"gender":"other"`)); sum.Unchanged != 1 || sum.Updated != 1 || sum.Conflicts != 0 {
				t.Errorf("one run, level then newer: %+v", sum)
			}
			// A source that said less than the current version does not
			// overwrite it later.
			if sum := run("hospital", pat("f4", "2025-01-01T00:00:00Z", `,"gender":"female","birthDate":"1960-01-01"`)); sum.Created != 1 {
				t.Fatalf("f4: %+v", sum)
			}
			less := `{"resourceType":"Patient","id":"f4","meta":{"lastUpdated":"2025-01-01T00:00:00Z"},"identifier":[{"system":"urn:mrn","value":"f4"}],"name":[{"family":"Level"}]}` + "\n"
			if sum := run("card", less); sum.Unchanged != 1 {
				t.Fatalf("card saying less: %+v", sum)
			}
			if sum := run("card", strings.Replace(less, "2025-01-01", "2025-03-01", 1)[:len(less)-2]+`,"gender":"male"}`+"\n"); sum.Conflicts != 1 || sum.Updated != 0 {
				t.Errorf("card's newer version after saying less: %+v", sum)
			}
			if version("f4") != 1 {
				t.Errorf("f4 was overwritten: version %d", version("f4"))
			}
		})
	}
}
