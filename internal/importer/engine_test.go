package importer_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/importer"
	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/store/storetest"
)

// findData locates ../shared/data/name by walking up, or skips.
func findData(t testing.TB, name string) string {
	t.Helper()
	wd, _ := os.Getwd()
	for d := wd; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "..", "shared", "data", name)
		if _, err := os.Stat(p); err == nil {
			return filepath.Clean(p)
		}
		if filepath.Dir(d) == d {
			t.Skipf("test data ../shared/data/%s not found; skipping", name)
		}
	}
}

func openApp(t testing.TB, dialect string) *server.App {
	t.Helper()
	return openAppWith(t, dialect, server.Config{})
}

// openAppWith is openApp with the settings of cfg (its data directory,
// address and database are the test's).
func openAppWith(t testing.TB, dialect string, cfg server.Config) *server.App {
	t.Helper()
	cfg.DataDir, cfg.Addr = t.TempDir(), "127.0.0.1:0"
	if dialect == "postgres" {
		cfg.DB = storetest.NewPostgresURL(t)
	}
	app, err := server.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	return app
}

func importPath(t testing.TB, imp *importer.Importer, source, path string) (importer.Summary, []fhir.Issue) {
	t.Helper()
	ctx := access.With(context.Background(), access.System{Name: "test"})
	var issues []fhir.Issue
	run, err := imp.Begin(ctx, importer.Options{Source: source, Filename: filepath.Base(path), Report: func(is fhir.Issue) { issues = append(issues, is) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Path(path, ""); err != nil {
		t.Fatalf("import %s: %v", path, err)
	}
	sum, err := run.Finish("done")
	if err != nil {
		t.Fatal(err)
	}
	return sum, issues
}

// Run.Path walks an export directory (skipping its log.ndjson) in load
// order; the HTTP tests cover both stores, this one SQLite.
func TestEngineBulk(t *testing.T) {
	dir := findData(t, "sample-bulk-10")
	for _, d := range []string{"sqlite"} {
		t.Run(d, func(t *testing.T) {
			app := openApp(t, d)
			imp := importer.New(app.Store, app.Records)
			sum, issues := importPath(t, imp, "https://hospital.example/fhir", dir)
			t.Logf("first: %+v, %d issues", sum, len(issues))
			for i, is := range issues {
				if i < 10 {
					t.Logf("%s %s", is.Severity, is.Diagnostics)
				}
			}
			sum2, _ := importPath(t, imp, "https://hospital.example/fhir", dir)
			t.Logf("second: %+v", sum2)
			if sum2.Created+sum2.Updated+sum2.Conflicts != 0 {
				t.Errorf("re-import wrote: %+v", sum2)
			}
		})
	}
}
