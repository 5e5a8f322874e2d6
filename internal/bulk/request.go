package bulk

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/r4"
)

// Levels of an export.
const (
	LevelSystem  = "system"
	LevelPatient = "patient"
	LevelGroup   = "group"
)

// Request is a validated kick-off request: the parameters of an export
// job, stored as its JSON.
type Request struct {
	Level string `json:"level"`
	Group string `json:"group,omitempty"`
	// Confined is true when the export is limited to the patients in the
	// bulk_member table (Group members, the patient parameter, a patient
	// token's own patient). A patient-level export that is not confined
	// covers every patient compartment.
	Confined bool `json:"confined,omitempty"`
	// Types are the resource types to export (sorted), already narrowed
	// to those the requester may read.
	Types []string  `json:"types"`
	Since time.Time `json:"since,omitzero"`
	Until time.Time `json:"until,omitzero"`
	// TransactionTime is the kick-off instant: resources changed later
	// are left to the next export (_since=transactionTime).
	TransactionTime time.Time `json:"transactionTime"`
	// Elements maps a type ("" for all) to the elements to keep.
	Elements map[string][]string `json:"elements,omitempty"`
	// TypeFilters maps a type to its _typeFilter queries (alternatives).
	TypeFilters map[string][]string `json:"typeFilters,omitempty"`
	// ScopeFilters maps a type to the query filters of the requester's
	// SMART v2 scopes (system/Observation.rs?category=laboratory): only
	// resources matching one of them are exported.
	ScopeFilters map[string][]string `json:"scopeFilters,omitempty"`
	// Associated are the includeAssociatedData values asked for.
	Associated []string `json:"associated,omitempty"`
	// Ignored lists the parameters ignored under handling=lenient; they are
	// reported in the manifest's error files.
	Ignored []fhir.Issue `json:"ignored,omitempty"`
	// URL is the kick-off request URL as the client sent it.
	URL string `json:"url"`
	// Owner and Patient identify the requester (the token's subject and
	// the patient it is confined to); status and file requests must come
	// from the same.
	Owner   string `json:"owner"`
	Patient string `json:"patient,omitempty"`
	// Members are the patients a confined export covers (stored in
	// bulk_member at kick-off, not in the job's JSON).
	Members []string `json:"-"`
}

// outputFormats are the accepted _outputFormat spellings.
var outputFormats = []string{"application/fhir+ndjson", "application/ndjson", "ndjson"}

// associatedValues are the accepted includeAssociatedData values.
var associatedValues = []string{"LatestProvenanceResources", "RelevantProvenanceResources"}

// param is one kick-off parameter value with where it came from.
type param struct {
	name, value string
	// ref is set for valueReference parameters (patient).
	ref string
}

func badParam(name, format string, args ...any) *fhir.Error {
	return fhir.BadRequest(format, args...).AtPath(name)
}

// checkHeaders applies the kick-off header rules: Accept must admit
// application/fhir+json and Prefer must say respond-async.
func checkHeaders(r *http.Request) (lenient bool, err error) {
	accept := r.Header.Get("Accept")
	if accept == "" {
		return false, fhir.BadRequest("the Accept header is required: send Accept: application/fhir+json").AtPath("Accept")
	}
	ok := false
	for _, part := range strings.Split(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case "application/fhir+json", "application/json", "application/json+fhir", "*/*", "application/*":
			ok = true
		}
	}
	if !ok {
		return false, fhir.BadRequest("Accept %q is not supported: the kick-off answers with application/fhir+json", accept).AtPath("Accept")
	}
	async := false
	for _, h := range r.Header.Values("Prefer") {
		for _, tok := range strings.FieldsFunc(h, func(c rune) bool { return c == ',' || c == ';' }) {
			k, v, _ := strings.Cut(strings.TrimSpace(tok), "=")
			k, v = strings.TrimSpace(k), strings.Trim(strings.TrimSpace(v), `"`)
			switch {
			case k == "respond-async":
				async = true
			case k == "handling" && v == "lenient":
				lenient = true
			}
		}
	}
	if !async {
		return false, fhir.BadRequest("the Prefer header must include respond-async: $export runs asynchronously").AtPath("Prefer")
	}
	return lenient, nil
}

// readParams collects the parameters of a GET (query) or POST (Parameters
// body; query parameters are also read) kick-off.
func readParams(r *http.Request, maxBody int64) ([]param, error) {
	var out []param
	for k, vs := range r.URL.Query() {
		for _, v := range vs {
			out = append(out, param{name: k, value: v})
		}
	}
	if r.Method != http.MethodPost {
		return out, nil
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, _ := mime.ParseMediaType(ct)
		if mt != "application/fhir+json" && mt != "application/json" {
			return nil, fhir.Errorf(http.StatusUnsupportedMediaType, "not-supported", "Content-Type %q is not supported: POST a Parameters resource as application/fhir+json", ct)
		}
	}
	body := http.MaxBytesReader(nil, r.Body, maxBody)
	var p struct {
		ResourceType string `json:"resourceType"`
		Parameter    []struct {
			Name           string  `json:"name"`
			ValueString    *string `json:"valueString"`
			ValueCode      *string `json:"valueCode"`
			ValueInstant   *string `json:"valueInstant"`
			ValueDateTime  *string `json:"valueDateTime"`
			ValueURI       *string `json:"valueUri"`
			ValueCanonical *string `json:"valueCanonical"`
			ValueReference *struct {
				Reference string `json:"reference"`
			} `json:"valueReference"`
		} `json:"parameter"`
	}
	dec := json.NewDecoder(body)
	if err := dec.Decode(&p); err != nil {
		return nil, fhir.BadRequest("the POST body is not a JSON Parameters resource: %v", err)
	}
	if p.ResourceType != "Parameters" {
		return nil, fhir.BadRequest("the POST body must be a Parameters resource, not %q", p.ResourceType).AtPath("resourceType")
	}
	for i, pp := range p.Parameter {
		v := param{name: pp.Name}
		for _, s := range []*string{pp.ValueString, pp.ValueCode, pp.ValueInstant, pp.ValueDateTime, pp.ValueURI, pp.ValueCanonical} {
			if s != nil {
				v.value = *s
			}
		}
		if pp.ValueReference != nil {
			v.ref = pp.ValueReference.Reference
			if v.ref == "" {
				return nil, badParam(fmt.Sprintf("Parameters.parameter[%d].valueReference", i), "parameter %s has a valueReference without a reference", pp.Name)
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// parseRequest validates the kick-off parameters. It fills everything but
// Types narrowing by scope, Members of Groups, and the requester.
func parseRequest(params []param, level string, lenient bool, now time.Time) (*Request, []string, error) {
	req := &Request{Level: level, TransactionTime: now}
	var patients []string
	var typeFilters []string
	ignore := func(name, why string) error {
		if lenient {
			req.Ignored = append(req.Ignored, fhir.Issue{Severity: "warning", Code: "not-supported", Diagnostics: fmt.Sprintf("parameter %s was ignored: %s", name, why), Expression: []string{name}})
			return nil
		}
		return badParam(name, "parameter %s is not supported: %s (send Prefer: handling=lenient to have it ignored)", name, why)
	}
	// Sort for deterministic error messages.
	sort.SliceStable(params, func(i, j int) bool { return params[i].name < params[j].name })
	for _, p := range params {
		switch p.name {
		case "_outputFormat":
			if !slices.Contains(outputFormats, p.value) {
				return nil, nil, badParam("_outputFormat", "_outputFormat %q is not supported: use application/fhir+ndjson, application/ndjson or ndjson", p.value)
			}
		case "_since", "_until":
			t, err := fhir.ParseInstant(p.value)
			if err != nil && strings.Contains(p.value, " ") {
				// An unencoded + in the offset arrives as a space.
				t, err = fhir.ParseInstant(strings.ReplaceAll(p.value, " ", "+"))
			}
			if err != nil {
				return nil, nil, badParam(p.name, "%s %q is not a FHIR instant (e.g. 2024-05-06T07:08:09Z; a + in the offset must be sent as %%2B): %v", p.name, p.value, err)
			}
			if t.After(now) {
				return nil, nil, badParam(p.name, "%s %s is in the future", p.name, p.value)
			}
			if p.name == "_since" {
				req.Since = t
			} else {
				req.Until = t
			}
		case "_type":
			for _, t := range strings.Split(p.value, ",") {
				t = strings.TrimSpace(t)
				if t == "" {
					continue
				}
				if !r4.IsResourceType(t) {
					return nil, nil, badParam("_type", "_type names %q, which is not an R4 resource type", t)
				}
				if !slices.Contains(req.Types, t) {
					req.Types = append(req.Types, t)
				}
			}
		case "_elements":
			for _, e := range strings.Split(p.value, ",") {
				e = strings.TrimSpace(e)
				if e == "" {
					continue
				}
				typ, elem, ok := strings.Cut(e, ".")
				if !ok {
					typ, elem = "", e
				} else if !r4.IsResourceType(typ) {
					return nil, nil, badParam("_elements", "_elements entry %q: %q is not a resource type", e, typ)
				} else if elementOf(typ, elem) == nil {
					return nil, nil, badParam("_elements", "_elements entry %q: %s has no element %s", e, typ, elem)
				}
				if req.Elements == nil {
					req.Elements = map[string][]string{}
				}
				req.Elements[typ] = append(req.Elements[typ], elem)
			}
		case "patient":
			if level == LevelSystem {
				return nil, nil, badParam("patient", "the patient parameter is not allowed at the system level: use [base]/Patient/$export or [base]/Group/[id]/$export")
			}
			if p.ref == "" {
				return nil, nil, badParam("patient", "the patient parameter must be a valueReference (POST a Parameters resource)")
			}
			ref, ok := fhir.ParseReference(p.ref)
			if !ok || ref.Type != "Patient" || ref.ID == "" {
				return nil, nil, badParam("patient", "patient reference %q must be Patient/[id]", p.ref)
			}
			patients = append(patients, ref.ID)
		case "includeAssociatedData":
			for _, v := range strings.Split(p.value, ",") {
				v = strings.TrimSpace(v)
				if v == "" {
					continue
				}
				if !slices.Contains(associatedValues, v) {
					if err := ignore("includeAssociatedData", fmt.Sprintf("value %q is not supported (supported: %s)", v, strings.Join(associatedValues, ", "))); err != nil {
						return nil, nil, err
					}
					continue
				}
				req.Associated = append(req.Associated, v)
			}
		case "_typeFilter":
			typeFilters = append(typeFilters, p.value)
		case "_format":
			// A FHIR-wide parameter about the kick-off response format.
		default:
			if err := ignore(p.name, "it is not a $export parameter this server knows"); err != nil {
				return nil, nil, err
			}
		}
	}
	if !req.Since.IsZero() && !req.Until.IsZero() && !req.Until.After(req.Since) {
		return nil, nil, badParam("_until", "_until must be later than _since")
	}
	for _, tf := range typeFilters {
		typ, query, ok := strings.Cut(tf, "?")
		if !ok || !r4.IsResourceType(typ) {
			return nil, nil, badParam("_typeFilter", "_typeFilter %q must be [type]?[search query] with an R4 resource type", tf)
		}
		if _, err := url.ParseQuery(query); err != nil {
			return nil, nil, badParam("_typeFilter", "_typeFilter %q has a malformed query: %v", tf, err)
		}
		if len(req.Types) > 0 && !slices.Contains(req.Types, typ) {
			return nil, nil, badParam("_typeFilter", "_typeFilter %q is for %s, which _type does not include", tf, typ)
		}
		if req.TypeFilters == nil {
			req.TypeFilters = map[string][]string{}
		}
		req.TypeFilters[typ] = append(req.TypeFilters[typ], query)
	}
	sort.Strings(req.Types)
	return req, patients, nil
}

// elementOf returns the definition of a top-level element of typ named
// elem (a choice element matches its [x] name and its typed names).
func elementOf(typ, elem string) *r4.Element {
	if e := r4.LookupElement(typ + "." + elem); e != nil {
		return e
	}
	return r4.LookupElement(typ + "." + elem + "[x]")
}
