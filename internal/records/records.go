// Package records is the versioned resource service: FHIR create, read,
// vread, update, patch, delete, history and the transaction and batch
// Bundles, with validation, search indexing, patient-compartment access
// control and Binary contents kept in the blob store.
//
// It speaks Go types, never HTTP: the api package turns requests into
// calls here and results into responses.
package records

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/blob"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/r4"
	"github.com/phr-project/phr/internal/store"
)

// Validator checks a resource against the R4 definitions.
type Validator interface {
	// Validate returns the problems found (nil when valid).
	// conditionalRefs allows conditional references (Type?query), which a
	// transaction resolves before storing.
	Validate(res *fhirjson.Value, conditionalRefs bool) []fhir.Issue
}

// Indexer extracts the search index entries of a resource.
type Indexer interface {
	Extract(typ string, res *fhirjson.Value) (*index.Entries, error)
}

// Matcher finds resources for the conditional interactions (If-None-Exist,
// conditional update and delete, conditional references) with FHIR search.
type Matcher interface {
	// Match returns up to limit ids of current resources of type typ that
	// match the search parameters q. It must apply no access control: the
	// service does that on what it then reads.
	Match(ctx context.Context, typ string, q url.Values, limit int) ([]string, error)
}

// Service is the record service.
type Service struct {
	store    store.Store
	blobs    blob.Store
	validate Validator
	indexer  Indexer
	matcher  Matcher
	now      func() time.Time
	baseURL  string
	// MaxBinaryInline caps the bytes of a Binary read into a FHIR JSON
	// response (larger ones are only served raw).
	MaxBinaryInline int64
}

// Options configure a Service.
type Options struct {
	Store     store.Store
	Blobs     blob.Store
	Validator Validator
	Indexer   Indexer
	Matcher   Matcher
	// Now returns the current time (tests fix it); default time.Now.
	Now func() time.Time
	// BaseURL is the server's FHIR base (e.g. http://127.0.0.1:8080/fhir);
	// absolute URLs under it are treated as local references.
	BaseURL string
}

// New returns a Service.
func New(o Options) *Service {
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Service{store: o.Store, blobs: o.Blobs, validate: o.Validator, indexer: o.Indexer, matcher: o.Matcher, now: o.Now, baseURL: strings.TrimSuffix(o.BaseURL, "/"), MaxBinaryInline: 64 << 20}
}

// SetMatcher sets the search used by conditional interactions (the search
// service is built on top of the record service, so it comes later).
func (s *Service) SetMatcher(m Matcher) { s.matcher = m }

// Store returns the underlying store.
func (s *Service) Store() store.Store { return s.store }

// Blobs returns the blob store.
func (s *Service) Blobs() blob.Store { return s.blobs }

func principal(ctx context.Context) (access.Principal, error) {
	p := access.From(ctx)
	if p == nil {
		return nil, &fhir.Error{Status: http.StatusUnauthorized, Issues: []fhir.Issue{{Severity: "error", Code: "login", Diagnostics: "authentication required"}}}
	}
	return p, nil
}

// checkType refuses unknown resource types.
func checkType(typ string) error {
	if !r4.IsResourceType(typ) {
		return fhir.NotFound("unknown resource type %q", typ)
	}
	return nil
}

// allow checks that the principal may do i on typ.
func allow(p access.Principal, i access.Interaction, typ string) error {
	if !p.Allows(i, typ) {
		return fhir.Forbidden("the access token does not allow %s of %s", i, typ)
	}
	return nil
}

// Shared reports whether resources of type typ are reference data outside
// every patient compartment (Practitioner, Organization, Location,
// Medication...), which patient-confined callers may read but not write.
func Shared(typ string) bool { return len(r4.PatientCompartmentParams(typ)) == 0 }

// visible reports whether a patient-confined principal may see a stored
// resource: a Binary by binaryVisible, one of a shared type unless another
// patient owns it (sharedVisible), others when in its compartment.
func (s *Service) visible(ctx context.Context, p access.Principal, res *store.Resource) (bool, error) {
	pid := p.Patient()
	if pid == "" || !PatientOwned(res.Type) {
		return true, nil
	}
	if res.Type == "Binary" {
		return s.binaryVisible(ctx, p, res)
	}
	if res.Type == "Patient" && res.ID == pid {
		return true, nil
	}
	if Shared(res.Type) {
		return s.sharedVisible(p, res)
	}
	pats, err := s.patientsOfStored(res)
	if err != nil {
		return false, err
	}
	return slices.Contains(pats, pid), nil
}

// visibleLive reports whether a patient-confined principal may see the
// resource whose current version cur is: for a deleted resource, that of
// the version its deletion ended. The id of another patient's deleted
// resource is still that patient's: writing over it would put their
// earlier versions in the writer's history.
func (s *Service) visibleLive(ctx context.Context, p access.Principal, cur *store.Resource) (bool, error) {
	if p.Patient() == "" || !PatientOwned(cur.Type) {
		return true, nil
	}
	live, err := s.liveVersion(ctx, cur)
	if err != nil {
		return false, err
	}
	if live == nil {
		return true, nil
	}
	return s.visible(ctx, p, live)
}

// liveVersion returns the version that a deletion cur ended (cur itself
// when it is not a deletion), or nil for a deletion with no version before
// it.
func (s *Service) liveVersion(ctx context.Context, cur *store.Resource) (*store.Resource, error) {
	if !cur.Deleted {
		return cur, nil
	}
	if cur.Version <= 1 {
		return nil, nil
	}
	prev, err := s.store.ReadVersion(ctx, cur.Type, cur.ID, cur.Version-1)
	if err != nil {
		return nil, fmt.Errorf("read %s/%s version %d: %w", cur.Type, cur.ID, cur.Version-1, err)
	}
	return prev, nil
}

// Owns reports whether the principal of ctx may write over the resource
// whose stored current version cur is (deleted or not): a patient-confined
// principal only over resources of its own compartment (visibleLive),
// Binaries whose securityContext names its record (binaryOwned), and
// shared resources it owns (sharedOwned).
func (s *Service) Owns(ctx context.Context, cur *store.Resource) (bool, error) {
	p, err := principal(ctx)
	if err != nil {
		return false, err
	}
	switch {
	case p.Patient() == "":
	case cur.Type == "Binary":
		return s.binaryOwned(ctx, p, cur)
	case Shared(cur.Type):
		return s.sharedOwned(ctx, p, cur)
	}
	return s.visibleLive(ctx, p, cur)
}

// patientsOfStored computes the compartments of a stored version from its
// content (also right for old versions, whose index rows are gone).
func (s *Service) patientsOfStored(res *store.Resource) ([]string, error) {
	if res.Deleted || res.JSON == nil {
		return nil, nil
	}
	v, err := fhirjson.Parse(res.JSON)
	if err != nil {
		return nil, fmt.Errorf("parse stored %s/%s: %w", res.Type, res.ID, err)
	}
	e, err := s.indexer.Extract(res.Type, v)
	if err != nil {
		return nil, err
	}
	return Patients(res.Type, res.ID, e), nil
}

// Patients returns the ids of the patients whose compartment a resource
// with index entries e belongs to.
func Patients(typ, id string, e *index.Entries) []string {
	var out []string
	if typ == "Patient" {
		out = append(out, id)
	}
	params := compartmentParams(typ)
	if len(params) == 0 || e == nil {
		return out
	}
	for _, r := range e.Refs {
		if r.Type == "Patient" && r.ID != "" && slices.Contains(params, r.Param) && !slices.Contains(out, r.ID) {
			out = append(out, r.ID)
		}
	}
	return out
}

// compartmentSources caches compartmentParams: type -> []string.
var compartmentSources sync.Map

// compartmentParams returns the parameters whose Patient references put a
// resource of type typ in a patient's compartment, as index entries name
// them: the compartment definition's parameters, with each alias
// (index.AliasOf) replaced by its sources. An alias restricted to Patient
// references (Condition's patient: the subject references to a Patient)
// is its sources' Patient references, which is all Patients looks at.
func compartmentParams(typ string) []string {
	if v, ok := compartmentSources.Load(typ); ok {
		return v.([]string)
	}
	var out []string
	for _, p := range r4.PatientCompartmentParams(typ) {
		a, alias := index.AliasOf(typ, p)
		switch {
		case !alias:
			out = append(out, p)
		case a.TargetType == "" || a.TargetType == "Patient":
			out = append(out, a.Sources...)
		}
	}
	if index.Ownable(typ) {
		// a shared resource is in the compartment of its owner (owner.go)
		out = append(out, index.OwnerParam)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	compartmentSources.Store(typ, out)
	return out
}

// Read returns the current version of typ/id. A deleted resource gives a
// 410 error; a missing one 404; one outside the caller's compartment 404
// too (its existence is not revealed).
func (s *Service) Read(ctx context.Context, typ, id string) (*store.Resource, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkType(typ); err != nil {
		return nil, err
	}
	if err := allow(p, access.Read, typ); err != nil {
		return nil, err
	}
	res, err := s.store.Read(ctx, typ, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fhir.NotFound("%s/%s is not known", typ, id)
	}
	if err != nil {
		return nil, err
	}
	if res.Deleted {
		// Whether a tombstone is visible is decided on its last live version.
		prev, err := s.store.ReadVersion(ctx, typ, id, res.Version-1)
		if err == nil {
			if ok, err := s.visible(ctx, p, prev); err != nil || !ok {
				return nil, fhir.NotFound("%s/%s is not known", typ, id)
			}
		}
		return nil, &fhir.Error{Status: http.StatusGone, Issues: []fhir.Issue{{Severity: "error", Code: "deleted",
			Diagnostics: fmt.Sprintf("%s/%s was deleted (version %d); its history is still available", typ, id, res.Version)}}}
	}
	if ok, err := s.visible(ctx, p, res); err != nil {
		return nil, err
	} else if !ok {
		return nil, fhir.NotFound("%s/%s is not known", typ, id)
	}
	if err := s.checkFilters(ctx, p, res); err != nil {
		return nil, err
	}
	return res, nil
}

// ReadVersion returns version v of typ/id (vread).
func (s *Service) ReadVersion(ctx context.Context, typ, id string, v int64) (*store.Resource, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkType(typ); err != nil {
		return nil, err
	}
	if err := allow(p, access.Read, typ); err != nil {
		return nil, err
	}
	res, err := s.store.ReadVersion(ctx, typ, id, v)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fhir.NotFound("%s/%s has no version %d", typ, id, v)
	}
	if err != nil {
		return nil, err
	}
	check := res
	if res.Deleted && v > 1 {
		if check, err = s.store.ReadVersion(ctx, typ, id, v-1); err != nil {
			return nil, err
		}
	}
	if ok, err := s.visible(ctx, p, check); err != nil {
		return nil, err
	} else if !ok {
		return nil, fhir.NotFound("%s/%s has no version %d", typ, id, v)
	}
	if res.Deleted {
		return nil, &fhir.Error{Status: http.StatusGone, Issues: []fhir.Issue{{Severity: "error", Code: "deleted",
			Diagnostics: fmt.Sprintf("version %d of %s/%s is a deletion", v, typ, id)}}}
	}
	if err := s.checkFilters(ctx, p, res); err != nil {
		return nil, err
	}
	return res, nil
}

// checkFilters applies SMART v2 scope filters (e.g. category=laboratory)
// to a single resource read: it must match one of them.
func (s *Service) checkFilters(ctx context.Context, p access.Principal, res *store.Resource) error {
	filters := p.Filters(res.Type)
	if len(filters) == 0 {
		return nil
	}
	if s.matcher == nil {
		return fhir.Forbidden("the access token's scope filters cannot be checked")
	}
	for _, f := range filters {
		q := url.Values{}
		for k, v := range f {
			q[k] = v
		}
		q.Set("_id", res.ID)
		ids, err := s.matcher.Match(ctx, res.Type, q, 1)
		if err != nil {
			return err
		}
		if len(ids) > 0 {
			return nil
		}
	}
	return fhir.Forbidden("%s/%s is outside the access token's scopes", res.Type, res.ID)
}
