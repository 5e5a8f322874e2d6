package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/auth/token"
	"github.com/phr-project/phr/internal/phrexport"
	"github.com/phr-project/phr/internal/server"
)

func init() {
	register(command{name: "export", summary: "export a health record (Bundle, NDJSON, .phr or encrypted .sphr)", run: runExport})
	register(command{name: "verify", summary: "verify the detached signature of an export", run: runVerify})
}

// exportOpts are the flags of phr export.
type exportOpts struct {
	format, patient, start, end, types, since, until string
	out, passphrase                                  string
	sign, quiet                                      bool
	cf                                               clientFlags
}

func runExport(ctx context.Context, args []string, out, errOut io.Writer) error {
	f := newFlags("export", "[--format phr] [--patient ID] [--start D --end D] [--type T,...] [--out FILE] [--server URL --token T | --data DIR]", errOut)
	var o exportOpts
	f.string(&o.format, "format", "phr", "output format: bundle, ndjson, phr or sphr (encrypted zip)")
	f.string(&o.patient, "patient", "", "patient id to export (default: every patient, or the token's own)")
	f.string(&o.start, "start", "", "start of the clinical date range (2010, 2020-06, 2020-06-30)")
	f.string(&o.end, "end", "", "end of the clinical date range (inclusive)")
	f.string(&o.types, "type", "", "comma-separated resource types to export (_type)")
	f.string(&o.since, "since", "", "only resources updated at or after this instant (_since)")
	f.string(&o.until, "until", "", "only resources updated at or before this instant (_until)")
	f.string(&o.out, "out", "", `output file ("-" for standard output; default: a name from the patient and the date)`)
	f.string(&o.passphrase, "passphrase", "", "passphrase of a .sphr (default: a generated one, printed once on standard error); prefer the environment variable to the flag, which other users can see")
	f.bool(&o.sign, "sign", false, "also write a detached JWS signature with the server's key to OUT.jws (verify with phr verify)")
	f.bool(&o.quiet, "quiet", false, "no progress on standard error")
	o.cf.add(f)
	if err := f.parse(args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %v", errUsage, f.Args())
	}
	format, err := phrexport.ParseFormat(o.format)
	if err != nil {
		return fmt.Errorf("%w: --format %q: use bundle, ndjson, phr or sphr", errUsage, o.format)
	}
	o.format = format
	if o.passphrase != "" && format != phrexport.FormatSPHR {
		return fmt.Errorf("%w: --passphrase only applies to --format sphr", errUsage)
	}
	if err := o.cf.check(); err != nil {
		return err
	}
	if o.cf.remote() {
		return exportRemote(ctx, &o, out, errOut)
	}
	return exportLocal(ctx, &o, out, errOut)
}

// progress shows how far an export is on standard error: on a terminal a
// line redrawn at most twice a second; otherwise (a log file, a pipe) a
// plain line every 10 seconds. done prints the final figures.
type progress struct {
	w     io.Writer
	quiet bool
	tty   bool
	every time.Duration
	start time.Time
	mu    sync.Mutex
	last  time.Time
	// resources is -1 when only bytes are known (a remote Bundle or .sphr).
	resources, bytes int64
}

func newProgress(w io.Writer, quiet bool) *progress {
	p := &progress{w: w, quiet: quiet, tty: isTerminal(w), start: time.Now(), resources: -1}
	p.last = p.start
	p.every = 10 * time.Second
	if p.tty {
		p.every = 500 * time.Millisecond
	}
	return p
}

// update records the figures so far (resources < 0: unknown) and shows
// them when it is time.
func (p *progress) update(resources, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if resources >= 0 {
		p.resources = resources
	}
	p.bytes = n
	if p.quiet || time.Since(p.last) < p.every {
		return
	}
	p.last = time.Now()
	p.show(false)
}

func (p *progress) show(final bool) {
	el := time.Since(p.start).Seconds()
	mb := float64(p.bytes) / 1e6
	var line string
	if p.resources >= 0 {
		line = fmt.Sprintf("exported %d resources, %.1f MB in %.1fs", p.resources, mb, el)
		if final && el > 0 {
			line += fmt.Sprintf(" (%.0f resources/s)", float64(p.resources)/el)
		}
	} else {
		line = fmt.Sprintf("exported %.1f MB in %.1fs", mb, el)
	}
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K"+line)
		if final {
			fmt.Fprintln(p.w)
		}
		return
	}
	fmt.Fprintln(p.w, line)
}

// done shows the final figures.
func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.quiet {
		p.show(true)
	}
}

// output opens the destination: a temporary file renamed into place by
// commit (so a failed export never leaves a file that looks complete), or
// standard output.
type output struct {
	f     *os.File
	path  string
	bw    *bufio.Writer
	w     io.Writer
	final string
}

func openOutput(path string, stdout io.Writer) (*output, error) {
	if path == "-" {
		bw := bufio.NewWriterSize(stdout, 64<<10)
		return &output{bw: bw, w: bw}, nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".partial-*")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	bw := bufio.NewWriterSize(f, 256<<10)
	return &output{f: f, path: f.Name(), bw: bw, w: bw, final: path}, nil
}

func (o *output) commit() error {
	if err := o.bw.Flush(); err != nil {
		o.abort()
		return err
	}
	if o.f == nil {
		return nil
	}
	if err := o.f.Close(); err != nil {
		os.Remove(o.path)
		return err
	}
	return os.Rename(o.path, o.final)
}

func (o *output) abort() {
	if o.f != nil {
		o.f.Close()
		os.Remove(o.path)
	}
}

func exportLocal(ctx context.Context, o *exportOpts, stdout, errOut io.Writer) error {
	app, err := server.Open(ctx, server.Config{DataDir: o.cf.sf.data, DB: o.cf.sf.db})
	if err != nil {
		return err
	}
	defer app.Close()
	svc := phrexport.New(phrexport.Options{DB: app.Store, Records: app.Records, BaseURL: app.Config.BaseURL + "/fhir", Signer: app.Tokens})
	// The command line working on the data directory has its files: it
	// acts with full access, like the server's own work.
	ctx = access.With(ctx, access.System{Name: "phr export"})
	p := &phrexport.Params{Format: o.format, Start: o.start, End: o.end, Passphrase: o.passphrase, Sign: o.sign}
	if o.patient != "" {
		if p.Patient, err = phrexport.ParsePatient(o.patient); err != nil {
			return fmt.Errorf("%w: --patient: %v", errUsage, err)
		}
	}
	if o.types != "" {
		if p.Types, err = phrexport.ParseTypes([]string{o.types}); err != nil {
			return fmt.Errorf("%w: --type: %v", errUsage, err)
		}
	}
	if p.Since, err = phrexport.ParseInstant("--since", o.since, false); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if p.Until, err = phrexport.ParseInstant("--until", o.until, true); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := svc.Prepare(ctx, p); err != nil {
		return err
	}
	path := o.out
	if path == "" {
		path = svc.FileName(p)
	}
	dst, err := openOutput(path, stdout)
	if err != nil {
		return err
	}
	prog := newProgress(errOut, o.quiet)
	p.Progress = prog.update
	st, err := svc.Export(ctx, p, dst.w, nil)
	if err != nil {
		dst.abort()
		return err
	}
	if err := dst.commit(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	prog.update(st.Resources, st.Bytes)
	prog.done()
	return finishExport(path, p.Passphrase, p.GeneratedPassphrase, st.Signature, st.Outcomes, errOut)
}

// finishExport writes the signature file and tells the user what to keep.
func finishExport(path, passphrase string, generated bool, sig string, outcomes int64, errOut io.Writer) error {
	if path != "-" {
		fmt.Fprintf(errOut, "wrote %s\n", path)
	}
	if outcomes > 0 {
		fmt.Fprintf(errOut, "warning: %d resources could not be exported; the export holds an OperationOutcome for each\n", outcomes)
	}
	if generated {
		fmt.Fprintf(errOut, "passphrase (shown only now, keep it safe): %s\n", passphrase)
	}
	if sig != "" {
		sigPath := path + ".jws"
		if path == "-" {
			sigPath = "export.jws"
		}
		if err := os.WriteFile(sigPath, []byte(sig+"\n"), 0o644); err != nil {
			return fmt.Errorf("write the signature: %w", err)
		}
		fmt.Fprintf(errOut, "signature: %s (check with: phr verify %s --sig %s)\n", sigPath, path, sigPath)
	}
	return nil
}

// countingWriter counts bytes and lines for the progress of a remote export.
type countingWriter struct {
	w            io.Writer
	n, lines     int64
	countLines   bool
	prog         *progress
	lastProgress time.Time
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if c.countLines {
		c.lines += int64(bytes.Count(p[:n], []byte{'\n'}))
	}
	if time.Since(c.lastProgress) > 200*time.Millisecond {
		c.lastProgress = time.Now()
		r := int64(-1)
		if c.countLines {
			r = c.lines
		}
		c.prog.update(r, c.n)
	}
	return n, err
}

func exportRemote(ctx context.Context, o *exportOpts, stdout, errOut io.Writer) error {
	c, err := o.cf.open(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	q := url.Values{"outputFormat": {o.format}}
	for k, v := range map[string]string{"start": o.start, "end": o.end, "_type": o.types, "_since": o.since, "_until": o.until} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if o.patient != "" {
		q.Set("patient", "Patient/"+strings.TrimPrefix(o.patient, "Patient/"))
	}
	if o.sign {
		q.Set("sign", "true")
	}
	var headers []string
	if o.passphrase != "" {
		headers = append(headers, phrexport.HeaderPassphrase, o.passphrase)
	}
	res, err := c.send(ctx, http.MethodGet, c.base+"/Bundle/$phr-export?"+q.Encode(), "", nil, headers...)
	if err != nil {
		return fmt.Errorf("export from %s: %w", c.root, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("the server answered %s: %s", res.Status, outcomeTextFrom(res.Body))
	}
	path := o.out
	if path == "" {
		path = "phr-export"
		if _, params, err := mime.ParseMediaType(res.Header.Get("Content-Disposition")); err == nil && params["filename"] != "" {
			path = filepath.Base(params["filename"])
		}
	}
	dst, err := openOutput(path, stdout)
	if err != nil {
		return err
	}
	prog := newProgress(errOut, o.quiet)
	cw := &countingWriter{w: dst.w, countLines: o.format != phrexport.FormatSPHR && o.format != phrexport.FormatBundle, prog: prog}
	if _, err := io.Copy(cw, res.Body); err != nil {
		dst.abort()
		return fmt.Errorf("export from %s: %w (nothing was written)", c.root, err)
	}
	if err := dst.commit(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	r := int64(-1)
	if cw.countLines {
		r = cw.lines
	}
	prog.update(r, cw.n)
	prog.done()
	sig := res.Trailer.Get(phrexport.HeaderSignature)
	if o.sign && sig == "" {
		return errors.New("the server sent no signature (X-PHR-Signature trailer)")
	}
	pass := res.Header.Get(phrexport.HeaderPassphrase)
	return finishExport(path, pass, pass != "", sig, 0, errOut)
}

func runVerify(ctx context.Context, args []string, out, errOut io.Writer) error {
	f := newFlags("verify", "FILE --sig SIGFILE [--server URL | --jwks FILE|URL | --data DIR]", errOut)
	var sigPath, jwksRef, srv string
	var sf storeFlags
	f.string(&sigPath, "sig", "", "detached JWS signature file (default: FILE.jws)")
	f.string(&jwksRef, "jwks", "", "JSON Web Key Set of the signing server, as a file or an http(s) URL (default: the keys of the local data directory)")
	f.string(&srv, "server", "", "the phr server that signed (its root or FHIR base URL): its published keys (jwks_uri of /.well-known/smart-configuration) are used")
	sf.add(f)
	// Accept flags after the file name too: phr verify FILE --sig SIG.
	var files []string
	rest := args
	for len(rest) > 0 {
		if err := f.parse(rest); err != nil {
			return err
		}
		if f.NArg() == 0 {
			break
		}
		files = append(files, f.Arg(0))
		rest = f.Args()[1:]
	}
	if len(files) != 1 {
		return fmt.Errorf("%w: give exactly one file to verify", errUsage)
	}
	file := files[0]
	if sigPath == "" {
		sigPath = file + ".jws"
	}
	sig, err := os.ReadFile(sigPath)
	if err != nil {
		return fmt.Errorf("read the signature: %w", err)
	}
	fh, err := os.Open(file)
	if err != nil {
		return err
	}
	h := sha256.New()
	_, err = io.Copy(h, fh)
	fh.Close()
	if err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	var keys jose.JSONWebKeySet
	switch {
	case srv != "":
		u, err := jwksURI(ctx, srv)
		if err != nil {
			return err
		}
		if keys, err = loadJWKS(ctx, u); err != nil {
			return err
		}
	case jwksRef != "":
		if keys, err = loadJWKS(ctx, jwksRef); err != nil {
			return err
		}
	default:
		st, err := server.OpenStore(ctx, server.Config{DataDir: sf.data, DB: sf.db})
		if err != nil {
			return err
		}
		iss, err := server.TokenIssuer(ctx, st)
		st.Close()
		if err != nil {
			return err
		}
		keys = iss.JWKS()
	}
	kid, err := token.VerifyDetached(strings.TrimSpace(string(sig)), h.Sum(nil), keys)
	if err != nil {
		return fmt.Errorf("%s: signature NOT valid: %w", file, err)
	}
	fmt.Fprintf(out, "%s: signature valid (SHA-256 %x, key %s)\n", file, h.Sum(nil), kid)
	return nil
}

// jwksURI finds a server's key set URL from its SMART configuration.
func jwksURI(ctx context.Context, server string) (string, error) {
	root, _, err := serverURLs(server)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, root+"/.well-known/smart-configuration", nil)
	if err != nil {
		return "", fmt.Errorf("%w: --server: %v", errUsage, err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetch the configuration of %s: %w", server, err)
	}
	defer res.Body.Close()
	var conf struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if res.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&conf) != nil || conf.JWKSURI == "" {
		return "", fmt.Errorf("%s publishes no jwks_uri in /.well-known/smart-configuration (%s); use --jwks", server, res.Status)
	}
	return conf.JWKSURI, nil
}

func loadJWKS(ctx context.Context, ref string) (jose.JSONWebKeySet, error) {
	var keys jose.JSONWebKeySet
	var data []byte
	if strings.HasPrefix(ref, "http://") || strings.HasPrefix(ref, "https://") {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, ref, nil)
		if err != nil {
			return keys, err
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return keys, fmt.Errorf("fetch %s: %w", ref, err)
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return keys, fmt.Errorf("fetch %s: %s", ref, res.Status)
		}
		if data, err = io.ReadAll(io.LimitReader(res.Body, 1<<20)); err != nil {
			return keys, fmt.Errorf("fetch %s: %w", ref, err)
		}
	} else {
		var err error
		if data, err = os.ReadFile(ref); err != nil {
			return keys, err
		}
	}
	if err := json.Unmarshal(data, &keys); err != nil || len(keys.Keys) == 0 {
		return keys, fmt.Errorf("%s is not a JSON Web Key Set with keys", ref)
	}
	return keys, nil
}
