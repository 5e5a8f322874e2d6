package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/bulkclient"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/importer"
)

func init() {
	register(command{name: "clone", summary: "copy a remote FHIR server's record through Bulk Data $export and import it", run: runClone})
	register(command{name: "pull", summary: "fetch what changed on the cloned remote since the last clone/pull (_since) and merge it", run: runPull})
}

// remoteState is what clone remembers for pull (no secrets: tokens are
// given again; a key is named by its file).
type remoteState struct {
	Remote          string `json:"remote"`
	Group           string `json:"group,omitempty"`
	Patient         bool   `json:"patient,omitempty"`
	TransactionTime string `json:"transactionTime"`
	ClientID        string `json:"clientId,omitempty"`
	KeyFile         string `json:"keyFile,omitempty"`
	TokenURL        string `json:"tokenUrl,omitempty"`
	Scope           string `json:"scope,omitempty"`
}

// remoteFlags are the remote server's credentials.
type remoteFlags struct {
	token, clientID, key, tokenURL, scope, state string
}

func (r *remoteFlags) add(f *flags) {
	f.string(&r.token, "remote-token", "", "bearer token for the remote server; prefer the environment variable to the flag, which other users can see")
	f.string(&r.clientID, "client-id", "", "SMART Backend Services client id at the remote (with --key)")
	f.string(&r.key, "key", "", "private key file (JWK or PEM) of --client-id")
	f.string(&r.tokenURL, "token-url", "", "the remote's token endpoint (default: discovered from .well-known/smart-configuration)")
	f.string(&r.scope, "scope", "system/*.read", "scope to ask for with --client-id")
	f.string(&r.state, "state", "phr-remote.json", "file where clone remembers the remote and its transactionTime for pull")
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
	st := &remoteState{Remote: strings.TrimSuffix(f.Arg(0), "/"), Group: group, Patient: patient, TokenURL: rf.tokenURL, Scope: rf.scope}
	return fetch(ctx, &cf, &rf, st, time.Time{}, out, errOut)
}

func runPull(ctx context.Context, args []string, out, errOut io.Writer) error {
	f := newFlags("pull", "[--remote-token T | --client-id ID --key FILE] [--state FILE] [--server URL --token T | --data DIR]", errOut)
	var (
		cf clientFlags
		rf remoteFlags
	)
	cf.add(f)
	rf.add(f)
	if err := f.parse(reorder(args)); err != nil {
		return err
	}
	b, err := os.ReadFile(rf.state)
	if err != nil {
		return fmt.Errorf("read %s (made by phr clone): %w", rf.state, err)
	}
	var st remoteState
	if err := json.Unmarshal(b, &st); err != nil || st.Remote == "" {
		return fmt.Errorf("%s is not a phr clone state file", rf.state)
	}
	since, err := fhir.ParseInstant(st.TransactionTime)
	if err != nil {
		return fmt.Errorf("%s: transactionTime: %w", rf.state, err)
	}
	return fetch(ctx, &cf, &rf, &st, since, out, errOut)
}

// fetch runs the remote export (since, when not zero), imports its output
// and deletions with the remote as the source, and saves the state.
func fetch(ctx context.Context, cf *clientFlags, rf *remoteFlags, st *remoteState, since time.Time, out, errOut io.Writer) error {
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
	var files []string
	for _, p := range res.Files {
		if !strings.HasPrefix(filepath.Base(p), "error-") {
			files = append(files, p)
		}
	}
	importer.SortForLoad(files)
	c, err := cf.open(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	if len(files) > 0 {
		u := upload{name: st.Remote, contentType: "application/fhir+ndjson", open: func(w io.Writer) error {
			for _, fp := range files {
				if err := copyFile(w, fp); err != nil {
					return err
				}
				w.Write([]byte{'\n'})
			}
			return nil
		}}
		if err := sendImport(ctx, c, u, st.Remote, "", false, false, isTerminal(errOut), out, errOut); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(out, "nothing changed on %s since %s\n", st.Remote, since.Format(time.RFC3339))
	}
	st.TransactionTime = res.Manifest.TransactionTime
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := os.WriteFile(rf.state, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save %s: %w", rf.state, err)
	}
	fmt.Fprintf(out, "%s is at transactionTime %s (state in %s)\n", st.Remote, st.TransactionTime, rf.state)
	return nil
}
