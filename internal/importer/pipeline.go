package importer

import (
	"context"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/records"
	"github.com/phr-project/phr/internal/store"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// The write transaction of a chunk runs in the background while the next
// chunk is parsed, matched, validated and rendered: on SQLite the writer
// is one connection on one core, and the preparation of the next chunk
// takes the other. At most one chunk is being written at a time, and
// chunks are written in order.
//
// A chunk's preparation reads what earlier chunks wrote (identity map,
// identifiers, digests, current versions; searches of the Matcher), and
// the reads see committed data only. So before each such read the next
// chunk checks whether it could depend on the chunk being written - the
// same local resource, a business identifier or digest that chunk
// carries, a conditional reference it might answer - and if so waits for
// that write to commit first (settle). The identity map of the chunk in
// flight is in memory (Run.ids) and is not dropped while it is in flight.

// flight is the write transaction of one chunk, running in the background,
// with what the chunk writes that a later chunk's reads could see.
type flight struct {
	done chan struct{}
	err  error
	// keys are "Type/localId" of the chunk's resources.
	keys map[string]bool
	// idents are the business identifiers of the chunk's resources;
	// values are their (type, value) pairs, for conditional references
	// that name no system.
	idents map[identKey]bool
	values map[[2]string]bool
	// hashes are the digests of the chunk's input.
	hashes map[string]bool
	// w is the chunk, kept to merge it again should its write lose a
	// race with another import (see redo).
	w *chunkWrite
}

// newFlight records what the items write.
func newFlight(items []*item) *flight {
	fl := &flight{done: make(chan struct{}), keys: map[string]bool{}, idents: map[identKey]bool{}, values: map[[2]string]bool{}, hashes: map[string]bool{}}
	for _, it := range items {
		if it.typ == "" {
			continue
		}
		if it.localID != "" {
			fl.keys[it.typ+"/"+it.localID] = true
		}
		for _, idn := range it.idents {
			fl.idents[identKey{it.typ, idn[0], idn[1]}] = true
			fl.values[[2]string{it.typ, idn[1]}] = true
		}
		if it.hash != "" {
			fl.hashes[it.hash] = true
		}
	}
	return fl
}

// settle waits for the chunk being written, if any, and returns the error
// of its transaction. A chunk whose write lost a race with another
// import is merged and written again first (see redo).
func (r *Run) settle() error {
	for {
		fl := r.fl
		if fl == nil {
			return nil
		}
		<-fl.done
		r.fl = nil
		if !lostRace(fl) {
			return fl.err
		}
		// redo hands the chunk's new write to the background (r.fl):
		// wait for that one too.
		if err := r.redo(fl.w); err != nil {
			return err
		}
	}
}

// settleInto settles; the write's error becomes *err unless that is set
// already. Input methods end with it: when they return, what they read is
// written.
func (r *Run) settleInto(err *error) {
	if serr := r.settle(); *err == nil && serr != nil {
		*err = serr
	}
}

// settleIf settles when a chunk is being written and dep says what is
// about to be read may depend on it.
func (r *Run) settleIf(dep func(*flight) bool) error {
	if r.fl == nil || !dep(r.fl) {
		return nil
	}
	return r.settle()
}

// settleForItems settles when the chunk being written has one of the
// items' local resources (or, for items not resolved yet, a resource with
// their source id) or digests, or, when idents is set (the items are
// about to be matched by business identifier), one of their business
// identifiers that could still change a match.
//
// An identifier that two or more committed resources carry already makes
// every match on it ambiguous, and the chunk being written can only add
// resources to it: waiting for that chunk would change nothing. Synthea's
// ExplanationOfBenefits all carry one placeholder claim-group identifier,
// so every chunk waited for the previous chunk's write at this point and
// the writes hardly overlapped the preparation of the next chunk.
func (r *Run) settleForItems(ctx context.Context, items []*item, idents bool) error {
	fl := r.fl
	if fl == nil {
		return nil
	}
	var shared []identKey
	dup := map[identKey]bool{}
	for _, it := range items {
		if it.typ == "" {
			continue
		}
		id := it.localID
		if id == "" {
			id = it.sid
		}
		if id != "" && fl.keys[it.typ+"/"+id] {
			return r.settle()
		}
		if it.hash != "" && fl.hashes[it.hash] {
			return r.settle()
		}
		if !idents {
			continue
		}
		for _, idn := range it.idents {
			k := identKey{it.typ, idn[0], idn[1]}
			if fl.idents[k] && !dup[k] {
				dup[k] = true
				shared = append(shared, k)
			}
		}
	}
	if len(shared) == 0 {
		return nil
	}
	committed := make(map[identKey][]string, len(shared))
	if err := r.imp.identifierMatchesAll(ctx, shared, committed); err != nil {
		return err
	}
	for _, k := range shared {
		if len(committed[k]) < 2 {
			return r.settle()
		}
	}
	return nil
}

// settleForConditional settles when the chunk being written could answer
// the conditional reference typ?q: an identifier query whose identifier
// one of its resources carries, or any other query (searches are not
// analysed).
func (r *Run) settleForConditional(typ string, identifier []string, others bool) error {
	return r.settleIf(func(fl *flight) bool {
		if others || len(identifier) != 1 {
			return true
		}
		sys, val, hasSys := strings.Cut(identifier[0], "|")
		if !hasSys {
			return fl.values[[2]string{typ, identifier[0]}]
		}
		return fl.idents[identKey{typ, sys, val}]
	})
}

// chunkFull reports whether a chunk of n items holding size bytes of
// input is complete (see ChunkSize and ChunkBytes).
func (imp *Importer) chunkFull(n, size int) bool {
	limit := imp.ChunkSize
	if limit <= 0 {
		limit = 1000
	}
	return n >= limit || (imp.ChunkBytes > 0 && size >= imp.ChunkBytes)
}

// chunkWrite is what the write transaction of a chunk needs, fixed when
// it is handed to the background: the run goes on to the next chunk.
type chunkWrite struct {
	items, written []*item
	provs          []*records.Prepared
	file           string
	lastAt         time.Time
	now            int64
	// counts of the batch after this chunk: created, updated, unchanged,
	// conflicts, rejected.
	counts [5]int
	// fresh are the chunk's new resources (and its Provenances), made
	// ready to write (sqldb.PrepareNew) before the transaction.
	fresh *sqldb.NewBatch
	// records are the rows the chunk adds to the importer's tables, for
	// the transaction to write when fresh could not carry them.
	records []recordRows
	// What redo needs to merge the chunk again: the fullUrl map of its
	// Bundle, what it added to the run's counts, and how many times it
	// was merged again already.
	bundle  map[string]string
	delta   Summary
	attempt int
}

// startWrite hands the chunk's transaction to the background once the
// previous one has committed.
func (r *Run) startWrite(ctx context.Context, w *chunkWrite) error {
	fl := newFlight(w.items)
	fl.w = w
	// What the transaction does not need is let go now, before waiting
	// for the previous chunk: the next chunk is prepared meanwhile, and
	// both must fit in memory. The input text (raw) stays until the
	// write commits, for redo.
	for _, it := range w.items {
		it.tree = nil
		if it.prep != nil {
			// The version's row and index entries, without the tree
			// (and a Binary's content, stored by now).
			it.prep = &records.Prepared{Put: it.prep.Put}
		}
	}
	// The new resources are encoded now too, while the previous chunk
	// is written: the transaction then only sends them.
	var fresh []*store.Put
	for _, it := range w.written {
		if it.act == actCreate && it.cur == nil {
			fresh = append(fresh, it.prep.Put)
		}
	}
	for _, p := range w.provs {
		fresh = append(fresh, p.Put)
	}
	b, err := r.imp.db.PrepareNew(ctx, fresh)
	if err != nil {
		return err
	}
	w.fresh = b
	w.records = r.records(w.items)
	if b.Encoded() {
		for _, t := range w.records {
			b.Add(t.encode()...)
		}
	}
	b.Seal()
	if err := r.settle(); err != nil {
		return err
	}
	r.fl = fl
	go func() {
		defer close(fl.done)
		fl.err = r.commit(ctx, w)
	}()
	return nil
}
