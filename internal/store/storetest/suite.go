package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/store"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// Run runs the conformance suite against stores made by open.
func Run(t *testing.T, open func(t *testing.T) *sqldb.DB) {
	t.Run("CreateReadUpdate", func(t *testing.T) { testCreateReadUpdate(t, open(t)) })
	t.Run("DeleteAndHistory", func(t *testing.T) { testDeleteAndHistory(t, open(t)) })
	t.Run("Atomic", func(t *testing.T) { testAtomic(t, open(t)) })
	t.Run("ConcurrentUpdates", func(t *testing.T) { testConcurrentUpdates(t, open(t)) })
	t.Run("ConcurrentCreates", func(t *testing.T) { testConcurrentCreates(t, open(t)) })
	t.Run("IndexReplaced", func(t *testing.T) { testIndexReplaced(t, open(t)) })
	t.Run("PutNew", func(t *testing.T) { testPutNew(t, open(t)) })
	t.Run("KV", func(t *testing.T) { testKV(t, open(t)) })
	t.Run("Bulk", func(t *testing.T) { testBulk(t, open(t)) })
	t.Run("ScanReferences", func(t *testing.T) { testScanReferences(t, open(t)) })
}

var t0 = time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)

func put(typ, id string, v int64, body string, at time.Time) *store.Put {
	method := "PUT"
	if v == 1 {
		method = "POST"
	}
	return &store.Put{Resource: store.Resource{Type: typ, ID: id, Version: v, LastUpdated: at, Method: method, JSON: []byte(body)}}
}

// update writes the next version of typ/id.
func update(ctx context.Context, s store.Store, typ, id, body string, at time.Time) (int64, error) {
	var ver int64
	err := s.Write(ctx, func(tx store.Tx) error {
		cur, err := tx.Current(ctx, typ, id)
		next := int64(1)
		if err == nil {
			next = cur.Version + 1
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		ver = next
		return tx.Put(ctx, put(typ, id, next, body, at))
	})
	return ver, err
}

func testCreateReadUpdate(t *testing.T, s *sqldb.DB) {
	ctx := context.Background()
	if _, err := s.Read(ctx, "Patient", "p1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("read of missing resource: %v", err)
	}
	for i := 1; i <= 3; i++ {
		v, err := update(ctx, s, "Patient", "p1", fmt.Sprintf(`{"resourceType":"Patient","id":"p1","n":%d}`, i), t0.Add(time.Duration(i)*time.Second))
		if err != nil || v != int64(i) {
			t.Fatalf("write %d: version %d, %v", i, v, err)
		}
	}
	r, err := s.Read(ctx, "Patient", "p1")
	if err != nil {
		t.Fatal(err)
	}
	if r.Version != 3 || string(r.JSON) != `{"resourceType":"Patient","id":"p1","n":3}` || !r.LastUpdated.Equal(t0.Add(3*time.Second)) || r.Method != "PUT" {
		t.Fatalf("current version: %+v", r)
	}
	v1, err := s.ReadVersion(ctx, "Patient", "p1", 1)
	if err != nil || string(v1.JSON) != `{"resourceType":"Patient","id":"p1","n":1}` || v1.Method != "POST" {
		t.Fatalf("vread 1: %+v %v", v1, err)
	}
	if _, err := s.ReadVersion(ctx, "Patient", "p1", 4); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("vread of a future version: %v", err)
	}
	// A stale version number is a conflict, not an overwrite.
	err = s.Write(ctx, func(tx store.Tx) error {
		return tx.Put(ctx, put("Patient", "p1", 3, `{}`, t0))
	})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale version accepted: %v", err)
	}
	// Creating an existing id as version 1 is a conflict.
	err = s.Write(ctx, func(tx store.Tx) error {
		return tx.Put(ctx, put("Patient", "p1", 1, `{}`, t0))
	})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate create accepted: %v", err)
	}
}

func testDeleteAndHistory(t *testing.T, s *sqldb.DB) {
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := update(ctx, s, "Observation", fmt.Sprint("o", i), `{"resourceType":"Observation"}`, t0.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := update(ctx, s, "Patient", "p", `{"resourceType":"Patient"}`, t0.Add(10*time.Minute)); err != nil {
		t.Fatal(err)
	}
	err := s.Write(ctx, func(tx store.Tx) error {
		cur, err := tx.Current(ctx, "Observation", "o2")
		if err != nil {
			return err
		}
		p := put("Observation", "o2", cur.Version+1, "", t0.Add(20*time.Minute))
		p.Deleted, p.Method = true, "DELETE"
		return tx.Put(ctx, p)
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Read(ctx, "Observation", "o2")
	if err != nil || !r.Deleted || r.Version != 2 || r.JSON != nil {
		t.Fatalf("read after delete: %+v %v", r, err)
	}
	if v1, err := s.ReadVersion(ctx, "Observation", "o2", 1); err != nil || v1.Deleted {
		t.Fatalf("history lost by delete: %+v %v", v1, err)
	}
	all, err := s.History(ctx, store.HistoryQuery{Limit: 100})
	if err != nil || len(all) != 7 {
		t.Fatalf("system history: %d, %v", len(all), err)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq >= all[i-1].Seq {
			t.Fatal("history not newest first")
		}
	}
	if all[0].Type != "Observation" || all[0].ID != "o2" || !all[0].Deleted {
		t.Fatalf("newest history entry: %+v", all[0])
	}
	typ, _ := s.History(ctx, store.HistoryQuery{Type: "Observation", Limit: 100})
	if len(typ) != 6 {
		t.Fatalf("type history: %d", len(typ))
	}
	inst, _ := s.History(ctx, store.HistoryQuery{Type: "Observation", ID: "o2", Limit: 100})
	if len(inst) != 2 || inst[0].Version != 2 || inst[1].Version != 1 {
		t.Fatalf("instance history: %+v", inst)
	}
	since, _ := s.History(ctx, store.HistoryQuery{Since: t0.Add(3 * time.Minute), Limit: 100})
	if len(since) != 4 {
		t.Fatalf("history _since: %d", len(since))
	}
	if n, err := s.CountHistory(ctx, store.HistoryQuery{Type: "Observation"}); err != nil || n != 6 {
		t.Fatalf("count: %d %v", n, err)
	}
	// Paging backwards by seq visits every version exactly once.
	seen := 0
	var before int64
	for {
		page, err := s.History(ctx, store.HistoryQuery{BeforeSeq: before, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		seen += len(page)
		before = page[len(page)-1].Seq
	}
	if seen != 7 {
		t.Fatalf("paged history saw %d versions", seen)
	}
}

func testAtomic(t *testing.T, s *sqldb.DB) {
	ctx := context.Background()
	boom := errors.New("boom")
	err := s.Write(ctx, func(tx store.Tx) error {
		for i := 0; i < 50; i++ {
			p := put("Patient", fmt.Sprint("a", i), 1, `{}`, t0)
			p.Index = &index.Entries{Tokens: []index.Token{{Param: "identifier", System: "s", Code: fmt.Sprint(i)}}}
			p.Patients = []string{fmt.Sprint("a", i)}
			if err := tx.Put(ctx, p); err != nil {
				return err
			}
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("error not passed through: %v", err)
	}
	if _, err := s.Read(ctx, "Patient", "a0"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("a failed transaction left a resource behind")
	}
	var n int
	if err := s.QueryRow(ctx, `SELECT COUNT(*) FROM idx_token`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("a failed transaction left %d index rows (%v)", n, err)
	}
}

func testConcurrentUpdates(t *testing.T, s *sqldb.DB) {
	ctx := context.Background()
	if _, err := update(ctx, s, "Patient", "c", `{"n":0}`, t0); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := update(ctx, s, "Patient", "c", fmt.Sprintf(`{"w":%d,"i":%d}`, w, i), time.Now()); err != nil {
					errs <- err
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent update failed: %v", err)
	}
	r, err := s.Read(ctx, "Patient", "c")
	if err != nil || r.Version != 1+workers*each {
		t.Fatalf("after %d concurrent updates the version is %d (%v): updates were lost", workers*each, r.Version, err)
	}
	h, _ := s.History(ctx, store.HistoryQuery{Type: "Patient", ID: "c", Limit: 1000})
	if len(h) != 1+workers*each {
		t.Fatalf("history has %d versions", len(h))
	}
}

func testConcurrentCreates(t *testing.T, s *sqldb.DB) {
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := update(ctx, s, "Patient", "same", `{}`, time.Now()); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent create-or-update failed: %v", err)
	}
	r, _ := s.Read(ctx, "Patient", "same")
	if r == nil || r.Version != 8 {
		t.Fatalf("8 writers of one new id gave version %+v", r)
	}
}

func count(t *testing.T, s *sqldb.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := s.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func testIndexReplaced(t *testing.T, s *sqldb.DB) {
	ctx := context.Background()
	entries := func(code string) *index.Entries {
		return &index.Entries{
			Tokens:     []index.Token{{Param: "code", System: "http://loinc.org", Code: code}},
			Strings:    []index.String{{Param: "name", Norm: "x", Exact: "X"}},
			Dates:      []index.Date{{Param: "date", Low: 1, High: 2}},
			Refs:       []index.Ref{{Param: "subject", Type: "Patient", ID: "p"}},
			Quantities: []index.Quantity{{Param: "value-quantity", Value: 1.5, Low: 1.45, High: 1.55, Text: "1.5"}},
			Numbers:    []index.Number{{Param: "n", Value: 2, Low: 1.5, High: 2.5, Text: "2"}},
			URIs:       []index.URI{{Param: "url", Value: "http://x"}},
			Composites: []index.Composite{{Param: "code-value", Parts: []index.CompositePart{{Token: &index.Token{Code: code}}}}},
		}
	}
	// Two versions in one transaction, then a third in another: only the
	// latest version's entries remain.
	err := s.Write(ctx, func(tx store.Tx) error {
		p := put("Observation", "i", 1, `{}`, t0)
		p.Index, p.Patients = entries("a"), []string{"p"}
		if err := tx.Put(ctx, p); err != nil {
			return err
		}
		p = put("Observation", "i", 2, `{}`, t0)
		p.Index, p.Patients = entries("b"), []string{"p"}
		return tx.Put(ctx, p)
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, `SELECT COUNT(*) FROM idx_token WHERE code = ?`, "a"); n != 0 {
		t.Fatalf("superseded index rows kept: %d", n)
	}
	for _, tb := range []string{"idx_token", "idx_string", "idx_date", "idx_ref", "idx_quantity", "idx_number", "idx_uri", "idx_composite", "compartment"} {
		if n := count(t, s, `SELECT COUNT(*) FROM `+tb); n != 1 {
			t.Fatalf("%s has %d rows, want 1", tb, n)
		}
	}
	if _, err := update(ctx, s, "Observation", "i", `{}`, t0); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, `SELECT COUNT(*) FROM idx_token`); n != 0 {
		t.Fatalf("an update without index entries kept %d old rows", n)
	}
	if n := count(t, s, `SELECT COUNT(*) FROM compartment`); n != 0 {
		t.Fatalf("compartment rows kept: %d", n)
	}
}

// testPutNew writes first versions in bulk beside single Puts (whose keys
// must not collide with the bulk ones) and reads every field back.
func testPutNew(t *testing.T, s *sqldb.DB) {
	ctx := context.Background()
	const n = 450 // more than one multi-row statement on SQLite
	var puts []*store.Put
	err := s.WriteTx(ctx, func(tx *sqldb.Tx) error {
		if err := tx.Put(ctx, put("Patient", "before", 1, `{"n":"before"}`, t0)); err != nil {
			return err
		}
		for i := range n {
			p := put("Observation", fmt.Sprintf("o%d", i), 1, fmt.Sprintf(`{"n":%d}`, i), t0.Add(time.Duration(i)*time.Microsecond))
			switch i % 3 {
			case 1:
				p.Batch, p.Blob = 7, fmt.Sprintf("blob-%d", i)
			case 2:
				p.Index = &index.Entries{
					Tokens:     []index.Token{{Param: "code", System: "s", Code: fmt.Sprintf("c%d", i)}},
					Dates:      []index.Date{{Param: "date", Low: int64(i), High: int64(i) + 1}},
					Quantities: []index.Quantity{{Param: "value-quantity", Value: float64(i) / 2, Low: 0, High: 1, Text: "x"}},
				}
				p.Patients = []string{"pat", "pat2"}
			}
			puts = append(puts, p)
		}
		if err := tx.PutNew(ctx, puts); err != nil {
			return err
		}
		return tx.Put(ctx, put("Patient", "after", 1, `{"n":"after"}`, t0))
	})
	if err != nil {
		t.Fatal(err)
	}
	seqs := map[int64]bool{}
	for _, id := range []string{"before", "after"} {
		r, err := s.Read(ctx, "Patient", id)
		if err != nil || string(r.JSON) != `{"n":"`+id+`"}` {
			t.Fatalf("read Patient/%s: %+v %v", id, r, err)
		}
		seqs[r.Seq] = true
	}
	for i, p := range puts {
		r, err := s.Read(ctx, "Observation", p.ID)
		if err != nil {
			t.Fatalf("read %s: %v", p.ID, err)
		}
		if r.Version != 1 || r.Seq != p.Seq || string(r.JSON) != string(p.JSON) || r.Blob != p.Blob || !r.LastUpdated.Equal(p.LastUpdated) || r.Method != "POST" || r.Deleted {
			t.Fatalf("%d: read back %+v, wrote %+v", i, r, p)
		}
		seqs[r.Seq] = true
	}
	if len(seqs) != n+2 {
		t.Fatalf("%d distinct version numbers for %d versions", len(seqs), n+2)
	}
	if got := count(t, s, `SELECT COUNT(*) FROM resource_version WHERE batch = 7`); got != n/3 {
		t.Fatalf("%d versions with the batch, want %d", got, n/3)
	}
	if got := count(t, s, `SELECT COUNT(*) FROM resource_version WHERE batch IS NULL AND blob IS NULL`); got != n-n/3+2 {
		t.Fatalf("%d versions without batch and blob, want %d", got, n-n/3+2)
	}
	for tb, want := range map[string]int{"idx_token": n / 3, "idx_date": n / 3, "idx_quantity": n / 3, "compartment": 2 * n / 3} {
		if got := count(t, s, `SELECT COUNT(*) FROM `+tb); got != want {
			t.Fatalf("%s has %d rows, want %d", tb, got, want)
		}
	}
	if got := count(t, s, `SELECT COUNT(*) FROM idx_quantity WHERE value = ? AND text = 'x'`, 1.0); got != 1 {
		t.Fatalf("quantity 1.0 found %d times", got)
	}
	// An update after the bulk write takes the next number, and a second
	// PutNew of an existing resource is a conflict.
	if v, err := update(ctx, s, "Observation", "o5", `{"n":"five"}`, t0); err != nil || v != 2 {
		t.Fatalf("update after PutNew: %d %v", v, err)
	}
	err = s.WriteTx(ctx, func(tx *sqldb.Tx) error {
		return tx.PutNew(ctx, []*store.Put{put("Observation", "o1", 1, `{}`, t0)})
	})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("PutNew of an existing resource: %v", err)
	}
}

func testKV(t *testing.T, s *sqldb.DB) {
	ctx := context.Background()
	if _, err := s.GetKV(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
	for _, v := range []string{"one", "two"} {
		if err := s.PutKV(ctx, "k", []byte(v)); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetKV(ctx, "k")
		if err != nil || string(got) != v {
			t.Fatalf("kv: %q %v", got, err)
		}
	}
}
