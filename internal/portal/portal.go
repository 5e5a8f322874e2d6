// Package portal is the patient portal: server-rendered HTML pages (Go
// html/template, embedded CSS and a little JavaScript, no external requests)
// mounted at / beside the FHIR API.
//
// The portal never reads the store directly. Every page calls the FHIR API
// in-process with a short-lived access token minted for the signed-in
// session's principal, so a page shows exactly what that person could fetch
// through /fhir themselves: the same scopes, the same patient compartment,
// the same audit trail.
package portal

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/auth/bearer"
	"github.com/phr-project/phr/internal/auth/token"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/r4"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Session is a signed-in browser session, as the sign-in service reports it.
type Session struct {
	ID, UserID, Email string
	// Role is "patient" or "admin".
	Role string
	// Patient is the patient id of a patient user.
	Patient string
	// CSRF is the token forms and fetches must echo.
	CSRF    string
	Expires time.Time
}

// Admin reports whether the session is an administrator's.
func (s *Session) Admin() bool { return s.Role == "admin" }

// Sessions is what the portal needs from the sign-in service: the session
// of a request, the principal it acts as, and the CSRF check for forms.
// The sign-in pages themselves (/login, /logout) belong to that service.
type Sessions interface {
	Session(r *http.Request) (*Session, bool)
	Principal(sess *Session) access.Principal
	CheckCSRF(r *http.Request, sess *Session) bool
}

// Options configure a Portal.
type Options struct {
	// API is the server's root handler (the FHIR API at /fhir and the other
	// APIs: /shl, /admin); the portal calls it in-process.
	API http.Handler
	// Tokens mints the short-lived access tokens of those calls.
	Tokens *token.Issuer
	// Sessions is the sign-in service.
	Sessions Sessions
	// BaseURL is the server's public URL (without /fhir).
	BaseURL string
	// TokenTTL is the lifetime of the in-process tokens (default 2 minutes).
	TokenTTL time.Duration
	// Exports lists bulk export jobs for the admin exports page (none
	// when nil).
	Exports ExportJobs
}

// Portal serves the portal pages.
type Portal struct {
	o       Options
	pages   map[string]*template.Template
	mux     *http.ServeMux
	opsOnce sync.Once
	ops     map[string]bool
	shlOnce sync.Once
	shl     bool
}

// New returns a Portal.
func New(o Options) (*Portal, error) {
	if o.API == nil || o.Tokens == nil || o.Sessions == nil {
		return nil, errors.New("portal: API, Tokens and Sessions are required")
	}
	if o.TokenTTL <= 0 {
		o.TokenTTL = 2 * time.Minute
	}
	o.BaseURL = strings.TrimSuffix(o.BaseURL, "/")
	p := &Portal{o: o, pages: map[string]*template.Template{}}
	if err := p.parseTemplates(); err != nil {
		return nil, err
	}
	p.routes()
	return p, nil
}

func (p *Portal) parseTemplates() error {
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return fmt.Errorf("portal templates: %w", err)
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return fmt.Errorf("portal template %s: %w", n, err)
		}
		p.pages[name] = t
	}
	return nil
}

// Register mounts the portal on mux at / (the FHIR API, /healthz and the
// sign-in service keep their own, more specific patterns).
func (p *Portal) Register(mux *http.ServeMux) {
	mux.Handle("/", p.mux)
}

// ServeHTTP serves the portal's routes.
func (p *Portal) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.mux.ServeHTTP(w, r) }

func (p *Portal) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	fileServer := http.StripPrefix("/static/", http.FileServerFS(static))
	m.HandleFunc("GET /static/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		fileServer.ServeHTTP(w, r)
	})
	m.Handle("GET /{$}", p.page(p.home))
	m.Handle("GET /p/{pid}/{$}", p.patientPage(p.overview))
	m.Handle("GET /p/{pid}/timeline", p.patientPage(p.timeline))
	m.Handle("GET /p/{pid}/results", p.patientPage(p.results))
	m.Handle("GET /p/{pid}/r/{type}/{id}", p.patientPage(p.detail))
	p.extraRoutes(m)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		p.fail(w, r, nil, fhir.NotFound("there is no page at %s", r.URL.Path))
	})
	p.mux = m
}

// req is one page request: the session, its in-process FHIR client and
// the patient the page is about.
type req struct {
	w    http.ResponseWriter
	r    *http.Request
	sess *Session
	api  *client
	// pid is the patient of /p/{pid}/ pages.
	pid string
	// patient is the Patient resource of pid (nil outside patient pages).
	patient obj
}

// page wraps a handler that needs a signed-in session.
func (p *Portal) page(h func(q *req) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'")
		w.Header().Set("Referrer-Policy", "same-origin")
		sess, ok := p.o.Sessions.Session(r)
		if !ok {
			next := r.URL.Path
			if r.URL.RawQuery != "" {
				next += "?" + r.URL.RawQuery
			}
			if r.Method != http.MethodGet {
				p.fail(w, r, nil, fhir.Errorf(http.StatusUnauthorized, "login", "your session has ended; sign in again"))
				return
			}
			http.Redirect(w, r, "/login?next="+url.QueryEscape(next), http.StatusSeeOther)
			return
		}
		if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); r.Method == http.MethodPost && ct == "application/x-www-form-urlencoded" {
			// Forms are small (a merged resource at most); parse them
			// here, whichever way the CSRF token comes.
			r.Body = http.MaxBytesReader(w, r.Body, maxForm)
			if err := r.ParseForm(); err != nil {
				p.fail(w, r, sess, fhir.BadRequest("the form could not be read: %v", err))
				return
			}
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !p.o.Sessions.CheckCSRF(r, sess) {
			p.fail(w, r, sess, fhir.Forbidden("the form's CSRF token is missing or wrong; reload the page and try again"))
			return
		}
		tok, err := p.mint(sess)
		if err != nil {
			p.fail(w, r, sess, err)
			return
		}
		q := &req{w: w, r: r, sess: sess, api: &client{h: p.o.API, base: p.o.BaseURL, tok: tok, ctx: r.Context(), remote: r.RemoteAddr}}
		if err := h(q); err != nil {
			p.fail(w, r, sess, err)
		}
	})
}

// patientPage wraps a handler of a /p/{pid}/ page: it loads the patient
// through the API (so a patient user asking for someone else's page is
// refused there) and refuses other patients' pages to patient users
// outright as well.
func (p *Portal) patientPage(h func(q *req) error) http.Handler {
	return p.page(func(q *req) error {
		q.pid = q.r.PathValue("pid")
		if !fhir.ValidID(q.pid) {
			return fhir.NotFound("%q is not a patient id", q.pid)
		}
		if !q.sess.Admin() && q.sess.Patient != q.pid {
			return fhir.Forbidden("you may only see your own record")
		}
		pat, err := q.api.read("Patient", q.pid)
		if err != nil {
			return err
		}
		q.patient = pat
		return h(q)
	})
}

// mint returns a short-lived access token for the session's principal.
func (p *Portal) mint(sess *Session) (string, error) {
	pr := p.o.Sessions.Principal(sess)
	if pr == nil {
		return "", fhir.Forbidden("this account has no access to any record")
	}
	c, err := claimsFor(pr)
	if err != nil {
		return "", err
	}
	now := time.Now()
	c.IssuedAt = now
	c.NotBefore = time.Time{}
	c.Expiry = now.Add(p.o.TokenTTL)
	c.ID = token.NewID()
	if c.ClientID == "" {
		c.ClientID = "phr-portal"
	}
	if c.Subject == "" {
		c.Subject = sess.UserID
	}
	return p.o.Tokens.Sign(c)
}

// maxForm bounds a form body.
const maxForm = 16 << 20

// interactions in SMART v2 scope letter order.
var interactions = []access.Interaction{access.Create, access.Read, access.Update, access.Delete, access.Search}

// claimsFor expresses a principal as token claims. A bearer principal
// (what the sign-in service hands out) keeps its own claims; any other is
// described by what it allows on every type, and refused when that cannot
// be said exactly (per-type grants or search filters).
func claimsFor(pr access.Principal) (token.Claims, error) {
	if bp, ok := pr.(*bearer.Principal); ok {
		return bp.Claims, nil
	}
	letters := ""
	for _, i := range interactions {
		if pr.Allows(i, "*") {
			letters += string(byte(i))
		}
	}
	if letters == "" {
		return token.Claims{}, fhir.Forbidden("this account has no access to any record")
	}
	for _, t := range r4.ResourceTypes() {
		if pr.Filters(t) != nil {
			return token.Claims{}, fhir.Forbidden("this account's access cannot be used by the portal")
		}
	}
	c := token.Claims{Subject: pr.Subject()}
	if pid := pr.Patient(); pid != "" {
		c.Scope, c.Patient = "patient/*."+letters, pid
	} else {
		c.Scope = "system/*." + letters
	}
	return c, nil
}

// render writes a page.
func (p *Portal) render(q *req, status int, name string, data map[string]any) error {
	t := p.pages[name]
	if t == nil {
		return fmt.Errorf("portal: no template %q", name)
	}
	if data == nil {
		data = map[string]any{}
	}
	data["Session"] = q.sess
	if q.sess != nil {
		data["CSRF"] = q.sess.CSRF
	}
	data["PID"] = q.pid
	if q.patient != nil {
		data["PatientName"] = humanName(q.patient.get("name"))
	}
	data["Path"] = q.r.URL.Path
	features := map[string]bool{}
	if q.api != nil {
		ops := p.operations(q)
		features["export"] = ops["phr-export"]
		features["import"] = ops["import"]
		features["conflicts"] = ops["conflicts"]
		features["share"] = q.pid != "" && p.shlAvailable(q)
		features["manage/users"] = q.sess != nil && q.sess.Admin()
		features["manage/clients"] = q.sess != nil && q.sess.Admin()
		features["manage/exports"] = q.sess != nil && q.sess.Admin() && p.o.Exports != nil
	}
	data["Features"] = features
	var buf strings.Builder
	if err := t.ExecuteTemplate(&buf, "layout.html", data); err != nil {
		return fmt.Errorf("portal: render %s: %w", name, err)
	}
	q.w.Header().Set("Content-Type", "text/html; charset=utf-8")
	q.w.WriteHeader(status)
	_, err := q.w.Write([]byte(buf.String()))
	if err != nil {
		return nil // the browser went away; nothing to report to it
	}
	return nil
}

// fail renders an error page with the error's status and message.
func (p *Portal) fail(w http.ResponseWriter, r *http.Request, sess *Session, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return
	}
	fe := fhir.AsError(err)
	msg := "something went wrong"
	if fe.Status < 500 {
		var parts []string
		for _, is := range fe.Issues {
			if is.Diagnostics != "" {
				parts = append(parts, is.Diagnostics)
			}
		}
		if len(parts) > 0 {
			msg = strings.Join(parts, "; ")
		}
	} else {
		slog.ErrorContext(r.Context(), "portal page failed", "path", r.URL.Path, "error", err)
	}
	if strings.Contains(r.Header.Get("Accept"), "application/json") && !strings.Contains(r.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "application/fhir+json; charset=utf-8")
		w.WriteHeader(fe.Status)
		w.Write(fhir.OutcomeJSON(fe.Issues))
		return
	}
	q := &req{w: w, r: r, sess: sess}
	if perr := p.render(q, fe.Status, "error", map[string]any{"Title": http.StatusText(fe.Status), "Status": fe.Status, "Message": msg}); perr != nil {
		http.Error(w, msg, fe.Status)
	}
}
