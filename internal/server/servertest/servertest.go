// Package servertest starts a real phr server on 127.0.0.1 for end-to-end
// tests, on SQLite or PostgreSQL, with helpers to get tokens and make FHIR
// requests.
package servertest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/auth/token"
	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/store/storetest"
)

// Server is a running phr server.
type Server struct {
	App *server.App
	// URL is the server root (http://127.0.0.1:port); FHIR is URL + "/fhir".
	URL  string
	FHIR string
	t    testing.TB
	// Client is the HTTP client tests use.
	Client *http.Client
}

// Options adjust Start.
type Options struct {
	// Configure may change the configuration before the server opens.
	Configure func(*server.Config)
	// Setup runs after the App is built and before it serves (features
	// register their routes here).
	Setup func(*server.App)
}

// Start starts a server on dialect ("sqlite" or "postgres"; postgres
// skips the test when PHR_TEST_POSTGRES_URL is unset) and stops it when
// the test ends.
func Start(t testing.TB, dialect string, opts ...Options) *Server {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	cfg := server.Config{DataDir: t.TempDir()}
	if dialect == "postgres" {
		cfg.DB = storetest.NewPostgresURL(t)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = ln.Addr().String()
	cfg.BaseURL = "http://" + ln.Addr().String()
	if o.Configure != nil {
		o.Configure(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	app, err := server.Open(ctx, cfg)
	if err != nil {
		cancel()
		ln.Close()
		t.Fatalf("open server: %v", err)
	}
	if o.Setup != nil {
		o.Setup(app)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		app.Serve(ctx, ln, 5*time.Second)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		app.Close()
	})
	return &Server{App: app, URL: cfg.BaseURL, FHIR: cfg.BaseURL + "/fhir", t: t, Client: &http.Client{Timeout: 2 * time.Minute}}
}

// Token returns an access token with the scopes (and patient) given.
func (s *Server) Token(scopes, patient string) string {
	s.t.Helper()
	tok, err := s.App.Tokens.Sign(token.Claims{Subject: "test", Scope: scopes, Patient: patient, Expiry: time.Now().Add(time.Hour)})
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

// AdminToken returns a token with system/*.* scope.
func (s *Server) AdminToken() string { return s.Token("system/*.*", "") }

// Response is a completed HTTP exchange.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into a map.
func (r *Response) JSON(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("response body is not JSON: %v\n%s", err, r.Body)
	}
	return m
}

// Do makes a request to path (relative to the FHIR base unless it starts
// with "/" or "http") with the bearer token (none when empty).
func (s *Server) Do(method, path, tok string, body any, headers ...string) *Response {
	s.t.Helper()
	u := path
	switch {
	case strings.HasPrefix(path, "http"):
	case strings.HasPrefix(path, "/"):
		u = s.URL + path
	default:
		u = s.FHIR + "/" + path
	}
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	case io.Reader:
		rd = b
	default:
		j, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("%s %s: reading body: %v", method, u, err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// Owner reads typ/id as the admin and returns the reference of its owner
// extension (index.OwnerExtension: the patient whose own copy of a shared
// resource it is), "" without one.
func (s *Server) Owner(typ, id string) string {
	s.t.Helper()
	r := s.Do("GET", typ+"/"+id, s.AdminToken(), nil)
	var res struct {
		Extension []struct {
			URL            string
			ValueReference struct{ Reference string }
		}
	}
	if err := json.Unmarshal(r.Body, &res); err != nil || r.Status != 200 {
		s.t.Fatalf("read %s/%s: %d %v %.300s", typ, id, r.Status, err, r.Body)
	}
	for _, e := range res.Extension {
		if e.URL == index.OwnerExtension {
			return e.ValueReference.Reference
		}
	}
	return ""
}

// References appends the reference of every Reference in v (JSON decoded
// into any) to out.
func References(v any, out *[]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if k == "reference" {
				if s, ok := e.(string); ok {
					*out = append(*out, s)
					continue
				}
			}
			References(e, out)
		}
	case []any:
		for _, e := range x {
			References(e, out)
		}
	}
}
