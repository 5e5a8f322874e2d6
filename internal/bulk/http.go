package bulk

import (
	"compress/gzip"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/api"
	"github.com/phr-project/phr/internal/cid"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/jobs"
	"github.com/phr-project/phr/internal/r4"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// Canonical URLs of the Bulk Data IG.
const (
	capabilityURL = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
	defSystem     = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
	defPatient    = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"
	defGroup      = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"
)

// Paths under the FHIR base and the root.
const (
	statusPath = "/$export-status/"
	filePath   = "/$export-file/"
	ipfsPath   = "/ipfs/"
)

// Register adds the $export operations to the FHIR server and the
// status, file and by-CID routes to mux (the server's root mux).
func (s *Service) Register(f *api.Server, mux *http.ServeMux) {
	for _, op := range []*api.Operation{
		{Name: "export", Definition: defSystem, System: true, Resource: opDef("export", defSystem, true, false, false)},
		{Name: "export", Definition: defPatient, Types: []string{"Patient"}, Resource: opDef("patient-export", defPatient, false, true, false)},
		{Name: "export", Definition: defGroup, Types: []string{"Group"}, Instance: true, Resource: opDef("group-export", defGroup, false, false, true)},
	} {
		op.Methods = []string{http.MethodGet, http.MethodPost}
		op.Public = true // the kick-off applies its own header rules (400, not 406) and authenticates itself
		op.Handler = s.kickoff
		f.HandleOperation(op)
	}
	f.AddCapability(func(c *api.Capability) {
		if !slices.Contains(c.Instantiates, capabilityURL) {
			c.Instantiates = append(c.Instantiates, capabilityURL)
		}
	})
	mux.HandleFunc("GET /fhir"+statusPath+"{job}", s.status)
	mux.HandleFunc("DELETE /fhir"+statusPath+"{job}", s.cancel)
	mux.HandleFunc("GET /fhir"+filePath+"{job}/{name}", s.file)
	mux.HandleFunc("GET "+ipfsPath+"{cid}", s.byCID)
}

// opDef renders a short OperationDefinition for the server to serve.
func opDef(id, canonical string, system, typ, instance bool) []byte {
	params := []map[string]any{
		{"name": "_outputFormat", "use": "in", "min": 0, "max": "1", "type": "string"},
		{"name": "_since", "use": "in", "min": 0, "max": "1", "type": "instant"},
		{"name": "_until", "use": "in", "min": 0, "max": "1", "type": "instant"},
		{"name": "_type", "use": "in", "min": 0, "max": "*", "type": "string"},
		{"name": "_elements", "use": "in", "min": 0, "max": "*", "type": "string"},
		{"name": "includeAssociatedData", "use": "in", "min": 0, "max": "*", "type": "code"},
		{"name": "_typeFilter", "use": "in", "min": 0, "max": "*", "type": "string"},
	}
	if !system {
		params = append(params, map[string]any{"name": "patient", "use": "in", "min": 0, "max": "*", "type": "Reference"})
	}
	d := map[string]any{
		"resourceType": "OperationDefinition", "id": id, "url": canonical, "version": "2.0.0",
		"name": "BulkDataExport", "status": "active", "kind": "operation", "code": "export",
		"system": system, "type": typ, "instance": instance, "affectsState": false,
		"parameter": params,
	}
	if typ || instance {
		d["resource"] = []string{map[bool]string{true: "Patient", false: "Group"}[typ]}
	}
	b, _ := json.Marshal(d)
	return b
}

// authenticate returns the caller or writes 401.
func (s *Service) authenticate(w http.ResponseWriter, r *http.Request) (access.Principal, bool) {
	p, err := s.auth.Authenticate(r)
	if err != nil {
		api.WriteError(w, r, err)
		return nil, false
	}
	return p, true
}

// kickoff starts an export: [base]/$export, [base]/Patient/$export,
// [base]/Group/[id]/$export.
func (s *Service) kickoff(w http.ResponseWriter, r *http.Request, typ, id string) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	ctx := access.With(r.Context(), p)
	r = r.WithContext(ctx)
	level := LevelSystem
	switch {
	case typ == "":
	case typ == "Patient" && id == "":
		level = LevelPatient
	case typ == "Group" && id != "":
		level = LevelGroup
	default:
		api.WriteError(w, r, fhir.BadRequest("$export is supported at [base]/$export, [base]/Patient/$export and [base]/Group/[id]/$export"))
		return
	}
	lenient, err := checkHeaders(r)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	params, err := readParams(r, s.opts().MaxBody)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	req, patients, err := parseRequest(params, level, lenient, time.Now().UTC())
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	if len(req.TypeFilters) > 0 && s.Matcher() == nil {
		api.WriteError(w, r, fhir.Errorf(http.StatusBadRequest, "not-supported",
			"_typeFilter is not supported by this server yet (search is not available); it is refused rather than ignored, which would export more than asked for").AtPath("_typeFilter"))
		return
	}
	for typ, queries := range req.TypeFilters {
		for _, q := range queries {
			// Check the query with the search engine now, so that a bad
			// filter is a 400 here rather than a failed export later.
			v, _ := url.ParseQuery(q)
			if _, err := s.Matcher().Match(ctx, typ, v, 1); err != nil {
				if fe := fhir.AsError(err); fe.Status < 500 {
					err = fhir.BadRequest("_typeFilter %s?%s: %s", typ, q, outcomeText(fe)).AtPath("_typeFilter")
				}
				api.WriteError(w, r, err)
				return
			}
		}
	}
	if err := s.authorizeTypes(p, req); err != nil {
		api.WriteError(w, r, err)
		return
	}
	pid := p.Patient()
	req.Owner, req.Patient = p.Subject(), pid
	switch level {
	case LevelSystem:
		if pid != "" {
			req.Confined, req.Members = true, []string{pid}
		}
	case LevelPatient:
		switch {
		case len(patients) > 0:
			for _, m := range patients {
				if pid != "" && m != pid {
					api.WriteError(w, r, fhir.Forbidden("the access token is limited to Patient/%s and cannot export Patient/%s", pid, m).AtPath("patient"))
					return
				}
			}
			req.Confined, req.Members = true, patients
		case pid != "":
			req.Confined, req.Members = true, []string{pid}
		}
	case LevelGroup:
		members, err := s.groupMembers(ctx, id)
		if err != nil {
			api.WriteError(w, r, err)
			return
		}
		if len(patients) > 0 {
			for _, m := range patients {
				if !slices.Contains(members, m) {
					api.WriteError(w, r, fhir.BadRequest("Patient/%s is not a member of Group/%s", m, id).AtPath("patient"))
					return
				}
			}
			members = patients
		}
		if pid != "" {
			if slices.Contains(members, pid) {
				members = []string{pid}
			} else {
				members = nil
			}
		}
		req.Group, req.Confined, req.Members = id, true, members
	}
	req.URL = s.root + r.URL.RequestURI()
	var active int
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM job WHERE kind = ? AND owner = ? AND state IN ('queued', 'running')`, JobKind, req.Owner).Scan(&active); err != nil {
		api.WriteError(w, r, fmt.Errorf("count active exports: %w", err))
		return
	}
	if active >= s.opts().MaxActive {
		w.Header().Set("Retry-After", "5")
		api.WriteError(w, r, fhir.Errorf(http.StatusTooManyRequests, "throttled", "%d of your exports are already queued or running (the most allowed); wait for them to finish or cancel one", active))
		return
	}
	job, err := s.enqueue(ctx, req)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	w.Header().Set("Content-Location", s.base+statusPath+job.ID)
	body := fhir.OutcomeJSON([]fhir.Issue{{Severity: "information", Code: "informational", Diagnostics: "export " + job.ID + " accepted; poll the Content-Location URL for its status"}})
	w.Header().Set("Content-Type", "application/fhir+json; charset=utf-8")
	w.WriteHeader(http.StatusAccepted)
	w.Write(body)
}

// authorizeTypes narrows req.Types to what p may read: types asked for
// that p may not read are refused (403); without _type, every type p may
// read but AuditEvent is exported (none: 403).
func (s *Service) authorizeTypes(p access.Principal, req *Request) error {
	readable := func(t string) bool {
		if !p.Allows(access.Read, t) {
			return false
		}
		filters := p.Filters(t)
		if len(filters) == 0 {
			return true
		}
		if s.Matcher() == nil {
			return false // the scope's filters could not be applied
		}
		if req.ScopeFilters == nil {
			req.ScopeFilters = map[string][]string{}
		}
		for _, f := range filters {
			req.ScopeFilters[t] = append(req.ScopeFilters[t], f.Encode())
		}
		return true
	}
	if len(req.Types) > 0 {
		for _, t := range req.Types {
			if !readable(t) {
				return fhir.Forbidden("the access token does not allow reading all of %s (export needs system/%s.read or .rs, or patient/ for one's own record)", t, t).AtPath("_type")
			}
		}
		return nil
	}
	for _, t := range r4.ResourceTypes() {
		// AuditEvents (one per FHIR access, written by the audit log) are
		// exported only when _type names them.
		if t != "AuditEvent" && readable(t) {
			req.Types = append(req.Types, t)
		}
	}
	if len(req.Types) == 0 {
		return fhir.Forbidden("the access token allows reading no resource type; $export needs a scope such as system/*.read or system/*.rs")
	}
	return nil
}

// groupMembers reads the Group (with the caller's access) and returns its
// active Patient members.
func (s *Service) groupMembers(ctx context.Context, id string) ([]string, error) {
	res, err := s.records.Read(ctx, "Group", id)
	if err != nil {
		return nil, err
	}
	var g struct {
		Member []struct {
			Entity struct {
				Reference string `json:"reference"`
			} `json:"entity"`
			Inactive bool `json:"inactive"`
		} `json:"member"`
	}
	if err := json.Unmarshal(res.JSON, &g); err != nil {
		return nil, fmt.Errorf("read Group/%s: %w", id, err)
	}
	var out []string
	for _, m := range g.Member {
		if m.Inactive {
			continue
		}
		ref, ok := fhir.ParseReference(m.Entity.Reference)
		if !ok || ref.Type != "Patient" || slices.Contains(out, ref.ID) {
			continue
		}
		out = append(out, ref.ID)
	}
	return out, nil
}

// enqueue stores the members and queues the job.
func (s *Service) enqueue(ctx context.Context, req *Request) (*jobs.Job, error) {
	params, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	id := fhir.NewID()
	if len(req.Members) > 0 {
		err := s.db.WriteTx(ctx, func(tx *sqldb.Tx) error {
			for _, m := range req.Members {
				if _, err := tx.Exec(ctx, `INSERT INTO bulk_member (job, patient) VALUES (?, ?) ON CONFLICT (job, patient) DO NOTHING`, id, m); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("store export members: %w", err)
		}
	}
	return s.queue.EnqueueID(ctx, id, JobKind, req.Owner, params)
}

// job loads an export the caller may see; other callers' exports are
// reported missing.
func (s *Service) job(ctx context.Context, p access.Principal, id string) (*jobs.Job, *Request, error) {
	notFound := fhir.NotFound("no export %s is known (it may have expired, been cancelled, or never existed)", id)
	j, err := s.queue.Get(ctx, id)
	if errors.Is(err, jobs.ErrNotFound) {
		return nil, nil, notFound
	}
	if err != nil {
		return nil, nil, err
	}
	var req Request
	if j.Kind != JobKind || json.Unmarshal(j.Params, &req) != nil {
		return nil, nil, notFound
	}
	if req.Owner != p.Subject() || req.Patient != p.Patient() {
		return nil, nil, notFound
	}
	switch {
	case j.State == jobs.Cancelled:
		return nil, nil, fhir.NotFound("export %s was cancelled", id)
	case j.State == jobs.Done && !j.Expires.IsZero() && time.Now().After(j.Expires):
		return nil, nil, fhir.NotFound("export %s expired at %s", id, fhir.FormatInstant(j.Expires))
	}
	return j, &req, nil
}

// status answers GET [status URL].
func (s *Service) status(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	id := r.PathValue("job")
	j, req, err := s.job(r.Context(), p, id)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	if wait := s.tooFast(id); wait > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		api.WriteError(w, r, fhir.Errorf(http.StatusTooManyRequests, "throttled", "export status polled too often: wait %s between polls (see Retry-After)", s.opts().MinPoll))
		return
	}
	switch j.State {
	case jobs.Queued, jobs.Running:
		var prog progress
		if len(j.Progress) > 0 {
			json.Unmarshal(j.Progress, &prog)
		}
		pct := 0
		if prog.Total > 0 {
			pct = int(min(99, prog.Done*100/prog.Total))
		}
		text := "queued"
		if j.State == jobs.Running {
			text = fmt.Sprintf("%d%% (%d/%d)", pct, prog.Done, prog.Total)
		}
		w.Header().Set("X-Progress", text)
		w.Header().Set("Retry-After", strconv.Itoa(s.retryAfter()))
		body, _ := json.Marshal(map[string]any{"status": "in_progress", "progress": pct, "totalResources": prog.Total, "processedResources": prog.Done})
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		w.Write(body)
	case jobs.Failed:
		// The cause (in the server log and the job row) may name internal
		// systems; the client learns that the export failed and its id.
		api.WriteError(w, r, fhir.Errorf(http.StatusInternalServerError, "exception", "export %s failed after %d attempt(s); the server log has the cause; start a new export", id, j.Attempts))
	case jobs.Done:
		m, err := s.manifest(r.Context(), j, req)
		if err != nil {
			api.WriteError(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Expires", j.Expires.UTC().Format(http.TimeFormat))
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		w.Write(m)
	default:
		api.WriteError(w, r, fmt.Errorf("export %s is in unknown state %q", id, j.State))
	}
}

// retryAfter is the polling interval suggested to clients, in seconds.
func (s *Service) retryAfter() int {
	return int(min(5, max(1, math.Ceil(s.opts().MinPoll.Seconds()))))
}

// tooFast records a poll of job id and returns how long the caller should
// have waited when it came sooner than MinPoll after the previous one.
func (s *Service) tooFast(id string) time.Duration {
	minPoll := s.opts().MinPoll
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if len(s.lastPoll) > 10000 {
		for k, t := range s.lastPoll {
			if now.Sub(t) > time.Minute {
				delete(s.lastPoll, k)
			}
		}
	}
	last, ok := s.lastPoll[id]
	if ok && now.Sub(last) < minPoll {
		return minPoll - now.Sub(last)
	}
	s.lastPoll[id] = now
	return 0
}

// manifestItem is one entry of output, deleted or error.
type manifestItem struct {
	Type      string         `json:"type"`
	URL       string         `json:"url"`
	Count     int64          `json:"count,omitempty"`
	Extension map[string]any `json:"extension,omitempty"`
}

// manifest renders the completion manifest.
func (s *Service) manifest(ctx context.Context, j *jobs.Job, req *Request) ([]byte, error) {
	rows, err := s.db.Query(ctx, `SELECT name, kind, type, count, size, cid FROM bulk_file WHERE job = ? ORDER BY kind, type, name`, j.ID)
	if err != nil {
		return nil, fmt.Errorf("list export files: %w", err)
	}
	defer rows.Close()
	output, deleted, errs := []manifestItem{}, []manifestItem{}, []manifestItem{}
	type row struct {
		name, kind, typ, cid string
		count, size          int64
	}
	var all []row
	for rows.Next() {
		var f row
		if err := rows.Scan(&f.name, &f.kind, &f.typ, &f.count, &f.size, &f.cid); err != nil {
			return nil, fmt.Errorf("list export files: %w", err)
		}
		all = append(all, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list export files: %w", err)
	}
	// Files in the order they were written within a type (Type-2 after Type-1... Type-10).
	slices.SortStableFunc(all, func(a, b row) int {
		if c := strings.Compare(a.kind+"/"+a.typ, b.kind+"/"+b.typ); c != 0 {
			return c
		}
		return len(a.name) - len(b.name)
	})
	for _, f := range all {
		it := manifestItem{Type: f.typ, URL: s.base + filePath + j.ID + "/" + f.name, Count: f.count,
			Extension: map[string]any{"cid": f.cid, "ipfs": "ipfs://" + f.cid, "gateway": s.root + ipfsPath + f.cid, "size": f.size}}
		switch f.kind {
		case kindOutput:
			output = append(output, it)
		case kindDeleted:
			deleted = append(deleted, it)
		default:
			errs = append(errs, it)
		}
	}
	m := map[string]any{
		"transactionTime":     fhir.FormatInstant(req.TransactionTime),
		"request":             req.URL,
		"requiresAccessToken": true,
		"output":              output,
		"deleted":             deleted,
		"error":               errs,
	}
	return json.Marshal(m)
}

// cancel answers DELETE [status URL].
func (s *Service) cancel(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	id := r.PathValue("job")
	j, _, err := s.job(r.Context(), p, id)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	if _, err := s.queue.Cancel(r.Context(), id); err != nil {
		api.WriteError(w, r, err)
		return
	}
	if j.State == jobs.Done {
		// The files of a finished export go at once; the row stays (as
		// cancelled, answering 404) until the sweep.
		if err := s.remove(r.Context(), id, j.Progress); err != nil {
			api.WriteError(w, r, err)
			return
		}
	}
	body := fhir.OutcomeJSON([]fhir.Issue{{Severity: "information", Code: "informational", Diagnostics: "export " + id + " cancelled"}})
	w.Header().Set("Content-Type", "application/fhir+json; charset=utf-8")
	w.WriteHeader(http.StatusAccepted)
	w.Write(body)
}

// file answers GET [file URL].
func (s *Service) file(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	id, name := r.PathValue("job"), r.PathValue("name")
	j, _, err := s.job(r.Context(), p, id)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	if j.State != jobs.Done {
		api.WriteError(w, r, fhir.NotFound("export %s is not complete", id))
		return
	}
	var kind, typ, key, c string
	var size int64
	err = s.db.QueryRow(r.Context(), `SELECT kind, type, blob_key, size, cid FROM bulk_file WHERE job = ? AND name = ?`, id, name).Scan(&kind, &typ, &key, &size, &c)
	if errors.Is(err, sql.ErrNoRows) {
		api.WriteError(w, r, fhir.NotFound("export %s has no file %s", id, name))
		return
	}
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	s.serveFile(w, r, p, kind, typ, key, size, c)
}

// byCID answers GET /ipfs/[cid]: an export file by its content address,
// for a caller who may read one of the exports holding it.
func (s *Service) byCID(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	c := r.PathValue("cid")
	if !cid.Valid(c) {
		api.WriteError(w, r, fhir.BadRequest("%q is not a CIDv1 raw sha2-256 in base32 (bafkrei...)", c))
		return
	}
	rows, err := s.db.Query(r.Context(), `SELECT job, kind, type, blob_key, size FROM bulk_file WHERE cid = ?`, c)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	type hit struct {
		job, kind, typ, key string
		size                int64
	}
	var hits []hit
	for rows.Next() {
		var h hit
		if err := rows.Scan(&h.job, &h.kind, &h.typ, &h.key, &h.size); err != nil {
			rows.Close()
			api.WriteError(w, r, err)
			return
		}
		hits = append(hits, h)
	}
	rows.Close()
	for _, h := range hits {
		if j, _, err := s.job(r.Context(), p, h.job); err == nil && j.State == jobs.Done {
			s.serveFile(w, r, p, h.kind, h.typ, h.key, h.size, c)
			return
		}
	}
	api.WriteError(w, r, fhir.NotFound("no export file you may read has CID %s", c))
}

// serveFile streams an export file. Files are stored gzip-compressed:
// clients that accept gzip get them as stored, others decompressed.
func (s *Service) serveFile(w http.ResponseWriter, r *http.Request, p access.Principal, kind, typ, key string, size int64, c string) {
	if kind == kindOutput && !p.Allows(access.Read, typ) {
		api.WriteError(w, r, fhir.Forbidden("the access token does not allow reading %s", typ))
		return
	}
	rc, stored, err := s.blobs.Get(r.Context(), key)
	if err != nil {
		api.WriteError(w, r, fmt.Errorf("open export file: %w", err))
		return
	}
	defer rc.Close()
	h := w.Header()
	h.Set("Content-Type", "application/fhir+ndjson")
	h.Set("Cache-Control", "private, no-store")
	h.Set("Vary", "Accept-Encoding")
	if acceptsGzip(r) {
		h.Set("Content-Encoding", "gzip")
		h.Set("ETag", `"`+c+`-gzip"`)
		h.Set("Content-Length", strconv.FormatInt(stored, 10))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			io.Copy(w, rc)
		}
		return
	}
	zr, err := gzip.NewReader(rc)
	if err != nil {
		api.WriteError(w, r, fmt.Errorf("open export file: %w", err))
		return
	}
	h.Set("ETag", `"`+c+`"`)
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		io.Copy(w, zr)
	}
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.TrimSpace(enc) == "gzip" {
			return !strings.Contains(strings.ReplaceAll(params, " ", ""), "q=0") || strings.Contains(params, "q=0.")
		}
	}
	return false
}

// progressKeys returns the blob keys an attempt recorded in its progress.
func progressKeys(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	var p progress
	if json.Unmarshal(b, &p) != nil {
		return nil
	}
	return p.Keys
}

// outcomeText joins the diagnostics of an error's issues.
func outcomeText(e *fhir.Error) string {
	var parts []string
	for _, is := range e.Issues {
		parts = append(parts, is.Diagnostics)
	}
	return strings.Join(parts, "; ")
}
