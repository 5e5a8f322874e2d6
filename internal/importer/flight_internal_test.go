package importer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/store"
	"github.com/phr-project/phr/internal/store/sqldb"
	"github.com/phr-project/phr/internal/store/storetest"
)

// earlierWrite runs, in the background, a transaction as commit runs an
// earlier chunk's: it holds fl.key, runs body, and ends with err (or
// commits when body returns nil); fl.done closes after it.
func earlierWrite(db *sqldb.DB, fl *flight, body func(context.Context, *sqldb.Tx) error) {
	go func() {
		defer close(fl.done)
		defer fl.start()
		fl.err = db.WriteTxOnce(context.Background(), func(tx *sqldb.Tx) error {
			if err := tx.HoldKey(context.Background(), fl.key); err != nil {
				return err
			}
			fl.start()
			return body(context.Background(), tx)
		})
	}()
}

func newTestFlight(key int64) *flight {
	return &flight{done: make(chan struct{}), begun: make(chan struct{}), key: key}
}

// A chunk written while the one before it is still being written
// (PostgreSQL: Importer.writers) commits only after it: awaitEarlier
// waits for the earlier transaction, and fails with errEarlier when that
// one failed, so the later chunk is rolled back too.
func TestLaterChunkWaitsForEarlier(t *testing.T) {
	db := storetest.Open(t, "postgres")
	r := &Run{imp: New(db, nil)}
	if want := map[bool]int{true: 2, false: 1}[db.WriteConns() >= 3]; r.imp.writers != want {
		t.Fatalf("writers on PostgreSQL with %d write connections = %d, want %d", db.WriteConns(), r.imp.writers, want)
	}
	ctx := context.Background()
	for _, fail := range []bool{false, true} {
		prev := newTestFlight(41)
		release := make(chan struct{})
		earlierWrite(db, prev, func(ctx context.Context, tx *sqldb.Tx) error {
			<-release
			if fail {
				return errors.New("the earlier chunk failed")
			}
			return nil
		})
		<-prev.begun
		fl := newTestFlight(7)
		fl.prev = prev
		got := make(chan error, 1)
		start := time.Now()
		go func() {
			got <- db.WriteTxOnce(ctx, func(tx *sqldb.Tx) error { return r.awaitEarlier(ctx, tx, fl) })
		}()
		select {
		case err := <-got:
			t.Fatalf("fail=%v: the later chunk went on while the earlier one ran (%v)", fail, err)
		case <-time.After(300 * time.Millisecond):
		}
		close(release)
		err := <-got
		switch {
		case fail && !errors.Is(err, errEarlier):
			t.Fatalf("later chunk after a failed earlier one: %v, want errEarlier", err)
		case !fail && err != nil:
			t.Fatalf("later chunk after a committed earlier one: %v", err)
		}
		if time.Since(start) < 300*time.Millisecond {
			t.Fatalf("awaitEarlier returned before the earlier chunk ended")
		}
	}
}

// Two imports at the same time can make an earlier chunk wait in the
// server for a row that a later chunk wrote, while the later one waits
// for the earlier. The later one's wait is an advisory lock in the
// server, so the server finds the deadlock and fails one of the two as a
// conflict (to be merged again) instead of both hanging.
func TestChunkWaitDeadlockIsBroken(t *testing.T) {
	db := storetest.Open(t, "postgres")
	r := &Run{imp: New(db, nil)}
	ctx := context.Background()
	prev := newTestFlight(99)
	laterWrote := make(chan struct{})
	earlierWrite(db, prev, func(ctx context.Context, tx *sqldb.Tx) error {
		<-laterWrote
		// The same digest row the later chunk wrote and has not
		// committed: this waits for the later transaction.
		_, err := tx.Exec(ctx, `INSERT INTO import_seen (source, hash) VALUES ('s', 'h')`)
		return err
	})
	<-prev.begun
	fl := newTestFlight(100)
	fl.prev = prev
	got := make(chan error, 1)
	go func() {
		got <- db.WriteTxOnce(ctx, func(tx *sqldb.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO import_seen (source, hash) VALUES ('s', 'h')`); err != nil {
				return err
			}
			close(laterWrote)
			return r.awaitEarlier(ctx, tx, fl)
		})
	}()
	var later error
	select {
	case later = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("the two chunks' transactions wait for each other for good")
	}
	<-prev.done
	// One of the two fails as a conflict; the other ends: the earlier one
	// commits its row when the later was the one failed, and the later one
	// gives up with errEarlier when the earlier was.
	switch {
	case errors.Is(prev.err, store.ErrConflict):
		if !errors.Is(later, errEarlier) {
			t.Fatalf("earlier chunk failed as a conflict (%v), later one: %v, want errEarlier", prev.err, later)
		}
	case prev.err == nil:
		if !errors.Is(later, store.ErrConflict) {
			t.Fatalf("earlier chunk committed, later one: %v, want a conflict", later)
		}
	default:
		t.Fatalf("earlier chunk: %v; later one: %v", prev.err, later)
	}
}

// settleForItems waits for the chunk in flight when it carries an
// identifier of the next chunk's item that two or more committed resources
// carry only if that resource could be the item's match: none of its
// identifiers contradicts the item's (see matchIdentifiers).
func TestSettleForSharedIdentifier(t *testing.T) {
	db := storetest.Open(t, "sqlite")
	ctx := context.Background()
	if err := db.WriteTx(ctx, func(tx *sqldb.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO import_identifier (type, system, value, local_id) VALUES
			('Practitioner', 'z', '5', 'a'), ('Practitioner', 'w', '1', 'a'),
			('Practitioner', 'z', '5', 'b'), ('Practitioner', 'w', '2', 'b'),
			('Practitioner', 'z', '6', 'a')`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	prac := func(id string, idents ...[2]string) *item {
		return &item{typ: "Practitioner", sid: id, localID: id, idents: idents}
	}
	incoming := prac("d", [2]string{"z", "5"}, [2]string{"w", "3"})
	for _, c := range []struct {
		name     string
		inFlight *item
		item     *item
		settles  bool
	}{
		{"no urn:w in flight: it would match", prac("c", [2]string{"z", "5"}), incoming, true},
		{"another urn:w in flight: another resource", prac("c", [2]string{"z", "5"}, [2]string{"w", "9"}), incoming, false},
		{"the same urn:w in flight", prac("c", [2]string{"z", "5"}, [2]string{"w", "3"}), incoming, true},
		{"one committed carrier", prac("c", [2]string{"z", "6"}, [2]string{"w", "9"}), prac("e", [2]string{"z", "6"}, [2]string{"w", "3"}), true},
		{"nothing shared", prac("c", [2]string{"z", "7"}), incoming, false},
	} {
		fl := newFlight([]*item{c.inFlight})
		fl.w = &chunkWrite{items: []*item{c.inFlight}}
		close(fl.done)
		r := &Run{imp: New(db, nil), fls: []*flight{fl}}
		next := *c.item
		next.localID = "" // not resolved yet
		if err := r.settleForItems(ctx, []*item{&next}, true); err != nil {
			t.Fatal(err)
		}
		if settled := len(r.fls) == 0; settled != c.settles {
			t.Errorf("%s: settled %v, want %v", c.name, settled, c.settles)
		}
	}
}
