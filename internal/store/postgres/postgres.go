// Package postgres opens the PostgreSQL store (pgx through database/sql).
// Several phr servers may share one database: writers lock the rows they
// update (SELECT ... FOR UPDATE) and retry on unique or serialisation
// failures, and migrations take an advisory lock.
package postgres

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib" // also registers the "pgx" database/sql driver

	"github.com/phr-project/phr/internal/store/sqldb"
)

// Options tune Open.
type Options struct {
	// MaxConns caps the connections that serve reads (0: DefaultMaxConns).
	// Write transactions have a pool of their own, half as large (at
	// least 2), so that a burst of reads never starves writers and a
	// long import never starves readers.
	MaxConns int
	// Readers is the number of goroutines that answer single-resource
	// reads, each taking every read waiting at the time in one statement
	// (0: DefaultReaders; at most MaxConns).
	Readers int
}

// DefaultReaders is the default number of coalescing readers: one per
// CPU, at least 2. Fewer readers than connections make the reads that
// arrive under load wait for a reader in larger groups, and one statement
// for a group costs the database little more than one for a single read:
// with 2 readers instead of 6, GET /fhir/Patient/[id] under 16 connections
// cost the PostgreSQL backends half the CPU (about 20 instead of 40 us per
// request) and the server about a tenth less (tools/loadtest/get.sh). A
// read that finds a reader idle still goes at once, alone.
func DefaultReaders() int { return max(2, runtime.GOMAXPROCS(0)) }

// DefaultMaxConns is the default read pool size: three connections per
// CPU. Every connection is a server process; dozens of them on a small
// machine spend their time being scheduled rather than answering (with 32
// on 2 cores a GET's p99 was 100-200 ms; with 6 it was 7 ms).
func DefaultMaxConns() int { return max(4, 3*runtime.GOMAXPROCS(0)) }

// WritePoolSize is the size of the write pool that goes with a read pool
// of maxConns connections.
func WritePoolSize(maxConns int) int { return max(2, maxConns/2) }

// Open connects to the database at url (postgres://...) with the default
// options and applies the migrations (plus those in extra).
func Open(ctx context.Context, url string, extra ...fs.FS) (*sqldb.DB, error) {
	return OpenWith(ctx, url, Options{}, extra...)
}

// OpenWith is Open with options.
func OpenWith(ctx context.Context, url string, o Options, extra ...fs.FS) (*sqldb.DB, error) {
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns()
	}
	if o.Readers <= 0 {
		o.Readers = DefaultReaders()
	}
	o.Readers = min(o.Readers, o.MaxConns)
	open := func(n int) (*sql.DB, error) {
		db, err := sql.Open("pgx", url)
		if err != nil {
			return nil, fmt.Errorf("open postgres: %w", err)
		}
		db.SetMaxOpenConns(n)
		db.SetMaxIdleConns(n)
		db.SetConnMaxIdleTime(5 * time.Minute)
		if err := db.PingContext(ctx); err != nil {
			db.Close()
			return nil, fmt.Errorf("connect to postgres: %w", err)
		}
		return db, nil
	}
	w, err := open(WritePoolSize(o.MaxConns))
	if err != nil {
		return nil, err
	}
	r, err := open(o.MaxConns)
	if err != nil {
		w.Close()
		return nil, err
	}
	s := sqldb.New(sqldb.Options{Dialect: sqldb.Postgres, Write: w, Read: r, MaxReads: o.MaxConns, CoalesceReads: true, Readers: o.Readers, CopyFrom: copyFrom, Raw: rawWriter{}, IsConflict: isConflict,
		// search builds its SQL per request: run it as unnamed statements
		DynamicArg: pgx.QueryExecModeExec})
	if err := s.Migrate(ctx, extra...); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// copyFrom loads rows (flat: len(cols) values each) into table with COPY
// on the transaction's connection.
func copyFrom(ctx context.Context, driverConn any, table string, cols []string, flat []any) error {
	c, ok := driverConn.(*stdlib.Conn)
	if !ok {
		return fmt.Errorf("copy: unexpected driver connection %T", driverConn)
	}
	src := &flatRows{flat: flat, n: len(cols), i: -1}
	n, err := c.Conn().CopyFrom(ctx, pgx.Identifier{table}, cols, src)
	if err != nil {
		return err
	}
	if want := int64(len(flat) / len(cols)); n != want {
		return fmt.Errorf("copy wrote %d of %d rows", n, want)
	}
	return nil
}

// rawWriter sends writes encoded in advance (sqldb.RawWriter): the
// statements as one pgconn batch, built before the transaction.
type rawWriter struct{}

// packedBatch is statements packed as a pgconn batch. Sending a batch
// appends to it, so a batch is sent once; a retried transaction packs the
// statements again.
type packedBatch struct {
	stmts []sqldb.RawStmt
	b     *pgconn.Batch
}

func pack(stmts []sqldb.RawStmt) *packedBatch {
	p := &packedBatch{stmts: stmts, b: &pgconn.Batch{}}
	for _, st := range stmts {
		formats := make([]int16, len(st.Params))
		for i := range formats {
			formats[i] = pgx.BinaryFormatCode
		}
		p.b.ExecParams(st.SQL, st.Params, st.OIDs, formats, nil)
	}
	return p
}

// Pack implements sqldb.RawWriter.
func (rawWriter) Pack(stmts []sqldb.RawStmt) any { return pack(stmts) }

// Exec implements sqldb.RawWriter.
func (rawWriter) Exec(ctx context.Context, driverConn any, copies []sqldb.RawCopy, packed any) error {
	c, ok := driverConn.(*stdlib.Conn)
	if !ok {
		return fmt.Errorf("raw write: unexpected driver connection %T", driverConn)
	}
	p, ok := packed.(*packedBatch)
	if !ok {
		return fmt.Errorf("raw write: statements packed as %T", packed)
	}
	if p.b == nil {
		p = pack(p.stmts)
	}
	b := p.b
	p.b = nil
	pc := c.Conn().PgConn()
	var guarded []sqldb.RawCopy
	for _, cp := range copies {
		if cp.Fallback != nil {
			guarded = append(guarded, cp)
			continue
		}
		if _, err := pc.CopyFrom(ctx, bytes.NewReader(cp.Data), cp.SQL); err != nil {
			return err
		}
	}
	if len(guarded) > 0 {
		if err := copyGuarded(ctx, pc, guarded); err != nil {
			return err
		}
	}
	if len(p.stmts) == 0 {
		return nil
	}
	return execBatch(ctx, pc, b)
}

// copySavepoint guards the COPYs that have a Fallback.
const copySavepoint = "phr_copy"

// copyGuarded runs the COPYs in a savepoint; when one fails on a unique
// constraint, it rolls them all back and runs their Fallbacks instead
// (sqldb.RawCopy.Fallback).
func copyGuarded(ctx context.Context, pc *pgconn.PgConn, copies []sqldb.RawCopy) error {
	if _, err := pc.Exec(ctx, "SAVEPOINT "+copySavepoint).ReadAll(); err != nil {
		return err
	}
	for _, cp := range copies {
		_, err := pc.CopyFrom(ctx, bytes.NewReader(cp.Data), cp.SQL)
		if err == nil {
			continue
		}
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "23505" {
			return err
		}
		if _, err := pc.Exec(ctx, "ROLLBACK TO SAVEPOINT "+copySavepoint).ReadAll(); err != nil {
			return err
		}
		fallbacks := make([]sqldb.RawStmt, len(copies))
		for i, g := range copies {
			fallbacks[i] = g.Fallback()
		}
		if err := execBatch(ctx, pc, pack(fallbacks).b); err != nil {
			return err
		}
		break
	}
	_, err := pc.Exec(ctx, "RELEASE SAVEPOINT "+copySavepoint).ReadAll()
	return err
}

// execBatch sends a batch and returns the first error of its statements.
func execBatch(ctx context.Context, pc *pgconn.PgConn, b *pgconn.Batch) error {
	results, err := pc.ExecBatch(ctx, b).ReadAll()
	for _, r := range results {
		if r.Err != nil {
			return r.Err
		}
	}
	return err
}

// flatRows is a pgx.CopyFromSource over rows of n values laid end to end.
type flatRows struct {
	flat []any
	n, i int
}

func (r *flatRows) Next() bool {
	r.i++
	return (r.i+1)*r.n <= len(r.flat)
}

func (r *flatRows) Values() ([]any, error) { return r.flat[r.i*r.n : (r.i+1)*r.n], nil }

func (r *flatRows) Err() error { return nil }

// isConflict reports unique violations, serialisation failures and
// deadlocks, which a retry of the transaction may resolve.
func isConflict(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23505", "40001", "40P01":
			return true
		}
	}
	return false
}
