package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/phr-project/phr/internal/auth/token"
	"github.com/phr-project/phr/internal/server"
)

// fhirClient talks to a FHIR server: a remote one over HTTP, or the data
// directory's own record through the same handlers in process.
type fhirClient struct {
	base  string // FHIR base URL
	token string
	http  *http.Client
	close func()
}

// clientFlags choose the server: --server and --token, or --data / --db.
type clientFlags struct {
	server, token string
	sf            storeFlags
}

func (c *clientFlags) add(f *flags) {
	f.string(&c.server, "server", "", "FHIR base URL of a phr server (e.g. http://127.0.0.1:8080/fhir); empty: work on --data/--db directly")
	f.string(&c.token, "token", "", "bearer access token for --server")
	c.sf.add(f)
}

// open returns a client for the chosen server.
func (c *clientFlags) open(ctx context.Context) (*fhirClient, error) {
	if c.server != "" {
		base := strings.TrimSuffix(c.server, "/")
		if !strings.HasSuffix(base, "/fhir") && !strings.Contains(strings.TrimPrefix(strings.TrimPrefix(base, "http://"), "https://"), "/") {
			base += "/fhir"
		}
		return &fhirClient{base: base, token: c.token, http: &http.Client{}, close: func() {}}, nil
	}
	app, err := server.Open(ctx, server.Config{DataDir: c.sf.data, DB: c.sf.db, Addr: "127.0.0.1:0", BaseURL: "http://local"})
	if err != nil {
		return nil, err
	}
	tok, err := app.Tokens.Sign(token.Claims{Subject: "cli", Scope: "system/*.*", Expiry: time.Now().Add(24 * time.Hour)})
	if err != nil {
		app.Close()
		return nil, err
	}
	return &fhirClient{base: "http://local/fhir", token: tok, http: &http.Client{Transport: inProcess{app.Handler()}}, close: func() { app.Close() }}, nil
}

// do sends a request (path relative to the FHIR base).
func (c *fhirClient) do(ctx context.Context, method, path string, body io.Reader, headers ...string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+"/"+strings.TrimPrefix(path, "/"), body)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("Accept", "application/fhir+json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return c.http.Do(req)
}

// get fetches path and returns the body, or an error with the
// OperationOutcome's diagnostics for a failed status.
func (c *fhirClient) call(ctx context.Context, method, path string, body io.Reader, headers ...string) ([]byte, error) {
	resp, err := c.do(ctx, method, path, body, headers...)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, outcomeText(b))
	}
	return b, nil
}

// inProcess is a RoundTripper that serves requests with a handler in the
// same process, streaming both ways.
type inProcess struct{ h http.Handler }

func (t inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	pr, pw := io.Pipe()
	w := &pipeWriter{header: http.Header{}, pw: pw, ready: make(chan struct{})}
	req = req.Clone(req.Context())
	req.RemoteAddr = "127.0.0.1:0"
	req.RequestURI = req.URL.RequestURI()
	if req.Body == nil {
		req.Body = http.NoBody
	}
	go func() {
		defer func() {
			w.WriteHeader(http.StatusOK)
			pw.Close()
		}()
		t.h.ServeHTTP(w, req)
	}()
	select {
	case <-w.ready:
	case <-req.Context().Done():
		return nil, req.Context().Err()
	}
	return &http.Response{StatusCode: w.status, Status: fmt.Sprintf("%d %s", w.status, http.StatusText(w.status)), Header: w.header, Body: pr, Request: req, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}, nil
}

// pipeWriter is the ResponseWriter of inProcess.
type pipeWriter struct {
	header http.Header
	pw     *io.PipeWriter
	once   sync.Once
	status int
	ready  chan struct{}
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) WriteHeader(code int) {
	w.once.Do(func() {
		w.status = code
		w.header = w.header.Clone()
		close(w.ready)
	})
}

func (w *pipeWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	n, err := w.pw.Write(b)
	if errors.Is(err, io.ErrClosedPipe) {
		return n, fmt.Errorf("client went away: %w", err)
	}
	return n, err
}

// Flush implements http.Flusher (writes go straight through the pipe).
func (w *pipeWriter) Flush() {}

// EnableFullDuplex allows reading the request while writing the response.
func (w *pipeWriter) EnableFullDuplex() error { return nil }
