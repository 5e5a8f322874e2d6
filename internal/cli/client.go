package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/phr-project/phr/internal/auth/token"
	"github.com/phr-project/phr/internal/server"
)

// fhirClient talks to a phr server: a remote one over HTTP, or the data
// directory's own record through the same handlers in process.
type fhirClient struct {
	root  string // server root: /shl, /.well-known, ... live here
	base  string // FHIR base URL: root + "/fhir"
	token string
	http  *http.Client
	close func()
	// remote is set for a server over the network (--server), not the
	// in-process one of --data.
	remote bool
}

// clientFlags are the flags every client command shares to choose the phr
// server it talks to:
//
//   - --server (PHR_SERVER): the server's root URL or its FHIR base; both
//     http://host:8080 and http://host:8080/fhir work, and every command
//     derives what it needs (serverURLs).
//   - --token (PHR_TOKEN) or --token-file (PHR_TOKEN_FILE): the bearer token
//     for --server. A flag given on the command line wins over the
//     environment.
//   - --data (PHR_DATA) and --db (PHR_DB): with no --server, the command
//     works on this local store directly, with full access.
type clientFlags struct {
	server, token, tokenFile string
	sf                       storeFlags
	fs                       *flags
	// bulk opens a local store for bulk writes (server.Config.BulkWrites).
	bulk bool
	// cards, when set, says how a local store's imports check SMART
	// Health Cards.
	cards *cardFlags
}

func (c *clientFlags) add(f *flags) {
	c.fs = f
	f.string(&c.server, "server", "", "phr server URL: its root (http://127.0.0.1:8080) or its FHIR base (http://127.0.0.1:8080/fhir); empty: work on --data/--db directly")
	f.string(&c.token, "token", "", "bearer access token for --server")
	f.string(&c.tokenFile, "token-file", "", "file holding the bearer access token for --server (keeps it out of the process list)")
	c.sf.add(f)
}

// remote reports whether the command talks to a server (--server).
func (c *clientFlags) remote() bool { return c.server != "" }

// check settles --server against --data/--db: given both on the command
// line is an error; a --data or --db on the command line wins over
// PHR_SERVER from the environment (as a flag wins over a variable).
func (c *clientFlags) check() error {
	if !c.remote() || c.fs == nil {
		return nil
	}
	var local []string
	server := false
	c.fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "data", "db":
			local = append(local, "--"+fl.Name)
		case "server":
			server = true
		}
	})
	switch {
	case len(local) == 0:
	case server:
		return fmt.Errorf("%w: give --server or %s, not both: --server works on that server, %s on the local store", errUsage, strings.Join(local, "/"), strings.Join(local, "/"))
	default:
		c.server = "" // PHR_SERVER is set, but the command line names the local store
	}
	return nil
}

// urls returns the server's root and FHIR base from --server.
func (c *clientFlags) urls() (root, fhirBase string, err error) {
	return serverURLs(c.server)
}

// serverURLs normalises a phr server URL given as its root
// (http://host:8080, https://example.org/phr) or its FHIR base (the root +
// "/fhir") into both. It refuses what is not an absolute http(s) URL.
func serverURLs(s string) (root, fhirBase string, err error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", "", fmt.Errorf("%w: --server %q: give the server's http(s) URL, e.g. http://127.0.0.1:8080 or http://127.0.0.1:8080/fhir", errUsage, s)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", "", fmt.Errorf("%w: --server %q: give the server's URL without user, query or fragment", errUsage, s)
	}
	p := strings.TrimRight(u.EscapedPath(), "/")
	p = strings.TrimSuffix(p, "/fhir")
	p = strings.TrimRight(p, "/")
	root = u.Scheme + "://" + u.Host + p
	return root, root + "/fhir", nil
}

// bearer returns the token for --server: --token, or the content of
// --token-file. When both are set, the one given on the command line wins
// over the one from the environment; both on the command line is an error.
func (c *clientFlags) bearer() (string, error) {
	explicit := map[string]bool{}
	if c.fs != nil {
		c.fs.Visit(func(fl *flag.Flag) { explicit[fl.Name] = true })
	}
	useFile := c.tokenFile != ""
	if c.token != "" && c.tokenFile != "" {
		switch {
		case explicit["token"] && explicit["token-file"]:
			return "", fmt.Errorf("%w: give --token or --token-file, not both", errUsage)
		case explicit["token"]:
			useFile = false
		case explicit["token-file"]:
			useFile = true
		default:
			return "", fmt.Errorf("%w: both PHR_TOKEN and PHR_TOKEN_FILE are set; unset one", errUsage)
		}
	}
	if !useFile {
		if c.token == "" {
			return "", fmt.Errorf("%w: --server needs a token: --token, --token-file, PHR_TOKEN or PHR_TOKEN_FILE", errUsage)
		}
		return strings.TrimSpace(c.token), nil
	}
	b, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("--token-file %s: the file must hold one access token", c.tokenFile)
	}
	return tok, nil
}

// open returns a client for the chosen server: --server with its token, or
// the local store in process with full access.
func (c *clientFlags) open(ctx context.Context) (*fhirClient, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	if c.remote() {
		if c.cards != nil && c.cardFlagGiven() {
			return nil, fmt.Errorf("%w: --shc-keys and --shc-fetch-keys apply to imports into --data or --db; a server checks cards with its own (phr serve --shc-keys)", errUsage)
		}
		root, base, err := c.urls()
		if err != nil {
			return nil, err
		}
		tok, err := c.bearer()
		if err != nil {
			return nil, err
		}
		return &fhirClient{root: root, base: base, token: tok, http: &http.Client{}, close: func() {}, remote: true}, nil
	}
	cfg := server.Config{DataDir: c.sf.data, DB: c.sf.db, Addr: "127.0.0.1:0", BaseURL: "http://local", BulkWrites: c.bulk}
	if c.cards != nil {
		c.cards.set(&cfg)
	}
	app, err := server.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	tok, err := app.Tokens.Sign(token.Claims{Subject: "cli", Scope: "system/*.*", Expiry: time.Now().Add(24 * time.Hour)})
	if err != nil {
		app.Close()
		return nil, err
	}
	return &fhirClient{root: "http://local", base: "http://local/fhir", token: tok, http: &http.Client{Transport: inProcess{app.Handler()}}, close: func() { app.Close() }}, nil
}

// do sends a request to path, relative to the FHIR base.
func (c *fhirClient) do(ctx context.Context, method, path string, body io.Reader, headers ...string) (*http.Response, error) {
	return c.send(ctx, method, c.base+"/"+strings.TrimPrefix(path, "/"), "application/fhir+json", body, headers...)
}

// send sends a request to the absolute URL u with the client's token;
// headers are name, value pairs.
func (c *fhirClient) send(ctx context.Context, method, u, accept string, body io.Reader, headers ...string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return c.http.Do(req)
}

// call sends a request to path (relative to the FHIR base) and returns the
// body, or an error with the OperationOutcome's diagnostics for a failed
// status.
func (c *fhirClient) call(ctx context.Context, method, path string, body io.Reader, headers ...string) ([]byte, error) {
	resp, err := c.do(ctx, method, path, body, headers...)
	return c.read(method, path, resp, err)
}

// callRoot is call for a path under the server root (/shl/...).
func (c *fhirClient) callRoot(ctx context.Context, method, path string, body io.Reader, headers ...string) ([]byte, error) {
	resp, err := c.send(ctx, method, c.root+path, "application/json", body, headers...)
	return c.read(method, path, resp, err)
}

func (c *fhirClient) read(method, path string, resp *http.Response, err error) ([]byte, error) {
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read the answer: %w", method, path, err)
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

// cardFlags are the flags that say how imports check SMART Health Cards
// (server.Config.CardKeys and CardFetch).
type cardFlags struct {
	keys  string
	fetch bool
}

func (c *cardFlags) add(f *flags) {
	f.string(&c.keys, "shc-keys", "", "comma-separated key set files (JWKS) of SMART Health Card issuers to check imported cards with")
	f.bool(&c.fetch, "shc-fetch-keys", false, "check imported SMART Health Cards with the keys their issuers publish (fetches iss/.well-known/jwks.json over https)")
}

// set copies the flags into cfg.
func (c *cardFlags) set(cfg *server.Config) {
	for _, k := range strings.Split(c.keys, ",") {
		if k = strings.TrimSpace(k); k != "" {
			cfg.CardKeys = append(cfg.CardKeys, k)
		}
	}
	cfg.CardFetch = c.fetch
}

// cardFlagGiven reports whether --shc-keys or --shc-fetch-keys is on the
// command line (their environment variables, which a server's may share,
// do not count).
func (c *clientFlags) cardFlagGiven() bool {
	given := false
	c.fs.Visit(func(f *flag.Flag) {
		given = given || f.Name == "shc-keys" || f.Name == "shc-fetch-keys"
	})
	return given
}
