package portal

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/fhir"
)

// extraRoutes adds the pages over the import, export and sharing APIs.
// Their navigation links show only when the server offers the API.
func (p *Portal) extraRoutes(m *http.ServeMux) {
	m.Handle("GET /p/{pid}/export", p.patientPage(p.exportForm))
	m.Handle("POST /p/{pid}/export", p.patientPage(p.exportDownload))
	p.importRoutes(m)
	p.shareRoutes(m)
	p.manageRoutes(m)
	p.exportRoutes(m)
}

// operations returns the names of the FHIR operations the server offers
// (from its CapabilityStatement), read once after the server is wired.
func (p *Portal) operations(q *req) map[string]bool {
	p.opsOnce.Do(func() {
		ops := map[string]bool{}
		if cs, _, err := q.api.get("metadata"); err == nil {
			for _, rest := range cs.list("rest") {
				for _, o := range rest.list("operation") {
					ops[o.str("name")] = true
				}
				for _, r := range rest.list("resource") {
					for _, o := range r.list("operation") {
						ops[o.str("name")] = true
					}
				}
			}
		}
		p.ops = ops
	})
	return p.ops
}

// exportTypes are the types the export form offers to narrow to.
var exportTypes = []string{"AllergyIntolerance", "Condition", "DiagnosticReport", "DocumentReference", "Encounter", "Immunization", "MedicationRequest", "Observation", "Procedure", "CarePlan"}

func (p *Portal) exportForm(q *req) error {
	if !p.operations(q)["phr-export"] {
		return fhir.Errorf(http.StatusNotFound, "not-supported", "this server does not offer exports")
	}
	return p.render(q, http.StatusOK, "export", map[string]any{"Title": "Export", "Types": exportTypes})
}

// exportDownload runs $phr-export for the patient and streams the file
// to the browser. The .sphr passphrase travels in the form body and on
// to the API in the X-PHR-Passphrase header, never in a URL.
func (p *Portal) exportDownload(q *req) error {
	f := q.r.PostForm
	format := f.Get("format")
	switch format {
	case "bundle", "ndjson", "phr", "sphr":
	default:
		return fhir.BadRequest("format: %q is not one of bundle, ndjson, phr, sphr", format)
	}
	aq := url.Values{"outputFormat": {format}}
	for _, k := range []string{"start", "end"} {
		if v := strings.TrimSpace(f.Get(k)); v != "" {
			if _, err := time.Parse("2006-01-02", v); err != nil {
				return fhir.BadRequest("%s: %q is not a date (YYYY-MM-DD)", k, v)
			}
			aq.Set(k, v)
		}
	}
	var types []string
	for _, t := range f["type"] {
		if !contains(exportTypes, t) {
			return fhir.BadRequest("type: %q is not one of the offered types", t)
		}
		types = append(types, t)
	}
	if len(types) > 0 {
		aq.Set("_type", strings.Join(types, ","))
	}
	h := http.Header{}
	if format == "sphr" {
		pass := f.Get("passphrase")
		if len(pass) < 8 {
			return fhir.BadRequest("passphrase: an encrypted .sphr needs a passphrase of at least 8 characters")
		}
		h.Set("X-PHR-Passphrase", pass)
	}
	q.w.Header().Set("Cache-Control", "no-store")
	return q.api.stream(q.w, http.MethodGet, "/fhir/Patient/"+url.PathEscape(q.pid)+"/$phr-export?"+aq.Encode(), nil, h)
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
