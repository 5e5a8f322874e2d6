package portal

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/phr-project/phr/internal/fhir"
)

// maxResponse bounds what one in-process API response may hold; pages ask
// for bounded pages (_count) so this is only a guard.
const maxResponse = 32 << 20

// client calls the FHIR API in-process with the session's token.
type client struct {
	h      http.Handler
	base   string
	tok    string
	ctx    context.Context
	remote string
}

// capture is an in-memory http.ResponseWriter with a size cap.
type capture struct {
	header http.Header
	status int
	body   bytes.Buffer
	over   bool
}

func (c *capture) Header() http.Header { return c.header }

func (c *capture) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
}

func (c *capture) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if c.body.Len()+len(b) > maxResponse {
		c.over = true
		return 0, fmt.Errorf("response larger than %d bytes", maxResponse)
	}
	return c.body.Write(b)
}

// response is a completed in-process call.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// do sends one request to the FHIR API. path is relative to /fhir (with
// its query). A status >= 400 is returned as a *fhir.Error carrying the
// API's own OperationOutcome issues.
func (c *client) do(method, path string, body io.Reader, header http.Header) (*response, error) {
	req, err := http.NewRequestWithContext(c.ctx, method, c.base+fhirPath(path), body)
	if err != nil {
		return nil, fmt.Errorf("portal: build request %s: %w", path, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/fhir+json")
	}
	req.Header.Set("Authorization", "Bearer "+c.tok)
	req.RemoteAddr = c.remote
	req.RequestURI = req.URL.RequestURI()
	if req.Body == nil {
		req.Body = http.NoBody // as for requests from the network
	}
	cw := &capture{header: http.Header{}}
	c.h.ServeHTTP(cw, req)
	if cw.over {
		return nil, fmt.Errorf("portal: %s %s: response larger than %d bytes", method, path, maxResponse)
	}
	if cw.status == 0 {
		cw.status = http.StatusOK
	}
	res := &response{Status: cw.status, Header: cw.header, Body: cw.body.Bytes()}
	if res.Status >= 400 {
		return res, outcomeError(res)
	}
	return res, nil
}

// outcomeError turns an error response into a *fhir.Error.
func outcomeError(res *response) error {
	fe := &fhir.Error{Status: res.Status}
	fe.Issues, _ = fhir.ParseOutcome(res.Body)
	if len(fe.Issues) == 0 {
		fe.Issues = []fhir.Issue{{Severity: "error", Code: "exception", Diagnostics: http.StatusText(res.Status)}}
	}
	return fe
}

// get fetches and decodes a JSON resource.
func (c *client) get(path string) (obj, []byte, error) {
	res, err := c.do(http.MethodGet, path, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	o, err := decode(res.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("portal: decode %s: %w", path, err)
	}
	return o, res.Body, nil
}

// read fetches the current version of a resource.
func (c *client) read(typ, id string) (obj, error) {
	o, _, err := c.get(typ + "/" + url.PathEscape(id))
	return o, err
}

// search runs a search and returns the matched resources (entries with
// search.mode "include" are left out) and the bundle.
func (c *client) search(typ string, q url.Values) ([]obj, obj, error) {
	path := typ
	if q == nil {
		q = url.Values{}
	}
	if q.Get("_total") == "" {
		// The pages page with links and need no totals: spare the count.
		q.Set("_total", "none")
	}
	path += "?" + q.Encode()
	b, _, err := c.get(path)
	if err != nil {
		return nil, nil, err
	}
	var out []obj
	for _, e := range b.list("entry") {
		if e.str("search", "mode") == "include" || e.str("search", "mode") == "outcome" {
			continue
		}
		if r := e.obj("resource"); r != nil {
			out = append(out, r)
		}
	}
	return out, b, nil
}

// included returns the resources a search bundle included (_include),
// by "Type/id".
func included(b obj) map[string]obj {
	out := map[string]obj{}
	for _, e := range b.list("entry") {
		if e.str("search", "mode") != "include" {
			continue
		}
		if r := e.obj("resource"); r != nil {
			out[r.ref()] = r
		}
	}
	return out
}

// decode parses JSON keeping numbers as their exact text.
func decode(b []byte) (obj, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	return obj(m), nil
}

// obj is a decoded JSON object with path helpers.
type obj map[string]any

// get returns the value at a path of keys (and list indexes as ints).
func (o obj) get(path ...any) any {
	var cur any = map[string]any(o)
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := asMap(cur)
			if !ok {
				return nil
			}
			cur = m[k]
		case int:
			l, ok := cur.([]any)
			if !ok || k < 0 || k >= len(l) {
				return nil
			}
			cur = l[k]
		}
	}
	return cur
}

func asMap(v any) (map[string]any, bool) {
	switch m := v.(type) {
	case map[string]any:
		return m, true
	case obj:
		return m, true
	}
	return nil, false
}

// str returns the string (or number text) at path, "" if none.
func (o obj) str(path ...any) string {
	switch v := o.get(path...).(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	case bool:
		if v {
			return "true"
		}
		return "false"
	}
	return ""
}

// obj returns the object at path, nil if none.
func (o obj) obj(path ...any) obj {
	m, ok := asMap(o.get(path...))
	if !ok {
		return nil
	}
	return obj(m)
}

// list returns the objects of the array at path.
func (o obj) list(path ...any) []obj {
	l, _ := o.get(path...).([]any)
	out := make([]obj, 0, len(l))
	for _, v := range l {
		if m, ok := asMap(v); ok {
			out = append(out, obj(m))
		}
	}
	return out
}

// ref returns the "Type/id" of the resource.
func (o obj) ref() string { return o.str("resourceType") + "/" + o.str("id") }

// passthrough writes an in-process response straight to the browser,
// keeping only the headers a download needs, so streams stay streams.
type passthrough struct {
	w      http.ResponseWriter
	header http.Header
	status int
	// failed holds the (capped) body of an error answer, which is not
	// passed through but shown as a portal error page.
	failed *bytes.Buffer
}

// passHeaders are the API response headers a passed-through response keeps.
var passHeaders = []string{"Content-Type", "Content-Disposition", "Content-Length", "X-Phr-Version", "Last-Modified", "Etag"}

func (p *passthrough) Header() http.Header { return p.header }

func (p *passthrough) WriteHeader(code int) {
	if p.status != 0 {
		return
	}
	p.status = code
	if code >= 400 {
		p.failed = &bytes.Buffer{}
		return
	}
	for _, k := range passHeaders {
		if v := p.header.Values(k); len(v) > 0 {
			p.w.Header()[k] = v
		}
	}
	p.w.WriteHeader(code)
}

func (p *passthrough) Write(b []byte) (int, error) {
	if p.status == 0 {
		p.WriteHeader(http.StatusOK)
	}
	if p.failed != nil {
		if p.failed.Len() < 64<<10 {
			p.failed.Write(b)
		}
		return len(b), nil
	}
	return p.w.Write(b)
}

// Unwrap lets http.ResponseController reach the browser's connection
// (full-duplex uploads whose report streams while the body is read,
// deadlines).
func (p *passthrough) Unwrap() http.ResponseWriter { return p.w }

// Flush lets streamed responses reach the browser as they are written.
func (p *passthrough) Flush() {
	if p.failed != nil {
		return
	}
	if f, ok := p.w.(http.Flusher); ok {
		f.Flush()
	}
}

// stream sends a request to the server's API (path is absolute, e.g.
// /fhir/Bundle/$import) and writes the response through to w as it comes.
// An error answer (status >= 400) is not written; it is returned as a
// *fhir.Error with the API's issues, for the page to show.
func (c *client) stream(w http.ResponseWriter, method, path string, body io.Reader, header http.Header) error {
	req, err := http.NewRequestWithContext(c.ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("portal: build request %s: %w", path, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+c.tok)
	req.RemoteAddr = c.remote
	req.RequestURI = req.URL.RequestURI()
	if req.Body == nil {
		req.Body = http.NoBody // as for requests from the network
	}
	pw := &passthrough{w: w, header: http.Header{}}
	c.h.ServeHTTP(pw, req)
	if pw.status == 0 {
		pw.WriteHeader(http.StatusOK)
	}
	if pw.failed != nil {
		return outcomeError(&response{Status: pw.status, Body: pw.failed.Bytes()})
	}
	return nil
}

// fhirPath makes an API path absolute: paths already under a root API
// ("/fhir/...", "/shl...", "/admin/...") stay; others are FHIR paths.
func fhirPath(p string) string {
	if strings.HasPrefix(p, "/") {
		return p
	}
	return "/fhir/" + p
}
