package importer

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/phr-project/phr/internal/store"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// inChunk is the number of values per IN (...) list.
const inChunk = 200

// anyChunk is the number of values per array parameter (PostgreSQL).
const anyChunk = 2000

// lookup is a query that reads the rows of a table matching a list of
// keys (ids, digests...), in the form of each dialect.
type lookup struct {
	// sqlite is the query with %s where the condition on the key column
	// goes ("IN (?, ?...)"); its arguments are fixed, then the keys.
	sqlite string
	// postgres reads the keys from one text array, the first parameter,
	// "FROM unnest(?::text[]) AS q(key) CROSS JOIN LATERAL (... WHERE
	// col = q.key ...)", followed by the fixed arguments. Every part then
	// runs the same prepared statement, and each key is one index probe
	// whatever the planner's statistics say: "col = ANY(?)" in a generic
	// plan made before the table was analyzed (autovacuum off, or a bulk
	// import outrunning it) became a filter over every row of the type,
	// each compared with the whole array, so that an import's lookups
	// grew with the square of what it had written (issue 5). The lateral
	// subquery ends in LIMIT or OFFSET so that it is not flattened into a
	// join the planner could turn into a scan of the table.
	postgres string
	fixed    []any
}

// with returns l with the fixed arguments args.
func (l lookup) with(args ...any) lookup {
	l.fixed = args
	return l
}

// identityLookup reads identity map entries: source, type; source ids.
var identityLookup = lookup{
	sqlite: `SELECT source_id, local_id, src_version, src_updated, agreed FROM import_identity WHERE source = ? AND type = ? AND source_id %s`,
	postgres: `SELECT i.source_id, i.local_id, i.src_version, i.src_updated, i.agreed FROM unnest(?::text[]) AS q(sid)
		CROSS JOIN LATERAL (SELECT source_id, local_id, src_version, src_updated, agreed FROM import_identity
			WHERE source = ? AND type = ? AND source_id = q.sid LIMIT 1) i`,
}

// existingLookup reads the ids that exist of a type.
var existingLookup = lookup{
	sqlite: `SELECT id FROM resource WHERE type = ? AND id %s`,
	postgres: `SELECT r.id FROM unnest(?::text[]) AS q(id)
		CROSS JOIN LATERAL (SELECT id FROM resource WHERE type = ? AND id = q.id LIMIT 1) r`,
}

// currentLookup reads the current versions of resources of a type.
var currentLookup = lookup{
	sqlite: `SELECT r.id, r.version, r.seq, r.last_updated, r.deleted, v.json, v.blob
		FROM resource r JOIN resource_version v ON v.seq = r.seq WHERE r.type = ? AND r.id %s`,
	postgres: `SELECT c.* FROM unnest(?::text[]) AS q(id)
		CROSS JOIN LATERAL (SELECT r.id, r.version, r.seq, r.last_updated, r.deleted, v.json, v.blob
			FROM resource r JOIN resource_version v ON v.seq = r.seq WHERE r.type = ? AND r.id = q.id LIMIT 1) c`,
}

// seenLookup reads the digests a source sent before.
var seenLookup = lookup{
	sqlite: `SELECT hash FROM import_seen WHERE source = ? AND hash %s`,
	postgres: `SELECT s.hash FROM unnest(?::text[]) AS q(hash)
		CROSS JOIN LATERAL (SELECT hash FROM import_seen WHERE source = ? AND hash = q.hash LIMIT 1) s`,
}

// identifierMatchQuery reads the local ids carrying business identifiers
// (arrays of types, systems and values) on PostgreSQL: one index probe per
// identifier (see lookup), at most 3 matches each as on SQLite (two
// already make a match ambiguous).
const identifierMatchQuery = `SELECT q.type, q.system, q.value, i.local_id
	FROM unnest(?::text[], ?::text[], ?::text[]) AS q(type, system, value)
	CROSS JOIN LATERAL (SELECT local_id FROM import_identifier
		WHERE type = q.type AND system = q.system AND value = q.value LIMIT 3) i`

// forChunks runs l over ids in parts and calls scan for each result row.
func (imp *Importer) forChunks(ctx context.Context, ids []string, l lookup, scan func(*sql.Rows) error) error {
	run := func(q string, args []any) error {
		rows, err := imp.query(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			if err := scan(rows); err != nil {
				return err
			}
		}
		return rows.Err()
	}
	if imp.db.SQLDialect() == sqldb.Postgres {
		for start := 0; start < len(ids); start += anyChunk {
			args := append([]any{ids[start:min(start+anyChunk, len(ids))]}, l.fixed...)
			if err := run(l.postgres, args); err != nil {
				return err
			}
		}
		return nil
	}
	for start := 0; start < len(ids); start += inChunk {
		part := ids[start:min(start+inChunk, len(ids))]
		args := append([]any(nil), l.fixed...)
		for _, s := range part {
			args = append(args, s)
		}
		if err := run(fmt.Sprintf(l.sqlite, "IN ("+sqldb.Placeholders(len(part))+")"), args); err != nil {
			return err
		}
	}
	return nil
}

// lookupIdentity fills out["Type/sourceId"] = {local id, src version,
// src updated, agreed local version} for the source's known ids.
func (imp *Importer) lookupIdentity(ctx context.Context, source, typ string, sids []string, out map[string][4]string) error {
	err := imp.forChunks(ctx, sids, identityLookup.with(source, typ), func(rows *sql.Rows) error {
		var sid string
		var v [4]string
		if err := rows.Scan(&sid, &v[0], &v[1], &v[2], &v[3]); err != nil {
			return err
		}
		out[typ+"/"+sid] = v
		return nil
	})
	if err != nil {
		return fmt.Errorf("read identity map: %w", err)
	}
	return nil
}

// existing marks out["Type/id"] for ids that exist locally (in any state).
func (imp *Importer) existing(ctx context.Context, typ string, ids []string, out map[string]bool) error {
	err := imp.forChunks(ctx, ids, existingLookup.with(typ), func(rows *sql.Rows) error {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err
		}
		out[typ+"/"+id] = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("check ids: %w", err)
	}
	return nil
}

// identKey is a business identifier of a type: type, system, value.
type identKey [3]string

// identifierMatchesAll fills out[key] with the local ids of imported
// resources carrying each identifier (keys without any stay absent). On
// PostgreSQL the identifiers of a whole chunk are looked up together, one
// statement per anyChunk of them, instead of one round trip each; SQLite,
// in process, asks for each.
func (imp *Importer) identifierMatchesAll(ctx context.Context, keys []identKey, out map[identKey][]string) error {
	if imp.db.SQLDialect() != sqldb.Postgres {
		for _, k := range keys {
			ids, err := imp.identifierMatches(ctx, k[0], k[1], k[2])
			if err != nil {
				return err
			}
			if len(ids) > 0 {
				out[k] = ids
			}
		}
		return nil
	}
	for start := 0; start < len(keys); start += anyChunk {
		part := keys[start:min(start+anyChunk, len(keys))]
		var cols [3][]string
		for i := range cols {
			cols[i] = make([]string, len(part))
		}
		for j, k := range part {
			for i := range cols {
				cols[i][j] = k[i]
			}
		}
		err := func() error {
			rows, err := imp.query(ctx, identifierMatchQuery, cols[0], cols[1], cols[2])
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var k identKey
				var id string
				if err := rows.Scan(&k[0], &k[1], &k[2], &id); err != nil {
					return err
				}
				if !slices.Contains(out[k], id) {
					out[k] = append(out[k], id)
				}
			}
			return rows.Err()
		}()
		if err != nil {
			return fmt.Errorf("match identifiers: %w", err)
		}
	}
	return nil
}

// identifierMatches returns the local ids of imported resources of typ
// carrying the identifier system|value.
func (imp *Importer) identifierMatches(ctx context.Context, typ, system, value string) ([]string, error) {
	rows, err := imp.query(ctx, `SELECT local_id FROM import_identifier WHERE type = ? AND system = ? AND value = ? LIMIT 3`, typ, system, value)
	if err != nil {
		return nil, fmt.Errorf("match identifiers: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// currentVersions reads the current versions of typ/ids into out.
func (imp *Importer) currentVersions(ctx context.Context, typ string, ids []string, out map[string]*store.Resource) error {
	err := imp.forChunks(ctx, ids, currentLookup.with(typ), func(rows *sql.Rows) error {
		res := &store.Resource{Type: typ}
		var lu int64
		var blob sql.NullString
		if err := rows.Scan(&res.ID, &res.Version, &res.Seq, &lu, &res.Deleted, &res.JSON, &blob); err != nil {
			return err
		}
		res.LastUpdated = sqldb.FromMicros(lu)
		res.Blob = blob.String
		out[typ+"/"+res.ID] = res
		return nil
	})
	if err != nil {
		return fmt.Errorf("read current versions: %w", err)
	}
	return nil
}

// query runs a read query; IN lists of varying length are not cached as
// prepared statements unless full.
func (imp *Importer) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return imp.db.Query(ctx, q, args...)
}

// seenHashes marks out[hash] for the digests the source sent before.
func (imp *Importer) seenHashes(ctx context.Context, source string, hashes []string, out map[string]bool) error {
	err := imp.forChunks(ctx, hashes, seenLookup.with(source), func(rows *sql.Rows) error {
		var h string
		if err := rows.Scan(&h); err != nil {
			return err
		}
		out[h] = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("read digests: %w", err)
	}
	return nil
}

// identifiersOfQuery reads the recorded identifiers of a local resource
// (index import_identifier_local).
const identifiersOfQuery = `SELECT system, value FROM import_identifier WHERE type = ? AND local_id = ?`

// identifiersOfAllQuery reads the recorded identifiers of several local
// resources (PostgreSQL: arrays of types and local ids). The lateral
// subquery probes the index by (type, local_id) for each resource; OFFSET
// 0 keeps the planner from turning it into a plain join, which it plans
// as a hash join over every identifier row (before the table has
// statistics, as in an import's first minutes).
const identifiersOfAllQuery = `SELECT q.type, q.local_id, i.system, i.value
	FROM unnest(?::text[], ?::text[]) AS q(type, local_id)
	CROSS JOIN LATERAL (SELECT system, value FROM import_identifier
		WHERE type = q.type AND local_id = q.local_id OFFSET 0) i`

// identifiersOfAll returns the recorded identifiers of imported resources,
// by (type, local id): on PostgreSQL in one query per anyChunk resources,
// on SQLite (in the process) one by one.
func (imp *Importer) identifiersOfAll(ctx context.Context, pairs [][2]string) (map[[2]string][][2]string, error) {
	out := make(map[[2]string][][2]string, len(pairs))
	if imp.db.SQLDialect() != sqldb.Postgres {
		for _, p := range pairs {
			ids, err := imp.identifiersOf(ctx, p[0], p[1])
			if err != nil {
				return nil, err
			}
			if len(ids) > 0 {
				out[p] = ids
			}
		}
		return out, nil
	}
	for start := 0; start < len(pairs); start += anyChunk {
		part := pairs[start:min(start+anyChunk, len(pairs))]
		typs, locals := make([]string, len(part)), make([]string, len(part))
		for j, p := range part {
			typs[j], locals[j] = p[0], p[1]
		}
		err := func() error {
			rows, err := imp.query(ctx, identifiersOfAllQuery, typs, locals)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var p, x [2]string
				if err := rows.Scan(&p[0], &p[1], &x[0], &x[1]); err != nil {
					return err
				}
				out[p] = append(out[p], x)
			}
			return rows.Err()
		}()
		if err != nil {
			return nil, fmt.Errorf("read identifiers: %w", err)
		}
	}
	return out, nil
}

// identifiersOf returns the recorded identifiers of an imported resource.
func (imp *Importer) identifiersOf(ctx context.Context, typ, id string) ([][2]string, error) {
	rows, err := imp.query(ctx, identifiersOfQuery, typ, id)
	if err != nil {
		return nil, fmt.Errorf("read identifiers: %w", err)
	}
	defer rows.Close()
	var out [][2]string
	for rows.Next() {
		var x [2]string
		if err := rows.Scan(&x[0], &x[1]); err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, rows.Err()
}

// insertMulti inserts rows with multi-row INSERT statements (on
// PostgreSQL: column arrays, see insertArrays). Rows with the same
// conflict key must not repeat within one call (PostgreSQL refuses to
// update one row twice in a statement): the caller removes them with
// dedupe before the transaction (records does).
func insertMulti(ctx context.Context, tx *sqldb.Tx, table, cols string, rows [][]any, suffix string) error {
	if len(rows) == 0 {
		return nil
	}
	nc := len(rows[0])
	if tx.Dialect() == sqldb.Postgres {
		return insertArrays(ctx, tx, table, cols, rows, suffix)
	}
	one := "(" + sqldb.Placeholders(nc) + ")"
	const per = 200
	for start := 0; start < len(rows); start += per {
		part := rows[start:min(start+per, len(rows))]
		args := make([]any, 0, len(part)*nc)
		for _, r := range part {
			args = append(args, r...)
		}
		q := tx.InsertInto() + table + " (" + cols + ") VALUES " + strings.TrimSuffix(strings.Repeat(one+",", len(part)), ",") + suffix
		if _, err := tx.Exec(ctx, q, args...); err != nil {
			return err
		}
	}
	return nil
}

// dedupe keeps the last of rows with the same conflict key when suffix
// is an ON CONFLICT clause (PostgreSQL refuses to update one row twice in
// a statement): the first three columns for import_identity, all of them
// elsewhere.
func dedupe(table string, rows [][]any, suffix string) [][]any {
	if len(rows) == 0 || !strings.Contains(suffix, "DO UPDATE") && !strings.Contains(suffix, "DO NOTHING") {
		return rows
	}
	seen := make(map[string]int, len(rows))
	out := rows[:0:0]
	keyCols := len(rows[0])
	if table == "import_identity" {
		keyCols = 3
	}
	for _, r := range rows {
		k := fmt.Sprint(r[:keyCols]...)
		if i, ok := seen[k]; ok {
			out[i] = r
			continue
		}
		seen[k] = len(out)
		out = append(out, r)
	}
	return out
}

// insertArrays inserts rows on PostgreSQL with one statement per anyChunk
// rows: each column goes as one typed array parameter and unnest turns
// the arrays back into rows. The statement text depends only on the
// table, so it is prepared once; 200-row VALUES lists carried 400-1,200
// parameters each, and the last, shorter list of every chunk was a new
// text to parse and plan. For the identity map and digests of 30 Synthea
// patients this cost the process about 5 rather than 11-16 us per row.
func insertArrays(ctx context.Context, tx *sqldb.Tx, table, cols string, rows [][]any, suffix string) error {
	nc := len(rows[0])
	for start := 0; start < len(rows); start += anyChunk {
		part := rows[start:min(start+anyChunk, len(rows))]
		arrays := make([]any, nc)
		casts := make([]string, nc)
		for c := range nc {
			var ok bool
			switch part[0][c].(type) {
			case string:
				arrays[c], ok = columnOf[string](part, c)
				casts[c] = "?::text[]"
			case int64:
				arrays[c], ok = columnOf[int64](part, c)
				casts[c] = "?::bigint[]"
			}
			if !ok {
				return fmt.Errorf("insert into %s: column %d holds a %T, which has no array form here", table, c+1, part[0][c])
			}
		}
		q := "INSERT INTO " + table + " (" + cols + ") SELECT * FROM unnest(" + strings.Join(casts, ", ") + ")" + suffix
		if _, err := tx.Exec(ctx, q, arrays...); err != nil {
			return err
		}
	}
	return nil
}

// columnOf gathers column c of rows, all of type T.
func columnOf[T any](rows [][]any, c int) ([]T, bool) {
	out := make([]T, len(rows))
	for i, r := range rows {
		v, ok := r[c].(T)
		if !ok {
			return nil, false
		}
		out[i] = v
	}
	return out, true
}
