package importer_test

import (
	"context"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/importer"
	"github.com/phr-project/phr/internal/store/storetest"
)

// A run of a source new to the database keeps what it recorded in memory
// instead of looking it up: a duplicate or a newer version later in the
// same run is still recognised, across chunks.
func TestFreshSourceWithinRun(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			app := openApp(t, d)
			imp := importer.New(app.Store, app.Records)
			imp.ChunkSize = 1 // one chunk per line: every line reads what the earlier ones wrote
			v1 := `{"resourceType":"Patient","id":"p1","meta":{"versionId":"1"},"gender":"male"}`
			v2 := `{"resourceType":"Patient","id":"p1","meta":{"versionId":"2"},"gender":"female"}`
			in := strings.Join([]string{v1, v1, v2, v2, v1}, "\n") + "\n"
			sum, _ := importReader(t, imp, "fresh", "ndjson", strings.NewReader(in))
			// v1 created; its duplicate unchanged; v2 an update; its
			// duplicate and the old v1 (sent before) unchanged.
			if sum.Created != 1 || sum.Updated != 1 || sum.Unchanged != 3 || sum.Conflicts != 0 {
				t.Errorf("summary %+v, want 1 created, 1 updated, 3 unchanged", sum)
			}
			ctx := access.With(context.Background(), access.System{Name: "test"})
			res, err := app.Store.Read(ctx, "Patient", "p1")
			if err != nil {
				t.Fatal(err)
			}
			if res.Version != 2 || !strings.Contains(string(res.JSON), `"female"`) {
				t.Errorf("Patient/p1 is version %d: %s", res.Version, res.JSON)
			}
		})
	}
}

// A run that began when its source was new stops relying on that once
// another import of the same source has written: it finds that import's
// identity map entries and digests.
func TestFreshSourceOtherRun(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			app := openApp(t, d)
			imp := importer.New(app.Store, app.Records)
			ctx := access.With(context.Background(), access.System{Name: "test"})
			first, err := imp.Begin(ctx, importer.Options{Source: "shared"})
			if err != nil {
				t.Fatal(err)
			}
			p := `{"resourceType":"Patient","id":"p1","gender":"male"}` + "\n"
			second, err := imp.Begin(ctx, importer.Options{Source: "shared"})
			if err != nil {
				t.Fatal(err)
			}
			if err := second.NDJSON(strings.NewReader(p), "b.ndjson"); err != nil {
				t.Fatal(err)
			}
			if sum, err := second.Finish("done"); err != nil || sum.Created != 1 {
				t.Fatalf("second run: %+v, %v", sum, err)
			}
			if err := first.NDJSON(strings.NewReader(p), "a.ndjson"); err != nil {
				t.Fatal(err)
			}
			sum, err := first.Finish("done")
			if err != nil {
				t.Fatal(err)
			}
			if sum.Created != 0 || sum.Unchanged != 1 {
				t.Errorf("first run: %+v, want the patient unchanged", sum)
			}
			var n int
			if err := app.Store.QueryRow(ctx, `SELECT COUNT(*) FROM resource WHERE type = 'Patient'`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Errorf("%d patients, want 1", n)
			}
		})
	}
}
