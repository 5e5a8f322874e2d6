package importer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/phr-project/phr/internal/store"
)

// Two imports of the same source running at the same time (or of two
// sources sending the same ids) may both find a resource new, in the
// lookups that prepare their chunks, and both create it: the write that
// commits second fails on the unique key of the resource (a constraint
// error on SQLite, SQLSTATE 23505 on PostgreSQL), which the store reports
// as store.ErrConflict. Running the same transaction again cannot help:
// the chunk was merged against a database that has changed. So the run
// merges the lost chunk again from its input, with fresh lookups (the
// identity map and digests the other import wrote, its resources as
// current versions), and writes the outcome: what the other import
// created already is unchanged, or an update or a conflict by the usual
// rules.
//
// The chunk after it has been prepared meanwhile with the identities the
// lost chunk chose (references rewritten through them, and its own items
// may be those resources). The merge again keeps them as they were when
// the other import mapped the source's ids to the same local ids, which it
// does when both found those ids free; otherwise (a local id the other
// import drew or matched differently) the run fails with an error that
// says to import again, which completes it without duplicates.

// maxRedo bounds how many times a chunk is merged again.
const maxRedo = 3

// lostRace reports whether fl's write failed on a concurrent write that
// merging the chunk again may resolve.
func lostRace(fl *flight) bool {
	return fl.err != nil && errors.Is(fl.err, store.ErrConflict) && fl.w != nil && fl.w.attempt < maxRedo
}

// again returns a new item for it as read from the input, to be merged
// anew. A rejected item stays rejected (some rejections are the input
// reader's, which parsing does not repeat).
func (it *item) again() *item {
	if it.act == actReject {
		it.prevAct = actReject
		return it
	}
	n := &item{line: it.line, entry: it.entry, raw: it.raw, del: it.del, fullURL: it.fullURL, prevAct: it.act}
	if it.del {
		n.typ, n.sid = it.typ, it.sid
	}
	if n.prevAct == actNone {
		n.prevAct = actSkip
	}
	return n
}

// redo merges the chunk w again, after its write failed on a concurrent
// write, and hands it to the background to write (r.fl).
func (r *Run) redo(w *chunkWrite) error {
	ctx := r.ctx
	if err := ctx.Err(); err != nil {
		return err
	}
	slog.InfoContext(ctx, "import: a chunk's write met a concurrent write to the same resources; merging it again", "batch", r.sum.Batch, "file", w.file, "attempt", w.attempt+1)
	// Another writer is at work: nothing recorded of the source can be
	// taken as this run's alone, and what the chunk resolved is looked up
	// again.
	r.fresh = freshState{}
	clear(r.cond)
	r.sum.add(w.delta, -1)
	items := make([]*item, len(w.items))
	for i, it := range w.items {
		items[i] = it.again()
		if it.typ != "" && it.sid != "" && it.act != actReject {
			delete(r.ids, it.key())
		}
	}
	ch := &chunk{items: items, bundle: w.bundle}
	r.parallel(items, parseItem)
	for _, it := range items {
		if it.tree == nil && it.act != actReject && !it.del {
			it.act = actReject // as bundleStream.flush
		}
	}
	if err := r.resolveIdentities(ctx, items, ch); err != nil {
		return err
	}
	for i, it := range items {
		old := w.items[i]
		if old.act == actReject || old.localID == "" || it.localID == old.localID {
			continue
		}
		return fmt.Errorf("%w: another import wrote %s/%s as %s/%s while this one was writing it as %s/%s (%s line %d); nothing of the chunk was written, and importing again completes it",
			store.ErrConflict, old.typ, old.sid, old.typ, it.localID, old.typ, old.localID, w.file, old.line)
	}
	// The items the chunk deferred for forward references were not in
	// it, and those it kept had their references resolved: it defers
	// none now (its scope may be gone).
	file, replaying := r.fileName, r.replaying
	r.fileName, r.replaying, r.attempt = w.file, true, w.attempt+1
	defer func() { r.fileName, r.replaying, r.attempt = file, replaying, 0 }()
	return r.processResolved(ch)
}

// add adds the counts of d to s, k times (-1 takes them back).
func (s *Summary) add(d Summary, k int) {
	s.Resources += k * d.Resources
	s.Created += k * d.Created
	s.Updated += k * d.Updated
	s.Unchanged += k * d.Unchanged
	s.Conflicts += k * d.Conflicts
	s.Rejected += k * d.Rejected
	s.Deleted += k * d.Deleted
}

// takenMapped resolves through the source's identity map the unresolved
// items whose source id resolveIdentities found taken. Another import of
// the source may have written them between the map lookup and the check
// of the ids (or, when the map was not read, since checkFresh: fresh.go),
// and without its mapping the run would store a copy of each under a new
// id. Few items get here: a source's ids are taken locally by its own
// resources, which the first lookup finds, or by another source's.
func (r *Run) takenMapped(ctx context.Context, items []*item, taken map[string]bool) error {
	byType := map[string][]string{}
	for _, it := range items {
		if it.localID == "" && it.sid != "" && taken[it.key()] {
			byType[it.typ] = append(byType[it.typ], it.sid)
		}
	}
	known, err := r.lookupIdentities(ctx, byType)
	if err != nil {
		return err
	}
	if len(known) == 0 {
		return nil
	}
	// Something of the source is recorded that this run did not write.
	r.fresh = freshState{}
	for _, it := range items {
		if m, ok := known[it.key()]; ok && it.localID == "" {
			it.mapped(m)
		}
	}
	return nil
}
