package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/store"
)

type resKey struct{ typ, id string }

type ridVersion struct {
	rid     int64
	version int64
}

// Tx is a write transaction. Index entries are buffered and written in
// multi-row inserts when the transaction commits or before it queries.
type Tx struct {
	db *DB
	tx *sql.Tx
	// conn is the connection tx runs on when the store bulk-copies
	// (DB.copyFrom); nil otherwise.
	conn  *sql.Conn
	rids  map[resKey]ridVersion
	stmts map[string]*sql.Stmt
	pend  pending
	// queued marks resources with index rows in pend; updating one of them
	// again first flushes, so its superseded rows are cleared, not kept.
	queued map[int64]bool
	// unprepared are statements to prepare on the pool after the transaction.
	unprepared []string
	// done is set when the transaction has ended: a context that still
	// carries it (store.WithTx) reads from the pools again.
	done bool
	// On SQLite the transaction is the only writer, so it numbers new
	// resources and versions itself (from the maxima read once) rather
	// than asking for each generated key back; every row it writes to
	// resource and resource_version takes its keys from here.
	idsLoaded        bool
	nextRid, nextSeq int64
	// newParams are the search parameters (type -> code -> id) this
	// transaction registered; they join the cache when it commits.
	newParams map[string]map[string]int64
	// targets caches the rids of reference targets looked up by this
	// transaction (0: the resource did not exist); t.rids comes first.
	targets map[resKey]int64
}

// pending holds index rows not yet inserted, as flat argument lists.
type pending struct {
	tables [numTables][]any
	rows   [numTables]int
	comp   []any
	nComp  int
	// clear lists resources whose old index rows must go before the
	// pending rows are inserted.
	clear []any
	// targets are the reference rows' target_rid values to fill in
	// (places in tables[tRef]) before the rows are inserted.
	targets []targetSlot
}

// targetSlot is the place of a reference row's target_rid among the
// pending values, and the target it names.
type targetSlot struct {
	at  int
	key resKey
}

const (
	tToken = iota
	tString
	tDate
	tRef
	tQuantity
	tNumber
	tURI
	tComposite
	numTables
)

var indexTables = [numTables]struct {
	name string
	cols []string
}{
	{"idx_token", []string{"rid", "pid", "system", "code", "text", "type_system", "type_code"}},
	{"idx_string", []string{"rid", "pid", "norm", "exact"}},
	{"idx_date", []string{"rid", "pid", "low", "high"}},
	{"idx_ref", []string{"rid", "pid", "target_type", "target_id", "version", "url", "id_system", "id_value", "target_rid"}},
	{"idx_quantity", []string{"rid", "pid", "value", "low", "high", "text", "system", "code", "unit"}},
	{"idx_number", []string{"rid", "pid", "value", "low", "high", "text"}},
	{"idx_uri", []string{"rid", "pid", "value"}},
	{"idx_composite", []string{"rid", "pid", "parts"}},
}

// rowsPerInsert is how many rows one multi-row INSERT carries.
const rowsPerInsert = 200

// Stmt returns q (with '?' placeholders) prepared in this transaction.
// Statements are prepared once on the write pool and reused by every
// transaction; one first met inside a transaction is prepared in the
// transaction (the pool's only SQLite connection is busy) and on the pool
// once the transaction ends.
func (t *Tx) Stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if s, ok := t.stmts[q]; ok {
		return s, nil
	}
	var s *sql.Stmt
	if ps, ok := t.db.stmts.Load("w:" + q); ok {
		s = t.tx.StmtContext(ctx, ps.(*sql.Stmt))
	} else {
		var err error
		s, err = t.tx.PrepareContext(ctx, t.db.Rebind(q))
		if err != nil {
			return nil, fmt.Errorf("prepare %q: %w", q, err)
		}
		t.unprepared = append(t.unprepared, q)
	}
	t.stmts[q] = s
	return s, nil
}

// prepareNew prepares on the pool the statements this transaction met first.
func (t *Tx) prepareNew(ctx context.Context) {
	for _, q := range t.unprepared {
		t.db.stmt(ctx, true, q)
	}
}

// Exec runs a statement in the transaction.
func (t *Tx) Exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	s, err := t.Stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return s.ExecContext(ctx, args...)
}

// Query runs a query in the transaction (pending index rows are written
// first so that the query sees them).
func (t *Tx) Query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if err := t.flush(ctx); err != nil {
		return nil, err
	}
	s, err := t.Stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return s.QueryContext(ctx, args...)
}

// QueryRow runs a single-row query in the transaction.
func (t *Tx) QueryRow(ctx context.Context, q string, args ...any) *sql.Row {
	if err := t.flush(ctx); err != nil {
		return t.tx.QueryRowContext(ctx, "SELECT 1 WHERE 1=0")
	}
	s, err := t.Stmt(ctx, q)
	if err != nil {
		return t.tx.QueryRowContext(ctx, t.db.Rebind(q), args...)
	}
	return s.QueryRowContext(ctx, args...)
}

// Dialect returns the transaction's SQL dialect.
func (t *Tx) Dialect() Dialect { return t.db.dialect }

// Current implements store.Tx.
func (t *Tx) Current(ctx context.Context, typ, id string) (*store.Resource, error) {
	var (
		res     = store.Resource{Type: typ, ID: id}
		rid, lu int64
		blob    sql.NullString
		err     error
	)
	if t.db.dialect == Postgres {
		// Lock the resource row on its own: with a join, a row updated by
		// the writer we waited for would fail the re-checked join condition
		// and vanish from the result. The version row is then read in a
		// second statement, whose fresh snapshot sees that writer's commit.
		err = t.queryRow(ctx, `SELECT rid, version, seq, last_updated, deleted FROM resource WHERE type = ? AND id = ? FOR UPDATE`, typ, id).
			Scan(&rid, &res.Version, &res.Seq, &lu, &res.Deleted)
		if err == nil {
			err = t.queryRow(ctx, `SELECT method, json, blob FROM resource_version WHERE seq = ?`, res.Seq).Scan(&res.Method, &res.JSON, &blob)
		}
	} else {
		err = t.queryRow(ctx, `SELECT r.rid, r.version, r.seq, r.last_updated, r.deleted, v.method, v.json, v.blob
			FROM resource r JOIN resource_version v ON v.seq = r.seq WHERE r.type = ? AND r.id = ?`, typ, id).
			Scan(&rid, &res.Version, &res.Seq, &lu, &res.Deleted, &res.Method, &res.JSON, &blob)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read %s/%s for update: %w", typ, id, err)
	}
	res.LastUpdated = FromMicros(lu)
	res.Blob = blob.String
	t.rids[resKey{typ, id}] = ridVersion{rid, res.Version}
	return &res, nil
}

// Put implements store.Tx.
func (t *Tx) Put(ctx context.Context, p *store.Put) error {
	key := resKey{p.Type, p.ID}
	cur, known := t.rids[key]
	if !known && p.Version > 1 {
		if _, err := t.Current(ctx, p.Type, p.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		cur, known = t.rids[key]
	}
	if (known && p.Version != cur.version+1) || (!known && p.Version != 1) {
		return fmt.Errorf("%w: %s/%s version %d does not follow the current version", store.ErrConflict, p.Type, p.ID, p.Version)
	}
	lu := Micros(p.LastUpdated)
	var blob any
	if p.Blob != "" {
		blob = p.Blob
	}
	var batch any
	if p.Batch != 0 {
		batch = p.Batch
	}
	var json any = p.JSON
	if p.Deleted {
		json = nil
	}
	var rid int64
	if known {
		rid = cur.rid
		var seq int64
		var err error
		if t.db.dialect == Postgres {
			err = t.queryRow(ctx, `INSERT INTO resource_version (rid, type, version, last_updated, deleted, method, batch, blob, json)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq`,
				rid, p.Type, p.Version, lu, p.Deleted, p.Method, batch, blob, json).Scan(&seq)
		} else {
			var seqs []int64
			if _, seqs, err = t.allocate(ctx, 0, 1); err == nil {
				seq = seqs[0]
				_, err = t.Exec(ctx, `INSERT INTO resource_version (seq, rid, type, version, last_updated, deleted, method, batch, blob, json)
					VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
					seq, rid, p.Type, p.Version, lu, p.Deleted, p.Method, batch, blob, json)
			}
		}
		if err != nil {
			return t.writeErr(err, p)
		}
		res, err := t.Exec(ctx, `UPDATE resource SET version = ?, seq = ?, last_updated = ?, deleted = ? WHERE rid = ? AND version = ?`,
			p.Version, seq, lu, p.Deleted, rid, cur.version)
		if err != nil {
			return t.writeErr(err, p)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("%w: %s/%s changed concurrently", store.ErrConflict, p.Type, p.ID)
		}
		p.Seq = seq
		if t.queued[rid] {
			if err := t.flush(ctx); err != nil {
				return err
			}
		}
		t.pend.clear = append(t.pend.clear, rid)
	} else {
		var seq int64
		if t.db.dialect == Postgres {
			err := t.queryRow(ctx, `WITH s AS (SELECT nextval(pg_get_serial_sequence('resource_version', 'seq')) AS seq),
				r AS (INSERT INTO resource (type, id, version, seq, last_updated, deleted) SELECT ?, ?, ?, s.seq, ?, ? FROM s RETURNING rid, seq)
				INSERT INTO resource_version (seq, rid, type, version, last_updated, deleted, method, batch, blob, json)
				SELECT r.seq, r.rid, ?, ?, ?, ?, ?, ?::bigint, ?::text, ?::bytea FROM r RETURNING rid, seq`,
				p.Type, p.ID, p.Version, lu, p.Deleted,
				p.Type, p.Version, lu, p.Deleted, p.Method, batch, blob, json).Scan(&rid, &seq)
			if err != nil {
				return t.writeErr(err, p)
			}
		} else {
			// Two plain inserts with keys numbered here: no RETURNING,
			// and no second write of the resource row to set its seq.
			rids, seqs, err := t.allocate(ctx, 1, 1)
			if err != nil {
				return err
			}
			rid, seq = rids[0], seqs[0]
			if _, err := t.Exec(ctx, `INSERT INTO resource (rid, type, id, version, seq, last_updated, deleted) VALUES (?, ?, ?, ?, ?, ?, ?)`,
				rid, p.Type, p.ID, p.Version, seq, lu, p.Deleted); err != nil {
				return t.writeErr(err, p)
			}
			if _, err := t.Exec(ctx, `INSERT INTO resource_version (seq, rid, type, version, last_updated, deleted, method, batch, blob, json)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				seq, rid, p.Type, p.Version, lu, p.Deleted, p.Method, batch, blob, json); err != nil {
				return t.writeErr(err, p)
			}
		}
		p.Seq = seq
	}
	t.rids[key] = ridVersion{rid, p.Version}
	if !p.Deleted {
		if err := t.queue(ctx, rid, p); err != nil {
			return err
		}
		t.queued[rid] = true
	}
	return t.flushIfFull(ctx)
}

// flushIfFull writes the pending index rows once there are many.
func (t *Tx) flushIfFull(ctx context.Context) error {
	if len(t.pend.clear) > 500 || t.pend.pendingRows() > 20000 {
		return t.flush(ctx)
	}
	return nil
}

// Reindex implements store.Reindexer.
func (t *Tx) Reindex(ctx context.Context, cur *store.Resource, e *index.Entries, patients []string) error {
	rv, ok := t.rids[resKey{cur.Type, cur.ID}]
	if !ok || rv.version != cur.Version || cur.Deleted {
		return fmt.Errorf("reindex %s/%s: version %d is not the current version read in this transaction", cur.Type, cur.ID, cur.Version)
	}
	if t.queued[rv.rid] {
		if err := t.flush(ctx); err != nil {
			return err
		}
	}
	t.pend.clear = append(t.pend.clear, rv.rid)
	if err := t.queue(ctx, rv.rid, &store.Put{Resource: *cur, Index: e, Patients: patients}); err != nil {
		return err
	}
	t.queued[rv.rid] = true
	return t.flushIfFull(ctx)
}

func (t *Tx) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	s, err := t.Stmt(ctx, q)
	if err != nil {
		return t.tx.QueryRowContext(ctx, t.db.Rebind(q), args...)
	}
	return s.QueryRowContext(ctx, args...)
}

func (t *Tx) writeErr(err error, p *store.Put) error {
	if t.db.isConflict(err) {
		return fmt.Errorf("%w: %s/%s: %v", store.ErrConflict, p.Type, p.ID, err)
	}
	return fmt.Errorf("write %s/%s version %d: %w", p.Type, p.ID, p.Version, err)
}

func (p *pending) pendingRows() int {
	n := p.nComp
	for _, r := range p.rows {
		n += r
	}
	return n
}

// queue buffers the index and compartment rows of a version.
func (t *Tx) queue(ctx context.Context, rid int64, p *store.Put) error {
	typ := p.Type
	for _, pat := range p.Patients {
		t.pend.comp = append(t.pend.comp, pat, rid)
		t.pend.nComp++
	}
	e := p.Index
	if e == nil {
		return nil
	}
	ids := t.db.params.forType(typ)
	pid := func(code string) (int64, error) {
		if id, ok := ids[code]; ok {
			return id, nil
		}
		return t.paramID(ctx, typ, code)
	}
	if err := writeIndexRows(e, rid, pid, &pendingSink{p: &t.pend}); err != nil {
		return fmt.Errorf("index %s/%s: %w", p.Type, p.ID, err)
	}
	return nil
}

// flush deletes the superseded index rows and inserts the pending ones.
func (t *Tx) flush(ctx context.Context) error {
	if len(t.pend.clear) > 0 && t.db.dialect == Postgres {
		// Old index and compartment rows of updated resources go first:
		// one statement per table with the ids as an array.
		ids := make([]int64, len(t.pend.clear))
		for i, v := range t.pend.clear {
			ids[i] = v.(int64)
		}
		for _, name := range clearTables {
			if _, err := t.Exec(ctx, "DELETE FROM "+name+" WHERE rid = ANY(?::bigint[])", ids); err != nil {
				return fmt.Errorf("clear %s: %w", name, err)
			}
		}
		t.pend.clear = t.pend.clear[:0]
	}
	if len(t.pend.clear) > 0 {
		// Old index and compartment rows of updated resources go first.
		for start := 0; start < len(t.pend.clear); start += rowsPerInsert {
			ids := t.pend.clear[start:min(start+rowsPerInsert, len(t.pend.clear))]
			in := "(" + Placeholders(len(ids)) + ")"
			for _, tb := range indexTables {
				if _, err := t.tx.ExecContext(ctx, t.db.Rebind("DELETE FROM "+tb.name+" WHERE rid IN "+in), ids...); err != nil {
					return fmt.Errorf("clear %s: %w", tb.name, err)
				}
			}
			if _, err := t.tx.ExecContext(ctx, t.db.Rebind("DELETE FROM compartment WHERE rid IN "+in), ids...); err != nil {
				return fmt.Errorf("clear compartment: %w", err)
			}
		}
		t.pend.clear = t.pend.clear[:0]
	}
	if err := t.resolveTargets(ctx); err != nil {
		return err
	}
	for i := range indexTables {
		if err := t.insertIndexRows(ctx, i, t.pend.tables[i]); err != nil {
			return err
		}
		t.pend.tables[i] = t.pend.tables[i][:0]
		t.pend.rows[i] = 0
	}
	conflict := " ON CONFLICT DO NOTHING"
	if err := t.insertRows(ctx, "compartment", []string{"patient", "rid"}, t.pend.comp, conflict); err != nil {
		return err
	}
	t.pend.comp = t.pend.comp[:0]
	t.pend.nComp = 0
	clear(t.queued)
	return nil
}

// clearTables are the tables holding rows derived from a resource's
// current version, all keyed by rid.
var clearTables = func() []string {
	var names []string
	for _, tb := range indexTables {
		names = append(names, tb.name)
	}
	return append(names, "compartment")
}()

// insertRows inserts flat args as rows of len(cols) values, many per statement.
//
// On PostgreSQL the rows go as column arrays (insertArrays). A bulk copy
// (DB.copyFrom, which PutNew uses) was measured for the index rows too:
// on 30 Synthea patients, six runs each, the server's CPU was the same
// within the noise (median 3.6 vs 3.7 s) and this process's a little
// higher (2.5 vs 2.4 s), so the arrays stay.
func (t *Tx) insertRows(ctx context.Context, table string, cols []string, args []any, suffix string) error {
	if t.db.dialect == Postgres {
		return t.insertArrays(ctx, table, cols, args, suffix)
	}
	return t.insertTuples(ctx, table, cols, "("+Placeholders(len(cols))+")", len(cols), args, suffix)
}

// insertTuples inserts flat args on SQLite, nc values per row, with one
// as each row's tuple of values ('?' for each of the nc values, and
// constants).
func (t *Tx) insertTuples(ctx context.Context, table string, cols []string, one string, nc int, args []any, suffix string) error {
	head := t.db.insertInto() + table + " (" + strings.Join(cols, ", ") + ") VALUES "
	for len(args) > 0 {
		n := min(len(args)/nc, rowsPerInsert)
		q := head + strings.TrimSuffix(strings.Repeat(one+",", n), ",") + suffix
		var err error
		if n == rowsPerInsert {
			_, err = t.Exec(ctx, q, args[:n*nc]...)
		} else {
			_, err = t.tx.ExecContext(ctx, t.db.Rebind(q), args[:n*nc]...)
		}
		if err != nil {
			return fmt.Errorf("insert into %s: %w", table, err)
		}
		args = args[n*nc:]
	}
	return nil
}

// sparseCols are, per index table, columns that are empty in nearly
// every row: type_system and type_code of tokens (only identifiers with a
// type have them), url, id_system and id_value of references (only
// references by URL or identifier). Of the 120 Synthea patients' rows,
// 363,324 of 363,761 tokens and 467,000 of 472,488 references have them
// all empty.
var sparseCols = [numTables][]int{
	tToken: {5, 6},
	tRef:   {5, 6, 7},
}

// sparseTuples are, per index table with sparseCols, the tuple of a row
// whose sparse columns are empty: the empty string literal in their
// places, a parameter in the others.
var sparseTuples = func() (out [numTables]string) {
	for i, sparse := range sparseCols {
		if len(sparse) == 0 {
			continue
		}
		vals := make([]string, len(indexTables[i].cols))
		for c := range vals {
			vals[c] = "?"
			if slices.Contains(sparse, c) {
				vals[c] = "''"
			}
		}
		out[i] = "(" + strings.Join(vals, ", ") + ")"
	}
	return out
}()

// scratchRows holds the values of insertIndexRows' rows with empty sparse
// columns, reused from one call to the next.
var scratchRows = sync.Pool{New: func() any { return new([]any) }}

// insertIndexRows inserts flat rows of index table i. On SQLite the rows
// whose sparseCols are empty go with the empty string literal in those
// places instead of parameters: the driver copies every text parameter
// into memory of its own (malloc, copy and free, about 200 ns each), and
// binding took a fifth of the import writer's time. The others go as
// they are, and so do all rows of a write too small to fill one
// statement (two statements, each prepared for its row count, would
// cost it more than the parameters save).
func (t *Tx) insertIndexRows(ctx context.Context, i int, args []any) error {
	tb, sparse := indexTables[i], sparseCols[i]
	nc := len(tb.cols)
	if t.db.dialect == Postgres || len(sparse) == 0 || len(args) < rowsPerInsert*nc {
		return t.insertRows(ctx, tb.name, tb.cols, args, "")
	}
	bp := scratchRows.Get().(*[]any)
	defer func() {
		clear(*bp)
		*bp = (*bp)[:0]
		scratchRows.Put(bp)
	}()
	short := (*bp)[:0]
	var full []any
	for r := 0; r < len(args); r += nc {
		row := args[r : r+nc]
		empty := true
		for _, c := range sparse {
			if s, ok := row[c].(string); !ok || s != "" {
				empty = false
				break
			}
		}
		if !empty {
			full = append(full, row...)
			continue
		}
		k := 0
		for c, v := range row {
			if k < len(sparse) && sparse[k] == c {
				k++
				continue
			}
			short = append(short, v)
		}
	}
	*bp = short
	if err := t.insertTuples(ctx, tb.name, tb.cols, sparseTuples[i], nc-len(sparse), short, ""); err != nil {
		return err
	}
	return t.insertRows(ctx, tb.name, tb.cols, full, "")
}

// arrayRows bounds the rows one array insert carries (a message of a few MB).
const arrayRows = 10000

// insertArrays inserts flat args as rows of len(cols) values on PostgreSQL
// with one statement per table and flush: each column goes as one typed
// array parameter and unnest turns the arrays back into rows. The SQL text
// depends only on the table, so it is prepared once; a multi-row VALUES
// list would carry thousands of parameters and vary with the row count.
func (t *Tx) insertArrays(ctx context.Context, table string, cols []string, args []any, suffix string) error {
	nc := len(cols)
	for len(args) > 0 {
		n := min(len(args)/nc, arrayRows)
		part := args[:n*nc]
		args = args[n*nc:]
		arrays := make([]any, nc)
		casts := make([]string, nc)
		for c := range nc {
			var ok bool
			switch part[c].(type) {
			case int64:
				arrays[c], ok = column[int64](part, nc, c, n)
				casts[c] = "?::bigint[]"
			case float64:
				arrays[c], ok = column[float64](part, nc, c, n)
				casts[c] = "?::double precision[]"
			case string:
				arrays[c], ok = column[string](part, nc, c, n)
				casts[c] = "?::text[]"
			case bool:
				arrays[c], ok = column[bool](part, nc, c, n)
				casts[c] = "?::boolean[]"
			}
			if !ok {
				return fmt.Errorf("insert into %s: column %s holds a %T, which has no array form here", table, cols[c], part[c])
			}
		}
		q := "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") SELECT * FROM unnest(" + strings.Join(casts, ", ") + ")" + suffix
		if _, err := t.Exec(ctx, q, arrays...); err != nil {
			return fmt.Errorf("insert into %s: %w", table, err)
		}
	}
	return nil
}

// column gathers column c of n rows of nc flat values, all of type T.
func column[T any](args []any, nc, c, n int) ([]T, bool) {
	out := make([]T, n)
	for i := range out {
		v, ok := args[i*nc+c].(T)
		if !ok {
			return nil, false
		}
		out[i] = v
	}
	return out, true
}

// InsertInto returns the start of a multi-row INSERT statement ("INSERT
// INTO " or, on SQLite, "INSERT OR FAIL INTO "; see insertInto), for
// extensions that insert many rows per statement in the transaction.
func (t *Tx) InsertInto() string { return t.db.insertInto() }

// insertInto starts a multi-row INSERT. On SQLite it is INSERT OR FAIL: a
// statement that writes many rows and may abort (a NOT NULL or UNIQUE
// check) makes SQLite copy every page it touches into a statement journal
// first, so that the abort can undo it - about a seventh of the CPU of a
// bulk import. FAIL stops at the bad row without undoing the statement,
// which loses nothing here: any error rolls the whole transaction back.
func (db *DB) insertInto() string {
	if db.dialect == SQLite {
		return "INSERT OR FAIL INTO "
	}
	return "INSERT INTO "
}

// PutKV implements store.Tx.
func (t *Tx) PutKV(ctx context.Context, key string, value []byte) error {
	_, err := t.Exec(ctx, `INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("put setting %s: %w", key, err)
	}
	return nil
}
