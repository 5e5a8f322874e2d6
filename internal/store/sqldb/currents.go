package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"slices"

	"github.com/phr-project/phr/internal/store"
)

var _ store.BulkTx = (*Tx)(nil)

// idsPerQuery caps the ids of one statement of Currents, and of a
// reference-target lookup on SQLite (lookupRids).
const idsPerQuery = 500

// Currents implements store.BulkTx: Current for many resources of one type
// in one statement per idsPerQuery ids (two on PostgreSQL, which locks the
// resource rows first, as Current does).
func (t *Tx) Currents(ctx context.Context, typ string, ids []string) (map[string]*store.Resource, error) {
	out := make(map[string]*store.Resource, len(ids))
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	for start := 0; start < len(ids); start += idsPerQuery {
		part := ids[start:min(start+idsPerQuery, len(ids))]
		if err := t.currents(ctx, typ, part, out); err != nil {
			return nil, fmt.Errorf("read %d %s resources for update: %w", len(part), typ, err)
		}
	}
	return out, nil
}

func (t *Tx) currents(ctx context.Context, typ string, ids []string, out map[string]*store.Resource) error {
	rids := map[string]int64{}
	if t.db.dialect == Postgres {
		// As in Current: lock the resource rows on their own (in id order,
		// so that two such writers do not deadlock), then read the version
		// rows with a fresh snapshot that sees the writers waited for.
		// Arrays keep one statement text (pgx caches prepared statements
		// by text), whatever the number of ids. Each id is one probe of
		// the (type, id) index, locked in the order of ids (sorted): with
		// "id = ANY($2)" the generic plan made while the table was small
		// or unanalyzed could read every row of the type and compare each
		// with the whole array (issue 5). LIMIT keeps the subquery lateral.
		rows, err := t.tx.QueryContext(ctx, `SELECT r.rid, r.id, r.version, r.seq, r.last_updated, r.deleted FROM unnest($2::text[]) AS q(id)
			CROSS JOIN LATERAL (SELECT rid, id, version, seq, last_updated, deleted FROM resource WHERE type = $1 AND id = q.id LIMIT 1 FOR UPDATE) r`, typ, ids)
		if err != nil {
			return err
		}
		bySeq := map[int64]*store.Resource{}
		for rows.Next() {
			res := &store.Resource{Type: typ}
			var rid, lu int64
			if err := rows.Scan(&rid, &res.ID, &res.Version, &res.Seq, &lu, &res.Deleted); err != nil {
				rows.Close()
				return err
			}
			res.LastUpdated = FromMicros(lu)
			rids[res.ID] = rid
			bySeq[res.Seq] = res
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(bySeq) > 0 {
			seqs := make([]int64, 0, len(bySeq))
			for seq := range bySeq {
				seqs = append(seqs, seq)
			}
			vrows, err := t.tx.QueryContext(ctx, `SELECT seq, method, json, blob FROM resource_version WHERE seq = ANY($1)`, seqs)
			if err != nil {
				return err
			}
			for vrows.Next() {
				var seq int64
				var method string
				var js []byte
				var blob sql.NullString
				if err := vrows.Scan(&seq, &method, &js, &blob); err != nil {
					vrows.Close()
					return err
				}
				if res := bySeq[seq]; res != nil {
					res.Method, res.JSON, res.Blob = method, js, blob.String
				}
			}
			vrows.Close()
			if err := vrows.Err(); err != nil {
				return err
			}
		}
		for _, res := range bySeq {
			out[res.ID] = res
		}
	} else {
		in := "(" + Placeholders(len(ids)) + ")"
		args := make([]any, 0, len(ids)+1)
		args = append(args, typ)
		for _, id := range ids {
			args = append(args, id)
		}
		rows, err := t.tx.QueryContext(ctx, `SELECT r.rid, r.id, r.version, r.seq, r.last_updated, r.deleted, v.method, v.json, v.blob
			FROM resource r JOIN resource_version v ON v.seq = r.seq WHERE r.type = ? AND r.id IN `+in, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			res := &store.Resource{Type: typ}
			var rid, lu int64
			var blob sql.NullString
			if err := rows.Scan(&rid, &res.ID, &res.Version, &res.Seq, &lu, &res.Deleted, &res.Method, &res.JSON, &blob); err != nil {
				rows.Close()
				return err
			}
			res.LastUpdated = FromMicros(lu)
			res.Blob = blob.String
			rids[res.ID] = rid
			out[res.ID] = res
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	for id, rid := range rids {
		if res := out[id]; res != nil {
			t.rids[resKey{typ, id}] = ridVersion{rid, res.Version}
		}
	}
	return nil
}
