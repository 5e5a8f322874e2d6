package importer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/store/sqldb"
)

// A running batch shows it is alive with a heartbeat every heartbeatEvery;
// one whose heartbeat is older than batchLease is abandoned (its process
// was killed or lost its database).
const (
	heartbeatEvery = 15 * time.Second
	batchLease     = 90 * time.Second
)

// StatusInterrupted is the status of a batch whose process stopped while
// it was running (killed, crashed, lost power). What it committed stays;
// running the same import again completes it without duplicates.
const StatusInterrupted = "interrupted"

// owner names this process in import_batch.owner: "host pid start".
var owner = func() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s %d %d", strings.ReplaceAll(host, " ", "_"), os.Getpid(), time.Now().UnixNano())
}()

// abandoned reports whether a batch "running" under owner o with the last
// heartbeat hb (microseconds) can no longer be running. On this host the
// process table tells: a batch of this very process is alive, one of an
// earlier process with this id (a restarted container) or of an id no
// process has now is not. Otherwise the heartbeat must be younger than
// batchLease. Batches from before owners were recorded have none.
func abandoned(o string, hb int64, now time.Time) bool {
	if o == "" {
		return true
	}
	f := strings.Fields(o)
	me := strings.Fields(owner)
	if len(f) == 3 && f[0] == me[0] {
		if f[1] == me[1] {
			return f[2] != me[2]
		}
		if pid, err := strconv.Atoi(f[1]); err == nil && !processAlive(pid) {
			return true
		}
	}
	return now.Sub(sqldb.FromMicros(hb)) > batchLease
}

// MarkInterrupted marks the batches left "running" by a process that is
// gone as interrupted, with their last heartbeat as the finishing time,
// and returns how many it marked. The server calls it when it starts; the
// import log calls it before listing.
func (imp *Importer) MarkInterrupted(ctx context.Context) (int, error) {
	rows, err := imp.db.Query(ctx, `SELECT id, owner, heartbeat, started FROM import_batch WHERE status = 'running'`)
	if err != nil {
		return 0, fmt.Errorf("find running import batches: %w", err)
	}
	type stale struct{ id, at int64 }
	var found []stale
	now := time.Now()
	for rows.Next() {
		var id, hb, started int64
		var o string
		if err := rows.Scan(&id, &o, &hb, &started); err != nil {
			rows.Close()
			return 0, fmt.Errorf("find running import batches: %w", err)
		}
		if abandoned(o, hb, now) {
			found = append(found, stale{id, max(hb, started)})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("find running import batches: %w", err)
	}
	n := 0
	for _, s := range found {
		res, err := imp.db.Exec(ctx, `UPDATE import_batch SET status = ?, finished = ? WHERE id = ? AND status = 'running'`, StatusInterrupted, s.at, s.id)
		if err != nil {
			return n, fmt.Errorf("mark import batch %d interrupted: %w", s.id, err)
		}
		if k, _ := res.RowsAffected(); k > 0 {
			n++
			slog.InfoContext(ctx, "import batch interrupted: its process is gone", "batch", s.id)
		}
	}
	return n, nil
}

// heartbeat keeps the batch's heartbeat fresh until stop is closed or ctx
// is done.
func (r *Run) heartbeat(stop <-chan struct{}) {
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	ctx := context.WithoutCancel(r.ctx)
	for {
		select {
		case <-stop:
			return
		case <-r.ctx.Done():
			return
		case <-t.C:
			if _, err := r.imp.db.Exec(ctx, `UPDATE import_batch SET heartbeat = ? WHERE id = ? AND status = 'running'`, sqldb.Micros(time.Now()), r.sum.Batch); err != nil {
				slog.WarnContext(ctx, "import heartbeat", "batch", r.sum.Batch, "error", err)
			}
		}
	}
}
