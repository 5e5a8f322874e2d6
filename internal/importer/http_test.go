package importer_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
	"github.com/phr-project/phr/internal/synthea"
)

// summary is the final Parameters of an import, as a map.
type summary map[string]float64

func parseSummary(t testing.TB, body []byte) (summary, []string) {
	t.Helper()
	var issues []string
	var last []byte
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if bytes.Contains(line, []byte(`"OperationOutcome"`)) && !bytes.HasPrefix(line, []byte(`{"resourceType":"Parameters"`)) {
			var oo struct {
				Issue []struct{ Severity, Code, Diagnostics string }
			}
			json.Unmarshal(line, &oo)
			for _, is := range oo.Issue {
				issues = append(issues, is.Severity+" "+is.Code+" "+is.Diagnostics)
			}
			continue
		}
		last = append([]byte(nil), line...)
	}
	var p struct {
		ResourceType string
		Parameter    []struct {
			Name         string
			ValueInteger *float64
			ValueDecimal *float64
			Resource     *struct {
				Issue []struct{ Severity, Code, Diagnostics string }
			}
		}
	}
	if err := json.Unmarshal(last, &p); err != nil || p.ResourceType != "Parameters" {
		t.Fatalf("no summary in response: %v\n%.2000s", err, body)
	}
	s := summary{}
	for _, x := range p.Parameter {
		switch {
		case x.ValueInteger != nil:
			s[x.Name] = *x.ValueInteger
		case x.ValueDecimal != nil:
			s[x.Name] = *x.ValueDecimal
		case x.Resource != nil:
			for _, is := range x.Resource.Issue {
				issues = append(issues, is.Severity+" "+is.Code+" "+is.Diagnostics)
			}
		}
	}
	return s, issues
}

// ndjsonDir concatenates the NDJSON files of an export directory in the
// order an importer wants them (Patient and shared resources first).
func ndjsonDir(t testing.TB, dir string) []byte {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	rank := func(f string) int {
		switch strings.SplitN(filepath.Base(f), ".", 2)[0] {
		case "Patient":
			return 0
		case "Organization", "Location":
			return 1
		case "Practitioner":
			return 2
		case "PractitionerRole":
			return 3
		case "log":
			return 99
		}
		return 10
	}
	sort.SliceStable(files, func(i, j int) bool { return rank(files[i]) < rank(files[j]) })
	var buf bytes.Buffer
	for _, f := range files {
		if rank(f) == 99 {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
		if len(b) > 0 && b[len(b)-1] != '\n' {
			buf.WriteByte('\n')
		}
	}
	return buf.Bytes()
}

func postImport(t testing.TB, s *servertest.Server, tok, source, ct string, body io.Reader, extra ...string) (summary, []string, int) {
	t.Helper()
	h := append([]string{"Content-Type", ct, "Accept", "application/x-ndjson"}, extra...)
	resp := s.Do("POST", "Bundle/$import?source="+url.QueryEscape(source), tok, body, h...)
	if resp.Status != 200 {
		return nil, []string{string(resp.Body)}, resp.Status
	}
	sum, issues := parseSummary(t, resp.Body)
	return sum, issues, resp.Status
}

func want(t testing.TB, what string, sum summary, field string, n float64) {
	t.Helper()
	if sum[field] != n {
		t.Errorf("%s: %s = %v, want %v (summary %v)", what, field, sum[field], n, sum)
	}
}

func TestHTTPImportBulkAndReimport(t *testing.T) {
	bulk := ndjsonDir(t, findData(t, "sample-bulk-10"))
	blaze := ndjsonDir(t, findData(t, "derived-ndjson-blaze-10"))
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			tok := s.AdminToken()
			sum, issues, st := postImport(t, s, tok, "https://ehr-a.example/fhir", "application/fhir+ndjson", bytes.NewReader(bulk))
			if st != 200 {
				t.Fatalf("status %d: %v", st, issues)
			}
			want(t, "sample-bulk-10", sum, "created", 7160)
			want(t, "sample-bulk-10", sum, "rejected", 0)
			for _, is := range issues {
				if strings.Contains(is, "conditional reference") {
					t.Errorf("unresolved: %s", is)
					break
				}
			}
			// Conditional references were resolved to local ids.
			resp := s.Do("GET", "Encounter/00c7f717-4030-5582-2ed8-888ad2bc878e", tok, nil)
			if resp.Status != 200 || bytes.Contains(resp.Body, []byte("?identifier=")) || !bytes.Contains(resp.Body, []byte(`"source":"https://ehr-a.example/fhir"`)) {
				t.Errorf("encounter: %d %.600s", resp.Status, resp.Body)
			}
			// Provenance is findable by target, and with _revinclude.
			resp = s.Do("GET", "Provenance?target=Encounter/00c7f717-4030-5582-2ed8-888ad2bc878e", tok, nil)
			if resp.Status != 200 || !bytes.Contains(resp.Body, []byte(`"resourceType":"Provenance"`)) || !bytes.Contains(resp.Body, []byte(`urn:phr:import-batch`)) {
				t.Errorf("Provenance?target: %d %.500s", resp.Status, resp.Body)
			}
			resp = s.Do("GET", "Encounter?_id=00c7f717-4030-5582-2ed8-888ad2bc878e&_revinclude=Provenance:target", tok, nil)
			if resp.Status != 200 || !bytes.Contains(resp.Body, []byte(`"resourceType":"Provenance"`)) {
				t.Errorf("_revinclude=Provenance:target: %d %.500s", resp.Status, resp.Body)
			}
			sum, _, _ = postImport(t, s, tok, "https://ehr-a.example/fhir", "application/fhir+ndjson", bytes.NewReader(bulk))
			want(t, "re-import", sum, "created", 0)
			want(t, "re-import", sum, "updated", 0)
			want(t, "re-import", sum, "conflicts", 0)
			want(t, "re-import", sum, "unchanged", 7160)

			sum, issues, _ = postImport(t, s, tok, "blaze", "application/x-ndjson", bytes.NewReader(blaze))
			for _, is := range issues {
				if strings.Contains(is, "conflict") {
					t.Log(is)
				}
			}
			want(t, "blaze", sum, "created", 7764)
			want(t, "blaze", sum, "rejected", 0)
			sum, _, _ = postImport(t, s, tok, "blaze", "application/x-ndjson", bytes.NewReader(blaze))
			want(t, "blaze again", sum, "created", 0)
			want(t, "blaze again", sum, "unchanged", 7764)

			// An edited copy: two resources changed -> two new versions.
			lines := bytes.Split(bytes.TrimSpace(bulk), []byte("\n"))
			var pat, enc int = -1, -1
			for i, l := range lines {
				if pat < 0 && bytes.HasPrefix(l, []byte(`{"resourceType":"Patient"`)) {
					pat = i
				}
				if enc < 0 && bytes.HasPrefix(l, []byte(`{"resourceType":"Encounter"`)) {
					enc = i
				}
			}
			lines[pat] = bytes.Replace(lines[pat], []byte(`"gender":"`), []byte(`"active":true,"gender":"`), 1)
			lines[enc] = bytes.Replace(lines[enc], []byte(`"status":"finished"`), []byte(`"status":"cancelled"`), 1)
			edited := append(bytes.Join(lines, []byte("\n")), '\n')
			sum, _, _ = postImport(t, s, tok, "https://ehr-a.example/fhir", "application/fhir+ndjson", bytes.NewReader(edited))
			want(t, "edited", sum, "updated", 2)
			want(t, "edited", sum, "created", 0)
			want(t, "edited", sum, "conflicts", 0)
			want(t, "edited", sum, "unchanged", 7158)
			batch := int(sum["batch"])
			resp = s.Do("GET", fmt.Sprintf("$import-batches?batch=%d", batch), tok, nil)
			if resp.Status != 200 || bytes.Count(resp.Body, []byte(`"name":"wrote"`))-bytes.Count(resp.Body, []byte(`"valueString":"Provenance/`)) != 2 {
				t.Errorf("batch detail: %d %.1500s", resp.Status, resp.Body)
			}
			// Provenance of the supplement is findable by target.
			var encID string
			var e struct{ ID string }
			json.Unmarshal(lines[enc], &e)
			encID = e.ID
			resp = s.Do("GET", "Encounter/"+encID+"/_history", tok, nil)
			if !bytes.Contains(resp.Body, []byte(`"total":2`)) {
				t.Errorf("history of edited encounter: %.500s", resp.Body)
			}
			resp = s.Do("GET", "Encounter/"+encID+"/$diff", tok, nil)
			if resp.Status != 200 || !bytes.Contains(resp.Body, []byte(`Encounter.status`)) || !bytes.Contains(resp.Body, []byte(`cancelled`)) {
				t.Errorf("diff: %d %.1000s", resp.Status, resp.Body)
			}
			// Revert writes version 1 back as version 3.
			resp = s.Do("POST", "Encounter/"+encID+"/$revert?to=1", tok, nil)
			if resp.Status != 200 || !bytes.Contains(resp.Body, []byte(`"versionId":"3"`)) || !bytes.Contains(resp.Body, []byte(`"status":"finished"`)) {
				t.Errorf("revert: %d %.600s", resp.Status, resp.Body)
			}
			resp = s.Do("GET", "$import-batches", tok, nil)
			if resp.Status != 200 || bytes.Count(resp.Body, []byte(`"name":"batch"`)) != 5 {
				t.Errorf("batches: %d %.800s", resp.Status, resp.Body)
			}
		})
	}
}

func TestHTTPImportSyntheaAndConflicts(t *testing.T) {
	dir := synthea.Require(t)
	files, err := synthea.Files(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			tok := s.AdminToken()
			total := 0.0
			var patientBundle []byte
			for _, f := range files {
				b, err := gunzip(f)
				if err != nil {
					t.Fatal(err)
				}
				sum, issues, st := postImport(t, s, tok, "synthea", "application/fhir+json", bytes.NewReader(b))
				if st != 200 {
					t.Fatalf("%s: %d %v", f, st, issues)
				}
				if sum["rejected"] != 0 {
					t.Errorf("%s: rejected %v: %v", filepath.Base(f), sum["rejected"], issues[:min(5, len(issues))])
				}
				for _, is := range issues {
					if strings.Contains(is, "matches no resource") || strings.Contains(is, "names no entry") {
						t.Errorf("%s: %s", filepath.Base(f), is)
						break
					}
				}
				total += sum["created"]
				if !strings.HasPrefix(filepath.Base(f), "0-") && patientBundle == nil {
					patientBundle = b
				}
				again, _, _ := postImport(t, s, tok, "synthea", "application/fhir+json", bytes.NewReader(b))
				want(t, "synthea again "+filepath.Base(f), again, "created", 0)
				want(t, "synthea again "+filepath.Base(f), again, "updated", 0)
				want(t, "synthea again "+filepath.Base(f), again, "conflicts", 0)
			}
			if total < 1000 {
				t.Errorf("created only %v resources", total)
			}
			// The same patient from a second source, with other ids and a
			// different birth date: matched by identifier -> conflict.
			var bundle struct {
				Entry []struct {
					Resource map[string]any `json:"resource"`
				} `json:"entry"`
			}
			json.Unmarshal(patientBundle, &bundle)
			pat := bundle.Entry[0].Resource
			if pat["resourceType"] != "Patient" {
				t.Fatalf("first entry is %v", pat["resourceType"])
			}
			localID := pat["id"].(string)
			other := map[string]any{}
			for k, v := range pat {
				other[k] = v
			}
			other["id"] = "clinic-b-1"
			other["birthDate"] = "1901-01-01"
			line, _ := json.Marshal(other)
			sum, issues, _ := postImport(t, s, tok, "https://clinic-b.example/fhir", "application/x-ndjson", bytes.NewReader(append(line, '\n')))
			want(t, "second source", sum, "conflicts", 1)
			want(t, "second source", sum, "created", 0)
			if len(issues) == 0 || !strings.Contains(strings.Join(issues, "\n"), "conflict") {
				t.Errorf("no conflict reported: %v", issues)
			}
			// Nothing overwritten.
			resp := s.Do("GET", "Patient/"+localID, tok, nil)
			if bytes.Contains(resp.Body, []byte("1901-01-01")) {
				t.Errorf("conflict overwrote the patient")
			}
			// Re-importing the conflicting file adds no second conflict.
			sum, _, _ = postImport(t, s, tok, "https://clinic-b.example/fhir", "application/x-ndjson", bytes.NewReader(append(line, '\n')))
			want(t, "second source again", sum, "created", 0)
			resp = s.Do("GET", "$conflicts", tok, nil)
			var list struct {
				Parameter []struct {
					Name string
					Part []struct {
						Name         string
						ValueInteger float64
						ValueString  string
					}
				}
			}
			json.Unmarshal(resp.Body, &list)
			if len(list.Parameter) != 1 {
				t.Fatalf("conflicts: %s", resp.Body)
			}
			cid := list.Parameter[0].Part[0].ValueInteger
			resp = s.Do("GET", fmt.Sprintf("$conflicts?id=%v", cid), tok, nil)
			if !bytes.Contains(resp.Body, []byte("1901-01-01")) || !bytes.Contains(resp.Body, []byte(`"name":"current"`)) || !bytes.Contains(resp.Body, []byte("clinic-b")) {
				t.Errorf("conflict detail: %.1500s", resp.Body)
			}
			// A patient-scoped token of another patient sees no conflict.
			other2 := s.Token("patient/*.rs", "someone-else")
			resp = s.Do("GET", fmt.Sprintf("$conflicts?id=%v", cid), other2, nil)
			if resp.Status != 404 {
				t.Errorf("other patient reads conflict: %d", resp.Status)
			}
			resp = s.Do("GET", "$conflicts", other2, nil)
			if bytes.Contains(resp.Body, []byte(`"conflict"`)) {
				t.Errorf("other patient lists conflicts: %s", resp.Body)
			}
			// Take the incoming side.
			resp = s.Do("POST", fmt.Sprintf("$resolve-conflict?id=%v&action=take", cid), tok, nil)
			if resp.Status != 200 || !bytes.Contains(resp.Body, []byte("1901-01-01")) || !bytes.Contains(resp.Body, []byte(`"id":"`+localID+`"`)) || !bytes.Contains(resp.Body, []byte(`"source":"https://clinic-b.example/fhir"`)) {
				t.Fatalf("resolve: %d %.800s", resp.Status, resp.Body)
			}
			// The resolution's Provenance cites both sides.
			resp = s.Do("GET", "Provenance?target=Patient/"+localID, tok, nil)
			if !bytes.Contains(resp.Body, []byte(fmt.Sprintf("resolve conflict %v: take", cid))) || !bytes.Contains(resp.Body, []byte(`"role":"revision"`)) || !bytes.Contains(resp.Body, []byte("clinic-b")) {
				t.Errorf("resolution Provenance: %.1500s", resp.Body)
			}
			resp = s.Do("POST", fmt.Sprintf("$resolve-conflict?id=%v&action=take", cid), tok, nil)
			if resp.Status != 409 {
				t.Errorf("second resolve: %d", resp.Status)
			}
			resp = s.Do("GET", "$conflicts", tok, nil)
			if bytes.Contains(resp.Body, []byte(`"conflict"`)) {
				t.Errorf("still open: %s", resp.Body)
			}
		})
	}
}

func TestHTTPImportIGExamples(t *testing.T) {
	dir := findData(t, "phr-ig-examples")
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			tok := s.AdminToken()
			created := 0.0
			type tc struct {
				file, ct string
			}
			for _, c := range []tc{
				{"JohnDoe.phr", "application/x-ndjson"},
				{"Roger-McBee.phr", "application/x-ndjson"},
				{"Mr.Adrian111Smith67-d5b0f2de-08c8-8259-68b0-af1fb66be392.phr", "application/x-ndjson"},
				{"Mrs.Kitty323Lemke654-97aa6ae5-d71e-f9df-c6dc-be3ae713690a.phr", "application/x-ndjson"},
				{"WilliamSim.phr", "application/x-ndjson"},
				{"Roger-McBee.Bundle.json", "application/fhir+json"},
				{"PatientDataReceipt.json", "application/fhir+json"},
				{"WilliamSim.sphr", "application/zip"},
			} {
				b, err := os.ReadFile(filepath.Join(dir, c.file))
				if err != nil {
					t.Fatal(err)
				}
				sum, issues, st := postImport(t, s, tok, "phr-ig:"+c.file, c.ct, bytes.NewReader(b), "Content-Disposition", `attachment; filename="`+c.file+`"`)
				if st != 200 {
					t.Errorf("%s: status %d %v", c.file, st, issues)
					continue
				}
				t.Logf("%s: %v", c.file, sum)
				for i, is := range issues {
					if i < 3 {
						t.Logf("  %s", is)
					}
				}
				created += sum["created"]
				if sum["created"]+sum["rejected"]+sum["unchanged"]+sum["conflicts"]+sum["updated"] != sum["resources"] {
					t.Errorf("%s: counts do not add up: %v", c.file, sum)
				}
				// Every rejected line is in quarantine, verbatim.
				if sum["rejected"] > 0 {
					resp := s.Do("GET", fmt.Sprintf("$import-quarantine?batch=%v", sum["batch"]), tok, nil, "Accept", "application/x-ndjson")
					n := bytes.Count(resp.Body, []byte("\n"))
					if float64(n) != sum["rejected"] && strings.HasSuffix(c.file, ".phr") {
						t.Errorf("%s: quarantine has %d lines, %v rejected", c.file, n, sum["rejected"])
					}
					if strings.HasSuffix(c.file, ".phr") {
						for _, l := range bytes.Split(bytes.TrimSpace(resp.Body), []byte("\n")) {
							if !bytes.Contains(b, l) {
								t.Errorf("%s: quarantined line not verbatim: %.200s", c.file, l)
							}
						}
					}
				}
				again, _, _ := postImport(t, s, tok, "phr-ig:"+c.file, c.ct, bytes.NewReader(b))
				want(t, c.file+" again", again, "created", 0)
				want(t, c.file+" again", again, "updated", 0)
				want(t, c.file+" again", again, "conflicts", 0)
			}
			if created < 100 {
				t.Errorf("only %v resources imported from the IG examples", created)
			}
			// The .sphr's images are Binary resources, byte for byte.
			for _, img := range []string{"xr-chest.jpg", "ct-chest.jpg"} {
				zb, _ := os.ReadFile(filepath.Join(dir, "WilliamSim.sphr"))
				want := unzipEntry(t, zb, "WilliamSim/"+img)
				found := false
				resp := s.Do("GET", "Binary/"+attID(want), tok, nil, "Accept", "image/jpeg")
				if resp.Status == 200 && bytes.Equal(resp.Body, want) {
					found = true
				}
				if !found {
					t.Errorf("%s not re-attached byte for byte (status %d, %d bytes)", img, resp.Status, len(resp.Body))
				}
			}
		})
	}
}

func TestHTTPImportValidateAndErrors(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	tok := s.AdminToken()
	body := `{"resourceType":"Patient","id":"p1","gender":"female"}
not json
{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"},"valueString":12}
`
	resp := s.Do("POST", "Bundle/$import?mode=validate&source=test", tok, body, "Content-Type", "application/x-ndjson", "Accept", "application/x-ndjson")
	sum, issues := parseSummary(t, resp.Body)
	want(t, "validate", sum, "created", 1)
	want(t, "validate", sum, "rejected", 2)
	joined := strings.Join(issues, "\n")
	if !strings.Contains(joined, "line 2") || !strings.Contains(joined, "line 3") {
		t.Errorf("issues lack line numbers: %s", joined)
	}
	if r := s.Do("GET", "Patient/p1", tok, nil); r.Status != 404 {
		t.Errorf("mode=validate wrote: %d", r.Status)
	}
	// Not streamed: a Parameters with the outcome.
	resp = s.Do("POST", "Bundle/$import?source=test", tok, body, "Content-Type", "application/x-ndjson")
	if resp.Status != 200 || !bytes.Contains(resp.Body, []byte(`"name":"outcome"`)) {
		t.Errorf("json response: %d %.500s", resp.Status, resp.Body)
	}
	if r := s.Do("GET", "Patient/p1", tok, nil); r.Status != 200 {
		t.Errorf("import did not write: %d", r.Status)
	}
	// Scopes: a read-only token cannot import.
	ro := s.Token("system/*.rs", "")
	resp = s.Do("POST", "Bundle/$import?source=test", ro, body, "Content-Type", "application/x-ndjson")
	if resp.Status != 403 {
		t.Errorf("read-only import: %d %s", resp.Status, resp.Body)
	}
	resp = s.Do("POST", "Bundle/$import?strategy=overwrite", tok, body, "Content-Type", "application/x-ndjson")
	if resp.Status != 400 {
		t.Errorf("strategy=overwrite: %d", resp.Status)
	}
	// A patient-scoped token imports into its own compartment only.
	pt := s.Token("patient/*.cruds", "p1")
	mine := `{"resourceType":"Observation","id":"o2","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"}}
{"resourceType":"Observation","id":"o3","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p2"}}
`
	resp = s.Do("POST", "Bundle/$import?source=app", pt, mine, "Content-Type", "application/x-ndjson", "Accept", "application/x-ndjson")
	sum, issues = parseSummary(t, resp.Body)
	want(t, "patient token", sum, "created", 1)
	if sum["created"] != 1 {
		t.Log(issues)
	}
	want(t, "patient token", sum, "rejected", 1)
	// The other patient's token sees neither its batches nor its quarantine.
	p2 := s.Token("patient/*.cruds", "p2")
	resp = s.Do("GET", fmt.Sprintf("$import-quarantine?batch=%v", sum["batch"]), p2, nil)
	if resp.Status != 404 {
		t.Errorf("other patient reads quarantine: %d", resp.Status)
	}
	// OperationDefinition and CapabilityStatement.
	resp = s.Do("GET", "metadata", "", nil)
	if !bytes.Contains(resp.Body, []byte("phr-import")) {
		t.Errorf("capability statement lacks import: %.300s", resp.Body)
	}
	resp = s.Do("GET", "OperationDefinition/phr-import", "", nil)
	if resp.Status != 200 || !bytes.Contains(resp.Body, []byte(`"code":"import"`)) {
		t.Errorf("OperationDefinition: %d", resp.Status)
	}
}

// The same source: a newer version (by meta.lastUpdated) supplements, an
// older different one is kept as a conflict; nothing is lost either way.
func TestHTTPImportSupplementAndStale(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	tok := s.AdminToken()
	v := func(updated, status string) string {
		return `{"resourceType":"Condition","id":"c1","meta":{"lastUpdated":"` + updated + `"},"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"` + status + `"}]},"code":{"text":"asthma"},"subject":{"reference":"Patient/p"}}` + "\n"
	}
	sum, issues, _ := postImport(t, s, tok, "ehr", "application/x-ndjson", strings.NewReader(v("2024-01-01T00:00:00Z", "active")))
	want(t, "first", sum, "created", 1)
	sum, _, _ = postImport(t, s, tok, "ehr", "application/x-ndjson", strings.NewReader(v("2024-06-01T00:00:00Z", "resolved")))
	want(t, "newer", sum, "updated", 1)
	sum, issues, _ = postImport(t, s, tok, "ehr", "application/x-ndjson", strings.NewReader(v("2024-03-01T00:00:00Z", "remission")))
	want(t, "older", sum, "conflicts", 1)
	want(t, "older", sum, "updated", 0)
	if !strings.Contains(strings.Join(issues, "\n"), "conflict") {
		t.Errorf("no conflict reported: %v", issues)
	}
	resp := s.Do("GET", "Condition/c1", tok, nil)
	if !bytes.Contains(resp.Body, []byte(`"resolved"`)) || !bytes.Contains(resp.Body, []byte(`"versionId":"2"`)) {
		t.Errorf("current: %s", resp.Body)
	}
	// Version 1 is still in the history; the stale one is in the conflict.
	resp = s.Do("GET", "Condition/c1/_history/1", tok, nil)
	if !bytes.Contains(resp.Body, []byte(`"active"`)) {
		t.Errorf("version 1: %s", resp.Body)
	}
	resp = s.Do("GET", "$conflicts?status=all", tok, nil)
	if !bytes.Contains(resp.Body, []byte("Condition/c1")) {
		t.Errorf("conflicts: %s", resp.Body)
	}
	// Re-sending the first version (already seen from this source) is a no-op.
	sum, _, _ = postImport(t, s, tok, "ehr", "application/x-ndjson", strings.NewReader(v("2024-01-01T00:00:00Z", "active")))
	want(t, "old again", sum, "unchanged", 1)
}

// TestHTTPImportGzip imports an NDJSON upload sent with Content-Encoding:
// gzip, as a stream. The same upload cut short is refused with a 400 that
// says so, keeping the chunks committed before the cut, and sending the
// whole upload again completes the import.
func TestHTTPImportGzip(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	tok := s.AdminToken()
	var plain bytes.Buffer
	for i := range 2500 {
		fmt.Fprintf(&plain, `{"resourceType":"Patient","id":"gz%d","name":[{"family":"F%d"}]}`+"\n", i, i)
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(plain.Bytes())
	zw.Close()
	cut := z.Bytes()[:z.Len()*9/10]
	resp := s.Do("POST", "Bundle/$import?source=gz", tok, cut, "Content-Type", "application/x-ndjson", "Content-Encoding", "gzip", "Accept", "application/x-ndjson")
	if resp.Status != 400 || !bytes.Contains(resp.Body, []byte("upload line ")) || !bytes.Contains(resp.Body, []byte("is not the gzip data")) {
		t.Fatalf("cut gzip upload: %d %s", resp.Status, resp.Body)
	}
	stored := func() int {
		r := s.Do("GET", "Patient?_summary=count", tok, nil)
		var b struct{ Total int }
		if err := json.Unmarshal(r.Body, &b); err != nil {
			t.Fatal(err)
		}
		return b.Total
	}
	kept := stored()
	if kept == 0 || kept >= 2500 {
		t.Errorf("the cut upload kept %d Patients, want the lines before the cut", kept)
	}
	if note := fmt.Sprintf("keeps what was committed before (created %d,", kept); !bytes.Contains(resp.Body, []byte(note)) {
		t.Errorf("the answer to the cut upload does not say what it kept (%q): %s", note, resp.Body)
	}
	// A Bundle cut short in the same way.
	var zb bytes.Buffer
	zw = gzip.NewWriter(&zb)
	zw.Write([]byte(`{"resourceType":"Bundle","type":"collection","entry":[`))
	for i := range 2500 {
		if i > 0 {
			zw.Write([]byte(",\n"))
		}
		fmt.Fprintf(zw, `{"resource":{"resourceType":"Patient","id":"gzb%d","name":[{"family":"F%d"}]}}`, i, i)
	}
	zw.Write([]byte("]}"))
	zw.Close()
	resp = s.Do("POST", "Bundle/$import?source=gzb", tok, zb.Bytes()[:zb.Len()*9/10], "Content-Type", "application/fhir+json", "Content-Encoding", "gzip")
	if resp.Status != 400 || !bytes.Contains(resp.Body, []byte("upload line ")) || !bytes.Contains(resp.Body, []byte("is not the gzip data")) {
		t.Errorf("cut gzip Bundle: %d %s", resp.Status, resp.Body)
	}
	// The entries read before the cut are imported, as NDJSON lines are:
	// more than the two full chunks.
	inBundle := stored() - kept
	if note := fmt.Sprintf("keeps what was committed before (created %d,", inBundle); inBundle <= 2000 || !bytes.Contains(resp.Body, []byte(note)) {
		t.Errorf("the cut Bundle kept %d Patients; its answer: %s", inBundle, resp.Body)
	}
	resp = s.Do("POST", "Bundle/$import?source=gz", tok, z.Bytes(), "Content-Type", "application/x-ndjson", "Content-Encoding", "gzip", "Accept", "application/x-ndjson")
	sum, issues := parseSummary(t, resp.Body)
	want(t, "gzip upload", sum, "created", float64(2500-kept))
	want(t, "gzip upload", sum, "unchanged", float64(kept))
	want(t, "gzip upload", sum, "rejected", 0)
	if len(issues) > 0 {
		t.Errorf("issues: %v", issues)
	}
	if n := stored(); n < 2500+2000 {
		t.Errorf("%d Patients stored, want the 2,500 of the NDJSON and most of the Bundle's", n)
	}
}

// TestHTTPQuarantineNamesEntry: a rejected entry of a Bundle is listed
// by $import-quarantine with its index in Bundle.entry beside its line; a
// rejected NDJSON line has no entry.
func TestHTTPQuarantineNamesEntry(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			tok := s.AdminToken()
			bundle := `{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","id":"q0","gender":"bogus"}},{"resource":{"resourceType":"Patient","id":"q1"}},{"resource":"not an object"}]}`
			ndjson := `{"resourceType":"Patient","id":"n0"}` + "\nnot json\n"
			for _, c := range []struct {
				ct, body string
				want     []string // "line/entry" of each rejected item
			}{
				{"application/fhir+json", bundle, []string{"1/0", "1/2"}},
				{"application/x-ndjson", ndjson, []string{"2/-"}},
			} {
				sum, issues, st := postImport(t, s, tok, "q", c.ct, strings.NewReader(c.body))
				if st != 200 {
					t.Fatalf("%s: %d %v", c.ct, st, issues)
				}
				r := s.Do("GET", fmt.Sprintf("$import-quarantine?batch=%v", sum["batch"]), tok, nil)
				var p struct {
					Parameter []struct {
						Part []struct {
							Name         string
							ValueInteger *int
						}
					}
				}
				if err := json.Unmarshal(r.Body, &p); err != nil {
					t.Fatalf("%s: %v %s", c.ct, err, r.Body)
				}
				var got []string
				for _, x := range p.Parameter {
					line, entry := "-", "-"
					for _, pt := range x.Part {
						if pt.ValueInteger == nil {
							continue
						}
						switch pt.Name {
						case "line":
							line = fmt.Sprint(*pt.ValueInteger)
						case "entry":
							entry = fmt.Sprint(*pt.ValueInteger)
						}
					}
					got = append(got, line+"/"+entry)
				}
				if strings.Join(got, " ") != strings.Join(c.want, " ") {
					t.Errorf("%s: quarantined line/entry %v, want %v: %s", c.ct, got, c.want, r.Body)
				}
			}
		})
	}
}
