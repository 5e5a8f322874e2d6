package audit

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/access"
)

// Authenticator is what the FHIR API uses to authenticate requests
// (api.Authenticator).
type Authenticator interface {
	Authenticate(r *http.Request) (access.Principal, error)
}

type slotKey struct{}

// slot carries the principal from the authenticator back to the
// middleware that records the event.
type slot struct{ p access.Principal }

type capture struct{ next Authenticator }

// Capture wraps the FHIR API's authenticator so that Handler learns who
// made each request.
func Capture(a Authenticator) Authenticator { return capture{a} }

func (c capture) Authenticate(r *http.Request) (access.Principal, error) {
	p, err := c.next.Authenticate(r)
	if s, ok := r.Context().Value(slotKey{}).(*slot); ok && err == nil {
		s.p = p
	}
	return p, err
}

// clientIDer is implemented by principals that know their OAuth client.
type clientIDer interface{ ClientID() string }

// statusWriter records the response status.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// unaudited are requests that touch no patient data: everything outside
// the FHIR API (/fhir) and SMART Health Links (/shl), and the FHIR
// server's own description.
func unaudited(r *http.Request) bool {
	path := r.URL.Path
	if path != "/fhir" && !strings.HasPrefix(path, "/fhir/") && !strings.HasPrefix(path, "/shl/") {
		return true
	}
	if strings.HasPrefix(path, "/shl/view") || r.Method == http.MethodOptions {
		return true
	}
	p := strings.Trim(strings.TrimPrefix(path, "/fhir"), "/")
	return p == "metadata" || strings.HasPrefix(p, "OperationDefinition/") || strings.HasPrefix(p, ".well-known/")
}

// Handler records an event for every request to next that reaches patient
// data: the FHIR API (including bulk export status and files) and SMART
// Health Links. The caller is the principal the FHIR API authenticated or,
// for endpoints that authenticate on their own, the bearer token's
// principal (Options.Auth, cheap thanks to the verified-token cache).
func (l *Log) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if unaudited(r) {
			next.ServeHTTP(w, r)
			return
		}
		s := &slot{}
		r = r.WithContext(context.WithValue(r.Context(), slotKey{}, s))
		sw := &statusWriter{ResponseWriter: w}
		start := time.Now()
		next.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		e := Event{Time: start, Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Status: sw.status, IP: l.o.ClientIP(r)}
		if s.p == nil && l.o.Auth != nil && r.Header.Get("Authorization") != "" {
			if p, err := l.o.Auth.Authenticate(r); err == nil {
				s.p = p
			}
		}
		if s.p != nil {
			e.Subject, e.Patient = s.p.Subject(), s.p.Patient()
			if c, ok := s.p.(clientIDer); ok {
				e.Client = c.ClientID()
			}
		}
		l.Record(e)
	})
}
