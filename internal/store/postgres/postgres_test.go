package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/store"
	"github.com/phr-project/phr/internal/store/postgres"
	"github.com/phr-project/phr/internal/store/sqldb"
	"github.com/phr-project/phr/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) *sqldb.DB { return storetest.Open(t, "postgres") })
}

// TestCoalescedReads reads many resources at once, so that the reads are
// answered in shared statements: each must get its own resource (current
// version, tombstone, or not found), whatever it was batched with.
func TestCoalescedReads(t *testing.T) {
	ctx := context.Background()
	db, err := postgres.OpenWith(ctx, storetest.NewPostgresURL(t), postgres.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	at := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	const n = 40
	err = db.Write(ctx, func(tx store.Tx) error {
		for i := range n {
			for _, typ := range []string{"Patient", "Observation"} {
				id := fmt.Sprintf("r%d", i)
				js := fmt.Sprintf(`{"resourceType":%q,"id":%q}`, typ, id)
				if err := tx.Put(ctx, &store.Put{Resource: store.Resource{Type: typ, ID: id, Version: 1, LastUpdated: at, Method: "POST", JSON: []byte(js)}}); err != nil {
					return err
				}
			}
		}
		// every fifth Observation is deleted
		for i := 0; i < n; i += 5 {
			del := &store.Put{Resource: store.Resource{Type: "Observation", ID: fmt.Sprintf("r%d", i), Version: 2, LastUpdated: at.Add(time.Second), Deleted: true, Method: "DELETE"}}
			if err := tx.Put(ctx, del); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for g := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range 20 {
				i := (g*7 + k*13) % (n + 10) // some ids do not exist
				typ := []string{"Patient", "Observation"}[(g+k)%2]
				id := fmt.Sprintf("r%d", i)
				res, err := db.Read(ctx, typ, id)
				switch {
				case i >= n:
					if !errors.Is(err, store.ErrNotFound) {
						errs <- fmt.Errorf("%s/%s: %v, want not found", typ, id, err)
					}
				case err != nil:
					errs <- fmt.Errorf("%s/%s: %v", typ, id, err)
				case res.Type != typ || res.ID != id:
					errs <- fmt.Errorf("asked for %s/%s, got %s/%s", typ, id, res.Type, res.ID)
				case typ == "Observation" && i%5 == 0:
					if !res.Deleted || res.Version != 2 || res.JSON != nil {
						errs <- fmt.Errorf("%s/%s: %+v, want the tombstone", typ, id, res)
					}
				default:
					if res.Deleted || res.Version != 1 || string(res.JSON) != fmt.Sprintf(`{"resourceType":%q,"id":%q}`, typ, id) || !res.LastUpdated.Equal(at) {
						errs <- fmt.Errorf("%s/%s: %+v", typ, id, res)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// A closed store refuses reads instead of hanging.
	db.Close()
	if _, err := db.Read(ctx, "Patient", "r1"); err == nil {
		t.Error("read after Close succeeded")
	}
}

// TestJSONCompression checks that resource JSON large enough to be
// compressed is compressed with lz4 where the server has it (migration
// 0002), and reads back unchanged, written singly and in bulk.
func TestJSONCompression(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t, "postgres")
	var lz4 bool
	err := db.WriteTx(ctx, func(tx *sqldb.Tx) error {
		_, err := tx.Exec(ctx, `CREATE TEMP TABLE lz4_probe (b BYTEA COMPRESSION lz4) ON COMMIT DROP`)
		lz4 = err == nil
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !lz4 {
		t.Skip("the server has no lz4 compression")
	}
	at := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	js := func(id string) []byte {
		b := []byte(fmt.Sprintf(`{"resourceType":"Observation","id":%q,"note":[`, id))
		for i := range 300 {
			if i > 0 {
				b = append(b, ',')
			}
			b = fmt.Appendf(b, `{"text":"note %d of a long and repetitive resource"}`, i)
		}
		return append(b, "]}"...)
	}
	err = db.WriteTx(ctx, func(tx *sqldb.Tx) error {
		if err := tx.Put(ctx, &store.Put{Resource: store.Resource{Type: "Observation", ID: "single", Version: 1, LastUpdated: at, Method: "PUT", JSON: js("single")}}); err != nil {
			return err
		}
		return tx.PutNew(ctx, []*store.Put{{Resource: store.Resource{Type: "Observation", ID: "bulk", Version: 1, LastUpdated: at, Method: "POST", JSON: js("bulk")}}})
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"single", "bulk"} {
		res, err := db.Read(ctx, "Observation", id)
		if err != nil {
			t.Fatal(err)
		}
		if string(res.JSON) != string(js(id)) {
			t.Errorf("%s read back differently", id)
		}
		var method string
		if err := db.QueryRow(ctx, `SELECT pg_column_compression(v.json) FROM resource r JOIN resource_version v ON v.seq = r.seq WHERE r.type = 'Observation' AND r.id = ?`, id).Scan(&method); err != nil {
			t.Fatal(err)
		}
		if method != "lz4" {
			t.Errorf("%s: JSON compressed with %q, want lz4", id, method)
		}
	}
}

// TestAsyncCommit checks that AsyncCommit turns off the wait for the disk
// in its own transaction only, and that what it wrote commits.
func TestAsyncCommit(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t, "postgres")
	setting := func(tx *sqldb.Tx) (string, error) {
		var v string
		err := tx.QueryRow(ctx, `SELECT current_setting('synchronous_commit')`).Scan(&v)
		return v, err
	}
	at := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	err := db.WriteTx(ctx, func(tx *sqldb.Tx) error {
		if err := tx.AsyncCommit(ctx); err != nil {
			return err
		}
		if v, err := setting(tx); err != nil || v != "off" {
			return fmt.Errorf("synchronous_commit in the transaction: %q %v, want off", v, err)
		}
		return tx.Put(ctx, &store.Put{Resource: store.Resource{Type: "Patient", ID: "p1", Version: 1, LastUpdated: at, Method: "PUT", JSON: []byte(`{"resourceType":"Patient","id":"p1"}`)}})
	})
	if err != nil {
		t.Fatal(err)
	}
	// Every connection of the write pool is back to the default.
	var wg sync.WaitGroup
	for range postgres.WritePoolSize(postgres.DefaultMaxConns()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := db.WriteTx(ctx, func(tx *sqldb.Tx) error {
				v, err := setting(tx)
				if err == nil && v == "off" {
					err = errors.New("synchronous_commit is still off in a later transaction")
				}
				time.Sleep(50 * time.Millisecond) // hold the connection so that the others use theirs
				return err
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if res, err := db.Read(ctx, "Patient", "p1"); err != nil || res.Version != 1 {
		t.Fatalf("read after an asynchronous commit: %v %v", res, err)
	}
}
