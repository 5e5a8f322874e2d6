package importer_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/importer"
	"github.com/phr-project/phr/internal/store/storetest"
)

// concurrentInput returns a few hundred resources of the sample Bulk
// export (the people and places, which carry business identifiers, and
// some clinical resources) as NDJSON, with their count by type.
func concurrentInput(t *testing.T) ([]byte, map[string]int) {
	t.Helper()
	var buf bytes.Buffer
	counts := map[string]int{}
	for _, typ := range []string{"Patient", "Organization", "Practitioner", "Location", "PractitionerRole", "AllergyIntolerance", "Device", "Immunization"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "..", "shared", "data", "sample-bulk-10", typ+".000.ndjson"))
		if err != nil {
			t.Skipf("sample data: %v", err)
		}
		for _, line := range bytes.Split(b, []byte("\n")) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			buf.Write(line)
			buf.WriteByte('\n')
			counts[typ]++
		}
	}
	return buf.Bytes(), counts
}

// edited returns the input with every third resource changed (a
// language added), as a later export of the same source would send it.
func edited(in []byte) []byte {
	lines := bytes.Split(bytes.TrimSpace(in), []byte("\n"))
	for i, l := range lines {
		if i%3 == 0 {
			lines[i] = append([]byte(`{"language":"en-US",`), l[1:]...)
		}
	}
	return append(bytes.Join(lines, []byte("\n")), '\n')
}

// Two imports of the same source started together, sending the same
// content (or one an edited copy), both complete, and afterwards every
// input resource exists once, mapped once, and a third import of the
// same content creates nothing. The source is new, so both may begin in
// fresh-source mode (see fresh.go) before either has written anything;
// small chunks make their writes interleave.
func TestConcurrentImportsOfOneSource(t *testing.T) {
	in, counts := concurrentInput(t)
	total := 0
	for _, n := range counts {
		total += n
	}
	cases := []struct {
		name string
		a, b []byte
	}{
		{"same", in, in},
		{"edited", in, edited(in)},
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			for _, c := range cases {
				for rep := range 3 {
					t.Run(fmt.Sprintf("%s-%d", c.name, rep), func(t *testing.T) {
						concurrentImports(t, d, c.a, c.b, counts, total)
					})
				}
			}
		})
	}
}

func concurrentImports(t *testing.T, dialect string, a, b []byte, counts map[string]int, total int) {
	app := openApp(t, dialect)
	imp := importer.New(app.Store, app.Records)
	imp.ChunkSize = 25
	ctx := access.With(context.Background(), access.System{Name: "test"})
	const source = "https://ehr.example/fhir"
	importOne := func(in []byte, name string) (importer.Summary, error) {
		run, err := imp.Begin(ctx, importer.Options{Source: source})
		if err != nil {
			return importer.Summary{}, err
		}
		err = run.NDJSON(bytes.NewReader(in), name)
		status := "done"
		if err != nil {
			status = "failed"
		}
		sum, ferr := run.Finish(status)
		if err == nil {
			err = ferr
		}
		return sum, err
	}
	var start, wg sync.WaitGroup
	start.Add(1)
	var sums [2]importer.Summary
	var errs [2]error
	for i, in := range [][]byte{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start.Wait()
			sums[i], errs[i] = importOne(in, fmt.Sprintf("run%d.ndjson", i))
		}()
	}
	start.Done()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("import %d: %v", i, err)
		}
		if sums[i].Rejected != 0 || sums[i].Resources != total {
			t.Errorf("import %d: %+v, want %d resources, none rejected", i, sums[i], total)
		}
	}
	if got := sums[0].Created + sums[1].Created; got != total {
		t.Errorf("the imports created %d resources between them (%+v, %+v), want %d", got, sums[0], sums[1], total)
	}

	rows, err := app.Store.Query(ctx, `SELECT type, COUNT(*) FROM resource WHERE type <> 'Provenance' GROUP BY type`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for rows.Next() {
		var typ string
		var n int
		if err := rows.Scan(&typ, &n); err != nil {
			t.Fatal(err)
		}
		got[typ] = n
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	for typ, n := range counts {
		if got[typ] != n {
			t.Errorf("%d %s resources, want %d", got[typ], typ, n)
		}
	}
	// Every input resource is mapped once, to the id it came with (the
	// database had no other source to clash with).
	var mapped, same int
	if err := app.Store.QueryRow(ctx, `SELECT COUNT(*), COALESCE(SUM(CASE WHEN local_id = source_id THEN 1 ELSE 0 END), 0) FROM import_identity WHERE source = ?`, source).Scan(&mapped, &same); err != nil {
		t.Fatal(err)
	}
	if mapped != total || same != total {
		t.Errorf("%d identity map entries, %d to the same id, want %d", mapped, same, total)
	}
	checkRefTargets(t, app.Store)
	for i, in := range [][]byte{a, b} {
		sum, err := importOne(in, "again.ndjson")
		if err != nil {
			t.Fatalf("import %d again: %v", i, err)
		}
		if sum.Created != 0 || sum.Rejected != 0 {
			t.Errorf("import %d again: %+v, want nothing created", i, sum)
		}
	}
	var n int
	if err := app.Store.QueryRow(ctx, `SELECT COUNT(*) FROM resource WHERE type <> 'Provenance'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != total {
		t.Errorf("%d resources after importing again, want %d", n, total)
	}
	if t.Failed() {
		t.Logf("summaries: %+v %+v", sums[0], sums[1])
	}
}
