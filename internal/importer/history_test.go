package importer_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// historyBundle is a history Bundle of another server, newest first: three
// versions of Patient/fx (the first created it), an Observation about it,
// and the deletion of a resource this record never had. first puts
// "type" before "resourceType", so that the Bundle is read whole instead
// of entry by entry.
func historyBundle(first bool) string {
	version := func(v int, family, updated, method string) string {
		return fmt.Sprintf(`{"fullUrl":"https://other.example/fhir/Patient/fx","resource":{"resourceType":"Patient","id":"fx","meta":{"versionId":"%d","lastUpdated":"%s"},"name":[{"family":%q}]},"request":{"method":%q,"url":"Patient/fx"}}`, v, updated, family, method)
	}
	entries := []string{
		`{"fullUrl":"https://other.example/fhir/Observation/ox","resource":{"resourceType":"Observation","id":"ox","meta":{"versionId":"1","lastUpdated":"2024-05-01T00:00:00Z"},"status":"final","code":{"text":"x"},"subject":{"reference":"Patient/fx"}},"request":{"method":"POST","url":"Observation"}}`,
		`{"request":{"method":"DELETE","url":"Patient/gone"}}`,
		version(3, "Three", "2024-04-01T00:00:00Z", "PUT"),
		version(2, "Two", "2024-03-01T00:00:00Z", "PUT"),
		version(1, "One", "2024-02-01T00:00:00Z", "POST"),
	}
	head := `"resourceType":"Bundle","type":"history"`
	if first {
		head = `"type":"history","resourceType":"Bundle"`
	}
	return `{` + head + `,"entry":[` + strings.Join(entries, ",") + `]}`
}

// historyOf returns the family names of a resource's versions, oldest
// first.
func historyOf(t *testing.T, s *servertest.Server, tok, ref string) []string {
	t.Helper()
	r := s.Do("GET", ref+"/_history", tok, nil)
	var b struct {
		Entry []struct {
			Resource struct {
				Name []struct{ Family string }
			}
		}
	}
	if err := json.Unmarshal(r.Body, &b); err != nil {
		t.Fatalf("%s history: %v %s", ref, err, r.Body)
	}
	var out []string
	for i := len(b.Entry) - 1; i >= 0; i-- {
		if n := b.Entry[i].Resource.Name; len(n) > 0 {
			out = append(out, n[0].Family)
		}
	}
	return out
}

// TestHTTPImportHistoryBundle imports a history Bundle, whose entries are
// versions, newest first: the versions are written oldest first, so that
// the local history follows the source's, and importing it again writes
// nothing. A history Bundle of this record read back writes nothing
// either, and raises no conflict.
func TestHTTPImportHistoryBundle(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			tok := s.AdminToken()
			for _, whole := range []bool{false, true} {
				source := fmt.Sprintf("https://other.example/fhir/%v", whole)
				sum, issues, st := postImport(t, s, tok, source, "application/fhir+json", strings.NewReader(historyBundle(whole)))
				if st != 200 {
					t.Fatalf("import: %d %v", st, issues)
				}
				want(t, "history", sum, "created", 2)
				want(t, "history", sum, "updated", 2)
				want(t, "history", sum, "rejected", 0)
				want(t, "history", sum, "conflicts", 0)
				joined := strings.Join(issues, "\n")
				if !strings.Contains(joined, "line 1, Bundle.entry[1]: delete of Patient/gone") {
					t.Errorf("the deletion of a resource never imported is not reported at its entry: %s", joined)
				}
				// The second source's Patient/fx is another resource: its
				// id is taken.
				ref := "Patient/fx"
				if whole {
					r := s.Do("GET", "Patient?family=Three&_count=10", tok, nil)
					var b struct {
						Entry []struct{ Resource struct{ ID string } }
					}
					json.Unmarshal(r.Body, &b)
					for _, e := range b.Entry {
						if e.Resource.ID != "fx" {
							ref = "Patient/" + e.Resource.ID
						}
					}
				}
				if got := strings.Join(historyOf(t, s, tok, ref), ","); got != "One,Two,Three" {
					t.Errorf("%s history (oldest first): %s, want One,Two,Three", ref, got)
				}
				sum, issues, _ = postImport(t, s, tok, source, "application/fhir+json", strings.NewReader(historyBundle(whole)))
				want(t, "history again", sum, "created", 0)
				want(t, "history again", sum, "updated", 0)
				want(t, "history again", sum, "conflicts", 0)
				want(t, "history again", sum, "unchanged", 4)
			}
			// This record's own history, read back under another source.
			own := s.Do("GET", "Patient/fx/_history", tok, nil)
			sum, issues, _ := postImport(t, s, tok, "own-history", "application/fhir+json", strings.NewReader(string(own.Body)))
			want(t, "own history", sum, "unchanged", 3)
			want(t, "own history", sum, "created", 0)
			want(t, "own history", sum, "conflicts", 0)
			if t.Failed() {
				t.Log(issues)
			}
			if got := strings.Join(historyOf(t, s, tok, "Patient/fx"), ","); got != "One,Two,Three" {
				t.Errorf("Patient/fx history after its own history came back: %s", got)
			}
		})
	}
}

// TestHTTPImportHistoryTypeLast imports history Bundles whose type comes
// after their entries, so that the entries are read before the type: with
// a request and a response in each entry, as history entries have, the
// versions are written oldest first; without, they are imported in their
// order, and a warning says so.
func TestHTTPImportHistoryTypeLast(t *testing.T) {
	late := func(b string) string {
		b = strings.Replace(b, `"type":"history",`, "", 1)
		return strings.TrimSuffix(b, "}") + `,"type":"history"}`
	}
	withResponse := strings.ReplaceAll(historyBundle(false), `"request":{"method":"PUT","url":"Patient/fx"}`, `"request":{"method":"PUT","url":"Patient/fx"},"response":{"status":"200 OK"}`)
	withResponse = strings.ReplaceAll(withResponse, `"request":{"method":"POST","url":"Observation"}`, `"request":{"method":"POST","url":"Observation"},"response":{"status":"201 Created"}`)
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			tok := s.AdminToken()
			sum, issues, st := postImport(t, s, tok, "https://other.example/fhir", "application/fhir+json", strings.NewReader(late(withResponse)))
			if st != 200 {
				t.Fatalf("import: %d %v", st, issues)
			}
			want(t, "type last", sum, "created", 2)
			want(t, "type last", sum, "updated", 2)
			want(t, "type last", sum, "conflicts", 0)
			if got := strings.Join(historyOf(t, s, tok, "Patient/fx"), ","); got != "One,Two,Three" {
				t.Errorf("Patient/fx history (oldest first): %s, want One,Two,Three", got)
			}
			if strings.Contains(strings.Join(issues, "\n"), "Bundle.type") {
				t.Errorf("a warning for a history Bundle read as one: %q", issues)
			}
			// A type known before the entries is taken as it is, also
			// when the Bundle is read whole (type before resourceType).
			whole := `{"type":"collection",` + strings.TrimPrefix(strings.Replace(withResponse, `"type":"history",`, "", 1), "{")
			sum, issues, _ = postImport(t, s, tok, "https://fourth.example/fhir", "application/fhir+json", strings.NewReader(whole))
			if !strings.Contains(strings.Join(issues, "\n"), "appears twice in the Bundle") || strings.Contains(strings.Join(issues, "\n"), "Bundle.type") {
				t.Errorf("a collection read whole was taken for a history Bundle: %v %q", sum, issues)
			}
			// Entries without a response cannot be told from a
			// transaction's: imported in their order, with a warning.
			sum, issues, _ = postImport(t, s, tok, "https://third.example/fhir", "application/fhir+json", strings.NewReader(late(historyBundle(false))))
			if !strings.Contains(strings.Join(issues, "\n"), "Bundle.type history comes after the entries") {
				t.Errorf("no warning for a history Bundle read in its order: %v %q", sum, issues)
			}
		})
	}
}

// TestHTTPImportHistoryDeleteAndRecreate imports a history Bundle in which
// the source deleted a resource and created it again, and deleted another
// for good: the local history has the deletion and the version after it,
// the other resource is gone, and importing the Bundle again writes
// nothing (the deletion is older than the version already taken).
func TestHTTPImportHistoryDeleteAndRecreate(t *testing.T) {
	version := func(id string, v int, family, updated string) string {
		return fmt.Sprintf(`{"fullUrl":"https://h.example/fhir/Patient/%s","resource":{"resourceType":"Patient","id":%q,"meta":{"versionId":"%d","lastUpdated":"%s"},"name":[{"family":%q}]},"request":{"method":"PUT","url":"Patient/%s"}}`, id, id, v, updated, family, id)
	}
	deletion := func(id string, v int, at string) string {
		return fmt.Sprintf(`{"fullUrl":"https://h.example/fhir/Patient/%s","request":{"method":"DELETE","url":"Patient/%s"},"response":{"status":"204","etag":"W/\"%d\"","lastModified":%q}}`, id, id, v, at)
	}
	bundle := `{"resourceType":"Bundle","type":"history","entry":[` + strings.Join([]string{
		version("dr", 3, "After", "2024-03-01T00:00:00Z"),
		deletion("dz", 2, "2024-02-15T00:00:00Z"),
		deletion("dr", 2, "2024-02-01T00:00:00Z"),
		version("dz", 1, "Gone", "2024-01-15T00:00:00Z"),
		version("dr", 1, "Before", "2024-01-01T00:00:00Z"),
	}, ",") + `]}`
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			tok := s.AdminToken()
			sum, issues, st := postImport(t, s, tok, "https://h.example/fhir", "application/fhir+json", strings.NewReader(bundle))
			if st != 200 {
				t.Fatalf("import: %d %v", st, issues)
			}
			want(t, "history", sum, "created", 3)
			want(t, "history", sum, "deleted", 2)
			if got := strings.Join(historyOf(t, s, tok, "Patient/dr"), ","); got != "Before,After" {
				t.Errorf("Patient/dr history (oldest first): %s, want Before,After", got)
			}
			r := s.Do("GET", "Patient/dr/_history", tok, nil)
			if n := strings.Count(string(r.Body), `"fullUrl"`); n != 3 {
				t.Errorf("Patient/dr has %d versions, want 3 (the deletion between): %.1000s", n, r.Body)
			}
			if r := s.Do("GET", "Patient/dr", tok, nil); r.Status != 200 || !strings.Contains(string(r.Body), "After") {
				t.Errorf("Patient/dr: %d %.300s", r.Status, r.Body)
			}
			if r := s.Do("GET", "Patient/dz", tok, nil); r.Status != 410 {
				t.Errorf("Patient/dz: %d, want 410 (deleted)", r.Status)
			}
			sum, issues, _ = postImport(t, s, tok, "https://h.example/fhir", "application/fhir+json", strings.NewReader(bundle))
			for _, f := range []string{"created", "updated", "deleted", "conflicts", "rejected"} {
				want(t, "history again", sum, f, 0)
			}
			if t.Failed() {
				t.Log(issues)
			}
		})
	}
}

// TestHTTPImportAnotherServersExport imports, without a source, the .phr
// exports of a record on another phr server: the cover page names that
// server, which becomes the source, so the second export's changes update
// what the first brought. The servers of the test listen on 127.0.0.1, as
// every phr serve does by default, so the cover page also names the store
// (sphr.StoreFragment): the export by a third such server of a record
// with the same ids, which says something else, is another source's: its
// Observation does not update the first's.
func TestHTTPImportAnotherServersExport(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			a, b, c := servertest.Start(t, d), servertest.Start(t, d), servertest.Start(t, d)
			ta, tb, tc := a.AdminToken(), b.AdminToken(), c.AdminToken()
			put := func(s *servertest.Server, tok, weight string) {
				t.Helper()
				for _, res := range []string{
					`{"resourceType":"Patient","id":"ann","name":[{"family":"Cover"}],"birthDate":"1970-01-01"}`,
					`{"resourceType":"Observation","id":"ob1","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/ann"},"valueString":"` + weight + `"}`,
				} {
					var v struct{ ResourceType, ID string }
					json.Unmarshal([]byte(res), &v)
					if r := s.Do("PUT", v.ResourceType+"/"+v.ID, tok, strings.NewReader(res), "Content-Type", "application/fhir+json"); r.Status >= 300 {
						t.Fatalf("PUT %s: %d %s", v.ID, r.Status, r.Body)
					}
				}
			}
			put(a, ta, "70 kg")
			exportOf := func(s *servertest.Server, tok string) string {
				r := s.Do("GET", "Patient/ann/$phr-export?outputFormat=phr", tok, nil)
				if r.Status != 200 {
					t.Fatalf("export: %d %s", r.Status, r.Body)
				}
				return string(r.Body)
			}
			export := func() string { return exportOf(a, ta) }
			// Downloaded on two days, under two names.
			sum, issues, st := postImport(t, b, tb, "", "application/x-ndjson", strings.NewReader(export()), "Content-Disposition", `attachment; filename="Ann-2026-12-06.phr"`)
			if st != 200 {
				t.Fatalf("first export: %d %v", st, issues)
			}
			want(t, "first export", sum, "created", 2)
			label := batchSource(t, b, tb, sum["batch"])
			if !strings.HasPrefix(label, a.FHIR+"#store-") || len(label) < len(a.FHIR)+len("#store-")+36 {
				t.Errorf("the batch's source is %q, not %s and its store", label, a.FHIR)
			}
			// Changed on the server it came from, exported again.
			if r := a.Do("PUT", "Observation/ob1", ta, strings.NewReader(`{"resourceType":"Observation","id":"ob1","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/ann"},"valueString":"71 kg"}`), "Content-Type", "application/fhir+json"); r.Status >= 300 {
				t.Fatalf("PUT: %d %s", r.Status, r.Body)
			}
			sum, issues, _ = postImport(t, b, tb, "", "application/x-ndjson", strings.NewReader(export()), "Content-Disposition", `attachment; filename="Ann-2026-12-07.phr"`)
			want(t, "second export", sum, "updated", 1)
			want(t, "second export", sum, "unchanged", 1)
			want(t, "second export", sum, "created", 0)
			want(t, "second export", sum, "conflicts", 0)
			if r := b.Do("GET", "Observation/ob1", tb, nil); !strings.Contains(string(r.Body), "71 kg") {
				t.Errorf("Observation/ob1 on the importing server: %s (issues %q)", r.Body, issues)
			}
			// The encrypted archive form says the same: the server spools
			// it, and reads the cover page with the passphrase.
			arc := a.Do("GET", "Patient/ann/$phr-export?outputFormat=sphr", ta, nil, "X-PHR-Passphrase", "correct horse battery")
			if arc.Status != 200 {
				t.Fatalf("sphr export: %d %s", arc.Status, arc.Body)
			}
			sum, issues, _ = postImport(t, b, tb, "", "application/zip", bytes.NewReader(arc.Body), "X-PHR-Passphrase", "correct horse battery", "Content-Disposition", `attachment; filename="Ann.sphr"`)
			want(t, "sphr export", sum, "unchanged", 2)
			want(t, "sphr export", sum, "created", 0)
			if got := batchSource(t, b, tb, sum["batch"]); got != label {
				t.Errorf("the archive's batch source is %q, not %q (issues %q)", got, label, issues)
			}
			// The document Bundle form of the export says the same.
			doc := a.Do("GET", "Patient/ann/$phr-export", ta, nil)
			sum, issues, _ = postImport(t, b, tb, "", "application/fhir+json", strings.NewReader(string(doc.Body)), "Content-Disposition", `attachment; filename="Ann.json"`)
			want(t, "Bundle export", sum, "unchanged", 2)
			want(t, "Bundle export", sum, "created", 0)
			if got := batchSource(t, b, tb, sum["batch"]); got != label {
				t.Errorf("the Bundle's batch source is %q, not %q (issues %q)", got, label, issues)
			}
			// Another store on a loopback base, with the same ids and
			// another weight: another source, whose Observation is
			// another resource (merge rule 1), not a newer version of
			// the first's.
			put(c, tc, "75 kg")
			sum, issues, _ = postImport(t, b, tb, "", "application/x-ndjson", strings.NewReader(exportOf(c, tc)), "Content-Disposition", `attachment; filename="Ann-from-c.phr"`)
			want(t, "the other store's export", sum, "created", 1)
			want(t, "the other store's export", sum, "unchanged", 1)
			want(t, "the other store's export", sum, "updated", 0)
			if got := batchSource(t, b, tb, sum["batch"]); got == label || !strings.HasPrefix(got, c.FHIR+"#store-") {
				t.Errorf("the other store's export is labelled %q (the first's: %q)", got, label)
			}
			if r := b.Do("GET", "Observation/ob1", tb, nil); !strings.Contains(string(r.Body), "71 kg") {
				t.Errorf("Observation/ob1 after the other store's export: %s (issues %q)", r.Body, issues)
			}
		})
	}
}

// batchSource returns the source label of import batch n on s.
func batchSource(t *testing.T, s *servertest.Server, tok string, n float64) string {
	t.Helper()
	r := s.Do("GET", fmt.Sprintf("$import-batches?batch=%v", n), tok, nil)
	var p struct {
		Parameter []struct {
			Name string
			Part []struct {
				Name        string
				ValueString string
			}
		}
	}
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatalf("batch %v: %v %.300s", n, err, r.Body)
	}
	for _, prm := range p.Parameter {
		for _, part := range prm.Part {
			if prm.Name == "batch" && part.Name == "source" {
				return part.ValueString
			}
		}
	}
	t.Fatalf("batch %v has no source: %.300s", n, r.Body)
	return ""
}
