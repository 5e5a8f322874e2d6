package sqldb_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/store"
	"github.com/phr-project/phr/internal/store/sqldb"
	"github.com/phr-project/phr/internal/store/storetest"
)

// newPuts returns first versions with index entries of every kind,
// repeated patients, a Binary's blob key and an import batch; custom adds
// an entry of a search parameter the registry does not know yet.
func newPuts(custom bool) []*store.Put {
	at := time.Date(2024, 1, 2, 3, 4, 5, 6000, time.UTC)
	var puts []*store.Put
	for i := range 3 {
		id := fmt.Sprintf("o%d", i)
		e := &index.Entries{
			Tokens:     []index.Token{{Param: "code", System: "http://loinc.org", Code: fmt.Sprintf("c%d", i), Text: "glucose"}, {Param: "identifier", System: "urn:s", Code: id, TypeSystem: "ts", TypeCode: "tc"}},
			Strings:    []index.String{{Param: "value-string", Norm: "é x", Exact: "É X"}},
			Dates:      []index.Date{{Param: "date", Low: -5, High: 1 << 40}},
			Refs:       []index.Ref{{Param: "subject", Type: "Patient", ID: "p1"}, {Param: "performer", IdentifierSystem: "urn:x", IdentifierValue: "v"}, {Param: "has-member", URL: "http://x/y", Version: "2"}, {Param: "derived-from", Type: "Observation", ID: "o0"}, {Param: "focus", Type: "Patient", ID: "p0"}},
			Quantities: []index.Quantity{{Param: "value-quantity", Value: 1.5, Low: math.Inf(-1), High: 1.55, Text: "1.5", System: "http://unitsofmeasure.org", Code: "mg", Unit: "mg"}},
			URIs:       []index.URI{{Param: "_profile", Value: "http://example.org/p"}},
			Composites: []index.Composite{{Param: "code-value-quantity", Parts: []index.CompositePart{
				{Token: &index.Token{System: "http://loinc.org", Code: "c"}},
				{Quantity: &index.Quantity{Value: 2, Low: 1.5, High: 2.5, Code: "mg"}},
			}}},
		}
		if custom && i == 1 {
			e.Tokens = append(e.Tokens, index.Token{Param: "x-custom-prepared", Code: "k"})
		}
		puts = append(puts, &store.Put{
			Resource: store.Resource{Type: "Observation", ID: id, Version: 1, LastUpdated: at, Method: "POST", JSON: []byte(`{"resourceType":"Observation","id":"` + id + `"}`)},
			Index:    e, Patients: []string{"p1", "p2", "p1"}, Batch: 7,
		})
	}
	puts = append(puts,
		&store.Put{Resource: store.Resource{Type: "RiskAssessment", ID: "r", Version: 1, LastUpdated: at, Method: "PUT", JSON: []byte(`{"resourceType":"RiskAssessment","id":"r"}`)},
			Index: &index.Entries{Numbers: []index.Number{{Param: "probability", Value: 0.25, Low: 0.245, High: 0.255, Text: "0.25"}}}},
		&store.Put{Resource: store.Resource{Type: "Binary", ID: "b", Version: 1, LastUpdated: at, Method: "POST", JSON: []byte(`{"resourceType":"Binary","id":"b"}`), Blob: "sha256-abc"}},
	)
	return puts
}

// dump returns every row the puts wrote, with rids and sequence numbers
// replaced by the resource's type and id, sorted.
func dump(t *testing.T, db *sqldb.DB) []string {
	t.Helper()
	ctx := context.Background()
	queries := []string{
		`SELECT r.type, r.id, r.version, r.last_updated, r.deleted, v.version, v.type, v.last_updated, v.deleted, v.method, COALESCE(v.batch, -1), COALESCE(v.blob, '<null>'), v.json
			FROM resource r JOIN resource_version v ON v.seq = r.seq AND v.rid = r.rid`,
		`SELECT 'compartment', r.type, r.id, c.patient FROM compartment c JOIN resource r ON r.rid = c.rid`,
		`SELECT 'token', r.type, r.id, p.param, x.system, x.code, x.text, x.type_system, x.type_code FROM idx_token x JOIN resource r ON r.rid = x.rid JOIN search_param p ON p.id = x.pid`,
		`SELECT 'string', r.type, r.id, p.param, x.norm, x.exact FROM idx_string x JOIN resource r ON r.rid = x.rid JOIN search_param p ON p.id = x.pid`,
		`SELECT 'date', r.type, r.id, p.param, x.low, x.high FROM idx_date x JOIN resource r ON r.rid = x.rid JOIN search_param p ON p.id = x.pid`,
		`SELECT 'ref', r.type, r.id, p.param, x.target_type, x.target_id, x.version, x.url, x.id_system, x.id_value, COALESCE((SELECT t.type || '/' || t.id FROM resource t WHERE t.rid = x.target_rid), '-') FROM idx_ref x JOIN resource r ON r.rid = x.rid JOIN search_param p ON p.id = x.pid`,
		`SELECT 'quantity', r.type, r.id, p.param, x.value, x.low, x.high, x.text, x.system, x.code, x.unit FROM idx_quantity x JOIN resource r ON r.rid = x.rid JOIN search_param p ON p.id = x.pid`,
		`SELECT 'number', r.type, r.id, p.param, x.value, x.low, x.high, x.text FROM idx_number x JOIN resource r ON r.rid = x.rid JOIN search_param p ON p.id = x.pid`,
		`SELECT 'uri', r.type, r.id, p.param, x.value FROM idx_uri x JOIN resource r ON r.rid = x.rid JOIN search_param p ON p.id = x.pid`,
		`SELECT 'composite', r.type, r.id, p.param, x.parts FROM idx_composite x JOIN resource r ON r.rid = x.rid JOIN search_param p ON p.id = x.pid`,
	}
	var out []string
	for _, q := range queries {
		rows, err := db.Query(ctx, q)
		if err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			parts := make([]string, len(vals))
			for i, v := range vals {
				if b, ok := v.([]byte); ok {
					v = string(b)
				}
				parts[i] = fmt.Sprint(v)
			}
			out = append(out, strings.Join(parts, "|"))
		}
		rows.Close()
	}
	slices.Sort(out)
	return out
}

// existing writes Patient/p0, which newPuts' resources refer to, and
// Patient/p9, which shifts the ids of resources written after it.
func existing(ctx context.Context, t *testing.T, db *sqldb.DB, id string) {
	t.Helper()
	p := &store.Put{Resource: store.Resource{Type: "Patient", ID: id, Version: 1, LastUpdated: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), Method: "POST", JSON: []byte(`{"resourceType":"Patient","id":"` + id + `"}`)}}
	if err := db.WriteTx(ctx, func(tx *sqldb.Tx) error { return tx.Put(ctx, p) }); err != nil {
		t.Fatal(err)
	}
}

// TestPutNewPrepared checks that PrepareNew and PutNewPrepared write the
// very rows PutNew writes, with and without a search parameter met for
// the first time, and that statements added to the batch run in its
// transaction. On SQLite the batch is sent in a transaction that rolls
// back first, then in one that commits with other ids: the rows it built
// take the ids of the second.
func TestPutNewPrepared(t *testing.T) {
	ctx := context.Background()
	for _, d := range storetest.Dialects() {
		for _, custom := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/custom=%v", d, custom), func(t *testing.T) {
				ref := storetest.Open(t, d)
				existing(ctx, t, ref, "p0")
				existing(ctx, t, ref, "p9")
				if err := ref.WriteTx(ctx, func(tx *sqldb.Tx) error { return tx.PutNew(ctx, newPuts(custom)) }); err != nil {
					t.Fatal(err)
				}
				db := storetest.Open(t, d)
				existing(ctx, t, db, "p0")
				puts := newPuts(custom)
				b, err := db.PrepareNew(ctx, puts)
				if err != nil {
					t.Fatal(err)
				}
				wantEncoded := d == "postgres" && !custom
				if b.Encoded() != wantEncoded {
					t.Fatalf("Encoded() = %v, want %v", b.Encoded(), wantEncoded)
				}
				if wantBuilt := d == "sqlite" && !custom; b.Built() != wantBuilt {
					t.Fatalf("Built() = %v, want %v", b.Built(), wantBuilt)
				}
				if d == "sqlite" {
					rollback := errors.New("rolled back")
					if err := db.WriteTx(ctx, func(tx *sqldb.Tx) error {
						if err := tx.PutNewPrepared(ctx, b); err != nil {
							return err
						}
						return rollback
					}); !errors.Is(err, rollback) {
						t.Fatalf("first transaction: %v", err)
					}
					if n := len(dump(t, db)); n != 1 {
						t.Fatalf("%d rows after the rollback, want Patient/p0's 1", n)
					}
				}
				existing(ctx, t, db, "p9")
				if b.Encoded() {
					col := sqldb.NewArrayCol("text")
					col.Text("k1")
					col.Text("k2")
					b.Add(sqldb.ArrayInsert("kv", []string{"key"}, []*sqldb.ArrayCol{col}, " ON CONFLICT DO NOTHING"))
					// kv.value is NOT NULL: the added statement fails
					// unless it fills it, and the batch with it.
					b.Seal()
				}
				err = db.WriteTx(ctx, func(tx *sqldb.Tx) error { return tx.PutNewPrepared(ctx, b) })
				if b.Encoded() {
					if err == nil {
						t.Fatal("a failing added statement did not fail the batch")
					}
					if n := len(dump(t, db)); n != 2 {
						t.Fatalf("%d rows after the failed batch, want the Patients' 2", n)
					}
					// A batch released unsent: its buffers, holding other
					// rows, serve the next batch (whose rows are compared
					// below), and it cannot be sent.
					unsent, perr := db.PrepareNew(ctx, newPuts(custom)[:1])
					if perr != nil {
						t.Fatal(perr)
					}
					unsent.Release()
					if err := db.WriteTx(ctx, func(tx *sqldb.Tx) error { return tx.PutNewPrepared(ctx, unsent) }); err == nil {
						t.Fatal("a released batch was written")
					}
					puts = newPuts(custom)
					if b, err = db.PrepareNew(ctx, puts); err != nil {
						t.Fatal(err)
					}
					v := sqldb.NewArrayCol("text")
					v.Text("1")
					k := sqldb.NewArrayCol("text")
					k.Text("prepared-key")
					ins := sqldb.ArrayInsert("kv", []string{"key", "value"}, []*sqldb.ArrayCol{k, v}, "")
					ins.SQL = strings.Replace(ins.SQL, "SELECT * FROM", "SELECT k, convert_to(v, 'UTF8') FROM", 1) + " AS u(k, v)"
					b.Add(ins)
					// COPYs with a fallback: c3's goes in, then c1's meets
					// the row c1; both are rolled back and both fallbacks
					// run, and the batch commits.
					if _, err := db.Exec(ctx, `INSERT INTO kv (key, value) VALUES ('c1', '0')`); err != nil {
						t.Fatal(err)
					}
					for _, rows := range [][][]any{{{"c3", "3"}}, {{"c1", "1"}, {"c2", "2"}}} {
						cp, err := sqldb.TextCopy("kv", []string{"key", "value"}, rows, func() sqldb.RawStmt {
							k, v := sqldb.NewArrayCol("text"), sqldb.NewArrayCol("text")
							for _, r := range rows {
								k.Text(r[0].(string))
								v.Text(r[1].(string))
							}
							st := sqldb.ArrayInsert("kv", []string{"key", "value"}, []*sqldb.ArrayCol{k, v}, "")
							st.SQL = strings.Replace(st.SQL, "SELECT * FROM", "SELECT k, convert_to(v, 'UTF8') FROM", 1) + " AS u(k, v) ON CONFLICT DO NOTHING"
							return st
						})
						if err != nil {
							t.Fatal(err)
						}
						b.AddCopy(cp)
					}
					err = db.WriteTx(ctx, func(tx *sqldb.Tx) error { return tx.PutNewPrepared(ctx, b) })
				}
				if err != nil {
					t.Fatal(err)
				}
				want, got := dump(t, ref), dump(t, db)
				if !slices.Equal(got, want) {
					t.Errorf("rows differ:\ngot  %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
				}
				if len(want) < 20 {
					t.Errorf("only %d rows written", len(want))
				}
				// Rows with their sparse columns empty (sqldb's sparseCols)
				// and rows with them set.
				for _, row := range []string{
					"token|Observation|o0|code|http://loinc.org|c0|glucose||",
					"token|Observation|o0|identifier|urn:s|o0||ts|tc",
					"ref|Observation|o0|subject|Patient|p1|||||-",
					"ref|Observation|o0|has-member|||2|http://x/y|||-",
					"ref|Observation|o0|performer|||||urn:x|v|-",
				} {
					if !slices.Contains(got, row) {
						t.Errorf("no row %s:\n%s", row, strings.Join(got, "\n"))
					}
				}
				// A reference to a resource of the batch names its rid,
				// and so does one to a resource written before.
				for _, want := range [][2]string{{"ref|Observation|o1|derived-from|", "|Observation/o0"}, {"ref|Observation|o2|focus|", "|Patient/p0"}} {
					if !slices.ContainsFunc(got, func(s string) bool {
						return strings.HasPrefix(s, want[0]) && strings.HasSuffix(s, want[1])
					}) {
						t.Errorf("no %s...%s:\n%s", want[0], want[1], strings.Join(got, "\n"))
					}
				}
				for _, p := range puts {
					if p.Seq == 0 {
						t.Errorf("%s/%s: no sequence number", p.Type, p.ID)
					}
				}
				if b.Encoded() {
					var v []byte
					if err := db.QueryRow(ctx, `SELECT value FROM kv WHERE key = 'prepared-key'`).Scan(&v); err != nil || string(v) != "1" {
						t.Errorf("added statement: %q %v", v, err)
					}
					for key, want := range map[string]string{"c1": "0", "c2": "2", "c3": "3"} {
						if err := db.QueryRow(ctx, `SELECT value FROM kv WHERE key = ?`, key).Scan(&v); err != nil || string(v) != want {
							t.Errorf("guarded insert: %s = %q %v, want %q", key, v, err, want)
						}
					}
				}
				// Written again: the resources exist, a conflict.
				again, err := db.PrepareNew(ctx, newPuts(custom)[:1])
				if err != nil {
					t.Fatal(err)
				}
				err = db.WriteTx(ctx, func(tx *sqldb.Tx) error { return tx.PutNewPrepared(ctx, again) })
				if !errors.Is(err, store.ErrConflict) {
					t.Errorf("existing resource written again: %v, want a conflict", err)
				}
			})
		}
	}
}

// TestPrepareNewAfter checks that a batch prepared while an earlier one
// is still unwritten names the earlier batch's resources by rid when it
// is told about it, and by type and id (target_rid 0) when not.
func TestPrepareNewAfter(t *testing.T) {
	if !slices.Contains(storetest.Dialects(), "postgres") {
		t.Skip("PrepareNew encodes batches on PostgreSQL only; set PHR_TEST_POSTGRES_URL")
	}
	ctx := context.Background()
	at := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	put := func(typ, id string, refs ...index.Ref) *store.Put {
		return &store.Put{Resource: store.Resource{Type: typ, ID: id, Version: 1, LastUpdated: at, Method: "POST", JSON: []byte(`{"resourceType":"` + typ + `","id":"` + id + `"}`)},
			Index: &index.Entries{Refs: refs}}
	}
	for _, told := range []bool{true, false} {
		t.Run(fmt.Sprintf("told=%v", told), func(t *testing.T) {
			db := storetest.Open(t, "postgres")
			first, err := db.PrepareNew(ctx, []*store.Put{put("Patient", "p1")})
			if err != nil {
				t.Fatal(err)
			}
			var after []*sqldb.NewBatch
			if told {
				after = append(after, first)
			}
			second, err := db.PrepareNew(ctx, []*store.Put{put("Observation", "o1", index.Ref{Param: "subject", Type: "Patient", ID: "p1"})}, after...)
			if err != nil {
				t.Fatal(err)
			}
			if !first.Encoded() || !second.Encoded() {
				t.Fatal("batches not encoded")
			}
			for _, b := range []*sqldb.NewBatch{first, second} {
				if err := db.WriteTx(ctx, func(tx *sqldb.Tx) error { return tx.PutNewPrepared(ctx, b) }); err != nil {
					t.Fatal(err)
				}
			}
			var target, rid int64
			if err := db.QueryRow(ctx, `SELECT x.target_rid, (SELECT rid FROM resource WHERE type = 'Patient' AND id = 'p1') FROM idx_ref x`).Scan(&target, &rid); err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int64{true: rid, false: 0}[told]; target != want {
				t.Errorf("target_rid %d, want %d (Patient/p1 is %d)", target, want, rid)
			}
		})
	}
}

// TestSparseIndexRows writes enough token and reference rows for the
// SQLite writer to send those with empty sparse columns (sqldb's
// sparseCols) in statements of their own, mixed with rows that have them
// set, through PutNew and through a prepared batch, and checks every row
// by value.
func TestSparseIndexRows(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	puts := func() []*store.Put {
		var out []*store.Put
		for i := range 150 {
			id := fmt.Sprintf("s%03d", i)
			e := &index.Entries{
				Tokens: []index.Token{{Param: "code", System: "http://loinc.org", Code: id, Text: "t" + id}},
				Refs:   []index.Ref{{Param: "subject", Type: "Patient", ID: "p" + id}},
			}
			if i%3 == 0 {
				e.Tokens = append(e.Tokens, index.Token{Param: "identifier", System: "urn:s", Code: id, TypeSystem: "ts", TypeCode: "tc" + id})
				e.Refs = append(e.Refs, index.Ref{Param: "performer", IdentifierSystem: "urn:x", IdentifierValue: "v" + id}, index.Ref{Param: "has-member", URL: "http://x/" + id})
			}
			out = append(out, &store.Put{Resource: store.Resource{Type: "Observation", ID: id, Version: 1, LastUpdated: at, Method: "POST", JSON: []byte(`{"resourceType":"Observation","id":"` + id + `"}`)}, Index: e})
		}
		return out
	}
	var want []string
	for i := range 150 {
		id := fmt.Sprintf("s%03d", i)
		want = append(want,
			"token|Observation|"+id+"|code|http://loinc.org|"+id+"|t"+id+"||",
			"ref|Observation|"+id+"|subject|Patient|p"+id+"|||||-")
		if i%3 == 0 {
			want = append(want,
				"token|Observation|"+id+"|identifier|urn:s|"+id+"||ts|tc"+id,
				"ref|Observation|"+id+"|performer|||||urn:x|v"+id+"|-",
				"ref|Observation|"+id+"|has-member||||http://x/"+id+"|||-")
		}
	}
	for _, d := range storetest.Dialects() {
		for _, prepared := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/prepared=%v", d, prepared), func(t *testing.T) {
				db := storetest.Open(t, d)
				ps := puts()
				var err error
				if prepared {
					var b *sqldb.NewBatch
					if b, err = db.PrepareNew(ctx, ps); err == nil {
						err = db.WriteTx(ctx, func(tx *sqldb.Tx) error { return tx.PutNewPrepared(ctx, b) })
					}
				} else {
					err = db.WriteTx(ctx, func(tx *sqldb.Tx) error { return tx.PutNew(ctx, ps) })
				}
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, row := range dump(t, db) {
					if strings.HasPrefix(row, "token|") || strings.HasPrefix(row, "ref|") {
						got = append(got, row)
					}
				}
				w := slices.Clone(want)
				slices.Sort(w)
				if !slices.Equal(got, w) {
					t.Errorf("%d rows, want %d:\ngot  %s\nwant %s", len(got), len(w), strings.Join(got, "\n     "), strings.Join(w, "\n     "))
				}
			})
		}
	}
}
