// Command mattn runs the phr store workload on github.com/mattn/go-sqlite3 (the SQLite C
// library through cgo; needs a C compiler to build).
package main

import (
	"database/sql"
	"fmt"

	"github.com/mattn/go-sqlite3"

	"github.com/phr-project/phr/tools/sqlitebench/bench"
)

// pragmas are run on every new connection by the connect hook: mattn's DSN knows only
// some pragmas by name (not temp_store), so all of them go through the hook instead.
var pragmas []bench.Pragma

func init() {
	sql.Register("sqlite3_bench", &sqlite3.SQLiteDriver{
		ConnectHook: func(c *sqlite3.SQLiteConn) error {
			for _, p := range pragmas {
				if _, err := c.Exec("PRAGMA "+p.Name+" = "+p.Value, nil); err != nil {
					return fmt.Errorf("PRAGMA %s: %w", p.Name, err)
				}
			}
			return nil
		},
	})
}

func main() {
	bench.Main(bench.Driver{
		Name:    "mattn",
		SQLName: "sqlite3_bench",
		DSN: func(path string, p []bench.Pragma) string {
			pragmas = p
			return "file:" + path + "?_txlock=immediate"
		},
	})
}
