package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/records"
	"github.com/phr-project/phr/internal/store"
)

// wantsRaw reports whether a Binary read should return the raw content:
// when the client asks for something other than FHIR JSON.
func wantsRaw(r *http.Request) bool {
	if queryParam(r, "_format") != "" {
		return false
	}
	a := r.Header.Get("Accept")
	if a == "" {
		return true
	}
	for _, part := range strings.Split(a, ",") {
		mt := strings.TrimSpace(strings.Split(part, ";")[0])
		if mt == ContentFHIRJSON || mt == contentJSON || mt == "application/json+fhir" {
			return false
		}
	}
	return true
}

// writeResource writes one stored version with its headers.
func (s *Server) writeResource(w http.ResponseWriter, r *http.Request, status int, res *store.Resource) {
	versionHeaders(w, res)
	body, err := s.records.JSON(r.Context(), res)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	body, err = s.shape(r, res.Type, body)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	writeJSONBody(w, r, status, body)
}

// shape applies _summary and _elements to a single resource read.
func (s *Server) shape(r *http.Request, typ string, body []byte) ([]byte, error) {
	if r.URL.RawQuery == "" {
		return body, nil
	}
	q := r.URL.Query()
	if q.Get("_summary") == "" && q.Get("_elements") == "" {
		return body, nil
	}
	v, err := fhirjson.Parse(body)
	if err != nil {
		return nil, err
	}
	out, err := Shape(v, typ, q.Get("_summary"), q.Get("_elements"))
	if err != nil {
		return nil, err
	}
	return out.Marshal(), nil
}

func (s *Server) read(w http.ResponseWriter, r *http.Request, typ, id string) {
	res, err := s.records.Read(r.Context(), typ, id)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	if etag := r.Header.Get("If-None-Match"); etag != "" {
		if v, err := records.ParseETag(etag); err == nil && v == res.Version {
			versionHeaders(w, res)
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	if ims := r.Header.Get("If-Modified-Since"); ims != "" {
		if t, err := http.ParseTime(ims); err == nil && !res.LastUpdated.Truncate(time.Second).After(t) {
			versionHeaders(w, res)
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	if typ == "Binary" && wantsRaw(r) {
		s.writeRawBinary(w, r, res)
		return
	}
	s.writeResource(w, r, http.StatusOK, res)
}

func (s *Server) writeRawBinary(w http.ResponseWriter, r *http.Request, res *store.Resource) {
	body, size, ct, err := s.records.OpenBinary(r.Context(), res)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	defer body.Close()
	if ct == "" {
		ct = "application/octet-stream"
	}
	versionHeaders(w, res)
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Security-Policy", "sandbox")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		io.Copy(w, body)
	}
}

func (s *Server) vread(w http.ResponseWriter, r *http.Request, typ, id string, v int64) {
	res, err := s.records.ReadVersion(r.Context(), typ, id, v)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	if typ == "Binary" && wantsRaw(r) {
		s.writeRawBinary(w, r, res)
		return
	}
	s.writeResource(w, r, http.StatusOK, res)
}

// writeOptions reads the conditional headers of a write.
func writeOptions(r *http.Request) (records.WriteOptions, error) {
	var o records.WriteOptions
	if im := r.Header.Get("If-Match"); im != "" {
		v, err := records.ParseETag(im)
		if err != nil {
			return o, fhir.BadRequest("If-Match: %v", err)
		}
		o.IfMatch = v
	}
	o.IfNoneExist = r.Header.Get("If-None-Exist")
	return o, nil
}

// writeResult answers a successful write according to Prefer.
func (s *Server) writeResult(w http.ResponseWriter, r *http.Request, res *records.Result) {
	status := http.StatusOK
	if res.Created {
		status = http.StatusCreated
	}
	if res.Resource == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if res.Resource.Deleted {
		versionHeaders(w, res.Resource)
		ret, _ := prefer(r)
		if ret == "OperationOutcome" {
			writeJSONBody(w, r, http.StatusOK, fhir.OutcomeJSON([]fhir.Issue{{Severity: "information", Code: "informational",
				Diagnostics: fmt.Sprintf("deleted %s/%s (version %d)", res.Resource.Type, res.Resource.ID, res.Resource.Version)}}))
			return
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	loc := fmt.Sprintf("%s/%s/%s/_history/%d", s.base, res.Resource.Type, res.Resource.ID, res.Resource.Version)
	if res.Created {
		w.Header().Set("Location", loc)
	}
	w.Header().Set("Content-Location", loc)
	ret, _ := prefer(r)
	switch ret {
	case "minimal":
		versionHeaders(w, res.Resource)
		w.WriteHeader(status)
	case "OperationOutcome":
		versionHeaders(w, res.Resource)
		verb := "updated"
		if res.Created {
			verb = "created"
		} else if res.Unchanged {
			verb = "matched"
		}
		writeJSONBody(w, r, status, fhir.OutcomeJSON([]fhir.Issue{{Severity: "information", Code: "informational",
			Diagnostics: fmt.Sprintf("%s %s/%s version %d", verb, res.Resource.Type, res.Resource.ID, res.Resource.Version)}}))
	default:
		s.writeResource(w, r, status, res.Resource)
	}
}

// binaryBody turns a raw (non-FHIR) upload to [base]/Binary into a Binary
// resource, as FHIR allows.
func binaryBody(r *http.Request, body []byte, id string) ([]byte, bool) {
	ct := r.Header.Get("Content-Type")
	mt := strings.TrimSpace(strings.Split(ct, ";")[0])
	if ct == "" || mt == ContentFHIRJSON || mt == "application/json+fhir" {
		return body, false
	}
	b := fhirjson.NewObject(fhirjson.Field{Name: "resourceType", Value: fhirjson.NewString("Binary")})
	if id != "" {
		b.Set("id", fhirjson.NewString(id))
	}
	b.Set("contentType", fhirjson.NewString(ct))
	b.Set("data", fhirjson.NewString(encodeBase64(body)))
	return b.Marshal(), true
}

func (s *Server) body(w http.ResponseWriter, r *http.Request, typ, id string) ([]byte, bool) {
	if typ != "Binary" {
		if err := checkBodyType(r); err != nil {
			WriteError(w, r, err)
			return nil, false
		}
	}
	body, err := readBody(r, s.MaxBody)
	if err != nil {
		WriteError(w, r, err)
		return nil, false
	}
	if typ == "Binary" {
		body, _ = binaryBody(r, body, id)
	}
	return body, true
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, typ string) {
	body, ok := s.body(w, r, typ, "")
	if !ok {
		return
	}
	o, err := writeOptions(r)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	res, err := s.records.Create(r.Context(), typ, body, o)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	s.writeResult(w, r, res)
}

func (s *Server) update(w http.ResponseWriter, r *http.Request, typ, id string) {
	body, ok := s.body(w, r, typ, id)
	if !ok {
		return
	}
	o, err := writeOptions(r)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	res, err := s.records.Update(r.Context(), typ, id, body, o)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	s.writeResult(w, r, res)
}

func (s *Server) conditionalUpdate(w http.ResponseWriter, r *http.Request, typ string) {
	if r.URL.RawQuery == "" {
		WriteError(w, r, fhir.BadRequest("PUT to %s needs an id (%s/[id]) or a search (%s?identifier=...)", typ, typ, typ))
		return
	}
	body, ok := s.body(w, r, typ, "")
	if !ok {
		return
	}
	o, err := writeOptions(r)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	res, err := s.records.ConditionalUpdate(r.Context(), typ, conditionalQuery(r.URL.Query()), body, o)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	s.writeResult(w, r, res)
}

// conditionalQuery drops result-control parameters from a conditional
// interaction's search.
func conditionalQuery(q url.Values) string {
	for _, k := range []string{"_format", "_pretty"} {
		q.Del(k)
	}
	return q.Encode()
}

func (s *Server) patch(w http.ResponseWriter, r *http.Request, typ, id string) {
	if err := checkBodyType(r, "application/json-patch+json"); err != nil {
		WriteError(w, r, err)
		return
	}
	body, err := readBody(r, s.MaxBody)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	o, err := writeOptions(r)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	res, err := s.records.Patch(r.Context(), typ, id, body, o)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	s.writeResult(w, r, res)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request, typ, id string) {
	o, err := writeOptions(r)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	res, err := s.records.Delete(r.Context(), typ, id, o)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	if res.Resource == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.writeResult(w, r, res)
}

func (s *Server) conditionalDelete(w http.ResponseWriter, r *http.Request, typ string) {
	if r.URL.RawQuery == "" {
		WriteError(w, r, fhir.BadRequest("DELETE of %s needs an id or a search", typ))
		return
	}
	res, err := s.records.ConditionalDelete(r.Context(), typ, conditionalQuery(r.URL.Query()), records.WriteOptions{})
	if err != nil {
		WriteError(w, r, err)
		return
	}
	if res.Resource == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.writeResult(w, r, res)
}

// history serves the _history interactions as a history Bundle.
func (s *Server) history(w http.ResponseWriter, r *http.Request, typ, id string) {
	q := r.URL.Query()
	var since time.Time
	if v := q.Get("_since"); v != "" {
		t, err := fhir.ParseInstant(v)
		if err != nil {
			WriteError(w, r, fhir.BadRequest("_since: %v", err))
			return
		}
		since = t
	}
	count := 50
	if v := q.Get("_count"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			WriteError(w, r, fhir.BadRequest("_count must be a non-negative integer, not %q", v))
			return
		}
		count = min(max(n, 1), 1000)
	}
	var cursor int64
	if v := q.Get("_cursor"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			WriteError(w, r, fhir.BadRequest("_cursor %q is not valid", v))
			return
		}
		cursor = n
	}
	page, err := s.records.History(r.Context(), typ, id, since, cursor, count)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	path := s.base
	if typ != "" {
		path += "/" + typ
	}
	if id != "" {
		path += "/" + id
	}
	path += "/_history"
	self := path
	if r.URL.RawQuery != "" {
		self += "?" + r.URL.RawQuery
	}
	var buf bytes.Buffer
	buf.WriteString(`{"resourceType":"Bundle","type":"history"`)
	if page.Total > 0 || (typ != "" && page.NextSeq == 0 && cursor == 0) {
		fmt.Fprintf(&buf, `,"total":%d`, max(page.Total, int64(len(page.Versions))))
	}
	buf.WriteString(`,"link":[{"relation":"self","url":`)
	buf.Write(fhirjson.AppendString(nil, self))
	buf.WriteString(`}`)
	if page.NextSeq > 0 {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("_cursor", strconv.FormatInt(page.NextSeq, 10))
		nq.Set("_count", strconv.Itoa(count))
		buf.WriteString(`,{"relation":"next","url":`)
		buf.Write(fhirjson.AppendString(nil, path+"?"+nq.Encode()))
		buf.WriteString(`}`)
	}
	buf.WriteString(`],"entry":[`)
	for i, v := range page.Versions {
		if i > 0 {
			buf.WriteByte(',')
		}
		full := fmt.Sprintf("%s/%s/%s", s.base, v.Type, v.ID)
		buf.WriteString(`{"fullUrl":`)
		buf.Write(fhirjson.AppendString(nil, full))
		if !v.Deleted {
			buf.WriteString(`,"resource":`)
			if err := s.records.WriteJSON(r.Context(), &buf, v); err != nil {
				WriteError(w, r, err)
				return
			}
		}
		method, url := v.Method, v.Type+"/"+v.ID
		status := "200 OK"
		switch method {
		case "POST":
			url, status = v.Type, "201 Created"
		case "DELETE":
			status = "204 No Content"
		case "PATCH":
			method = "PATCH"
		}
		fmt.Fprintf(&buf, `,"request":{"method":%q,"url":%q},"response":{"status":%q,"etag":"W/\"%d\"","lastModified":%q}}`,
			method, url, status, v.Version, fhir.FormatInstant(v.LastUpdated))
	}
	buf.WriteString(`]}`)
	writeJSONBody(w, r, http.StatusOK, buf.Bytes())
}

// bundle processes a transaction or batch Bundle.
func (s *Server) bundle(w http.ResponseWriter, r *http.Request) {
	if err := checkBodyType(r); err != nil {
		WriteError(w, r, err)
		return
	}
	body, err := readBody(r, s.MaxBody)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	typ, entries, err := s.records.ProcessBundle(r.Context(), body, s.getter(r))
	if err != nil {
		WriteError(w, r, err)
		return
	}
	ret, _ := prefer(r)
	var buf bytes.Buffer
	size := 64 + 256*len(entries)
	if ret != "minimal" && ret != "OperationOutcome" {
		for _, e := range entries {
			if e.Resource != nil {
				size += len(e.Resource.JSON)
			}
			size += len(e.Body)
		}
	}
	buf.Grow(size)
	// The entries are written without fmt: a Synthea Bundle has
	// thousands.
	var scratch []byte
	str := func(v string) {
		scratch = fhirjson.AppendString(scratch[:0], v)
		buf.Write(scratch)
	}
	buf.WriteString(`{"resourceType":"Bundle","type":`)
	str(typ)
	buf.WriteString(`,"entry":[`)
	for i, e := range entries {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteByte('{')
		if e.Resource != nil && !e.Resource.Deleted {
			buf.WriteString(`"fullUrl":`)
			str(s.base + "/" + e.Resource.Type + "/" + e.Resource.ID)
			buf.WriteByte(',')
			if ret != "minimal" && ret != "OperationOutcome" {
				buf.WriteString(`"resource":`)
				if err := s.records.WriteJSON(r.Context(), &buf, e.Resource); err != nil {
					WriteError(w, r, err)
					return
				}
				buf.WriteByte(',')
			}
		} else if e.Body != nil {
			buf.WriteString(`"resource":`)
			buf.Write(e.Body)
			buf.WriteByte(',')
		}
		buf.WriteString(`"response":{"status":`)
		str(strconv.Itoa(e.Status) + " " + http.StatusText(e.Status))
		if e.Location != "" {
			buf.WriteString(`,"location":`)
			str(e.Location)
		}
		if e.ETag != "" {
			buf.WriteString(`,"etag":`)
			str(e.ETag)
		}
		if !e.LastModified.IsZero() {
			buf.WriteString(`,"lastModified":`)
			str(fhir.FormatInstant(e.LastModified))
		}
		if e.Outcome != nil {
			buf.WriteString(`,"outcome":`)
			buf.Write(fhir.OutcomeJSON(e.Outcome.Issues))
		}
		buf.WriteString(`}}`)
	}
	buf.WriteString(`]}`)
	writeJSONBody(w, r, http.StatusOK, buf.Bytes())
}

// getter runs the GET entries of a Bundle through the router, with the
// caller's identity, and captures their responses.
func (s *Server) getter(outer *http.Request) records.Getter {
	return func(ctx context.Context, rel string) (int, []byte, error) {
		u, err := url.Parse(s.base + "/" + strings.TrimPrefix(rel, "/"))
		if err != nil {
			return 0, nil, fhir.BadRequest("entry url %q: %v", rel, err)
		}
		req := outer.Clone(ctx)
		req.Method = http.MethodGet
		req.URL = u
		req.Body = http.NoBody
		req.Header.Del("Content-Type")
		req.Header.Del("Prefer")
		rec := &capture{header: http.Header{}}
		seg := strings.Split(strings.Trim(strings.TrimPrefix(u.Path, pathOf(s.base)), "/"), "/")
		if len(seg) == 1 && seg[0] == "" {
			seg = nil
		}
		s.route(rec, req, seg)
		return rec.status, rec.body.Bytes(), nil
	}
}

func pathOf(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		return "/fhir"
	}
	return u.Path
}

// capture is a ResponseWriter that records a response.
type capture struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (c *capture) Header() http.Header { return c.header }
func (c *capture) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return c.body.Write(b)
}
func (c *capture) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
}

func encodeBase64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
