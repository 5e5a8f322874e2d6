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

// anyChunk is the number of values per = ANY(array) condition
// (PostgreSQL).
const anyChunk = 2000

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

// forChunks calls f with parts of ids and the condition that selects a
// column among them: "IN (?, ?...)" with one argument per id on SQLite;
// "= ANY(?)" with one text array on PostgreSQL, so that every part runs
// the same statement, prepared once, instead of one statement text (and a
// preparing round trip) per list length.
func (imp *Importer) forChunks(ids []string, f func(cond string, args []any) error) error {
	if imp.db.SQLDialect() == sqldb.Postgres {
		for start := 0; start < len(ids); start += anyChunk {
			if err := f("= ANY(?::text[])", []any{ids[start:min(start+anyChunk, len(ids))]}); err != nil {
				return err
			}
		}
		return nil
	}
	for start := 0; start < len(ids); start += inChunk {
		part := ids[start:min(start+inChunk, len(ids))]
		args := make([]any, len(part))
		for i, s := range part {
			args[i] = s
		}
		if err := f("IN ("+placeholders(len(args))+")", args); err != nil {
			return err
		}
	}
	return nil
}

// lookupIdentity fills out["Type/sourceId"] = {local id, src version,
// src updated} for the source's known ids.
func (imp *Importer) lookupIdentity(ctx context.Context, source, typ string, sids []string, out map[string][3]string) error {
	return imp.forChunks(sids, func(cond string, args []any) error {
		q := `SELECT source_id, local_id, src_version, src_updated FROM import_identity WHERE source = ? AND type = ? AND source_id ` + cond
		rows, err := imp.query(ctx, q, append([]any{source, typ}, args...)...)
		if err != nil {
			return fmt.Errorf("read identity map: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var sid string
			var v [3]string
			if err := rows.Scan(&sid, &v[0], &v[1], &v[2]); err != nil {
				return fmt.Errorf("read identity map: %w", err)
			}
			out[typ+"/"+sid] = v
		}
		return rows.Err()
	})
}

// existing marks out["Type/id"] for ids that exist locally (in any state).
func (imp *Importer) existing(ctx context.Context, typ string, ids []string, out map[string]bool) error {
	return imp.forChunks(ids, func(cond string, args []any) error {
		rows, err := imp.query(ctx, `SELECT id FROM resource WHERE type = ? AND id `+cond, append([]any{typ}, args...)...)
		if err != nil {
			return fmt.Errorf("check ids: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			out[typ+"/"+id] = true
		}
		return rows.Err()
	})
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
			rows, err := imp.query(ctx, `SELECT i.type, i.system, i.value, i.local_id
				FROM unnest(?::text[], ?::text[], ?::text[]) AS q(type, system, value)
				JOIN import_identifier i ON i.type = q.type AND i.system = q.system AND i.value = q.value`, cols[0], cols[1], cols[2])
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
	return imp.forChunks(ids, func(cond string, args []any) error {
		rows, err := imp.query(ctx, `SELECT r.id, r.version, r.seq, r.last_updated, r.deleted, v.json, v.blob
			FROM resource r JOIN resource_version v ON v.seq = r.seq WHERE r.type = ? AND r.id `+cond, append([]any{typ}, args...)...)
		if err != nil {
			return fmt.Errorf("read current versions: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			res := &store.Resource{Type: typ}
			var lu int64
			var blob sql.NullString
			if err := rows.Scan(&res.ID, &res.Version, &res.Seq, &lu, &res.Deleted, &res.JSON, &blob); err != nil {
				return fmt.Errorf("read current versions: %w", err)
			}
			res.LastUpdated = sqldb.FromMicros(lu)
			res.Blob = blob.String
			out[typ+"/"+res.ID] = res
		}
		return rows.Err()
	})
}

// query runs a read query; IN lists of varying length are not cached as
// prepared statements unless full.
func (imp *Importer) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return imp.db.Query(ctx, q, args...)
}

// seenHashes marks out[hash] for the digests the source sent before.
func (imp *Importer) seenHashes(ctx context.Context, source string, hashes []string, out map[string]bool) error {
	return imp.forChunks(hashes, func(cond string, args []any) error {
		rows, err := imp.query(ctx, `SELECT hash FROM import_seen WHERE source = ? AND hash `+cond, append([]any{source}, args...)...)
		if err != nil {
			return fmt.Errorf("read digests: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var h string
			if err := rows.Scan(&h); err != nil {
				return err
			}
			out[h] = true
		}
		return rows.Err()
	})
}

// identifiersOf returns the recorded identifiers of an imported resource.
func (imp *Importer) identifiersOf(ctx context.Context, typ, id string) ([][2]string, error) {
	rows, err := imp.query(ctx, `SELECT system, value FROM import_identifier WHERE type = ? AND local_id = ?`, typ, id)
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
