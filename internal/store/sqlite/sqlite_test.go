package sqlite_test

import (
	"context"
	"database/sql"
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
