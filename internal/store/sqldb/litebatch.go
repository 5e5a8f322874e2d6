package sqldb

import (
	"context"

	"github.com/phr-project/phr/internal/store"
)

// On SQLite one transaction writes at a time, and the importer's chunk
// transaction is its critical path: it ran 8.8 s of a 10.6 s import of the
// 120 Synthea patients. Turning the new resources' index entries into rows
// of values took 0.9 s of that (Tx.queue). The ids of new resources are
// drawn in the transaction (the maxima read once, then counted on:
// Tx.allocate), so PrepareNew builds the rows before it, with each
// resource's position in the batch where its rid goes, and the
// transaction fills the rids in. The importer prepares a chunk while the
// chunk before it is written: 8,679-8,892 resources/s before, 9,513-9,532
// after (two alternated pairs).

// liteRows are the rows of a SQLite batch (PrepareNew), built with
// positions in the batch instead of rids. The transaction fills them in
// from the positions, which stay, so a transaction that is tried again
// (WriteTx) fills the same rows anew.
type liteRows struct {
	// res and ver are newRow's values of each resource, in turn.
	res, ver []any
	// tables are the index rows, flat as in pending; at[i] are the
	// positions of the resources their rows belong to, one per row.
	tables [numTables][]any
	at     [numTables][]int32
	// comp are compartment rows (patient, rid) and compAt their
	// resources' positions.
	comp   []any
	compAt []int32
	// inBatch are the reference rows' target_rid places (in
	// tables[tRef]) whose targets are resources of the batch, and
	// inBatchAt the targets' positions.
	inBatch   []int
	inBatchAt []int32
	// targets are the other targets, looked up in the transaction.
	targets []targetSlot
}

// prepareLite builds the rows of puts (first versions, no key twice);
// false when a search parameter is not registered yet or an entry cannot
// be written (PutNew then registers or reports it in the transaction).
func (db *DB) prepareLite(puts []*store.Put) (*liteRows, bool) {
	pos := make(map[resKey]int32, len(puts))
	for i, p := range puts {
		pos[resKey{p.Type, p.ID}] = int32(i)
	}
	nr, nv := len(newResourceCols), len(newVersionCols)
	lr := &liteRows{res: make([]any, 0, len(puts)*nr), ver: make([]any, 0, len(puts)*nv)}
	for i, p := range puts {
		// rid and seq are filled in by the transaction.
		r := newRow(p, 0, 0)
		lr.res = append(lr.res, r[:nr]...)
		lr.ver = append(lr.ver, r[nr:]...)
		if p.Deleted {
			continue
		}
		for _, pat := range p.Patients {
			lr.comp = append(lr.comp, pat, nil)
			lr.compAt = append(lr.compAt, int32(i))
		}
		if p.Index == nil {
			continue
		}
		pid := db.registeredPID(p.Type)
		sink := liteSink{r: lr, pos: pos, at: int32(i)}
		if err := writeIndexRows(p.Index, 0, pid, &sink); err != nil {
			return nil, false
		}
	}
	return lr, true
}

// liteSink adds index rows to liteRows for the resource at position at.
type liteSink struct {
	r   *liteRows
	pos map[resKey]int32
	at  int32
	cur int
}

func (s *liteSink) start(table int, _, pid int64) {
	s.cur = table
	s.r.tables[table] = append(s.r.tables[table], nil, pid)
	s.r.at[table] = append(s.r.at[table], s.at)
}
func (s *liteSink) str(v string)  { s.r.tables[s.cur] = append(s.r.tables[s.cur], v) }
func (s *liteSink) i64(v int64)   { s.r.tables[s.cur] = append(s.r.tables[s.cur], v) }
func (s *liteSink) f64(v float64) { s.r.tables[s.cur] = append(s.r.tables[s.cur], v) }
func (s *liteSink) target(typ, id string) {
	s.r.tables[s.cur] = append(s.r.tables[s.cur], int64(0))
	if typ == "" || id == "" {
		return
	}
	at := len(s.r.tables[s.cur]) - 1
	if p, ok := s.pos[resKey{typ, id}]; ok {
		s.r.inBatch = append(s.r.inBatch, at)
		s.r.inBatchAt = append(s.r.inBatchAt, p)
		return
	}
	s.r.targets = append(s.r.targets, targetSlot{at, resKey{typ, id}})
}

// putNewLite writes a batch of prepareLite's rows (b.lite), none of whose
// resources the transaction knows (PutNewPrepared checks): what PutNew
// writes.
func (t *Tx) putNewLite(ctx context.Context, b *NewBatch) error {
	puts, lr := b.puts, b.lite
	rids, seqs, err := t.allocate(ctx, len(puts), len(puts))
	if err != nil {
		return err
	}
	// Each rid boxed once, for every row that names it.
	boxed := make([]any, len(puts))
	nr, nv := len(newResourceCols), len(newVersionCols)
	for i := range puts {
		rid, seq := any(rids[i]), any(seqs[i])
		boxed[i] = rid
		// newRow's places: resource (rid, ..., seq at 4), version (seq, rid, ...).
		lr.res[i*nr], lr.res[i*nr+4] = rid, seq
		lr.ver[i*nv], lr.ver[i*nv+1] = seq, rid
	}
	if err := t.insertNewRows(ctx, lr.res, lr.ver); err != nil {
		return err
	}
	for i, p := range puts {
		p.Seq = seqs[i]
		t.rids[b.keys[i]] = ridVersion{rids[i], 1}
	}
	for i, tb := range indexTables {
		args, nc := lr.tables[i], len(tb.cols)
		for r, at := range lr.at[i] {
			args[r*nc] = boxed[at]
		}
	}
	refs := lr.tables[tRef]
	for k, at := range lr.inBatch {
		refs[at] = boxed[lr.inBatchAt[k]]
	}
	if err := t.fillTargets(ctx, lr.targets, refs); err != nil {
		return err
	}
	for i := range indexTables {
		if err := t.insertIndexRows(ctx, i, lr.tables[i]); err != nil {
			return err
		}
	}
	for r, at := range lr.compAt {
		lr.comp[r*2+1] = boxed[at]
	}
	return t.insertRows(ctx, "compartment", []string{"patient", "rid"}, lr.comp, " ON CONFLICT DO NOTHING")
}
