package portal

import (
	"bytes"
	"encoding/json"
	"html/template"
	"net/http"
	"net/url"
	"strings"

	"github.com/phr-project/phr/internal/fhir"
)

// The share pages sit over the SMART Health Links management API (/shl):
// create a link (what, label, passcode, expiry), show its QR code and link
// once, list the links with their access logs, revoke.

func (p *Portal) shareRoutes(m *http.ServeMux) {
	m.Handle("GET /p/{pid}/share", p.patientPage(p.sharePage))
	m.Handle("POST /p/{pid}/share", p.patientPage(p.shareCreate))
	m.Handle("GET /p/{pid}/share/{id}", p.patientPage(p.shareLink))
	m.Handle("POST /p/{pid}/share/{id}/revoke", p.patientPage(p.shareRevoke))
}

// shlLink is a link as the management API describes it.
type shlLink struct {
	ID                string `json:"id"`
	Patient           string `json:"patient"`
	Label             string `json:"label"`
	Flag              string `json:"flag"`
	Passcode          bool   `json:"passcode"`
	RemainingAttempts *int   `json:"remainingAttempts"`
	Expires           string `json:"expires"`
	Status            string `json:"status"`
	Created           string `json:"created"`
	Files             []struct {
		ContentType string `json:"contentType"`
		Content     struct {
			Kind  string   `json:"kind"`
			Types []string `json:"_type"`
			From  string   `json:"from"`
			To    string   `json:"to"`
		} `json:"content"`
		LastUpdated string `json:"lastUpdated"`
	} `json:"files"`
	Link       string `json:"link"`
	ViewerLink string `json:"viewerLink"`
	QR         *struct {
		PNG string `json:"png"`
	} `json:"qr"`
}

// What says in words what a link shares.
func (l shlLink) What() string {
	var parts []string
	for _, f := range l.Files {
		c := f.Content
		switch c.Kind {
		case "summary":
			parts = append(parts, "emergency summary")
		case "file":
			parts = append(parts, "an uploaded file")
		default:
			s := "the record"
			if len(c.Types) > 0 {
				s = strings.Join(c.Types, ", ")
			}
			if c.From != "" || c.To != "" {
				s += " (" + c.From + " – " + c.To + ")"
			}
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, "; ")
}

// shlAvailable reports whether the server offers the SHL management API.
func (p *Portal) shlAvailable(q *req) bool {
	p.shlOnce.Do(func() {
		res, err := q.api.do(http.MethodGet, "/shl/links?patient="+url.QueryEscape(q.pid), nil, http.Header{"Accept": {"application/json"}})
		p.shl = err == nil && strings.HasPrefix(res.Header.Get("Content-Type"), "application/json")
	})
	return p.shl
}

func (p *Portal) shareLinks(q *req) ([]shlLink, error) {
	res, err := q.api.do(http.MethodGet, "/shl/links?patient="+url.QueryEscape(q.pid), nil, http.Header{"Accept": {"application/json"}})
	if err != nil {
		return nil, err
	}
	var out struct {
		Links []shlLink `json:"links"`
	}
	if err := json.Unmarshal(res.Body, &out); err != nil {
		return nil, fhir.Errorf(http.StatusBadGateway, "exception", "the link list could not be read: %v", err)
	}
	return out.Links, nil
}

func (p *Portal) sharePage(q *req) error {
	if !p.shlAvailable(q) {
		return fhir.Errorf(http.StatusNotFound, "not-supported", "this server does not offer SMART Health Links")
	}
	links, err := p.shareLinks(q)
	data := map[string]any{"Title": "Share", "Links": links, "Types": exportTypes}
	if err != nil {
		data["Error"] = fhir.AsError(err).Error()
	}
	return p.render(q, http.StatusOK, "share", data)
}

// shareCreate makes a link and shows it once, with its QR code: the key
// is inside the link and the server does not keep it.
func (p *Portal) shareCreate(q *req) error {
	f := q.r.PostForm
	label := strings.TrimSpace(f.Get("label"))
	if len([]rune(label)) > 80 {
		return fhir.BadRequest("label: at most 80 characters")
	}
	sel := map[string]any{}
	switch what := f.Get("what"); what {
	case "summary":
		sel["kind"] = "summary"
	case "record":
		sel["kind"] = "record"
		var types []string
		for _, t := range f["type"] {
			if !contains(exportTypes, t) {
				return fhir.BadRequest("type: %q is not one of the offered types", t)
			}
			types = append(types, t)
		}
		if len(types) > 0 {
			sel["_type"] = types
		}
		if v := f.Get("from"); v != "" {
			sel["from"] = v
		}
		if v := f.Get("to"); v != "" {
			sel["to"] = v
		}
	default:
		return fhir.BadRequest("what: %q is not record or summary", what)
	}
	body := map[string]any{"label": label, "patient": q.pid, "content": []any{sel}}
	if pc := f.Get("passcode"); pc != "" {
		body["passcode"] = pc
	}
	switch exp := f.Get("expires"); exp {
	case "", "never":
	case "1d", "7d", "30d", "365d":
		body["expires"] = exp
	default:
		return fhir.BadRequest("expires: %q is not one of 1d, 7d, 30d, 365d or never", exp)
	}
	if f.Get("long") == "on" {
		body["flag"] = "L"
	}
	b, _ := json.Marshal(body)
	res, err := q.api.do(http.MethodPost, "/shl/links", bytes.NewReader(b), http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json"}})
	if err != nil {
		return err
	}
	var l shlLink
	if err := json.Unmarshal(res.Body, &l); err != nil {
		return fhir.Errorf(http.StatusBadGateway, "exception", "the new link could not be read: %v", err)
	}
	// The link carries its key: shown once, never stored or logged here.
	q.w.Header().Set("Cache-Control", "no-store")
	data := map[string]any{"Title": "Share link created", "L": l}
	if l.QR != nil && strings.HasPrefix(l.QR.PNG, "data:image/png;base64,") {
		data["QR"] = urlSafe(l.QR.PNG)
	}
	return p.render(q, http.StatusCreated, "shared", data)
}

// shareLink shows one link with its access log.
func (p *Portal) shareLink(q *req) error {
	id := q.r.PathValue("id")
	if !fhir.ValidID(id) {
		return fhir.NotFound("%q is not a link id", id)
	}
	res, err := q.api.do(http.MethodGet, "/shl/links/"+url.PathEscape(id), nil, http.Header{"Accept": {"application/json"}})
	if err != nil {
		return err
	}
	var l shlLink
	if err := json.Unmarshal(res.Body, &l); err != nil {
		return fhir.Errorf(http.StatusBadGateway, "exception", "the link could not be read: %v", err)
	}
	if l.Patient != q.pid {
		return fhir.NotFound("link %s does not share this record", id)
	}
	lres, err := q.api.do(http.MethodGet, "/shl/links/"+url.PathEscape(id)+"/log", nil, http.Header{"Accept": {"application/json"}})
	if err != nil {
		return err
	}
	var log struct {
		Access []struct {
			At, Recipient, Action, Detail string
			Status                        int
		} `json:"access"`
	}
	if err := json.Unmarshal(lres.Body, &log); err != nil {
		return fhir.Errorf(http.StatusBadGateway, "exception", "the access log could not be read: %v", err)
	}
	title := l.Label
	if title == "" {
		title = "Share link"
	}
	return p.render(q, http.StatusOK, "sharelink", map[string]any{"Title": title, "L": l, "Log": log.Access})
}

// shareRevoke revokes a link.
func (p *Portal) shareRevoke(q *req) error {
	id := q.r.PathValue("id")
	if !fhir.ValidID(id) {
		return fhir.NotFound("%q is not a link id", id)
	}
	if _, err := q.api.do(http.MethodDelete, "/shl/links/"+url.PathEscape(id), nil, http.Header{"Accept": {"application/json"}}); err != nil {
		return err
	}
	http.Redirect(q.w, q.r, "/p/"+url.PathEscape(q.pid)+"/share/"+url.PathEscape(id), http.StatusSeeOther)
	return nil
}

// urlSafe marks a data: URL of a PNG the server made as safe for an img src.
func urlSafe(s string) template.URL { return template.URL(s) }
