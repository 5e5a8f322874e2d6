package cli

import (
	"context"
	"fmt"
	"github.com/phr-project/phr/internal/procs"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/auth/oidc"
	"github.com/phr-project/phr/internal/clientip"
	"github.com/phr-project/phr/internal/server"
)

// oidcFlags configure external OpenID issuers whose tokens are accepted.
type oidcFlags struct {
	issuers, audience, patientClaim, scopeClaim, jwksURL, scope string
}

func (o *oidcFlags) add(f *flags) {
	f.string(&o.issuers, "oidc-issuer", "", "comma-separated issuer URLs of external OpenID providers whose bearer JWTs are accepted")
	f.string(&o.audience, "oidc-audience", "", "comma-separated aud values accepted from those issuers (required with --oidc-issuer)")
	f.string(&o.patientClaim, "oidc-patient-claim", "patient", "claim holding the patient id (a dotted path reaches nested claims)")
	f.string(&o.scopeClaim, "oidc-scope-claim", "scope", "claim holding SMART scopes")
	f.string(&o.jwksURL, "oidc-jwks-url", "", "JWKS URL to use instead of OpenID discovery (one issuer only)")
	f.string(&o.scope, "oidc-default-scope", "patient/*.rs", "scopes granted to external tokens that carry no SMART resource scope")
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func (o *oidcFlags) config() ([]oidc.Issuer, error) {
	urls := splitList(o.issuers)
	if len(urls) == 0 {
		return nil, nil
	}
	aud := splitList(o.audience)
	if len(aud) == 0 {
		return nil, fmt.Errorf("%w: --oidc-issuer needs --oidc-audience (the aud your provider puts in tokens for phr)", errUsage)
	}
	if o.jwksURL != "" && len(urls) > 1 {
		return nil, fmt.Errorf("%w: --oidc-jwks-url applies to a single --oidc-issuer", errUsage)
	}
	var out []oidc.Issuer
	for _, u := range urls {
		out = append(out, oidc.Issuer{URL: u, Audience: aud, JWKSURL: o.jwksURL, PatientClaim: o.patientClaim, ScopeClaim: o.scopeClaim})
	}
	if _, err := oidc.NewVerifier(nil, out...); err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	return out, nil
}

func init() {
	register(command{name: "serve", summary: "run the FHIR server", run: runServe})
}

// storeFlags are the flags that locate the store.
type storeFlags struct {
	data, db string
}

func (s *storeFlags) add(f *flags) {
	f.string(&s.data, "data", "phr-data", "data directory (SQLite database, keys, blobs)")
	f.string(&s.db, "db", "", "database URL: empty for SQLite in the data directory, or postgres://...")
}

func runServe(ctx context.Context, args []string, out, errOut io.Writer) error {
	f := newFlags("serve", "[flags]", errOut)
	var (
		cfg      server.Config
		sf       storeFlags
		logLevel string
		grace    string
		maxBody  string
		tokenTTL string
		oidcFl   oidcFlags
		proxies  string
		workers  string
		jobLease string
		expiry   string
		rate     string
		maxConns string
		readers  string
		procsN   string
	)
	f.string(&cfg.Addr, "addr", "127.0.0.1:8080", "listen address (host:port)")
	sf.add(f)
	f.string(&maxConns, "db-max-conns", "0", "database connections that serve reads (0: PostgreSQL 3 per CPU, at least 4, plus a write pool half that size; SQLite 4 per CPU, at least 8, plus one writer)")
	f.string(&readers, "db-readers", "0", "PostgreSQL: goroutines that answer single-resource reads, each looking up every read waiting at the time in one statement (0: one per CPU, at least 2; at most --db-max-conns)")
	f.string(&cfg.BaseURL, "base-url", "", "public URL of the server used in absolute links (default: derived from --addr)")
	f.string(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.string(&grace, "shutdown-grace", "30s", "how long running requests may take to finish on SIGTERM")
	f.string(&maxBody, "max-body", "64MiB", "largest request body for ordinary FHIR interactions (imports stream without limit)")
	f.string(&cfg.Blob, "blob", "", "blob store: empty for files in the data directory, or s3://bucket/prefix?endpoint=host:port[&insecure=true] (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
	f.string(&tokenTTL, "token-ttl", "5m", "lifetime of access tokens issued by /auth/token (expires_in)")
	f.string(&proxies, "trusted-proxies", "", "comma-separated proxy addresses/CIDRs whose X-Forwarded-For is believed (audit, rate limits)")
	f.IntVar(&cfg.TokenRate, "token-rate", envInt("token-rate", 120), "token requests per minute per client address (bursts of twice that; -1: no limit) [PHR_TOKEN_RATE]")
	f.IntVar(&cfg.LoginRate, "login-rate", envInt("login-rate", 10), "sign-in attempts per minute per client address (bursts of twice that; -1: no limit) [PHR_LOGIN_RATE]")
	oidcFl.add(f)
	f.string(&workers, "workers", "2", "background jobs (bulk exports) this process runs at once")
	f.string(&jobLease, "job-lease", "30s", "lease of a running job: another replica takes over a job whose worker stopped renewing it for this long")
	f.string(&expiry, "export-expiry", "24h", "how long the files of a finished bulk export are kept")
	f.string(&rate, "export-rate", "500ms", "shortest interval between status polls of one bulk export (faster polls get 429 + Retry-After)")
	f.string(&procsN, "procs", "0", "threads running Go code while the server only answers requests (GOMAXPROCS); imports, export jobs and Bundles over 256 KiB use all CPUs while they run (0: one fewer than the CPUs, at least 1; a GOMAXPROCS environment variable fixes the number instead)")
	f.string(&cfg.DebugAddr, "debug-addr", "", "address (host:port) of a second listener serving Go runtime profiles at /debug/pprof/ (empty: none; keep it on 127.0.0.1)")
	f.string(&cfg.SHLKeyFile, "shl-key-file", "", "file with the 32-byte key (base64url) that wraps the kept keys of SMART Health Links with flag L (default: a key kept in the store)")
	var cards cardFlags
	cards.add(f)
	if err := f.parse(args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %v", errUsage, f.Args())
	}
	cards.set(&cfg)
	n, err := strconv.Atoi(maxConns)
	if err != nil || n < 0 {
		return fmt.Errorf("%w: --db-max-conns %q must be 0 (the default) or a positive number", errUsage, maxConns)
	}
	cfg.DBMaxConns = n
	if n, err = strconv.Atoi(readers); err != nil || n < 0 {
		return fmt.Errorf("%w: --db-readers %q must be 0 (the default) or a positive number", errUsage, readers)
	}
	cfg.DBReaders = n
	if _, err := fmt.Sscanf(workers, "%d", &cfg.Workers); err != nil || cfg.Workers < 1 {
		return fmt.Errorf("%w: --workers %q must be a positive number", errUsage, workers)
	}
	for _, d := range []struct {
		name string
		val  string
		dst  *time.Duration
	}{{"job-lease", jobLease, &cfg.JobLease}, {"export-expiry", expiry, &cfg.ExportExpiry}, {"export-rate", rate, &cfg.ExportRate}} {
		v, err := time.ParseDuration(d.val)
		if err != nil || v <= 0 {
			return fmt.Errorf("%w: --%s %q must be a positive duration like 30s", errUsage, d.name, d.val)
		}
		*d.dst = v
	}
	np, err := strconv.Atoi(procsN)
	if err != nil || np < 0 {
		return fmt.Errorf("%w: --procs %q must be 0 (the default) or a positive number", errUsage, procsN)
	}
	server.TuneGC()
	if err := setupLogging(logLevel, errOut); err != nil {
		return err
	}
	g, err := time.ParseDuration(grace)
	if err != nil {
		return fmt.Errorf("%w: --shutdown-grace: %v", errUsage, err)
	}
	if cfg.MaxBody, err = parseSize(maxBody); err != nil {
		return fmt.Errorf("%w: --max-body: %v", errUsage, err)
	}
	if cfg.TokenTTL, err = time.ParseDuration(tokenTTL); err != nil || cfg.TokenTTL <= 0 || cfg.TokenTTL > 24*time.Hour {
		return fmt.Errorf("%w: --token-ttl %q is not a duration between 1s and 24h", errUsage, tokenTTL)
	}
	if cfg.TrustedProxies, err = clientip.ParsePrefixes(proxies); err != nil {
		return fmt.Errorf("%w: --trusted-proxies: %v", errUsage, err)
	}
	if cfg.OIDC, err = oidcFl.config(); err != nil {
		return err
	}
	cfg.OIDCScope = oidcFl.scope
	cfg.DataDir, cfg.DB = sf.data, sf.db
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = server.BaseFromAddr(ln.Addr().String())
	}
	app, err := server.Open(ctx, cfg)
	if err != nil {
		ln.Close()
		return err
	}
	defer app.Close()
	storeDesc := "SQLite in " + cfg.DataDir
	tokenCmd := fmt.Sprintf("phr token --data %s --scope 'system/*.*'", shellQuote(cfg.DataDir))
	if cfg.DB != "" {
		storeDesc = "PostgreSQL"
		tokenCmd = "phr token --db \"$PHR_DB\" --scope 'system/*.*'"
	}
	fmt.Fprintf(out, "phr listening on http://%s\n", ln.Addr())
	fmt.Fprintf(out, "FHIR base:  %s/fhir   (store: %s)\n", app.Config.BaseURL, storeDesc)
	fmt.Fprintf(out, "Get a token: %s\n", tokenCmd)
	fmt.Fprintf(out, "Then:        curl -H \"Authorization: Bearer $TOKEN\" %s/fhir/metadata\n", app.Config.BaseURL)
	fmt.Fprintf(out, "Portal:      %s/   (sign in at %s/login; add people with: phr users add --email E --role admin|patient [--patient ID])\n", app.Config.BaseURL, app.Config.BaseURL)
	fmt.Fprintf(out, "SMART:       %s/fhir/.well-known/smart-configuration   (register apps and backends with: phr clients add)\n", app.Config.BaseURL)
	if os.Getenv("GOMAXPROCS") == "" {
		all := runtime.GOMAXPROCS(0)
		slog.Info("threads running Go code", "serving", procs.Enable(np), "bulk", all)
	}
	slog.Info("serving", "addr", ln.Addr().String(), "base", app.Config.BaseURL)
	return app.Serve(ctx, ln, g)
}

func shellQuote(s string) string {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '/') {
			return "'" + s + "'"
		}
	}
	return s
}

// parseSize reads sizes like 64MiB, 10MB, 1GiB or a byte count.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	for _, u := range units {
		if len(s) > len(u.suffix) && s[len(s)-len(u.suffix):] == u.suffix {
			var n int64
			if _, err := fmt.Sscanf(s[:len(s)-len(u.suffix)], "%d", &n); err != nil || n <= 0 {
				return 0, fmt.Errorf("%q is not a size like 64MiB", s)
			}
			return n * u.mult, nil
		}
	}
	var n int64
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size like 64MiB", s)
	}
	return n, nil
}

// envInt returns the PHR_* variable of a flag as an integer, or def.
func envInt(flagName string, def int) int {
	if v, ok := os.LookupEnv(envName(flagName)); ok {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}
