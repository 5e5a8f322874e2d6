package records

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
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
	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/store"
)

// Result is the outcome of a write.
type Result struct {
	// Resource is the version written (or, for a conditional create that
	// matched, the existing resource; for a delete of nothing, nil).
	Resource *store.Resource
	// Created is true when the write created the resource (201).
	Created bool
	// Unchanged is true when nothing was written (conditional create that
	// matched an existing resource, delete of an already deleted one).
	Unchanged bool
}

// WriteOptions carry the conditions of a write.
type WriteOptions struct {
	// IfMatch is the version the client expects to replace (If-Match:
	// W/"n"); 0 means no condition.
	IfMatch int64
	// IfNoneExist is the search of a conditional create (If-None-Exist).
	IfNoneExist string
	// Source overrides meta.source (imports set it to the source).
	Source string
	// Batch is the import batch writing the version.
	Batch int64
}

// parseBody parses a request body into a resource tree.
func parseBody(body []byte) (*fhirjson.Value, error) {
	v, err := fhirjson.Parse(body)
	if err != nil {
		var se *fhirjson.SyntaxError
		if errors.As(err, &se) {
			line, col := fhirjson.Position(body, se.Offset)
			return nil, fhir.Errorf(http.StatusBadRequest, "structure", "the body is not valid JSON: %s (line %d, column %d)", se.Msg, line, col)
		}
		return nil, fhir.BadRequest("the body is not valid JSON: %v", err)
	}
	if v.Kind != fhirjson.Object {
		return nil, fhir.Errorf(http.StatusBadRequest, "structure", "the body must be a JSON object (a FHIR resource), not %s", v.Kind)
	}
	return v, nil
}

// prepared is a resource ready to store.
type prepared struct {
	typ, id string
	tree    *fhirjson.Value
	put     *store.Put
	// blobData is a Binary's decoded content, to store before the row.
	blobData []byte
	source   string
	// atOff is where the text of meta.lastUpdated starts in put.JSON (0:
	// not known), so that stamp can change the time without rendering
	// the resource again.
	atOff int
}

// prepare validates res (already of type typ with id set) and builds its
// version with meta, index entries, compartments and Binary blob.
func (s *Service) prepare(res *fhirjson.Value, typ, id string, version int64, at time.Time, method string, o WriteOptions, conditionalRefs bool) (*prepared, error) {
	p, err := s.prepareTree(res, typ, id, version, at, method, o, conditionalRefs)
	if err != nil {
		return nil, err
	}
	p.put.JSON = res.Marshal()
	return p, nil
}

// prepareTree is prepare without the final JSON text: the tree is
// validated, meta set, index entries and compartments computed. Writers
// that learn the version number and time only once their transaction holds
// the resource prepare outside it and call stamp inside it (search index
// entries do not depend on meta.versionId or meta.lastUpdated).
func (s *Service) prepareTree(res *fhirjson.Value, typ, id string, version int64, at time.Time, method string, o WriteOptions, conditionalRefs bool) (*prepared, error) {
	if issues := s.validate.Validate(res, conditionalRefs); hasErrors(issues) {
		return nil, &fhir.Error{Status: http.StatusBadRequest, Issues: issues}
	}
	setMeta(res, version, at, o.Source)
	p := &prepared{typ: typ, id: id, tree: res, source: o.Source}
	if typ == "Binary" {
		if d := res.Get("data"); d != nil && d.Kind == fhirjson.String {
			// base64Binary may contain whitespace (line-wrapped base64).
			raw, err := base64.StdEncoding.DecodeString(stripSpace(d.Str))
			if err != nil {
				return nil, fhir.Errorf(http.StatusBadRequest, "value", "Binary.data is not valid base64: %v", err).AtPath("Binary.data")
			}
			p.blobData = raw
			// The row keeps data only when its text is not the canonical
			// encoding (so that it reads back exactly as sent).
			if base64.StdEncoding.EncodeToString(raw) == d.Str {
				res.Delete("data")
			}
		}
	}
	entries, err := s.indexer.Extract(typ, res)
	if err != nil {
		return nil, fhir.Errorf(http.StatusBadRequest, "processing", "cannot index %s/%s: %v", typ, id, err)
	}
	p.put = &store.Put{
		Resource: store.Resource{Type: typ, ID: id, Version: version, LastUpdated: at, Method: method},
		Index:    entries,
		Patients: Patients(typ, id, entries),
		Batch:    o.Batch,
	}
	if p.blobData != nil {
		sum := sha256.Sum256(p.blobData)
		p.put.Blob = "binary/" + hex.EncodeToString(sum[:])
	}
	return p, nil
}

// stamp gives a version from prepareTree its number and time and renders
// its JSON; it may run again on the same version (a retried transaction),
// and does nothing when the version has that number and time already.
// A version rendered before (render) with the same number only gets its
// meta.lastUpdated text replaced: the rendering stays out of the store
// transaction, where the writers wait for each other.
func (p *prepared) stamp(version int64, at time.Time) {
	if p.put.JSON != nil && p.put.Version == version {
		if p.put.LastUpdated.Equal(at) {
			return
		}
		if ts := fhir.FormatInstant(at); p.atOff > 0 && len(ts) == len(fhir.FormatInstant(p.put.LastUpdated)) {
			copy(p.put.JSON[p.atOff:], ts)
			p.put.LastUpdated = at
			return
		}
	}
	setMeta(p.tree, version, at, p.source)
	p.put.Version = version
	p.put.LastUpdated = at
	p.put.JSON = p.tree.Marshal()
	p.atOff = 0
}

// render renders the JSON of a version from prepareTree with the number
// and time it has, before it is stamped (see stamp).
func (p *prepared) render() {
	p.put.JSON = p.tree.Marshal()
	p.atOff = 0
	// The lastUpdated text of meta is found by its value; should the
	// same text occur elsewhere, stamp renders the resource again.
	at := []byte(`"lastUpdated":"` + fhir.FormatInstant(p.put.LastUpdated) + `"`)
	if i := bytes.Index(p.put.JSON, at); i >= 0 && bytes.Index(p.put.JSON[i+1:], at) < 0 {
		p.atOff = i + len(`"lastUpdated":"`)
	}
}

func hasErrors(issues []fhir.Issue) bool {
	for _, is := range issues {
		if is.Severity == "error" || is.Severity == "fatal" {
			return true
		}
	}
	return false
}

// setMeta sets meta.versionId and meta.lastUpdated (and meta.source when
// given), keeping the rest of meta, with meta placed after id.
func setMeta(res *fhirjson.Value, version int64, at time.Time, source string) {
	meta := res.Get("meta")
	if meta == nil || meta.Kind != fhirjson.Object {
		meta = fhirjson.NewObject()
		res.SetAfter("meta", meta, "id", "resourceType")
	}
	meta.SetAfter("versionId", fhirjson.NewString(strconv.FormatInt(version, 10)))
	meta.SetAfter("lastUpdated", fhirjson.NewString(fhir.FormatInstant(at)), "versionId")
	if source != "" {
		meta.SetAfter("source", fhirjson.NewString(source), "lastUpdated", "versionId")
	}
}

// storeBlob writes a prepared Binary's content to the blob store (content
// addressed, so retries and identical uploads share one blob).
func (s *Service) storeBlob(ctx context.Context, p *prepared) error {
	if p.blobData == nil {
		return nil
	}
	if _, err := s.blobs.Put(ctx, p.put.Blob, bytes.NewReader(p.blobData)); err != nil {
		return fmt.Errorf("store Binary content: %w", err)
	}
	return nil
}

// checkWrite checks the principal may write res (new content) and, for an
// update, the version it replaces. pending names what the writer is
// storing for a patient-confined principal in writes not yet committed.
func (s *Service) checkWrite(ctx context.Context, p access.Principal, i access.Interaction, prep *prepared, old *store.Resource, pending Pending) error {
	if err := allow(p, i, prep.typ); err != nil {
		return err
	}
	if err := keepsOwner(prep, old); err != nil {
		return err
	}
	pid := p.Patient()
	if pid == "" {
		return nil
	}
	if prep.typ == "Binary" {
		return s.checkBinary(ctx, p, prep, old, pending)
	}
	if Shared(prep.typ) {
		return s.checkShared(ctx, p, prep, old, pending)
	}
	if !(prep.typ == "Patient" && prep.id == pid) && !containsStr(prep.put.Patients, pid) {
		return fhir.Forbidden("%s/%s would not be in the compartment of Patient/%s, the only one this token may write", prep.typ, prep.id, pid)
	}
	if err := s.checkAttachments(ctx, p, prep.typ, prep.id, prep.put.JSON, pending); err != nil {
		return err
	}
	if old != nil {
		if ok, err := s.visibleLive(ctx, p, old); err != nil {
			return err
		} else if !ok {
			return fhir.Forbidden("%s/%s belongs to another patient's record", prep.typ, prep.id)
		}
	}
	return nil
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// nextTime returns a lastUpdated after prev (versions of one resource get
// strictly increasing times even within one clock tick).
func (s *Service) nextTime(prev *store.Resource) time.Time {
	now := s.now().UTC().Truncate(time.Microsecond)
	if prev != nil && !now.After(prev.LastUpdated) {
		now = prev.LastUpdated.Add(time.Microsecond)
	}
	return now
}

// Create stores a new resource with a server-assigned id (any id in the
// body is replaced, as FHIR create requires).
func (s *Service) Create(ctx context.Context, typ string, body []byte, o WriteOptions) (*Result, error) {
	res, err := parseBody(body)
	if err != nil {
		return nil, err
	}
	return s.CreateTree(ctx, typ, res, o)
}

// CreateTree is Create for an already parsed resource.
func (s *Service) CreateTree(ctx context.Context, typ string, res *fhirjson.Value, o WriteOptions) (*Result, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkType(typ); err != nil {
		return nil, err
	}
	if err := checkResourceType(res, typ); err != nil {
		return nil, err
	}
	if err := allow(p, access.Create, typ); err != nil {
		return nil, err
	}
	if o.IfNoneExist != "" {
		existing, err := s.conditionalMatch(ctx, typ, o.IfNoneExist, "If-None-Exist")
		if err != nil {
			return nil, err
		}
		if existing != nil {
			if ok, err := s.visible(ctx, p, existing); err != nil {
				return nil, err
			} else if !ok {
				return nil, fhir.Errorf(http.StatusPreconditionFailed, "duplicate", "If-None-Exist matched a resource this token may not see")
			}
			return &Result{Resource: existing, Unchanged: true}, nil
		}
	}
	id := fhir.NewID()
	res.SetAfter("id", fhirjson.NewString(id), "resourceType")
	Confine(p, typ, res, nil)
	at := s.nextTime(nil)
	prep, err := s.prepare(res, typ, id, 1, at, "POST", o, false)
	if err != nil {
		return nil, err
	}
	if err := s.checkWrite(ctx, p, access.Create, prep, nil, Pending{}); err != nil {
		return nil, err
	}
	if err := s.storeBlob(ctx, prep); err != nil {
		return nil, err
	}
	if err := s.store.Write(ctx, func(tx store.Tx) error { return tx.Put(ctx, prep.put) }); err != nil {
		return nil, err
	}
	return &Result{Resource: &prep.put.Resource, Created: true}, nil
}

func checkResourceType(res *fhirjson.Value, typ string) error {
	rt := res.Get("resourceType")
	if rt == nil || rt.Kind != fhirjson.String {
		return fhir.Errorf(http.StatusBadRequest, "required", "the resource has no resourceType").AtPath(typ)
	}
	if rt.Str != typ {
		return fhir.BadRequest("the body is a %s but the URL names %s", rt.Str, typ)
	}
	return nil
}

// conditionalMatch runs the search of a conditional interaction: nil for
// no match, the resource for one, 412 for several.
func (s *Service) conditionalMatch(ctx context.Context, typ, query, what string) (*store.Resource, error) {
	return s.conditionalMatchLog(ctx, nil, typ, query, what)
}

// conditionalMatchLog is conditionalMatch recording the search in l.
func (s *Service) conditionalMatchLog(ctx context.Context, l *matchLog, typ, query, what string) (*store.Resource, error) {
	if s.matcher == nil {
		return nil, fhir.Errorf(http.StatusNotImplemented, "not-supported", "%s needs search, which is not available", what)
	}
	q, err := url.ParseQuery(strings.TrimPrefix(query, "?"))
	if err != nil {
		return nil, fhir.BadRequest("%s is not a valid search: %v", what, err)
	}
	if len(q) == 0 {
		return nil, fhir.BadRequest("%s has no search parameters", what)
	}
	ids, err := s.match(ctx, l, typ, q, 2)
	if err != nil {
		return nil, err
	}
	switch len(ids) {
	case 0:
		return nil, nil
	case 1:
		return s.store.Read(ctx, typ, ids[0])
	}
	return nil, fhir.Errorf(http.StatusPreconditionFailed, "multiple-matches", "%s %s?%s matched more than one resource", what, typ, query)
}

// Update stores a new version of typ/id, creating it when it does not
// exist (update as create with a client-assigned id).
func (s *Service) Update(ctx context.Context, typ, id string, body []byte, o WriteOptions) (*Result, error) {
	res, err := parseBody(body)
	if err != nil {
		return nil, err
	}
	return s.UpdateTree(ctx, typ, id, res, o)
}

// UpdateTree is Update for an already parsed resource.
func (s *Service) UpdateTree(ctx context.Context, typ, id string, res *fhirjson.Value, o WriteOptions) (*Result, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkType(typ); err != nil {
		return nil, err
	}
	if err := checkResourceType(res, typ); err != nil {
		return nil, err
	}
	if !fhir.ValidID(id) {
		return nil, fhir.BadRequest("%q is not a valid resource id (1-64 of A-Z a-z 0-9 - .)", id)
	}
	bodyID := res.Get("id")
	if bodyID == nil || bodyID.Kind != fhirjson.String {
		return nil, fhir.Errorf(http.StatusBadRequest, "required", "an update must carry the resource id in the body").AtPath(typ + ".id")
	}
	if bodyID.Str != id {
		return nil, fhir.BadRequest("the body's id %q differs from the URL's id %q", bodyID.Str, id).AtPath(typ + ".id")
	}
	var result *Result
	err = s.store.Write(ctx, func(tx store.Tx) error {
		ctx := store.WithTx(ctx, tx)
		r, err := s.updateTx(ctx, tx, p, typ, id, res.Clone(), o, "PUT")
		result = r
		return err
	})
	if err != nil {
		return nil, err
	}
	return result, nil
}

// updateTx writes a new version inside tx.
func (s *Service) updateTx(ctx context.Context, tx store.Tx, p access.Principal, typ, id string, res *fhirjson.Value, o WriteOptions, method string) (*Result, error) {
	cur, err := tx.Current(ctx, typ, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if errors.Is(err, store.ErrNotFound) {
		cur = nil
	}
	if o.IfMatch != 0 {
		if cur == nil {
			return nil, fhir.Errorf(http.StatusPreconditionFailed, "not-found", "If-Match names version %d but %s/%s does not exist", o.IfMatch, typ, id)
		}
		if cur.Version != o.IfMatch {
			return nil, fhir.Errorf(http.StatusPreconditionFailed, "conflict", "If-Match names version %d but the current version of %s/%s is %d", o.IfMatch, typ, id, cur.Version)
		}
	}
	version := int64(1)
	interaction := access.Create
	if cur != nil {
		version = cur.Version + 1
		interaction = access.Update
	}
	Confine(p, typ, res, cur)
	prep, err := s.prepare(res, typ, id, version, s.nextTime(cur), method, o, false)
	if err != nil {
		return nil, err
	}
	if err := s.checkWrite(ctx, p, interaction, prep, cur, Pending{}); err != nil {
		return nil, err
	}
	if err := s.storeBlob(ctx, prep); err != nil {
		return nil, err
	}
	if err := tx.Put(ctx, prep.put); err != nil {
		return nil, err
	}
	return &Result{Resource: &prep.put.Resource, Created: cur == nil || cur.Deleted}, nil
}

// ConditionalUpdate updates the resource matching query: none -> create
// (with the body's id if given, else a new one), one -> update it, several -> 412.
func (s *Service) ConditionalUpdate(ctx context.Context, typ, query string, body []byte, o WriteOptions) (*Result, error) {
	res, err := parseBody(body)
	if err != nil {
		return nil, err
	}
	if _, err := principal(ctx); err != nil {
		return nil, err
	}
	match, err := s.conditionalMatch(ctx, typ, query, "conditional update")
	if err != nil {
		return nil, err
	}
	bodyID := res.GetString("id")
	if match == nil {
		if bodyID == "" {
			return s.CreateTree(ctx, typ, res, o)
		}
		return s.UpdateTree(ctx, typ, bodyID, res, o)
	}
	if bodyID != "" && bodyID != match.ID {
		return nil, fhir.BadRequest("the body's id %q differs from the id %q of the resource the search matched", bodyID, match.ID)
	}
	res.SetAfter("id", fhirjson.NewString(match.ID), "resourceType")
	return s.UpdateTree(ctx, typ, match.ID, res, o)
}

// Patch applies a JSON Patch (RFC 6902) document to the current version.
func (s *Service) Patch(ctx context.Context, typ, id string, patch []byte, o WriteOptions) (*Result, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkType(typ); err != nil {
		return nil, err
	}
	ops, err := parsePatch(patch)
	if err != nil {
		return nil, err
	}
	var result *Result
	err = s.store.Write(ctx, func(tx store.Tx) error {
		ctx := store.WithTx(ctx, tx)
		cur, err := tx.Current(ctx, typ, id)
		if errors.Is(err, store.ErrNotFound) {
			return fhir.NotFound("%s/%s is not known", typ, id)
		}
		if err != nil {
			return err
		}
		if cur.Deleted {
			return &fhir.Error{Status: http.StatusGone, Issues: []fhir.Issue{{Severity: "error", Code: "deleted", Diagnostics: fmt.Sprintf("%s/%s was deleted", typ, id)}}}
		}
		if ok, err := s.visible(ctx, p, cur); err != nil {
			return err
		} else if !ok {
			return fhir.NotFound("%s/%s is not known", typ, id)
		}
		doc, err := fhirjson.Parse(cur.JSON)
		if err != nil {
			return fmt.Errorf("parse stored %s/%s: %w", typ, id, err)
		}
		if cur.Blob != "" {
			if err := s.inlineBlob(ctx, doc, cur.Blob); err != nil {
				return err
			}
		}
		patched, err := applyPatch(doc, ops)
		if err != nil {
			return err
		}
		if patched.Kind != fhirjson.Object || patched.GetString("resourceType") != typ || patched.GetString("id") != id {
			return fhir.Errorf(http.StatusUnprocessableEntity, "processing", "the patch may not change resourceType or id")
		}
		r, err := s.updateTx(ctx, tx, p, typ, id, patched, o, "PATCH")
		result = r
		return err
	})
	if err != nil {
		return nil, err
	}
	return result, nil
}

// Delete writes a tombstone version; deleting a missing or deleted
// resource succeeds without writing anything (FHIR allows either).
func (s *Service) Delete(ctx context.Context, typ, id string, o WriteOptions) (*Result, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkType(typ); err != nil {
		return nil, err
	}
	if err := allow(p, access.Delete, typ); err != nil {
		return nil, err
	}
	var result *Result
	err = s.store.Write(ctx, func(tx store.Tx) error {
		ctx := store.WithTx(ctx, tx)
		r, err := s.deleteTx(ctx, tx, p, typ, id, o)
		result = r
		return err
	})
	return result, err
}

func (s *Service) deleteTx(ctx context.Context, tx store.Tx, p access.Principal, typ, id string, o WriteOptions) (*Result, error) {
	cur, err := tx.Current(ctx, typ, id)
	if errors.Is(err, store.ErrNotFound) {
		return &Result{Unchanged: true}, nil
	}
	if err != nil {
		return nil, err
	}
	if ok, err := s.visible(ctx, p, cur); err != nil {
		return nil, err
	} else if !ok {
		return &Result{Unchanged: true}, nil
	}
	if err := s.checkDelete(ctx, p, cur); err != nil {
		return nil, err
	}
	if cur.Deleted {
		return &Result{Resource: cur, Unchanged: true}, nil
	}
	if o.IfMatch != 0 && cur.Version != o.IfMatch {
		return nil, fhir.Errorf(http.StatusPreconditionFailed, "conflict", "If-Match names version %d but the current version of %s/%s is %d", o.IfMatch, typ, id, cur.Version)
	}
	put := &store.Put{Resource: store.Resource{Type: typ, ID: id, Version: cur.Version + 1, LastUpdated: s.nextTime(cur), Deleted: true, Method: "DELETE"}, Batch: o.Batch}
	if err := tx.Put(ctx, put); err != nil {
		return nil, err
	}
	return &Result{Resource: &put.Resource}, nil
}

// ConditionalDelete deletes the resource matching query (412 when several match).
func (s *Service) ConditionalDelete(ctx context.Context, typ, query string, o WriteOptions) (*Result, error) {
	if _, err := principal(ctx); err != nil {
		return nil, err
	}
	match, err := s.conditionalMatch(ctx, typ, query, "conditional delete")
	if err != nil {
		return nil, err
	}
	if match == nil {
		return &Result{Unchanged: true}, nil
	}
	return s.Delete(ctx, typ, match.ID, o)
}

// checkDelete checks that patient-confined p may delete the visible
// resource whose current version cur is: a Binary only when its
// securityContext names their record (binaryOwned), a shared one only when
// they own it (sharedOwned).
func (s *Service) checkDelete(ctx context.Context, p access.Principal, cur *store.Resource) error {
	if p.Patient() == "" {
		return nil
	}
	if cur.Type == "Binary" {
		if ok, err := s.binaryOwned(ctx, p, cur); err != nil {
			return err
		} else if !ok {
			return fhir.Forbidden("Binary/%s is not this patient's to delete: its securityContext does not name their record", cur.ID)
		}
		return nil
	}
	if Shared(cur.Type) {
		if ok, err := s.sharedOwned(ctx, p, cur); err != nil {
			return err
		} else if !ok || !index.Ownable(cur.Type) {
			return fhir.Forbidden("%s/%s is not this patient's to delete: it is reference data of the store, or another patient's", cur.Type, cur.ID)
		}
	}
	return nil
}

// stripSpace removes the whitespace base64Binary allows.
func stripSpace(s string) string {
	if !strings.ContainsAny(s, " \t\r\n") {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, s)
}
