package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/store"
)

// Content types.
const (
	ContentFHIRJSON = "application/fhir+json"
	contentJSON     = "application/json"
)

// fhirJSONType is the Content-Type header of FHIR JSON responses.
const fhirJSONType = "application/fhir+json; charset=utf-8"

// WriteError writes err as an OperationOutcome with its status. Internal
// errors are logged with their cause; clients get a generic message.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	fe := fhir.AsError(err)
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away
	}
	if fe.Status >= 500 {
		slog.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	}
	if fe.Status == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="phr"`)
	}
	writeJSONBody(w, r, fe.Status, fhir.OutcomeJSON(fe.Issues))
}

// writeJSONBody writes a FHIR JSON body with the status, pretty-printed
// when the client asked for _pretty=true.
func writeJSONBody(w http.ResponseWriter, r *http.Request, status int, body []byte) {
	w.Header().Set("Content-Type", responseType(r))
	if queryParam(r, "_pretty") == "true" {
		var buf bytes.Buffer
		if json.Indent(&buf, body, "", "  ") == nil {
			body = buf.Bytes()
		}
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// responseType is application/fhir+json unless the client asked for plain
// application/json.
func responseType(r *http.Request) string {
	f := queryParam(r, "_format")
	if f == "application/json" || (f == "" && acceptsOnlyJSON(r.Header.Get("Accept"))) {
		return "application/json; charset=utf-8"
	}
	return fhirJSONType
}

func acceptsOnlyJSON(accept string) bool {
	if accept == "" {
		return false
	}
	for _, part := range strings.Split(accept, ",") {
		mt, _, _ := mime.ParseMediaType(strings.TrimSpace(part))
		if mt == ContentFHIRJSON || mt == "*/*" || mt == "application/*" {
			return false
		}
	}
	return strings.Contains(accept, contentJSON)
}

// checkFormat refuses formats other than JSON: 406 for Accept and _format
// asking for XML or anything else, 415 for request bodies that are not JSON.
func checkFormat(r *http.Request) error {
	if f := queryParam(r, "_format"); f != "" {
		switch f {
		case "json", ContentFHIRJSON, contentJSON, "application/json+fhir":
		default:
			return fhir.Errorf(http.StatusNotAcceptable, "not-supported", "_format=%s is not supported: this server speaks FHIR JSON only (_format=json)", f)
		}
	} else if a := r.Header.Get("Accept"); a != "" && !acceptsJSON(a) {
		return fhir.Errorf(http.StatusNotAcceptable, "not-supported", "cannot answer with %q: this server speaks FHIR JSON only (application/fhir+json)", a)
	}
	return nil
}

// acceptsJSON reports whether an Accept header admits a JSON answer.
func acceptsJSON(accept string) bool {
	for _, part := range strings.Split(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case ContentFHIRJSON, contentJSON, "application/json+fhir", "*/*", "application/*", "application/fhir+ndjson", "application/x-ndjson", "application/ndjson":
			return true
		}
	}
	return false
}

// checkBodyType refuses request bodies that are not JSON.
func checkBodyType(r *http.Request, also ...string) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return fhir.Errorf(http.StatusUnsupportedMediaType, "not-supported", "invalid Content-Type %q", ct)
	}
	switch mt {
	case ContentFHIRJSON, contentJSON, "application/json+fhir":
		return nil
	}
	for _, a := range also {
		if mt == a {
			return nil
		}
	}
	return fhir.Errorf(http.StatusUnsupportedMediaType, "not-supported", "Content-Type %q is not supported: send FHIR JSON (application/fhir+json)", mt)
}

// readBody reads a request body up to limit bytes.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, fhir.Errorf(http.StatusRequestEntityTooLarge, "too-costly", "the request body is larger than %d bytes", limit)
	}
	// A body of known length is read into one buffer of its size (growing
	// one step by step costs a Bundle of megabytes several copies).
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, fhir.BadRequest("reading the request body: %v", err)
	}
	body := buf.Bytes()
	if int64(len(body)) > limit {
		return nil, fhir.Errorf(http.StatusRequestEntityTooLarge, "too-costly", "the request body is larger than %d bytes", limit)
	}
	return body, nil
}

// queryParam returns the first value of a query parameter. Most requests
// have no query at all, and for them it parses nothing (r.URL.Query
// allocates a map on every call, and a read asks for several parameters).
func queryParam(r *http.Request, name string) string {
	if r.URL.RawQuery == "" {
		return ""
	}
	return r.URL.Query().Get(name)
}

// versionHeaders sets ETag and Last-Modified of a version. It is on the
// path of every read: the values are appended into one buffer and the
// headers set under their canonical names (Header.Set would canonicalise
// "ETag" into a new string each time).
func versionHeaders(w http.ResponseWriter, res *store.Resource) {
	var buf [64]byte
	b := append(buf[:0], `W/"`...)
	b = strconv.AppendInt(b, res.Version, 10)
	b = append(b, '"')
	n := len(b)
	b = res.LastUpdated.UTC().AppendFormat(b, http.TimeFormat)
	all := string(b)
	h := w.Header()
	h["Etag"] = []string{all[:n]}
	h["Last-Modified"] = []string{all[n:]}
}

// prefer returns the return= preference (minimal, representation,
// OperationOutcome) and whether handling=lenient was asked for.
func prefer(r *http.Request) (ret string, lenient bool) {
	for _, h := range r.Header.Values("Prefer") {
		for _, tok := range strings.FieldsFunc(h, func(c rune) bool { return c == ',' || c == ';' }) {
			k, v, _ := strings.Cut(strings.TrimSpace(tok), "=")
			v = strings.Trim(strings.TrimSpace(v), `"`)
			switch strings.TrimSpace(k) {
			case "return":
				ret = v
			case "handling":
				lenient = v == "lenient"
			}
		}
	}
	return ret, lenient
}

// httpDate formats t for Last-Modified style headers.
func httpDate(t time.Time) string { return t.UTC().Format(http.TimeFormat) }
