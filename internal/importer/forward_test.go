package importer_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/importer"
	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/store/storetest"
)

// importReader imports one input (NDJSON or a Bundle) as one batch.
func importReader(t testing.TB, imp *importer.Importer, source, kind string, in io.Reader) (importer.Summary, []fhir.Issue) {
	t.Helper()
	ctx := access.With(context.Background(), access.System{Name: "test"})
	var issues []fhir.Issue
	run, err := imp.Begin(ctx, importer.Options{Source: source, Filename: "input", Report: func(is fhir.Issue) { issues = append(issues, is) }})
	if err != nil {
		t.Fatal(err)
	}
	if kind == "ndjson" {
		err = run.NDJSON(in, "input.ndjson")
	} else {
		err = run.Bundle(in, "input.json")
	}
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	sum, err := run.Finish("done")
	if err != nil {
		t.Fatal(err)
	}
	return sum, issues
}

// reference reads one reference of a stored resource.
func reference(t testing.TB, app *server.App, typ, id, field string) string {
	t.Helper()
	ctx := access.With(context.Background(), access.System{Name: "test"})
	res, err := app.Records.Read(ctx, typ, id)
	if err != nil {
		t.Fatalf("read %s/%s: %v", typ, id, err)
	}
	v, err := fhirjson.Parse(res.JSON)
	if err != nil {
		t.Fatal(err)
	}
	f := v.Get(field)
	if f == nil {
		return ""
	}
	return f.GetString("reference")
}

// TestForwardReferences: a second source sends resources that point at
// resources arriving later in the same import (later chunks, a later
// file), whose local ids differ from the source's: one matched by
// identifier to an existing Patient, one renamed because another source
// already uses its id. Every reference ends up at the right local id.
func TestForwardReferences(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			app := openApp(t, d)
			imp := importer.New(app.Store, app.Records)
			imp.ChunkSize = 10
			// Source A: the patient (MRN 77) and an encounter "e1".
			first := `{"resourceType":"Patient","id":"alice","identifier":[{"system":"urn:mrn","value":"77"}],"name":[{"family":"Smith"}]}
{"resourceType":"Encounter","id":"e1","status":"finished","class":{"code":"AMB"},"subject":{"reference":"Patient/alice"}}
`
			sum, _ := importReader(t, imp, "ehr-a", "ndjson", strings.NewReader(first))
			if sum.Created != 2 {
				t.Fatalf("source A: %+v", sum)
			}
			// Source B: 25 observations first (three chunks), then its
			// encounter "e1" (another encounter than A's) and its patient
			// "b-9" (A's alice by MRN).
			var b strings.Builder
			for i := range 25 {
				fmt.Fprintf(&b, `{"resourceType":"Observation","id":"o%d","status":"final","code":{"text":"pulse"},"valueQuantity":{"value":%d},"subject":{"reference":"Patient/b-9"},"encounter":{"reference":"Encounter/e1"}}`+"\n", i, 60+i)
			}
			b.WriteString(`{"resourceType":"Encounter","id":"e1","status":"in-progress","class":{"code":"EMER"},"subject":{"reference":"Patient/b-9"}}` + "\n")
			b.WriteString(`{"resourceType":"Patient","id":"b-9","identifier":[{"system":"urn:mrn","value":"77"}],"name":[{"family":"Smith"}]}` + "\n")
			sum, issues := importReader(t, imp, "clinic-b", "ndjson", strings.NewReader(b.String()))
			if sum.Created != 26 || sum.Rejected != 0 || sum.Resources != 27 {
				t.Fatalf("source B: %+v %v", sum, issues)
			}
			// B's encounter got a new id; find it through an observation.
			encB := reference(t, app, "Observation", "o0", "encounter")
			if encB == "Encounter/e1" || !strings.HasPrefix(encB, "Encounter/") {
				t.Fatalf("o0.encounter = %q, want B's renamed encounter", encB)
			}
			for i := range 25 {
				id := fmt.Sprintf("o%d", i)
				if got := reference(t, app, "Observation", id, "subject"); got != "Patient/alice" {
					t.Errorf("%s.subject = %q, want Patient/alice (b-9 matched by MRN)", id, got)
				}
				if got := reference(t, app, "Observation", id, "encounter"); got != encB {
					t.Errorf("%s.encounter = %q, want %q", id, got, encB)
				}
			}
			if got := reference(t, app, strings.Split(encB, "/")[0], strings.Split(encB, "/")[1], "subject"); got != "Patient/alice" {
				t.Errorf("B's encounter subject = %q", got)
			}
			if got := reference(t, app, "Encounter", "e1", "subject"); got != "Patient/alice" {
				t.Errorf("A's encounter changed: subject %q", got)
			}
			// Importing it again writes nothing.
			sum, _ = importReader(t, imp, "clinic-b", "ndjson", strings.NewReader(b.String()))
			if sum.Created+sum.Updated+sum.Conflicts != 0 || sum.Unchanged != 27 {
				t.Errorf("source B again: %+v", sum)
			}

			// A Bundle whose entries point forward across chunks by
			// urn:uuid (the patient is the last entry).
			var bb strings.Builder
			bb.WriteString(`{"resourceType":"Bundle","type":"transaction","entry":[`)
			for i := range 25 {
				fmt.Fprintf(&bb, `{"fullUrl":"urn:uuid:00000000-0000-0000-0000-%012d","resource":{"resourceType":"Observation","status":"final","code":{"text":"weight %d"},"subject":{"reference":"urn:uuid:11111111-0000-0000-0000-000000000000"}},"request":{"method":"POST","url":"Observation"}},`, i, i)
			}
			bb.WriteString(`{"fullUrl":"urn:uuid:11111111-0000-0000-0000-000000000000","resource":{"resourceType":"Patient","identifier":[{"system":"urn:mrn","value":"88"}],"name":[{"family":"Jones"}]},"request":{"method":"POST","url":"Patient"}}]}`)
			sum, issues = importReader(t, imp, "lab-c", "bundle", strings.NewReader(bb.String()))
			if sum.Created != 26 || sum.Rejected != 0 {
				t.Fatalf("bundle: %+v %v", sum, issues)
			}
			for _, is := range issues {
				if strings.Contains(is.Diagnostics, "names no entry") {
					t.Errorf("unresolved: %s", is.Diagnostics)
				}
			}
			local := func(typ string) []string {
				t.Helper()
				rows, err := app.Store.Query(context.Background(), `SELECT local_id FROM import_identity WHERE source = ? AND type = ?`, importer.SourceURI("lab-c"), typ)
				if err != nil {
					t.Fatal(err)
				}
				defer rows.Close()
				var out []string
				for rows.Next() {
					var id string
					rows.Scan(&id)
					out = append(out, id)
				}
				return out
			}
			pats, obs := local("Patient"), local("Observation")
			if len(pats) != 1 || len(obs) != 25 {
				t.Fatalf("the bundle's identities: %d patients, %d observations", len(pats), len(obs))
			}
			for _, id := range obs {
				if got := reference(t, app, "Observation", id, "subject"); got != "Patient/"+pats[0] {
					t.Errorf("Observation/%s.subject = %q, want Patient/%s", id, got, pats[0])
				}
			}
			sum, _ = importReader(t, imp, "lab-c", "bundle", strings.NewReader(bb.String()))
			if sum.Created+sum.Updated+sum.Conflicts != 0 {
				t.Errorf("bundle again: %+v", sum)
			}
		})
	}
}
