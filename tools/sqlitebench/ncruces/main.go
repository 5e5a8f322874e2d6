// Command ncruces runs the phr store workload on github.com/ncruces/go-sqlite3 (SQLite
// compiled to Wasm and translated to Go by wasm2go; no cgo).
package main

import (
	"net/url"

	_ "github.com/ncruces/go-sqlite3/driver"

	"github.com/phr-project/phr/tools/sqlitebench/bench"
)

func main() {
	bench.Main(bench.Driver{
		Name:    "ncruces",
		SQLName: "sqlite3",
		DSN: func(path string, pragmas []bench.Pragma) string {
			q := url.Values{"_txlock": {"immediate"}}
			for _, p := range pragmas {
				q.Add("_pragma", p.Name+"("+p.Value+")")
			}
			return "file:" + path + "?" + q.Encode()
		},
	})
}
