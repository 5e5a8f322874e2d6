package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"golang.org/x/term"

	"github.com/phr-project/phr/internal/auth/authdb"
	"github.com/phr-project/phr/internal/server"
)

func init() {
	register(command{name: "clients", summary: "register, list and remove OAuth clients (SMART backend services, apps)", run: runClients})
	register(command{name: "users", summary: "add, list and remove users (patients, admins)", run: runUsers})
}

// openAuthDB opens the store of a data directory or database with the
// auth tables.
func openAuthDB(ctx context.Context, sf storeFlags) (*authdb.DB, func(), error) {
	st, err := server.OpenStore(ctx, server.Config{DataDir: sf.data, DB: sf.db})
	if err != nil {
		return nil, nil, err
	}
	return authdb.New(st), func() { st.Close() }, nil
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func subcommand(args []string, name string, subs ...string) (string, []string, error) {
	if len(args) == 0 || !contains(subs, args[0]) {
		return "", nil, fmt.Errorf("%w: phr %s %s (run `phr %s <subcommand> -help`)", errUsage, name, strings.Join(subs, "|"), name)
	}
	return args[0], args[1:], nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func invalidUsage(err error) error {
	if errors.Is(err, authdb.ErrInvalid) {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return err
}

func runClients(ctx context.Context, args []string, out, errOut io.Writer) error {
	sub, args, err := subcommand(args, "clients", "add", "list", "remove")
	if err != nil {
		return err
	}
	var sf storeFlags
	switch sub {
	case "add":
		f := newFlags("clients add", "--name N (--jwks FILE | --jwks-url URL | --redirect-uri URL) --scope S", errOut)
		var name, jwksFile, jwksURL, scopes, id string
		var redirects multi
		sf.add(f)
		f.string(&name, "name", "", "name of the client (shown on consent screens and in lists)")
		f.string(&jwksFile, "jwks", "", "file with the client's public JSON Web Key Set (backend services)")
		f.string(&jwksURL, "jwks-url", "", "URL where the client publishes its JSON Web Key Set")
		f.string(&scopes, "scope", "", `scopes the client may be granted, e.g. "system/*.rs" or "patient/*.rs launch/patient offline_access"`)
		f.string(&id, "id", "", "client_id to use (default: a new random id)")
		f.Var(&redirects, "redirect-uri", "redirect URI of an app doing SMART App Launch (repeatable)")
		if err := f.parse(args); err != nil {
			return err
		}
		c := authdb.Client{ID: id, Name: name, Scope: scopes, JWKSURL: jwksURL, RedirectURIs: redirects}
		if jwksFile != "" {
			b, err := os.ReadFile(jwksFile)
			if err != nil {
				return fmt.Errorf("%w: --jwks: %v", errUsage, err)
			}
			c.JWKS = b
		}
		db, done, err := openAuthDB(ctx, sf)
		if err != nil {
			return err
		}
		defer done()
		c, err = db.AddClient(ctx, c)
		if err != nil {
			return invalidUsage(err)
		}
		fmt.Fprintf(out, "client_id: %s\n", c.ID)
		fmt.Fprintf(out, "scope:     %s\n", c.Scope)
		return nil
	case "list":
		f := newFlags("clients list", "[--data DIR | --db URL]", errOut)
		sf.add(f)
		if err := f.parse(args); err != nil {
			return err
		}
		db, done, err := openAuthDB(ctx, sf)
		if err != nil {
			return err
		}
		defer done()
		cs, err := db.Clients(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tKEYS\tSCOPE")
		for _, c := range cs {
			keys := "inline JWKS"
			switch {
			case c.JWKSURL != "":
				keys = c.JWKSURL
			case c.Public():
				keys = "public (PKCE)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.ID, c.Name, keys, c.Scope)
		}
		return tw.Flush()
	default:
		return removeAuthRecord(ctx, args, sf, out, errOut, "clients", "client", "ID", (*authdb.DB).RemoveClient)
	}
}

// readPassword reads a password from file, or prompts on a terminal
// (without echo), or reads the first line of stdin.
func readPassword(file string, errOut io.Writer) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%w: --password-file: %v", errUsage, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	if fd := int(os.Stdin.Fd()); term.IsTerminal(fd) {
		fmt.Fprint(errOut, "Password: ")
		p1, err := term.ReadPassword(fd)
		fmt.Fprintln(errOut)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		fmt.Fprint(errOut, "Again: ")
		p2, err := term.ReadPassword(fd)
		fmt.Fprintln(errOut)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		if string(p1) != string(p2) {
			return "", fmt.Errorf("%w: the passwords differ", errUsage)
		}
		return string(p1), nil
	}
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password from stdin: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func runUsers(ctx context.Context, args []string, out, errOut io.Writer) error {
	sub, args, err := subcommand(args, "users", "add", "list", "remove")
	if err != nil {
		return err
	}
	var sf storeFlags
	switch sub {
	case "add":
		f := newFlags("users add", "--email E --role patient|admin [--patient ID] [--password-file F]", errOut)
		var email, role, patient, pwFile string
		sf.add(f)
		f.string(&email, "email", "", "the user's email address (their sign-in name)")
		f.string(&role, "role", "patient", "patient (sees only their own record) or admin (sees everything)")
		f.string(&patient, "patient", "", "id of the Patient resource of a patient user")
		f.string(&pwFile, "password-file", "", "file holding the password (default: prompt, or the first line of stdin)")
		if err := f.parse(args); err != nil {
			return err
		}
		pw, err := readPassword(pwFile, errOut)
		if err != nil {
			return err
		}
		db, done, err := openAuthDB(ctx, sf)
		if err != nil {
			return err
		}
		defer done()
		u, err := db.AddUser(ctx, authdb.User{Email: email, Role: role, Patient: patient}, pw)
		if err != nil {
			return invalidUsage(err)
		}
		fmt.Fprintf(out, "added %s user %s (id %s)\n", u.Role, u.Email, u.ID)
		return nil
	case "list":
		f := newFlags("users list", "[--data DIR | --db URL]", errOut)
		sf.add(f)
		if err := f.parse(args); err != nil {
			return err
		}
		db, done, err := openAuthDB(ctx, sf)
		if err != nil {
			return err
		}
		defer done()
		us, err := db.Users(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tEMAIL\tROLE\tPATIENT")
		for _, u := range us {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.ID, u.Email, u.Role, u.Patient)
		}
		return tw.Flush()
	default:
		return removeAuthRecord(ctx, args, sf, out, errOut, "users", "user", "ID|EMAIL", (*authdb.DB).RemoveUser)
	}
}

// removeAuthRecord is `phr clients remove` and `phr users remove`: it
// parses one argument (arg names it in the usage) and removes that record
// with remove.
func removeAuthRecord(ctx context.Context, args []string, sf storeFlags, out, errOut io.Writer, command, noun, arg string,
	remove func(*authdb.DB, context.Context, string) error) error {
	f := newFlags(command+" remove", arg+" [--data DIR | --db URL]", errOut)
	sf.add(f)
	if err := f.parse(args); err != nil {
		return err
	}
	if f.NArg() != 1 {
		return fmt.Errorf("%w: phr %s remove %s", errUsage, command, arg)
	}
	db, done, err := openAuthDB(ctx, sf)
	if err != nil {
		return err
	}
	defer done()
	if err := remove(db, ctx, f.Arg(0)); err != nil {
		return err
	}
	fmt.Fprintf(out, "removed %s %s\n", noun, f.Arg(0))
	return nil
}
