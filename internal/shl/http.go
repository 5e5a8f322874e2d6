package shl

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/api"
	"github.com/phr-project/phr/internal/fhir"
)

// Register adds the management API, the recipient protocol and the
// viewer page to mux:
//
//	POST   /shl, /shl/links             create a link (CreateRequest)
//	GET    /shl, /shl/links             list the caller's links (?patient=)
//	GET    /shl/links/{id}              one link
//	PATCH  /shl/links/{id} (or PUT)     update passcode, expiry, label (UpdateRequest)
//	DELETE /shl/links/{id}              revoke
//	POST   /shl/links/{id}/files        add a file (Selection)
//	POST   /shl/links/{id}/refresh      re-read and re-encrypt an L link's files
//	GET    /shl/links/{id}/log          access log
//	POST   /shl/m/{mid}                 manifest (recipients, no authentication)
//	GET    /shl/m/{mid}?recipient=      U links: the file itself
//	GET    /shl/f/{token}               location URLs
//	GET    /shl/view                    the viewer page
func (s *Service) Register(mux *http.ServeMux) {
	for _, p := range []string{"/shl", "/shl/links"} {
		mux.HandleFunc("POST "+p, s.owner(s.handleCreate))
		mux.HandleFunc("GET "+p, s.owner(s.handleList))
	}
	mux.HandleFunc("GET /shl/links/{id}", s.owner(s.handleGet))
	mux.HandleFunc("PATCH /shl/links/{id}", s.owner(s.handleUpdate))
	mux.HandleFunc("PUT /shl/links/{id}", s.owner(s.handleUpdate))
	mux.HandleFunc("DELETE /shl/links/{id}", s.owner(s.handleRevoke))
	mux.HandleFunc("POST /shl/links/{id}/files", s.owner(s.handleAddFile))
	mux.HandleFunc("POST /shl/links/{id}/refresh", s.owner(s.handleRefresh))
	mux.HandleFunc("GET /shl/links/{id}/log", s.owner(s.handleLog))
	mux.HandleFunc("POST /shl/m/{mid}", s.handleManifest)
	mux.HandleFunc("GET /shl/m/{mid}", s.handleDirect)
	mux.HandleFunc("OPTIONS /shl/m/{mid}", preflight)
	mux.HandleFunc("GET /shl/f/{tok}", s.handleLocation)
	mux.HandleFunc("OPTIONS /shl/f/{tok}", preflight)
	mux.HandleFunc("GET /shl/view", handleViewer)
}

// owner authenticates the bearer token of a management request.
func (s *Service) owner(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if s.o.Auth == nil {
			api.WriteError(w, r, fhir.Errorf(http.StatusUnauthorized, "login", "no authenticator is configured"))
			return
		}
		p, err := s.o.Auth.Authenticate(r)
		if err != nil {
			api.WriteError(w, r, err)
			return
		}
		h(w, r.WithContext(access.With(r.Context(), p)))
	}
}

// readJSON decodes a JSON body into v, refusing unknown members (typos
// in management requests must not pass silently).
func (s *Service) readJSON(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	return decodeJSON(w, r, v, limit, true)
}

// decodeJSON decodes a JSON body into v; strict refuses unknown members.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, limit int64, strict bool) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return fhir.Errorf(http.StatusUnsupportedMediaType, "not-supported", "Content-Type %q: send application/json", ct)
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return fhir.Errorf(http.StatusRequestEntityTooLarge, "too-costly", "the body is larger than %d bytes", limit)
		case errors.Is(err, io.EOF):
			return fhir.BadRequest("the body is empty; send a JSON object")
		}
		return fhir.BadRequest("the body is not the expected JSON: %v", err)
	}
	if dec.More() {
		return fhir.BadRequest("the body holds more than one JSON value")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode response", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

func (s *Service) handleCreate(w http.ResponseWriter, r *http.Request) {
	var req CreateRequest
	if err := s.readJSON(w, r, &req, s.o.MaxBody); err != nil {
		api.WriteError(w, r, err)
		return
	}
	l, err := s.Create(r.Context(), &req)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	w.Header().Set("Location", s.base+"/shl/links/"+l.ID)
	writeJSON(w, http.StatusCreated, l)
}

func (s *Service) handleList(w http.ResponseWriter, r *http.Request) {
	links, err := s.List(r.Context(), r.URL.Query().Get("patient"))
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"links": links})
}

func (s *Service) handleGet(w http.ResponseWriter, r *http.Request) {
	l, err := s.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

func (s *Service) handleUpdate(w http.ResponseWriter, r *http.Request) {
	var req UpdateRequest
	if err := s.readJSON(w, r, &req, 1<<20); err != nil {
		api.WriteError(w, r, err)
		return
	}
	l, err := s.Update(r.Context(), r.PathValue("id"), &req)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

func (s *Service) handleRevoke(w http.ResponseWriter, r *http.Request) {
	if err := s.Revoke(r.Context(), r.PathValue("id")); err != nil {
		api.WriteError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) handleAddFile(w http.ResponseWriter, r *http.Request) {
	var sel Selection
	if err := s.readJSON(w, r, &sel, s.o.MaxBody); err != nil {
		api.WriteError(w, r, err)
		return
	}
	l, err := s.AddFile(r.Context(), r.PathValue("id"), sel)
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

func (s *Service) handleRefresh(w http.ResponseWriter, r *http.Request) {
	l, err := s.Refresh(r.Context(), r.PathValue("id"))
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

func (s *Service) handleLog(w http.ResponseWriter, r *http.Request) {
	log, err := s.AccessLog(r.Context(), r.PathValue("id"))
	if err != nil {
		api.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"access": log})
}

// cors lets viewers served from other origins use phr's links; recipient
// endpoints carry no cookies or tokens, so any origin may call them.
func cors(w http.ResponseWriter) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.Header().Set("Access-Control-Expose-Headers", "Retry-After")
	w.Header().Set("Cache-Control", "no-store")
}

func preflight(w http.ResponseWriter, r *http.Request) {
	cors(w)
	w.Header().Set("Access-Control-Allow-Methods", "GET, POST")
	w.Header().Set("Access-Control-Allow-Headers", "Content-Type")
	w.Header().Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}

// recipientError writes the protocol's error answers: 401 with
// remainingAttempts, 429 with Retry-After, the rest as OperationOutcomes.
func recipientError(w http.ResponseWriter, r *http.Request, err error) {
	var pe *PasscodeError
	var poll *PollError
	switch {
	case errors.As(err, &pe):
		writeJSON(w, http.StatusUnauthorized, map[string]any{"remainingAttempts": pe.Remaining,
			"error": "wrong or missing passcode"})
	case errors.As(err, &poll):
		secs := int((poll.RetryAfter + 999_999_999) / 1_000_000_000)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		api.WriteError(w, r, fhir.Errorf(http.StatusTooManyRequests, "throttled", "this link was polled less than %s ago; retry after %d seconds", poll.RetryAfter, secs))
	default:
		api.WriteError(w, r, err)
	}
}

func (s *Service) handleManifest(w http.ResponseWriter, r *http.Request) {
	cors(w)
	var req ManifestRequest
	// Recipients may send members of later versions of the protocol.
	if err := decodeJSON(w, r, &req, 64<<10, false); err != nil {
		api.WriteError(w, r, err)
		return
	}
	m, err := s.Manifest(r.Context(), r.PathValue("mid"), &req)
	if err != nil {
		recipientError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

func writeJOSE(w http.ResponseWriter, r *http.Request, body string) {
	w.Header().Set("Content-Type", "application/jose")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		io.WriteString(w, body)
	}
}

func (s *Service) handleDirect(w http.ResponseWriter, r *http.Request) {
	cors(w)
	body, err := s.Direct(r.Context(), r.PathValue("mid"), r.URL.Query().Get("recipient"))
	if err != nil {
		if fe := fhir.AsError(err); fe.Status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", "POST")
		}
		recipientError(w, r, err)
		return
	}
	writeJOSE(w, r, body)
}

func (s *Service) handleLocation(w http.ResponseWriter, r *http.Request) {
	cors(w)
	body, err := s.Location(r.Context(), r.PathValue("tok"))
	if err != nil {
		recipientError(w, r, err)
		return
	}
	writeJOSE(w, r, body)
}

// Mount builds the service and registers its routes on mux.
func Mount(ctx context.Context, mux *http.ServeMux, o Options) (*Service, error) {
	s, err := New(ctx, o)
	if err != nil {
		return nil, err
	}
	s.Register(mux)
	return s, nil
}
