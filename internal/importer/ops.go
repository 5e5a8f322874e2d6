package importer

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/api"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/records"
	"github.com/phr-project/phr/internal/store"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// Batch is one import batch as listed by the import log.
type Batch struct {
	ID        int64
	Source    string
	Filename  string
	Mode      string
	Subject   string
	Started   time.Time
	Finished  time.Time
	Status    string
	Created   int
	Updated   int
	Unchanged int
	Conflicts int
	Rejected  int
	Deleted   int
}

const batchCols = `id, source, filename, mode, subject, started, finished, status, created, updated, unchanged, conflicts, rejected, deleted`

func scanBatch(sc interface{ Scan(...any) error }) (*Batch, error) {
	var b Batch
	var st, fin int64
	if err := sc.Scan(&b.ID, &b.Source, &b.Filename, &b.Mode, &b.Subject, &st, &fin, &b.Status, &b.Created, &b.Updated, &b.Unchanged, &b.Conflicts, &b.Rejected, &b.Deleted); err != nil {
		return nil, err
	}
	b.Started = sqldb.FromMicros(st)
	if fin != 0 {
		b.Finished = sqldb.FromMicros(fin)
	}
	return &b, nil
}

// Batches lists the import batches the principal may see, newest first.
func (imp *Importer) Batches(ctx context.Context, limit int) ([]*Batch, error) {
	p := access.From(ctx)
	if p == nil {
		return nil, fhir.Forbidden("authentication required")
	}
	if _, err := imp.MarkInterrupted(ctx); err != nil {
		return nil, err
	}
	rows, err := imp.db.Query(ctx, `SELECT `+batchCols+` FROM import_batch WHERE (? = '' OR patient = ?) ORDER BY id DESC LIMIT ?`, p.Patient(), p.Patient(), limit)
	if err != nil {
		return nil, fmt.Errorf("list import batches: %w", err)
	}
	defer rows.Close()
	var out []*Batch
	for rows.Next() {
		b, err := scanBatch(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// GetBatch returns one batch the principal may see.
func (imp *Importer) GetBatch(ctx context.Context, id int64) (*Batch, error) {
	p := access.From(ctx)
	if p == nil {
		return nil, fhir.Forbidden("authentication required")
	}
	if _, err := imp.MarkInterrupted(ctx); err != nil {
		return nil, err
	}
	b, err := scanBatch(imp.db.QueryRow(ctx, `SELECT `+batchCols+` FROM import_batch WHERE id = ? AND (? = '' OR patient = ?)`, id, p.Patient(), p.Patient()))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fhir.NotFound("import batch %d is not known", id)
	}
	if err != nil {
		return nil, fmt.Errorf("read import batch %d: %w", id, err)
	}
	return b, nil
}

func batchParam(b *Batch) *fhirjson.Value {
	ps := []*fhirjson.Value{
		intParam("id", b.ID),
		param1("source", "valueString", fhirjson.NewString(b.Source)),
		param1("filename", "valueString", fhirjson.NewString(b.Filename)),
		param1("status", "valueCode", fhirjson.NewString(b.Status)),
		param1("started", "valueInstant", fhirjson.NewString(fhir.FormatInstant(b.Started))),
	}
	if !b.Finished.IsZero() {
		ps = append(ps, param1("finished", "valueInstant", fhirjson.NewString(fhir.FormatInstant(b.Finished))))
	}
	if b.Subject != "" {
		ps = append(ps, param1("by", "valueString", fhirjson.NewString(b.Subject)))
	}
	ps = append(ps, intParam("created", int64(b.Created)), intParam("updated", int64(b.Updated)), intParam("unchanged", int64(b.Unchanged)),
		intParam("conflicts", int64(b.Conflicts)), intParam("rejected", int64(b.Rejected)), intParam("deleted", int64(b.Deleted)))
	return parts("batch", ps...)
}

// batches serves GET [base]/$import-batches[?batch=N].
func (h *handlers) batches(w http.ResponseWriter, r *http.Request, _, _ string) {
	ctx := r.Context()
	id, err := intQuery(r, "batch", false)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	if id == 0 {
		list, err := h.imp.Batches(ctx, 200)
		if err != nil {
			api.WriteError(w, r, err)
			return
		}
		out := []*fhirjson.Value{}
		for _, b := range list {
			out = append(out, batchParam(b))
		}
		writeJSON(w, http.StatusOK, parameters(out...).Marshal())
		return
	}
	b, err := h.imp.GetBatch(ctx, id)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	out := []*fhirjson.Value{batchParam(b)}
	rows, err := h.imp.db.Query(ctx, `SELECT r.type, r.id, v.version, v.deleted FROM resource_version v JOIN resource r ON r.rid = v.rid WHERE v.batch = ? ORDER BY v.seq LIMIT 10000`, id)
	if err != nil {
		api.WriteError(w, r, fmt.Errorf("list batch versions: %w", err))
		return
	}
	defer rows.Close()
	for rows.Next() {
		var typ, rid string
		var v int64
		var del bool
		if err := rows.Scan(&typ, &rid, &v, &del); err != nil {
			api.WriteError(w, r, err)
			return
		}
		name := "wrote"
		if del {
			name = "deleted"
		}
		out = append(out, param1(name, "valueString", fhirjson.NewString(fmt.Sprintf("%s/%s/_history/%d", typ, rid, v))))
	}
	if err := rows.Err(); err != nil {
		api.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, parameters(out...).Marshal())
}

// quarantine serves GET [base]/$import-quarantine?batch=N.
func (h *handlers) quarantine(w http.ResponseWriter, r *http.Request, _, _ string) {
	ctx := r.Context()
	id, err := intQuery(r, "batch", true)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	if _, err := h.imp.GetBatch(ctx, id); err != nil {
		api.WriteError(w, r, err)
		return
	}
	rows, err := h.imp.db.Query(ctx, `SELECT file, line, entry, reason, text FROM import_quarantine WHERE batch = ? ORDER BY id`, id)
	if err != nil {
		api.WriteError(w, r, fmt.Errorf("read quarantine: %w", err))
		return
	}
	defer rows.Close()
	raw := wantsNDJSON(r)
	var out []*fhirjson.Value
	if raw {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
	}
	for rows.Next() {
		var file, reason string
		var line, entry int64
		var text []byte
		if err := rows.Scan(&file, &line, &entry, &reason, &text); err != nil {
			api.WriteError(w, r, err)
			return
		}
		if raw {
			w.Write(text)
			w.Write([]byte{'\n'})
			continue
		}
		oo, err := fhirjson.Parse([]byte(reason))
		if err != nil {
			oo = fhir.Outcome([]fhir.Issue{{Severity: "error", Code: "processing", Diagnostics: reason}})
		}
		ps := []*fhirjson.Value{
			param1("file", "valueString", fhirjson.NewString(file)),
			intParam("line", line),
		}
		if entry > 0 {
			// The index in Bundle.entry.
			ps = append(ps, intParam("entry", entry-1))
		}
		ps = append(ps,
			param1("text", "valueString", fhirjson.NewString(string(text))),
			param1("reason", "resource", oo))
		out = append(out, parts("rejected", ps...))
	}
	if raw {
		return
	}
	if err := rows.Err(); err != nil {
		api.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, parameters(out...).Marshal())
}

// Conflict is one conflict kept by the merge.
type Conflict struct {
	ID              int64
	Batch           int64
	Type, LocalID   string
	Source          string
	Line            int64
	Incoming        []byte
	CurrentVersion  int64
	CurrentSource   string
	Status          string
	Resolution      string
	ResolvedVersion int64
	Created         time.Time
}

const conflictCols = `id, batch, type, local_id, source, line, incoming, current_version, current_source, status, resolution, resolved_version, created`

func scanConflict(sc interface{ Scan(...any) error }) (*Conflict, error) {
	var c Conflict
	var created int64
	if err := sc.Scan(&c.ID, &c.Batch, &c.Type, &c.LocalID, &c.Source, &c.Line, &c.Incoming, &c.CurrentVersion, &c.CurrentSource, &c.Status, &c.Resolution, &c.ResolvedVersion, &created); err != nil {
		return nil, err
	}
	c.Created = sqldb.FromMicros(created)
	return &c, nil
}

// Conflicts lists conflicts with the status ("open", "resolved" or "all")
// on resources the principal may read.
func (imp *Importer) Conflicts(ctx context.Context, status string, limit int) ([]*Conflict, error) {
	p := access.From(ctx)
	if p == nil {
		return nil, fhir.Forbidden("authentication required")
	}
	if status == "" {
		status = "open"
	}
	if status != "open" && status != "resolved" && status != "all" {
		return nil, fhir.BadRequest("status=%s: use open, resolved or all", status).AtPath("status")
	}
	rows, err := imp.db.Query(ctx, `SELECT `+conflictCols+` FROM import_conflict WHERE (? = 'all' OR status = ?) ORDER BY id LIMIT ?`, status, status, limit*4)
	if err != nil {
		return nil, fmt.Errorf("list conflicts: %w", err)
	}
	var all []*Conflict
	for rows.Next() {
		c, err := scanConflict(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		all = append(all, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []*Conflict
	for _, c := range all {
		if len(out) >= limit {
			break
		}
		if !p.Allows(access.Read, c.Type) {
			continue
		}
		if p.Patient() != "" {
			if _, err := imp.rec.Read(ctx, c.Type, c.LocalID); err != nil {
				continue
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// GetConflict returns one conflict on a resource the principal may read.
func (imp *Importer) GetConflict(ctx context.Context, id int64) (*Conflict, *store.Resource, error) {
	c, err := scanConflict(imp.db.QueryRow(ctx, `SELECT `+conflictCols+` FROM import_conflict WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, fhir.NotFound("conflict %d is not known", id)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read conflict %d: %w", id, err)
	}
	cur, err := imp.rec.Read(ctx, c.Type, c.LocalID)
	if err != nil {
		if fe := fhir.AsError(err); fe.Status == http.StatusNotFound || fe.Status == http.StatusForbidden {
			return nil, nil, fhir.NotFound("conflict %d is not known", id)
		}
		return nil, nil, err
	}
	return c, cur, nil
}

// currentJSON is the JSON of a conflict's current version as a read gives
// it: a Binary's with its content (kept in the blob store), so that both
// sides of a conflict over a Binary show what they hold.
func (imp *Importer) currentJSON(ctx context.Context, cur *store.Resource) ([]byte, error) {
	if cur == nil || cur.JSON == nil {
		return nil, nil
	}
	if cur.Blob == "" {
		return cur.JSON, nil
	}
	var buf bytes.Buffer
	if err := imp.rec.WriteJSON(ctx, &buf, cur); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// conflictParam renders a conflict; with detail, both sides: the incoming
// resource and cur, the current version's JSON (currentJSON).
func conflictParam(c *Conflict, detail bool, cur []byte) *fhirjson.Value {
	ps := []*fhirjson.Value{
		intParam("id", c.ID),
		param1("resource", "valueString", fhirjson.NewString(c.Type+"/"+c.LocalID)),
		param1("status", "valueCode", fhirjson.NewString(c.Status)),
		intParam("batch", c.Batch),
		param1("incomingSource", "valueString", fhirjson.NewString(c.Source)),
		intParam("currentVersion", c.CurrentVersion),
		param1("currentSource", "valueString", fhirjson.NewString(orUnknown(c.CurrentSource))),
		param1("created", "valueInstant", fhirjson.NewString(fhir.FormatInstant(c.Created))),
	}
	if c.Line > 0 {
		ps = append(ps, intParam("line", c.Line))
	}
	if c.Status == "resolved" {
		ps = append(ps, param1("resolution", "valueCode", fhirjson.NewString(c.Resolution)), intParam("resolvedVersion", c.ResolvedVersion))
	}
	if detail {
		if in, err := fhirjson.Parse(c.Incoming); err == nil {
			ps = append(ps, param1("incoming", "resource", in))
		}
		if cur != nil {
			if cv, err := fhirjson.Parse(cur); err == nil {
				ps = append(ps, param1("current", "resource", cv))
			}
		}
	}
	return parts("conflict", ps...)
}

// conflicts serves GET [base]/$conflicts[?id=N][&status=].
func (h *handlers) conflicts(w http.ResponseWriter, r *http.Request, _, _ string) {
	ctx := r.Context()
	id, err := intQuery(r, "id", false)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	if id != 0 {
		c, cur, err := h.imp.GetConflict(ctx, id)
		if err != nil {
			api.WriteError(w, r, err)
			return
		}
		js, err := h.imp.currentJSON(ctx, cur)
		if err != nil {
			api.WriteError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, parameters(conflictParam(c, true, js)).Marshal())
		return
	}
	list, err := h.imp.Conflicts(ctx, r.URL.Query().Get("status"), 1000)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	out := []*fhirjson.Value{}
	for _, c := range list {
		out = append(out, conflictParam(c, false, nil))
	}
	writeJSON(w, http.StatusOK, parameters(out...).Marshal())
}

// Resolve resolves conflict id: action keep (the current version), take
// (the incoming side) or merge (merged, a resource of the same type). It
// writes a new version with a Provenance citing both sides and returns it.
func (imp *Importer) Resolve(ctx context.Context, id int64, action string, merged *fhirjson.Value) (*store.Resource, error) {
	p := access.From(ctx)
	c, cur, err := imp.GetConflict(ctx, id)
	if err != nil {
		return nil, err
	}
	if c.Status != "open" {
		return nil, fhir.Conflict("conflict %d is already resolved (%s, version %d)", id, c.Resolution, c.ResolvedVersion)
	}
	var tree *fhirjson.Value
	switch action {
	case "keep":
		tree, err = fhirjson.Parse(cur.JSON)
	case "take":
		tree, err = fhirjson.Parse(c.Incoming)
	case "merge":
		if merged == nil {
			return nil, fhir.Errorf(http.StatusBadRequest, "required", "action=merge needs the merged resource (parameter resource)").AtPath("resource")
		}
		if merged.GetString("resourceType") != c.Type {
			return nil, fhir.BadRequest("the merged resource is a %q, the conflict is about %s", merged.GetString("resourceType"), c.Type).AtPath("resource")
		}
		tree = merged
	default:
		return nil, fhir.BadRequest("action=%q: use keep, take or merge", action).AtPath("action")
	}
	if err != nil {
		return nil, fmt.Errorf("parse conflict %d: %w", id, err)
	}
	tree.SetAfter("id", fhirjson.NewString(c.LocalID), "resourceType")
	entities := []*fhirjson.Value{
		entity("revision", fmt.Sprintf("%s/%s/_history/%d", c.Type, c.LocalID, cur.Version), "the current version (from "+orUnknown(metaSource(cur.JSON))+")"),
		entityDisplay("source", fmt.Sprintf("the incoming version of conflict %d from %s (import batch %d)", c.ID, c.Source, c.Batch)),
	}
	var written *store.Resource
	reason := fmt.Sprintf("resolve conflict %d: %s", c.ID, action)
	// The version keeps the meta.source of the side taken; a merged
	// resource is the user's own.
	source := ""
	switch action {
	case "keep":
		source = metaSource(cur.JSON)
	case "take":
		source = c.Source
	}
	if m := tree.Get("meta"); action == "merge" && m != nil && m.Kind == fhirjson.Object {
		m.Delete("source")
	}
	err = imp.writeVersion(ctx, p, cur, tree, source, "resolve", reason, entities, func(tx *sqldb.Tx, res *store.Resource) error {
		written = res
		r, err := tx.Exec(ctx, `UPDATE import_conflict SET status = 'resolved', resolution = ?, resolved_version = ?, resolved = ? WHERE id = ? AND status = 'open'`,
			action, res.Version, sqldb.Micros(time.Now()), c.ID)
		if err != nil {
			return err
		}
		if n, _ := r.RowsAffected(); n != 1 {
			return fhir.Conflict("conflict %d was resolved concurrently", c.ID)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return written, nil
}

func entity(role, ref, display string) *fhirjson.Value {
	return fhirjson.NewObject(
		fhirjson.Field{Name: "role", Value: fhirjson.NewString(role)},
		fhirjson.Field{Name: "what", Value: fhirjson.NewObject(
			fhirjson.Field{Name: "reference", Value: fhirjson.NewString(ref)},
			fhirjson.Field{Name: "display", Value: fhirjson.NewString(display)})},
	)
}

func entityDisplay(role, display string) *fhirjson.Value {
	return fhirjson.NewObject(
		fhirjson.Field{Name: "role", Value: fhirjson.NewString(role)},
		fhirjson.Field{Name: "what", Value: fhirjson.NewObject(fhirjson.Field{Name: "display", Value: fhirjson.NewString(display)})},
	)
}

// writeVersion writes tree as the next version after cur with a Provenance
// (activity, reason, extra entities) in one transaction, after checking
// the principal may update it; also runs fn in the transaction.
func (imp *Importer) writeVersion(ctx context.Context, p access.Principal, cur *store.Resource, tree *fhirjson.Value, source, activity, reason string, entities []*fhirjson.Value, fn func(*sqldb.Tx, *store.Resource) error) error {
	if p == nil {
		return fhir.Forbidden("authentication required")
	}
	if !p.Allows(access.Update, cur.Type) {
		return fhir.Forbidden("the access token does not allow update of %s", cur.Type)
	}
	at := imp.rec.Now().UTC().Truncate(time.Microsecond)
	if !at.After(cur.LastUpdated) {
		at = cur.LastUpdated.Add(time.Microsecond)
	}
	// a patient's merged resource or Binary stays theirs, as any write
	// of theirs does
	records.Confine(p, cur.Type, tree, cur)
	prep, err := imp.rec.PrepareVersion(tree, cur.Type, cur.ID, cur.Version+1, at, "PUT", records.WriteOptions{Source: source})
	if err != nil {
		return err
	}
	if prep.Put.Blob == "" && cur.Blob != "" && tree.Get("data") == nil {
		prep.Put.Blob = cur.Blob
	}
	if err := imp.rec.CheckWrite(ctx, p, access.Update, prep, cur, records.Pending{}); err != nil {
		return err
	}
	if err := imp.rec.StoreBlob(ctx, prep); err != nil {
		return err
	}
	target := fhirjson.NewObject(fhirjson.Field{Name: "reference", Value: fhirjson.NewString(fmt.Sprintf("%s/%s/_history/%d", cur.Type, cur.ID, cur.Version+1))})
	prov, err := imp.buildProvenance(at, []*fhirjson.Value{target}, prep.Put.Patients, "", p.Subject(), "", 0, activity, reason)
	if err != nil {
		return err
	}
	provTree, err := fhirjson.Parse(prov.Put.JSON)
	if err != nil {
		return err
	}
	// The author of a revision is the person; the entities cite both sides.
	provTree.Set("agent", fhirjson.NewArray(fhirjson.NewObject(
		fhirjson.Field{Name: "type", Value: codeable("http://terminology.hl7.org/CodeSystem/provenance-participant-type", "author", "Author")},
		fhirjson.Field{Name: "who", Value: fhirjson.NewObject(fhirjson.Field{Name: "display", Value: fhirjson.NewString(orDefault(p.Subject(), "unknown"))})},
	)))
	provTree.Set("entity", fhirjson.NewArray(entities...))
	prov, err = imp.rec.PrepareVersion(provTree, "Provenance", provTree.GetString("id"), 1, at, "POST", records.WriteOptions{})
	if err != nil {
		return err
	}
	return imp.db.WriteTx(ctx, func(tx *sqldb.Tx) error {
		if err := tx.Put(ctx, prep.Put); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return fhir.Conflict("%s/%s changed meanwhile; read it again", cur.Type, cur.ID)
			}
			return err
		}
		if err := tx.Put(ctx, prov.Put); err != nil {
			return err
		}
		if fn != nil {
			return fn(tx, &prep.Put.Resource)
		}
		return nil
	})
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// resolve serves POST [base]/$resolve-conflict (id and action as query
// parameters or in a Parameters body, with the merged resource).
func (h *handlers) resolve(w http.ResponseWriter, r *http.Request, _, _ string) {
	ctx := r.Context()
	q := r.URL.Query()
	idStr, action := q.Get("id"), q.Get("action")
	var merged *fhirjson.Value
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		api.WriteError(w, r, fhir.BadRequest("reading the body: %v", err))
		return
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		v, err := fhirjson.Parse(body)
		if err != nil || v.Kind != fhirjson.Object {
			api.WriteError(w, r, fhir.BadRequest("the body must be a Parameters resource (or a merged resource)"))
			return
		}
		if v.GetString("resourceType") == "Parameters" {
			if ps := v.Get("parameter"); ps != nil && ps.Kind == fhirjson.Array {
				for _, pp := range ps.Items {
					switch pp.GetString("name") {
					case "id":
						if x := pp.Get("valueInteger"); x != nil {
							idStr = x.Str
						} else if s := pp.GetString("valueString"); s != "" {
							idStr = s
						}
					case "action":
						action = pp.GetString("valueCode") + pp.GetString("valueString")
					case "resource":
						merged = pp.Get("resource")
					}
				}
			}
		} else {
			merged = v
		}
	}
	id, err := strconv.ParseInt(idStr, 10, 64)
	if err != nil || id < 1 {
		api.WriteError(w, r, fhir.Errorf(http.StatusBadRequest, "required", "the conflict id (parameter id) is required and must be a positive integer").AtPath("id"))
		return
	}
	if action == "" && merged != nil {
		action = "merge"
	}
	res, err := h.imp.Resolve(ctx, id, action, merged)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	w.Header().Set("Location", fmt.Sprintf("%s/%s/_history/%d", res.Type, res.ID, res.Version))
	w.Header().Set("ETag", fmt.Sprintf(`W/"%d"`, res.Version))
	writeJSON(w, http.StatusOK, res.JSON)
}

// Revert writes version `to` of typ/id back as a new version.
func (imp *Importer) Revert(ctx context.Context, typ, id string, to int64, reason string) (*store.Resource, error) {
	old, err := imp.rec.ReadVersion(ctx, typ, id, to)
	if err != nil {
		return nil, err
	}
	cur, err := imp.rec.Read(ctx, typ, id)
	if err != nil {
		return nil, err
	}
	if cur.Version == to {
		return nil, fhir.BadRequest("version %d is already the current version of %s/%s", to, typ, id).AtPath("to")
	}
	tree, err := fhirjson.Parse(old.JSON)
	if err != nil {
		return nil, fmt.Errorf("parse %s/%s version %d: %w", typ, id, to, err)
	}
	if old.Blob != "" && tree.Get("data") == nil {
		cur = &store.Resource{Type: cur.Type, ID: cur.ID, Version: cur.Version, LastUpdated: cur.LastUpdated, JSON: cur.JSON, Blob: old.Blob}
	} else if cur.Blob != "" {
		cur = &store.Resource{Type: cur.Type, ID: cur.ID, Version: cur.Version, LastUpdated: cur.LastUpdated, JSON: cur.JSON}
	}
	if reason == "" {
		reason = fmt.Sprintf("revert to version %d", to)
	}
	entities := []*fhirjson.Value{
		entity("revision", fmt.Sprintf("%s/%s/_history/%d", typ, id, to), fmt.Sprintf("version %d, written back", to)),
		entity("removal", fmt.Sprintf("%s/%s/_history/%d", typ, id, cur.Version), fmt.Sprintf("version %d, replaced", cur.Version)),
	}
	var written *store.Resource
	err = imp.writeVersion(ctx, access.From(ctx), cur, tree, "", "revert", reason, entities, func(_ *sqldb.Tx, res *store.Resource) error {
		written = res
		return nil
	})
	if err != nil {
		return nil, err
	}
	return written, nil
}

// revert serves POST [base]/T/id/$revert?to=N.
func (h *handlers) revert(w http.ResponseWriter, r *http.Request, typ, id string) {
	to, err := intQuery(r, "to", true)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	res, err := h.imp.Revert(r.Context(), typ, id, to, r.URL.Query().Get("reason"))
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	w.Header().Set("Location", fmt.Sprintf("%s/%s/_history/%d", res.Type, res.ID, res.Version))
	w.Header().Set("ETag", fmt.Sprintf(`W/"%d"`, res.Version))
	writeJSON(w, http.StatusOK, res.JSON)
}

// diff serves GET [base]/T/id/$diff?from=&to=.
func (h *handlers) diff(w http.ResponseWriter, r *http.Request, typ, id string) {
	ctx := r.Context()
	from, err := intQuery(r, "from", false)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	to, err := intQuery(r, "to", false)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	var b *store.Resource
	if to == 0 {
		b, err = h.imp.rec.Read(ctx, typ, id)
	} else {
		b, err = h.imp.rec.ReadVersion(ctx, typ, id, to)
	}
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	if from == 0 {
		from = b.Version - 1
	}
	if from < 1 {
		api.WriteError(w, r, fhir.BadRequest("%s/%s has only one version; nothing to compare", typ, id).AtPath("from"))
		return
	}
	a, err := h.imp.rec.ReadVersion(ctx, typ, id, from)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	changes, err := Diff(a.JSON, b.JSON)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	changes = append(changes, blobChange(a, b)...)
	out := []*fhirjson.Value{intParam("from", a.Version), intParam("to", b.Version)}
	for _, c := range changes {
		ps := []*fhirjson.Value{param1("type", "valueCode", fhirjson.NewString(c.Op)), param1("path", "valueString", fhirjson.NewString(c.Path))}
		if c.Old != nil {
			ps = append(ps, param1("previousValue", "valueString", fhirjson.NewString(string(c.Old))))
		}
		if c.New != nil {
			ps = append(ps, param1("value", "valueString", fhirjson.NewString(string(c.New))))
		}
		out = append(out, parts("operation", ps...))
	}
	writeJSON(w, http.StatusOK, parameters(out...).Marshal())
}

// blobChange is the change of a Binary's content between versions a and
// b, which the stored JSON does not show: the content is in the blob
// store, named by its SHA-256 (store.Put.Blob). Each side is given as
// "sha256:[hex]" rather than the base64 data, which may run to megabytes.
func blobChange(a, b *store.Resource) []Change {
	if a.Blob == b.Blob || bytes.Contains(a.JSON, []byte(`"data":`)) || bytes.Contains(b.JSON, []byte(`"data":`)) {
		return nil
	}
	desc := func(blob string) []byte {
		if blob == "" {
			return nil
		}
		return fhirjson.AppendString(nil, "sha256:"+strings.TrimPrefix(blob, "binary/"))
	}
	c := Change{Op: "replace", Path: a.Type + ".data", Old: desc(a.Blob), New: desc(b.Blob)}
	switch {
	case c.Old == nil:
		c.Op = "add"
	case c.New == nil:
		c.Op = "delete"
	}
	return []Change{c}
}

// Change is one difference between two versions.
type Change struct {
	// Op is add, delete or replace.
	Op   string
	Path string
	// Old and New are the JSON text of the values (nil when absent).
	Old, New []byte
}

// Diff compares two resource versions, ignoring meta.versionId and
// meta.lastUpdated (and a meta left empty without them).
func Diff(a, b []byte) ([]Change, error) {
	va, err := fhirjson.Parse(a)
	if err != nil {
		return nil, err
	}
	vb, err := fhirjson.Parse(b)
	if err != nil {
		return nil, err
	}
	for _, v := range []*fhirjson.Value{va, vb} {
		if m := v.Get("meta"); m != nil && m.Kind == fhirjson.Object {
			m.Delete("versionId")
			m.Delete("lastUpdated")
			if len(m.Fields) == 0 {
				v.Delete("meta") // nothing else: as if absent
			}
		}
	}
	var out []Change
	diffValues(va.GetString("resourceType"), va, vb, &out)
	return out, nil
}

func diffValues(path string, a, b *fhirjson.Value, out *[]Change) {
	if fhirjson.Equal(a, b) {
		return
	}
	if a.Kind == fhirjson.Object && b.Kind == fhirjson.Object {
		for _, f := range a.Fields {
			if nb := b.Get(f.Name); nb != nil {
				diffValues(path+"."+f.Name, f.Value, nb, out)
			} else {
				*out = append(*out, Change{Op: "delete", Path: path + "." + f.Name, Old: f.Value.Marshal()})
			}
		}
		for _, f := range b.Fields {
			if a.Get(f.Name) == nil {
				*out = append(*out, Change{Op: "add", Path: path + "." + f.Name, New: f.Value.Marshal()})
			}
		}
		return
	}
	if a.Kind == fhirjson.Array && b.Kind == fhirjson.Array {
		diffArrays(path, a.Items, b.Items, out)
		return
	}
	*out = append(*out, Change{Op: "replace", Path: path, Old: a.Marshal(), New: b.Marshal()})
}

// diffArrays aligns the elements two arrays share (a longest common
// subsequence of equal elements), so that an element added or removed in
// the middle is one change rather than a change of every element after
// it. Between two shared elements, the removed and added ones are compared
// pairwise, and what is left over is deleted (named by its index in a) or
// added (by its index in b). Arrays too long to align are compared by
// position.
func diffArrays(path string, a, b []*fhirjson.Value, out *[]Change) {
	at := func(i int) string { return fmt.Sprintf("%s[%d]", path, i) }
	// gap compares a[i0:i1] with b[j0:j1], none of them shared.
	gap := func(i0, i1, j0, j1 int) {
		for ; i0 < i1 && j0 < j1; i0, j0 = i0+1, j0+1 {
			diffValues(at(j0), a[i0], b[j0], out)
		}
		for ; i0 < i1; i0++ {
			*out = append(*out, Change{Op: "delete", Path: at(i0), Old: a[i0].Marshal()})
		}
		for ; j0 < j1; j0++ {
			*out = append(*out, Change{Op: "add", Path: at(j0), New: b[j0].Marshal()})
		}
	}
	n, m := len(a), len(b)
	if n*m > 1<<14 {
		gap(0, n, 0, m)
		return
	}
	// lcs[i*(m+1)+j] is the length of the longest common subsequence of
	// a[i:] and b[j:].
	lcs := make([]int, (n+1)*(m+1))
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if fhirjson.Equal(a[i], b[j]) {
				lcs[i*(m+1)+j] = lcs[(i+1)*(m+1)+j+1] + 1
			} else {
				lcs[i*(m+1)+j] = max(lcs[(i+1)*(m+1)+j], lcs[i*(m+1)+j+1])
			}
		}
	}
	i0, j0 := 0, 0 // the start of the current gap
	i, j := 0, 0
	for i < n && j < m {
		switch {
		case lcs[i*(m+1)+j] == lcs[(i+1)*(m+1)+j+1]+1 && fhirjson.Equal(a[i], b[j]):
			gap(i0, i, j0, j)
			i, j = i+1, j+1
			i0, j0 = i, j
		case lcs[(i+1)*(m+1)+j] >= lcs[i*(m+1)+j+1]:
			i++
		default:
			j++
		}
	}
	gap(i0, n, j0, m)
}
