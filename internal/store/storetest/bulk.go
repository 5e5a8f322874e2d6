package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/store"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// writeMany creates-or-updates the resources of type typ with the given
// ids in one transaction the way a transaction Bundle does with a
// store.BulkTx: one Currents lookup, new resources through PutNew, the
// others through Put.
func writeMany(ctx context.Context, s store.Store, typ string, ids []string, body string, at time.Time) error {
	return s.Write(ctx, func(tx store.Tx) error {
		b, ok := tx.(store.BulkTx)
		if !ok {
			return fmt.Errorf("%T is not a store.BulkTx", tx)
		}
		cur, err := b.Currents(ctx, typ, ids)
		if err != nil {
			return err
		}
		var fresh []*store.Put
		for _, id := range ids {
			c := cur[id]
			if c == nil {
				fresh = append(fresh, put(typ, id, 1, body, at))
				continue
			}
			if err := tx.Put(ctx, put(typ, id, c.Version+1, body, at)); err != nil {
				return err
			}
		}
		return b.PutNew(ctx, fresh)
	})
}

func testBulk(t *testing.T, s *sqldb.DB) {
	ctx := context.Background()
	for _, id := range []string{"b1", "b2"} {
		if _, err := update(ctx, s, "Patient", id, `{"n":1}`, t0); err != nil {
			t.Fatal(err)
		}
	}
	err := s.Write(ctx, func(tx store.Tx) error {
		return tx.Put(ctx, &store.Put{Resource: store.Resource{Type: "Patient", ID: "b2", Version: 2, LastUpdated: t0.Add(time.Second), Deleted: true, Method: "DELETE"}})
	})
	if err != nil {
		t.Fatal(err)
	}
	// Currents finds live and deleted resources, not missing ones (nor
	// resources of another type with the same id).
	if _, err := update(ctx, s, "Observation", "b3", `{}`, t0); err != nil {
		t.Fatal(err)
	}
	err = s.Write(ctx, func(tx store.Tx) error {
		cur, err := tx.(store.BulkTx).Currents(ctx, "Patient", []string{"b1", "b2", "b3", "b1"})
		if err != nil {
			return err
		}
		if len(cur) != 2 || cur["b1"] == nil || cur["b1"].Version != 1 || string(cur["b1"].JSON) != `{"n":1}` ||
			cur["b2"] == nil || !cur["b2"].Deleted || cur["b2"].Version != 2 || cur["b1"].Seq == 0 || !cur["b1"].LastUpdated.Equal(t0) {
			return fmt.Errorf("Currents gave %+v", cur)
		}
		// Resources read by Currents are known to Put, which then needs
		// no lookup of its own and checks the version.
		if err := tx.Put(ctx, put("Patient", "b1", 3, `{}`, t0)); !errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("Put of version 3 over version 1: %v", err)
		}
		return errors.New("rollback")
	})
	if err == nil || err.Error() != "rollback" {
		t.Fatal(err)
	}
	ids := make([]string, 1200)
	for i := range ids {
		ids[i] = fmt.Sprintf("m%d", i)
	}
	ids = append(ids, "b1", "b2")
	if err := writeMany(ctx, s, "Patient", ids, `{"n":2}`, t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]int64{"m0": 1, "m1199": 1, "b1": 2, "b2": 3} {
		r, err := s.Read(ctx, "Patient", id)
		if err != nil || r.Version != want || r.Deleted {
			t.Fatalf("Patient/%s after writeMany: %+v %v, want version %d", id, r, err, want)
		}
	}
	// Concurrent bulk writers of the same resources lose no update: each
	// gets its own versions (Currents holds the resources like Current).
	const workers = 6
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := writeMany(ctx, s, "Patient", []string{"b1", "c-new", "m5"}, `{}`, time.Now()); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent bulk write failed: %v", err)
	}
	for id, want := range map[string]int64{"b1": 2 + workers, "c-new": workers, "m5": 1 + workers} {
		if r, err := s.Read(ctx, "Patient", id); err != nil || r.Version != want {
			t.Fatalf("Patient/%s after %d concurrent bulk writes: %+v %v, want version %d", id, workers, r, err, want)
		}
	}
}
