// Package cli implements the phr subcommands. Every flag has a PHR_*
// environment variable equivalent (the flag wins), documented in each
// subcommand's -help.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, out, errOut io.Writer) error
}

var commands []command

func register(c command) { commands = append(commands, c) }

// errUsage marks errors whose message is a usage problem (exit code 2).
var errUsage = errors.New("usage")

// Main runs the subcommand named by args[0] and returns the exit code.
func Main(args []string, out, errOut io.Writer) int {
	sort.Slice(commands, func(i, j int) bool { return commands[i].name < commands[j].name })
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		usage(out)
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err := c.run(ctx, args[1:], out, errOut)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintf(errOut, "phr %s: %v\n", c.name, strings.TrimPrefix(err.Error(), "usage: "))
			return 2
		default:
			fmt.Fprintf(errOut, "phr %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(errOut, "phr: unknown command %q (run `phr help`)\n", args[0])
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "phr - personal health record server and client")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: phr <command> [flags]   (phr <command> -help for its flags)")
	fmt.Fprintln(w)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
}

// flags is a FlagSet whose flags default to PHR_* environment variables.
type flags struct {
	*flag.FlagSet
	name string
}

func newFlags(name, synopsis string, errOut io.Writer) *flags {
	fs := flag.NewFlagSet("phr "+name, flag.ContinueOnError)
	fs.SetOutput(errOut)
	f := &flags{FlagSet: fs, name: name}
	fs.Usage = func() {
		fmt.Fprintf(errOut, "Usage: phr %s %s\n\nFlags (each also read from the PHR_* variable shown):\n", name, synopsis)
		fs.PrintDefaults()
	}
	return f
}

// envName is the environment variable of a flag: --base-url -> PHR_BASE_URL.
func envName(flagName string) string {
	return "PHR_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (f *flags) string(p *string, name, def, help string) {
	if v, ok := os.LookupEnv(envName(name)); ok {
		def = v
	}
	f.StringVar(p, name, def, help+" ["+envName(name)+"]")
}

// stringEnv is string with an environment variable of another name, for
// flags whose default name would be the variable of a different flag
// (phr bulk export's --token is for a remote server, not PHR_TOKEN's).
func (f *flags) stringEnv(p *string, name, env, def, help string) {
	if v, ok := os.LookupEnv(env); ok {
		def = v
	}
	f.StringVar(p, name, def, help+" ["+env+"]")
}

func (f *flags) bool(p *bool, name string, def bool, help string) {
	if v, ok := os.LookupEnv(envName(name)); ok {
		def = v == "1" || strings.EqualFold(v, "true") || strings.EqualFold(v, "yes")
	}
	f.BoolVar(p, name, def, help+" ["+envName(name)+"]")
}

func (f *flags) parse(args []string) error {
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

// setupLogging configures the default slog logger.
func setupLogging(level string, errOut io.Writer) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("%w: --log-level %q: use debug, info, warn or error", errUsage, level)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: l})))
	return nil
}
