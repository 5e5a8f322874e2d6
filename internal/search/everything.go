package search

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/api"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/r4"
	"github.com/phr-project/phr/internal/records"
)

// serveEverything answers Patient/[id]/$everything: the patient's
// compartment (AuditEvents only when _type asks for them; the shared
// resources the patient owns are in it) with the shared resources it
// references (practitioners, organizations, medications...),
// paged like a search; _since, _type, start and end narrow it.
func (e *Engine) serveEverything(w http.ResponseWriter, r *http.Request, typ, id string) {
	if err := e.everything(w, r, id); err != nil {
		api.WriteError(w, r, err)
	}
}

func (e *Engine) everything(w http.ResponseWriter, r *http.Request, id string) error {
	ctx := r.Context()
	p, err := principal(ctx)
	if err != nil {
		return err
	}
	if !p.Allows(access.Read, "Patient") {
		return fhir.Forbidden("the access token does not allow reading Patient")
	}
	if pid := p.Patient(); pid != "" && pid != id {
		return fhir.NotFound("Patient/%s is not known", id)
	}
	v, err := requestParams(r)
	if err != nil {
		return err
	}
	if _, err := e.rec.Read(ctx, "Patient", id); err != nil {
		return err
	}
	lenient := lenient(r)
	var types []string
	explicit := false
	if tv := v.Get("_type"); tv != "" {
		explicit = true
		for _, t := range strings.Split(tv, ",") {
			t = strings.TrimSpace(t)
			if !r4.IsResourceType(t) {
				return fhir.BadRequest("_type: unknown resource type %q", t)
			}
			if p.Allows(access.Read, t) && !slices.Contains(types, t) {
				types = append(types, t)
			}
		}
	} else {
		for _, t := range r4.ResourceTypes() {
			// the compartment, with the shared resources the patient
			// owns (records: owner.go)
			if t == auditType || (t != "Patient" && len(r4.PatientCompartmentParams(t)) == 0 && !index.Ownable(t)) {
				continue
			}
			if p.Allows(access.Read, t) {
				types = append(types, t)
			}
		}
	}
	if len(types) == 0 {
		return fhir.Forbidden("the access token allows reading none of the requested types")
	}
	q := &query{types: types, count: defaultCount, explicitTypes: explicit}
	pl := &plan{q: q, compartment: id}
	for k, vals := range v {
		val := last(vals)
		switch k {
		case "_count":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 {
				return fhir.BadRequest("_count must be a positive integer, not %q", val)
			}
			q.count = min(n, maxCount)
		case "_cursor":
			q.cursor = val
		case "_since":
			t, err := fhir.ParseInstant(val)
			if err != nil {
				return fhir.BadRequest("_since: %v", err)
			}
			pl.since = t.UnixMicro()
		case "start", "end":
			low, high, err := index.DateRange(val)
			if err != nil {
				return fhir.BadRequest("%s: %v", k, err)
			}
			if k == "start" {
				pl.start, pl.hasStart = low, true
			} else {
				pl.end, pl.hasEnd = high, true
			}
		case "_type", "_format", "_pretty":
		default:
			if err := q.badParam(lenient, "$everything does not support the parameter %q", k); err != nil {
				return err
			}
		}
	}
	if err := restrict(p, pl); err != nil {
		return err
	}
	// the shared resources the page references come along as includes
	q.includes = []include{{param: "*", sharedOnly: true}}
	q.total = "accurate"
	return e.respondEverything(w, r, p, pl, e.base+"/Patient/"+id+"/$everything", v)
}

// respondEverything is respond with the includes narrowed to shared types
// (compartment members are matches in their own right).
func (e *Engine) respondEverything(w http.ResponseWriter, r *http.Request, p access.Principal, pl *plan, path string, v url.Values) error {
	return e.respond(w, r, sharedOnly{p}, pl, path, v)
}

// sharedOnly lets includes through only for types outside the patient
// compartment.
type sharedOnly struct{ access.Principal }

func (s sharedOnly) Allows(i access.Interaction, typ string) bool {
	if i == access.Read && !records.Shared(typ) {
		return false
	}
	return s.Principal.Allows(i, typ)
}
