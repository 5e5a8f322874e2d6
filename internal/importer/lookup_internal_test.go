package importer

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/store"
	"github.com/phr-project/phr/internal/store/sqldb"
	"github.com/phr-project/phr/internal/store/storetest"
)

// lookupRows is the number of rows of one type (and source) in each
// table of the lookup tests: enough that a scan of them shows in a plan.
const lookupRows = 3000

// fillLookupTables writes lookupRows resources of one type with their
// identity map entries, digests and identifiers, in one statement per
// table and without analyzing them (as during an import on a server whose
// autovacuum is off).
func fillLookupTables(t *testing.T, db *sqldb.DB) {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	for i := 1; i <= lookupRows; i++ {
		if i > 1 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%d", i)
	}
	vals := func(f string) string {
		var s strings.Builder
		for i := 1; i <= lookupRows; i++ {
			if i > 1 {
				s.WriteString(",")
			}
			s.WriteString(strings.ReplaceAll(f, "#", fmt.Sprint(i)))
		}
		return s.String()
	}
	for _, q := range []string{
		"INSERT INTO resource (rid, type, id, version, seq, last_updated, deleted) VALUES " + vals("(#, 'Observation', 'o#', 1, #, 1, FALSE)"),
		"INSERT INTO resource_version (seq, rid, type, version, last_updated, deleted, method, json) VALUES " + vals("(#, #, 'Observation', 1, 1, FALSE, 'POST', '{}')"),
		"INSERT INTO import_identity (source, type, source_id, local_id, src_version, src_updated) VALUES " + vals("('s', 'Observation', 'x#', 'o#', '', '')"),
		"INSERT INTO import_seen (source, hash) VALUES " + vals("('s', 'h#')"),
		"INSERT INTO import_identifier (type, system, value, local_id) VALUES " + vals("('Observation', 'sys', 'v#', 'o#')"),
	} {
		if _, err := db.Exec(ctx, q); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
}

// keys returns n keys prefix+i, every 7th of the rows (and one unknown).
func keys(prefix string, n int) []string {
	out := []string{prefix + "unknown"}
	for i := 1; len(out) < n; i += 7 {
		out = append(out, fmt.Sprint(prefix, i))
	}
	return out
}

// TestLookups checks the batched lookups of the importer against known
// rows on each store.
func TestLookups(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			db := storetest.Open(t, d)
			fillLookupTables(t, db)
			imp := &Importer{db: db}
			ctx := context.Background()

			ident := map[string][4]string{}
			if err := imp.lookupIdentity(ctx, "s", "Observation", keys("x", 300), ident); err != nil {
				t.Fatal(err)
			}
			if len(ident) != 299 || ident["Observation/x8"][0] != "o8" {
				t.Errorf("identities: %d, x8 -> %v", len(ident), ident["Observation/x8"])
			}
			ex := map[string]bool{}
			if err := imp.existing(ctx, "Observation", keys("o", 300), ex); err != nil {
				t.Fatal(err)
			}
			if len(ex) != 299 || !ex["Observation/o15"] {
				t.Errorf("existing: %d", len(ex))
			}
			cur := map[string]*store.Resource{}
			if err := imp.currentVersions(ctx, "Observation", keys("o", 300), cur); err != nil {
				t.Fatal(err)
			}
			if c := cur["Observation/o22"]; len(cur) != 299 || c == nil || c.Seq != 22 || string(c.JSON) != "{}" {
				t.Errorf("current versions: %d, o22 = %+v", len(cur), c)
			}
			seen := map[string]bool{}
			if err := imp.seenHashes(ctx, "s", keys("h", 300), seen); err != nil {
				t.Fatal(err)
			}
			if len(seen) != 299 || !seen["h29"] {
				t.Errorf("seen: %d", len(seen))
			}
			var ik []identKey
			for _, v := range keys("v", 300) {
				ik = append(ik, identKey{"Observation", "sys", v})
			}
			matches := map[identKey][]string{}
			if err := imp.identifierMatchesAll(ctx, ik, matches); err != nil {
				t.Fatal(err)
			}
			if m := matches[identKey{"Observation", "sys", "v36"}]; len(matches) != 299 || len(m) != 1 || m[0] != "o36" {
				t.Errorf("identifier matches: %d, v36 -> %v", len(matches), m)
			}
			if got, err := imp.identifiersOf(ctx, "Observation", "o43"); err != nil || len(got) != 1 || got[0] != [2]string{"sys", "v43"} {
				t.Errorf("identifiers of o43: %v %v", got, err)
			}
			var pairs [][2]string
			for _, id := range keys("o", 300) {
				pairs = append(pairs, [2]string{"Observation", id})
			}
			all, err := imp.identifiersOfAll(ctx, append(pairs, [2]string{"Patient", "o43"}))
			if got := all[[2]string{"Observation", "o43"}]; err != nil || len(all) != 299 || len(got) != 1 || got[0] != [2]string{"sys", "v43"} {
				t.Errorf("identifiers of all: %v %d, o43 -> %v", err, len(all), got)
			}
		})
	}
}

// TestLookupPlans checks that each PostgreSQL lookup probes the index once
// per key, in the generic plan a prepared statement ends up with and
// before the tables have any statistics: "col = ANY($1)" there scanned
// every row of the type, comparing each with the whole array, so that
// an import's lookups cost grew with the square of its size (issue 5).
func TestLookupPlans(t *testing.T) {
	db := storetest.Open(t, "postgres")
	ctx := context.Background()
	fillLookupTables(t, db)
	arr := func(prefix string) string { return "'{" + strings.Join(keys(prefix, 300), ",") + "}'" }
	cases := []struct {
		name, query string
		args        []string
	}{
		{"identity", identityLookup.postgres, []string{arr("x"), "'s'", "'Observation'"}},
		{"existing", existingLookup.postgres, []string{arr("o"), "'Observation'"}},
		{"current", currentLookup.postgres, []string{arr("o"), "'Observation'"}},
		{"versions", versionsLookup.postgres, []string{arr("o"), "'Observation'"}},
		{"seen", seenLookup.postgres, []string{arr("h"), "'s'"}},
		{"identifiers", identifierMatchQuery, []string{"array_fill('Observation'::text, ARRAY[300])", "array_fill('sys'::text, ARRAY[300])", arr("v")}},
		{"identifiers of", identifiersOfAllQuery, []string{"array_fill('Observation'::text, ARRAY[300])", arr("o")}},
	}
	err := db.WriteTx(ctx, func(tx *sqldb.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL plan_cache_mode = force_generic_plan"); err != nil {
			return err
		}
		for i, c := range cases {
			name := fmt.Sprintf("lookup_plan_%d", i)
			if _, err := tx.Exec(ctx, "PREPARE "+name+" AS "+db.Rebind(c.query)); err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) EXECUTE "+name+"("+strings.Join(c.args, ", ")+")")
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			var plan []string
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					rows.Close()
					return err
				}
				plan = append(plan, line)
			}
			rows.Close()
			text := strings.Join(plan, "\n")
			if strings.Contains(text, "Rows Removed by Filter") || strings.Contains(text, "Seq Scan") || strings.Contains(text, "Hash") {
				t.Errorf("%s: the plan reads rows beyond the keys':\n%s", c.name, text)
			}
			if !strings.Contains(text, "Index Cond") || !strings.Contains(text, "q.") {
				t.Errorf("%s: the plan does not probe the index by key:\n%s", c.name, text)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestIdentifiersOfPlan: reading a local resource's recorded identifiers
// probes an index by (type, local_id) on both stores rather than reading
// every identifier row of the type.
func TestIdentifiersOfPlan(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			db := storetest.Open(t, d)
			fillLookupTables(t, db)
			ctx := context.Background()
			explain := "EXPLAIN QUERY PLAN "
			if d == "postgres" {
				explain = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) "
			}
			rows, err := db.QueryDynamic(ctx, explain+identifiersOfQuery, "Observation", "o43")
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				// PostgreSQL: one text line; SQLite: id, parent, unused, detail.
				var line string
				var id, parent, unused int
				dest := []any{&id, &parent, &unused, &line}
				if d == "postgres" {
					dest = dest[3:]
				}
				if err := rows.Scan(dest...); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, line)
			}
			text := strings.Join(plan, "\n")
			if !strings.Contains(text, "import_identifier_local") || strings.Contains(text, "Rows Removed by Filter") {
				t.Errorf("the plan does not probe import_identifier_local by key:\n%s", text)
			}
		})
	}
}
