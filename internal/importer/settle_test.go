package importer_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/importer"
	"github.com/phr-project/phr/internal/store/storetest"
)

// TestIdentifierMatchAcrossChunks imports one resource per chunk, so that
// each is prepared while the previous one is being written: a business
// identifier carried by the chunk in flight still matches (the next chunk
// waits for it), and one that two committed resources carry already is
// ambiguous whether or not the next chunk waits.
func TestIdentifierMatchAcrossChunks(t *testing.T) {
	prac := func(id string, idents ...string) string {
		var parts []string
		for _, s := range idents {
			sys, val, _ := strings.Cut(s, "|")
			parts = append(parts, fmt.Sprintf(`{"system":%q,"value":%q}`, sys, val))
		}
		return fmt.Sprintf(`{"resourceType":"Practitioner","id":%q,"identifier":[%s],"name":[{"family":%q}]}`, id, strings.Join(parts, ","), id)
	}
	lines := []string{
		// q2 carries q1's only identifier: the same practitioner.
		prac("q1", "urn:v|1"),
		prac("q2", "urn:v|1"),
		// p2 shares urn:z|5 with p1 but not its urn:w licence: separate.
		// p3, p4, p5 then match both: ambiguous, imported separately.
		prac("p1", "urn:z|5", "urn:w|1"),
		prac("p2", "urn:z|5", "urn:w|2"),
		prac("p3", "urn:z|5", "urn:w|3"),
		prac("p4", "urn:z|5", "urn:w|4"),
		prac("p5", "urn:z|5", "urn:w|5"),
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			app := openApp(t, d)
			imp := importer.New(app.Store, app.Records)
			imp.ChunkSize = 1
			ctx := access.With(context.Background(), access.System{Name: "test"})
			var issues []fhir.Issue
			run, err := imp.Begin(ctx, importer.Options{Source: "https://clinic.example/fhir", Report: func(is fhir.Issue) { issues = append(issues, is) }})
			if err != nil {
				t.Fatal(err)
			}
			if err := run.NDJSON(strings.NewReader(strings.Join(lines, "\n")+"\n"), "p.ndjson"); err != nil {
				t.Fatal(err)
			}
			sum, err := run.Finish("done")
			if err != nil {
				t.Fatal(err)
			}
			var n int
			if err := app.Store.QueryRow(ctx, `SELECT COUNT(*) FROM resource WHERE type = 'Practitioner' AND NOT deleted`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 6 {
				t.Errorf("%d practitioners, want 6 (q1 = q2, p1..p5 apart); summary %+v", n, sum)
			}
			ambiguous := 0
			for _, is := range issues {
				if strings.Contains(is.Diagnostics, "match several existing") {
					ambiguous++
				}
			}
			if ambiguous != 3 {
				t.Errorf("%d ambiguous matches reported, want 3 (p3, p4, p5)", ambiguous)
				for _, is := range issues {
					t.Log(is.Severity, is.Diagnostics)
				}
			}
		})
	}
}
