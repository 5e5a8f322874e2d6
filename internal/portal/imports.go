package portal

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/phr-project/phr/internal/fhir"
)

// The import pages sit over the importer's operations: POST
// [base]/Bundle/$import (streamed through, per-line report as NDJSON),
// [base]/$import-batches, [base]/$import-quarantine, [base]/$conflicts and
// [base]/$resolve-conflict.

func (p *Portal) importRoutes(m *http.ServeMux) {
	m.Handle("GET /p/{pid}/import", p.patientPage(p.importPage))
	m.Handle("POST /p/{pid}/import/upload", p.patientPage(p.importUpload))
	m.Handle("GET /p/{pid}/import/{batch}", p.patientPage(p.importBatch))
	m.Handle("GET /p/{pid}/conflicts", p.patientPage(p.conflictList))
	m.Handle("GET /p/{pid}/conflicts/{id}", p.patientPage(p.conflictPage))
	m.Handle("POST /p/{pid}/conflicts/{id}", p.patientPage(p.conflictResolve))
}

func (p *Portal) require(q *req, op, what string) error {
	if !p.operations(q)[op] {
		return fhir.Errorf(http.StatusNotFound, "not-supported", "this server does not offer %s", what)
	}
	return nil
}

// params reads a Parameters resource into name -> values (a part list
// becomes a nested map).
type param struct {
	Name  string
	Value string
	Res   obj
	Parts []param
}

func readParams(o obj) []param {
	var out []param
	for _, p := range o.list("parameter") {
		out = append(out, readParam(p))
	}
	return out
}

func readParam(p obj) param {
	x := param{Name: p.str("name")}
	for k := range p {
		if strings.HasPrefix(k, "value") {
			x.Value = p.str(k)
		}
	}
	x.Res = p.obj("resource")
	for _, pp := range p.list("part") {
		x.Parts = append(x.Parts, readParam(pp))
	}
	return x
}

// fields flattens a parameter's parts into name -> value (first wins).
func (x param) fields() map[string]string {
	m := map[string]string{}
	for _, p := range x.Parts {
		if _, ok := m[p.Name]; !ok {
			m[p.Name] = p.Value
		}
	}
	return m
}

func (x param) part(name string) *param {
	for i := range x.Parts {
		if x.Parts[i].Name == name {
			return &x.Parts[i]
		}
	}
	return nil
}

// importPage shows the upload form and the import history.
func (p *Portal) importPage(q *req) error {
	if err := p.require(q, "import", "imports"); err != nil {
		return err
	}
	data := map[string]any{"Title": "Import", "AllPatients": q.sess.Admin()}
	if p.operations(q)["import-batches"] {
		b, _, err := q.api.get("$import-batches")
		if err != nil {
			data["HistoryError"] = fhir.AsError(err).Error()
		}
		var rows []map[string]string
		for _, x := range readParams(b) {
			if x.Name == "batch" {
				rows = append(rows, x.fields())
			}
		}
		data["Batches"] = rows
	}
	return p.render(q, http.StatusOK, "import", data)
}

// importTypes are the Content-Types an upload may declare; the importer
// reads each as it says.
var importTypes = map[string]bool{
	"application/x-ndjson": true, "application/fhir+ndjson": true, "application/ndjson": true,
	"application/fhir+json": true, "application/json": true,
	"application/zip": true, "application/octet-stream": true,
	"application/smart-health-card": true,
}

// importUpload streams an upload (the raw file as the request body, sent
// by the page's script) to $import and the importer's per-line NDJSON
// report back to the page as it is written. The .sphr passphrase travels
// in the X-PHR-Passphrase header, never in a URL.
func (p *Portal) importUpload(q *req) error {
	if err := p.require(q, "import", "imports"); err != nil {
		return err
	}
	ct, _, err := mime.ParseMediaType(q.r.Header.Get("Content-Type"))
	if err != nil || !importTypes[ct] {
		return fhir.Errorf(http.StatusUnsupportedMediaType, "not-supported", "Content-Type %q cannot be imported: send NDJSON (.phr, .ndjson), a FHIR Bundle (.json), a SMART Health Card (.smart-health-card) or a zip (.sphr, .zip)", q.r.Header.Get("Content-Type"))
	}
	in := q.r.URL.Query()
	aq := url.Values{}
	name := strings.TrimSpace(in.Get("filename"))
	if name == "" {
		return fhir.BadRequest("filename: the name of the uploaded file is required")
	}
	aq.Set("filename", name)
	if s := strings.TrimSpace(in.Get("source")); s != "" {
		aq.Set("source", s)
	}
	if m := in.Get("mode"); m == "validate" {
		aq.Set("mode", m)
	} else if m != "" {
		return fhir.BadRequest("mode: %q is not validate", m)
	}
	h := http.Header{"Content-Type": {ct}, "Accept": {"application/x-ndjson"}}
	if pass := q.r.Header.Get("X-PHR-Passphrase"); pass != "" {
		h.Set("X-PHR-Passphrase", pass)
	}
	if q.r.ContentLength >= 0 {
		h.Set("Content-Length", strconv.FormatInt(q.r.ContentLength, 10))
	}
	q.w.Header().Set("Cache-Control", "no-store")
	return q.api.stream(q.w, http.MethodPost, "/fhir/Bundle/$import?"+aq.Encode(), q.r.Body, h)
}

// importBatch shows one import: its counts, the versions it wrote and
// the lines it rejected.
func (p *Portal) importBatch(q *req) error {
	if err := p.require(q, "import-batches", "the import log"); err != nil {
		return err
	}
	id := q.r.PathValue("batch")
	if n, err := strconv.ParseInt(id, 10, 64); err != nil || n < 1 {
		return fhir.NotFound("%q is not an import batch number", id)
	}
	b, _, err := q.api.get("$import-batches?batch=" + id)
	if err != nil {
		return err
	}
	var batch map[string]string
	type wrote struct{ Ref, Link, Kind string }
	var writes []wrote
	for _, x := range readParams(b) {
		switch x.Name {
		case "batch":
			batch = x.fields()
		case "wrote", "deleted":
			ref := x.Value // Type/id/_history/n
			writes = append(writes, wrote{Ref: ref, Link: resourceLink(q.pid, ref), Kind: x.Name})
		}
	}
	type rejected struct{ File, Line, Text, Reason string }
	var rej []rejected
	rejErr := ""
	if p.operations(q)["import-quarantine"] {
		qb, _, err := q.api.get("$import-quarantine?batch=" + id)
		if err != nil {
			rejErr = fhir.AsError(err).Error()
		}
		for _, x := range readParams(qb) {
			if x.Name != "rejected" {
				continue
			}
			f := x.fields()
			var reasons []string
			if rp := x.part("reason"); rp != nil && rp.Res != nil {
				for _, is := range rp.Res.list("issue") {
					d := is.str("diagnostics")
					if e := is.str("expression", 0); e != "" {
						d += " (at " + e + ")"
					}
					reasons = append(reasons, d)
				}
			}
			text := f["text"]
			if len(text) > 500 {
				text = text[:500] + "…"
			}
			line := f["line"]
			if e, ok := f["entry"]; ok {
				line += ", Bundle.entry[" + e + "]"
			}
			rej = append(rej, rejected{File: f["file"], Line: line, Text: text, Reason: strings.Join(reasons, "; ")})
		}
	}
	return p.render(q, http.StatusOK, "batch", map[string]any{
		"Title": "Import " + id, "Batch": batch, "Writes": writes, "Rejected": rej, "RejectedError": rejErr,
	})
}

// conflictList lists open (or resolved, or all) conflicts.
func (p *Portal) conflictList(q *req) error {
	if err := p.require(q, "conflicts", "conflict resolution"); err != nil {
		return err
	}
	status := q.r.URL.Query().Get("status")
	if status == "" {
		status = "open"
	}
	if status != "open" && status != "resolved" && status != "all" {
		return fhir.BadRequest("status: %q is not open, resolved or all", status)
	}
	b, _, err := q.api.get("$conflicts?status=" + status)
	if err != nil {
		return err
	}
	var rows []map[string]string
	for _, x := range readParams(b) {
		if x.Name != "conflict" {
			continue
		}
		f := x.fields()
		f["Link"] = "/p/" + url.PathEscape(q.pid) + "/conflicts/" + url.PathEscape(f["id"])
		f["ResourceLink"] = resourceLink(q.pid, f["resource"])
		rows = append(rows, f)
	}
	return p.render(q, http.StatusOK, "conflicts", map[string]any{"Title": "Conflicts", "Rows": rows, "Status": status, "AllPatients": q.sess.Admin()})
}

// conflictPage shows both sides of a conflict with their sources, the
// differences, and the three ways to resolve it.
func (p *Portal) conflictPage(q *req) error {
	if err := p.require(q, "conflicts", "conflict resolution"); err != nil {
		return err
	}
	id := q.r.PathValue("id")
	if n, err := strconv.ParseInt(id, 10, 64); err != nil || n < 1 {
		return fhir.NotFound("%q is not a conflict number", id)
	}
	b, _, err := q.api.get("$conflicts?id=" + id)
	if err != nil {
		return err
	}
	var c *param
	for _, x := range readParams(b) {
		if x.Name == "conflict" {
			c = &x
			break
		}
	}
	if c == nil {
		return fhir.NotFound("conflict %s is not known", id)
	}
	f := c.fields()
	var cur, in obj
	if x := c.part("current"); x != nil {
		cur = x.Res
	}
	if x := c.part("incoming"); x != nil {
		in = x.Res
	}
	rawOf := func(o obj) string {
		if o == nil {
			return ""
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if enc.Encode(map[string]any(o)) != nil {
			return ""
		}
		return buf.String()
	}
	var diff []change
	if cur != nil && in != nil {
		diff = diffJSON(withoutMeta(cur), withoutMeta(in))
	}
	data := map[string]any{
		"Title": "Conflict " + id, "ID": id, "C": f, "ResourceLink": resourceLink(q.pid, f["resource"]),
		"Diff": diff, "CurrentRaw": rawOf(cur), "IncomingRaw": rawOf(in),
	}
	if cur != nil {
		data["Current"] = readable(q.pid, cur)
	}
	if in != nil {
		data["Incoming"] = readable(q.pid, in)
	}
	return p.render(q, http.StatusOK, "conflict", data)
}

// withoutMeta drops meta (versionId, lastUpdated, source differ by nature)
// for comparing two sides.
func withoutMeta(o obj) obj {
	c := obj{}
	for k, v := range o {
		if k != "meta" {
			c[k] = v
		}
	}
	return c
}

// conflictResolve resolves a conflict: keep the current version, take
// the incoming one, or write the edited merge; then shows the resource.
func (p *Portal) conflictResolve(q *req) error {
	if err := p.require(q, "resolve-conflict", "conflict resolution"); err != nil {
		return err
	}
	id := q.r.PathValue("id")
	if n, err := strconv.ParseInt(id, 10, 64); err != nil || n < 1 {
		return fhir.NotFound("%q is not a conflict number", id)
	}
	action := q.r.PostFormValue("action")
	var body io.Reader
	h := http.Header{}
	switch action {
	case "keep", "take":
	case "merge":
		m := strings.TrimSpace(q.r.PostFormValue("merged"))
		if m == "" {
			return fhir.BadRequest("merged: write the merged resource (JSON) to resolve with a merge")
		}
		if _, err := decode([]byte(m)); err != nil {
			return fhir.BadRequest("merged: the merged resource is not valid JSON: %v", err)
		}
		body = strings.NewReader(m)
		h.Set("Content-Type", "application/fhir+json")
	default:
		return fhir.BadRequest("action: %q is not keep, take or merge", action)
	}
	res, err := q.api.do(http.MethodPost, "$resolve-conflict?"+url.Values{"id": {id}, "action": {action}}.Encode(), body, h)
	if err != nil {
		return err
	}
	o, err := decode(res.Body)
	if err != nil {
		return err
	}
	http.Redirect(q.w, q.r, resourceLink(q.pid, o.ref())+"?resolved="+url.QueryEscape(id), http.StatusSeeOther)
	return nil
}
