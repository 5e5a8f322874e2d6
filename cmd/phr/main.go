// Command phr is the personal health record server and its command-line
// client: `phr serve` runs the FHIR server; the other subcommands import,
// export, share and administer records. Run `phr help` for the list.
package main

import (
	"os"

	"github.com/phr-project/phr/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
