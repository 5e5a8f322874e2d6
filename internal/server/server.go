// Package server assembles phr: it opens the store and the blob store,
// builds the services and the HTTP handlers, and runs the HTTP server with
// sane timeouts and a graceful shutdown. cmd/phr calls it; so do the
// end-to-end tests, which start the real server on 127.0.0.1.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/api"
	"github.com/phr-project/phr/internal/audit"
	"github.com/phr-project/phr/internal/auth/authdb"
	"github.com/phr-project/phr/internal/auth/bearer"
	"github.com/phr-project/phr/internal/auth/jwks"
	"github.com/phr-project/phr/internal/auth/oidc"
	"github.com/phr-project/phr/internal/auth/token"
	"github.com/phr-project/phr/internal/authserver"
	"github.com/phr-project/phr/internal/blob"
	"github.com/phr-project/phr/internal/bulk"
	"github.com/phr-project/phr/internal/clientip"
	"github.com/phr-project/phr/internal/importer"
	"github.com/phr-project/phr/internal/jobs"
	"github.com/phr-project/phr/internal/phrexport"
	"github.com/phr-project/phr/internal/portal"
	"github.com/phr-project/phr/internal/records"
	"github.com/phr-project/phr/internal/search"
	"github.com/phr-project/phr/internal/shc"
	"github.com/phr-project/phr/internal/shl"
	"github.com/phr-project/phr/internal/store/postgres"
	"github.com/phr-project/phr/internal/store/sqldb"
	"github.com/phr-project/phr/internal/store/sqlite"
)

// Config is the server configuration (flags and PHR_* variables).
type Config struct {
	// Addr is the listen address (host:port).
	Addr string
	// DataDir holds the SQLite file, blobs and other local state.
	DataDir string
	// DB is empty for SQLite in DataDir, or a postgres:// URL.
	DB string
	// DBMaxConns caps the database connections that serve reads (0: the
	// store's default, postgres.DefaultMaxConns or sqlite.DefaultMaxConns).
	DBMaxConns int
	// DBReaders is the number of PostgreSQL readers that answer
	// single-resource reads in groups (0: postgres.DefaultReaders).
	DBReaders int
	// BaseURL is the public URL of the server (without /fhir); derived
	// from Addr when empty.
	BaseURL string
	// MaxBody caps ordinary request bodies.
	MaxBody int64
	// TokenTTL is the lifetime of access tokens issued by /auth/token
	// (authserver.DefaultTokenTTL, 5 minutes, when zero).
	TokenTTL time.Duration
	// OIDC lists external OpenID issuers whose bearer tokens are accepted;
	// OIDCScope is granted to their tokens that carry no SMART scope.
	OIDC      []oidc.Issuer
	OIDCScope string
	// TokenRate and LoginRate limit /auth/token and /login per client
	// address and minute (0: the defaults, 120 and 10; negative: no limit).
	TokenRate, LoginRate int
	// TrustedProxies may set X-Forwarded-For (client addresses for audit
	// and rate limits).
	TrustedProxies []netip.Prefix
	// Workers, JobLease: background job workers of this process and their
	// lease (bulk export); ExportExpiry keeps finished exports (default
	// 24h); ExportRate is the shortest status polling interval (faster
	// polls get 429).
	Workers      int
	JobLease     time.Duration
	ExportExpiry time.Duration
	ExportRate   time.Duration
	// Blob is empty for blobs in DataDir, or s3://bucket/prefix?endpoint=...
	Blob string
	// SHLKeyFile holds the key that wraps SMART Health Links' kept keys
	// (empty: a key kept in the store).
	SHLKeyFile string
	// DebugAddr, when set, is a second listen address that serves the Go
	// runtime profiles (DebugHandler); empty (the default) serves none.
	DebugAddr string
	// BulkWrites sets a SQLite store up for a process that mostly writes
	// (sqlite.Options.BulkWrites) and the importer's chunks to 2,000
	// resources or 4 MiB, which only pay with that cache: an offline
	// `phr import --data` uses it, `phr serve` does not.
	BulkWrites bool
	// CardKeys are key set files (JWKS) of SMART Health Card issuers whose
	// cards imports check; CardFetch lets imports fetch the key set an
	// issuer publishes at its iss + /.well-known/jwks.json (https only).
	// Without either, cards are imported with a warning that their
	// signatures were not checked.
	CardKeys  []string
	CardFetch bool
}

// Defaults fills the zero fields of c.
func (c *Config) Defaults() {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8080"
	}
	if c.DataDir == "" {
		c.DataDir = "phr-data"
	}
	if c.MaxBody == 0 {
		c.MaxBody = 64 << 20
	}
	if c.BaseURL == "" {
		c.BaseURL = BaseFromAddr(c.Addr)
	}
	c.BaseURL = strings.TrimSuffix(c.BaseURL, "/")
}

// BaseFromAddr derives the public URL from a listen address: a wildcard
// host becomes 127.0.0.1.
func BaseFromAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// App is an assembled phr: store, services and handlers.
type App struct {
	Config  Config
	Store   *sqldb.DB
	Blobs   blob.Store
	Records *records.Service
	Tokens  *token.Issuer
	FHIR    *api.Server
	Auth    *bearer.Authenticator
	// AuthServer serves SMART discovery, /auth/token, /auth/authorize,
	// /login, /logout and the admin API; it also holds web sessions.
	AuthServer *authserver.Server
	// Audit records every FHIR API access as an AuditEvent.
	Audit *audit.Log
	// Users holds clients, users, codes, refresh tokens and sessions.
	Users *authdb.DB
	Jobs  *jobs.Queue
	Bulk  *bulk.Service
	SHL   *shl.Service
	mux   *http.ServeMux
}

// OpenStore opens the store the configuration names.
func OpenStore(ctx context.Context, c Config) (*sqldb.DB, error) {
	if c.DB != "" {
		if !strings.HasPrefix(c.DB, "postgres://") && !strings.HasPrefix(c.DB, "postgresql://") {
			return nil, fmt.Errorf("--db must be empty (SQLite in the data directory) or a postgres:// URL")
		}
		return postgres.OpenWith(ctx, c.DB, postgres.Options{MaxConns: c.DBMaxConns, Readers: c.DBReaders})
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	return sqlite.OpenWith(ctx, filepath.Join(c.DataDir, "phr.db"), sqlite.Options{MaxConns: c.DBMaxConns, BulkWrites: c.BulkWrites})
}

// Open assembles an App from the configuration.
func Open(ctx context.Context, c Config) (*App, error) {
	c.Defaults()
	st, err := OpenStore(ctx, c)
	if err != nil {
		return nil, err
	}
	a := &App{Config: c, Store: st}
	if err := a.build(ctx); err != nil {
		st.Close()
		return nil, err
	}
	return a, nil
}

func (a *App) build(ctx context.Context) error {
	c := a.Config
	blobs, err := openBlobs(ctx, c)
	if err != nil {
		return err
	}
	a.Blobs = blobs
	a.Tokens, err = TokenIssuer(ctx, a.Store)
	if err != nil {
		return err
	}
	a.Auth = &bearer.Authenticator{Issuer: a.Tokens}
	if len(c.OIDC) > 0 {
		v, err := oidc.NewVerifier(nil, c.OIDC...)
		if err != nil {
			return err
		}
		a.Auth.External = append(a.Auth.External, bearer.OIDC{Verifier: v, DefaultScope: c.OIDCScope})
	}
	fhirBase := c.BaseURL + "/fhir"
	a.Records = records.New(records.Options{Store: a.Store, Blobs: blobs, Validator: validator{}, Indexer: indexer{}, BaseURL: fhirBase})
	if err := a.Records.IndexSecurityContexts(ctx); err != nil {
		return err
	}
	ips := &clientip.Resolver{Trusted: c.TrustedProxies}
	a.Audit = audit.New(audit.Options{DB: a.Store, ClientIP: ips.From, Auth: a.Auth})
	a.FHIR = api.New(api.Options{Records: a.Records, Auth: audit.Capture(a.Auth), BaseURL: fhirBase, MaxBody: c.MaxBody})
	searchEngine := search.Register(a.FHIR, a.Records, a.Store)
	phrexport.New(phrexport.Options{DB: a.Store, Records: a.Records, BaseURL: fhirBase, Signer: a.Tokens, Matcher: searchEngine}).Register(a.FHIR, audit.Capture(a.Auth))
	imp := importer.New(a.Store, a.Records)
	imp.Matcher = searchEngine
	if len(c.CardKeys) > 0 || c.CardFetch {
		trusted, err := shc.LoadKeys(c.CardKeys...)
		if err != nil {
			return err
		}
		lists, err := shc.LoadRevocation(c.CardKeys...)
		if err != nil {
			return err
		}
		is := &shc.Issuers{Trusted: trusted, TrustedLists: lists}
		if c.CardFetch {
			is.Fetch = &jwks.Cache{Client: &http.Client{Timeout: 10 * time.Second}}
		}
		imp.CardKeys = is
	}
	if _, err := imp.MarkInterrupted(ctx); err != nil {
		return err
	}
	importer.Register(a.FHIR, imp)
	a.mux = http.NewServeMux()
	a.Jobs = jobs.New(a.Store, jobs.Options{Workers: c.Workers, Lease: c.JobLease})
	a.Bulk = bulk.New(bulk.Options{DB: a.Store, Records: a.Records, Blobs: blobs, Queue: a.Jobs, Auth: a.Auth, Matcher: searchEngine, BaseURL: fhirBase, Expiry: c.ExportExpiry, MinPoll: c.ExportRate})
	a.Bulk.Register(a.FHIR, a.mux)
	a.mux.Handle("/fhir", a.FHIR)
	a.mux.Handle("/fhir/", a.FHIR)
	a.Users = authdb.New(a.Store)
	a.AuthServer = authserver.New(authserver.Options{DB: a.Users, Tokens: a.Tokens, Auth: a.Auth, Records: a.Records,
		BaseURL: c.BaseURL, TokenTTL: c.TokenTTL, ClientIP: ips, TokenRate: c.TokenRate, LoginRate: c.LoginRate})
	a.AuthServer.Register(a.mux)
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := a.Store.QueryRow(r.Context(), "SELECT 1").Scan(new(int)); err != nil {
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	if a.SHL, err = shl.Mount(ctx, a.mux, shl.Options{DB: a.Store, Records: a.Records, Auth: a.Auth, BaseURL: c.BaseURL, MaxBody: c.MaxBody, KEKFile: c.SHLKeyFile}); err != nil {
		return err
	}
	// The patient portal at / (last: every other route is more specific).
	if _, err = portal.Mount(a.mux, portal.Options{API: a.Audit.Handler(a.mux), Tokens: a.Tokens, Sessions: portal.AuthSessions{Server: a.AuthServer}, BaseURL: c.BaseURL, Exports: a.Jobs}); err != nil {
		return err
	}
	return nil
}

// Handler returns the root HTTP handler.
func (a *App) Handler() http.Handler { return logRequests(a.Audit.Handler(a.mux)) }

// Mux returns the root mux, for features that add routes.
func (a *App) Mux() *http.ServeMux { return a.mux }

// Close stores pending audit events and releases the store.
func (a *App) Close() error {
	if a.Audit != nil {
		a.Audit.Close()
	}
	return a.Store.Close()
}

// HTTPServer returns an http.Server for the App with sane timeouts:
// headers must arrive quickly; bodies and responses may stream for long
// (imports and exports), bounded by idle timeouts on the connection.
func (a *App) HTTPServer() *http.Server {
	return &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
}

// Serve serves on ln until ctx is done, then shuts down gracefully,
// letting running requests finish for up to grace.
func (a *App) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	srv := a.HTTPServer()
	if a.Config.DebugAddr != "" {
		stop, err := serveDebug(a.Config.DebugAddr)
		if err != nil {
			return err
		}
		defer stop()
	}
	a.Jobs.Start()
	defer a.Jobs.Stop()
	a.Bulk.Start()
	defer a.Bulk.Stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	slog.Info("shutting down", "grace", grace)
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}

// statusWriter records the status of a response for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
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
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer
// (flushing streamed responses, deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// secretPaths are path prefixes whose next segment is itself a secret (a
// SMART Health Link's manifest id, a file location token).
var secretPaths = []string{"/shl/m/", "/shl/f/"}

// LogPath returns the request path as it may be logged: secret segments
// are replaced by "[redacted]".
func LogPath(p string) string {
	for _, pre := range secretPaths {
		if strings.HasPrefix(p, pre) {
			return pre + "[redacted]"
		}
	}
	return p
}

// logRequests logs each request at debug level (never the query string,
// which may carry search terms, nor headers, which carry tokens).
func logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !slog.Default().Enabled(r.Context(), slog.LevelDebug) {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		slog.Debug("request", "method", r.Method, "path", LogPath(r.URL.Path), "status", sw.status, "bytes", sw.bytes, "duration", time.Since(start))
	})
}
