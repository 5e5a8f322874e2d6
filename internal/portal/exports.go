package portal

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/jobs"
)

// ExportJobs lists the bulk export jobs for the admin exports page (the
// job queue; the jobs' manifests and files are read through the API).
type ExportJobs interface {
	List(ctx context.Context, kind string, states []jobs.State, expiresBefore time.Time, limit int) ([]*jobs.Job, error)
}

// bulkJobKind is the queue kind of bulk exports (bulk.JobKind).
const bulkJobKind = "bulk-export"

func (p *Portal) exportRoutes(m *http.ServeMux) {
	if p.o.Exports == nil {
		return
	}
	m.Handle("GET /manage/exports", p.adminPage(p.exportJobs))
	m.Handle("POST /manage/exports", p.adminPage(p.exportKickoff))
	m.Handle("GET /manage/exports/{job}", p.adminPage(p.exportJob))
	m.Handle("POST /manage/exports/{job}/cancel", p.adminPage(p.exportCancel))
	m.Handle("GET /manage/exports/{job}/file/{name}", p.adminPage(p.exportFile))
}

func (p *Portal) exportJobs(q *req) error {
	list, err := p.o.Exports.List(q.r.Context(), bulkJobKind, nil, time.Time{}, 200)
	if err != nil {
		return err
	}
	type row struct{ ID, State, Owner, Created, Finished, Expires, Error string }
	var rows []row
	for i := len(list) - 1; i >= 0; i-- { // newest first
		j := list[i]
		r := row{ID: j.ID, State: string(j.State), Owner: j.Owner, Created: fhir.FormatInstant(j.Created), Error: j.Error}
		if !j.Finished.IsZero() {
			r.Finished = fhir.FormatInstant(j.Finished)
		}
		if !j.Expires.IsZero() {
			r.Expires = fhir.FormatInstant(j.Expires)
		}
		rows = append(rows, r)
	}
	return p.render(q, http.StatusOK, "exports", map[string]any{"Title": "Bulk exports", "Jobs": rows, "Types": exportTypes})
}

// exportKickoff starts a bulk export ($export at the system or the
// all-patients level) and shows its status page.
func (p *Portal) exportKickoff(q *req) error {
	f := q.r.PostForm
	aq := url.Values{"_outputFormat": {"application/fhir+ndjson"}}
	var types []string
	for _, t := range f["type"] {
		if !contains(exportTypes, t) && t != "Patient" {
			return fhir.BadRequest("type: %q is not one of the offered types", t)
		}
		types = append(types, t)
	}
	if len(types) > 0 {
		aq.Set("_type", strings.Join(types, ","))
	}
	if s := strings.TrimSpace(f.Get("since")); s != "" {
		if _, err := time.Parse("2006-01-02", s); err != nil {
			return fhir.BadRequest("since: %q is not a date (YYYY-MM-DD)", s)
		}
		aq.Set("_since", s+"T00:00:00Z")
	}
	base := "$export"
	if f.Get("level") == "patient" {
		base = "Patient/$export"
	}
	res, err := q.api.do(http.MethodGet, base+"?"+aq.Encode(), nil, http.Header{"Accept": {"application/fhir+json"}, "Prefer": {"respond-async"}})
	if err != nil {
		return err
	}
	loc := res.Header.Get("Content-Location")
	if res.Status != http.StatusAccepted || loc == "" {
		return fhir.Errorf(http.StatusBadGateway, "exception", "the export did not start (status %d)", res.Status)
	}
	http.Redirect(q.w, q.r, "/manage/exports/"+url.PathEscape(path.Base(loc)), http.StatusSeeOther)
	return nil
}

// exportJob shows a job's status, and its files when it is done.
func (p *Portal) exportJob(q *req) error {
	id := q.r.PathValue("job")
	if !fhir.ValidID(id) {
		return fhir.NotFound("%q is not an export id", id)
	}
	data := map[string]any{"Title": "Export " + id, "ID": id}
	res, err := q.api.do(http.MethodGet, "/fhir/$export-status/"+url.PathEscape(id), nil, http.Header{"Accept": {"application/json"}})
	switch {
	case err != nil && fhir.AsError(err).Status == http.StatusTooManyRequests:
		data["State"], data["Refresh"] = "in progress (asked again too soon)", 5
	case err != nil:
		fe := fhir.AsError(err)
		if fe.Status == http.StatusNotFound || fe.Status == http.StatusForbidden {
			return err
		}
		data["State"], data["Error"] = "failed", fe.Error()
	case res.Status == http.StatusAccepted:
		data["State"], data["Progress"], data["Refresh"] = "in progress", res.Header.Get("X-Progress"), 3
	default:
		var m struct {
			TransactionTime string `json:"transactionTime"`
			Output          []struct {
				Type  string `json:"type"`
				URL   string `json:"url"`
				Count int64  `json:"count"`
			} `json:"output"`
			Error []struct {
				URL string `json:"url"`
			} `json:"error"`
		}
		if err := json.Unmarshal(res.Body, &m); err != nil {
			return fhir.Errorf(http.StatusBadGateway, "exception", "the export manifest could not be read: %v", err)
		}
		type file struct {
			Type, Name, Link string
			Count            int64
		}
		var files []file
		for _, o := range m.Output {
			name := path.Base(o.URL)
			files = append(files, file{o.Type, name, "/manage/exports/" + url.PathEscape(id) + "/file/" + url.PathEscape(name), o.Count})
		}
		for _, o := range m.Error {
			name := path.Base(o.URL)
			files = append(files, file{"OperationOutcome (errors)", name, "/manage/exports/" + url.PathEscape(id) + "/file/" + url.PathEscape(name), 0})
		}
		data["State"], data["Files"], data["TransactionTime"] = "done", files, m.TransactionTime
	}
	return p.render(q, http.StatusOK, "exportjob", data)
}

// exportFile streams one file of a finished export to the browser.
func (p *Portal) exportFile(q *req) error {
	id, name := q.r.PathValue("job"), q.r.PathValue("name")
	if !fhir.ValidID(id) || strings.ContainsAny(name, "/\\") || name == "" {
		return fhir.NotFound("no such export file")
	}
	q.w.Header().Set("Content-Disposition", `attachment; filename="`+strings.ReplaceAll(id+"-"+name, `"`, "")+`"`)
	return q.api.stream(q.w, http.MethodGet, "/fhir/$export-file/"+url.PathEscape(id)+"/"+url.PathEscape(name), nil, http.Header{"Accept": {"application/fhir+ndjson"}})
}

// exportCancel cancels a running export or deletes a finished one.
func (p *Portal) exportCancel(q *req) error {
	id := q.r.PathValue("job")
	if !fhir.ValidID(id) {
		return fhir.NotFound("%q is not an export id", id)
	}
	if _, err := q.api.do(http.MethodDelete, "/fhir/$export-status/"+url.PathEscape(id), nil, nil); err != nil {
		return err
	}
	http.Redirect(q.w, q.r, "/manage/exports", http.StatusSeeOther)
	return nil
}
