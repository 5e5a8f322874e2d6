package records

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/phr-project/phr/internal/procs"
	"log/slog"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/r4"
	"github.com/phr-project/phr/internal/store"
)

// EntryResponse is the outcome of one Bundle entry.
type EntryResponse struct {
	// Status is the HTTP status code of the entry.
	Status int
	// Location is "Type/id/_history/n" for writes.
	Location     string
	ETag         string
	LastModified time.Time
	// Resource is the version written or read (nil for deletes).
	Resource *store.Resource
	// Body is the response body of a GET entry.
	Body []byte
	// Outcome is set for failed batch entries.
	Outcome *fhir.Error
}

// Getter executes the GET entries of a batch or transaction (read, vread,
// search...), which the HTTP layer routes like real requests.
type Getter func(ctx context.Context, relURL string) (status int, body []byte, err error)

// bundleEntry is one parsed entry.
type bundleEntry struct {
	index   int
	method  string
	typ, id string
	// query is the search of a conditional update or delete ("Type?query").
	query       string
	rawURL      string
	fullURL     string
	res         *fhirjson.Value
	ifMatch     int64
	ifNoneExist string
	// done is set when the entry needs no write (conditional create matched).
	done *EntryResponse
	// prep is the prepared version of a POST or PUT entry, or prepErr why
	// it could not be prepared; idErr is a PUT's id mismatch.
	prep           *prepared
	prepErr, idErr error
}

// BulkBundleBytes is the size from which a Bundle is processed as bulk
// work, with all CPUs (package procs): a Synthea patient's transaction is
// several MB, an app's few-entry transaction a few KB.
const BulkBundleBytes = 256 << 10

// ProcessBundle runs a transaction or batch Bundle and returns the type of
// the response Bundle and its entries in request order.
//
// A transaction whose conditional searches a concurrent write answers
// differently between its preparation and its write is processed again
// from the body (a few times, then 409).
func (s *Service) ProcessBundle(ctx context.Context, body []byte, get Getter) (string, []EntryResponse, error) {
	if len(body) >= BulkBundleBytes {
		defer procs.Bulk()()
	}
	for attempt := 1; ; attempt++ {
		b, err := parseBody(body)
		if err != nil {
			return "", nil, err
		}
		typ, out, err := s.ProcessBundleTree(ctx, b, get)
		if attempt < 4 && errors.Is(err, errMatchesChanged) {
			continue
		}
		return typ, out, err
	}
}

// ProcessBundleTree is ProcessBundle for a parsed Bundle, which it changes
// (a transaction whose conditional searches changed answers gets 409).
func (s *Service) ProcessBundleTree(ctx context.Context, b *fhirjson.Value, get Getter) (string, []EntryResponse, error) {
	if b.GetString("resourceType") != "Bundle" {
		return "", nil, fhir.BadRequest("POST to the base must send a Bundle, not %q", b.GetString("resourceType"))
	}
	switch t := b.GetString("type"); t {
	case "transaction":
		out, err := s.transaction(ctx, b, get)
		return "transaction-response", out, err
	case "batch":
		out, err := s.batch(ctx, b, get)
		return "batch-response", out, err
	default:
		return "", nil, fhir.BadRequest("Bundle.type must be transaction or batch to be processed, not %q", t)
	}
}

func entryErr(i int, err *fhir.Error) *fhir.Error {
	return err.AtPath(fmt.Sprintf("Bundle.entry[%d]", i))
}

// parseEntries reads the entries and their requests.
func (s *Service) parseEntries(b *fhirjson.Value) ([]*bundleEntry, error) {
	arr := b.Get("entry")
	if arr == nil {
		return nil, nil
	}
	if arr.Kind != fhirjson.Array {
		return nil, fhir.BadRequest("Bundle.entry must be an array")
	}
	out := make([]*bundleEntry, 0, len(arr.Items))
	for i, e := range arr.Items {
		req := e.Get("request")
		if req == nil || req.Kind != fhirjson.Object {
			return nil, entryErr(i, fhir.BadRequest("the entry has no request"))
		}
		be := &bundleEntry{index: i, method: strings.ToUpper(req.GetString("method")), rawURL: req.GetString("url"), fullURL: e.GetString("fullUrl"), res: e.Get("resource")}
		be.ifNoneExist = req.GetString("ifNoneExist")
		if im := req.GetString("ifMatch"); im != "" {
			v, err := ParseETag(im)
			if err != nil {
				return nil, entryErr(i, fhir.BadRequest("request.ifMatch: %v", err))
			}
			be.ifMatch = v
		}
		u := s.relative(be.rawURL)
		if u == "" {
			return nil, entryErr(i, fhir.BadRequest("the entry's request has no url"))
		}
		path, query, _ := strings.Cut(u, "?")
		parts := strings.Split(strings.Trim(path, "/"), "/")
		be.typ = parts[0]
		switch be.method {
		case "GET", "HEAD":
			be.rawURL = u
		case "POST":
			if len(parts) != 1 {
				return nil, entryErr(i, fhir.BadRequest("a POST entry's url must be a resource type, not %q", u))
			}
		case "PUT", "PATCH", "DELETE":
			if query != "" && len(parts) == 1 {
				be.query = query
			} else if len(parts) == 2 {
				be.id = parts[1]
			} else {
				return nil, entryErr(i, fhir.BadRequest("a %s entry's url must be Type/id or Type?search, not %q", be.method, u))
			}
		default:
			return nil, entryErr(i, fhir.BadRequest("unknown request method %q", be.method))
		}
		if be.method != "GET" && be.method != "HEAD" {
			if !r4.IsResourceType(be.typ) {
				return nil, entryErr(i, fhir.BadRequest("unknown resource type %q in %q", be.typ, u))
			}
			if be.method != "DELETE" && (be.res == nil || be.res.Kind != fhirjson.Object) {
				return nil, entryErr(i, fhir.BadRequest("a %s entry needs a resource", be.method))
			}
			if be.method == "POST" || be.method == "PUT" {
				if rt := be.res.GetString("resourceType"); rt != be.typ {
					return nil, entryErr(i, fhir.BadRequest("the entry's resource is a %q but its url names %s", rt, be.typ))
				}
			}
		}
		out = append(out, be)
	}
	return out, nil
}

// relative strips this server's base URL from an absolute URL.
func (s *Service) relative(u string) string {
	// Called for every reference of a Bundle: no concatenation.
	if s.baseURL != "" && len(u) > len(s.baseURL) && u[len(s.baseURL)] == '/' && strings.HasPrefix(u, s.baseURL) {
		return u[len(s.baseURL)+1:]
	}
	return strings.TrimPrefix(u, "/")
}

// target sets the resource a conditional PUT, PATCH or DELETE entry
// writes from what its search matched: the match; for a PUT without one,
// the entry's id or a new one. A DELETE that matches nothing is done
// (204); a PATCH that matches nothing fails.
func (e *bundleEntry) target(match *store.Resource) *fhir.Error {
	switch {
	case match != nil:
		e.id = match.ID
	case e.method == "PUT":
		if e.id = e.res.GetString("id"); e.id == "" {
			e.id = fhir.NewID()
		}
	case e.method == "DELETE":
		e.done = &EntryResponse{Status: http.StatusNoContent}
	default:
		return fhir.NotFound("conditional patch %s?%s matched nothing", e.typ, e.query)
	}
	return nil
}

// ParseETag parses W/"n", "n" or n into a version number.
func ParseETag(s string) (int64, error) {
	t := strings.TrimPrefix(strings.TrimSpace(s), "W/")
	t = strings.Trim(t, `"`)
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 1 {
		return 0, fmt.Errorf("%q is not a version ETag like W/\"3\"", s)
	}
	return v, nil
}

// transaction runs all entries atomically.
func (s *Service) transaction(ctx context.Context, b *fhirjson.Value, get Getter) ([]EntryResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	entries, err := s.parseEntries(b)
	if err != nil {
		return nil, err
	}
	// Ids of new resources and the map from fullUrl to their local
	// reference, so that references between entries can be rewritten.
	refs := map[string]string{}
	log := &matchLog{}
	for _, e := range entries {
		switch e.method {
		case "POST":
			if e.ifNoneExist != "" {
				match, err := s.conditionalMatchLog(ctx, log, e.typ, e.ifNoneExist, "ifNoneExist")
				if err != nil {
					return nil, entryErr(e.index, fhir.AsError(err))
				}
				if match != nil {
					e.id = match.ID
					e.done = &EntryResponse{Status: http.StatusOK, Resource: match}
				}
			}
			if e.id == "" {
				e.id = fhir.NewID()
			}
		case "PUT", "PATCH", "DELETE":
			if e.query != "" {
				match, err := s.conditionalMatchLog(ctx, log, e.typ, e.query, "conditional "+strings.ToLower(e.method))
				if err != nil {
					return nil, entryErr(e.index, fhir.AsError(err))
				}
				if err := e.target(match); err != nil {
					return nil, entryErr(e.index, err)
				}
			}
		}
		if e.fullURL != "" && e.id != "" && e.method != "GET" {
			refs[e.fullURL] = e.typ + "/" + e.id
		}
	}
	// Rewrite references and prepare the new versions, in parallel: the
	// validation, index extraction and rendering need no lock.
	cond := newCondCache(entries)
	cond.log = log
	if err := s.prepareEntries(ctx, p, entries, refs, cond); err != nil {
		return nil, atEntry(err)
	}
	out, err := s.writeEntries(ctx, p, entries, log)
	if err != nil {
		return nil, atEntry(err)
	}
	for _, e := range entries {
		if e.method == "GET" || e.method == "HEAD" {
			out[e.index] = s.getEntry(ctx, e, get)
		}
	}
	return out, nil
}

// workers is how many goroutines prepare the entries of a Bundle.
var workers = runtime.GOMAXPROCS(0)

// parallel runs f(0..n-1) on the available cores.
func parallel(n int, f func(i int)) {
	w := min(workers, n/8)
	if w <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}

// atEntry turns an *entryFailure into a *fhir.Error naming the entry.
func atEntry(err error) error {
	var f *entryFailure
	if errors.As(err, &f) {
		return entryErr(f.e.index, fhir.AsError(f.err))
	}
	return err
}

// prepareEntries rewrites the references of the write entries (fullUrls
// of other entries become local references, conditional references are
// resolved) and validates and indexes the resources of POST and PUT
// entries. A reference that cannot be resolved fails the Bundle at once
// (the first such entry); a resource that fails validation fails it when
// the entry's turn to be written comes (prepErr), as if prepared there.
// A failing entry comes back as an *entryFailure.
func (s *Service) prepareEntries(ctx context.Context, p access.Principal, entries []*bundleEntry, refs map[string]string, cond *condCache) error {
	rewriteErrs := make([]error, len(entries))
	parallel(len(entries), func(i int) {
		e := entries[i]
		if e.res == nil || e.method == "GET" || e.method == "HEAD" || e.method == "DELETE" {
			return
		}
		if err := s.rewriteRefs(ctx, e, refs, cond); err != nil {
			rewriteErrs[i] = err
			return
		}
		if e.done == nil && (e.method == "POST" || e.method == "PUT") {
			e.prep, e.prepErr = s.prepareEntry(p, e)
		}
	})
	for i, err := range rewriteErrs {
		if err != nil {
			return &entryFailure{entries[i], err}
		}
	}
	return nil
}

// prepareEntry validates and indexes the resource of a POST or PUT entry
// (its version and time are stamped in the write transaction).
func (s *Service) prepareEntry(p access.Principal, e *bundleEntry) (*prepared, error) {
	res := e.res
	if e.method == "POST" {
		if err := allow(p, access.Create, e.typ); err != nil {
			return nil, err
		}
	} else if id := res.GetString("id"); id != "" && id != e.id {
		e.idErr = fhir.BadRequest("the resource id %q differs from the id %q in request.url", id, e.id)
		return nil, nil
	}
	res.SetAfter("id", fhirjson.NewString(e.id), "resourceType")
	Confine(p, e.typ, res, nil)
	prep, err := s.prepareTree(res, e.typ, e.id, 1, s.now().UTC().Truncate(time.Microsecond), e.method, WriteOptions{IfMatch: e.ifMatch}, false)
	if err != nil {
		return nil, err
	}
	if e.method == "POST" {
		// Rendered here, in parallel and before the write transaction:
		// there a new resource (version 1) only gets its time (stamp).
		// An update learns its version only there.
		prep.render()
	}
	return prep, nil
}

// beforeWrite, when set (by tests), runs between the preparation of a
// Bundle's entries and its write transaction.
var beforeWrite func()

// entryFailure is the failure of one entry inside the write transaction;
// it unwraps to the cause so that the store retries conflicts.
type entryFailure struct {
	e   *bundleEntry
	err error
}

func (f *entryFailure) Error() string { return f.err.Error() }
func (f *entryFailure) Unwrap() error { return f.err }

// writeEntries performs the write entries in one store transaction, in
// the order FHIR prescribes (DELETE, POST, PUT, PATCH), and returns the
// responses by entry index. The current versions of the resources the
// entries change are read in one query per type, and new resources are
// written many per statement when the store can (store.BulkTx). The
// conditional searches in log are checked first (verify). A failing entry
// comes back as an *entryFailure.
func (s *Service) writeEntries(ctx context.Context, p access.Principal, entries []*bundleEntry, log *matchLog) ([]EntryResponse, error) {
	for _, e := range entries {
		if e.prep != nil && e.prepErr == nil {
			if err := s.storeBlob(ctx, e.prep); err != nil {
				return nil, err
			}
		}
	}
	n := 0
	for _, e := range entries {
		n = max(n, e.index+1)
	}
	if beforeWrite != nil {
		beforeWrite()
	}
	var out []EntryResponse
	err := s.store.Write(ctx, func(tx store.Tx) error {
		// Reads made while the transaction is open run inside it.
		ctx := store.WithTx(ctx, tx)
		var err error
		out, err = s.writeInTx(ctx, tx, p, entries, n, log)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// writeInTx is the work of writeEntries inside the store transaction tx;
// the responses go by entry index into a slice of n.
func (s *Service) writeInTx(ctx context.Context, tx store.Tx, p access.Principal, entries []*bundleEntry, n int, log *matchLog) ([]EntryResponse, error) {
	out := make([]EntryResponse, n)
	if err := s.verify(ctx, log); err != nil {
		return nil, err
	}
	w, err := s.newEntryWriter(ctx, tx, p, entries)
	if err != nil {
		return nil, err
	}
	for _, m := range []string{"DELETE", "POST", "PUT", "PATCH"} {
		for _, e := range entries {
			if e.method != m {
				continue
			}
			if e.done != nil {
				out[e.index] = *e.done
				continue
			}
			r, err := w.write(e)
			if err != nil {
				return nil, &entryFailure{e, err}
			}
			out[e.index] = r
		}
	}
	if err := w.flushNew(); err != nil {
		return nil, err
	}
	return out, nil
}

// entryWriter writes the entries of a Bundle inside one store transaction.
type entryWriter struct {
	s    *Service
	ctx  context.Context
	tx   store.Tx
	bulk store.BulkTx
	p    access.Principal
	// at is the time of the versions written (later for a resource whose
	// current version is not older).
	at time.Time
	// cur holds the current version of each resource the entries change
	// (nil when it does not exist), kept up to date as entries are written.
	cur map[string]*store.Resource
	// fresh are first versions waiting for one PutNew; freshKeys their keys.
	fresh     []*store.Put
	freshKeys map[string]bool
	// pending names, for a patient-confined principal, the resources the
	// transaction creates or updates: each passes its own checks or the
	// whole transaction fails, so an attachment may point at a Binary of
	// the transaction, and a Binary's securityContext name a resource of
	// it, before it is written (Pending).
	pending map[string]bool
}

// isPending is the entryWriter's Pending.
func (w *entryWriter) isPending() Pending {
	if w.pending == nil {
		return Pending{}
	}
	return Pending{Accepted: func(typ, id string) bool { return w.pending[typ+"/"+id] }}
}

func (s *Service) newEntryWriter(ctx context.Context, tx store.Tx, p access.Principal, entries []*bundleEntry) (*entryWriter, error) {
	w := &entryWriter{s: s, ctx: ctx, tx: tx, p: p, at: s.now().UTC().Truncate(time.Microsecond), cur: map[string]*store.Resource{}, freshKeys: map[string]bool{}}
	w.bulk, _ = tx.(store.BulkTx)
	if p.Patient() != "" {
		w.pending = map[string]bool{}
		for _, e := range entries {
			if e.done == nil && e.id != "" && (e.method == "POST" || e.method == "PUT") {
				w.pending[e.typ+"/"+e.id] = true
			}
		}
	}
	byType := map[string][]string{}
	for _, e := range entries {
		if e.done != nil || e.id == "" || e.method == "POST" || e.method == "GET" || e.method == "HEAD" {
			continue
		}
		k := e.typ + "/" + e.id
		if _, ok := w.cur[k]; ok {
			continue
		}
		w.cur[k] = nil
		byType[e.typ] = append(byType[e.typ], e.id)
	}
	for typ, ids := range byType {
		if w.bulk != nil {
			found, err := w.bulk.Currents(ctx, typ, ids)
			if err != nil {
				return nil, err
			}
			for id, r := range found {
				w.cur[typ+"/"+id] = r
			}
			continue
		}
		for _, id := range ids {
			r, err := tx.Current(ctx, typ, id)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			w.cur[typ+"/"+id] = r
		}
	}
	return w, nil
}

// timeAfter returns the writer's time, or later than the current version.
func (w *entryWriter) timeAfter(cur *store.Resource) time.Time {
	if cur != nil && !w.at.After(cur.LastUpdated) {
		return cur.LastUpdated.Add(time.Microsecond)
	}
	return w.at
}

// put writes a version: first versions wait for one multi-row PutNew, the
// others go at once (after the waiting ones if one of them is the same
// resource).
func (w *entryWriter) put(p *store.Put) error {
	k := p.Type + "/" + p.ID
	if w.freshKeys[k] {
		if err := w.flushNew(); err != nil {
			return err
		}
	}
	if w.bulk != nil && p.Version == 1 {
		w.fresh = append(w.fresh, p)
		w.freshKeys[k] = true
	} else if err := w.tx.Put(w.ctx, p); err != nil {
		return err
	}
	w.cur[k] = &p.Resource
	return nil
}

// flushNew writes the waiting first versions.
func (w *entryWriter) flushNew() error {
	if len(w.fresh) == 0 {
		return nil
	}
	err := w.bulk.PutNew(w.ctx, w.fresh)
	w.fresh = w.fresh[:0]
	clear(w.freshKeys)
	return err
}

// write performs one entry.
func (w *entryWriter) write(e *bundleEntry) (EntryResponse, error) {
	s, p := w.s, w.p
	o := WriteOptions{IfMatch: e.ifMatch}
	k := e.typ + "/" + e.id
	switch e.method {
	case "DELETE":
		if err := allow(p, access.Delete, e.typ); err != nil {
			return EntryResponse{}, err
		}
		cur := w.cur[k]
		if cur == nil {
			return EntryResponse{Status: http.StatusNoContent}, nil
		}
		if ok, err := s.visible(w.ctx, p, cur); err != nil {
			return EntryResponse{}, err
		} else if !ok {
			return EntryResponse{Status: http.StatusNoContent}, nil
		}
		if err := s.checkDelete(w.ctx, p, cur); err != nil {
			return EntryResponse{}, err
		}
		if cur.Deleted {
			return EntryResponse{Status: http.StatusNoContent, Resource: cur}, nil
		}
		if o.IfMatch != 0 && cur.Version != o.IfMatch {
			return EntryResponse{}, fhir.Errorf(http.StatusPreconditionFailed, "conflict", "If-Match names version %d but the current version of %s/%s is %d", o.IfMatch, e.typ, e.id, cur.Version)
		}
		put := &store.Put{Resource: store.Resource{Type: e.typ, ID: e.id, Version: cur.Version + 1, LastUpdated: w.timeAfter(cur), Deleted: true, Method: "DELETE"}}
		if err := w.put(put); err != nil {
			return EntryResponse{}, err
		}
		return EntryResponse{Status: http.StatusNoContent, Resource: &put.Resource}, nil
	case "POST":
		if e.prepErr != nil {
			return EntryResponse{}, e.prepErr
		}
		if err := s.checkWrite(w.ctx, p, access.Create, e.prep, nil, w.isPending()); err != nil {
			return EntryResponse{}, err
		}
		e.prep.stamp(1, w.at) // rendered in prepareEntry: the time only
		if err := w.put(e.prep.put); err != nil {
			return EntryResponse{}, err
		}
		return written(&e.prep.put.Resource, http.StatusCreated), nil
	case "PUT":
		if e.idErr != nil {
			return EntryResponse{}, e.idErr
		}
		cur := w.cur[k]
		r, err := w.update(e.typ, e.id, e.prep, e.prepErr, cur, o)
		if err != nil {
			return EntryResponse{}, err
		}
		status := http.StatusOK
		if cur == nil || cur.Deleted {
			status = http.StatusCreated
		}
		return written(r, status), nil
	case "PATCH":
		patch, err := entryPatch(e.res)
		if err != nil {
			return EntryResponse{}, err
		}
		ops, err := parsePatch(patch)
		if err != nil {
			return EntryResponse{}, err
		}
		cur := w.cur[k]
		if cur == nil || cur.Deleted {
			return EntryResponse{}, fhir.NotFound("%s/%s is not known", e.typ, e.id)
		}
		if ok, err := s.visible(w.ctx, p, cur); err != nil || !ok {
			return EntryResponse{}, fhir.NotFound("%s/%s is not known", e.typ, e.id)
		}
		doc, err := fhirjson.Parse(cur.JSON)
		if err != nil {
			return EntryResponse{}, fmt.Errorf("parse stored %s/%s: %w", e.typ, e.id, err)
		}
		if cur.Blob != "" {
			if err := s.inlineBlob(w.ctx, doc, cur.Blob); err != nil {
				return EntryResponse{}, err
			}
		}
		patched, err := applyPatch(doc, ops)
		if err != nil {
			return EntryResponse{}, err
		}
		if patched.Kind != fhirjson.Object || patched.GetString("resourceType") != e.typ || patched.GetString("id") != e.id {
			return EntryResponse{}, fhir.Errorf(http.StatusUnprocessableEntity, "processing", "the patch may not change resourceType or id")
		}
		prep, prepErr := s.prepareTree(patched, e.typ, e.id, cur.Version+1, w.timeAfter(cur), "PATCH", o, false)
		if prepErr == nil {
			if err := s.storeBlob(w.ctx, prep); err != nil {
				return EntryResponse{}, err
			}
		}
		r, err := w.update(e.typ, e.id, prep, prepErr, cur, o)
		if err != nil {
			return EntryResponse{}, err
		}
		return written(r, http.StatusOK), nil
	}
	return EntryResponse{}, fhir.BadRequest("unsupported method %s", e.method)
}

// update writes prep as the version after cur (nil: a new resource),
// checking If-Match first, then the preparation's outcome prepErr, then
// the principal's rights (the order of the single update).
func (w *entryWriter) update(typ, id string, prep *prepared, prepErr error, cur *store.Resource, o WriteOptions) (*store.Resource, error) {
	if o.IfMatch != 0 {
		if cur == nil {
			return nil, fhir.Errorf(http.StatusPreconditionFailed, "not-found", "If-Match names version %d but %s/%s does not exist", o.IfMatch, typ, id)
		}
		if cur.Version != o.IfMatch {
			return nil, fhir.Errorf(http.StatusPreconditionFailed, "conflict", "If-Match names version %d but the current version of %s/%s is %d", o.IfMatch, typ, id, cur.Version)
		}
	}
	if prepErr != nil {
		return nil, prepErr
	}
	version := int64(1)
	interaction := access.Create
	if cur != nil {
		version = cur.Version + 1
		interaction = access.Update
	}
	if err := w.s.checkWrite(w.ctx, w.p, interaction, prep, cur, w.isPending()); err != nil {
		return nil, err
	}
	prep.stamp(version, w.timeAfter(cur))
	if err := w.put(prep.put); err != nil {
		return nil, err
	}
	return &prep.put.Resource, nil
}

// entryPatch extracts a JSON Patch from a PATCH entry's Binary resource.
func entryPatch(res *fhirjson.Value) ([]byte, error) {
	if res.GetString("resourceType") != "Binary" || !strings.Contains(res.GetString("contentType"), "json-patch") {
		return nil, fhir.Errorf(http.StatusUnprocessableEntity, "not-supported", "a PATCH entry must carry a Binary with contentType application/json-patch+json (FHIRPath Patch is not supported)")
	}
	b, err := base64.StdEncoding.DecodeString(res.GetString("data"))
	if err != nil {
		return nil, fhir.BadRequest("the PATCH entry's Binary.data is not base64: %v", err)
	}
	return b, nil
}

func written(r *store.Resource, status int) EntryResponse {
	v := strconv.FormatInt(r.Version, 10)
	return EntryResponse{
		Status:       status,
		Location:     r.Type + "/" + r.ID + "/_history/" + v,
		ETag:         `W/"` + v + `"`,
		LastModified: r.LastUpdated,
		Resource:     r,
	}
}

func (s *Service) getEntry(ctx context.Context, e *bundleEntry, get Getter) EntryResponse {
	if get == nil {
		return EntryResponse{Status: http.StatusNotImplemented, Outcome: fhir.Errorf(http.StatusNotImplemented, "not-supported", "GET entries are not supported here")}
	}
	status, body, err := get(ctx, e.rawURL)
	if err != nil {
		fe := fhir.AsError(err)
		return EntryResponse{Status: fe.Status, Outcome: fe}
	}
	return EntryResponse{Status: status, Body: body}
}

// condCache resolves the conditional references of one Bundle, each
// distinct one once, from several goroutines.
type condCache struct {
	mu sync.Mutex
	m  map[string]string
	// idents indexes the identifiers of the Bundle's resources, read
	// before the entries are rewritten (and so changed) in parallel.
	idents map[identKey][]*bundleEntry
	// log records the searches run (nil: none recorded).
	log *matchLog
}

// identKey is an identifier of a Bundle resource; any marks the key that
// matches whatever the system.
type identKey struct {
	typ, system, value string
	any                bool
}

func newCondCache(entries []*bundleEntry) *condCache {
	c := &condCache{m: map[string]string{}, idents: map[identKey][]*bundleEntry{}}
	add := func(k identKey, e *bundleEntry) {
		if l := c.idents[k]; len(l) == 0 || l[len(l)-1] != e {
			c.idents[k] = append(l, e)
		}
	}
	for _, e := range entries {
		if e.res == nil || e.method == "DELETE" {
			continue
		}
		ids := e.res.Get("identifier")
		if ids == nil || ids.Kind != fhirjson.Array {
			continue
		}
		for _, id := range ids.Items {
			val := id.GetString("value")
			add(identKey{typ: e.typ, system: id.GetString("system"), value: val}, e)
			add(identKey{typ: e.typ, value: val, any: true}, e)
		}
	}
	return c
}

// rewriteRefs rewrites the references of an entry's resource: fullUrls of
// other entries become their local references (in url elements too, such
// as an attachment's), conditional references (Type?search) are resolved
// by search (within the bundle first).
func (s *Service) rewriteRefs(ctx context.Context, e *bundleEntry, refs map[string]string, cond *condCache) error {
	// path holds the element names down to the current node; the location
	// text is only built for an error.
	var path []string
	var walkErr error
	var walk func(v *fhirjson.Value)
	walk = func(v *fhirjson.Value) {
		if walkErr != nil {
			return
		}
		switch v.Kind {
		case fhirjson.Object:
			for i := range v.Fields {
				f := &v.Fields[i]
				if f.Name == "url" && f.Value.Kind == fhirjson.String {
					// An attachment's link to another entry (FHIR's
					// transaction rules replace matching links in url
					// elements as well as in references); not a
					// resource's own canonical URL.
					if local, ok := refs[f.Value.Str]; ok && v.Get("resourceType") == nil {
						f.Value = fhirjson.NewString(local)
					}
					continue
				}
				if f.Name == "reference" && f.Value.Kind == fhirjson.String {
					ref := f.Value.Str
					if local, ok := refs[ref]; ok {
						f.Value = fhirjson.NewString(local)
						continue
					}
					if rel := s.relative(ref); rel != ref {
						if local, ok := refs[rel]; ok {
							f.Value = fhirjson.NewString(local)
							continue
						}
					}
					if t, q, ok := strings.Cut(ref, "?"); ok && r4.IsResourceType(t) {
						local, err := s.resolveConditional(ctx, t, q, cond)
						if err != nil {
							walkErr = fhir.AsError(err).AtPath(e.typ + strings.Join(path, "") + ".reference")
							return
						}
						f.Value = fhirjson.NewString(local)
					}
					continue
				}
				if f.Value.Kind != fhirjson.Object && f.Value.Kind != fhirjson.Array {
					continue
				}
				path = append(path, "."+f.Name)
				walk(f.Value)
				path = path[:len(path)-1]
			}
		case fhirjson.Array:
			for i, it := range v.Items {
				if it.Kind != fhirjson.Object && it.Kind != fhirjson.Array {
					continue
				}
				path = append(path, "["+strconv.Itoa(i)+"]")
				walk(it)
				path = path[:len(path)-1]
			}
		}
	}
	walk(e.res)
	return walkErr
}

// resolveConditional resolves "Type?query" to "Type/id".
func (s *Service) resolveConditional(ctx context.Context, typ, query string, cache *condCache) (string, error) {
	key := typ + "?" + query
	cache.mu.Lock()
	local, ok := cache.m[key]
	cache.mu.Unlock()
	if ok {
		return local, nil
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", fhir.BadRequest("conditional reference %q is not a valid search: %v", key, err)
	}
	// Resources created by the same Bundle are candidates too.
	if ids := q["identifier"]; len(q) == 1 && len(ids) == 1 {
		sys, val, hasSys := strings.Cut(ids[0], "|")
		k := identKey{typ: typ, system: sys, value: val}
		if !hasSys {
			k = identKey{typ: typ, value: ids[0], any: true}
		}
		switch m := cache.idents[k]; len(m) {
		case 0:
		case 1:
			local = typ + "/" + m[0].id
		default:
			return "", fhir.Errorf(http.StatusPreconditionFailed, "multiple-matches", "conditional reference %q matches several resources of the Bundle", key)
		}
	}
	if local == "" {
		if s.matcher == nil {
			return "", fhir.Errorf(http.StatusNotImplemented, "not-supported", "conditional references need search")
		}
		ids, err := s.match(ctx, cache.log, typ, q, 2)
		if err != nil {
			return "", err
		}
		switch len(ids) {
		case 0:
			return "", fhir.Errorf(http.StatusNotFound, "not-found", "conditional reference %q matches no resource", key)
		case 1:
			local = typ + "/" + ids[0]
		default:
			return "", fhir.Errorf(http.StatusPreconditionFailed, "multiple-matches", "conditional reference %q matches more than one resource", key)
		}
	}
	cache.mu.Lock()
	cache.m[key] = local
	cache.mu.Unlock()
	return local, nil
}

// batchGroup bounds how many consecutive write entries of a batch share
// one store transaction.
const batchGroup = 128

// batch runs each entry on its own; failures are reported per entry.
//
// Entries are processed in order, each seeing what the ones before it
// wrote, but consecutive write entries share one store transaction (a
// group; a GET entry ends one, so that it reads what came before it):
// one commit per entry made the practitioner and hospital Bundles of a
// Synthea load cost five times the CPU per resource of a transaction. An
// entry that fails on its own (validation, a conditional that matches
// nothing or several, If-Match...) fails before it writes anything, so
// the group goes on without it; a failure of the store transaction itself
// runs the group again entry by entry, each in its own transaction.
func (s *Service) batch(ctx context.Context, b *fhirjson.Value, get Getter) ([]EntryResponse, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	arr := b.Get("entry")
	if arr == nil {
		return nil, nil
	}
	if arr.Kind != fhirjson.Array {
		return nil, fhir.BadRequest("Bundle.entry must be an array")
	}
	out := make([]EntryResponse, len(arr.Items))
	isGet := func(item *fhirjson.Value) bool {
		m := strings.ToUpper(item.Get("request").GetString("method"))
		return m == "GET" || m == "HEAD"
	}
	for i := 0; i < len(arr.Items); {
		if isGet(arr.Items[i]) {
			out[i] = s.batchEntry(ctx, p, arr.Items[i], i, get)
			i++
			continue
		}
		j := i + 1
		for j < len(arr.Items) && j-i < batchGroup && !isGet(arr.Items[j]) {
			j++
		}
		s.batchWrites(ctx, p, arr.Items[i:j], out[i:j])
		i = j
	}
	return out, nil
}

// afterGroupEntry, when set (by tests), runs after each entry of a group of
// batch entries inside its store transaction; an error fails the group.
var afterGroupEntry func(k int) error

// batchWrites runs consecutive write entries of a batch in one store
// transaction and puts their responses in out (see batch).
func (s *Service) batchWrites(ctx context.Context, p access.Principal, items []*fhirjson.Value, out []EntryResponse) {
	if len(items) == 1 {
		out[0] = s.batchEntry(ctx, p, items[0], 0, nil)
		return
	}
	var rs []EntryResponse
	err := s.store.Write(ctx, func(tx store.Tx) error {
		// Reads made while the transaction is open run inside it.
		ctx := store.WithTx(ctx, tx)
		// Each attempt starts from the entries as sent.
		rs = make([]EntryResponse, len(items))
		for k, item := range items {
			r, err := s.batchWrite(ctx, tx, p, item.Clone())
			if err != nil {
				if !entryOnly(err) {
					return err
				}
				r = failedEntry(err)
			}
			rs[k] = r
			if afterGroupEntry != nil {
				if err := afterGroupEntry(k); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err == nil {
		copy(out, rs)
		return
	}
	slog.WarnContext(ctx, "a group of batch entries failed together; running them one by one", "entries", len(items), "err", err)
	for k, item := range items {
		out[k] = s.batchEntry(ctx, p, item, k, nil)
	}
}

// entryOnly reports whether err is the failure of one batch entry that
// wrote nothing (a client error of the entry, not of the store), after
// which the transaction it ran in may go on.
func entryOnly(err error) bool {
	var fe *fhir.Error
	return errors.As(err, &fe) && fe.Status >= 400 && fe.Status < 500 && !errors.Is(err, store.ErrConflict)
}

// failedEntry is the response of a failed batch entry.
func failedEntry(err error) EntryResponse {
	var f *entryFailure
	if errors.As(err, &f) {
		err = f.err
	}
	fe := fhir.AsError(err)
	return EntryResponse{Status: fe.Status, Outcome: fe}
}

// parseBatchEntry parses one batch entry.
func (s *Service) parseBatchEntry(item *fhirjson.Value) (*bundleEntry, error) {
	entries, err := s.parseEntries(fhirjson.NewObject(fhirjson.Field{Name: "entry", Value: fhirjson.NewArray(item)}))
	if err != nil {
		return nil, err
	}
	return entries[0], nil
}

// batchEntry runs one batch entry on its own: a GET through get, a write
// in its own store transaction (batchWrite).
func (s *Service) batchEntry(ctx context.Context, p access.Principal, item *fhirjson.Value, i int, get Getter) EntryResponse {
	e, err := s.parseBatchEntry(item)
	if err != nil {
		return failedEntry(err)
	}
	if e.method == "GET" || e.method == "HEAD" {
		e.index = i
		return s.getEntry(ctx, e, get)
	}
	var r EntryResponse
	err = s.store.Write(ctx, func(tx store.Tx) error {
		// Reads made while the transaction is open run inside it; each
		// attempt starts from the entry as sent.
		var err error
		r, err = s.batchWrite(store.WithTx(ctx, tx), tx, p, item.Clone())
		return err
	})
	if err != nil {
		return failedEntry(err)
	}
	return r
}

// batchWrite runs the write entry item of a batch inside the store
// transaction tx (ctx carries it): it is resolved (conditional searches
// and references), prepared and written there, so that the searches see
// what the write replaces and what earlier entries wrote: one entry has
// nothing to prepare in parallel. An error of the entry itself (see
// entryOnly) comes before anything is written.
func (s *Service) batchWrite(ctx context.Context, tx store.Tx, p access.Principal, item *fhirjson.Value) (EntryResponse, error) {
	e, err := s.parseBatchEntry(item)
	if err != nil {
		return EntryResponse{}, err
	}
	if e.method == "POST" && e.ifNoneExist != "" {
		match, err := s.conditionalMatch(ctx, e.typ, e.ifNoneExist, "ifNoneExist")
		if err != nil {
			return EntryResponse{}, err
		}
		if match != nil {
			return EntryResponse{Status: http.StatusOK, Resource: match, Location: fmt.Sprintf("%s/%s/_history/%d", match.Type, match.ID, match.Version), ETag: fmt.Sprintf(`W/"%d"`, match.Version), LastModified: match.LastUpdated}, nil
		}
	}
	if e.query != "" {
		match, err := s.conditionalMatch(ctx, e.typ, e.query, "conditional "+strings.ToLower(e.method))
		if err != nil {
			return EntryResponse{}, err
		}
		if err := e.target(match); err != nil {
			return EntryResponse{}, err
		}
		if e.done != nil {
			return *e.done, nil
		}
	}
	if e.method == "POST" {
		e.id = fhir.NewID()
	}
	one := []*bundleEntry{e}
	if err := s.prepareEntries(ctx, p, one, map[string]string{}, newCondCache(nil)); err != nil {
		return EntryResponse{}, err
	}
	if e.prep != nil && e.prepErr == nil {
		if err := s.storeBlob(ctx, e.prep); err != nil {
			return EntryResponse{}, err
		}
	}
	out, err := s.writeInTx(ctx, tx, p, one, 1, nil)
	if err != nil {
		return EntryResponse{}, err
	}
	return out[0], nil
}
