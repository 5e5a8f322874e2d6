// Package sqlite opens the embedded SQLite store: one database file in the
// data directory, written by one connection and read by several (WAL mode).
//
// The driver is modernc.org/sqlite, a pure-Go translation of SQLite, so that
// `go run ./cmd/phr serve` works on a machine with only Go installed; see
// tools/sqlitebench for the measurement behind the choice.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/phr-project/phr/internal/store/sqldb"
)

// Options tune Open.
type Options struct {
	// MaxConns caps the read-only connections (0: DefaultMaxConns). There
	// is always one writing connection besides.
	MaxConns int
	// BulkWrites sets the store up for a process that mostly writes, as
	// an offline `phr import --data`: the writer's page cache is 32 MiB
	// instead of 16, in slots of one preallocated buffer (pagecache.go)
	// where a page costs its size rather than twice. That cuts the bytes
	// a bulk import reads back and writes, but about 15 MiB of the buffer
	// is resident from the start, and readers' pages go into the slots
	// too, which raised a server's peak memory for a whole-store export
	// from about 80 to about 100 MB; so `phr serve` does not use it. The
	// slots are the process's: the first store opened decides.
	BulkWrites bool
}

// DefaultMaxConns is the default number of read connections: four per
// CPU, at least 8 (a read that waits on the disk leaves its CPU to others).
func DefaultMaxConns() int { return max(8, 4*runtime.GOMAXPROCS(0)) }

// Open opens (creating if needed) the SQLite database at path with the
// default options and applies the migrations (plus those in extra).
func Open(ctx context.Context, path string, extra ...fs.FS) (*sqldb.DB, error) {
	return OpenWith(ctx, path, Options{}, extra...)
}

// OpenWith is Open with options.
func OpenWith(ctx context.Context, path string, o Options, extra ...fs.FS) (*sqldb.DB, error) {
	// The driver runs the _pragma values of a DSN sorted by name, not in
	// the order given, so a pragma must appear once per connection: the
	// shared ones here, then the writer's or the readers' own.
	shared := []string{
		fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()),
		"journal_mode(WAL)",
		"synchronous(NORMAL)",
		"foreign_keys(0)",
		"temp_store(MEMORY)",
	}
	dsn := func(own ...string) string {
		v := url.Values{}
		for _, p := range append(slices.Clone(shared), own...) {
			v.Add("_pragma", p)
		}
		v.Set("_txlock", "immediate")
		return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + v.Encode()
	}
	wp := writerPragmas
	if o.BulkWrites {
		configurePageCache(bulkWriterPages)
		wp = slices.Clone(writerPragmas)
		for i, p := range wp {
			if strings.HasPrefix(p, "cache_size(") {
				wp[i] = "cache_size(" + strconv.Itoa(bulkWriterPages) + ")"
			}
		}
	}
	w, err := sql.Open("sqlite", dsn(wp...))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	ps, err := setPageSize(ctx, w, pageSize)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn(readerPragmas...))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	n := o.MaxConns
	if n <= 0 {
		n = DefaultMaxConns()
	}
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	r.SetConnMaxLifetime(0)
	ck, err := startCheckpointer(ctx, dsn(), w, ps)
	if err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db := sqldb.New(sqldb.Options{Dialect: sqldb.SQLite, Write: w, Read: r, MaxReads: n, IsConflict: isConflict,
		AfterCommit: ck.committed, BeforeClose: ck.close})
	if err := db.Migrate(ctx, extra...); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// writerPragmas configure the one write connection.
var writerPragmas = []string{
	// The writer does not checkpoint the WAL: a connection of its own does,
	// in the background (checkpoint.go).
	"wal_autocheckpoint(0)",
	// The WAL file is not cut back when the WAL starts over (a truncation
	// waited for the disk: 0.8 s of an import's writer); the checkpointer
	// empties it once writes pause.
	"journal_size_limit(-1)",
	// A 16 MiB page cache and no memory map: the writer touches index
	// pages all over the file, and a mapping keeps every one of them
	// resident (a 60-patient import peaked at 396 MiB RSS with the 4 GiB
	// map and a 64 MiB cache, 190 MiB with this) while costing more CPU
	// (1,606 against 1,792 resources per CPU-second), not less.
	// (BulkWrites replaces the cache size.)
	"cache_size(-16384)",
	"mmap_size(0)",
}

// bulkWriterPages is the writer's page cache with Options.BulkWrites:
// 4,000 pages of 8 KiB in slots. Importing the 120 Synthea patients in
// process with the importer's SQLite chunks (2,000 resources or 4 MiB):
// 4,589-5,046 resources/s, 4,385-4,715 per CPU-second, peak RSS 208-210
// MiB, 3.3-3.5 GB read and
// 2.8 GB written, against about 3,100-3,800, 3,300-3,600, 241 MiB, 4.4
// and 4.1 GB without (16 MiB of malloc'ed pages, 1,000-resource chunks).
// 3,000 pages gave 4,320 per CPU-second, 6,000 pages 4,654 with 225 MiB;
// 64 MiB of malloc'ed pages instead of slots peaked at 300-333 MiB.
// (Those figures are from checkpoints every 64 MiB. Every 256 MiB, and
// with 2,000-resource chunks for both stores, the two wrote the same 2.35
// GB; this one peaked at 210-212 MiB against 248-256 and read 3.0 GB
// against 2.7-2.9, resources/s within the noise of the shared machine.)
const bulkWriterPages = 4000

// readerPragmas configure the read connections: no memory map, and
// SQLite's default page cache of 2 MiB each.
//
// A mapped database costs resident memory for every page a connection
// touches, per connection (each has its own mapping), until the
// connection closes: one whole-store export made the process's RSS grow by
// the size of the tables it read (255 MiB peak for the 120 Synthea
// patients, against 60 MiB read through the page cache; phrexport's
// benchmark). Reading through the page cache costs a pread per page
// instead: about 1.5 times the CPU of a whole-store export (95,000 against
// 150,000 resources per CPU-second on the loaded development machine),
// which is still well above the export's goals.
//
// The cache holds the b-tree interior pages and little else: readers
// mostly visit a leaf page once, and the system's file cache serves
// repeats. Each cached page costs about two 4 KiB pages of resident memory
// (the driver's allocator), and the pool has several connections: 8 MiB
// per reader cost 30 MiB of an import's peak RSS and exported no faster
// than 2 MiB (phrexport benchmark).
var readerPragmas = []string{
	"query_only(1)",
	"cache_size(-2048)",
	"mmap_size(0)",
}

// isConflict reports constraint violations and busy errors, which a retry
// of the transaction may resolve.
func isConflict(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_CONSTRAINT:
			return strings.Contains(se.Error(), "UNIQUE")
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return true
		}
	}
	return false
}

// busyTimeout is how long a connection waits for a lock another holds.
const busyTimeout = 10 * time.Second

// pageSize is the page size of new databases.
const pageSize = 8192

// setPageSize gives a new, still empty database the page size size. The
// DSN cannot: the driver applies its pragmas in sorted order, so WAL mode
// (which fixes the page size) comes first. An empty database can still
// leave WAL mode, take the size and return; an existing one keeps its own.
// It returns the database's page size.
func setPageSize(ctx context.Context, w *sql.DB, size int) (int, error) {
	var n int
	if err := w.QueryRowContext(ctx, "SELECT COUNT(*) FROM sqlite_schema").Scan(&n); err != nil {
		return 0, fmt.Errorf("inspect schema: %w", err)
	}
	var cur int
	if err := w.QueryRowContext(ctx, "PRAGMA page_size").Scan(&cur); err != nil {
		return 0, fmt.Errorf("read page size: %w", err)
	}
	if n > 0 || cur == size {
		return cur, nil
	}
	for _, q := range []string{"PRAGMA journal_mode=DELETE", "PRAGMA page_size=" + strconv.Itoa(size), "VACUUM", "PRAGMA journal_mode=WAL"} {
		if _, err := w.ExecContext(ctx, q); err != nil {
			return 0, fmt.Errorf("set page size (%s): %w", q, err)
		}
	}
	return size, nil
}
