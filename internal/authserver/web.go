package authserver

import (
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/auth/authdb"
	"github.com/phr-project/phr/internal/auth/bearer"
	"github.com/phr-project/phr/internal/auth/pkce"
	"github.com/phr-project/phr/internal/auth/scope"
	"github.com/phr-project/phr/internal/auth/secret"
	"github.com/phr-project/phr/internal/auth/token"
	"github.com/phr-project/phr/internal/fhir"
)

//go:embed templates/*.html
var templateFS embed.FS

var pages = template.Must(template.ParseFS(templateFS, "templates/*.html"))

// Cookie names.
const (
	SessionCookie = "phr_session"
	loginCSRF     = "phr_login_csrf"
)

// Session is a signed-in user's web session (the patient portal, the
// SMART authorize flow).
type Session struct {
	// ID identifies the session (the hash of its cookie secret, never the
	// secret itself).
	ID     string
	UserID string
	Email  string
	// Role is "patient" or "admin".
	Role string
	// Patient is the patient id of a patient user.
	Patient string
	// CSRF must accompany every state-changing request of the session
	// (form field "csrf" or header X-CSRF-Token).
	CSRF    string
	Expires time.Time
}

// Session returns the session of the request's cookie, if it is live.
func (s *Server) Session(r *http.Request) (*Session, bool) {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" || len(c.Value) > 100 {
		return nil, false
	}
	row, err := s.db.GetSession(r.Context(), secret.Hash(c.Value))
	if err != nil {
		if !errors.Is(err, authdb.ErrNotFound) {
			slog.Error("read session", "err", err)
		}
		return nil, false
	}
	return &Session{ID: row.Hash, UserID: row.User.ID, Email: row.User.Email, Role: row.User.Role, Patient: row.User.Patient, CSRF: row.CSRF, Expires: row.Expires}, true
}

// denyAll is the principal of a session that cannot be mapped.
type denyAll struct{}

func (denyAll) Allows(access.Interaction, string) bool { return false }
func (denyAll) Patient() string                        { return "" }
func (denyAll) Filters(string) []url.Values            { return nil }
func (denyAll) Subject() string                        { return "nobody" }

// Principal returns what a session may do: a patient user works within
// their own compartment (patient/*.cruds), an admin on everything.
func (s *Server) Principal(sess *Session) access.Principal {
	if sess == nil {
		return denyAll{}
	}
	c := token.Claims{Subject: "user/" + sess.UserID, Expiry: sess.Expires}
	switch sess.Role {
	case authdb.RolePatient:
		c.Scope, c.Patient, c.FHIRUser = "patient/*.cruds", sess.Patient, "Patient/"+sess.Patient
	case authdb.RoleAdmin:
		c.Scope = "user/*.cruds"
	default:
		return denyAll{}
	}
	p, err := bearer.NewPrincipal(c)
	if err != nil {
		return denyAll{}
	}
	return p
}

// CheckCSRF reports whether the request carries the session's CSRF token
// in the X-CSRF-Token header or the form field "csrf".
func (s *Server) CheckCSRF(r *http.Request, sess *Session) bool {
	if sess == nil || sess.CSRF == "" {
		return false
	}
	v := r.Header.Get("X-CSRF-Token")
	if v == "" {
		v = r.PostFormValue("csrf")
	}
	return v != "" && subtle.ConstantTimeCompare([]byte(v), []byte(sess.CSRF)) == 1
}

// safeNext returns next if it is a local path (no scheme, host or
// protocol-relative trick), else "/".
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") || strings.ContainsAny(next, "\r\n") {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" {
		return "/"
	}
	return next
}

func (s *Server) cookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge, HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode}
}

func render(w http.ResponseWriter, status int, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.WriteHeader(status)
	if err := pages.ExecuteTemplate(w, name, data); err != nil {
		slog.Error("render page", "page", name, "err", err)
	}
}

type loginData struct {
	Next, CSRF, Error, Email string
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.URL.Query().Get("next"))
	if _, ok := s.Session(r); ok {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	s.showLogin(w, http.StatusOK, loginData{Next: next})
}

func (s *Server) showLogin(w http.ResponseWriter, status int, d loginData) {
	d.CSRF = secret.New()
	http.SetCookie(w, s.cookie(loginCSRF, d.CSRF, 3600))
	render(w, status, "login.html", d)
}

func (s *Server) loginSubmit(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		s.showLogin(w, http.StatusBadRequest, loginData{Next: "/", Error: "The form could not be read."})
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	email := r.PostForm.Get("email")
	if ok, wait := s.loginLimit.Allow(s.o.ClientIP.From(r)); !ok {
		w.Header().Set("Retry-After", itoa(int(wait.Seconds()+0.999)))
		s.showLogin(w, http.StatusTooManyRequests, loginData{Next: next, Email: email, Error: "Too many sign-in attempts. Wait a minute and try again."})
		return
	}
	c, err := r.Cookie(loginCSRF)
	if err != nil || c.Value == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostForm.Get("csrf"))) != 1 {
		s.showLogin(w, http.StatusForbidden, loginData{Next: next, Email: email, Error: "The sign-in form expired or was not sent from this site. Please try again."})
		return
	}
	u, err := s.db.CheckPassword(r.Context(), email, r.PostForm.Get("password"))
	if err != nil {
		if !errors.Is(err, authdb.ErrNotFound) {
			slog.Error("sign-in", "err", err)
		}
		slog.Info("sign-in failed", "ip", s.o.ClientIP.From(r))
		s.showLogin(w, http.StatusUnauthorized, loginData{Next: next, Email: email, Error: "Wrong email or password."})
		return
	}
	sid, csrf := secret.New(), secret.New()
	if err := s.db.SaveSession(r.Context(), secret.Hash(sid), u.ID, csrf, s.o.Now().Add(s.o.SessionTTL)); err != nil {
		slog.Error("save session", "err", err)
		s.showLogin(w, http.StatusInternalServerError, loginData{Next: next, Email: email, Error: "Signing in failed on the server. Try again later."})
		return
	}
	http.SetCookie(w, s.cookie(SessionCookie, sid, int(s.o.SessionTTL/time.Second)))
	http.SetCookie(w, s.cookie(loginCSRF, "", -1))
	slog.Info("signed in", "user", u.ID, "role", u.Role, "ip", s.o.ClientIP.From(r))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if sess, ok := s.Session(r); ok {
		if !s.CheckCSRF(r, sess) {
			http.Error(w, "missing or wrong CSRF token", http.StatusForbidden)
			return
		}
		if err := s.db.DeleteSession(r.Context(), sess.ID); err != nil {
			slog.Error("sign-out", "err", err)
		}
	}
	http.SetCookie(w, s.cookie(SessionCookie, "", -1))
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func itoa(n int) string { return strconv.Itoa(max(n, 1)) }

// authzRequest is a validated authorization request.
type authzRequest struct {
	Client    authdb.Client
	Params    url.Values
	Redirect  string
	State     string
	Challenge string
	Granted   scope.Grants
}

// authzError is an error to send back to the app's redirect URI.
type authzError struct{ code, desc string }

func (e *authzError) Error() string { return e.code + ": " + e.desc }

var authzParams = []string{"response_type", "client_id", "redirect_uri", "scope", "state", "aud", "code_challenge", "code_challenge_method"}

// checkAuthz validates the parameters of an authorization request. A bad
// client or redirect URI is answered on our own page (page != ""); other
// problems go back to the app (redirect error).
func (s *Server) checkAuthz(r *http.Request, q url.Values) (req *authzRequest, page string, err error) {
	c, err := s.db.GetClient(r.Context(), q.Get("client_id"))
	if err != nil {
		return nil, "The application (client_id " + q.Get("client_id") + ") is not registered with this server.", err
	}
	redirect := q.Get("redirect_uri")
	if !slices.Contains(c.RedirectURIs, redirect) {
		return nil, "The redirect_uri " + redirect + " is not registered for the application " + c.Name + ".", errors.New("bad redirect_uri")
	}
	req = &authzRequest{Client: c, Params: url.Values{}, Redirect: redirect, State: q.Get("state"), Challenge: q.Get("code_challenge")}
	for _, p := range authzParams {
		req.Params.Set(p, q.Get(p))
	}
	fail := func(code, format string, args ...any) (*authzRequest, string, error) {
		return req, "", &authzError{code, fmt.Sprintf(format, args...)}
	}
	if rt := q.Get("response_type"); rt != "code" {
		return fail("unsupported_response_type", "response_type must be code (got %q)", rt)
	}
	if req.State == "" {
		return fail("invalid_request", "state is missing")
	}
	if aud := strings.TrimSuffix(q.Get("aud"), "/"); aud != s.fhir {
		return fail("invalid_request", "aud %q is not this FHIR server (%s)", q.Get("aud"), s.fhir)
	}
	if err := pkce.CheckChallenge(req.Challenge, q.Get("code_challenge_method")); err != nil {
		return fail("invalid_request", "%v", err)
	}
	requested, err := scope.Parse(q.Get("scope"))
	if err != nil {
		return fail("invalid_scope", "scope is malformed: %v", err)
	}
	allowed, err := scope.Parse(c.Scope)
	if err != nil {
		return fail("server_error", "the application's registered scope is unreadable")
	}
	var kept []string
	for _, sc := range scope.Narrow(requested, allowed).Scopes() {
		if sc.Kind == scope.Resource && sc.Context == scope.System {
			continue // system/ scopes are for backend services, not people
		}
		kept = append(kept, sc.String())
	}
	req.Granted, _ = scope.Parse(strings.Join(kept, " "))
	if req.Granted.Empty() {
		return fail("invalid_scope", "none of the requested scopes (%s) is allowed for this application", q.Get("scope"))
	}
	return req, "", nil
}

func redirectTo(base string, params url.Values) string {
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + params.Encode()
}

func (s *Server) redirectError(w http.ResponseWriter, r *http.Request, req *authzRequest, e *authzError) {
	v := url.Values{"error": {e.code}, "error_description": {e.desc}}
	if req.State != "" {
		v.Set("state", req.State)
	}
	http.Redirect(w, r, redirectTo(req.Redirect, v), http.StatusFound)
}

func (s *Server) authzFailed(w http.ResponseWriter, r *http.Request, req *authzRequest, page string, err error) {
	if page != "" {
		render(w, http.StatusBadRequest, "error.html", map[string]string{"Message": page})
		return
	}
	var ae *authzError
	if errors.As(err, &ae) {
		s.redirectError(w, r, req, ae)
		return
	}
	render(w, http.StatusInternalServerError, "error.html", map[string]string{"Message": "The authorization request failed on the server."})
}

// scopeLine is a scope as the consent page lists it.
type scopeLine struct{ Scope, Text string }

func describe(sc scope.Scope) string {
	switch sc.Kind {
	case scope.LaunchContext:
		return "know which patient's record is open"
	case scope.OfflineAccess:
		return "keep access after you sign out, until you revoke it"
	case scope.OnlineAccess:
		return "keep access while you are signed in"
	case scope.OpenID, scope.FHIRUser:
		return "know who you are"
	case scope.Resource:
		var verbs []string
		for _, p := range []struct {
			i scope.Interaction
			v string
		}{{scope.Read, "read"}, {scope.Search, "search"}, {scope.Create, "create"}, {scope.Update, "change"}, {scope.Delete, "delete"}} {
			if sc.Interactions&p.i != 0 {
				verbs = append(verbs, p.v)
			}
		}
		what := sc.Type + " records"
		if sc.Type == "*" {
			what = "all records"
		}
		whose := " of the patient"
		if sc.Context == scope.User {
			whose = " you can see"
		}
		t := strings.Join(verbs, ", ") + " " + what + whose
		if len(sc.Filter) > 0 {
			var f []string
			for _, p := range sc.Filter {
				f = append(f, p.Name+"="+p.Value)
			}
			t += " (only where " + strings.Join(f, ", ") + ")"
		}
		return t
	}
	return sc.String()
}

type consentData struct {
	Client       string
	Email        string
	Scopes       []scopeLine
	Params       url.Values
	CSRF         string
	Patient      string
	NeedsPatient bool
	Error        string
}

func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	req, page, err := s.checkAuthz(r, r.URL.Query())
	if err != nil {
		s.authzFailed(w, r, req, page, err)
		return
	}
	sess, ok := s.Session(r)
	if !ok {
		http.Redirect(w, r, "/login?"+url.Values{"next": {"/auth/authorize?" + req.Params.Encode()}}.Encode(), http.StatusSeeOther)
		return
	}
	s.showConsent(w, http.StatusOK, req, sess, "")
}

func (s *Server) showConsent(w http.ResponseWriter, status int, req *authzRequest, sess *Session, msg string) {
	d := consentData{Client: req.Client.Name, Email: sess.Email, Params: req.Params, CSRF: sess.CSRF, Error: msg, Patient: sess.Patient}
	for _, sc := range req.Granted.Scopes() {
		d.Scopes = append(d.Scopes, scopeLine{sc.String(), describe(sc)})
	}
	d.NeedsPatient = sess.Role != authdb.RolePatient && (req.Granted.NeedsPatient() || req.Granted.HasLaunchContext("patient"))
	render(w, status, "consent.html", d)
}

func (s *Server) authorizeDecision(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		render(w, http.StatusBadRequest, "error.html", map[string]string{"Message": "The form could not be read."})
		return
	}
	req, page, err := s.checkAuthz(r, r.PostForm)
	if err != nil {
		s.authzFailed(w, r, req, page, err)
		return
	}
	sess, ok := s.Session(r)
	if !ok {
		http.Redirect(w, r, "/login?"+url.Values{"next": {"/auth/authorize?" + req.Params.Encode()}}.Encode(), http.StatusSeeOther)
		return
	}
	if !s.CheckCSRF(r, sess) {
		render(w, http.StatusForbidden, "error.html", map[string]string{"Message": "The consent form was not sent from this site (CSRF check failed)."})
		return
	}
	if r.PostForm.Get("decision") != "approve" {
		s.redirectError(w, r, req, &authzError{"access_denied", "the user did not approve the request"})
		return
	}
	patient := sess.Patient
	if sess.Role != authdb.RolePatient && (req.Granted.NeedsPatient() || req.Granted.HasLaunchContext("patient")) {
		patient = strings.TrimPrefix(strings.TrimSpace(r.PostForm.Get("patient")), "Patient/")
		if !fhir.ValidID(patient) {
			s.showConsent(w, http.StatusBadRequest, req, sess, "Enter the id of the patient whose record the application may open.")
			return
		}
		if _, err := s.o.Records.Read(access.With(r.Context(), access.System{Name: "authorize"}), "Patient", patient); err != nil {
			s.showConsent(w, http.StatusBadRequest, req, sess, "There is no patient with id "+patient+".")
			return
		}
	}
	code := secret.New()
	g := authdb.Grant{ClientID: req.Client.ID, UserID: sess.UserID, RedirectURI: req.Redirect, Scope: req.Granted.String(),
		Patient: patient, Challenge: req.Challenge, Expires: s.o.Now().Add(DefaultCodeTTL)}
	if err := s.db.SaveCode(r.Context(), secret.Hash(code), g); err != nil {
		slog.Error("save authorization code", "err", err)
		s.redirectError(w, r, req, &authzError{"server_error", "the authorization could not be recorded"})
		return
	}
	slog.Info("authorization approved", "client", req.Client.ID, "user", sess.UserID, "scope", g.Scope)
	http.Redirect(w, r, redirectTo(req.Redirect, url.Values{"code": {code}, "state": {req.State}}), http.StatusFound)
}
