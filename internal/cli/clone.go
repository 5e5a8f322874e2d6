package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/bulkclient"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/importer"
)

func init() {
	register(command{name: "clone", summary: "copy a remote FHIR server's record through Bulk Data $export and import it", run: runClone})
	register(command{name: "pull", summary: "fetch what changed on the cloned remotes since the last clone/pull (_since) and merge it", run: runPull})
}

// remoteState is what clone remembers of one remote for pull (no secrets:
// tokens are given again; a key is named by its file).
type remoteState struct {
	// Into names the record the remote was cloned into when the state
	// file serves several: the phr server's FHIR base for --server, the
	// database URL (without its password) for --db, empty for the SQLite
	// store of the data directory that holds the file.
	Into            string `json:"into,omitempty"`
	Remote          string `json:"remote"`
	Group           string `json:"group,omitempty"`
	Patient         bool   `json:"patient,omitempty"`
	TransactionTime string `json:"transactionTime"`
	ClientID        string `json:"clientId,omitempty"`
	KeyFile         string `json:"keyFile,omitempty"`
	TokenURL        string `json:"tokenUrl,omitempty"`
	Scope           string `json:"scope,omitempty"`
}

// same reports whether two states are of one remote export of one record.
func (s *remoteState) same(o *remoteState) bool {
	return s.Into == o.Into && s.Remote == o.Remote && s.Group == o.Group && s.Patient == o.Patient
}

// remotesFile is the state file: every remote cloned into the records it
// serves, as git keeps a repository's remotes.
type remotesFile struct {
	Remotes []remoteState `json:"remotes"`
}

// legacyState is where phr clone kept its one remote before remotes
// lived with the record: phr-remote.json in the working directory.
const legacyState = "phr-remote.json"

// remoteFlags are the remote server's credentials and the state file.
type remoteFlags struct {
	token, clientID, key, tokenURL, scope, state string
}

func (r *remoteFlags) add(f *flags) {
	f.string(&r.token, "remote-token", "", "bearer token for the remote server; prefer the environment variable to the flag, which other users can see")
	f.string(&r.clientID, "client-id", "", "SMART Backend Services client id at the remote (with --key)")
	f.string(&r.key, "key", "", "private key file (JWK or PEM) of --client-id")
	f.string(&r.tokenURL, "token-url", "", "the remote's token endpoint (default: discovered from .well-known/smart-configuration)")
	f.string(&r.scope, "scope", "system/*.read", "scope to ask for with --client-id")
	f.string(&r.state, "state", "", "file where clone remembers the remotes and their transactionTime for pull (default: remotes.json in the data directory; with --server, phr/remotes.json in the user's configuration directory)")
}

// statePath is the state file for the record cf names, and that record's
// key in it (remoteState.Into).
func (r *remoteFlags) statePath(cf *clientFlags) (path, into string, err error) {
	switch {
	case cf.remote():
		_, base, err := cf.urls()
		if err != nil {
			return "", "", err
		}
		into = base
	case cf.sf.db != "":
		into = redactDB(cf.sf.db)
	}
	if r.state != "" {
		return r.state, into, nil
	}
	if !cf.remote() {
		return filepath.Join(cf.sf.data, "remotes.json"), into, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", "", fmt.Errorf("%w: no user configuration directory for the remotes of --server (%v); give --state FILE", errUsage, err)
	}
	return filepath.Join(dir, "phr", "remotes.json"), into, nil
}

// redactDB is a database URL without its password, to name a record by.
func redactDB(db string) string {
	u, err := url.Parse(db)
	if err != nil {
		return db
	}
	if u.User != nil {
		u.User = url.User(u.User.Username())
	}
	if q := u.Query(); q.Has("password") {
		q.Del("password")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// loadRemotes reads a state file; a missing file has no remotes. The
// single-remote form of earlier versions is read as one remote of into.
func loadRemotes(path, into string) (*remotesFile, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &remotesFile{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var rf remotesFile
	if err := json.Unmarshal(b, &rf); err != nil {
		return nil, fmt.Errorf("%s is not a phr remotes file: %w", path, err)
	}
	if rf.Remotes == nil {
		var one remoteState
		if json.Unmarshal(b, &one) == nil && one.Remote != "" {
			one.Into = into
			rf.Remotes = []remoteState{one}
		}
	}
	return &rf, nil
}

// servers lists the remote servers of states, once each.
func servers(states []remoteState) []string {
	var out []string
	for _, s := range states {
		if !slices.Contains(out, s.Remote) {
			out = append(out, s.Remote)
		}
	}
	return out
}

// put records st, replacing an earlier state of the same remote export.
func (rf *remotesFile) put(st *remoteState) {
	for i := range rf.Remotes {
		if rf.Remotes[i].same(st) {
			rf.Remotes[i] = *st
			return
		}
	}
	rf.Remotes = append(rf.Remotes, *st)
}

// of lists the remotes cloned into the record named into.
func (rf *remotesFile) of(into string) []remoteState {
	var out []remoteState
	for _, s := range rf.Remotes {
		if s.Into == into {
			out = append(out, s)
		}
	}
	return out
}

// saveRemote records st in the state file at path (created with the
// directories it needs; only its owner may read it). The file is
// rewritten whole through a temporary file, so a crash leaves the old or
// the new one.
func saveRemote(path string, st *remoteState) error {
	rf, err := loadRemotes(path, st.Into)
	if err != nil {
		return err
	}
	rf.put(st)
	b, err := json.MarshalIndent(rf, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".remotes-*.json")
	if err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}

func (r *remoteFlags) client(st *remoteState) (*bulkclient.Client, error) {
	c := &bulkclient.Client{Base: st.Remote}
	clientID, keyFile := st.ClientID, st.KeyFile
	if r.clientID != "" {
		clientID, keyFile = r.clientID, r.key
	}
	switch {
	case r.token != "":
		c.Tokens = bulkclient.StaticToken(r.token)
	case clientID != "":
		if keyFile == "" {
			return nil, fmt.Errorf("%w: --client-id needs --key", errUsage)
		}
		data, err := os.ReadFile(keyFile)
		if err != nil {
			return nil, fmt.Errorf("read --key: %w", err)
		}
		key, kid, err := bulkclient.LoadKey(data)
		if err != nil {
			return nil, fmt.Errorf("--key %s: %w", keyFile, err)
		}
		// Pull may run from another directory: the key is remembered by
		// its absolute path.
		if abs, err := filepath.Abs(keyFile); err == nil {
			keyFile = abs
		}
		c.Tokens = &bulkclient.Backend{ClientID: clientID, Key: key, KeyID: kid, TokenURL: st.TokenURL, Base: st.Remote, Scope: st.Scope}
		st.ClientID, st.KeyFile = clientID, keyFile
	}
	return c, nil
}

func runClone(ctx context.Context, args []string, out, errOut io.Writer) error {
	f := newFlags("clone", "URL [--remote-token T | --client-id ID --key FILE] [--group ID | --patient] [--server URL --token T | --data DIR]", errOut)
	var (
		cf      clientFlags
		rf      remoteFlags
		group   string
		patient bool
	)
	cf.add(f)
	rf.add(f)
	f.string(&group, "group", "", "export this Group (Group/[id]/$export)")
	f.bool(&patient, "patient", false, "patient-level export (Patient/$export)")
	if err := f.parse(reorder(args)); err != nil {
		return err
	}
	if f.NArg() != 1 {
		return fmt.Errorf("%w: give the remote FHIR base URL", errUsage)
	}
	if err := cf.check(); err != nil {
		return err
	}
	path, into, err := rf.statePath(&cf)
	if err != nil {
		return err
	}
	remote := fhirBase(ctx, strings.TrimSuffix(f.Arg(0), "/"))
	if remote != strings.TrimSuffix(f.Arg(0), "/") {
		fmt.Fprintf(errOut, "phr: %s is the FHIR base of %s\n", remote, f.Arg(0))
	}
	st := &remoteState{Into: into, Remote: remote, Group: group, Patient: patient, TokenURL: rf.tokenURL, Scope: rf.scope}
	return fetch(ctx, &cf, &rf, st, time.Time{}, path, out, errOut)
}

// fhirBase returns the FHIR base of the server at u: u itself when its
// /metadata is a CapabilityStatement (or neither answers one: the export
// then says what is wrong), else u/fhir when that one's is. People give
// a server's address (that of phr serve is its root, its FHIR base being
// /fhir), and clone remembers the base for pull.
func fhirBase(ctx context.Context, u string) string {
	if isFHIRBase(ctx, u) || !isFHIRBase(ctx, u+"/fhir") {
		return u
	}
	return u + "/fhir"
}

// isFHIRBase reports whether GET base/metadata answers a CapabilityStatement
// (a FHIR server's, which needs no token).
func isFHIRBase(ctx context.Context, base string) bool {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metadata", nil)
	if err != nil {
		return false
	}
	req.Header.Set("Accept", "application/fhir+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var cs struct{ ResourceType string }
	return resp.StatusCode == http.StatusOK && json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&cs) == nil && cs.ResourceType == "CapabilityStatement"
}

func runPull(ctx context.Context, args []string, out, errOut io.Writer) error {
	f := newFlags("pull", "[URL] [--remote-token T | --client-id ID --key FILE] [--state FILE] [--server URL --token T | --data DIR]", errOut)
	var (
		cf clientFlags
		rf remoteFlags
	)
	cf.add(f)
	rf.add(f)
	if err := f.parse(reorder(args)); err != nil {
		return err
	}
	if f.NArg() > 1 {
		return fmt.Errorf("%w: give at most one remote URL (none: every remote cloned into this record)", errUsage)
	}
	if err := cf.check(); err != nil {
		return err
	}
	path, into, err := rf.statePath(&cf)
	if err != nil {
		return err
	}
	file, err := loadRemotes(path, into)
	if err != nil {
		return err
	}
	remotes := file.of(into)
	legacy := false
	if len(remotes) == 0 && rf.state == "" {
		// Clones made by earlier versions kept their remote in the
		// working directory; a successful pull moves it to path.
		if old, err := loadRemotes(legacyState, into); err == nil && len(old.Remotes) > 0 {
			remotes, legacy = old.of(into), true
			fmt.Fprintf(errOut, "phr: read the remote from %s (written by an older phr clone); it moves to %s\n", legacyState, path)
		}
	}
	names := servers(remotes)
	if f.NArg() == 1 {
		want := strings.TrimSuffix(f.Arg(0), "/")
		var picked []remoteState
		for _, s := range remotes {
			// (the server's address names its FHIR base, as for clone)
			if s.Remote == want || s.Remote == want+"/fhir" {
				picked = append(picked, s)
			}
		}
		if len(picked) == 0 {
			if len(names) == 0 {
				return fmt.Errorf("%w: nothing was cloned into this record (%s); run phr clone %s first", errUsage, path, want)
			}
			return fmt.Errorf("%w: %s was not cloned into this record; its remotes: %s", errUsage, want, strings.Join(names, ", "))
		}
		remotes = picked
	}
	if len(remotes) == 0 {
		return fmt.Errorf("%w: nothing was cloned into this record (%s); run phr clone URL first", errUsage, path)
	}
	// A bearer token or a client id is the credential of one server: it
	// must not be sent to the others.
	if len(servers(remotes)) > 1 && (rf.token != "" || rf.clientID != "") {
		return fmt.Errorf("%w: a remote token or client id is for one server; name the remote to pull: phr pull URL (remotes: %s)", errUsage, strings.Join(names, ", "))
	}
	var errs []error
	for i := range remotes {
		st := &remotes[i]
		// No transactionTime: the clone's export reported errors, so
		// everything is asked for again.
		var since time.Time
		if st.TransactionTime != "" {
			if since, err = fhir.ParseInstant(st.TransactionTime); err != nil {
				errs = append(errs, fmt.Errorf("%s: %s: transactionTime: %w", path, st.Remote, err))
				continue
			}
		}
		if len(remotes) > 1 {
			fmt.Fprintf(errOut, "phr: pulling %s\n", st.Remote)
		}
		if err := fetch(ctx, &cf, &rf, st, since, path, out, errOut); err != nil {
			if errors.Is(err, errUsage) {
				return err
			}
			errs = append(errs, fmt.Errorf("pull %s: %w", st.Remote, err))
		}
	}
	if legacy && len(errs) == 0 {
		if err := os.Remove(legacyState); err != nil {
			return fmt.Errorf("the remote is now kept in %s, but %s stays: %w", path, legacyState, err)
		}
	}
	return errors.Join(errs...)
}

// fetch runs the remote export (since, when not zero), imports its output
// and deletions with the remote as the source, and saves the state.
func fetch(ctx context.Context, cf *clientFlags, rf *remoteFlags, st *remoteState, since time.Time, statePath string, out, errOut io.Writer) error {
	// Usage problems of the local side first, before the remote export runs.
	if err := cf.check(); err != nil {
		return err
	}
	if cf.remote() {
		if _, _, err := cf.urls(); err != nil {
			return err
		}
		if _, err := cf.bearer(); err != nil {
			return err
		}
	}
	bc, err := rf.client(st)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "phr-clone-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	req := bulkclient.Request{Group: st.Group, Patient: st.Patient, Since: since}
	logf := func(format string, a ...any) { fmt.Fprintf(errOut, "phr: "+format+"\n", a...) }
	res, err := bc.Export(ctx, req, work, logf)
	if err != nil {
		return fmt.Errorf("export from %s: %w", st.Remote, err)
	}
	var files, errFiles []string
	for _, p := range res.Files {
		if strings.HasPrefix(filepath.Base(p), "error-") {
			errFiles = append(errFiles, p)
		} else {
			files = append(files, p)
		}
	}
	failed, err := reportRemoteIssues(errFiles, errOut)
	if err != nil {
		return err
	}
	importer.SortForLoad(files)
	c, err := cf.open(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	if len(files) > 0 {
		if err := sendImport(ctx, c, ndjsonUpload(st.Remote, files, 0), st.Remote, "", false, false, isTerminal(errOut), out, errOut); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(out, "nothing changed on %s since %s\n", st.Remote, since.Format(time.RFC3339))
	}
	if failed > 0 {
		// What failed on the remote may not change again, so a _since
		// after this export could miss it for good: the next pull asks
		// again from the time before it.
		from := "the beginning (a full export)"
		if !since.IsZero() {
			from = st.TransactionTime
		}
		if err := saveRemote(statePath, st); err != nil {
			return err
		}
		return fmt.Errorf("%s reported %d errors in its export (above): what it sent is imported, and the next pull asks again from %s", st.Remote, failed, from)
	}
	st.TransactionTime = res.Manifest.TransactionTime
	if err := saveRemote(statePath, st); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s is at transactionTime %s (remembered in %s for phr pull)\n", st.Remote, st.TransactionTime, statePath)
	return nil
}

// maxRemoteIssues is how many of a remote's export issues are printed.
const maxRemoteIssues = 50

// reportRemoteIssues prints the issues of an export's error files (NDJSON
// of OperationOutcomes) and counts those of severity error or fatal; a
// line that is not an OperationOutcome counts as an error.
func reportRemoteIssues(paths []string, errOut io.Writer) (failed int, err error) {
	printed, more := 0, 0
	say := func(format string, a ...any) {
		if printed < maxRemoteIssues {
			fmt.Fprintf(errOut, "phr: the remote reported "+format+"\n", a...)
			printed++
		} else {
			more++
		}
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return failed, fmt.Errorf("read the remote's error file: %w", err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for line := 1; sc.Scan(); line++ {
			text := bytes.TrimSpace(sc.Bytes())
			if len(text) == 0 {
				continue
			}
			issues, ok := fhir.ParseOutcome(text)
			if !ok {
				failed++
				say("error: line %d of %s is not an OperationOutcome", line, filepath.Base(p))
				continue
			}
			for _, is := range issues {
				if is.Severity == "error" || is.Severity == "fatal" || is.Severity == "" {
					failed++
				}
				sev := is.Severity
				if sev == "" {
					sev = "error"
				}
				say("%s: %s", sev, is.Text())
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return failed, fmt.Errorf("read the remote's error file %s: %w", filepath.Base(p), err)
		}
	}
	if more > 0 {
		fmt.Fprintf(errOut, "phr: ... and %d more issues from the remote\n", more)
	}
	return failed, nil
}
