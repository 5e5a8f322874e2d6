package bulk_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/store/storetest"
)

// TestBinariesIndexedAfterUpgrade: a patient's export finds the Binaries
// whose securityContext names their record through the index
// (index.SecurityContextParam). A store from before that index has no
// such rows; the server's start (records.IndexSecurityContexts) adds
// them once, and until it has, the export would miss those Binaries.
func TestBinariesIndexedAfterUpgrade(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			e := start(t, d, nil)
			ctx := context.Background()
			e.put("Patient", "alice", map[string]any{"gender": "female"})
			e.put("Observation", "o1", map[string]any{"status": "final", "code": map[string]any{"text": "scan"}, "subject": map[string]any{"reference": "Patient/alice"}})
			e.put("Binary", "upload", map[string]any{"contentType": "text/plain", "securityContext": map[string]any{"reference": "Patient/alice"}, "data": "U0NBTg=="})
			e.put("Binary", "scan", map[string]any{"contentType": "text/plain", "securityContext": map[string]any{"reference": e.s.FHIR + "/Observation/o1"}, "data": "U0NBTg=="})
			e.put("Binary", "other", map[string]any{"contentType": "text/plain", "securityContext": map[string]any{"reference": "Patient/bob"}, "data": "Qk9C"})
			alice := e.s.Token("patient/*.cruds", "alice")
			binaries := func() []string {
				t.Helper()
				var out []string
				for _, id := range e.ids(alice, e.wait(alice, e.kick(alice, "Patient/$export"))) {
					if strings.HasPrefix(id, "Binary/") {
						out = append(out, id)
					}
				}
				slices.Sort(out)
				return out
			}
			want := []string{"Binary/scan", "Binary/upload"}
			if got := binaries(); !slices.Equal(got, want) {
				t.Fatalf("alice's export: %v, want %v", got, want)
			}
			// The store as it was before the index had the parameter.
			db := e.s.App.Store
			for _, q := range []string{
				`DELETE FROM idx_ref WHERE pid IN (SELECT id FROM search_param WHERE type = 'Binary' AND param = '_securityContext')`,
				`DELETE FROM kv WHERE key = 'index-backfill:Binary._securityContext'`,
			} {
				if _, err := db.Exec(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			if got := binaries(); len(got) != 0 {
				t.Fatalf("alice's export without the index rows: %v, want none (the test would show nothing)", got)
			}
			if err := e.s.App.Records.IndexSecurityContexts(ctx); err != nil {
				t.Fatal(err)
			}
			if got := binaries(); !slices.Equal(got, want) {
				t.Errorf("alice's export after the backfill: %v, want %v", got, want)
			}
			var n int
			if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM kv WHERE key = 'index-backfill:Binary._securityContext'`).Scan(&n); err != nil || n != 1 {
				t.Errorf("the backfill's mark: %d rows (%v), want 1", n, err)
			}
			// Done once: a later start leaves the rows as they are.
			if _, err := db.Exec(ctx, `DELETE FROM idx_ref WHERE pid IN (SELECT id FROM search_param WHERE type = 'Binary' AND param = '_securityContext')`); err != nil {
				t.Fatal(err)
			}
			if err := e.s.App.Records.IndexSecurityContexts(ctx); err != nil {
				t.Fatal(err)
			}
			if got := binaries(); len(got) != 0 {
				t.Errorf("a second backfill ran: %v", got)
			}
		})
	}
}
