// Package sqldb implements store.Store over database/sql for both SQL
// dialects phr supports. The sqlite and postgres packages open the
// connections and choose the dialect; everything else - schema migrations,
// versioned writes, index maintenance, history - is shared here so that
// both stores behave the same and pass one conformance suite.
package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/phr-project/phr/internal/store"
)

// Dialect is the SQL flavour of a database.
type Dialect int

// The supported dialects.
const (
	SQLite Dialect = iota + 1
	Postgres
)

func (d Dialect) String() string {
	if d == Postgres {
		return "postgres"
	}
	return "sqlite"
}

// DB is a store.Store over a SQL database.
type DB struct {
	dialect Dialect
	// w runs write transactions; r serves reads. They are the same pool on
	// PostgreSQL; on SQLite w has a single connection (SQLite has one writer)
	// and r many read-only ones (WAL lets readers run beside the writer).
	w, r *sql.DB
	// wmu serialises write transactions on SQLite so that they queue in Go
	// rather than spin on SQLITE_BUSY.
	wmu   sync.Mutex
	stmts sync.Map // query text -> *sql.Stmt, prepared on w or r
	// params caches the search_param registry (see params.go).
	params paramIDs
	// IsConflict reports whether a driver error is a uniqueness or
	// serialisation failure that a retry of the transaction may resolve.
	isConflict func(error) bool
	// dynamicArg, when set, is passed first to ad-hoc queries (pgx's
	// QueryExecModeExec: an unnamed statement, nothing cached).
	dynamicArg any
	// reads admits single-resource reads to the read pool in arrival
	// order (nil: no limit); see Options.MaxReads.
	reads chan struct{}
	// copyFrom, when set, bulk-loads rows into a table over a driver
	// connection (PostgreSQL's COPY); see Options.CopyFrom.
	copyFrom func(ctx context.Context, driverConn any, table string, cols []string, flat []any) error
	// raw, when set, sends encoded writes over a driver connection; see
	// Options.Raw.
	raw RawWriter
	// afterCommit and beforeClose: see Options.
	afterCommit func(context.Context)
	beforeClose func() error
	// readReqs feeds the readers that coalesce Read calls (nil: Read
	// queries directly); see coalesce.go.
	readReqs  chan *readReq
	quit      chan struct{}
	closeOnce sync.Once
	readers   sync.WaitGroup
}

// Options configure New.
type Options struct {
	Dialect Dialect
	Write   *sql.DB
	Read    *sql.DB
	// IsConflict classifies driver errors (see DB.isConflict).
	IsConflict func(error) bool
	// DynamicArg is passed as the first argument of QueryDynamic queries
	// (a driver option saying not to prepare and cache them).
	DynamicArg any
	// MaxReads, when positive, is the size of the read pool: Read and
	// ReadVersion queue for it first come, first served. database/sql
	// hands a freed connection to a random waiter, so when more requests
	// than connections wait, some wait many times longer than the rest
	// (the p99 of a GET under load); a FIFO queue in front keeps the
	// waits even.
	MaxReads int
	// CoalesceReads makes Read calls that arrive while others run share
	// one statement (PostgreSQL, where the round trip is most of a read's
	// cost); Readers readers issue them (0: MaxReads). See coalesce.go.
	CoalesceReads bool
	Readers       int
	// CopyFrom, when set, loads many rows at once (PutNew's resource and
	// version rows): flat holds len(flat)/len(cols) rows of cols, and
	// driverConn is the driver's connection of the transaction
	// (sql.Conn.Raw). PostgreSQL's COPY needs no column arrays built in
	// Go and unpacked by the server.
	CopyFrom func(ctx context.Context, driverConn any, table string, cols []string, flat []any) error
	// Raw, when set, sends writes encoded in advance (PrepareNew) on the
	// driver connection of a transaction. It needs CopyFrom (which gives
	// transactions their own connection).
	Raw RawWriter
	// AfterCommit, when set, is called after each write transaction
	// commits, before the next may begin (SQLite's background checkpoints
	// count the pages written here).
	AfterCommit func(context.Context)
	// BeforeClose, when set, is called first by Close.
	BeforeClose func() error
}

// New wraps opened databases; call Migrate before use.
func New(o Options) *DB {
	if o.Read == nil {
		o.Read = o.Write
	}
	if o.IsConflict == nil {
		o.IsConflict = func(error) bool { return false }
	}
	db := &DB{dialect: o.Dialect, w: o.Write, r: o.Read, isConflict: o.IsConflict, dynamicArg: o.DynamicArg, copyFrom: o.CopyFrom, raw: o.Raw, afterCommit: o.AfterCommit, beforeClose: o.BeforeClose}
	if o.MaxReads > 0 {
		db.reads = make(chan struct{}, o.MaxReads)
	}
	if o.CoalesceReads {
		n := o.Readers
		if n <= 0 {
			n = o.MaxReads
		}
		db.startReaders(max(1, n))
	}
	return db
}

// admit waits for a turn to use the read pool (in arrival order: blocked
// channel senders are woken first in, first out) and returns the function
// that ends it.
func (db *DB) admit(ctx context.Context) (func(), error) {
	if db.reads == nil {
		return func() {}, nil
	}
	select {
	case db.reads <- struct{}{}:
		return func() { <-db.reads }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Dialect implements store.Store.
func (db *DB) Dialect() string { return db.dialect.String() }

// SQLDialect returns the dialect for packages that extend the store with
// their own tables.
func (db *DB) SQLDialect() Dialect { return db.dialect }

// WriteConns returns the size of the write pool: the transactions that
// can be open at once (1 on SQLite).
func (db *DB) WriteConns() int { return db.w.Stats().MaxOpenConnections }

// Close implements store.Store.
func (db *DB) Close() error {
	var errs []error
	if db.beforeClose != nil {
		errs = append(errs, db.beforeClose())
	}
	db.stopReaders()
	db.stmts.Range(func(_, v any) bool { v.(*sql.Stmt).Close(); return true })
	if db.r != db.w {
		errs = append(errs, db.r.Close())
	}
	errs = append(errs, db.w.Close())
	return errors.Join(errs...)
}

// Rebind turns the '?' placeholders of q into the dialect's ($1, $2... on
// PostgreSQL). Queries are written once with '?'.
func (db *DB) Rebind(q string) string { return Rebind(db.dialect, q) }

// Placeholders returns n comma-separated '?' placeholders ("?,?,?"), for
// IN lists and multi-row VALUES built for a number of rows.
func Placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

// Rebind rewrites '?' placeholders for dialect d; '?' inside single-quoted
// literals is left alone.
func Rebind(d Dialect, q string) string {
	if d != Postgres || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	inStr := false
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'':
			inStr = !inStr
			b.WriteByte(c)
		case c == '?' && !inStr:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// stmt returns a prepared statement for q (with '?' placeholders) on the
// read or the write pool, preparing it once.
func (db *DB) stmt(ctx context.Context, write bool, q string) (*sql.Stmt, error) {
	key := q
	pool := db.r
	if write {
		key = "w:" + q
		pool = db.w
	}
	if s, ok := db.stmts.Load(key); ok {
		return s.(*sql.Stmt), nil
	}
	s, err := pool.PrepareContext(ctx, db.Rebind(q))
	if err != nil {
		return nil, fmt.Errorf("prepare %q: %w", q, err)
	}
	if prev, loaded := db.stmts.LoadOrStore(key, s); loaded {
		s.Close()
		return prev.(*sql.Stmt), nil
	}
	return s, nil
}

// txOf returns the open transaction of db that ctx carries (store.WithTx),
// in which reads made with ctx must run; nil when there is none.
func (db *DB) txOf(ctx context.Context) *Tx {
	if t, ok := store.TxFrom(ctx).(*Tx); ok && t.db == db && !t.done {
		return t
	}
	return nil
}

// Query runs a read query (with '?' placeholders) on the read pool, or in
// the transaction ctx carries (store.WithTx).
func (db *DB) Query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if t := db.txOf(ctx); t != nil {
		return t.Query(ctx, q, args...)
	}
	s, err := db.stmt(ctx, false, q)
	if err != nil {
		return nil, err
	}
	return s.QueryContext(ctx, args...)
}

// QueryDynamic runs a read query built for one request (search) on the
// read pool without preparing or caching it: such queries rarely repeat,
// and the statement cache is for the fixed SQL of the store. Inside a
// transaction (store.WithTx) it runs there.
func (db *DB) QueryDynamic(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	q = db.Rebind(q)
	if db.dynamicArg != nil {
		args = append([]any{db.dynamicArg}, args...)
	}
	if t := db.txOf(ctx); t != nil {
		if err := t.flush(ctx); err != nil {
			return nil, err
		}
		return t.tx.QueryContext(ctx, q, args...)
	}
	return db.r.QueryContext(ctx, q, args...)
}

// QueryRow runs a single-row read query on the read pool, or in the
// transaction ctx carries (store.WithTx).
func (db *DB) QueryRow(ctx context.Context, q string, args ...any) *sql.Row {
	if t := db.txOf(ctx); t != nil {
		return t.QueryRow(ctx, q, args...)
	}
	s, err := db.stmt(ctx, false, q)
	if err != nil {
		return db.r.QueryRowContext(ctx, db.Rebind(q), args...)
	}
	return s.QueryRowContext(ctx, args...)
}

// Exec runs one statement outside any transaction on the write pool
// (serialised with write transactions on SQLite).
func (db *DB) Exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if db.dialect == SQLite {
		db.wmu.Lock()
		defer db.wmu.Unlock()
	}
	s, err := db.stmt(ctx, true, q)
	if err != nil {
		return nil, err
	}
	res, err := s.ExecContext(ctx, args...)
	if err == nil && db.afterCommit != nil {
		db.afterCommit(context.WithoutCancel(ctx))
	}
	return res, err
}

// Micros converts a time to the stored form (microseconds since the epoch).
func Micros(t time.Time) int64 { return t.UnixMicro() }

// FromMicros converts the stored form back to UTC time.
func FromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

const maxRetries = 8

// Write implements store.Store.
func (db *DB) Write(ctx context.Context, fn func(store.Tx) error) error {
	return db.WriteTx(ctx, func(tx *Tx) error { return fn(tx) })
}

// WriteTx is Write for extensions that need the concrete transaction (to
// run their own statements in it).
func (db *DB) WriteTx(ctx context.Context, fn func(*Tx) error) error {
	var err error
	for attempt := 0; attempt < maxRetries; attempt++ {
		err = db.writeOnce(ctx, fn)
		if err == nil || !errors.Is(err, store.ErrConflict) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(time.Duration(attempt+1) * 3 * time.Millisecond)
	}
	return err
}

// WriteTxOnce is WriteTx without its retries: a conflict (a unique key
// another transaction committed, a deadlock) fails it with
// store.ErrConflict at once, for callers that must decide anew what to
// write, or that others wait for.
func (db *DB) WriteTxOnce(ctx context.Context, fn func(*Tx) error) error {
	return db.writeOnce(ctx, fn)
}

func (db *DB) writeOnce(ctx context.Context, fn func(*Tx) error) (err error) {
	if db.dialect == SQLite {
		db.wmu.Lock()
		defer db.wmu.Unlock()
	}
	// With a bulk copy (PostgreSQL) the transaction runs on a connection
	// of its own, which the copy reaches through the driver.
	var conn *sql.Conn
	if db.copyFrom != nil {
		if conn, err = db.w.Conn(ctx); err != nil {
			return fmt.Errorf("begin transaction: %w", err)
		}
	}
	var sqlTx *sql.Tx
	if conn != nil {
		sqlTx, err = conn.BeginTx(ctx, nil)
	} else {
		sqlTx, err = db.w.BeginTx(ctx, nil)
	}
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		return fmt.Errorf("begin transaction: %w", err)
	}
	tx := &Tx{db: db, tx: sqlTx, conn: conn, rids: map[resKey]ridVersion{}, stmts: map[string]*sql.Stmt{}, queued: map[int64]bool{}}
	defer func() {
		tx.done = true
		if err != nil {
			sqlTx.Rollback()
		}
		if conn != nil {
			conn.Close()
		}
		// Not waited for: preparing needs a connection of the pool, and
		// callers may hold the others while they wait for this write to
		// return (the importer's later chunk waits for the earlier one);
		// a wait here, invisible to the database, could close a cycle.
		if len(tx.unprepared) > 0 {
			go tx.prepareNew(context.WithoutCancel(ctx))
		}
		if err != nil {
			if db.isConflict(err) && !errors.Is(err, store.ErrConflict) {
				err = fmt.Errorf("%w: %v", store.ErrConflict, err)
			}
		}
	}()
	if err = fn(tx); err != nil {
		return err
	}
	if err = tx.flush(ctx); err != nil {
		return err
	}
	if err = sqlTx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	db.params.add(tx.newParams)
	if db.afterCommit != nil {
		db.afterCommit(context.WithoutCancel(ctx))
	}
	return nil
}
