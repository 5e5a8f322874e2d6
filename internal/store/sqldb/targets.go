package sqldb

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/phr-project/phr/internal/store"
)

// Reference rows carry the rid of their target (target_rid) when the
// target exists as they are written; see
// migrations/*/0014_ref_target_rid.sql. A resource's rid never changes and
// its row is never removed (a delete is a version), so a target_rid once
// written stays right.

// resolveTargets fills in the target_rid of the pending reference rows
// (fillTargets).
func (t *Tx) resolveTargets(ctx context.Context) error {
	if err := t.fillTargets(ctx, t.pend.targets, t.pend.tables[tRef]); err != nil {
		return err
	}
	t.pend.targets = t.pend.targets[:0]
	return nil
}

// fillTargets sets the target_rid places slots name in args (reference
// rows): the rids of resources this transaction wrote or read (t.rids),
// then of the others, looked up in bulk; 0 for a target that does not
// exist.
func (t *Tx) fillTargets(ctx context.Context, slots []targetSlot, args []any) error {
	if len(slots) == 0 {
		return nil
	}
	if t.targets == nil {
		t.targets = map[resKey]int64{}
	}
	need := map[string][]string{}
	for _, s := range slots {
		if _, ok := t.rids[s.key]; ok {
			continue
		}
		if _, ok := t.targets[s.key]; ok {
			continue
		}
		t.targets[s.key] = 0
		need[s.key.typ] = append(need[s.key.typ], s.key.id)
	}
	if err := t.db.lookupRids(ctx, t.tx, need, t.targets); err != nil {
		return err
	}
	for _, s := range slots {
		rid := t.targets[s.key]
		if rv, ok := t.rids[s.key]; ok {
			rid = rv.rid
		}
		args[s.at] = rid
	}
	return nil
}

// newTargets returns the rids of the reference targets of puts: those
// of puts themselves (rids[k] is puts[k]'s), those of the encoded batches
// after (see PrepareNew), then those that exist already, as the read pool
// sees them. Targets of other transactions not committed yet are missing
// (0): such rows are found by the target's type and id instead.
func (db *DB) newTargets(ctx context.Context, puts []*store.Put, rids []int64, after []*NewBatch) (map[resKey]int64, error) {
	found := make(map[resKey]int64, len(puts))
	for _, b := range after {
		if b == nil || !b.Encoded() {
			continue
		}
		for i, k := range b.keys {
			found[k] = b.rids[i]
		}
	}
	for k, p := range puts {
		found[resKey{p.Type, p.ID}] = rids[k]
	}
	need := map[string][]string{}
	asked := map[resKey]bool{}
	for _, p := range puts {
		if p.Index == nil || p.Deleted {
			continue
		}
		for _, r := range p.Index.Refs {
			k := resKey{r.Type, r.ID}
			if r.Type == "" || r.ID == "" || asked[k] {
				continue
			}
			if _, ok := found[k]; ok {
				continue
			}
			asked[k] = true
			need[r.Type] = append(need[r.Type], r.ID)
		}
	}
	if err := db.lookupRids(ctx, db.r, need, found); err != nil {
		return nil, err
	}
	return found, nil
}

// querier runs queries: a transaction or a pool.
type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

// lookupRids adds to found the rids of the resources named by need (type
// -> ids) that exist, as q sees them.
func (db *DB) lookupRids(ctx context.Context, q querier, need map[string][]string, found map[resKey]int64) error {
	for typ, ids := range need {
		for len(ids) > 0 {
			var rows *sql.Rows
			var err error
			if db.dialect == Postgres {
				// One index probe per id: "id = ANY($2)" took about 180 ms
				// for 1,000 ids while an import wrote (a Synthea
				// Provenance's targets), this about 3 ms.
				rows, err = q.QueryContext(ctx, `SELECT u.id, r.rid FROM unnest($2::text[]) AS u(id)
					CROSS JOIN LATERAL (SELECT rid FROM resource WHERE type = $1 AND id = u.id LIMIT 1) r`, typ, ids)
				ids = nil
			} else {
				part := ids[:min(len(ids), idsPerQuery)]
				ids = ids[len(part):]
				args := make([]any, 0, len(part)+1)
				args = append(args, typ)
				for _, id := range part {
					args = append(args, id)
				}
				rows, err = q.QueryContext(ctx, `SELECT id, rid FROM resource WHERE type = ? AND id IN (`+Placeholders(len(part))+`)`, args...)
			}
			if err != nil {
				return fmt.Errorf("look up reference targets: %w", err)
			}
			for rows.Next() {
				var id string
				var rid int64
				if err := rows.Scan(&id, &rid); err != nil {
					rows.Close()
					return fmt.Errorf("look up reference targets: %w", err)
				}
				found[resKey{typ, id}] = rid
			}
			err = rows.Err()
			rows.Close()
			if err != nil {
				return fmt.Errorf("look up reference targets: %w", err)
			}
		}
	}
	return nil
}
