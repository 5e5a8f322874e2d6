package sqldb_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"math"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/store"
	"github.com/phr-project/phr/internal/store/sqldb"
	"github.com/phr-project/phr/internal/store/storetest"
)

// openUnmigrated opens an empty store of dialect d without migrating it.
func openUnmigrated(t *testing.T, d string) *sqldb.DB {
	t.Helper()
	w, dialect := openWritePool(t, d)
	if dialect == sqldb.SQLite {
		w.SetMaxOpenConns(1)
	}
	db := sqldb.New(sqldb.Options{Dialect: dialect, Write: w})
	t.Cleanup(func() { db.Close() })
	return db
}

// openWritePool opens the connection pool of an empty database of dialect
// d (a new PostgreSQL database, or a SQLite file in WAL mode).
func openWritePool(t *testing.T, d string) (*sql.DB, sqldb.Dialect) {
	t.Helper()
	var (
		w       *sql.DB
		err     error
		dialect = sqldb.SQLite
	)
	if d == "postgres" {
		dialect = sqldb.Postgres
		w, err = sql.Open("pgx", storetest.NewPostgresURL(t))
	} else {
		// the sqlite driver is registered by the sqlite store, which storetest imports
		w, err = sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "phr.db")+"?_pragma=journal_mode(wal)")
	}
	if err != nil {
		t.Fatal(err)
	}
	return w, dialect
}

// migratedFrom opens an empty store of dialect d with the schema before
// migration stop, runs the statements of fixtures on it (rows as that
// schema held them) and applies the remaining migrations.
func migratedFrom(t *testing.T, d, stop string, fixtures ...string) *sqldb.DB {
	t.Helper()
	ctx := context.Background()
	db := openUnmigrated(t, d)
	if err := db.MigrateBefore(ctx, stop); err != nil {
		t.Fatal(err)
	}
	for _, q := range fixtures {
		if _, err := db.Exec(ctx, q); err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
	}
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return db
}

// oldComposite is a composite entry's parts as stored before the compact
// form: encoding/json's defaults, every member present.
var oldComposite = []index.CompositePart{
	{Token: &index.Token{System: "http://loinc.org", Code: "8480-6"}},
	{Quantity: &index.Quantity{Value: 120, Low: 119.5, High: 120.5, Text: "120", System: "http://unitsofmeasure.org", Code: "mm[Hg]", Unit: "mmHg"}},
}

// TestMigrateSearchParams builds a store of the schema before the
// search_param registry with index rows of every table, migrates it, and
// checks that every row kept its values and now names its parameter by
// the registry's id (a parameter outside the standard ones included).
func TestMigrateSearchParams(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			db := openUnmigrated(t, d)
			if err := db.MigrateBefore(ctx, "0011"); err != nil {
				t.Fatal(err)
			}
			verbose, err := json.Marshal(oldComposite)
			if err != nil {
				t.Fatal(err)
			}
			old := []struct {
				q    string
				args []any
			}{
				{`INSERT INTO resource (rid, type, id, version, seq, last_updated, deleted) VALUES (7, 'Observation', 'o1', 1, 1, 0, FALSE)`, nil},
				{`INSERT INTO idx_token (rid, type, param, system, code, text, type_system, type_code) VALUES (7, 'Observation', 'code', 'http://loinc.org', '2093-3', 'chol', '', '')`, nil},
				{`INSERT INTO idx_token (rid, type, param, system, code, text, type_system, type_code) VALUES (7, 'Observation', 'x-local', '', 'v', '', '', '')`, nil},
				{`INSERT INTO idx_string (rid, type, param, norm, exact) VALUES (7, 'Observation', 'value-string', 'high', 'High')`, nil},
				{`INSERT INTO idx_date (rid, type, param, low, high) VALUES (7, 'Observation', 'date', 10, 20)`, nil},
				{`INSERT INTO idx_ref (rid, type, param, target_type, target_id, version, url, id_system, id_value) VALUES (7, 'Observation', 'subject', 'Patient', 'p1', '', '', '', '')`, nil},
				{`INSERT INTO idx_quantity (rid, type, param, value, low, high, text, system, code, unit) VALUES (7, 'Observation', 'value-quantity', 1.5, 1.45, 1.55, '1.5', 's', 'c', 'u')`, nil},
				{`INSERT INTO idx_number (rid, type, param, value, low, high, text) VALUES (7, 'RiskAssessment', 'probability', 0.25, 0.245, 0.255, '0.25')`, nil},
				{`INSERT INTO idx_uri (rid, type, param, value) VALUES (7, 'ValueSet', 'url', 'http://x/vs')`, nil},
				{`INSERT INTO idx_composite (rid, type, param, parts) VALUES (7, 'Observation', 'component-code-value-quantity', ?)`, []any{string(verbose)}},
			}
			for _, o := range old {
				if _, err := db.Exec(ctx, o.q, o.args...); err != nil {
					t.Fatalf("%s: %v", o.q, err)
				}
			}
			if err := db.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			pid := func(typ, code string) int64 {
				t.Helper()
				id, err := db.ParamID(ctx, typ, code)
				if err != nil || id == 0 {
					t.Fatalf("ParamID(%s, %s) = %d, %v", typ, code, id, err)
				}
				return id
			}
			checks := []struct {
				q    string
				args []any
			}{
				{`SELECT COUNT(*) FROM idx_token WHERE rid = 7 AND pid = ? AND system = 'http://loinc.org' AND code = '2093-3' AND text = 'chol'`, []any{pid("Observation", "code")}},
				{`SELECT COUNT(*) FROM idx_token WHERE rid = 7 AND pid = ? AND code = 'v'`, []any{pid("Observation", "x-local")}},
				{`SELECT COUNT(*) FROM idx_string WHERE rid = 7 AND pid = ? AND norm = 'high' AND exact = 'High'`, []any{pid("Observation", "value-string")}},
				{`SELECT COUNT(*) FROM idx_date WHERE rid = 7 AND pid = ? AND low = 10 AND high = 20`, []any{pid("Observation", "date")}},
				{`SELECT COUNT(*) FROM idx_ref WHERE rid = 7 AND pid = ? AND target_type = 'Patient' AND target_id = 'p1'`, []any{pid("Observation", "subject")}},
				{`SELECT COUNT(*) FROM idx_quantity WHERE rid = 7 AND pid = ? AND value = 1.5 AND text = '1.5' AND unit = 'u'`, []any{pid("Observation", "value-quantity")}},
				{`SELECT COUNT(*) FROM idx_number WHERE rid = 7 AND pid = ? AND value = 0.25 AND text = '0.25'`, []any{pid("RiskAssessment", "probability")}},
				{`SELECT COUNT(*) FROM idx_uri WHERE rid = 7 AND pid = ? AND value = 'http://x/vs'`, []any{pid("ValueSet", "url")}},
				{`SELECT COUNT(*) FROM idx_composite WHERE rid = 7 AND pid = ?`, []any{pid("Observation", "component-code-value-quantity")}},
			}
			for _, c := range checks {
				var n int
				if err := db.QueryRow(ctx, c.q, c.args...).Scan(&n); err != nil || n != 1 {
					t.Errorf("%s: %d rows, %v", c.q, n, err)
				}
			}
			// the verbose parts written before still decode
			var parts string
			if err := db.QueryRow(ctx, `SELECT parts FROM idx_composite WHERE rid = 7`).Scan(&parts); err != nil {
				t.Fatal(err)
			}
			var got []index.CompositePart
			if err := json.Unmarshal([]byte(parts), &got); err != nil || !reflect.DeepEqual(got, oldComposite) {
				t.Errorf("old composite parts decode to %+v, %v", got, err)
			}
			// a standard parameter no row used is in the registry too
			pid("Patient", "birthdate")
		})
	}
}

// TestParamRegistration writes index rows of a parameter the registry does
// not have: the writing transaction registers it, later transactions and
// searches get the same id, and a registration rolled back is forgotten.
func TestParamRegistration(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			db := storetest.Open(t, d)
			put := func(id, param string) *store.Put {
				return &store.Put{
					Resource: store.Resource{Type: "Basic", ID: id, Version: 1, LastUpdated: time.Now(), Method: "POST", JSON: []byte(`{}`)},
					Index:    &index.Entries{Tokens: []index.Token{{Param: param, Code: id}, {Param: "code", Code: "c"}}},
				}
			}
			if id, err := db.ParamID(ctx, "Basic", "x-new"); err != nil || id != 0 {
				t.Fatalf("unregistered parameter: id %d, %v", id, err)
			}
			if err := db.Write(ctx, func(tx store.Tx) error { return tx.Put(ctx, put("b1", "x-new")) }); err != nil {
				t.Fatal(err)
			}
			id, err := db.ParamID(ctx, "Basic", "x-new")
			if err != nil || id == 0 {
				t.Fatalf("registered parameter: id %d, %v", id, err)
			}
			if err := db.Write(ctx, func(tx store.Tx) error { return tx.Put(ctx, put("b2", "x-new")) }); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM idx_token WHERE pid = ?`, id).Scan(&n); err != nil || n != 2 {
				t.Errorf("rows of the new parameter: %d, %v", n, err)
			}
			// a fresh process reads the registration from the database
			var fromDB int64
			if err := db.QueryRow(ctx, `SELECT id FROM search_param WHERE type = 'Basic' AND param = 'x-new'`).Scan(&fromDB); err != nil || fromDB != id {
				t.Errorf("search_param has id %d (%v), the cache %d", fromDB, err, id)
			}
			fail := errors.New("roll back")
			err = db.Write(ctx, func(tx store.Tx) error {
				if err := tx.Put(ctx, put("b3", "x-gone")); err != nil {
					return err
				}
				return fail
			})
			if !errors.Is(err, fail) {
				t.Fatalf("rolled-back write: %v", err)
			}
			if id, err := db.ParamID(ctx, "Basic", "x-gone"); err != nil || id != 0 {
				t.Errorf("rolled-back registration: id %d, %v", id, err)
			}
		})
	}
}

// TestCompositeParts: the compact form decodes to the same parts as the
// verbose one (but for the parts' Param), is much shorter, and carries
// open range ends.
func TestCompositeParts(t *testing.T) {
	compact, err := sqldb.CompositeParts(oldComposite)
	if err != nil {
		t.Fatal(err)
	}
	verbose, _ := json.Marshal(oldComposite)
	var got []index.CompositePart
	if err := json.Unmarshal([]byte(compact), &got); err != nil || !reflect.DeepEqual(got, oldComposite) {
		t.Errorf("compact parts %s decode to %+v, %v", compact, got, err)
	}
	if len(compact)*2 > len(verbose) {
		t.Errorf("compact parts take %d bytes, verbose %d", len(compact), len(verbose))
	}
	// the parts' Param repeats the composite's code, which the row names
	withParam, err := sqldb.CompositeParts([]index.CompositePart{{Token: &index.Token{Param: "code-value-quantity", Code: "x"}}})
	if err != nil || strings.Contains(withParam, "Param") {
		t.Errorf("parts with Param: %s, %v", withParam, err)
	}
	open := []index.CompositePart{{Quantity: &index.Quantity{Value: 5, Low: 5, High: math.Inf(1)}}, {Number: &index.Number{Low: math.Inf(-1)}}}
	s, err := sqldb.CompositeParts(open)
	if err != nil {
		t.Fatalf("open range: %v", err)
	}
	if err := json.Unmarshal([]byte(s), &got); err != nil || got[0].Quantity.High != math.MaxFloat64 || got[1].Number.Low != -math.MaxFloat64 {
		t.Errorf("open range %s decodes to %+v, %v", s, got, err)
	}
}

// TestMigrateAliasRows builds a store of the schema before migration 0012
// with index rows of alias parameters and of their sources, migrates it,
// and checks that the alias rows are gone and every other row is kept.
func TestMigrateAliasRows(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			db := migratedFrom(t, d, "0012",
				`INSERT INTO search_param (id, type, param) VALUES (900001, 'Observation', 'subject'), (900002, 'Observation', 'patient'), (900003, 'Observation', 'code'),
				 (900004, 'Observation', 'combo-code'), (900005, 'Claim', 'patient'), (900006, 'Observation', 'combo-code-value-quantity'), (900007, 'Observation', 'combo-value-quantity')`,
				`INSERT INTO resource (rid, type, id, version, seq, last_updated, deleted) VALUES (7, 'Observation', 'o1', 1, 1, 0, FALSE), (8, 'Claim', 'c1', 1, 2, 0, FALSE)`,
				`INSERT INTO idx_ref (rid, pid, target_type, target_id, version, url, id_system, id_value) VALUES
				 (7, 900001, 'Patient', 'p1', '', '', '', ''), (7, 900002, 'Patient', 'p1', '', '', '', ''), (8, 900005, 'Patient', 'p1', '', '', '', '')`,
				`INSERT INTO idx_token (rid, pid, system, code, text, type_system, type_code) VALUES
				 (7, 900003, 'http://loinc.org', '2093-3', '', '', ''), (7, 900004, 'http://loinc.org', '2093-3', '', '', '')`,
				`INSERT INTO idx_composite (rid, pid, parts) VALUES (7, 900006, '[]')`,
				`INSERT INTO idx_quantity (rid, pid, value, low, high, text, system, code, unit) VALUES (7, 900007, 1, 0.5, 1.5, '1', '', '', '')`,
			)
			for _, c := range []struct {
				q    string
				want int
			}{
				{`SELECT COUNT(*) FROM idx_ref WHERE pid IN (900001, 900005)`, 2},
				{`SELECT COUNT(*) FROM idx_ref WHERE pid = 900002`, 0},
				{`SELECT COUNT(*) FROM idx_token WHERE pid = 900003`, 1},
				{`SELECT COUNT(*) FROM idx_token WHERE pid = 900004`, 0},
				{`SELECT COUNT(*) FROM idx_composite`, 0},
				{`SELECT COUNT(*) FROM idx_quantity`, 0},
				{`SELECT COUNT(*) FROM search_param WHERE id IN (900002, 900004)`, 2},
			} {
				var n int
				if err := db.QueryRow(ctx, c.q).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n != c.want {
					t.Errorf("%s: %d, want %d", c.q, n, c.want)
				}
			}
		})
	}
}

// TestMigrateRefTargetRid builds a store of the schema before 0014 with
// reference rows whose targets exist, do not exist, or have no type and
// id, migrates it, and checks each row's target_rid: the target's rid, or
// 0.
func TestMigrateRefTargetRid(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			db := migratedFrom(t, d, "0014",
				`INSERT INTO search_param (id, type, param) VALUES (900001, 'Observation', 'subject'), (900002, 'Observation', 'performer')`,
				`INSERT INTO resource (rid, type, id, version, seq, last_updated, deleted) VALUES
				 (7, 'Observation', 'o1', 1, 1, 0, FALSE), (8, 'Patient', 'p1', 1, 2, 0, FALSE), (9, 'Practitioner', 'p1', 2, 3, 0, TRUE)`,
				`INSERT INTO idx_ref (rid, pid, target_type, target_id, version, url, id_system, id_value) VALUES
				 (7, 900001, 'Patient', 'p1', '', '', '', ''), (7, 900002, 'Practitioner', 'p1', '2', '', '', ''),
				 (7, 900002, 'Practitioner', 'gone', '', '', '', ''), (7, 900002, '', '', '', '', 'urn:npi', '1')`,
			)
			rows, err := db.Query(ctx, `SELECT target_type, target_id, id_value, target_rid FROM idx_ref ORDER BY target_type, target_id, id_value`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var got []string
			for rows.Next() {
				var typ, id, val string
				var rid int64
				if err := rows.Scan(&typ, &id, &val, &rid); err != nil {
					t.Fatal(err)
				}
				got = append(got, typ+"/"+id+"|"+val+"="+strconv.FormatInt(rid, 10))
			}
			// A deleted target is still the resource named.
			want := []string{"/|1=0", "Patient/p1|=8", "Practitioner/gone|=0", "Practitioner/p1|=9"}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("target_rid after the migration: %v, want %v", got, want)
			}
		})
	}
}
