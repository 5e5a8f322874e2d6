package sqlite_test

import (
	"context"
	"database/sql"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/store/sqldb"
	"github.com/phr-project/phr/internal/store/sqlite"
	"github.com/phr-project/phr/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) *sqldb.DB { return storetest.Open(t, "sqlite") })
}

// TestConnectionSettings checks that each pool's connections run with
// the settings given for them: the driver sorts a DSN's pragmas, so a
// setting given twice would end up with whichever value sorts last.
func TestConnectionSettings(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "phr.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	check := func(pool string, pragmas []string, q func(string) *sql.Row) {
		for _, p := range pragmas {
			name, val, ok := strings.Cut(strings.TrimSuffix(p, ")"), "(")
			if !ok {
				t.Fatalf("%s pragma %q is not name(value)", pool, p)
			}
			want, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				t.Fatalf("%s pragma %q: %v", pool, p, err)
			}
			var got int64
			if err := q("PRAGMA " + name).Scan(&got); err != nil {
				t.Fatalf("%s %s: %v", pool, name, err)
			}
			if name == "mmap_size" && want > 0 {
				want = min(want, 0x7fff0000) // SQLite's compile-time cap
			}
			if got != want {
				t.Errorf("%s %s = %d, want %d", pool, name, got, want)
			}
		}
	}
	check("reader", sqlite.ReaderPragmas, func(q string) *sql.Row { return db.QueryRow(ctx, q) })
	if err := db.WriteTx(ctx, func(tx *sqldb.Tx) error {
		check("writer", sqlite.WriterPragmas, func(q string) *sql.Row { return tx.QueryRow(ctx, q) })
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var ro int64
	if err := db.QueryRow(ctx, "PRAGMA query_only").Scan(&ro); err != nil || ro != 1 {
		t.Errorf("readers: query_only = %d (%v), want 1", ro, err)
	}
}

// TestPageCacheSlots checks that with Options.BulkWrites cached pages live
// in the slots given to SQLite when the store opened (pagecache.go), not
// in allocations of their own, and that the writer's cache is the bulk
// one. The slots are configured once per process, before SQLite
// initialises, so the check runs in a fresh test process.
func TestPageCacheSlots(t *testing.T) {
	if os.Getenv("PHR_TEST_SLOTS_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestPageCacheSlots$", "-test.v")
		cmd.Env = append(os.Environ(), "PHR_TEST_SLOTS_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestPageCacheSlots") {
			t.Fatalf("child test process: %v\n%s", err, out)
		}
		return
	}
	ctx := context.Background()
	db, err := sqlite.OpenWith(ctx, filepath.Join(t.TempDir(), "phr.db"), sqlite.Options{BulkWrites: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, over0 := sqlite.PageCacheStatus()
	value := strings.Repeat("x", 1000)
	var pages int
	if err := db.WriteTx(ctx, func(tx *sqldb.Tx) error {
		if err := tx.QueryRow(ctx, "PRAGMA cache_size").Scan(&pages); err != nil {
			return err
		}
		for i := range 2000 {
			if _, err := tx.Exec(ctx, "INSERT INTO kv (key, value) VALUES (?, ?)", "k"+strconv.Itoa(i), value); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if pages != 4000 {
		t.Errorf("writer cache_size %d, want 4000 pages", pages)
	}
	var n int
	if err := db.QueryRow(ctx, "SELECT COUNT(*) FROM kv WHERE length(value) = 1000").Scan(&n); err != nil || n != 2000 {
		t.Fatalf("read back %d rows (%v), want 2000", n, err)
	}
	used, over := sqlite.PageCacheStatus()
	// 2 MB of rows take more than 250 pages of 8 KiB, all cached by the
	// writer (and the reader's scan).
	if used < 250 {
		t.Errorf("%d page cache slots in use, want at least 250", used)
	}
	if over != over0 {
		t.Errorf("%d bytes of pages allocated outside the slots", over-over0)
	}
}
