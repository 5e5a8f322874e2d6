package search_test

import (
	"context"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/search"
	"github.com/phr-project/phr/internal/store/sqldb"
	"github.com/phr-project/phr/internal/store/storetest"
)

// fillSQL adds 20,000 resources with index rows of the parameters the
// plan test searches, so that the planners see tables where a scan costs
// far more than an index seek.
var fillSQL = []string{
	`INSERT INTO resource (type, id, version, seq, last_updated, deleted)
	 WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000)
	 SELECT CASE WHEN n % 10 = 0 THEN 'Patient' WHEN n % 10 = 1 THEN 'ValueSet' ELSE 'Observation' END, 'fill' || n, 1, 0, n, FALSE FROM g`,
	`INSERT INTO idx_token (rid, pid, system, code, text, type_system, type_code)
	 SELECT r.rid, p.id, 'urn:s', 'c' || (r.rid % 997), '', '', '' FROM resource r JOIN search_param p ON p.type = r.type
	 WHERE r.id LIKE 'fill%' AND p.param IN ('code', 'component-code', 'category', 'status', 'identifier', '_tag', 'gender')`,
	// Most references name a target that exists (target_rid), one in 50
	// one that did not when it was written (0); the rid values stand
	// for 500 patients outside the filled ids.
	`INSERT INTO idx_ref (rid, pid, target_type, target_id, version, url, id_system, id_value, target_rid)
	 SELECT r.rid, p.id, 'Patient', 'pp' || (r.rid % 500), '', '', '', '', CASE WHEN r.rid % 50 = 0 THEN 0 ELSE 1000000 + r.rid % 500 END FROM resource r JOIN search_param p ON p.type = r.type
	 WHERE r.id LIKE 'fill%' AND p.param IN ('subject', 'performer', 'general-practitioner')`,
	`INSERT INTO idx_date (rid, pid, low, high)
	 SELECT r.rid, p.id, r.rid * 1000, r.rid * 1000 + 999 FROM resource r JOIN search_param p ON p.type = r.type
	 WHERE r.id LIKE 'fill%' AND p.param IN ('date', 'birthdate')`,
	`INSERT INTO idx_quantity (rid, pid, value, low, high, text, system, code, unit)
	 SELECT r.rid, p.id, r.rid % 300, r.rid % 300, r.rid % 300 + 1, '', 'http://unitsofmeasure.org', 'mg', 'mg' FROM resource r JOIN search_param p ON p.type = r.type
	 WHERE r.id LIKE 'fill%' AND p.param IN ('value-quantity', 'component-value-quantity')`,
	`INSERT INTO idx_string (rid, pid, norm, exact)
	 SELECT r.rid, p.id, 'n' || (r.rid % 1000), 'N' FROM resource r JOIN search_param p ON p.type = r.type
	 WHERE r.id LIKE 'fill%' AND p.param IN ('name', 'family', 'given')`,
	`INSERT INTO idx_uri (rid, pid, value) SELECT r.rid, p.id, 'http://x.org/' || r.rid FROM resource r JOIN search_param p ON p.type = r.type
	 WHERE r.id LIKE 'fill%' AND p.param IN ('url')`,
}

// TestSearchPlans checks the plans of the main search shapes on both
// stores: no index table is read whole (SQLite: SCAN of one; PostgreSQL:
// a Seq Scan), and each shape reads the index it is built for, seeking by
// the parameter's id where the shape selects by parameter. On PostgreSQL
// both the plan of the statement as run (unnamed, planned with its
// values) and the generic plan of a prepared statement are checked.
func TestSearchPlans(t *testing.T) {
	cases := []struct {
		name, typ, query string
		// want: the plan uses one of these indexes, with a key condition
		// on pid when pid is set.
		want []string
		pid  bool
		// rangeOnly marks range conditions (date, quantity) that no index
		// serves by value: PostgreSQL may rightly read the parameter's
		// rows whole for a hash semi-join, so only SQLite's per-candidate
		// probe is checked.
		rangeOnly bool
	}{
		{"token", "Observation", "code=http://loinc.org|2093-3", []string{"idx_token_code"}, true, false},
		{"token-code-only", "Observation", "code=2093-3", []string{"idx_token_code"}, true, false},
		{"reference", "Observation", "subject=Patient/p1", []string{"idx_ref_target"}, true, false},
		{"string", "Patient", "name=smi", []string{"idx_string_norm"}, true, false},
		{"uri", "ValueSet", "url=http://example.org/fhir/ValueSet/a/b", []string{"idx_uri_value"}, true, false},
		{"date", "Observation", "date=ge2020-01-01", []string{"idx_date_rid", "idx_date_low"}, false, true},
		{"quantity", "Observation", "value-quantity=gt100", []string{"idx_quantity_rid", "idx_quantity_value"}, false, true},
		{"token-and-reference", "Observation", "subject=Patient/p1&code=http://loinc.org|2093-3", []string{"idx_token_code"}, true, false},
		// Several codes: the token index is sought by pid and code, not
		// read for every row of the parameter. Checked on SQLite only
		// (rangeOnly), where the OR of the values kept the seek at pid;
		// PostgreSQL's plan is checked by the other token cases.
		{"reference-and-codes", "Observation", "subject=Patient/pp1&code=urn:s|c1,urn:s|c2,urn:s|c3,urn:s|c4,urn:s|c5,urn:s|c6,urn:s|c7,urn:s|c8,urn:s|c9,urn:s|c10", []string{"idx_token_code (pid=? AND code=?"}, true, true},
		{"sort-by-date", "Observation", "code=http://loinc.org|2093-3&_sort=-date", []string{"idx_date_rid", "idx_date_low"}, false, false},
		{"chain", "Observation", "subject:Patient.name=smith", []string{"idx_ref_rid", "idx_ref_target"}, false, false},
		// _has may start from the inner clause and probe idx_ref by rid
		{"has", "Patient", "_has:Observation:subject:code=2093-3", []string{"idx_ref_target", "idx_ref_rid"}, false, false},
		{"missing", "Observation", "value-quantity:missing=true", []string{"idx_quantity_rid", "idx_quantity_value"}, false, false},
		{"id", "Patient", "_id=p1", []string{"sqlite_autoindex_resource_1", "resource_type_id_key"}, false, false},
		// aliases (index.AliasOf) read their sources' rows: the same
		// indexes, sought by the sources' ids (and the target type)
		{"alias-token", "Observation", "combo-code=urn:s|c1", []string{"idx_token_code"}, true, false},
		{"alias-reference", "Observation", "patient=Patient/pp1", []string{"idx_ref_target"}, true, false},
		{"alias-token-and-reference", "Observation", "patient=Patient/pp1&combo-code=urn:s|c1", []string{"idx_token_code"}, true, false},
		{"alias-chain", "Observation", "patient.name=smith", []string{"idx_ref_rid", "idx_ref_target"}, false, false},
		{"alias-has", "Patient", "_has:Observation:patient:code=c1", []string{"idx_ref_target", "idx_ref_rid"}, false, false},
		{"alias-missing", "Observation", "combo-value-quantity:missing=true", []string{"idx_quantity_rid", "idx_quantity_value"}, false, false},
		{"alias-quantity", "Observation", "combo-value-quantity=gt100", []string{"idx_quantity_rid", "idx_quantity_value"}, false, true},
		{"alias-sort", "Observation", "patient=Patient/pp1&_sort=combo-code", []string{"idx_token_rid", "idx_token_code"}, false, false},
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			f := setup(t, d)
			db := f.s.App.Store
			ctx := context.Background()
			for _, q := range fillSQL {
				if _, err := db.Exec(ctx, q); err != nil {
					t.Fatalf("fill: %v\n%s", err, q)
				}
			}
			if d == "postgres" {
				if _, err := db.Exec(ctx, "ANALYZE"); err != nil {
					t.Fatal(err)
				}
			}
			eng := search.New(db, f.s.App.Records, f.s.FHIR)
			for i, c := range cases {
				v, err := url.ParseQuery(c.query)
				if err != nil {
					t.Fatal(err)
				}
				q, args, err := eng.PageSQL(ctx, c.typ, v)
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				plans := map[string]string{}
				if d == "sqlite" {
					plans["plan"] = sqlitePlan(t, db, q, args)
				} else {
					plans["custom plan"] = pgPlan(t, db, q, args)
					plans["generic plan"] = pgGenericPlan(t, db, fmt.Sprintf("plan_%d", i), q, args)
				}
				for kind, plan := range plans {
					if c.rangeOnly && d == "postgres" {
						continue
					}
					t.Logf("%s?%s: %s:\n%s", c.typ, c.query, kind, plan)
					if msg := checkPlan(d, plan, c.want, c.pid); msg != "" {
						t.Errorf("%s %s?%s: %s: %s\n%s\n%s", d, c.typ, c.query, kind, msg, plan, q)
					}
				}
			}
		})
	}
}

var (
	sqliteScan = regexp.MustCompile(`(?m)^\s*SCAN (x\d+|idx_\w+)`)
	pgSeqScan  = regexp.MustCompile(`Seq Scan on idx_`)
)

// checkPlan returns what is wrong with a plan ("" when nothing is).
func checkPlan(dialect, plan string, want []string, pid bool) string {
	if dialect == "sqlite" {
		if m := sqliteScan.FindString(plan); m != "" {
			return "an index table is read whole (" + strings.TrimSpace(m) + ")"
		}
	} else if pgSeqScan.MatchString(plan) {
		return "an index table is read whole (Seq Scan)"
	}
	for _, w := range want {
		for _, line := range planLines(dialect, plan, w) {
			if !pid || strings.Contains(line, "pid=?") || strings.Contains(line, "(pid = ") {
				return ""
			}
		}
	}
	if pid {
		return fmt.Sprintf("no seek by pid on %s", strings.Join(want, " or "))
	}
	return "none of " + strings.Join(want, ", ") + " is used"
}

// planLines returns the lines of a plan that use index idx: SQLite's
// SEARCH line, or PostgreSQL's scan line with its Index Cond.
func planLines(dialect, plan, idx string) []string {
	lines := strings.Split(plan, "\n")
	var out []string
	for i, l := range lines {
		if !strings.Contains(l, idx) {
			continue
		}
		if dialect == "postgres" && i+1 < len(lines) && strings.Contains(lines[i+1], "Cond:") {
			l += " " + strings.TrimSpace(lines[i+1])
		}
		out = append(out, l)
	}
	return out
}

func sqlitePlan(t *testing.T, db *sqldb.DB, q string, args []any) string {
	t.Helper()
	rows, err := db.QueryDynamic(context.Background(), "EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatalf("explain: %v\n%s", err, q)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		out = append(out, detail)
	}
	return strings.Join(out, "\n")
}

func pgPlan(t *testing.T, db *sqldb.DB, q string, args []any) string {
	t.Helper()
	rows, err := db.QueryDynamic(context.Background(), "EXPLAIN (COSTS OFF) "+q, args...)
	if err != nil {
		t.Fatalf("explain: %v\n%s", err, q)
	}
	return collect(t, rows.Next, rows.Scan, rows.Close)
}

// pgGenericPlan prepares q and explains its generic plan, the one a
// prepared statement settles on after five executions.
func pgGenericPlan(t *testing.T, db *sqldb.DB, name, q string, args []any) string {
	t.Helper()
	ctx := context.Background()
	lits := make([]string, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			lits[i] = "'" + strings.ReplaceAll(v, "'", "''") + "'"
		case int64:
			lits[i] = strconv.FormatInt(v, 10)
		case int:
			lits[i] = strconv.Itoa(v)
		case float64:
			if math.IsInf(v, 0) {
				t.Fatalf("argument %d is infinite", i)
			}
			lits[i] = strconv.FormatFloat(v, 'g', -1, 64)
		default:
			t.Fatalf("argument %d: %T has no literal here", i, a)
		}
	}
	var plan string
	err := db.WriteTx(ctx, func(tx *sqldb.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL plan_cache_mode = force_generic_plan"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "PREPARE "+name+" AS "+q); err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
		rows, err := tx.Query(ctx, "EXPLAIN (COSTS OFF) EXECUTE "+name+"("+strings.Join(lits, ", ")+")")
		if err != nil {
			return fmt.Errorf("explain: %w", err)
		}
		plan = collect(t, rows.Next, rows.Scan, rows.Close)
		_, err = tx.Exec(ctx, "DEALLOCATE "+name)
		return err
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, q)
	}
	return plan
}

func collect(t *testing.T, next func() bool, scan func(...any) error, close func() error) string {
	t.Helper()
	defer close()
	var out []string
	for next() {
		var line string
		if err := scan(&line); err != nil {
			t.Fatal(err)
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}
