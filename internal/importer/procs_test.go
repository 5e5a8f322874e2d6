package importer_test

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/gcbudget"
	"github.com/phr-project/phr/internal/importer"
	"github.com/phr-project/phr/internal/procs"
	"github.com/phr-project/phr/internal/store/storetest"
)

// TestRunIsBulkWork checks that an import run counts as bulk work (all
// CPUs, package procs) from Begin to Finish, and only then; and that it
// raises the collector's soft memory limit (package gcbudget) for as
// long, less on SQLite, whose page caches share the process's memory.
func TestRunIsBulkWork(t *testing.T) {
	const base = 100 << 20
	gcbudget.Enable(base)
	defer gcbudget.Enable(math.MaxInt64) // no limit, as before
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			app := openApp(t, d)
			imp := importer.New(app.Store, app.Records)
			ctx := access.With(context.Background(), access.System{Name: "test"})
			before := procs.Active()
			run, err := imp.Begin(ctx, importer.Options{Source: "procs-test"})
			if err != nil {
				t.Fatal(err)
			}
			if got := procs.Active(); got != before+1 {
				t.Fatalf("bulk work during the run: %d, want %d", got, before+1)
			}
			want := int64(importer.SQLiteImportMemoryLimit)
			if d == "postgres" {
				want = importer.ImportMemoryLimit
			}
			if got := gcbudget.Limit(); got != want {
				t.Errorf("memory limit during the run: %d, want %d", got, want)
			}
			if err := run.NDJSON(strings.NewReader(`{"resourceType":"Patient","id":"a"}`+"\n"), "p.ndjson"); err != nil {
				t.Fatal(err)
			}
			if _, err := run.Finish("done"); err != nil {
				t.Fatal(err)
			}
			if got := procs.Active(); got != before {
				t.Fatalf("bulk work after Finish: %d, want %d", got, before)
			}
			if got := gcbudget.Limit(); got != base {
				t.Errorf("memory limit after Finish: %d, want %d", got, base)
			}
		})
	}
}
