package phrexport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/api"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
)

// Canonical is the PHR IG's canonical URL of the operation, which the
// CapabilityStatement lists; the server serves its own
// OperationDefinition under it (the IG publishes none).
const Canonical = "http://hl7.org/fhir/uv/phr/OperationDefinition/phr-export"

// HTTP headers of the PHR API.
const (
	// HeaderVersion is sent with every export.
	HeaderVersion = "X-PHR-Version"
	// HeaderPassphrase carries the .sphr passphrase: in the request when
	// the client chooses it, in the response when the server generated it
	// (sent that once, never stored or logged).
	HeaderPassphrase = "X-PHR-Passphrase"
	// HeaderSignature is the HTTP trailer with the detached JWS of the
	// body (sign=true).
	HeaderSignature = "X-PHR-Signature"
)

// Register adds $phr-export to the FHIR API at [base]/Bundle/$phr-export,
// [base]/Patient/$phr-export and [base]/Patient/[id]/$phr-export. The
// operation authenticates with auth itself (so that it can answer with
// NDJSON and zip content types the FHIR router refuses).
func (s *Service) Register(srv *api.Server, auth api.Authenticator) {
	srv.HandleOperation(&api.Operation{
		Name:       "phr-export",
		Definition: Canonical,
		System:     true,
		Types:      []string{"Bundle", "Patient"},
		Instance:   true,
		Methods:    []string{http.MethodGet, http.MethodPost},
		Public:     true,
		Resource:   []byte(operationDefinition),
		Handler: func(w http.ResponseWriter, r *http.Request, typ, id string) {
			s.serveHTTP(w, r, auth, typ, id)
		},
	})
}

// known lists the parameters of the operation.
var known = map[string]bool{"outputFormat": true, "start": true, "end": true, "patient": true, "_type": true, "_since": true, "_until": true, "sign": true, "_format": true, "_pretty": true}

func (s *Service) serveHTTP(w http.ResponseWriter, r *http.Request, auth api.Authenticator, typ, id string) {
	if typ == "Bundle" && id != "" {
		api.WriteError(w, r, fhir.NotFound("$phr-export is invoked on Bundle (the type), not on a Bundle instance"))
		return
	}
	if auth == nil {
		api.WriteError(w, r, &fhir.Error{Status: http.StatusUnauthorized, Issues: []fhir.Issue{{Severity: "error", Code: "login", Diagnostics: "no authentication configured"}}})
		return
	}
	pr, err := auth.Authenticate(r)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	ctx := access.With(r.Context(), pr)
	p, err := s.parseRequest(r, typ, id)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	if err := s.Prepare(ctx, p); err != nil {
		api.WriteError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", ContentType(p))
	disp := "inline"
	if p.Format == FormatPHR || p.Format == FormatSPHR {
		disp = "attachment"
	}
	h.Set("Content-Disposition", mime.FormatMediaType(disp, map[string]string{"filename": s.FileName(p)}))
	h.Set(HeaderVersion, "1.0")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if p.GeneratedPassphrase && r.Method != http.MethodHead {
		h.Set(HeaderPassphrase, p.Passphrase)
	}
	if p.Sign {
		h.Set("Trailer", HeaderSignature)
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	st, err := s.Export(ctx, p, w, func() { rc.Flush() })
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			slog.ErrorContext(ctx, "phr export failed", "format", p.Format, "resources", st.Resources, "error", err)
		}
		return
	}
	if p.Sign {
		h.Set(HeaderSignature, st.Signature)
	}
}

// parseRequest reads the operation's parameters from the query and, for
// POST, a Parameters body.
func (s *Service) parseRequest(r *http.Request, typ, id string) (*Params, error) {
	q := r.URL.Query()
	if q.Has("passphrase") {
		return nil, fhir.BadRequest("passphrase must not be sent in the URL (URLs are logged and cached): use the %s header or a POST Parameters body", HeaderPassphrase).AtPath("passphrase")
	}
	vals := url.Values{}
	for k, v := range q {
		vals[k] = v
	}
	passphrase := r.Header.Get(HeaderPassphrase)
	if r.Method == http.MethodPost {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20+1))
		if err != nil {
			return nil, fhir.BadRequest("reading the request body: %v", err)
		}
		if len(body) > 1<<20 {
			return nil, fhir.Errorf(http.StatusRequestEntityTooLarge, "too-costly", "the Parameters body is larger than 1 MiB")
		}
		if len(strings.TrimSpace(string(body))) > 0 {
			pv, pass, err := parseParameters(body)
			if err != nil {
				return nil, err
			}
			for k, v := range pv {
				vals[k] = append(vals[k], v...)
			}
			if pass != "" {
				passphrase = pass
			}
		}
	}
	for k := range vals {
		if !known[k] {
			return nil, fhir.BadRequest("unknown parameter %q: $phr-export takes outputFormat, start, end, patient, _type, _since, _until and sign", k).AtPath(k)
		}
	}
	for _, k := range []string{"outputFormat", "start", "end", "patient", "_since", "_until", "sign"} {
		if len(vals[k]) > 1 {
			return nil, fhir.BadRequest("parameter %s is given %d times; give it once", k, len(vals[k])).AtPath(k)
		}
	}
	p := &Params{Start: vals.Get("start"), End: vals.Get("end"), Passphrase: passphrase}
	f := vals.Get("outputFormat")
	if f == "" {
		f = formatFromAccept(r.Header.Get("Accept"))
	}
	var err error
	if p.Format, err = ParseFormat(f); err != nil {
		return nil, err
	}
	p.FHIRNDJSON = strings.Contains(f, "fhir+ndjson") || strings.Contains(r.Header.Get("Accept"), "application/fhir+ndjson")
	if v := vals.Get("patient"); v != "" {
		if p.Patient, err = ParsePatient(v); err != nil {
			return nil, err
		}
	}
	if typ == "Patient" && id != "" {
		if p.Patient != "" && p.Patient != id {
			return nil, fhir.BadRequest("patient=%s contradicts the Patient/%s the operation is invoked on", p.Patient, id).AtPath("patient")
		}
		p.Patient = id
	}
	if p.Types, err = ParseTypes(vals["_type"]); err != nil {
		return nil, err
	}
	if p.Since, err = ParseInstant("_since", vals.Get("_since"), false); err != nil {
		return nil, err
	}
	if p.Until, err = ParseInstant("_until", vals.Get("_until"), true); err != nil {
		return nil, err
	}
	switch vals.Get("sign") {
	case "", "false":
	case "true":
		p.Sign = true
	default:
		return nil, fhir.BadRequest("sign=%q: use true or false", vals.Get("sign")).AtPath("sign")
	}
	if p.Format != FormatSPHR && passphrase != "" {
		return nil, fhir.BadRequest("a passphrase only applies to outputFormat=sphr").AtPath("passphrase")
	}
	return p, nil
}

// formatFromAccept picks the format an Accept header asks for when
// outputFormat is absent.
func formatFromAccept(accept string) string {
	for _, part := range strings.Split(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case "application/fhir+ndjson", "application/x-ndjson", "application/ndjson", "application/zip":
			return mt
		case "application/fhir+json", "application/json":
			return ""
		}
	}
	return ""
}

// parseParameters reads a Parameters resource into name -> values; the
// passphrase parameter is returned apart.
func parseParameters(body []byte) (url.Values, string, error) {
	v, err := fhirjson.Parse(body)
	if err != nil {
		return nil, "", fhir.BadRequest("the body is not valid JSON: %v", err)
	}
	if v.Kind != fhirjson.Object || v.GetString("resourceType") != "Parameters" {
		return nil, "", fhir.BadRequest("the body must be a Parameters resource")
	}
	out := url.Values{}
	pass := ""
	params := v.Get("parameter")
	if params == nil {
		return out, "", nil
	}
	if params.Kind != fhirjson.Array {
		return nil, "", fhir.BadRequest("Parameters.parameter must be an array").AtPath("Parameters.parameter")
	}
	for i, prm := range params.Items {
		name := prm.GetString("name")
		where := fmt.Sprintf("Parameters.parameter[%d]", i)
		if name == "" {
			return nil, "", fhir.BadRequest("parameter without a name").AtPath(where)
		}
		val, ok := "", false
		for _, f := range prm.Fields {
			if strings.HasPrefix(f.Name, "value") {
				switch f.Value.Kind {
				case fhirjson.String, fhirjson.Number:
					val, ok = f.Value.Str, true
				case fhirjson.Bool:
					val, ok = fmt.Sprint(f.Value.Bool), true
				}
			}
		}
		if !ok {
			return nil, "", fhir.BadRequest("parameter %s has no primitive value[x]", name).AtPath(where)
		}
		if name == "passphrase" {
			pass = val
			continue
		}
		out.Add(name, val)
	}
	return out, pass, nil
}
