package sqldb

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/phr-project/phr/internal/store"
)

// A bulk writer's transaction (the importer's chunk) is one connection
// running one statement after another: while this process builds and
// encodes the next statement's values the server waits, and while the
// server inserts this process waits. On PostgreSQL the new resources of a
// chunk can instead be made ready before the transaction starts, while
// the previous chunk is still being written: their ids are drawn from the
// sequences (outside any transaction; a rolled-back chunk leaves a gap,
// as any rollback does), and their resource, version, index and
// compartment rows are encoded as binary COPY data. The transaction then
// only sends bytes: a COPY per table, then one pipelined batch of the
// statements callers add, with no encoding between statements.

// RawCopy is a COPY ... FROM STDIN with its data, encoded already.
type RawCopy struct {
	SQL  string
	Data []byte
	// Fallback, when set, returns what to run instead if this COPY, or
	// another with a Fallback in the same batch, fails on a unique
	// constraint: typically rows not expected to exist yet, and an INSERT
	// of them with ON CONFLICT. A COPY writes rows in bulk, and costs the
	// server less than INSERT ... SELECT FROM unnest, which inserts them
	// one by one, and less again than ON CONFLICT, which probes the
	// unique index first. Such COPYs run after the others, in a
	// savepoint; a conflict rolls them all back and runs every Fallback
	// instead. It is called only then, so the statement is encoded only
	// when needed.
	Fallback func() RawStmt
	// pool is 1 + the copyBufs pool Data's buffer goes back to on
	// NewBatch.Release; 0 for none.
	pool int
}

// TextCopy returns the COPY of rows of text values (strings) into
// table's columns, with fallback (see RawCopy.Fallback; nil for none).
func TextCopy(table string, cols []string, rows [][]any, fallback func() RawStmt) (RawCopy, error) {
	c := newCopyBuf(bufText)
	for _, row := range rows {
		if len(row) != len(cols) {
			return RawCopy{}, fmt.Errorf("COPY %s: a row of %d values for %d columns", table, len(row), len(cols))
		}
		c.startRow(len(row))
		for _, v := range row {
			s, ok := v.(string)
			if !ok {
				return RawCopy{}, fmt.Errorf("COPY %s: a %T value, not text", table, v)
			}
			c.text(s)
		}
	}
	cp := c.copy("COPY " + table + " (" + strings.Join(cols, ", ") + ") FROM STDIN BINARY")
	cp.Fallback = fallback
	return cp, nil
}

// RawStmt is a statement ($n placeholders) with its parameters encoded
// already in binary form, of the types OIDs name.
type RawStmt struct {
	SQL    string
	OIDs   []uint32
	Params [][]byte
}

// PostgreSQL type OIDs of the binary values encoded here.
const (
	oidInt8        = 20
	oidText        = 25
	oidFloat8      = 701
	oidInt8Array   = 1016
	oidTextArray   = 1009
	oidFloat8Array = 1022
)

// ArrayCol accumulates the elements of a one-dimensional array parameter
// in PostgreSQL's binary format (no NULL elements).
type ArrayCol struct {
	elem uint32
	n    int
	body []byte
}

// arrayHeader is the size of a one-dimensional array's header, which
// body starts with (filled in by bytes).
const arrayHeader = 20

// NewArrayCol returns an empty column of the element type "bigint",
// "text" or "double precision".
func NewArrayCol(elem string) *ArrayCol {
	c := &ArrayCol{elem: oidText, body: make([]byte, arrayHeader, 4096)}
	switch elem {
	case "bigint":
		c.elem = oidInt8
	case "double precision":
		c.elem = oidFloat8
	}
	return c
}

// Int appends a bigint element.
func (c *ArrayCol) Int(v int64) {
	c.body = binary.BigEndian.AppendUint32(c.body, 8)
	c.body = binary.BigEndian.AppendUint64(c.body, uint64(v))
	c.n++
}

// Float appends a double precision element.
func (c *ArrayCol) Float(v float64) {
	c.body = binary.BigEndian.AppendUint32(c.body, 8)
	c.body = binary.BigEndian.AppendUint64(c.body, math.Float64bits(v))
	c.n++
}

// Text appends a text element.
func (c *ArrayCol) Text(s string) {
	c.body = binary.BigEndian.AppendUint32(c.body, uint32(len(s)))
	c.body = append(c.body, s...)
	c.n++
}

// Len is the number of elements.
func (c *ArrayCol) Len() int { return c.n }

// arrayOID is the OID of the array type of c's elements.
func (c *ArrayCol) arrayOID() uint32 {
	switch c.elem {
	case oidInt8:
		return oidInt8Array
	case oidFloat8:
		return oidFloat8Array
	}
	return oidTextArray
}

// castName is the SQL name of the array type of c's elements.
func (c *ArrayCol) castName() string {
	switch c.elem {
	case oidInt8:
		return "bigint[]"
	case oidFloat8:
		return "double precision[]"
	}
	return "text[]"
}

// bytes returns the array's binary form (its header written into the
// space left at the start of body).
func (c *ArrayCol) bytes() []byte {
	h := c.body[:0]
	h = binary.BigEndian.AppendUint32(h, 1) // dimensions
	h = binary.BigEndian.AppendUint32(h, 0) // no NULL elements
	h = binary.BigEndian.AppendUint32(h, c.elem)
	h = binary.BigEndian.AppendUint32(h, uint32(c.n))
	binary.BigEndian.AppendUint32(h, 1) // lower bound
	return c.body
}

// ArrayInsert returns the statement that inserts the rows held by the
// columns (all of the same length) into table: INSERT ... SELECT * FROM
// unnest($1::type[], ...) followed by suffix.
func ArrayInsert(table string, cols []string, vals []*ArrayCol, suffix string) RawStmt {
	casts := make([]string, len(vals))
	st := RawStmt{OIDs: make([]uint32, len(vals)), Params: make([][]byte, len(vals))}
	for i, c := range vals {
		casts[i] = fmt.Sprintf("$%d::%s", i+1, c.castName())
		st.OIDs[i] = c.arrayOID()
		st.Params[i] = c.bytes()
	}
	st.SQL = "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") SELECT * FROM unnest(" + strings.Join(casts, ", ") + ")" + suffix
	return st
}

// copyBuf encodes rows in the binary COPY format.
type copyBuf struct {
	b    []byte
	n    int // rows begun (startRow)
	pool int // its copyBufs pool
}

// The pools of copyBufs' buffers, by what they hold: the index tables
// (tToken...), then these. A chunk's COPY data for a table is about the
// size of the chunk's before, so the buffers of a written batch
// (NewBatch.Release) serve the next ones: growing new ones by appending
// allocated about three times the data (740 MB for an import of 250 MB
// of COPY data, a third of the import's allocations), all of it garbage
// to collect.
const (
	bufResource = numTables + iota
	bufVersion
	bufCompartment
	bufText // TextCopy's
	numBufPools
)

var copyBufs [numBufPools]sync.Pool // of *[]byte

// maxPooledCopy is the largest buffer kept for reuse; a bigger one (a
// chunk of huge resources) goes to the garbage collector.
const maxPooledCopy = 16 << 20

// newCopyBuf returns an empty COPY buffer, from the pool's spares when it
// has one.
func newCopyBuf(pool int) *copyBuf {
	var b []byte
	if p, ok := copyBufs[pool].Get().(*[]byte); ok {
		b = (*p)[:0]
	}
	b = append(b, "PGCOPY\n\xff\r\n\x00"...)
	b = binary.BigEndian.AppendUint32(b, 0) // flags
	b = binary.BigEndian.AppendUint32(b, 0) // header extension length
	return &copyBuf{b: b, pool: pool}
}

// copy returns the COPY of sql with the buffer's rows, its buffer to go
// back to its pool on Release.
func (c *copyBuf) copy(sql string) RawCopy {
	return RawCopy{SQL: sql, Data: c.done(), pool: c.pool + 1}
}

// recycle puts the buffer back in its pool unused.
func (c *copyBuf) recycle() { putCopyBuf(c.pool, c.b) }

// putCopyBuf keeps b, emptied, for a later buffer of the pool.
func putCopyBuf(pool int, b []byte) {
	if cap(b) <= maxPooledCopy {
		b = b[:0]
		copyBufs[pool].Put(&b)
	}
}

// row encodes a row of newRow's values: int64, string, bool, []byte or
// nil (NULL).
func (c *copyBuf) row(vals []any) error {
	c.startRow(len(vals))
	for _, v := range vals {
		switch v := v.(type) {
		case nil:
			c.null()
		case int64:
			c.int8(v)
		case string:
			c.text(v)
		case bool:
			c.bool(v)
		case []byte:
			c.bytea(v)
		default:
			return fmt.Errorf("binary COPY: no encoding for a %T value", v)
		}
	}
	return nil
}

// startRow begins a row of fields values, which the caller appends next.
func (c *copyBuf) startRow(fields int) {
	c.b = binary.BigEndian.AppendUint16(c.b, uint16(fields))
	c.n++
}

func (c *copyBuf) null() { c.b = binary.BigEndian.AppendUint32(c.b, math.MaxUint32) }
func (c *copyBuf) int8(v int64) {
	c.b = binary.BigEndian.AppendUint32(c.b, 8)
	c.b = binary.BigEndian.AppendUint64(c.b, uint64(v))
}
func (c *copyBuf) int4(v int32) {
	c.b = binary.BigEndian.AppendUint32(c.b, 4)
	c.b = binary.BigEndian.AppendUint32(c.b, uint32(v))
}
func (c *copyBuf) float8(v float64) {
	c.b = binary.BigEndian.AppendUint32(c.b, 8)
	c.b = binary.BigEndian.AppendUint64(c.b, math.Float64bits(v))
}
func (c *copyBuf) text(s string) {
	c.b = binary.BigEndian.AppendUint32(c.b, uint32(len(s)))
	c.b = append(c.b, s...)
}
func (c *copyBuf) bytea(p []byte) {
	c.b = binary.BigEndian.AppendUint32(c.b, uint32(len(p)))
	c.b = append(c.b, p...)
}
func (c *copyBuf) bool(v bool) {
	c.b = binary.BigEndian.AppendUint32(c.b, 1)
	if v {
		c.b = append(c.b, 1)
	} else {
		c.b = append(c.b, 0)
	}
}
func (c *copyBuf) done() []byte { return binary.BigEndian.AppendUint16(c.b, math.MaxUint16) }

// RawWriter sends encoded writes on a driver connection (see
// Options.Raw).
type RawWriter interface {
	// Pack turns statements into the form Exec sends; it runs before the
	// transaction, so that Exec has nothing left to encode.
	Pack(stmts []RawStmt) any
	// Exec runs the copies one after the other (those with a Fallback
	// last, in a savepoint), then the packed statements in one round
	// trip, on driverConn (sql.Conn.Raw).
	Exec(ctx context.Context, driverConn any, copies []RawCopy, packed any) error
}

// NewBatch is the new resources of PrepareNew, ready to write.
type NewBatch struct {
	db *DB
	// puts are the resources when not Encoded; keys name them (in the
	// order of puts) once PrepareNew has checked them, and rids too when
	// Encoded (the encoded rows are all the transaction needs, and the
	// resources' text and index entries can be let go meanwhile).
	puts []*store.Put
	keys []resKey
	rids []int64
	// copies and stmts are the encoded writes (PostgreSQL); nil when the
	// batch goes through PutNew in the transaction instead (SQLite, or a
	// search parameter met for the first time, which the transaction
	// registers).
	copies []RawCopy
	stmts  []RawStmt
	// packed is stmts made ready to send (Seal); nil until then.
	packed any
	// encoded says PrepareNew encoded the rows (copies, until Release).
	// Only it sets it, before the batch is shared: a batch being
	// prepared reads it from batches written or released meanwhile
	// (PrepareNew's after).
	encoded bool
	// released says the encoded rows were handed back (Release).
	released bool
	// lite are the rows of a SQLite batch, built before the transaction
	// (litebatch.go); nil elsewhere, and when PutNew must register a
	// search parameter first.
	lite *liteRows
}

// Release hands the batch's encoded rows back for later batches to reuse
// their memory, once PutNewPrepared has written them, or if the batch is
// not sent at all. Not after PutNewPrepared failed: a COPY the server
// broke off may still be read by the driver. PutNewPrepared fails after
// it. Its rids and keys stay, for the batches that name its resources
// (PrepareNew's after).
func (b *NewBatch) Release() {
	if b.lite != nil {
		b.lite, b.puts, b.released = nil, nil, true
		return
	}
	if !b.Encoded() {
		return
	}
	for _, c := range b.copies {
		if c.pool > 0 {
			putCopyBuf(c.pool-1, c.Data)
		}
	}
	b.copies, b.stmts, b.packed, b.released = nil, nil, nil, true
}

// Encoded reports whether the batch's rows are encoded statements, to
// which the caller may Add its own; when not, PutNewPrepared is PutNew.
func (b *NewBatch) Encoded() bool { return b.encoded }

// AddCopy appends COPYs to send after the batch's rows (and before the
// statements of Add). Only for an Encoded batch.
func (b *NewBatch) AddCopy(copies ...RawCopy) {
	b.copies = append(b.copies, copies...)
}

// Add appends statements to send after the batch's rows, in the same
// round trip. Only for an Encoded batch.
func (b *NewBatch) Add(stmts ...RawStmt) {
	b.stmts = append(b.stmts, stmts...)
	b.packed = nil
}

// Seal makes the statements ready to send. PutNewPrepared seals a batch
// that is not; sealing first moves that work out of the transaction.
func (b *NewBatch) Seal() {
	if b.Encoded() && b.packed == nil {
		b.packed = b.db.raw.Pack(b.stmts)
	}
}

// PrepareNew readies first versions of new resources for PutNewPrepared
// in a later transaction. On PostgreSQL it draws their ids and sequence
// numbers and encodes all their rows; on SQLite it builds their rows,
// which the transaction completes with the ids it draws (litebatch.go).
// The puts must not change until they are written.
//
// The rows of references name their targets by rid where the targets
// exist (see newTargets); after are batches whose resources count as
// existing: batches being written whose transactions commit before this
// batch's does, or else this batch's transaction does not commit (the
// importer's chunks in flight).
func (db *DB) PrepareNew(ctx context.Context, puts []*store.Put, after ...*NewBatch) (*NewBatch, error) {
	b := &NewBatch{db: db, puts: puts}
	if len(puts) == 0 || (db.dialect == Postgres && db.raw == nil) {
		return b, nil
	}
	seen := make(map[resKey]bool, len(puts))
	keys := make([]resKey, len(puts))
	for i, p := range puts {
		if p.Version != 1 {
			return nil, fmt.Errorf("PrepareNew: %s/%s version %d is not a first version", p.Type, p.ID, p.Version)
		}
		k := resKey{p.Type, p.ID}
		if seen[k] {
			return nil, fmt.Errorf("PrepareNew: %s/%s is in the batch twice", p.Type, p.ID)
		}
		seen[k] = true
		keys[i] = k
	}
	b.keys = keys
	if db.dialect != Postgres {
		if lr, ok := db.prepareLite(puts); ok {
			b.lite = lr
		}
		return b, nil
	}
	rids, seqs, err := db.allocateAsync(ctx, len(puts), len(puts))
	if err != nil {
		return nil, err
	}
	targets, err := db.newTargets(ctx, puts, rids, after)
	if err != nil {
		return nil, err
	}
	var enc newEncoder
	if !enc.index(db, puts, rids, targets) {
		return b, nil // an unregistered parameter: PutNew registers it
	}
	res, ver := newCopyBuf(bufResource), newCopyBuf(bufVersion)
	size := 0
	for _, p := range puts {
		size += 120 + len(p.Type) + len(p.Method) + len(p.Blob) + len(p.JSON)
	}
	ver.b = slices.Grow(ver.b, size)
	res.b = slices.Grow(res.b, len(puts)*(80+len(puts[0].ID)))
	// The values and their order are newRow's, which PutNew writes too.
	nr := len(newResourceCols)
	for i, p := range puts {
		r := newRow(p, rids[i], seqs[i])
		if err := res.row(r[:nr]); err != nil {
			return nil, err
		}
		if err := ver.row(r[nr:]); err != nil {
			return nil, err
		}
	}
	b.rids = rids
	for i, p := range puts {
		p.Seq = seqs[i]
	}
	b.puts = nil
	b.encoded = true
	b.copies = append([]RawCopy{
		res.copy("COPY resource (" + strings.Join(newResourceCols, ", ") + ") FROM STDIN BINARY"),
		ver.copy("COPY resource_version (" + strings.Join(newVersionCols, ", ") + ") FROM STDIN BINARY"),
	}, enc.copies()...)
	return b, nil
}

// registeredPID returns the ids of typ's search parameters by code for
// writeIndexRows, before a transaction: errUnregistered for a parameter
// not registered yet (PutNew registers it in its transaction).
func (db *DB) registeredPID(typ string) func(code string) (int64, error) {
	ids := db.params.forType(typ)
	return func(code string) (int64, error) {
		if id, ok := ids[code]; ok {
			return id, nil
		}
		return 0, errUnregistered
	}
}

// errUnregistered is PrepareNew's answer for a search parameter that has
// no id yet (PutNew registers it).
var errUnregistered = errors.New("search parameter not registered yet")

// newEncoder encodes the index and compartment rows of new resources as
// binary COPY data, one buffer per table. COPY puts a page's worth of
// rows in the heap at a time, with one WAL record per page, where
// INSERT ... SELECT FROM unnest(arrays) first materialised the unnested
// rows and then inserted and logged them one by one.
type newEncoder struct {
	bufs [numTables]*copyBuf
	comp *copyBuf
}

// index encodes the rows, with the reference targets' rids from targets;
// false means a parameter is not registered yet.
func (e *newEncoder) index(db *DB, puts []*store.Put, rids []int64, targets map[resKey]int64) bool {
	for i := range e.bufs {
		e.bufs[i] = newCopyBuf(i)
	}
	e.comp = newCopyBuf(bufCompartment)
	sink := &copySink{bufs: &e.bufs, rids: targets}
	for k, p := range puts {
		if p.Deleted {
			continue
		}
		rid := rids[k]
		for j, pat := range p.Patients {
			dup := false
			for _, q := range p.Patients[:j] {
				dup = dup || q == pat
			}
			if !dup {
				e.comp.startRow(2)
				e.comp.text(pat)
				e.comp.int8(rid)
			}
		}
		x := p.Index
		if x == nil {
			continue
		}
		pid := db.registeredPID(p.Type)
		// An unregistered parameter or a composite PutNew reports
		// (false: the caller falls back to it).
		if err := writeIndexRows(x, rid, pid, sink); err != nil {
			return false
		}
	}
	return true
}

// copies returns the COPYs of the non-empty tables. The compartment
// rows of new resources cannot exist yet and are unique per resource, so
// they need no ON CONFLICT (which COPY could not do).
func (e *newEncoder) copies() []RawCopy {
	var out []RawCopy
	for i, tb := range indexTables {
		if e.bufs[i].n > 0 {
			out = append(out, e.bufs[i].copy("COPY "+tb.name+" ("+strings.Join(tb.cols, ", ")+") FROM STDIN BINARY"))
		} else {
			e.bufs[i].recycle()
		}
	}
	if e.comp.n > 0 {
		out = append(out, e.comp.copy("COPY compartment (patient, rid) FROM STDIN BINARY"))
	} else {
		e.comp.recycle()
	}
	return out
}

// PutNewPrepared writes a batch of PrepareNew (and the statements Added
// to it): what PutNew would write. A batch that is not Encoded is PutNew.
func (t *Tx) PutNewPrepared(ctx context.Context, b *NewBatch) error {
	if b.released {
		return fmt.Errorf("PutNewPrepared: the batch was released")
	}
	if !b.Encoded() && b.lite == nil {
		return t.PutNew(ctx, b.puts)
	}
	for _, k := range b.keys {
		if _, known := t.rids[k]; known {
			return fmt.Errorf("%w: %s/%s was already written", store.ErrConflict, k.typ, k.id)
		}
	}
	if b.lite != nil {
		return t.putNewLite(ctx, b)
	}
	if t.conn == nil {
		return fmt.Errorf("PutNewPrepared: the transaction has no connection for raw writes")
	}
	b.Seal()
	err := t.conn.Raw(func(dc any) error {
		return t.db.raw.Exec(ctx, dc, b.copies, b.packed)
	})
	if err != nil {
		return t.batchErr(err)
	}
	for i, k := range b.keys {
		t.rids[k] = ridVersion{b.rids[i], 1}
	}
	return nil
}

// allocateAsync draws ids and sequence numbers in a transaction of their
// own that commits without waiting for the disk: drawing from a sequence
// writes WAL, so an ordinary commit waits for a flush (about 8 ms here,
// once per chunk). The numbers are only used by later transactions, whose
// commit records follow in the WAL: a crash that loses the draw loses
// them too.
func (db *DB) allocateAsync(ctx context.Context, nr, ns int) (rids, seqs []int64, err error) {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("allocate resource ids: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "SET LOCAL synchronous_commit = off"); err != nil {
		return nil, nil, fmt.Errorf("allocate resource ids: %w", err)
	}
	if rids, seqs, err = allocatePostgres(ctx, tx, nr, ns); err != nil {
		return nil, nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, nil, fmt.Errorf("allocate resource ids: %w", err)
	}
	return rids, seqs, nil
}

// queryer runs a query: a *sql.DB or a *sql.Tx.
type queryer interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

// allocatePostgres draws nr resource ids and ns version sequence numbers.
func allocatePostgres(ctx context.Context, q queryer, nr, ns int) (rids, seqs []int64, err error) {
	rids = make([]int64, nr)
	seqs = make([]int64, ns)
	// One statement draws both. The sequences are named once per
	// statement (the uncorrelated subqueries run once): as the argument
	// of nextval, pg_get_serial_sequence ran for every row.
	r, err := q.QueryContext(ctx, `SELECT CASE WHEN g <= $1::int THEN nextval((SELECT pg_get_serial_sequence('resource', 'rid')::regclass)) END,
		CASE WHEN g <= $2::int THEN nextval((SELECT pg_get_serial_sequence('resource_version', 'seq')::regclass)) END
		FROM generate_series(1, GREATEST($1::int, $2::int)) AS g`, nr, ns)
	if err != nil {
		return nil, nil, fmt.Errorf("allocate resource ids: %w", err)
	}
	defer r.Close()
	i := 0
	for ; r.Next(); i++ {
		var rid, seq sql.NullInt64
		if err := r.Scan(&rid, &seq); err != nil {
			return nil, nil, fmt.Errorf("allocate resource ids: %w", err)
		}
		if i < nr {
			rids[i] = rid.Int64
		}
		if i < ns {
			seqs[i] = seq.Int64
		}
	}
	if err := r.Err(); err != nil || i != max(nr, ns) {
		return nil, nil, fmt.Errorf("allocate resource ids: got %d of %d: %v", i, max(nr, ns), err)
	}
	return rids, seqs, nil
}
