package sqldb

import (
	"context"
	"fmt"
	"strings"

	"github.com/phr-project/phr/internal/store"
)

// PutNew writes the first versions (Version 1) of resources that do not
// exist yet, many per statement: ids and sequence numbers are allocated in
// one step and the resource and version rows go in multi-row INSERTs.
// Bulk writers (the importer) use it instead of one Put per resource; the
// rows are exactly those Put writes. A resource that exists already (or was
// written earlier in the transaction) fails the whole call with a
// store.ErrConflict error (a concurrent writer created it first).
func (t *Tx) PutNew(ctx context.Context, puts []*store.Put) error {
	if len(puts) == 0 {
		return nil
	}
	seen := make(map[resKey]bool, len(puts))
	for _, p := range puts {
		k := resKey{p.Type, p.ID}
		if p.Version != 1 {
			return fmt.Errorf("PutNew: %s/%s version %d is not a first version", p.Type, p.ID, p.Version)
		}
		if _, known := t.rids[k]; known || seen[k] {
			return fmt.Errorf("%w: %s/%s was already written", store.ErrConflict, p.Type, p.ID)
		}
		seen[k] = true
	}
	rids, seqs, err := t.allocate(ctx, len(puts), len(puts))
	if err != nil {
		return err
	}
	if t.db.dialect == Postgres {
		if err := t.putNewArrays(ctx, puts, rids, seqs); err != nil {
			return err
		}
	}
	const per = 200
	for start := 0; start < len(puts) && t.db.dialect == SQLite; start += per {
		part := puts[start:min(start+per, len(puts))]
		resArgs := make([]any, 0, len(part)*7)
		verArgs := make([]any, 0, len(part)*10)
		for i, p := range part {
			rid, seq := rids[start+i], seqs[start+i]
			lu := Micros(p.LastUpdated)
			var blob, batch, js any
			if p.Blob != "" {
				blob = p.Blob
			}
			if p.Batch != 0 {
				batch = p.Batch
			}
			if !p.Deleted {
				js = p.JSON
			}
			resArgs = append(resArgs, rid, p.Type, p.ID, p.Version, seq, lu, p.Deleted)
			verArgs = append(verArgs, seq, rid, p.Type, p.Version, lu, p.Deleted, p.Method, batch, blob, js)
		}
		q := t.db.insertInto() + `resource (rid, type, id, version, seq, last_updated, deleted) VALUES ` + rows(len(part), 7)
		if err := t.execMaybeCached(ctx, len(part) == per, q, resArgs); err != nil {
			return t.batchErr(err)
		}
		q = t.db.insertInto() + `resource_version (seq, rid, type, version, last_updated, deleted, method, batch, blob, json) VALUES ` + rows(len(part), 10)
		if err := t.execMaybeCached(ctx, len(part) == per, q, verArgs); err != nil {
			return t.batchErr(err)
		}
	}
	for i, p := range puts {
		p.Seq = seqs[i]
		t.rids[resKey{p.Type, p.ID}] = ridVersion{rids[i], 1}
		if !p.Deleted {
			if err := t.queue(ctx, rids[i], p); err != nil {
				return err
			}
			t.queued[rids[i]] = true
		}
	}
	if len(t.pend.clear) > 500 || t.pend.pendingRows() > 20000 {
		return t.flush(ctx)
	}
	return nil
}

// execMaybeCached runs q in the transaction, through the statement cache
// when it is one of the few texts that recur (a full batch of rows).
func (t *Tx) execMaybeCached(ctx context.Context, cached bool, q string, args []any) error {
	var err error
	if cached {
		_, err = t.Exec(ctx, q, args...)
	} else {
		_, err = t.tx.ExecContext(ctx, t.db.Rebind(q), args...)
	}
	return err
}

// putNewArrays writes the resource and version rows of PutNew on
// PostgreSQL in two statements, each column an array parameter (see
// insertArrays). Absent batch, blob and JSON values go as 0, "" and an
// empty byte string and become NULL in the statement.
func (t *Tx) putNewArrays(ctx context.Context, puts []*store.Put, rids, seqs []int64) error {
	n := len(puts)
	var (
		types, ids, methods, blobs = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		versions, lus, batches     = make([]int64, n), make([]int64, n), make([]int64, n)
		deleted                    = make([]bool, n)
		jsons                      = make([][]byte, n)
	)
	for i, p := range puts {
		types[i], ids[i], methods[i], blobs[i] = p.Type, p.ID, p.Method, p.Blob
		versions[i], lus[i], batches[i] = p.Version, Micros(p.LastUpdated), p.Batch
		deleted[i] = p.Deleted
		jsons[i] = []byte{}
		if !p.Deleted && p.JSON != nil {
			jsons[i] = p.JSON
		}
	}
	if _, err := t.Exec(ctx, `INSERT INTO resource (rid, type, id, version, seq, last_updated, deleted)
		SELECT * FROM unnest(?::bigint[], ?::text[], ?::text[], ?::bigint[], ?::bigint[], ?::bigint[], ?::boolean[])`,
		rids, types, ids, versions, seqs, lus, deleted); err != nil {
		return t.batchErr(err)
	}
	if _, err := t.Exec(ctx, `INSERT INTO resource_version (seq, rid, type, version, last_updated, deleted, method, batch, blob, json)
		SELECT seq, rid, type, version, lu, del, method, NULLIF(batch, 0), NULLIF(blob, ''), CASE WHEN del THEN NULL ELSE NULLIF(js, ''::bytea) END
		FROM unnest(?::bigint[], ?::bigint[], ?::text[], ?::bigint[], ?::bigint[], ?::boolean[], ?::text[], ?::bigint[], ?::text[], ?::bytea[])
			AS u(seq, rid, type, version, lu, del, method, batch, blob, js)`,
		seqs, rids, types, versions, lus, deleted, methods, batches, blobs, jsons); err != nil {
		return t.batchErr(err)
	}
	return nil
}

func rows(n, cols int) string {
	one := "(" + Placeholders(cols) + ")"
	return strings.TrimSuffix(strings.Repeat(one+",", n), ",")
}

func (t *Tx) batchErr(err error) error {
	if t.db.isConflict(err) {
		return fmt.Errorf("%w: %v", store.ErrConflict, err)
	}
	return fmt.Errorf("write new resources: %w", err)
}

// allocate reserves nr resource ids and ns version sequence numbers.
// PostgreSQL draws them from the sequences. SQLite has one writer at a time
// (this transaction), so the numbers follow the current maxima, read once
// per transaction and counted on from there.
func (t *Tx) allocate(ctx context.Context, nr, ns int) (rids, seqs []int64, err error) {
	rids = make([]int64, nr)
	seqs = make([]int64, ns)
	if t.db.dialect == Postgres {
		for _, x := range []struct {
			table, col string
			out        []int64
		}{{"resource", "rid", rids}, {"resource_version", "seq", seqs}} {
			n := len(x.out)
			if n == 0 {
				continue
			}
			r, err := t.tx.QueryContext(ctx, `SELECT nextval(pg_get_serial_sequence('`+x.table+`', '`+x.col+`')) FROM generate_series(1, $1)`, n)
			if err != nil {
				return nil, nil, fmt.Errorf("allocate %s ids: %w", x.table, err)
			}
			i := 0
			for r.Next() && i < n {
				if err := r.Scan(&x.out[i]); err != nil {
					r.Close()
					return nil, nil, err
				}
				i++
			}
			r.Close()
			if err := r.Err(); err != nil || i != n {
				return nil, nil, fmt.Errorf("allocate %s ids: got %d of %d: %v", x.table, i, n, err)
			}
		}
		return rids, seqs, nil
	}
	if !t.idsLoaded {
		var maxRid, maxSeq int64
		if err := t.tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(rid), 0) FROM resource`).Scan(&maxRid); err != nil {
			return nil, nil, fmt.Errorf("allocate resource ids: %w", err)
		}
		// AUTOINCREMENT never reuses a sequence number, even of a row that is gone.
		if err := t.tx.QueryRowContext(ctx, `SELECT MAX(COALESCE((SELECT MAX(seq) FROM resource_version), 0), COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'resource_version'), 0))`).Scan(&maxSeq); err != nil {
			return nil, nil, fmt.Errorf("allocate version numbers: %w", err)
		}
		t.nextRid, t.nextSeq, t.idsLoaded = maxRid+1, maxSeq+1, true
	}
	for i := range rids {
		rids[i] = t.nextRid
		t.nextRid++
	}
	for i := range seqs {
		seqs[i] = t.nextSeq
		t.nextSeq++
	}
	return rids, seqs, nil
}
