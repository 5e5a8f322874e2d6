package importer_test

import (
	"context"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/importer"
	"github.com/phr-project/phr/internal/procs"
)

// TestRunIsBulkWork checks that an import run counts as bulk work (all
// CPUs, package procs) from Begin to Finish, and only then.
func TestRunIsBulkWork(t *testing.T) {
	app := openApp(t, "sqlite")
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
	if err := run.NDJSON(strings.NewReader(`{"resourceType":"Patient","id":"a"}`+"\n"), "p.ndjson"); err != nil {
		t.Fatal(err)
	}
	if _, err := run.Finish("done"); err != nil {
		t.Fatal(err)
	}
	if got := procs.Active(); got != before {
		t.Fatalf("bulk work after Finish: %d, want %d", got, before)
	}
}
