package records

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
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
}

// ProcessBundle runs a transaction or batch Bundle and returns the type of
// the response Bundle and its entries in request order.
func (s *Service) ProcessBundle(ctx context.Context, body []byte, get Getter) (string, []EntryResponse, error) {
	b, err := parseBody(body)
	if err != nil {
		return "", nil, err
	}
	return s.ProcessBundleTree(ctx, b, get)
}

// ProcessBundleTree is ProcessBundle for a parsed Bundle.
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
	if s.baseURL != "" && strings.HasPrefix(u, s.baseURL+"/") {
		return strings.TrimPrefix(u, s.baseURL+"/")
	}
	return strings.TrimPrefix(u, "/")
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
	// The conditional matches and references are resolved inside the
	// transaction (store.WithTx): they see a state no other writer changes
	// before this one commits, and they run on the transaction's own
	// connection rather than waiting for a second one while holding it.
	out := make([]EntryResponse, len(entries))
	err = s.store.Write(ctx, func(tx store.Tx) error {
		ctx := store.WithTx(ctx, tx)
		// A retried attempt starts again from the entries as sent.
		work := make([]*bundleEntry, len(entries))
		for i, e := range entries {
			c := *e
			if e.res != nil {
				c.res = e.res.Clone()
			}
			work[i] = &c
		}
		if err := s.resolveEntries(ctx, work); err != nil {
			return err
		}
		return s.writeEntries(ctx, tx, p, work, out)
	})
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.method == "GET" || e.method == "HEAD" {
			out[e.index] = s.getEntry(ctx, e, get)
		}
	}
	return out, nil
}

// resolveEntries assigns the ids of a transaction's entries (new ones,
// conditional creates, updates and deletes) and rewrites their references:
// fullUrls of other entries and conditional references.
func (s *Service) resolveEntries(ctx context.Context, entries []*bundleEntry) error {
	// Ids of new resources and the map from fullUrl to their local
	// reference, so that references between entries can be rewritten.
	refs := map[string]string{}
	for _, e := range entries {
		switch e.method {
		case "POST":
			if e.ifNoneExist != "" {
				match, err := s.conditionalMatch(ctx, e.typ, e.ifNoneExist, "ifNoneExist")
				if err != nil {
					return entryErr(e.index, fhir.AsError(err))
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
				match, err := s.conditionalMatch(ctx, e.typ, e.query, "conditional "+strings.ToLower(e.method))
				if err != nil {
					return entryErr(e.index, fhir.AsError(err))
				}
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
					return entryErr(e.index, fhir.NotFound("conditional patch %s?%s matched nothing", e.typ, e.query))
				}
			}
		}
		if e.fullURL != "" && e.id != "" && e.method != "GET" {
			refs[e.fullURL] = e.typ + "/" + e.id
		}
	}
	// Resolve conditional references and rewrite references.
	cond := map[string]string{}
	for _, e := range entries {
		if e.res == nil || e.method == "GET" || e.method == "HEAD" || e.method == "DELETE" {
			continue
		}
		if err := s.rewriteRefs(ctx, e, entries, refs, cond); err != nil {
			return entryErr(e.index, fhir.AsError(err))
		}
	}
	return nil
}

// writeEntries performs the write entries of a transaction in FHIR's order
// (deletes, creates, updates, patches), filling out.
func (s *Service) writeEntries(ctx context.Context, tx store.Tx, p access.Principal, entries []*bundleEntry, out []EntryResponse) error {
	for _, m := range []string{"DELETE", "POST", "PUT", "PATCH"} {
		for _, e := range entries {
			if e.method != m {
				continue
			}
			if e.done != nil {
				out[e.index] = *e.done
				continue
			}
			r, err := s.writeEntry(ctx, tx, p, e)
			if err != nil {
				return entryErr(e.index, fhir.AsError(err))
			}
			out[e.index] = r
		}
	}
	return nil
}

// writeEntry performs one write entry inside the transaction.
func (s *Service) writeEntry(ctx context.Context, tx store.Tx, p access.Principal, e *bundleEntry) (EntryResponse, error) {
	o := WriteOptions{IfMatch: e.ifMatch}
	switch e.method {
	case "DELETE":
		if err := allow(p, access.Delete, e.typ); err != nil {
			return EntryResponse{}, err
		}
		r, err := s.deleteTx(ctx, tx, p, e.typ, e.id, o)
		if err != nil {
			return EntryResponse{}, err
		}
		return EntryResponse{Status: http.StatusNoContent, Resource: r.Resource}, nil
	case "POST":
		res := e.res.Clone()
		res.SetAfter("id", fhirjson.NewString(e.id), "resourceType")
		if err := allow(p, access.Create, e.typ); err != nil {
			return EntryResponse{}, err
		}
		prep, err := s.prepare(res, e.typ, e.id, 1, s.nextTime(nil), "POST", o, false)
		if err != nil {
			return EntryResponse{}, err
		}
		if err := s.checkWrite(ctx, p, access.Create, prep, nil); err != nil {
			return EntryResponse{}, err
		}
		if err := s.storeBlob(ctx, prep); err != nil {
			return EntryResponse{}, err
		}
		if err := tx.Put(ctx, prep.put); err != nil {
			return EntryResponse{}, err
		}
		return written(&prep.put.Resource, http.StatusCreated), nil
	case "PUT":
		res := e.res.Clone()
		if id := res.GetString("id"); id != "" && id != e.id {
			return EntryResponse{}, fhir.BadRequest("the resource id %q differs from the id %q in request.url", id, e.id)
		}
		res.SetAfter("id", fhirjson.NewString(e.id), "resourceType")
		r, err := s.updateTx(ctx, tx, p, e.typ, e.id, res, o, "PUT")
		if err != nil {
			return EntryResponse{}, err
		}
		status := http.StatusOK
		if r.Created {
			status = http.StatusCreated
		}
		return written(r.Resource, status), nil
	case "PATCH":
		patch, err := entryPatch(e.res)
		if err != nil {
			return EntryResponse{}, err
		}
		ops, err := parsePatch(patch)
		if err != nil {
			return EntryResponse{}, err
		}
		cur, err := tx.Current(ctx, e.typ, e.id)
		if errors.Is(err, store.ErrNotFound) || (err == nil && cur.Deleted) {
			return EntryResponse{}, fhir.NotFound("%s/%s is not known", e.typ, e.id)
		}
		if err != nil {
			return EntryResponse{}, err
		}
		if ok, err := s.visible(ctx, p, cur); err != nil || !ok {
			return EntryResponse{}, fhir.NotFound("%s/%s is not known", e.typ, e.id)
		}
		doc, err := fhirjson.Parse(cur.JSON)
		if err != nil {
			return EntryResponse{}, err
		}
		patched, err := applyPatch(doc, ops)
		if err != nil {
			return EntryResponse{}, err
		}
		r, err := s.updateTx(ctx, tx, p, e.typ, e.id, patched, o, "PATCH")
		if err != nil {
			return EntryResponse{}, err
		}
		return written(r.Resource, http.StatusOK), nil
	}
	return EntryResponse{}, fhir.BadRequest("unsupported method %s", e.method)
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
	return EntryResponse{
		Status:       status,
		Location:     fmt.Sprintf("%s/%s/_history/%d", r.Type, r.ID, r.Version),
		ETag:         fmt.Sprintf(`W/"%d"`, r.Version),
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

// rewriteRefs rewrites the references of an entry's resource: fullUrls of
// other entries become their local references, conditional references
// (Type?search) are resolved by search (within the bundle first).
func (s *Service) rewriteRefs(ctx context.Context, e *bundleEntry, entries []*bundleEntry, refs, cond map[string]string) error {
	var walkErr error
	var walk func(v *fhirjson.Value, path string)
	walk = func(v *fhirjson.Value, path string) {
		if walkErr != nil {
			return
		}
		switch v.Kind {
		case fhirjson.Object:
			for i := range v.Fields {
				f := &v.Fields[i]
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
						local, err := s.resolveConditional(ctx, t, q, entries, cond)
						if err != nil {
							walkErr = fhir.AsError(err).AtPath(path + ".reference")
							return
						}
						f.Value = fhirjson.NewString(local)
					}
					continue
				}
				walk(f.Value, path+"."+f.Name)
			}
		case fhirjson.Array:
			for i, it := range v.Items {
				walk(it, fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
	walk(e.res, e.typ)
	return walkErr
}

// resolveConditional resolves "Type?query" to "Type/id".
func (s *Service) resolveConditional(ctx context.Context, typ, query string, entries []*bundleEntry, cache map[string]string) (string, error) {
	key := typ + "?" + query
	if local, ok := cache[key]; ok {
		return local, nil
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", fhir.BadRequest("conditional reference %q is not a valid search: %v", key, err)
	}
	// Resources created by the same Bundle are candidates too.
	var local string
	if ids := q["identifier"]; len(q) == 1 && len(ids) == 1 {
		sys, val, hasSys := strings.Cut(ids[0], "|")
		if !hasSys {
			sys, val = "", ids[0]
		}
		for _, e := range entries {
			if e.typ == typ && e.res != nil && e.method != "DELETE" && hasIdentifier(e.res, sys, val, hasSys) {
				if local != "" {
					return "", fhir.Errorf(http.StatusPreconditionFailed, "multiple-matches", "conditional reference %q matches several resources of the Bundle", key)
				}
				local = typ + "/" + e.id
			}
		}
	}
	if local == "" {
		if s.matcher == nil {
			return "", fhir.Errorf(http.StatusNotImplemented, "not-supported", "conditional references need search")
		}
		ids, err := s.matcher.Match(ctx, typ, q, 2)
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
	cache[key] = local
	return local, nil
}

func hasIdentifier(res *fhirjson.Value, sys, val string, hasSys bool) bool {
	ids := res.Get("identifier")
	if ids == nil || ids.Kind != fhirjson.Array {
		return false
	}
	for _, id := range ids.Items {
		if id.GetString("value") == val && (!hasSys || id.GetString("system") == sys) {
			return true
		}
	}
	return false
}

// batch runs each entry on its own; failures are reported per entry.
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
	for i := range arr.Items {
		one := fhirjson.NewObject(fhirjson.Field{Name: "entry", Value: fhirjson.NewArray(arr.Items[i])})
		entries, err := s.parseEntries(one)
		if err != nil {
			fe := fhir.AsError(err)
			out[i] = EntryResponse{Status: fe.Status, Outcome: fe}
			continue
		}
		e := entries[0]
		e.index = i
		out[i] = s.batchEntry(ctx, p, e, get)
	}
	return out, nil
}

func (s *Service) batchEntry(ctx context.Context, p access.Principal, e *bundleEntry, get Getter) EntryResponse {
	if e.method == "GET" || e.method == "HEAD" {
		return s.getEntry(ctx, e, get)
	}
	fail := func(err error) EntryResponse {
		fe := fhir.AsError(err)
		return EntryResponse{Status: fe.Status, Outcome: fe}
	}
	if e.method == "POST" && e.ifNoneExist != "" {
		match, err := s.conditionalMatch(ctx, e.typ, e.ifNoneExist, "ifNoneExist")
		if err != nil {
			return fail(err)
		}
		if match != nil {
			return EntryResponse{Status: http.StatusOK, Resource: match, Location: fmt.Sprintf("%s/%s/_history/%d", match.Type, match.ID, match.Version), ETag: fmt.Sprintf(`W/"%d"`, match.Version), LastModified: match.LastUpdated}
		}
	}
	if e.query != "" {
		match, err := s.conditionalMatch(ctx, e.typ, e.query, "conditional "+strings.ToLower(e.method))
		if err != nil {
			return fail(err)
		}
		switch {
		case match != nil:
			e.id = match.ID
		case e.method == "PUT":
			if e.id = e.res.GetString("id"); e.id == "" {
				e.id = fhir.NewID()
			}
		case e.method == "DELETE":
			return EntryResponse{Status: http.StatusNoContent}
		default:
			return fail(fhir.NotFound("conditional patch %s?%s matched nothing", e.typ, e.query))
		}
	}
	if e.method == "POST" {
		e.id = fhir.NewID()
	}
	cond := map[string]string{}
	if e.res != nil && e.method != "DELETE" {
		if err := s.rewriteRefs(ctx, e, nil, map[string]string{}, cond); err != nil {
			return fail(err)
		}
	}
	var r EntryResponse
	err := s.store.Write(ctx, func(tx store.Tx) error {
		ctx := store.WithTx(ctx, tx)
		var err error
		r, err = s.writeEntry(ctx, tx, p, e)
		return err
	})
	if err != nil {
		return fail(err)
	}
	return r
}
