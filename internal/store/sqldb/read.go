package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/phr-project/phr/internal/store"
)

const versionCols = `v.seq, v.type, r.id, v.version, v.last_updated, v.deleted, v.method, v.json, v.blob`

// scanVersion reads a row of versionCols.
func scanVersion(sc interface{ Scan(...any) error }) (*store.Resource, error) {
	var (
		res  store.Resource
		lu   int64
		blob sql.NullString
	)
	if err := sc.Scan(&res.Seq, &res.Type, &res.ID, &res.Version, &lu, &res.Deleted, &res.Method, &res.JSON, &blob); err != nil {
		return nil, err
	}
	res.LastUpdated = FromMicros(lu)
	res.Blob = blob.String
	return &res, nil
}

// quick returns the context for the single-row lookups of Read and
// ReadVersion by key. On SQLite it is ctx without its cancellation: such a
// lookup takes microseconds once it runs, in this process, and a
// cancellable context costs every query two goroutines (database/sql's
// watcher of the rows and the driver's interrupter) and their scheduling,
// a noticeable share of the CPU of a GET; a cancellation would hardly
// ever arrive in time to save anything. Waiting for a connection still
// honours ctx (admit). On PostgreSQL a query waits on the network, and
// cancelling it when the client goes away keeps its worth.
func (db *DB) quick(ctx context.Context) context.Context {
	if db.dialect == SQLite {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

// Read implements store.Store.
// Inside a transaction (store.WithTx) it reads there.
func (db *DB) Read(ctx context.Context, typ, id string) (*store.Resource, error) {
	if t := db.txOf(ctx); t != nil {
		return t.read(ctx, typ, id)
	}
	if db.readReqs != nil {
		return db.readCoalesced(ctx, typ, id)
	}
	done, err := db.admit(ctx)
	if err != nil {
		return nil, err
	}
	res, err := db.readOne(db.quick(ctx), typ, id)
	done()
	return res, err
}

// readOne reads the current version of typ/id on the read pool.
func (db *DB) readOne(ctx context.Context, typ, id string) (*store.Resource, error) {
	row := db.QueryRow(ctx, `SELECT `+versionCols+` FROM resource r JOIN resource_version v ON v.seq = r.seq WHERE r.type = ? AND r.id = ?`, typ, id)
	res, err := scanVersion(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", typ, id, err)
	}
	return res, nil
}

// ReadVersion implements store.Store.
// Inside a transaction (store.WithTx) it reads there.
func (db *DB) ReadVersion(ctx context.Context, typ, id string, version int64) (*store.Resource, error) {
	if t := db.txOf(ctx); t != nil {
		return t.readVersion(ctx, typ, id, version)
	}
	done, err := db.admit(ctx)
	if err != nil {
		return nil, err
	}
	row := db.QueryRow(db.quick(ctx), `SELECT `+versionCols+` FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = ? WHERE r.type = ? AND r.id = ?`, version, typ, id)
	res, err := scanVersion(row)
	done()
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read %s/%s/_history/%d: %w", typ, id, version, err)
	}
	return res, nil
}

// read is Read inside the transaction.
func (t *Tx) read(ctx context.Context, typ, id string) (*store.Resource, error) {
	res, err := scanVersion(t.queryRow(ctx, `SELECT `+versionCols+` FROM resource r JOIN resource_version v ON v.seq = r.seq WHERE r.type = ? AND r.id = ?`, typ, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", typ, id, err)
	}
	return res, nil
}

// readVersion is ReadVersion inside the transaction.
func (t *Tx) readVersion(ctx context.Context, typ, id string, version int64) (*store.Resource, error) {
	res, err := scanVersion(t.queryRow(ctx, `SELECT `+versionCols+` FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = ? WHERE r.type = ? AND r.id = ?`, version, typ, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read %s/%s/_history/%d: %w", typ, id, version, err)
	}
	return res, nil
}

func historyWhere(q store.HistoryQuery, withPaging bool) (string, []any) {
	var conds []string
	var args []any
	if q.ID != "" {
		conds = append(conds, "v.rid = (SELECT rid FROM resource WHERE type = ? AND id = ?)")
		args = append(args, q.Type, q.ID)
	} else if q.Type != "" {
		conds = append(conds, "v.type = ?")
		args = append(args, q.Type)
	}
	if !q.Since.IsZero() {
		conds = append(conds, "v.last_updated >= ?")
		args = append(args, Micros(q.Since))
	}
	if withPaging && q.BeforeSeq > 0 {
		conds = append(conds, "v.seq < ?")
		args = append(args, q.BeforeSeq)
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// History implements store.Store.
func (db *DB) History(ctx context.Context, q store.HistoryQuery) ([]*store.Resource, error) {
	where, args := historyWhere(q, true)
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	args = append(args, limit)
	rows, err := db.Query(ctx, `SELECT `+versionCols+` FROM resource_version v JOIN resource r ON r.rid = v.rid`+where+` ORDER BY v.seq DESC LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	defer rows.Close()
	var out []*store.Resource
	for rows.Next() {
		res, err := scanVersion(rows)
		if err != nil {
			return nil, fmt.Errorf("history: %w", err)
		}
		out = append(out, res)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	return out, nil
}

// CountHistory implements store.Store.
func (db *DB) CountHistory(ctx context.Context, q store.HistoryQuery) (int64, error) {
	where, args := historyWhere(q, false)
	var n int64
	if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM resource_version v`+where, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count history: %w", err)
	}
	return n, nil
}

// ScanCompartment implements store.Store.
func (db *DB) ScanCompartment(ctx context.Context, patient string, types []string, fn func(*store.Resource) bool) error {
	if len(types) == 0 {
		return nil
	}
	args := []any{patient}
	for _, t := range types {
		args = append(args, t)
	}
	rows, err := db.Query(ctx, `SELECT `+versionCols+` FROM compartment c JOIN resource r ON r.rid = c.rid JOIN resource_version v ON v.seq = r.seq
		WHERE c.patient = ? AND NOT r.deleted AND r.type IN (`+Placeholders(len(types))+`)`, args...)
	if err != nil {
		return fmt.Errorf("scan the compartment of Patient/%s: %w", patient, err)
	}
	defer rows.Close()
	for rows.Next() {
		res, err := scanVersion(rows)
		if err != nil {
			return fmt.Errorf("scan the compartment of Patient/%s: %w", patient, err)
		}
		if !fn(res) {
			return nil
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("scan the compartment of Patient/%s: %w", patient, err)
	}
	return nil
}

// scanPage is how many rows ScanType reads per query.
const scanPage = 500

// ScanType implements store.Store. It reads in pages by id (the resource
// table's unique index on type and id), so no statement stays open while
// fn runs.
func (db *DB) ScanType(ctx context.Context, typ string, fn func(*store.Resource) bool) error {
	after := ""
	for {
		rows, err := db.Query(ctx, `SELECT `+versionCols+` FROM resource r JOIN resource_version v ON v.seq = r.seq
			WHERE r.type = ? AND r.id > ? AND NOT r.deleted ORDER BY r.id LIMIT ?`, typ, after, scanPage)
		if err != nil {
			return fmt.Errorf("scan %s: %w", typ, err)
		}
		var page []*store.Resource
		for rows.Next() {
			res, err := scanVersion(rows)
			if err != nil {
				rows.Close()
				return fmt.Errorf("scan %s: %w", typ, err)
			}
			page = append(page, res)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("scan %s: %w", typ, err)
		}
		for _, res := range page {
			if !fn(res) {
				return nil
			}
		}
		if len(page) < scanPage {
			return nil
		}
		after = page[len(page)-1].ID
	}
}

// ScanReferences implements store.Store. It reads in pages by rid (the
// index rows' rid index); a page that ends inside a resource's rows stops
// before that resource, which the next page starts with.
func (db *DB) ScanReferences(ctx context.Context, typ, param string, fn func(id, ref string) bool) error {
	pid, err := db.ParamID(ctx, typ, param)
	if err != nil || pid == 0 {
		return err // no rows when the parameter was never indexed
	}
	type row struct {
		rid     int64
		id, ref string
	}
	read := func(q string, args ...any) ([]row, error) {
		// Each row's resource id by its own lookup: a plan that does not
		// depend on the tables' statistics (with a join, PostgreSQL read
		// the whole resource table for a page, or, without statistics,
		// for each page). Index rows exist for live versions only.
		rows, err := db.Query(ctx, `SELECT x.rid, (SELECT r.id FROM resource r WHERE r.rid = x.rid),
			CASE WHEN x.target_id <> '' THEN x.target_type || '/' || x.target_id ELSE x.url END
			FROM idx_ref x WHERE x.pid = ? AND `+q, append([]any{pid}, args...)...)
		if err != nil {
			return nil, fmt.Errorf("scan %s.%s: %w", typ, param, err)
		}
		defer rows.Close()
		var out []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.rid, &r.id, &r.ref); err != nil {
				return nil, fmt.Errorf("scan %s.%s: %w", typ, param, err)
			}
			out = append(out, r)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("scan %s.%s: %w", typ, param, err)
		}
		return out, nil
	}
	var after int64
	for {
		page, err := read(`x.rid > ? ORDER BY x.rid LIMIT ?`, after, scanPage)
		if err != nil {
			return err
		}
		full := len(page) == scanPage
		if full {
			last := page[len(page)-1].rid
			cut := len(page)
			for cut > 0 && page[cut-1].rid == last {
				cut--
			}
			if cut == 0 {
				// One resource with a page of references or more.
				if page, err = read(`x.rid = ?`, last); err != nil {
					return err
				}
			} else {
				page = page[:cut]
			}
		}
		for _, r := range page {
			if !fn(r.id, r.ref) {
				return nil
			}
		}
		if !full {
			return nil
		}
		after = page[len(page)-1].rid
	}
}

// Compartments implements store.Store.
func (db *DB) Compartments(ctx context.Context, typ, id string) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT c.patient FROM resource r JOIN compartment c ON c.rid = r.rid WHERE r.type = ? AND r.id = ? AND NOT r.deleted`, typ, id)
	if err != nil {
		return nil, fmt.Errorf("compartments of %s/%s: %w", typ, id, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, fmt.Errorf("compartments of %s/%s: %w", typ, id, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("compartments of %s/%s: %w", typ, id, err)
	}
	return out, nil
}

// GetKV implements store.Store.
func (db *DB) GetKV(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	err := db.QueryRow(ctx, `SELECT value FROM kv WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get setting %s: %w", key, err)
	}
	return v, nil
}

// PutKV implements store.Store.
func (db *DB) PutKV(ctx context.Context, key string, value []byte) error {
	return db.WriteTx(ctx, func(tx *Tx) error { return tx.PutKV(ctx, key, value) })
}

// InitKV implements store.Store.
func (db *DB) InitKV(ctx context.Context, key string, value []byte) ([]byte, error) {
	if _, err := db.Exec(ctx, `INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`, key, value); err != nil {
		return nil, fmt.Errorf("init setting %s: %w", key, err)
	}
	return db.GetKV(ctx, key)
}
