package importer_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/importer"
	"github.com/phr-project/phr/internal/store/storetest"
)

// TestImportSpecExamples imports the whole directory of R4 specification
// examples (2,459 files: resources, and Bundles of every type) in one run,
// then again. Only what breaks R4 or the Bundle rules is rejected, and the
// second run writes nothing but what the files' order implies. The examples reuse ids and identifiers
// across files and within Bundles (ConceptMaps 101 and 103 share one
// identifier), which once stopped the import with a write conflict.
func TestImportSpecExamples(t *testing.T) {
	dir := "../../../shared/data/r4-spec-examples"
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("%s not found; skipping", dir)
	}
	// The files whose items are rejected, and why.
	want := map[string]string{
		"devicemetric-example.json": "DeviceMetric.parent names a DeviceDefinition",
		"questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json": "an id of 67 characters",
		"bundle-references.json":  "Observation/14 and Patient/45 twice in one Bundle",
		"bundle-transaction.json": "a conditional DELETE",
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			app := openApp(t, d)
			imp := importer.New(app.Store, app.Records)
			ctx := access.With(context.Background(), access.System{Name: "test"})
			run := func() (importer.Summary, []fhir.Issue) {
				var errs []fhir.Issue
				r, err := imp.Begin(ctx, importer.Options{Source: "http://hl7.org/fhir", Report: func(is fhir.Issue) {
					if is.Severity == "error" {
						errs = append(errs, is)
					}
				}})
				if err != nil {
					t.Fatal(err)
				}
				if err := r.Path(dir, ""); err != nil {
					t.Fatal(err)
				}
				sum, err := r.Finish("done")
				if err != nil {
					t.Fatal(err)
				}
				return sum, errs
			}
			sum, errs := run()
			t.Logf("first import: %+v", sum)
			if sum.Rejected != 5 || sum.Created < 2400 {
				t.Errorf("first import: %+v, want 5 rejected and over 2,400 created", sum)
			}
			for _, is := range errs {
				file, _, _ := strings.Cut(is.Diagnostics, " ")
				if _, ok := want[filepath.Base(file)]; !ok {
					t.Errorf("unexpected error: %s", is.Diagnostics)
				}
			}
			// bundle-transaction.json deletes Patient/234, which
			// patient-examples-cypress-template.json, read after it,
			// creates: the first run had nothing to delete, the second
			// deletes it and creates it again. Nothing else is written.
			again, _ := run()
			if again.Deleted != 1 || again.Created != 1 || again.Updated+again.Conflicts != 0 || again.Rejected != sum.Rejected {
				t.Errorf("second import: %+v, want only Patient/234 deleted and created again, and the same %d rejected", again, sum.Rejected)
			}
			// The batch's record keeps every count, the deletion too.
			b, err := imp.GetBatch(ctx, again.Batch)
			if err != nil {
				t.Fatal(err)
			}
			if b.Deleted != 1 || b.Created != 1 || b.Unchanged != again.Unchanged || b.Rejected != again.Rejected {
				t.Errorf("batch %d is recorded as %+v, want the counts of %+v", again.Batch, b, again)
			}
		})
	}
}
