package storetest

import (
	"context"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/store/sqldb"
)

// clockTick is the unit of the CPU times in /proc/PID/stat (USER_HZ, 100
// on Linux).
const clockTick = 10 * time.Millisecond

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
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		// The command name (field 2) is in parentheses and may hold
		// spaces; utime and stime are fields 14 and 15.
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			s = s[i+1:]
		}
		f := strings.Fields(s)
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(u+st) * clockTick
	}
	return total
}
