package sqldb

import (
	"context"
	"fmt"
	"slices"

	"github.com/phr-project/phr/internal/store"
)

// On SQLite, the one write transaction is the import's bottleneck: it
// runs on one core while parsing, validation and lookups share the other.
// PrepareNew therefore builds the rows of a batch's new resources (the
// resource and version rows, the index and compartment rows) before the
// transaction, while the previous chunk is being written, and the
// transaction only numbers and inserts them. The numbers (rid and seq) are
// drawn in the transaction, as the store is the only one to know them
// there; the prepared rows hold them relative to the batch's first
// resource, and the transaction adds the first one's.

// preparedRows are the rows of a NewBatch on SQLite, flat argument lists
// as Tx.insertRows takes them. Resource ids and sequence numbers in them
// are offsets: the i-th put's rows hold i.
type preparedRows struct {
	res, ver []any
	idx      [numTables][]any
	comp     []any
}

// The positions of the numbers a transaction adds to preparedRows.
var (
	resRidCol = slices.Index(newResourceCols, "rid")
	resSeqCol = slices.Index(newResourceCols, "seq")
	verRidCol = slices.Index(newVersionCols, "rid")
	verSeqCol = slices.Index(newVersionCols, "seq")
)

// prepareRows builds the rows of puts (first versions) for
// Tx.putPrepared; nil when an index entry needs PutNew (a search
// parameter that has no id yet, which the transaction registers, or an
// entry it reports an error for).
func (db *DB) prepareRows(puts []*store.Put) *preparedRows {
	nr, nv := len(newResourceCols), len(newVersionCols)
	pr := &preparedRows{res: make([]any, 0, len(puts)*nr), ver: make([]any, 0, len(puts)*nv)}
	var pend pending
	sink := &pendingSink{p: &pend}
	for i, p := range puts {
		rid := int64(i)
		r := newRow(p, rid, rid)
		pr.res = append(pr.res, r[:nr]...)
		pr.ver = append(pr.ver, r[nr:]...)
		if p.Deleted {
			continue
		}
		// As Tx.queue: the compartment rows go in with ON CONFLICT DO
		// NOTHING, which drops a patient named twice.
		for _, pat := range p.Patients {
			pend.comp = append(pend.comp, pat, rid)
		}
		if p.Index == nil {
			continue
		}
		ids := db.params.forType(p.Type)
		pid := func(code string) (int64, error) {
			if id, ok := ids[code]; ok {
				return id, nil
			}
			return 0, errUnregistered
		}
		if err := writeIndexRows(p.Index, rid, pid, sink); err != nil {
			return nil
		}
	}
	pr.idx = pend.tables
	pr.comp = pend.comp
	return pr
}

// putPrepared writes a batch whose rows prepareRows built: PutNew's rows,
// numbered here.
func (t *Tx) putPrepared(ctx context.Context, b *NewBatch) error {
	puts := b.puts
	seen := make(map[resKey]bool, len(puts))
	for _, p := range puts {
		k := resKey{p.Type, p.ID}
		if _, known := t.rids[k]; known || seen[k] {
			return fmt.Errorf("%w: %s/%s was already written", store.ErrConflict, p.Type, p.ID)
		}
		seen[k] = true
	}
	rids, seqs, err := t.allocate(ctx, len(puts), len(puts))
	if err != nil {
		return err
	}
	// allocate numbers consecutively: the i-th put is rid0+i, seq0+i.
	rid0, seq0 := rids[0], seqs[0]
	pr := b.rows
	// The prepared rows stay as they are (a retried transaction numbers
	// them again): the numbered ones are copies.
	res := numbered(pr.res, len(newResourceCols), map[int]int64{resRidCol: rid0, resSeqCol: seq0})
	if err := t.insertRows(ctx, "resource", newResourceCols, res, ""); err != nil {
		return t.batchErr(err)
	}
	ver := numbered(pr.ver, len(newVersionCols), map[int]int64{verRidCol: rid0, verSeqCol: seq0})
	if err := t.insertRows(ctx, "resource_version", newVersionCols, ver, ""); err != nil {
		return t.batchErr(err)
	}
	for i, tb := range indexTables {
		if err := t.insertRows(ctx, tb.name, tb.cols, numbered(pr.idx[i], len(tb.cols), map[int]int64{0: rid0}), ""); err != nil {
			return err
		}
	}
	if err := t.insertRows(ctx, "compartment", []string{"patient", "rid"}, numbered(pr.comp, 2, map[int]int64{1: rid0}), " ON CONFLICT DO NOTHING"); err != nil {
		return err
	}
	for i, p := range puts {
		p.Seq = seqs[i]
		t.rids[resKey{p.Type, p.ID}] = ridVersion{rids[i], 1}
	}
	return nil
}

// numbered returns a copy of the flat rows of nc values in args with
// base[c] added to the (int64) value of column c.
func numbered(args []any, nc int, base map[int]int64) []any {
	out := slices.Clone(args)
	for c, add := range base {
		for i := c; i < len(out); i += nc {
			out[i] = out[i].(int64) + add
		}
	}
	return out
}
