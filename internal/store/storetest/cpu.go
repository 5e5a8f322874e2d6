package storetest

import (
	"context"
	"time"

	"github.com/phr-project/phr/internal/procmem"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// BackendCPU returns the CPU time used so far by the PostgreSQL server
// processes connected to db's database, when the server runs on this
// machine (0 otherwise, and always for SQLite, whose work is in-process).
// Benchmarks report the difference over a run: on a shared machine
// CPU time says more than wall time, and the database's share of it is
// what round trips and statement counts cost.
func BackendCPU(ctx context.Context, db *sqldb.DB) time.Duration {
	if db.SQLDialect() != sqldb.Postgres {
		return 0
	}
	rows, err := db.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database()`)
	if err != nil {
		return 0
	}
	defer rows.Close()
	var total time.Duration
	for rows.Next() {
		var pid int
		if rows.Scan(&pid) != nil {
			continue
		}
		total += procmem.CPU(pid)
	}
	return total
}
