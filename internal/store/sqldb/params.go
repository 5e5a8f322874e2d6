package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/phr-project/phr/internal/r4"
)

// Index rows name their search parameter by a small integer, the id of the
// (resource type, parameter code) pair in the search_param table, rather
// than by the two strings: the rows and the keys of their indexes are
// shorter, and B-tree inserts of index rows are most of the cost of a
// write. The registry is seeded with every standard pair when the store
// opens, so writes never insert into it for them; a pair met for the first
// time is registered in the transaction that first writes it (INSERT ...
// ON CONFLICT DO NOTHING, then SELECT: concurrent writers on PostgreSQL
// get the same id) and cached once that transaction commits.

// paramIDs caches the registry: type -> code -> id. The maps are never
// changed once published; an addition publishes copies.
type paramIDs struct {
	mu sync.Mutex // serialises additions
	m  atomic.Pointer[map[string]map[string]int64]
}

// forType returns the ids of the parameters of a resource type known so
// far (nil when none are); the map must not be modified.
func (c *paramIDs) forType(typ string) map[string]int64 {
	if m := c.m.Load(); m != nil {
		return (*m)[typ]
	}
	return nil
}

// add publishes ids (type -> code -> id) not cached yet.
func (c *paramIDs) add(ids map[string]map[string]int64) {
	if len(ids) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	next := map[string]map[string]int64{}
	if old := c.m.Load(); old != nil {
		for typ, byCode := range *old {
			next[typ] = byCode
		}
	}
	for typ, byCode := range ids {
		merged := make(map[string]int64, len(next[typ])+len(byCode))
		for code, id := range next[typ] {
			merged[code] = id
		}
		for code, id := range byCode {
			merged[code] = id
		}
		next[typ] = merged
	}
	c.m.Store(&next)
}

// loadParams reads the registry into the cache after registering the
// standard (type, code) pairs it lacks. It runs when the store opens
// (Migrate), on the write pool (under the SQLite writer lock).
func (db *DB) loadParams(ctx context.Context) error {
	have, err := db.readParams(ctx)
	if err != nil {
		return err
	}
	var missing []any
	for _, typ := range r4.ResourceTypes() {
		codes := make([]string, 0, len(r4.SearchParams(typ)))
		for code := range r4.SearchParams(typ) {
			codes = append(codes, code)
		}
		sort.Strings(codes)
		for _, code := range codes {
			if _, ok := have[typ][code]; !ok {
				missing = append(missing, typ, code)
			}
		}
	}
	if len(missing) > 0 {
		tx, err := db.w.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("register search parameters: %w", err)
		}
		defer tx.Rollback()
		for len(missing) > 0 {
			n := min(len(missing)/2, rowsPerInsert)
			q := "INSERT INTO search_param (type, param) VALUES " +
				strings.TrimSuffix(strings.Repeat("(?, ?),", n), ",") + " ON CONFLICT (type, param) DO NOTHING"
			if _, err := tx.ExecContext(ctx, db.Rebind(q), missing[:2*n]...); err != nil {
				return fmt.Errorf("register search parameters: %w", err)
			}
			missing = missing[2*n:]
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("register search parameters: %w", err)
		}
		if have, err = db.readParams(ctx); err != nil {
			return err
		}
	}
	db.params.add(have)
	return nil
}

// readParams reads the whole registry on the write pool.
func (db *DB) readParams(ctx context.Context) (map[string]map[string]int64, error) {
	rows, err := db.w.QueryContext(ctx, `SELECT id, type, param FROM search_param`)
	if err != nil {
		return nil, fmt.Errorf("read search parameters: %w", err)
	}
	defer rows.Close()
	out := map[string]map[string]int64{}
	for rows.Next() {
		var id int64
		var typ, code string
		if err := rows.Scan(&id, &typ, &code); err != nil {
			return nil, fmt.Errorf("read search parameters: %w", err)
		}
		if out[typ] == nil {
			out[typ] = map[string]int64{}
		}
		out[typ][code] = id
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read search parameters: %w", err)
	}
	return out, nil
}

// ParamID returns the id under which index rows store the search
// parameter code of resource type typ (the search_param registry), or 0
// when no row has ever been written for it - an id no row has, so a
// condition on it matches nothing. Inside a transaction (store.WithTx) it
// also sees the parameters that transaction registered.
func (db *DB) ParamID(ctx context.Context, typ, code string) (int64, error) {
	if id, ok := db.params.forType(typ)[code]; ok {
		return id, nil
	}
	t := db.txOf(ctx)
	if t != nil {
		if id, ok := t.newParams[typ][code]; ok {
			return id, nil
		}
	}
	// Registered by another process (PostgreSQL) since the cache was loaded?
	var id int64
	err := db.QueryRow(ctx, `SELECT id FROM search_param WHERE type = ? AND param = ?`, typ, code).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("search parameter %s.%s: %w", typ, code, err)
	}
	if t == nil {
		// read outside any transaction: committed, so safe to keep
		db.params.add(map[string]map[string]int64{typ: {code: id}})
	}
	return id, nil
}

// paramID returns the id of a parameter for an index row the transaction
// writes, registering the pair when it is new. The id is kept in the
// transaction and published to the cache when it commits: a rolled-back
// registration must not be remembered.
func (t *Tx) paramID(ctx context.Context, typ, code string) (int64, error) {
	if id, ok := t.db.params.forType(typ)[code]; ok {
		return id, nil
	}
	if id, ok := t.newParams[typ][code]; ok {
		return id, nil
	}
	if _, err := t.Exec(ctx, `INSERT INTO search_param (type, param) VALUES (?, ?) ON CONFLICT (type, param) DO NOTHING`, typ, code); err != nil {
		return 0, fmt.Errorf("register search parameter %s.%s: %w", typ, code, err)
	}
	var id int64
	if err := t.queryRow(ctx, `SELECT id FROM search_param WHERE type = ? AND param = ?`, typ, code).Scan(&id); err != nil {
		return 0, fmt.Errorf("register search parameter %s.%s: %w", typ, code, err)
	}
	if t.newParams == nil {
		t.newParams = map[string]map[string]int64{}
	}
	if t.newParams[typ] == nil {
		t.newParams[typ] = map[string]int64{}
	}
	t.newParams[typ][code] = id
	return id, nil
}
