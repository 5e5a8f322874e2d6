package authserver

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/auth/authdb"
	"github.com/phr-project/phr/internal/fhir"
)

// The admin API manages clients and users as JSON. Callers are admins: a
// bearer token reaching every type unconfined (system/*.* or an admin
// user's token), or an admin's web session (with the CSRF token on writes).

// IsAdmin reports whether p may administer the server: unconfined, with
// every interaction on every type.
func IsAdmin(p access.Principal) bool {
	if p == nil || p.Patient() != "" {
		return false
	}
	for _, i := range []access.Interaction{access.Create, access.Read, access.Update, access.Delete, access.Search} {
		if !p.Allows(i, "*") {
			return false
		}
	}
	return true
}

func writeOutcome(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/fhir+json")
	w.WriteHeader(status)
	w.Write(fhir.OutcomeJSON([]fhir.Issue{{Severity: "error", Code: code, Diagnostics: msg}}))
}

// admin checks the caller; it answers and returns false when refused.
func (s *Server) admin(w http.ResponseWriter, r *http.Request) bool {
	w.Header().Set("Cache-Control", "no-store")
	if r.Header.Get("Authorization") != "" {
		p, err := s.o.Auth.Authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			writeOutcome(w, http.StatusUnauthorized, "login", err.Error())
			return false
		}
		if !IsAdmin(p) {
			writeOutcome(w, http.StatusForbidden, "forbidden", "the admin API needs an admin token (system/*.* or an admin user)")
			return false
		}
		return true
	}
	sess, ok := s.Session(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="phr"`)
		writeOutcome(w, http.StatusUnauthorized, "login", "the admin API needs an Authorization: Bearer token or an admin session")
		return false
	}
	if sess.Role != authdb.RoleAdmin {
		writeOutcome(w, http.StatusForbidden, "forbidden", "only admin users may use the admin API")
		return false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !s.CheckCSRF(r, sess) {
		writeOutcome(w, http.StatusForbidden, "forbidden", "missing or wrong CSRF token (form field csrf or header X-CSRF-Token)")
		return false
	}
	return true
}

// clientView is a client as the admin API shows it.
type clientView struct {
	authdb.Client
	JWKS json.RawMessage `json:"jwks,omitempty"`
	// Public is true for apps without keys (PKCE only).
	Public bool `json:"public"`
}

func viewClient(c authdb.Client) clientView {
	v := clientView{Client: c, Public: c.Public()}
	if len(c.JWKS) > 0 {
		v.JWKS = json.RawMessage(c.JWKS)
	}
	return v
}

// clientRequest is the body of POST /admin/clients.
type clientRequest struct {
	ID           string          `json:"id"`
	Name         string          `json:"name"`
	Scope        string          `json:"scope"`
	JWKS         json.RawMessage `json:"jwks"`
	JWKSURL      string          `json:"jwks_url"`
	RedirectURIs []string        `json:"redirect_uris"`
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		msg := "the body is not the expected JSON object: " + err.Error()
		if errors.Is(err, io.EOF) {
			msg = "the body is empty; send a JSON object"
		}
		writeOutcome(w, http.StatusBadRequest, "invalid", msg)
		return false
	}
	return true
}

func (s *Server) adminClients(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	switch r.Method {
	case http.MethodGet:
		cs, err := s.db.Clients(r.Context())
		if err != nil {
			writeOutcome(w, http.StatusInternalServerError, "exception", "could not list clients")
			return
		}
		out := make([]clientView, 0, len(cs))
		for _, c := range cs {
			out = append(out, viewClient(c))
		}
		writeJSON(w, http.StatusOK, out)
	case http.MethodPost:
		var req clientRequest
		if !decodeBody(w, r, &req) {
			return
		}
		c := authdb.Client{ID: req.ID, Name: req.Name, Scope: req.Scope, JWKSURL: req.JWKSURL, RedirectURIs: req.RedirectURIs}
		if len(req.JWKS) > 0 && string(req.JWKS) != "null" {
			c.JWKS = req.JWKS
		}
		c, err := s.db.AddClient(r.Context(), c)
		if errors.Is(err, authdb.ErrInvalid) {
			writeOutcome(w, http.StatusBadRequest, "invalid", err.Error())
			return
		}
		if err != nil {
			writeOutcome(w, http.StatusInternalServerError, "exception", "could not register the client")
			return
		}
		w.Header().Set("Location", s.base+"/admin/clients/"+c.ID)
		writeJSON(w, http.StatusCreated, viewClient(c))
	default:
		w.Header().Set("Allow", "GET, POST")
		writeOutcome(w, http.StatusMethodNotAllowed, "not-supported", r.Method+" is not allowed on /admin/clients")
	}
}

func (s *Server) adminClient(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	id := r.PathValue("id")
	switch r.Method {
	case http.MethodGet:
		c, err := s.db.GetClient(r.Context(), id)
		if errors.Is(err, authdb.ErrNotFound) {
			writeOutcome(w, http.StatusNotFound, "not-found", "no client with id "+id)
			return
		}
		if err != nil {
			writeOutcome(w, http.StatusInternalServerError, "exception", "could not read the client")
			return
		}
		writeJSON(w, http.StatusOK, viewClient(c))
	case http.MethodDelete:
		err := s.db.RemoveClient(r.Context(), id)
		if errors.Is(err, authdb.ErrNotFound) {
			writeOutcome(w, http.StatusNotFound, "not-found", "no client with id "+id)
			return
		}
		if err != nil {
			writeOutcome(w, http.StatusInternalServerError, "exception", "could not remove the client")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Allow", "GET, DELETE")
		writeOutcome(w, http.StatusMethodNotAllowed, "not-supported", r.Method+" is not allowed on a client")
	}
}

// userRequest is the body of POST /admin/users.
type userRequest struct {
	Email    string `json:"email"`
	Role     string `json:"role"`
	Patient  string `json:"patient"`
	Password string `json:"password"`
}

func (s *Server) adminUsers(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	switch r.Method {
	case http.MethodGet:
		us, err := s.db.Users(r.Context())
		if err != nil {
			writeOutcome(w, http.StatusInternalServerError, "exception", "could not list users")
			return
		}
		if us == nil {
			us = []authdb.User{}
		}
		writeJSON(w, http.StatusOK, us)
	case http.MethodPost:
		var req userRequest
		if !decodeBody(w, r, &req) {
			return
		}
		u, err := s.db.AddUser(r.Context(), authdb.User{Email: req.Email, Role: req.Role, Patient: req.Patient}, req.Password)
		if errors.Is(err, authdb.ErrInvalid) {
			writeOutcome(w, http.StatusBadRequest, "invalid", err.Error())
			return
		}
		if err != nil {
			writeOutcome(w, http.StatusInternalServerError, "exception", "could not add the user")
			return
		}
		w.Header().Set("Location", s.base+"/admin/users/"+u.ID)
		writeJSON(w, http.StatusCreated, u)
	default:
		w.Header().Set("Allow", "GET, POST")
		writeOutcome(w, http.StatusMethodNotAllowed, "not-supported", r.Method+" is not allowed on /admin/users")
	}
}

func (s *Server) adminUser(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	id := r.PathValue("id")
	switch r.Method {
	case http.MethodGet:
		u, err := s.db.GetUser(r.Context(), id)
		if errors.Is(err, authdb.ErrNotFound) {
			writeOutcome(w, http.StatusNotFound, "not-found", "no user with id "+id)
			return
		}
		if err != nil {
			writeOutcome(w, http.StatusInternalServerError, "exception", "could not read the user")
			return
		}
		writeJSON(w, http.StatusOK, u)
	case http.MethodDelete:
		err := s.db.RemoveUser(r.Context(), id)
		if errors.Is(err, authdb.ErrNotFound) {
			writeOutcome(w, http.StatusNotFound, "not-found", "no user with id or email "+id)
			return
		}
		if err != nil {
			writeOutcome(w, http.StatusInternalServerError, "exception", "could not remove the user")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Allow", "GET, DELETE")
		writeOutcome(w, http.StatusMethodNotAllowed, "not-supported", r.Method+" is not allowed on a user")
	}
}
