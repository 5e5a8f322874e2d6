package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/bulkclient"
	"github.com/phr-project/phr/internal/fhir"
)

func init() {
	register(command{name: "bulk", summary: "FHIR Bulk Data client: phr bulk export URL", run: runBulk})
}

func runBulk(ctx context.Context, args []string, out, errOut io.Writer) error {
	if len(args) == 0 || args[0] != "export" {
		return fmt.Errorf("%w: use `phr bulk export URL [flags]` (phr bulk export -help)", errUsage)
	}
	return runBulkExport(ctx, args[1:], out, errOut)
}

// listFlag collects a repeatable, comma-separated flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func runBulkExport(ctx context.Context, args []string, out, errOut io.Writer) error {
	f := newFlags("bulk export", "URL [flags]   (URL: the server's FHIR base)", errOut)
	var (
		group, since, until, outDir, tok, clientID, keyFile, tokenURL, scope string
		patientLevel, lenient, quiet                                         bool
		types, filters, patients                                             listFlag
	)
	f.string(&group, "group", "", "export the members of this Group id ([base]/Group/ID/$export)")
	f.bool(&patientLevel, "patients", false, "export all patients' compartments ([base]/Patient/$export) instead of the whole system")
	f.string(&since, "since", "", "only resources changed after this FHIR instant (e.g. 2024-01-01T00:00:00Z)")
	f.string(&until, "until", "", "only resources changed up to this FHIR instant")
	f.Var(&types, "type", "resource types to export (repeatable or comma-separated)")
	f.Var(&filters, "type-filter", "a _typeFilter query such as Observation?category=laboratory (repeatable)")
	f.Var(&patients, "patient", "restrict a Patient or Group export to these patient ids (repeatable)")
	f.string(&outDir, "out", "bulk-export", "directory for the NDJSON files and manifest.json")
	// Not PHR_TOKEN: that is the token of the user's own phr server, and
	// URL may be any other server.
	f.stringEnv(&tok, "token", "PHR_REMOTE_TOKEN", "", "bearer access token for URL")
	f.string(&clientID, "client-id", "", "SMART Backend Services client id (with --key)")
	f.string(&keyFile, "key", "", "private key file of the client (PEM or JWK)")
	f.string(&tokenURL, "token-url", "", "token endpoint (default: discovered from URL/.well-known/smart-configuration)")
	f.string(&scope, "scope", "system/*.read", "scope to ask for with --client-id")
	f.bool(&lenient, "lenient", false, "ask the server to ignore parameters it does not support (Prefer: handling=lenient)")
	f.bool(&quiet, "quiet", false, "no progress lines")
	// The URL may come before the flags.
	var base string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		base, args = args[0], args[1:]
	}
	if err := f.parse(args); err != nil {
		return err
	}
	if base == "" && f.NArg() > 0 {
		base = f.Arg(0)
	} else if f.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %v", errUsage, f.Args())
	}
	if base == "" {
		return fmt.Errorf("%w: the server's FHIR base URL is required (phr bulk export https://example.org/fhir)", errUsage)
	}
	req := bulkclient.Request{Group: group, Patient: patientLevel, Types: types, TypeFilters: filters, Patients: patients, Lenient: lenient}
	for _, t := range []struct {
		name, val string
		dst       *time.Time
	}{{"since", since, &req.Since}, {"until", until, &req.Until}} {
		if t.val == "" {
			continue
		}
		v, err := fhir.ParseInstant(t.val)
		if err != nil {
			return fmt.Errorf("%w: --%s: %v", errUsage, t.name, err)
		}
		*t.dst = v
	}
	c := &bulkclient.Client{Base: base}
	switch {
	case tok != "" && clientID != "":
		return fmt.Errorf("%w: give either --token or --client-id with --key, not both", errUsage)
	case tok != "":
		c.Tokens = bulkclient.StaticToken(tok)
	case clientID != "":
		if keyFile == "" {
			return fmt.Errorf("%w: --client-id needs --key (the client's private key file)", errUsage)
		}
		data, err := os.ReadFile(keyFile)
		if err != nil {
			return fmt.Errorf("read --key: %w", err)
		}
		key, kid, err := bulkclient.LoadKey(data)
		if err != nil {
			return fmt.Errorf("--key %s: %w", keyFile, err)
		}
		c.Tokens = &bulkclient.Backend{ClientID: clientID, Key: key, KeyID: kid, TokenURL: tokenURL, Base: base, Scope: scope}
	}
	logf := func(format string, a ...any) {
		if !quiet {
			fmt.Fprintf(errOut, "phr bulk: "+format+"\n", a...)
		}
	}
	start := time.Now()
	res, err := c.Export(ctx, req, outDir, logf)
	if err != nil {
		return err
	}
	var typesOut []string
	var total int64
	for t, n := range res.Resources {
		typesOut = append(typesOut, fmt.Sprintf("%s %d", t, n))
		total += n
	}
	sort.Strings(typesOut)
	fmt.Fprintf(out, "exported %d resources in %d files to %s in %s (transactionTime %s)\n", total, len(res.Files), outDir, time.Since(start).Round(time.Millisecond), res.Manifest.TransactionTime)
	if len(typesOut) > 0 {
		fmt.Fprintf(out, "  %s\n", strings.Join(typesOut, ", "))
	}
	if n := len(res.Manifest.Deleted); n > 0 {
		fmt.Fprintf(out, "  %d file(s) of deletions\n", n)
	}
	if n := len(res.Manifest.Error); n > 0 {
		fmt.Fprintf(out, "  %d error file(s): see error-*.ndjson\n", n)
	}
	return nil
}
