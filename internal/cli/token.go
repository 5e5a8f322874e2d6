package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/phr-project/phr/internal/auth/bearer"
	"github.com/phr-project/phr/internal/auth/scope"
	"github.com/phr-project/phr/internal/auth/token"
	"github.com/phr-project/phr/internal/server"
)

func init() {
	register(command{name: "token", summary: "print a bearer access token signed with the server's key", run: runToken})
}

func runToken(ctx context.Context, args []string, out, errOut io.Writer) error {
	f := newFlags("token", "--scope SCOPES [--patient ID] [--ttl 1h] [--data DIR | --db URL]", errOut)
	var (
		sf                        storeFlags
		scopes, patient, ttl, sub string
	)
	sf.add(f)
	f.string(&scopes, "scope", "", `space-separated SMART scopes, e.g. "system/*.*" or "patient/*.rs"`)
	f.string(&patient, "patient", "", "patient id the token is confined to (required with patient/ scopes)")
	f.string(&ttl, "ttl", "1h", "lifetime of the token")
	f.string(&sub, "subject", "cli", "subject (who the token is for), recorded in audit logs")
	if err := f.parse(args); err != nil {
		return err
	}
	if scopes == "" {
		return fmt.Errorf("%w: --scope is required", errUsage)
	}
	g, err := scope.Parse(scopes)
	if err != nil {
		return fmt.Errorf("%w: --scope: %v", errUsage, err)
	}
	if u := g.Unknown(); len(u) > 0 {
		return fmt.Errorf("%w: --scope: unknown scopes %v", errUsage, u)
	}
	if g.NeedsPatient() && patient == "" {
		return fmt.Errorf("%w: patient/ scopes need --patient", errUsage)
	}
	d, err := time.ParseDuration(ttl)
	if err != nil || d <= 0 {
		return fmt.Errorf("%w: --ttl %q is not a positive duration like 1h", errUsage, ttl)
	}
	st, err := server.OpenStore(ctx, server.Config{DataDir: sf.data, DB: sf.db})
	if err != nil {
		return err
	}
	defer st.Close()
	iss, err := server.TokenIssuer(ctx, st)
	if err != nil {
		return err
	}
	claims := token.Claims{Subject: sub, Scope: g.String(), Patient: patient, Expiry: time.Now().Add(d)}
	if _, err := bearer.NewPrincipal(claims); err != nil {
		return err
	}
	tok, err := iss.Sign(claims)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, tok)
	return nil
}
