package importer

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/phr-project/phr/internal/records"
	"github.com/phr-project/phr/internal/store"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// The write transaction of a chunk runs in the background while the next
// chunk is parsed, matched, validated and rendered: on SQLite the writer
// is one connection on one core, and the preparation of the next chunk
// takes the other. On SQLite one chunk is written at a time; on
// PostgreSQL two (see Importer.writers), each in its own transaction,
// and the second commits only after the first has (see awaitEarlier):
// chunks commit in order, so a chunk whose references name resources of
// the chunk before it is never committed without them.
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
	// prev is the chunk handed to the background before this one, while
	// it was still being written: this one commits after it only.
	prev *flight
	// prepared is closed once the chunk's rows are encoded (w.fresh set),
	// or their preparation failed (see Run.prepare).
	prepared chan struct{}
	// key names the advisory lock its transaction holds (see
	// awaitEarlier); begun is closed once the transaction holds it, or
	// has failed.
	key   int64
	begun chan struct{}
	began sync.Once
}

// start closes fl.begun (once).
func (fl *flight) start() { fl.began.Do(func() { close(fl.begun) }) }

// errEarlier is the error of a chunk's write that was rolled back, before
// committing, because the write of the chunk before it failed.
var errEarlier = errors.New("the chunk before it was not written")

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

// settle waits for the chunks being written, if any, and returns the
// error of the first transaction that failed. A chunk whose write lost a
// race with another import is merged and written again first (see redo).
func (r *Run) settle() error {
	var first error
	for len(r.fls) > 0 {
		if err := r.settleOldest(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// settleOldest waits for the oldest chunk being written and returns the
// error of its transaction. One that lost a race with another import is
// merged and handed to the background again (see redo), and so are the
// chunks after it, which were rolled back without it (errEarlier).
func (r *Run) settleOldest() error {
	fl := r.fls[0]
	<-fl.done
	r.fls = r.fls[1:]
	if !lostRace(fl) {
		return fl.err
	}
	later := r.fls
	r.fls = nil
	for _, l := range later {
		<-l.done
	}
	if err := r.redo(fl.w); err != nil {
		return err
	}
	for _, l := range later {
		if !errors.Is(l.err, errEarlier) && !lostRace(l) {
			return l.err
		}
		if err := r.redo(l.w); err != nil {
			return err
		}
	}
	return nil
}

// awaitEarlier waits, in the transaction of fl's chunk and before it
// commits, for the chunk written before it (fl.prev) to finish, and fails
// with errEarlier when that one failed.
//
// The chunks of one run write different rows (a later chunk that reads
// or writes what the earlier one writes waits before it is handed to the
// background: settleForItems), but two runs at the same time may write
// the same rows, and then one run's earlier chunk can wait in the server
// for a row that the other's later chunk wrote, while that one waits here
// for its own earlier chunk, which waits for the first run's later chunk.
// So the wait is the server's: the earlier chunk's transaction holds the
// advisory lock fl.prev.key while it runs, and this one waits for that
// lock (sqldb.Tx.AwaitKey), which the server's deadlock detector sees and
// breaks by failing one of them (store.ErrConflict: the chunk is merged
// again, see redo).
//
// Neither wait can be for a connection of the write pool, which would be
// invisible too: a chunk's transaction begins only once the one before it
// holds its connection (see commit), and is not retried on a conflict
// (sqldb.DB.WriteTxOnce).
func (r *Run) awaitEarlier(ctx context.Context, tx *sqldb.Tx, fl *flight) error {
	prev := fl.prev
	if prev == nil {
		return nil
	}
	if err := tx.AwaitKey(ctx, prev.key); err != nil {
		return err
	}
	// Its transaction has ended; its goroutine is about to report (a
	// write returns without waiting for anything once its transaction
	// has ended: sqldb's TestWriteReturnsWithThePoolBusy).
	select {
	case <-prev.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if prev.err != nil {
		return errEarlier
	}
	return nil
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
	for _, fl := range r.fls {
		if dep(fl) {
			return r.settle()
		}
	}
	return nil
}

// settleForItems settles when the chunk being written has one of the
// items' local resources (or, for items not resolved yet, a resource with
// their source id) or digests, or, when idents is set (the items are
// about to be matched by business identifier), one of their business
// identifiers that could still change a match.
//
// An identifier that two or more committed resources carry makes a match
// on it ambiguous unless other identifiers tell the resources apart (see
// matchIdentifiers): a resource of the chunk being written changes a match
// on it only when it is a candidate that stays, one without an identifier
// that contradicts the item. Waiting for that chunk otherwise would change
// nothing: Synthea's ExplanationOfBenefits all carry one placeholder
// claim-group identifier (and each its own claim id), so every chunk
// waited for the previous chunk's write at this point and the writes
// hardly overlapped the preparation of the next chunk.
func (r *Run) settleForItems(ctx context.Context, items []*item, idents bool) error {
	if len(r.fls) == 0 {
		return nil
	}
	var shared []identKey
	carriers := map[identKey][]*item{} // the items carrying each shared key
	for _, fl := range r.fls {
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
				if !fl.idents[k] {
					continue
				}
				if _, ok := carriers[k]; !ok {
					shared = append(shared, k)
				}
				if !slices.Contains(carriers[k], it) {
					carriers[k] = append(carriers[k], it)
				}
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
	// Every shared identifier is carried by two or more committed
	// resources: wait only for a resource in flight that carries one and
	// does not contradict an item carrying it.
	for _, fl := range r.fls {
		if fl.w == nil {
			return r.settle() // (what it writes is not known)
		}
		for _, in := range fl.w.items {
			for _, idn := range in.idents {
				k := identKey{in.typ, idn[0], idn[1]}
				for _, it := range carriers[k] {
					if contradiction(it.idents, in.idents) == "" {
						return r.settle()
					}
				}
			}
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
	// conflicts, rejected, deleted.
	counts [6]int
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
	fl.key = rand.Int64()
	fl.begun = make(chan struct{})
	fl.prepared = make(chan struct{})
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
	// On SQLite a chunk's rows name no other chunk's resources by rid
	// (the transaction draws the rids and fills them in), so the chunk
	// is prepared before the wait for the previous chunk's write, while
	// that write goes on. On PostgreSQL the chunks in flight after the
	// wait count (see below).
	early := r.imp.db.SQLDialect() != sqldb.Postgres
	var earlyErr error
	if early {
		earlyErr = r.prepare(ctx, w, fl, nil)
	}
	for len(r.fls) >= r.imp.writers {
		if err := r.settleOldest(); err != nil {
			// The later chunk ends before the run does (rolled back:
			// errEarlier, unless it failed on its own).
			if serr := r.settle(); serr != nil && !errors.Is(serr, errEarlier) {
				slog.WarnContext(ctx, "import: the chunk after a failed one failed too", "err", serr)
			}
			return err
		}
	}
	// The chunks still in flight commit before this one does, or this
	// one does not commit (awaitEarlier; a redo merges and prepares it
	// again): the references to their resources can name them by rid.
	// They are the ones left after the wait above, which may have merged
	// them again (redo).
	inflight := slices.Clone(r.fls)
	w.records = r.records(w.items)
	if n := len(r.fls); n > 0 {
		fl.prev = r.fls[n-1]
	}
	r.fls = append(r.fls, fl)
	go func() {
		defer close(fl.done)
		defer fl.start()
		if early {
			fl.err = earlyErr
		} else {
			fl.err = r.prepare(ctx, w, fl, inflight)
		}
		inflight = nil
		if fl.err == nil {
			fl.err = r.commit(ctx, fl)
		}
		if fl.err == nil {
			// Its rows are written: their buffers serve the next
			// chunks. Not after a failure, which the garbage collector
			// cleans up: when the server breaks a COPY off, the driver
			// (pgconn.CopyFrom) may return before its goroutine stops
			// reading the buffer.
			w.fresh.Release()
		}
		// Else every chunk of the run stays reachable from the last.
		fl.prev = nil
	}()
	return nil
}

// prepare encodes the chunk's new resources and the importer's rows
// (sqldb.PrepareNew), in the chunk's goroutine: the run goes on with the
// next chunk meanwhile (encoding took a fifth of the time of the run's
// goroutine, which is the import's critical path on PostgreSQL). The
// transaction then only sends them. inflight are the chunks handed to
// the background before this one and still being written; their
// resources are named by the rids their preparation drew, so this one
// waits for those first. fl.prepared is closed when w.fresh is set, or
// the preparation failed.
func (r *Run) prepare(ctx context.Context, w *chunkWrite, fl *flight, inflight []*flight) error {
	defer close(fl.prepared)
	var fresh []*store.Put
	for _, it := range w.written {
		if it.act == actCreate && it.cur == nil {
			fresh = append(fresh, it.prep.Put)
		}
	}
	for _, p := range w.provs {
		fresh = append(fresh, p.Put)
	}
	var after []*sqldb.NewBatch
	for _, f := range inflight {
		select {
		case <-f.prepared:
		case <-ctx.Done():
			return ctx.Err()
		}
		if f.w.fresh != nil {
			// (nil: its preparation failed, and so will this chunk's
			// commit, with errEarlier.)
			after = append(after, f.w.fresh)
		}
	}
	b, err := r.imp.db.PrepareNew(ctx, fresh, after...)
	if err != nil {
		return err
	}
	if b.Encoded() {
		for _, t := range w.records {
			if err := t.add(b); err != nil {
				return err
			}
		}
		// Their rows are encoded: their text and index entries can go
		// (two chunks in flight and the one being prepared hold about
		// 80 MB otherwise, which the garbage collector scans again and
		// again during an import).
		for _, it := range w.written {
			if it.act == actCreate && it.cur == nil {
				it.prep = nil
			}
		}
		w.provs = nil
	}
	b.Seal()
	w.fresh = b
	return nil
}

// writers is how many chunks may be written at the same time: on
// PostgreSQL two, each on its own connection and server process, so that
// the server inserts one chunk's rows while it inserts the other's and
// this process prepares the next; on SQLite one, as its single writer
// runs one transaction at a time. Two only when the write pool has a
// connection more, for the rest of the server's writes (and the import's
// heartbeat and id draws) meanwhile. New sets Importer.writers with it.
func writers(db *sqldb.DB) int {
	if db != nil && db.SQLDialect() == sqldb.Postgres && db.WriteConns() >= 3 {
		return 2
	}
	return 1
}
