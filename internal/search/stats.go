package search

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/phr-project/phr/internal/store/sqldb"
)

// searchTables are the tables whose planner statistics search plans rest on.
var searchTables = []string{"resource", "compartment", "idx_token", "idx_string", "idx_date", "idx_ref", "idx_quantity", "idx_number", "idx_uri", "idx_composite"}

// statsInterval is how often a search may check the statistics.
const statsInterval = 30 * time.Second

// statsKeeper refreshes PostgreSQL's planner statistics of the search
// tables when autovacuum is off (as on some test and bulk-load setups):
// without them the planner takes an index list of 100 rows for 10,000
// and scans whole tables. With autovacuum on it does nothing.
type statsKeeper struct {
	db      *sqldb.DB
	last    atomic.Int64 // unix nanoseconds of the last check
	running atomic.Bool
}

// maybeRefresh starts, at most every statsInterval and one at a time, a
// background check that analyzes the search tables changed by more than
// a tenth since their last analysis.
func (k *statsKeeper) maybeRefresh() {
	if k.db.SQLDialect() != sqldb.Postgres {
		return
	}
	now := time.Now().UnixNano()
	if now-k.last.Load() < int64(statsInterval) || !k.running.CompareAndSwap(false, true) {
		return
	}
	k.last.Store(now)
	go func() {
		defer k.running.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := k.refresh(ctx); err != nil {
			slog.Warn("search: refreshing planner statistics", "error", err)
		}
	}()
}

func (k *statsKeeper) refresh(ctx context.Context) error {
	var av string
	if err := k.db.QueryRow(ctx, `SELECT current_setting('autovacuum')`).Scan(&av); err != nil {
		return err
	}
	if av == "on" {
		return nil
	}
	for _, t := range searchTables {
		var live, mod int64
		err := k.db.QueryRow(ctx, `SELECT n_live_tup, n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = ? AND schemaname = current_schema()`, t).Scan(&live, &mod)
		if err != nil {
			continue // not visible: nothing to do
		}
		if mod > 1000 && mod*10 > live {
			if _, err := k.db.Exec(ctx, "ANALYZE "+t); err != nil {
				return err
			}
		}
	}
	return nil
}
