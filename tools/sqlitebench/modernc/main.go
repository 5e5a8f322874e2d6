// Command modernc runs the phr store workload on modernc.org/sqlite (SQLite translated
// from C to pure Go; no cgo).
package main

import (
	"net/url"

	_ "modernc.org/sqlite"

	"github.com/phr-project/phr/tools/sqlitebench/bench"
)

func main() {
	bench.Main(bench.Driver{
		Name:    "modernc",
		SQLName: "sqlite",
		DSN: func(path string, pragmas []bench.Pragma) string {
			q := url.Values{"_txlock": {"immediate"}}
			for _, p := range pragmas {
				q.Add("_pragma", p.Name+"("+p.Value+")")
			}
			return "file:" + path + "?" + q.Encode()
		},
	})
}
