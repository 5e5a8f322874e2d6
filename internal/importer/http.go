package importer

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/api"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/sphr"
	"github.com/phr-project/phr/internal/store"
)

// ImportCanonical is the PHR IG's canonical URL of the import operation.
const ImportCanonical = "http://hl7.org/fhir/uv/phr/OperationDefinition/phr-import"

// MaxReportedIssues caps the issues returned in a non-streamed response
// (all are streamed when the client accepts NDJSON).
const MaxReportedIssues = 1000

// Register adds the import and merge operations to the FHIR API:
//
//	POST [base]/Bundle/$import             import (NDJSON, Bundle, .phr, .sphr/zip)
//	GET  [base]/$import-batches[?batch=N]  the import log / one batch
//	GET  [base]/$import-quarantine?batch=N rejected input, verbatim
//	GET  [base]/$conflicts[?id=N&status=]  conflicts kept by the merge
//	POST [base]/$resolve-conflict          resolve one (keep, take, merged)
//	POST [base]/T/id/$revert?to=N          write version N back as a new version
//	GET  [base]/T/id/$diff?from=&to=       what changed between two versions
func Register(s *api.Server, imp *Importer) {
	h := &handlers{imp: imp}
	s.HandleOperation(&api.Operation{Name: "import", Definition: ImportCanonical, Types: []string{"Bundle"}, Methods: []string{http.MethodPost}, Handler: h.importOp, Resource: opDefImport})
	s.HandleOperation(&api.Operation{Name: "import-batches", System: true, Methods: []string{http.MethodGet}, Handler: h.batches, Resource: opDef("import-batches", "Import batches", "Lists import batches (the import log) or, with batch=N, one batch and the versions it wrote.", true, false, nil, []param{{"batch", "integer", 0, "1"}})})
	s.HandleOperation(&api.Operation{Name: "import-quarantine", System: true, Methods: []string{http.MethodGet}, Handler: h.quarantine, Resource: opDef("import-quarantine", "Quarantined import input", "Returns the rejected lines of an import batch verbatim with the reasons: file, line, entry (the index in Bundle.entry, for an entry of a Bundle), text and reason (NDJSON of the verbatim lines when the client accepts application/x-ndjson).", true, false, nil, []param{{"batch", "integer", 1, "1"}})})
	s.HandleOperation(&api.Operation{Name: "conflicts", System: true, Methods: []string{http.MethodGet}, Handler: h.conflicts, Resource: opDef("conflicts", "Merge conflicts", "Lists the conflicts an import kept (status=open by default, resolved or all) or, with id=N, one conflict with both sides.", true, false, nil, []param{{"id", "integer", 0, "1"}, {"status", "code", 0, "1"}})})
	s.HandleOperation(&api.Operation{Name: "resolve-conflict", System: true, Methods: []string{http.MethodPost}, Handler: h.resolve, Resource: opDef("resolve-conflict", "Resolve a merge conflict", "Resolves conflict id with action keep (the current version), take (the incoming side) or merge (the resource given): writes a new version with a Provenance citing both sides.", false, false, nil, []param{{"id", "integer", 1, "1"}, {"action", "code", 1, "1"}, {"resource", "Resource", 0, "1"}})})
	s.HandleOperation(&api.Operation{Name: "revert", Types: []string{"*"}, Instance: true, Methods: []string{http.MethodPost}, Handler: h.revert, Resource: opDef("revert", "Revert to a version", "Writes version `to` of the resource back as a new version with a Provenance; history is kept.", false, true, []string{"Resource"}, []param{{"to", "integer", 1, "1"}, {"reason", "string", 0, "1"}})})
	s.HandleOperation(&api.Operation{Name: "diff", Types: []string{"*"}, Instance: true, Methods: []string{http.MethodGet}, Handler: h.diff, Resource: opDef("diff", "Differences between versions", "Lists the changes (add, delete, replace with FHIRPath-like paths) from version `from` (default: the one before `to`) to version `to` (default: current).", true, true, []string{"Resource"}, []param{{"from", "integer", 0, "1"}, {"to", "integer", 0, "1"}})})
}

type handlers struct {
	imp *Importer
}

// inputKind is the format of an import body.
type inputKind int

const (
	kindAuto inputKind = iota
	kindNDJSON
	kindJSON
	kindZip
)

func bodyKind(r *http.Request) (inputKind, error) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return kindAuto, nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return 0, fhir.Errorf(http.StatusUnsupportedMediaType, "not-supported", "invalid Content-Type %q", ct)
	}
	switch mt {
	case "application/x-ndjson", "application/fhir+ndjson", "application/ndjson", "application/jsonl", "application/x-phr":
		return kindNDJSON, nil
	case "application/fhir+json", "application/json", "application/json+fhir", "application/smart-health-card":
		return kindJSON, nil
	case "application/zip", "application/x-zip-compressed", "application/x-sphr", "application/octet-stream":
		return kindZip, nil
	}
	return 0, fhir.Errorf(http.StatusUnsupportedMediaType, "not-supported", "Content-Type %q cannot be imported: send application/x-ndjson, application/fhir+ndjson, application/fhir+json (a Bundle), application/smart-health-card or application/zip (.sphr)", mt)
}

// coverLabel returns the source label that the cover page starting a
// body (NDJSON's first line, or a Bundle's first entry) gives: a phr
// export's names the FHIR base of the server that exported it
// (sphr.CoverSource), the label `phr clone` gives that server. "" when
// there is none.
func coverLabel(br *bufio.Reader) string {
	head, _ := br.Peek(64 << 10)
	return sphr.HeadCoverSource(head)
}

func wantsNDJSON(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, _ := mime.ParseMediaType(strings.TrimSpace(part))
		switch mt {
		case "application/x-ndjson", "application/fhir+ndjson", "application/ndjson":
			return true
		}
	}
	return false
}

// importOp serves POST [base]/Bundle/$import.
func (h *handlers) importOp(w http.ResponseWriter, r *http.Request, typ, id string) {
	q := r.URL.Query()
	if s := q.Get("strategy"); s != "" && s != "merge" {
		api.WriteError(w, r, fhir.BadRequest("strategy=%s is not supported: the only strategy is merge", s).AtPath("strategy"))
		return
	}
	mode := q.Get("mode")
	if mode != "" && mode != "validate" && mode != "commit" && mode != "merge" {
		api.WriteError(w, r, fhir.BadRequest("mode=%s is not supported: use mode=validate to check without writing", mode).AtPath("mode"))
		return
	}
	kind, err := bodyKind(r)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	name := q.Get("filename")
	if name == "" {
		if _, params, err := mime.ParseMediaType(r.Header.Get("Content-Disposition")); err == nil {
			name = params["filename"]
		}
	}
	if name == "" {
		name = "upload"
	}
	source := q.Get("source")
	body := io.Reader(r.Body)
	var archive *os.File // an archive spooled to read its cover page
	var archiveSize int64
	switch {
	case source != "":
	case kind == kindZip:
		f, n, err := spool(r.Body, name)
		if err != nil {
			api.WriteError(w, r, importError(err))
			return
		}
		defer os.Remove(f.Name())
		defer f.Close()
		archive, archiveSize = f, n
		source = sphr.ArchiveCoverSource(f, n, r.Header.Get("X-PHR-Passphrase"))
	default:
		br := bufio.NewReaderSize(r.Body, 64<<10)
		body = br
		source = coverLabel(br)
	}
	if source == "" {
		source = "upload:" + name
	}
	stream := wantsNDJSON(r)
	var (
		mu     sync.Mutex
		issues []fhir.Issue
		bw     *bufio.Writer
		rc     = http.NewResponseController(w)
		lines  int
	)
	if stream {
		// Read the body while writing per-line results.
		if err := rc.EnableFullDuplex(); err != nil {
			slog.Debug("full duplex unavailable", "error", err)
		}
		ct := "application/x-ndjson"
		if strings.Contains(r.Header.Get("Accept"), "application/fhir+ndjson") {
			ct = "application/fhir+ndjson"
		}
		w.Header().Set("Content-Type", ct)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		bw = bufio.NewWriterSize(w, 16<<10)
	}
	started := false
	report := func(is fhir.Issue) {
		mu.Lock()
		defer mu.Unlock()
		if stream {
			if !started {
				w.WriteHeader(http.StatusOK)
				started = true
			}
			bw.Write(fhir.OutcomeJSON([]fhir.Issue{is}))
			bw.WriteByte('\n')
			lines++
			if lines%64 == 0 {
				bw.Flush()
				rc.Flush()
			}
			return
		}
		if len(issues) < MaxReportedIssues {
			issues = append(issues, is)
		}
	}
	run, err := h.imp.Begin(r.Context(), Options{Source: source, Filename: name, Validate: mode == "validate", Report: report})
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	switch kind {
	case kindNDJSON:
		err = run.NDJSON(body, name)
	case kindJSON:
		err = run.Bundle(body, name)
	case kindZip:
		if archive != nil {
			err = run.Zip(archive, archiveSize, name, r.Header.Get("X-PHR-Passphrase"))
		} else {
			err = run.spoolZip(body, name, r.Header.Get("X-PHR-Passphrase"))
		}
	default:
		err = run.File(body, name, -1, r.Header.Get("X-PHR-Passphrase"))
	}
	if err == nil {
		err = run.Complete()
	}
	status := "done"
	if err != nil {
		status = "failed"
		if r.Context().Err() != nil {
			status = "aborted"
		}
	}
	sum, ferr := run.Finish(status)
	if err == nil {
		err = ferr
	}
	if err != nil {
		fe := importError(err)
		if fe.Status >= 500 {
			slog.ErrorContext(r.Context(), "import failed", "batch", sum.Batch, "error", err)
		}
		if !stream || !started {
			if stream {
				// Nothing written yet: a plain error response.
				w.Header().Del("Content-Type")
			}
			if sum.Batch > 0 && sum.Resources > 0 && mode != "validate" {
				// Chunks before the error may be committed: say so, and
				// what they wrote.
				fe = &fhir.Error{Status: fe.Status, Err: fe.Err, Issues: append(slices.Clip(fe.Issues), fhir.Issue{Severity: "information", Code: "incomplete",
					Diagnostics: fmt.Sprintf("the import stopped; batch %d keeps what was committed before (created %d, updated %d, unchanged %d, conflicts %d, rejected %d); run the same import again to complete it",
						sum.Batch, sum.Created, sum.Updated, sum.Unchanged, sum.Conflicts, sum.Rejected)})}
			}
			api.WriteError(w, r, fe)
			return
		}
		mu.Lock()
		bw.Write(fhir.OutcomeJSON(append(fe.Issues, fhir.Issue{Severity: "fatal", Code: "incomplete", Diagnostics: fmt.Sprintf("the import stopped; batch %d keeps what was committed; run the same import again to complete it", sum.Batch)})))
		bw.WriteByte('\n')
		bw.Write(summaryJSON(sum, mode == "validate", nil))
		bw.WriteByte('\n')
		bw.Flush()
		mu.Unlock()
		return
	}
	if stream {
		mu.Lock()
		if !started {
			w.WriteHeader(http.StatusOK)
		}
		bw.Write(summaryJSON(sum, mode == "validate", nil))
		bw.WriteByte('\n')
		bw.Flush()
		mu.Unlock()
		return
	}
	writeJSON(w, http.StatusOK, summaryJSON(sum, mode == "validate", issues))
}

// summaryJSON renders an import summary as a Parameters resource.
func summaryJSON(sum Summary, validate bool, issues []fhir.Issue) []byte {
	mode := "merge"
	if validate {
		mode = "validate"
	}
	params := []*fhirjson.Value{
		intParam("batch", sum.Batch),
		param1("mode", "valueCode", fhirjson.NewString(mode)),
		param1("source", "valueUri", fhirjson.NewString(sum.Source)),
		intParam("created", int64(sum.Created)),
		intParam("updated", int64(sum.Updated)),
		intParam("unchanged", int64(sum.Unchanged)),
		intParam("conflicts", int64(sum.Conflicts)),
		intParam("rejected", int64(sum.Rejected)),
		intParam("deleted", int64(sum.Deleted)),
		intParam("resources", int64(sum.Resources)),
		param1("bytes", "valueDecimal", fhirjson.NewNumber(strconv.FormatInt(sum.Bytes, 10))),
	}
	if issues != nil || !validate {
		if len(issues) > 0 {
			params = append(params, param1("outcome", "resource", fhir.Outcome(issues)))
		}
	}
	return parameters(params...).Marshal()
}

func parameters(params ...*fhirjson.Value) *fhirjson.Value {
	return fhirjson.NewObject(
		fhirjson.Field{Name: "resourceType", Value: fhirjson.NewString("Parameters")},
		fhirjson.Field{Name: "parameter", Value: fhirjson.NewArray(params...)},
	)
}

func param1(name, key string, v *fhirjson.Value) *fhirjson.Value {
	return fhirjson.NewObject(fhirjson.Field{Name: "name", Value: fhirjson.NewString(name)}, fhirjson.Field{Name: key, Value: v})
}

func intParam(name string, n int64) *fhirjson.Value {
	if n > 2147483647 {
		return param1(name, "valueDecimal", fhirjson.NewNumber(strconv.FormatInt(n, 10)))
	}
	return param1(name, "valueInteger", fhirjson.NewNumber(strconv.FormatInt(n, 10)))
}

func parts(name string, ps ...*fhirjson.Value) *fhirjson.Value {
	return fhirjson.NewObject(fhirjson.Field{Name: "name", Value: fhirjson.NewString(name)}, fhirjson.Field{Name: "part", Value: fhirjson.NewArray(ps...)})
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/fhir+json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// intQuery parses an integer query parameter (0 when absent).
func intQuery(r *http.Request, name string, required bool) (int64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		if required {
			return 0, fhir.Errorf(http.StatusBadRequest, "required", "the parameter %s is required", name).AtPath(name)
		}
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 {
		return 0, fhir.BadRequest("%s=%q is not a positive integer", name, s).AtPath(name)
	}
	return n, nil
}

func principal(r *http.Request) (access.Principal, error) {
	p := access.From(r.Context())
	if p == nil {
		return nil, &fhir.Error{Status: http.StatusUnauthorized, Issues: []fhir.Issue{{Severity: "error", Code: "login", Diagnostics: "authentication required"}}}
	}
	return p, nil
}

type param struct {
	name, typ string
	min       int
	max       string
}

// opDef builds an OperationDefinition resource.
func opDef(code, title, desc string, readOnly bool, instance bool, types []string, in []param) []byte {
	type p struct {
		Name          string `json:"name"`
		Use           string `json:"use"`
		Min           int    `json:"min"`
		Max           string `json:"max"`
		Type          string `json:"type,omitempty"`
		Documentation string `json:"documentation,omitempty"`
	}
	params := []p{}
	for _, x := range in {
		params = append(params, p{Name: x.name, Use: "in", Min: x.min, Max: x.max, Type: x.typ})
	}
	params = append(params, p{Name: "return", Use: "out", Min: 1, Max: "1", Type: "Parameters"})
	def := map[string]any{
		"resourceType": "OperationDefinition",
		"id":           "phr-" + code,
		"url":          "urn:phr:OperationDefinition/" + code,
		"name":         strings.ReplaceAll(title, " ", ""),
		"title":        title,
		"status":       "active",
		"kind":         "operation",
		"description":  desc,
		"affectsState": !readOnly,
		"code":         code,
		"system":       !instance,
		"type":         false,
		"instance":     instance,
		"parameter":    params,
	}
	if len(types) > 0 {
		def["resource"] = types
	}
	b, _ := json.Marshal(def)
	return b
}

var opDefImport = func() []byte {
	b, _ := json.Marshal(map[string]any{
		"resourceType": "OperationDefinition",
		"id":           "phr-import",
		"url":          ImportCanonical,
		"name":         "PhrImport",
		"title":        "Import a personal health record",
		"status":       "active",
		"kind":         "operation",
		"description":  "Imports NDJSON (application/x-ndjson, application/fhir+ndjson), a FHIR Bundle (application/fhir+json: document, collection, transaction, batch, searchset; a history Bundle oldest version first), a .phr file, a .sphr/zip (application/zip, X-PHR-Passphrase when encrypted) or SMART Health Cards (application/smart-health-card, a card's JWS or its shc:/ QR text; signatures checked with the issuer keys the server is given) and merges it into the record: identity map per source, business-identifier matching, reference rewriting, exact-duplicate detection, supplement of newer versions from the same source, conflicts kept with both sides, meta.source and a Provenance on every version written. Rejected input is kept verbatim ($import-quarantine). With Accept: application/x-ndjson the response streams one OperationOutcome per problem and ends with the summary.",
		"affectsState": true,
		"code":         "import",
		"resource":     []string{"Bundle"},
		"system":       false,
		"type":         true,
		"instance":     false,
		"parameter": []map[string]any{
			{"name": "source", "use": "in", "min": 0, "max": "1", "type": "string", "documentation": "Where the data came from (a label or URL); it becomes meta.source of every version written."},
			{"name": "mode", "use": "in", "min": 0, "max": "1", "type": "code", "documentation": "validate: check and report, write nothing."},
			{"name": "strategy", "use": "in", "min": 0, "max": "1", "type": "code", "documentation": "merge (the default and only strategy)."},
			{"name": "filename", "use": "in", "min": 0, "max": "1", "type": "string", "documentation": "Name of the uploaded file, for the import log (also read from Content-Disposition)."},
			{"name": "return", "use": "out", "min": 1, "max": "1", "type": "Parameters", "documentation": "batch, created, updated, unchanged, conflicts, rejected, deleted, resources and an outcome with the problems found."},
		},
	})
	return b
}()

var errNotFound = errors.New("not found")

// importError is the response to an import that failed with err. A write
// that met a concurrent one (store.ErrConflict: another import of the
// same source wrote the same resources, and merging the chunk again could
// not keep the ids the next chunk relied on) is a 409 whose diagnostics
// say which resource and that importing again completes the import;
// other failures are as fhir.AsError makes them.
func importError(err error) *fhir.Error {
	var fe *fhir.Error
	if !errors.As(err, &fe) && errors.Is(err, store.ErrConflict) {
		return &fhir.Error{Status: http.StatusConflict, Err: err,
			Issues: []fhir.Issue{{Severity: "error", Code: "conflict", Diagnostics: err.Error()}}}
	}
	return fhir.AsError(err)
}
