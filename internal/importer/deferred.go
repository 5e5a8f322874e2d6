package importer

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/phr-project/phr/internal/r4"
)

// A reference can point forward: at a resource that arrives later in the
// same import (a later chunk of a Bundle, a later line or file of NDJSON).
// Its local id is not known yet - from a second source it may be another
// id than the source's, or an existing resource the target's identifier
// matches - so the resource holding it is deferred: identities are
// resolved as usual (so that others can point at it), but it is written
// after the rest of its scope (the Bundle, or the whole run for NDJSON),
// when every identity of the scope is known. Deferred items wait in a
// temporary file, so memory stays flat however many there are.

// deferScope collects the items deferred within one Bundle or run.
type deferScope struct {
	sp itemSpool
	// keys are the "Type/sourceId" of deferred items: a later item for
	// the same resource is deferred too, to keep their order.
	keys map[string]bool
	// ids keeps the local ids of deferred items (r.ids may be cleared);
	// local has their local "Type/id".
	ids   map[string]string
	local map[string]bool
}

// deferred is what a deferred item keeps: its input and the identity
// already resolved for it.
type deferred struct {
	spooledInput
	File    string `json:"f,omitempty"`
	Local   string `json:"i"`
	Known   bool   `json:"k,omitempty"`
	KnownV  string `json:"kv,omitempty"`
	KnownUp string `json:"ku,omitempty"`
	KnownA  string `json:"ka,omitempty"`
	NewMap  bool   `json:"n,omitempty"`
	OwnV    int64  `json:"ov,omitempty"`
	OwnSame bool   `json:"os,omitempty"`
}

func newScope() *deferScope {
	return &deferScope{sp: itemSpool{pattern: "phr-import-deferred-*"}, keys: map[string]bool{}, ids: map[string]string{}, local: map[string]bool{}}
}

// add writes an item to the scope's file.
func (sc *deferScope) add(file string, it *item) error {
	err := sc.sp.put(deferred{spooledInput: inputOf(it), File: file,
		Local: it.localID, Known: it.known, KnownV: it.knownV, KnownUp: it.knownUp, KnownA: it.knownAgreed, NewMap: it.newMap, OwnV: it.ownVersion, OwnSame: it.ownSame}, it.raw)
	if err != nil {
		return fmt.Errorf("defer %s: %w", it.key(), err)
	}
	sc.keys[it.key()] = true
	sc.ids[it.key()] = it.localID
	sc.local[it.typ+"/"+it.localID] = true
	return nil
}

// close removes the scope's file.
func (sc *deferScope) close() { sc.sp.close() }

// read calls f with each deferred item, in the order deferred.
func (sc *deferScope) read(f func(*item, string) error) error {
	for i := 0; i < sc.sp.len(); i++ {
		var d deferred
		raw, err := sc.sp.get(i, &d)
		if err != nil {
			return fmt.Errorf("read deferred items: %w", err)
		}
		it := d.item(raw)
		it.localID, it.known, it.knownV, it.knownUp, it.knownAgreed, it.newMap, it.ownVersion, it.ownSame = d.Local, d.Known, d.KnownV, d.KnownUp, d.KnownA, d.NewMap, d.OwnV, d.OwnSame
		if !d.Del {
			parseItem(it)
			it.issues = d.Issues // the same parse warnings, and those of resolving
		}
		if err := f(it, d.File); err != nil {
			return err
		}
	}
	return nil
}

// deferForward moves the items of ch whose references may point forward
// out of the chunk into the scope (none when the run is replaying).
func (r *Run) deferForward(ctx context.Context, ch *chunk) error {
	sc := r.scope
	if sc == nil || r.replaying {
		return nil
	}
	kept := ch.items[:0]
	for _, it := range ch.items {
		later, err := r.pointsForward(ctx, it, ch, sc)
		if err != nil {
			return err
		}
		if !later {
			kept = append(kept, it)
			continue
		}
		if err := sc.add(r.fileName, it); err != nil {
			return err
		}
	}
	clear(ch.items[len(kept):])
	ch.items = kept
	return nil
}

// pointsForward reports whether an item must wait for the rest of its
// scope: it has a reference nothing resolves yet, or an earlier item for
// the same resource waits.
func (r *Run) pointsForward(ctx context.Context, it *item, ch *chunk, sc *deferScope) (bool, error) {
	if it.act == actReject || it.act == actSkip || it.typ == "" {
		return false, nil
	}
	if sc.keys[it.key()] {
		return true, nil
	}
	if it.del || it.tree == nil {
		return false, nil
	}
	later := false
	var ferr error
	walkRefs(it.tree, func(ref string) string {
		if later || ferr != nil {
			return ref
		}
		if _, ok := ch.bundle[ref]; ok {
			return ref
		}
		if strings.HasPrefix(ref, "urn:uuid:") || strings.HasPrefix(ref, "urn:oid:") {
			later = ch.bundle != nil // only a Bundle's later entry can name it
			return ref
		}
		if t, q, ok := strings.Cut(ref, "?"); ok && r4.IsResourceType(t) {
			if _, err := url.ParseQuery(q); err != nil {
				return ref
			}
			local, err := r.resolveConditional(ctx, t, q, ch)
			ferr = err
			later = local == ""
			return ref
		}
		pr, ok := r.sourceRef(ref)
		if !ok || !r4.IsResourceType(pr.Type) {
			return ref
		}
		k := pr.Type + "/" + pr.ID
		if _, ok := r.ids[k]; !ok {
			if _, ok := sc.ids[k]; !ok {
				later = true
			}
		}
		if pr.Type == "Binary" && sc.keys[k] && r.confined() {
			// A patient may point only at a Binary their run has
			// accepted (see checkAccess): wait for it.
			later = true
		}
		return ref
	})
	return later, ferr
}

// replay processes the items deferred in sc, in order, now that every
// identity of the scope is resolved; references still unresolved are kept
// as they are. bundle is the fullUrl map of the scope's Bundle (nil for a
// run).
func (r *Run) replay(sc *deferScope, bundle map[string]string) error {
	if sc.sp.len() == 0 {
		return nil
	}
	slog.DebugContext(r.ctx, "import: writing the resources whose references pointed forward", "batch", r.sum.Batch, "count", sc.sp.len())
	r.replaying = true
	r.replayed = sc
	defer func() { r.replaying, r.replayed = false, nil }()
	// Identities of deferred items are known: put them back where
	// references are rewritten from.
	for k, local := range sc.ids {
		r.ids[k] = local
	}
	file := r.fileName
	defer func() { r.fileName = file }()
	var items []*item
	size := 0 // bytes of input in items
	keys := map[string]bool{}
	flush := func() error {
		if len(items) == 0 {
			return nil
		}
		ch := &chunk{items: items, bundle: bundle}
		items, size = nil, 0
		clear(keys)
		if err := r.checkFresh(r.ctx); err != nil {
			return err
		}
		return r.processResolved(ch)
	}
	err := sc.read(func(it *item, name string) error {
		if name != r.fileName || keys[it.key()] {
			if err := flush(); err != nil {
				return err
			}
			r.fileName = name
		}
		keys[it.key()] = true
		items = append(items, it)
		size += len(it.raw)
		if r.imp.chunkFull(len(items), size) {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

// Complete writes what waited for the end of the run (resources whose
// references pointed forward). Call it once all input is read; Finish
// with status "done" calls it when the caller did not.
func (r *Run) Complete() (err error) {
	defer r.settleInto(&err)
	sc := r.runScope
	if sc == nil {
		return nil
	}
	defer sc.close()
	r.scope, r.runScope = nil, nil
	return r.replay(sc, nil)
}

// discard drops what waits (the run failed).
func (r *Run) discard() {
	r.settle()
	if r.runScope != nil {
		r.runScope.close()
	}
}
