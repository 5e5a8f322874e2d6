// Package api is the HTTP layer of the FHIR REST API: routing, content
// negotiation, FHIR headers (ETag, Location, Last-Modified, Prefer),
// authentication and OperationOutcome errors. It parses requests, calls
// the services and writes their results; the rules live in the services.
package api

import (
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/r4"
	"github.com/phr-project/phr/internal/records"
)

// Authenticator turns a request's credentials into a principal. It
// returns a *fhir.Error with status 401 when they are missing or invalid.
type Authenticator interface {
	Authenticate(r *http.Request) (access.Principal, error)
}

// OperationHandler serves a FHIR operation ($name). typ and id are empty
// at levels above them.
type OperationHandler func(w http.ResponseWriter, r *http.Request, typ, id string)

// Operation describes a registered operation for the CapabilityStatement.
type Operation struct {
	// Name without the leading $.
	Name string
	// Definition is the canonical URL of its OperationDefinition.
	Definition string
	// System, Types and Instance say where it can be invoked: at the base,
	// on the listed types ([base]/T/$op) and/or on instances ([base]/T/id/$op).
	System   bool
	Types    []string
	Instance bool
	Methods  []string
	Handler  OperationHandler
	// Public operations do their own authentication (or none).
	Public bool
	// Resource is the operation's OperationDefinition as FHIR JSON (with
	// an id). When set, the server serves it at
	// [base]/OperationDefinition/[id] (without authentication, like
	// metadata) and Definition defaults to that URL.
	Resource []byte
}

// SearchHandler serves searches: typ is "" for system search; compType
// and compID name a compartment ([base]/Patient/1/Observation).
type SearchHandler func(w http.ResponseWriter, r *http.Request, typ, compType, compID string)

// Server serves the FHIR REST API under /fhir.
type Server struct {
	records *records.Service
	auth    Authenticator
	// base is the public FHIR base URL, e.g. http://127.0.0.1:8080/fhir.
	base string
	// MaxBody caps request bodies of ordinary interactions.
	MaxBody int64
	search  SearchHandler

	mu  sync.RWMutex
	ops []*Operation
	// capabilityHooks let features add to the CapabilityStatement.
	capHooks []func(cs *Capability)
	started  time.Time
}

// Options configure a Server.
type Options struct {
	Records *records.Service
	Auth    Authenticator
	// BaseURL is the public FHIR base URL (ending in /fhir).
	BaseURL string
	// MaxBody caps request bodies (default 64 MiB).
	MaxBody int64
}

// New returns a Server.
func New(o Options) *Server {
	if o.MaxBody <= 0 {
		o.MaxBody = 64 << 20
	}
	return &Server{records: o.Records, auth: o.Auth, base: strings.TrimSuffix(o.BaseURL, "/"), MaxBody: o.MaxBody, started: time.Now().UTC()}
}

// Base returns the FHIR base URL.
func (s *Server) Base() string { return s.base }

// Records returns the record service.
func (s *Server) Records() *records.Service { return s.records }

// SetSearch installs the search handler.
func (s *Server) SetSearch(h SearchHandler) { s.search = h }

// HandleOperation registers an operation.
func (s *Server) HandleOperation(op *Operation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if op.Resource != nil && op.Definition == "" {
		if id := operationDefinitionID(op.Resource); id != "" {
			op.Definition = s.base + "/OperationDefinition/" + id
		}
	}
	s.ops = append(s.ops, op)
	sort.SliceStable(s.ops, func(i, j int) bool { return s.ops[i].Name < s.ops[j].Name })
}

// operationDefinition returns the OperationDefinition with the given id
// among the registered operations, or nil.
func (s *Server) operationDefinition(id string) []byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, op := range s.ops {
		if op.Resource != nil && operationDefinitionID(op.Resource) == id {
			return op.Resource
		}
	}
	return nil
}

func operationDefinitionID(def []byte) string {
	var v struct {
		ResourceType string `json:"resourceType"`
		ID           string `json:"id"`
	}
	if json.Unmarshal(def, &v) != nil || v.ResourceType != "OperationDefinition" {
		return ""
	}
	return v.ID
}

// AddCapability registers a function that adds to the CapabilityStatement.
func (s *Server) AddCapability(f func(cs *Capability)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.capHooks = append(s.capHooks, f)
}

func (s *Server) operation(name string, level int, typ string) *Operation {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, op := range s.ops {
		if op.Name != name {
			continue
		}
		switch level {
		case 0:
			if op.System {
				return op
			}
		case 1:
			for _, t := range op.Types {
				if t == typ || t == "*" {
					return op
				}
			}
		case 2:
			if op.Instance {
				for _, t := range op.Types {
					if t == typ || t == "*" {
						return op
					}
				}
			}
		}
	}
	return nil
}

// ServeHTTP routes requests under /fhir.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/fhir")
	path = strings.Trim(path, "/")
	var seg []string
	if path != "" {
		seg = strings.Split(path, "/")
	}
	// Unauthenticated endpoints: capabilities, and operations that do
	// their own checks (e.g. downloads with their own tokens).
	if len(seg) == 1 && seg[0] == "metadata" {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			WriteError(w, r, methodNotAllowed(r))
			return
		}
		s.serveCapability(w, r)
		return
	}
	if op := s.routeOperation(seg); op != nil && op.Public {
		s.callOperation(w, r, op, seg)
		return
	}
	if len(seg) == 2 && seg[0] == "OperationDefinition" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		if def := s.operationDefinition(seg[1]); def != nil {
			w.Header().Set("Content-Type", "application/fhir+json; charset=utf-8")
			w.Header().Set("Cache-Control", "public, max-age=3600")
			w.Write(def)
			return
		}
	}
	// Binary reads may ask for the raw content type.
	rawBinary := len(seg) >= 2 && seg[0] == "Binary" && (r.Method == http.MethodGet || r.Method == http.MethodHead)
	if err := checkFormat(r); err != nil && !rawBinary {
		WriteError(w, r, err)
		return
	}
	if s.auth == nil {
		WriteError(w, r, &fhir.Error{Status: http.StatusUnauthorized, Issues: []fhir.Issue{{Severity: "error", Code: "login", Diagnostics: "no authentication configured"}}})
		return
	}
	p, err := s.auth.Authenticate(r)
	if err != nil {
		WriteError(w, r, err)
		return
	}
	if err := decodeBody(r); err != nil {
		WriteError(w, r, err)
		return
	}
	r = r.WithContext(access.With(r.Context(), p))
	s.route(w, r, seg)
}

// routeOperation finds the operation a path names, if any.
func (s *Server) routeOperation(seg []string) *Operation {
	switch {
	case len(seg) == 1 && strings.HasPrefix(seg[0], "$"):
		return s.operation(seg[0][1:], 0, "")
	case len(seg) == 2 && strings.HasPrefix(seg[1], "$"):
		return s.operation(seg[1][1:], 1, seg[0])
	case len(seg) == 3 && strings.HasPrefix(seg[2], "$"):
		return s.operation(seg[2][1:], 2, seg[0])
	}
	return nil
}

func (s *Server) callOperation(w http.ResponseWriter, r *http.Request, op *Operation, seg []string) {
	if len(op.Methods) > 0 {
		ok := false
		for _, m := range op.Methods {
			if m == r.Method || (m == http.MethodGet && r.Method == http.MethodHead) {
				ok = true
			}
		}
		if !ok {
			WriteError(w, r, methodNotAllowed(r))
			return
		}
	}
	var typ, id string
	if len(seg) >= 2 {
		typ = seg[0]
	}
	if len(seg) == 3 {
		id = seg[1]
	}
	op.Handler(w, r, typ, id)
}

func methodNotAllowed(r *http.Request) error {
	return fhir.Errorf(http.StatusMethodNotAllowed, "not-supported", "%s is not allowed on %s", r.Method, r.URL.Path)
}

func (s *Server) route(w http.ResponseWriter, r *http.Request, seg []string) {
	if op := s.routeOperation(seg); op != nil {
		s.callOperation(w, r, op, seg)
		return
	}
	m := r.Method
	switch len(seg) {
	case 0:
		switch m {
		case http.MethodPost:
			s.bundle(w, r)
		case http.MethodGet, http.MethodHead:
			s.doSearch(w, r, "", "", "")
		default:
			WriteError(w, r, methodNotAllowed(r))
		}
		return
	case 1:
		switch {
		case seg[0] == "_history" && (m == http.MethodGet || m == http.MethodHead):
			s.history(w, r, "", "")
			return
		case seg[0] == "_search" && m == http.MethodPost:
			s.doSearch(w, r, "", "", "")
			return
		case strings.HasPrefix(seg[0], "$"):
			WriteError(w, r, fhir.Errorf(http.StatusNotFound, "not-supported", "operation %s is not supported at the system level", seg[0]))
			return
		}
		typ := seg[0]
		if !r4.IsResourceType(typ) {
			WriteError(w, r, fhir.NotFound("unknown resource type %q", typ))
			return
		}
		switch m {
		case http.MethodGet, http.MethodHead:
			s.doSearch(w, r, typ, "", "")
		case http.MethodPost:
			s.create(w, r, typ)
		case http.MethodPut:
			s.conditionalUpdate(w, r, typ)
		case http.MethodDelete:
			s.conditionalDelete(w, r, typ)
		default:
			WriteError(w, r, methodNotAllowed(r))
		}
		return
	case 2:
		typ, second := seg[0], seg[1]
		if !r4.IsResourceType(typ) {
			WriteError(w, r, fhir.NotFound("unknown resource type %q", typ))
			return
		}
		switch {
		case second == "_history" && (m == http.MethodGet || m == http.MethodHead):
			s.history(w, r, typ, "")
			return
		case second == "_search" && m == http.MethodPost:
			s.doSearch(w, r, typ, "", "")
			return
		case strings.HasPrefix(second, "$"):
			WriteError(w, r, fhir.Errorf(http.StatusNotFound, "not-supported", "operation %s is not supported on %s", second, typ))
			return
		}
		switch m {
		case http.MethodGet, http.MethodHead:
			s.read(w, r, typ, second)
		case http.MethodPut:
			s.update(w, r, typ, second)
		case http.MethodPatch:
			s.patch(w, r, typ, second)
		case http.MethodDelete:
			s.delete(w, r, typ, second)
		default:
			WriteError(w, r, methodNotAllowed(r))
		}
		return
	case 3:
		typ, id, third := seg[0], seg[1], seg[2]
		if !r4.IsResourceType(typ) {
			WriteError(w, r, fhir.NotFound("unknown resource type %q", typ))
			return
		}
		if third == "_history" && (m == http.MethodGet || m == http.MethodHead) {
			s.history(w, r, typ, id)
			return
		}
		if strings.HasPrefix(third, "$") {
			WriteError(w, r, fhir.Errorf(http.StatusNotFound, "not-supported", "operation %s is not supported on %s instances", third, typ))
			return
		}
		if r4.IsResourceType(third) && (m == http.MethodGet || m == http.MethodHead) {
			s.doSearch(w, r, third, typ, id)
			return
		}
		if third == "*" && (m == http.MethodGet || m == http.MethodHead) {
			s.doSearch(w, r, "", typ, id)
			return
		}
	case 4:
		typ, id, third, vid := seg[0], seg[1], seg[2], seg[3]
		if third == "_history" && r4.IsResourceType(typ) && (m == http.MethodGet || m == http.MethodHead) {
			v, err := strconv.ParseInt(vid, 10, 64)
			if err != nil || v < 1 {
				WriteError(w, r, fhir.NotFound("%q is not a version number", vid))
				return
			}
			s.vread(w, r, typ, id, v)
			return
		}
		if third == "_search" && r4.IsResourceType(typ) && r4.IsResourceType(vid) && m == http.MethodPost {
			s.doSearch(w, r, vid, typ, id)
			return
		}
	}
	WriteError(w, r, fhir.NotFound("no FHIR interaction matches %s %s", m, r.URL.Path))
}

func (s *Server) doSearch(w http.ResponseWriter, r *http.Request, typ, compType, compID string) {
	if s.search == nil {
		WriteError(w, r, fhir.Errorf(http.StatusNotImplemented, "not-supported", "search is not available"))
		return
	}
	s.search(w, r, typ, compType, compID)
}
