package sqlite_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/store/sqldb"
	"github.com/phr-project/phr/internal/store/sqlite"
)

// writeBlobs writes n transactions of one 64 KiB row each into the kv
// table, keys from start on, and returns the WAL file's largest size seen
// after a commit.
func writeBlobs(t *testing.T, db *sqldb.DB, wal string, start, n int) int64 {
	t.Helper()
	ctx := context.Background()
	var peak int64
	for i := start; i < start+n; i++ {
		v := make([]byte, 64<<10)
		rand.Read(v)
		if err := db.WriteTx(ctx, func(tx *sqldb.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO kv (key, value) VALUES (?, ?)", "blob-"+strconv.Itoa(i), v)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(wal); err == nil {
			peak = max(peak, st.Size())
		}
	}
	return peak
}

// openSmallWAL opens a store in a new directory with the background
// checkpoints' thresholds made small: a pass every 256 KiB written, a WAL
// cap of 2 MiB, idle after 200 ms. It returns the store and its path.
func openSmallWAL(t *testing.T) (*sqldb.DB, string) {
	t.Helper()
	restore := sqlite.SetCheckpointSizes(256<<10, 2<<20, 200*time.Millisecond)
	defer restore() // the store keeps the sizes it was opened with
	path := filepath.Join(t.TempDir(), "phr.db")
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// TestBackgroundCheckpoints checks that the WAL is copied into the
// database file while the writer goes on (the writer itself never
// checkpoints), that the WAL stays within its cap, that the WAL file is
// emptied once writes pause (statements that write nothing go on), and
// that what was written is all there.
func TestBackgroundCheckpoints(t *testing.T) {
	ctx := context.Background()
	db, path := openSmallWAL(t)
	start := fileSize(t, path)
	// 240 transactions of 64 KiB: 15 MiB, seven times the WAL's cap.
	peak := writeBlobs(t, db, path+"-wal", 0, 240)
	if limit := int64(2<<20 + 256<<10); peak > limit {
		t.Errorf("WAL reached %d bytes, want at most the 2 MiB cap plus a transaction (%d)", peak, limit)
	}
	// The background passes copied pages into the database file while
	// the writer wrote (nothing else checkpoints before Close).
	if got := fileSize(t, path); got < start+10<<20 {
		t.Errorf("database file %d bytes after 15 MiB written (from %d): the WAL was not checkpointed meanwhile", got, start)
	}
	// Once the writer is idle, a pass copies the rest. Statements that
	// change nothing (a server's pollers run such) leave it idle.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				if _, err := db.Exec(ctx, "UPDATE kv SET value = value WHERE key = 'none'"); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for fileSize(t, path) < start+15<<20 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := fileSize(t, path); got < start+15<<20 {
		t.Errorf("database file %d bytes a while after the last write, want all 15 MiB copied", got)
	}
	// ... and empties the WAL file.
	for fileSize(t, path+"-wal") > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := fileSize(t, path+"-wal"); got > 0 {
		t.Errorf("WAL file %d bytes a while after the last write, want it emptied", got)
	}
	var n int
	if err := db.QueryRow(ctx, "SELECT COUNT(*) FROM kv WHERE key LIKE 'blob-%'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 240 {
		t.Errorf("%d rows read back, want 240", n)
	}
}

// TestCheckpointReaderInWAL checks the writer with a reader that holds an
// old snapshot (as a whole-store export does): the WAL cannot start over
// while it reads, the writer goes on without waiting for it at every
// commit, and once the reader is gone the WAL starts over and stops
// growing.
func TestCheckpointReaderInWAL(t *testing.T) {
	ctx := context.Background()
	db, path := openSmallWAL(t)
	wal := path + "-wal"
	writeBlobs(t, db, wal, 0, 8)

	// A reader of its own, in a read transaction that stays open.
	other, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	var before int
	if err := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM kv").Scan(&before); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	held := writeBlobs(t, db, wal, 8, 96) // 6 MiB: three times the cap
	took := time.Since(began)
	t.Logf("96 writes with a reader in the WAL: %v", took)
	// Each restart waits at most 250 ms for readers and is tried again
	// after a quarter of the cap: 6 MiB gives about a dozen tries (3 s).
	// A try at every commit after the cap would wait about 20 s.
	if took > 12*time.Second {
		t.Errorf("96 writes took %v with a reader in the WAL: the writer waited for it too often", took)
	}
	if held <= 2<<20+256<<10 {
		t.Logf("WAL %d bytes with a reader holding it (expected to pass the cap)", held)
	}
	var still int
	if err := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM kv").Scan(&still); err != nil {
		t.Fatal(err)
	}
	if still != before {
		t.Errorf("the reader's snapshot changed from %d to %d rows", before, still)
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	conn.Close()

	// Without the reader the WAL starts over (at the next try, after at
	// most a quarter of the cap): writing twice the cap again makes the
	// file at most that much longer than it was.
	size := fileSize(t, wal)
	after := writeBlobs(t, db, wal, 104, 64)
	if limit := size + 512<<10 + 256<<10; after > limit {
		t.Errorf("WAL grew from %d to %d bytes after the reader left (limit %d): it did not start over", size, after, limit)
	}
	var n int
	if err := db.QueryRow(ctx, "SELECT COUNT(*) FROM kv WHERE key LIKE 'blob-%'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 168 {
		t.Errorf("%d rows read back, want 168", n)
	}
}
