package phrexport

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/r4"
)

// Output formats.
const (
	FormatBundle = "bundle"
	FormatNDJSON = "ndjson"
	FormatPHR    = "phr"
	FormatSPHR   = "sphr"
)

// Params describe one export.
type Params struct {
	// Format is FormatBundle (default), FormatNDJSON, FormatPHR or FormatSPHR.
	Format string
	// Patient is the id of the one patient to export; empty exports every
	// patient the caller may see (a patient-confined caller: itself).
	Patient string
	// Start and End are the clinical date range as given (partial dates:
	// "2010", "2020-06"); empty for no bound.
	Start, End string
	// Types narrows the export to these resource types (_type).
	Types []string
	// Since and Until bound meta.lastUpdated (_since, _until).
	Since, Until time.Time
	// Passphrase encrypts a .sphr; empty means a generated one
	// (Export sets GeneratedPassphrase).
	Passphrase string
	// Sign asks for a detached JWS of the output (see Service.Signer).
	Sign bool
	// FHIRNDJSON answers NDJSON as application/fhir+ndjson.
	FHIRNDJSON bool
	// Progress, when set, is called after each page with the resources
	// and bytes written so far.
	Progress func(resources, bytes int64)

	// set by Prepare
	startLow, endHigh int64
	hasRange          bool
	types             []string // allowed types; nil means all but AuditEvent
	excluded          []string // why types are left out (scope filters that cannot be applied)
	// filtered holds the SMART v2 scope filters (alternatives) of the
	// allowed types that have them: their resources are exported only
	// when they match one (checked page by page with the Matcher).
	filtered    map[string][]url.Values
	patientName string
	// GeneratedPassphrase is set when the server generated the passphrase.
	GeneratedPassphrase bool
}

// ParseFormat maps outputFormat values (names and MIME types) to a format.
func ParseFormat(s string) (string, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "bundle", "application/fhir+json", "application/json", "json":
		return FormatBundle, nil
	case "ndjson", "application/fhir+ndjson", "application/x-ndjson", "application/ndjson":
		return FormatNDJSON, nil
	case "phr":
		return FormatPHR, nil
	case "sphr", "application/zip":
		return FormatSPHR, nil
	}
	return "", fhir.BadRequest("outputFormat=%q is not supported: use bundle, ndjson, phr or sphr", s).AtPath("outputFormat")
}

// ParseTypes parses a _type value (comma-separated resource types).
func ParseTypes(vals []string) ([]string, error) {
	var out []string
	for _, v := range vals {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			if t == "" {
				continue
			}
			if !r4.IsResourceType(t) {
				return nil, fhir.BadRequest("_type: %q is not a FHIR R4 resource type", t).AtPath("_type")
			}
			if !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
	}
	return out, nil
}

// ParseInstant parses a _since/_until value: an instant, or a date or
// partial date (taken as its start for _since and its end for _until).
func ParseInstant(name, s string, end bool) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := fhir.ParseInstant(s); err == nil {
		return t, nil
	}
	low, high, err := index.DateRange(s)
	if err != nil {
		return time.Time{}, fhir.BadRequest("%s: %v", name, err).AtPath(name)
	}
	if end {
		return time.UnixMicro(high).UTC(), nil
	}
	return time.UnixMicro(low).UTC(), nil
}

// ParsePatient accepts "Patient/123" or "123".
func ParsePatient(s string) (string, error) {
	s = strings.TrimSpace(s)
	id := strings.TrimPrefix(s, "Patient/")
	if !fhir.ValidID(id) {
		return "", fhir.BadRequest("patient=%q: expected Patient/[id]", s).AtPath("patient")
	}
	return id, nil
}

func (p *Params) parseRange() error {
	p.hasRange = false
	p.startLow, p.endHigh = minMicros, maxMicros
	if p.Start != "" {
		low, _, err := index.DateRange(p.Start)
		if err != nil {
			return fhir.BadRequest("start: %v", err).AtPath("start")
		}
		p.startLow, p.hasRange = low, true
	}
	if p.End != "" {
		_, high, err := index.DateRange(p.End)
		if err != nil {
			return fhir.BadRequest("end: %v", err).AtPath("end")
		}
		p.endHigh, p.hasRange = high, true
	}
	if p.startLow > p.endHigh {
		return fhir.BadRequest("start %s is after end %s", p.Start, p.End).AtPath("start")
	}
	if !p.Since.IsZero() && !p.Until.IsZero() && p.Since.After(p.Until) {
		return fhir.BadRequest("_since is after _until").AtPath("_since")
	}
	return nil
}

const (
	minMicros = -1 << 63
	maxMicros = 1<<63 - 1
)

// clinicalDates lists, per resource type, the date search parameters that
// carry its clinical date (the PHR API's start/end select on them). Types
// not listed have no clinical date and are always exported.
var clinicalDates = map[string][]string{
	"AllergyIntolerance":       {"onset", "date"},
	"Appointment":              {"date"},
	"CarePlan":                 {"date"},
	"CareTeam":                 {"date"},
	"Claim":                    {"created"},
	"ClinicalImpression":       {"date"},
	"Communication":            {"sent"},
	"Composition":              {"date"},
	"Condition":                {"onset-date", "recorded-date"},
	"DetectedIssue":            {"identified"},
	"DeviceRequest":            {"authored-on"},
	"DiagnosticReport":         {"date"},
	"DocumentReference":        {"date"},
	"Encounter":                {"date"},
	"EpisodeOfCare":            {"date"},
	"ExplanationOfBenefit":     {"created"},
	"FamilyMemberHistory":      {"date"},
	"Flag":                     {"date"},
	"Goal":                     {"start-date"},
	"ImagingStudy":             {"started"},
	"Immunization":             {"date"},
	"List":                     {"date"},
	"Media":                    {"created"},
	"MedicationAdministration": {"effective-time"},
	"MedicationDispense":       {"whenhandedover"},
	"MedicationRequest":        {"authoredon"},
	"MedicationStatement":      {"effective"},
	"NutritionOrder":           {"datetime"},
	"Observation":              {"date"},
	"Procedure":                {"date"},
	"Provenance":               {"recorded"},
	"QuestionnaireResponse":    {"authored"},
	"RiskAssessment":           {"date"},
	"ServiceRequest":           {"authored"},
	"Specimen":                 {"collected"},
}

// ClinicalDateParams returns the search parameters whose dates select
// resources of typ by start/end (nil: the type is always exported).
func ClinicalDateParams(typ string) []string { return clinicalDates[typ] }

func badMethod(r *http.Request) error {
	return fhir.Errorf(http.StatusMethodNotAllowed, "not-supported", "%s is not allowed on %s: use GET (or POST with a Parameters body)", r.Method, r.URL.Path)
}
