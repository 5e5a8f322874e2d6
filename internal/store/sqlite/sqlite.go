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
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/phr-project/phr/internal/store/sqldb"
)

// Options tune Open.
type Options struct {
	// MaxConns caps the read-only connections (0: DefaultMaxConns). There
	// is always one writing connection besides.
	MaxConns int
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
	pragmas := []string{
		"busy_timeout(10000)",
		"journal_mode(WAL)",
		"synchronous(NORMAL)",
		"foreign_keys(0)",
		"cache_size(-65536)",
		"temp_store(MEMORY)",
		// Map the file (address space, not memory; SQLite caps the size at
		// its compile-time limit, about 2 GiB): pages past the mapped
		// part go through the page cache, whose refills after every write
		// made a full export cost about twice the CPU on a 500 MB database
		// (phrexport benchmark: 169,000 against 105,000 resources per CPU-s).
		"mmap_size(4294967296)",
	}
	dsn := func(extraPragmas ...string) string {
		v := url.Values{}
		for _, p := range append(pragmas, extraPragmas...) {
			v.Add("_pragma", p)
		}
		v.Set("_txlock", "immediate")
		return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + v.Encode()
	}
	w, err := sql.Open("sqlite", dsn())
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
	// Readers: a page cache of 8 MiB each (the cache is per connection and
	// there are several; reads go through the memory map anyway), so many
	// concurrent readers do not add up to hundreds of MB.
	r, err := sql.Open("sqlite", dsn("query_only(1)", "cache_size(-8192)"))
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
	db := sqldb.New(sqldb.Options{Dialect: sqldb.SQLite, Write: w, Read: r, MaxReads: n, IsConflict: isConflict})
	if err := db.Migrate(ctx, extra...); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
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
