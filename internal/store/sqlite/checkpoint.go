package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"modernc.org/sqlite"
)

// The WAL is checkpointed in the background, on a connection of its own,
// instead of by the writer at the end of a commit (SQLite's
// wal_autocheckpoint, which the writer's connection turns off).
//
// A checkpoint copies the WAL's pages into the database file and syncs
// both files. Run by the writer, it stalled every write transaction behind
// it: in a bulk import of the 120 Synthea patients the writer spent about
// 3.6 of its 17 seconds waiting in checkpoints (fsync 3.0 s, truncating the
// WAL 0.8 s; go tool trace), while the other core idled. A PASSIVE
// checkpoint on another connection copies the pages the writer committed
// while the writer goes on writing the next ones.
//
// Only the writer can start the WAL over, at the start of a transaction
// that finds every frame copied and no reader on an older snapshot; a
// writer that never pauses would let the WAL grow without end. So the
// writer counts the pages it wrote since the WAL started over (SQLite's
// per-connection count of pages written), and when they reach maxWAL it
// runs a RESTART checkpoint itself: it copies what the background pass has
// not (little, as a rule), waits for readers to leave the WAL, and the
// next transaction writes the WAL from its start. The count errs high
// (a page written twice in one transaction counts twice), which costs at
// most an early restart.
//
// Importing the 120 Synthea patients (92,114 resources; three alternating
// pairs of runs on the 2-core development machine, the importer's
// benchmark) took 14.8-15.5 s against 16.8-19.0 s with the writer's own
// checkpoints, for the same CPU time.

// checkpointer runs the background checkpoints of one database.
type checkpointer struct {
	// pool holds conn, the connection that checkpoints (kept for the
	// checkpointer's life: it has its own busy timeout); w is the writer's
	// pool (one connection), read for the pages the writer wrote.
	pool *sql.DB
	conn *sql.Conn
	w    *sql.DB
	log  *slog.Logger
	// passPages and maxWAL are thresholds in pages: a pass starts once the
	// writer has written passPages since the last one began, and the
	// writer restarts the WAL when it may hold maxWAL.
	passPages, maxWAL int
	// idle is how long after the last commit a pass copies what is left
	// and empties the WAL file (so that an import's last pages reach the
	// database file and the WAL's disk space comes back).
	idle time.Duration

	nudge chan struct{}
	quit  chan struct{}
	done  chan struct{}

	// ckMu is held by a pass and by a restart: a restart waits for the
	// pass in progress rather than for the busy timeout.
	ckMu sync.Mutex
	mu   sync.Mutex
	// written counts the pages the writer wrote since the last pass
	// began; walPages estimates the WAL's length in frames. lastCommit is
	// when the writer last committed pages.
	written, walPages int
	lastCommit        time.Time
	// unemptied says the writer wrote since the WAL file was last emptied
	// (an idle pass is due once it pauses); truncateAt is when an idle
	// pass that found readers in the WAL may try again.
	unemptied  bool
	truncateAt time.Time
	// retryAt is the estimate of the WAL's size at which a restart that
	// found readers in the WAL is tried again.
	retryAt int
}

// Checkpoint thresholds in bytes (converted to pages of the database's page
// size): a background pass after every 128 MiB the writer writes, and a
// restart of the WAL by the writer once it may hold 512 MiB. 128 MiB
// between passes keeps the copying near what SQLite's own checkpoints did
// every 256 MiB (a bulk import dirties the same index pages in many
// consecutive transactions, and a pass copies each page once however often
// it changed); the 512 MiB cap bounds the WAL file.
// (Variables so that tests can make them small.)
var (
	passBytes   = 128 << 20
	maxWALBytes = 512 << 20
	idleAfter   = time.Second
)

// startCheckpointer opens the checkpointing connection and starts its
// goroutine. dsn opens a connection with the shared pragmas.
func startCheckpointer(ctx context.Context, dsn string, w *sql.DB, pageSize int) (*checkpointer, error) {
	pool, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open checkpoint connection: %w", err)
	}
	pool.SetMaxOpenConns(1)
	conn, err := pool.Conn(ctx)
	if err == nil {
		// An idle pass (TRUNCATE) takes the write lock while it waits for
		// readers: a writer that comes along waits at most this long.
		_, err = conn.ExecContext(ctx, busyTimeoutPragma(restartWait))
	}
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		pool.Close()
		return nil, fmt.Errorf("open checkpoint connection: %w", err)
	}
	c := &checkpointer{
		pool: pool, conn: conn, w: w, log: slog.Default(),
		passPages: max(1, passBytes/pageSize), maxWAL: max(2, maxWALBytes/pageSize), idle: idleAfter,
		nudge: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}),
	}
	go c.run()
	return c, nil
}

// run is the checkpointing goroutine: a pass when nudged, and one when the
// writer has been idle a while with pages not yet copied.
func (c *checkpointer) run() {
	defer close(c.done)
	tick := time.NewTicker(c.idle / 2)
	defer tick.Stop()
	for {
		mode := "PASSIVE"
		select {
		case <-c.quit:
			return
		case <-c.nudge:
		case <-tick.C:
			c.mu.Lock()
			due := c.unemptied && time.Since(c.lastCommit) >= c.idle && !time.Now().Before(c.truncateAt)
			c.mu.Unlock()
			if !due {
				continue
			}
			mode = "TRUNCATE"
		}
		c.pass(mode)
	}
}

// pass runs one checkpoint. PASSIVE copies what it can without waiting
// for the writer or readers; TRUNCATE, run when writes have paused, also
// waits briefly for readers (restartWait) and then empties the WAL file,
// giving its disk space back.
func (c *checkpointer) pass(mode string) {
	c.ckMu.Lock()
	defer c.ckMu.Unlock()
	c.mu.Lock()
	if mode == "TRUNCATE" && time.Since(c.lastCommit) < c.idle {
		// The writer wrote (or restarted the WAL) while this pass
		// waited for ckMu: it is not idle.
		c.mu.Unlock()
		return
	}
	c.written = 0
	began := time.Now()
	c.mu.Unlock()
	var busy, frames, copied int
	err := c.conn.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &frames, &copied)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		// The pages stay in the WAL, which the writer's restart bounds;
		// the next pass (or idle pass, after a while) tries again.
		c.truncateAt = time.Now().Add(retryIdle * c.idle)
		c.log.Warn("background WAL checkpoint failed", "mode", mode, "err", err)
		return
	}
	// frames is the WAL's length when the pass began, and written counts
	// the pages since (some of them twice): together they correct the
	// count for restarts the writer made unasked (at the first write after
	// a pass that left nothing to copy) and for a WAL an earlier process
	// left.
	c.walPages = frames + c.written
	if mode != "TRUNCATE" {
		return
	}
	switch {
	case busy != 0:
		// A reader kept it: try again after a while, not at every tick
		// (each try holds writers off for up to restartWait).
		c.truncateAt = time.Now().Add(retryIdle * c.idle)
	case !c.lastCommit.After(began):
		c.walPages, c.retryAt, c.unemptied = c.written, 0, false
	}
}

// retryIdle is how many idle periods an idle pass that readers kept from
// emptying the WAL waits before it tries again.
const retryIdle = 10

// committed is called by the writer after each commit, with the writer's
// connection idle (and its lock held, so no transaction starts meanwhile).
func (c *checkpointer) committed(ctx context.Context) {
	n, err := c.writerPages(ctx)
	if err != nil {
		c.log.Warn("read the writer's page count", "err", err)
		return
	}
	c.mu.Lock()
	if n > 0 {
		// (Statements that change nothing, as an UPDATE that matches
		// no rows, leave the writer idle.)
		c.lastCommit = time.Now()
		c.unemptied = true
	}
	c.written += n
	c.walPages += n
	pass := c.written >= c.passPages
	restart := c.walPages >= max(c.maxWAL, c.retryAt)
	c.mu.Unlock()
	if restart {
		c.restart(ctx)
		// The writer was busy until now, not idle.
		c.mu.Lock()
		c.lastCommit = time.Now()
		c.mu.Unlock()
		return
	}
	if pass {
		select {
		case c.nudge <- struct{}{}:
		default:
		}
	}
}

// writerPages returns the pages the writer's connection wrote to the WAL
// since the last call.
func (c *checkpointer) writerPages(ctx context.Context) (int, error) {
	conn, err := c.w.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	var n int
	err = conn.Raw(func(dc any) error {
		st, ok := dc.(sqlite.DBStatus)
		if !ok {
			return fmt.Errorf("driver connection %T has no status", dc)
		}
		var err error
		n, _, err = st.Status(sqlite.DBStatusCacheWrite, true)
		return err
	})
	return n, err
}

// restart copies the rest of the WAL on the writer's connection and waits
// for readers to leave it, so that the next write transaction starts the
// WAL over. A reader that stays in the WAL longer than restartWait (a
// whole-store export holds one snapshot throughout) leaves the WAL as it
// is, and the writer tries again once a quarter of maxWAL more was
// written, rather than waiting at every commit.
func (c *checkpointer) restart(ctx context.Context) {
	c.ckMu.Lock()
	defer c.ckMu.Unlock()
	busy, err := c.restartWAL(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err != nil:
		c.log.Warn("WAL restart checkpoint failed", "err", err)
		c.retryAt = c.walPages + c.maxWAL/4
	case busy:
		c.retryAt = c.walPages + c.maxWAL/4
	default:
		c.walPages, c.written, c.retryAt = 0, 0, 0
	}
}

// restartWait is how long a restart waits for readers to leave the WAL.
const restartWait = 250 * time.Millisecond

// restartWAL runs the RESTART checkpoint with the busy timeout lowered to
// restartWait, and reports whether readers kept it from finishing.
func (c *checkpointer) restartWAL(ctx context.Context) (busy bool, err error) {
	conn, err := c.w.Conn(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, busyTimeoutPragma(restartWait)); err != nil {
		return false, err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), busyTimeoutPragma(busyTimeout))
	var b, frames, copied int
	if err := conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint(RESTART)").Scan(&b, &frames, &copied); err != nil {
		return false, err
	}
	return b != 0, nil
}

// busyTimeoutPragma sets a connection's busy timeout to d.
func busyTimeoutPragma(d time.Duration) string {
	return fmt.Sprintf("PRAGMA busy_timeout = %d", d.Milliseconds())
}

// close stops the goroutine and closes the connection.
func (c *checkpointer) close() error {
	close(c.quit)
	<-c.done
	return errors.Join(c.conn.Close(), c.pool.Close())
}
