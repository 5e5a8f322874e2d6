package sqldb_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/store/sqldb"
	"github.com/phr-project/phr/internal/store/storetest"
)

// TestWriteReturnsWithThePoolBusy: once its transaction has ended, a write
// returns without waiting for a connection of the pool. The importer's
// later chunk holds a connection while it waits for the earlier chunk's
// write to return, and the other connections may be held by transactions
// that wait (in the database) for that later chunk: a wait for the pool
// there, which the database cannot see, made two concurrent imports of one
// source hang for good (it was the preparing on the pool, after the
// transaction, of the statements it had met first).
func TestWriteReturnsWithThePoolBusy(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			w, dialect := openWritePool(t, d)
			w.SetMaxOpenConns(2)
			db := sqldb.New(sqldb.Options{Dialect: dialect, Write: w})
			t.Cleanup(func() { db.Close() })
			ctx := context.Background()

			// One connection is held until the write returns, the other
			// is the write's; when its transaction ends, a caller that
			// queued for a connection meanwhile takes it.
			held, err := w.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var taken *sql.Conn
			took := make(chan struct{})
			t.Cleanup(func() {
				held.Close()
				<-took
				if taken != nil {
					taken.Close()
				}
			})
			waits := w.Stats().WaitCount
			returned := make(chan error, 1)
			go func() {
				returned <- db.WriteTxOnce(ctx, func(tx *sqldb.Tx) error {
					// A statement not prepared on the pool yet.
					if _, err := tx.Exec(ctx, "SELECT 1 WHERE 1 = ?", 1); err != nil {
						return err
					}
					go func() {
						defer close(took)
						taken, _ = w.Conn(ctx)
					}()
					for w.Stats().WaitCount == waits {
						time.Sleep(time.Millisecond)
					}
					return nil
				})
			}()
			select {
			case err := <-returned:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the write has not returned after 10 s: it waits for a connection of the pool, which its caller and the other holders may never let go")
			}
		})
	}
}
