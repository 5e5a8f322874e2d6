// Package jobs is a persisted queue of background jobs (bulk exports, long
// imports) shared by every replica of the server through the database.
//
// A worker claims a job by taking a lease on it: on PostgreSQL the claim is
// one UPDATE over a SELECT ... FOR UPDATE SKIP LOCKED, so replicas never
// claim the same job; on SQLite one process owns the file and the write
// lock serialises claims. While a job runs its worker renews the lease
// (heartbeat). When a worker dies its lease runs out and any worker claims
// the job again, up to MaxAttempts claims; then the job fails.
//
// Every state change of a running job is fenced by (worker, attempts): a
// worker that lost its lease (it paused for longer than the lease, or the
// job was cancelled) can no longer record progress or completion, and its
// handler's context is cancelled.
package jobs

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/phr-project/phr/internal/procs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// State is the state of a job.
type State string

// Job states. Queued jobs wait for a worker; Running ones hold a lease
// (or held one that ran out, and are claimed again); the others are final.
const (
	Queued    State = "queued"
	Running   State = "running"
	Done      State = "done"
	Failed    State = "failed"
	Cancelled State = "cancelled"
)

// Errors callers test with errors.Is.
var (
	// ErrNotFound: no job with that id.
	ErrNotFound = errors.New("job not found")
	// ErrLost: the worker no longer holds the job (its lease ran out and
	// another worker claimed it, or the job was cancelled).
	ErrLost = errors.New("job lease lost")
)

// Job is a stored job.
type Job struct {
	ID    string
	Kind  string
	State State
	// Owner names who asked for the job (for access checks by the feature).
	Owner string
	// Params is the feature's description of the work (JSON).
	Params []byte
	// Worker is the id of the worker holding or last holding the lease.
	Worker      string
	LeaseUntil  time.Time
	Attempts    int
	MaxAttempts int
	// Progress and Result are the feature's JSON (nil until set).
	Progress []byte
	Result   []byte
	// Error says why a job failed (or why its last attempt failed).
	Error    string
	Created  time.Time
	Updated  time.Time
	Finished time.Time
	// Expires is when the feature's sweep may remove a finished job.
	Expires time.Time
}

// Handler runs one attempt of a job. It should call Run.Report now and
// then and Run.Complete at the end. Returning an error wrapped with
// Permanent fails the job; other errors retry it until MaxAttempts.
type Handler func(ctx context.Context, run *Run) error

// permanent marks errors that retrying cannot fix.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent wraps err so that the job fails without another attempt.
func Permanent(err error) error { return permanent{err} }

// Options configure a Queue.
type Options struct {
	// Workers is the number of jobs this process runs at once (default 2).
	Workers int
	// Lease is how long a claim lasts without a heartbeat (default 30s);
	// heartbeats renew it every Lease/3.
	Lease time.Duration
	// Poll is how often idle workers look for jobs (default 1s); a job
	// enqueued by this process wakes them at once.
	Poll time.Duration
	// MaxAttempts caps the claims of one job (default 3).
	MaxAttempts int
	// WorkerID names this process in the job table (default host-pid-random).
	WorkerID string
}

// Queue is the job queue over the store's database.
type Queue struct {
	db *sqldb.DB
	o  Options

	mu       sync.Mutex
	handlers map[string]Handler
	wake     chan struct{}
	stop     context.CancelFunc
	wg       sync.WaitGroup
	running  map[string]context.CancelCauseFunc
}

// New returns a queue; call Register for each kind, then Start.
func New(db *sqldb.DB, o Options) *Queue {
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.Lease <= 0 {
		o.Lease = 30 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 3
	}
	if o.WorkerID == "" {
		host, _ := os.Hostname()
		var b [4]byte
		rand.Read(b[:])
		o.WorkerID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	return &Queue{db: db, o: o, handlers: map[string]Handler{}, wake: make(chan struct{}, o.Workers), running: map[string]context.CancelCauseFunc{}}
}

// WorkerID returns the id this queue's workers claim jobs under.
func (q *Queue) WorkerID() string { return q.o.WorkerID }

// Register sets the handler of a kind of job. Only registered kinds are
// claimed by this process.
func (q *Queue) Register(kind string, h Handler) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.handlers[kind] = h
}

const jobCols = `id, kind, state, owner, params, worker, lease_until, attempts, max_attempts, progress, result, error, created, updated, finished, expires`

func scanJob(sc interface{ Scan(...any) error }) (*Job, error) {
	var (
		j                                          Job
		state                                      string
		lease, created, updated, finished, expires int64
		attempts, maxAttempts                      int64
	)
	if err := sc.Scan(&j.ID, &j.Kind, &state, &j.Owner, &j.Params, &j.Worker, &lease, &attempts, &maxAttempts, &j.Progress, &j.Result, &j.Error, &created, &updated, &finished, &expires); err != nil {
		return nil, err
	}
	j.State = State(state)
	j.Attempts, j.MaxAttempts = int(attempts), int(maxAttempts)
	j.LeaseUntil = fromMicros(lease)
	j.Created, j.Updated = fromMicros(created), fromMicros(updated)
	j.Finished, j.Expires = fromMicros(finished), fromMicros(expires)
	return &j, nil
}

func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return sqldb.FromMicros(us)
}

func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return sqldb.Micros(t)
}

// Enqueue stores a new queued job and wakes a local worker.
func (q *Queue) Enqueue(ctx context.Context, kind, owner string, params []byte) (*Job, error) {
	return q.EnqueueID(ctx, fhir.NewID(), kind, owner, params)
}

// EnqueueID is Enqueue with an id chosen by the caller (who may have
// stored data keyed by it first).
func (q *Queue) EnqueueID(ctx context.Context, id, kind, owner string, params []byte) (*Job, error) {
	if params == nil {
		params = []byte{}
	}
	now := time.Now().UTC()
	j := &Job{ID: id, Kind: kind, State: Queued, Owner: owner, Params: params, MaxAttempts: q.o.MaxAttempts, Created: now, Updated: now}
	_, err := q.db.Exec(ctx, `INSERT INTO job (id, kind, state, owner, params, max_attempts, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		j.ID, j.Kind, string(j.State), j.Owner, j.Params, j.MaxAttempts, micros(now), micros(now))
	if err != nil {
		return nil, fmt.Errorf("enqueue %s job: %w", kind, err)
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return j, nil
}

// Get returns a job or ErrNotFound.
func (q *Queue) Get(ctx context.Context, id string) (*Job, error) {
	j, err := scanJob(q.db.QueryRow(ctx, `SELECT `+jobCols+` FROM job WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	return j, nil
}

// Cancel marks a job cancelled (a running one's handler is stopped by its
// next heartbeat, at once when it runs in this process) and returns the
// job as it was before. A finished job becomes cancelled too: its owner
// withdrew it, and the feature removes what it produced.
func (q *Queue) Cancel(ctx context.Context, id string) (*Job, error) {
	j, err := q.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	now := micros(time.Now())
	if _, err := q.db.Exec(ctx, `UPDATE job SET state = ?, updated = ?, finished = ? WHERE id = ? AND state <> 'cancelled'`,
		string(Cancelled), now, now, id); err != nil {
		return nil, fmt.Errorf("cancel job %s: %w", id, err)
	}
	q.mu.Lock()
	if cancel := q.running[id]; cancel != nil {
		cancel(fmt.Errorf("%w: cancelled", ErrLost))
	}
	q.mu.Unlock()
	return j, nil
}

// Delete removes a job row.
func (q *Queue) Delete(ctx context.Context, id string) error {
	if _, err := q.db.Exec(ctx, `DELETE FROM job WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete job %s: %w", id, err)
	}
	return nil
}

// List returns up to limit jobs of kind in state whose Expires is before
// the given time (zero: any), oldest first. The expiry sweeps use it.
func (q *Queue) List(ctx context.Context, kind string, states []State, expiresBefore time.Time, limit int) ([]*Job, error) {
	var (
		conds = []string{"kind = ?"}
		args  = []any{kind}
	)
	if len(states) > 0 {
		ph := make([]string, len(states))
		for i, s := range states {
			ph[i] = "?"
			args = append(args, string(s))
		}
		conds = append(conds, "state IN ("+strings.Join(ph, ", ")+")")
	}
	if !expiresBefore.IsZero() {
		conds = append(conds, "expires > 0 AND expires < ?")
		args = append(args, micros(expiresBefore))
	}
	args = append(args, limit)
	rows, err := q.db.Query(ctx, `SELECT `+jobCols+` FROM job WHERE `+strings.Join(conds, " AND ")+` ORDER BY created LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	defer rows.Close()
	var out []*Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("list jobs: %w", err)
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// Start starts the workers; they run until Stop.
func (q *Queue) Start() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stop != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	q.stop = cancel
	for i := 0; i < q.o.Workers; i++ {
		q.wg.Add(1)
		go q.work(ctx)
	}
}

// Stop stops the workers: running handlers are cancelled and their jobs
// handed back to the queue (without counting the attempt), so that
// another replica or the next start runs them.
func (q *Queue) Stop() {
	q.mu.Lock()
	stop := q.stop
	q.stop = nil
	q.mu.Unlock()
	if stop == nil {
		return
	}
	stop()
	q.wg.Wait()
}

func (q *Queue) kinds() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]string, 0, len(q.handlers))
	for k := range q.handlers {
		out = append(out, k)
	}
	return out
}

func (q *Queue) handler(kind string) Handler {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.handlers[kind]
}

func (q *Queue) work(ctx context.Context) {
	defer q.wg.Done()
	t := time.NewTicker(q.o.Poll)
	defer t.Stop()
	for ctx.Err() == nil {
		j, err := q.claim(ctx)
		if err != nil && ctx.Err() == nil {
			slog.Warn("claiming a job failed", "error", err)
		}
		if j != nil {
			q.run(ctx, j)
			continue
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-q.wake:
		}
	}
}

// claim takes the oldest claimable job of a registered kind, or returns nil.
func (q *Queue) claim(ctx context.Context) (*Job, error) {
	kinds := q.kinds()
	if len(kinds) == 0 {
		return nil, nil
	}
	now := time.Now()
	ph := make([]string, len(kinds))
	kindArgs := make([]any, len(kinds))
	for i, k := range kinds {
		ph[i] = "?"
		kindArgs[i] = k
	}
	in := "(" + strings.Join(ph, ", ") + ")"
	// Look first, on a read connection: an idle worker's poll then takes
	// no write lock (on SQLite, the one writer that imports and every
	// other write wait for) and writes nothing. The condition covers both
	// writes below: queued jobs, and running ones whose lease ran out.
	var one int
	err := q.db.QueryRow(ctx, `SELECT 1 FROM job WHERE kind IN `+in+` AND (state = 'queued' OR (state = 'running' AND lease_until < ?)) LIMIT 1`,
		append(kindArgs[:len(kindArgs):len(kindArgs)], micros(now))...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look for jobs: %w", err)
	}
	// Jobs whose lease ran out after their last allowed attempt fail.
	_, err = q.db.Exec(ctx, `UPDATE job SET state = 'failed', error = ?, finished = ?, updated = ? WHERE state = 'running' AND lease_until < ? AND attempts >= max_attempts AND kind IN `+in,
		append([]any{"the job was interrupted on each of its attempts (its worker stopped renewing the lease)", micros(now), micros(now), micros(now)}, kindArgs...)...)
	if err != nil {
		return nil, fmt.Errorf("fail exhausted jobs: %w", err)
	}
	lock := ""
	if q.db.SQLDialect() == sqldb.Postgres {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	query := `UPDATE job SET state = 'running', worker = ?, lease_until = ?, attempts = attempts + 1, updated = ?
		WHERE id = (SELECT id FROM job WHERE kind IN ` + in + ` AND (state = 'queued' OR (state = 'running' AND lease_until < ?)) AND attempts < max_attempts ORDER BY created LIMIT 1` + lock + `)
		RETURNING ` + jobCols
	args := append([]any{q.o.WorkerID, micros(now.Add(q.o.Lease)), micros(now)}, kindArgs...)
	args = append(args, micros(now))
	var j *Job
	err = q.db.WriteTx(ctx, func(tx *sqldb.Tx) error {
		var err error
		j, err = scanJob(tx.QueryRow(ctx, query, args...))
		if errors.Is(err, sql.ErrNoRows) {
			j, err = nil, nil
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("claim job: %w", err)
	}
	return j, nil
}

// run runs one claimed job with heartbeats.
func (q *Queue) run(parent context.Context, j *Job) {
	h := q.handler(j.Kind)
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	q.mu.Lock()
	q.running[j.ID] = cancel
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		delete(q.running, j.ID)
		q.mu.Unlock()
	}()
	r := &Run{Job: *j, q: q}
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		q.heartbeat(ctx, cancel, r)
	}()
	slog.Info("job started", "id", j.ID, "kind", j.Kind, "attempt", j.Attempts, "worker", q.o.WorkerID)
	doneBulk := procs.Bulk() // jobs (exports) are bulk work: all CPUs
	err := h(ctx, r)
	doneBulk()
	cause := context.Cause(ctx)
	cancel(nil)
	<-hbDone
	// Background context: the outcome must be recorded even while the
	// queue is stopping.
	bg, stop := context.WithTimeout(context.WithoutCancel(parent), 10*time.Second)
	defer stop()
	switch {
	case err == nil && r.completed:
		slog.Info("job done", "id", j.ID, "kind", j.Kind)
	case err == nil:
		if cerr := r.Complete(bg, nil, time.Time{}, nil); cerr != nil && !errors.Is(cerr, ErrLost) {
			slog.Error("recording job completion failed", "id", j.ID, "error", cerr)
		}
	case errors.Is(cause, ErrLost):
		slog.Info("job stopped: lease lost or cancelled", "id", j.ID, "kind", j.Kind)
	case parent.Err() != nil:
		// Shutting down: hand the job back without counting the attempt.
		if _, xerr := q.db.Exec(bg, `UPDATE job SET state = 'queued', worker = '', lease_until = 0, attempts = attempts - 1, updated = ? WHERE id = ? AND worker = ? AND attempts = ? AND state = 'running'`,
			micros(time.Now()), j.ID, q.o.WorkerID, j.Attempts); xerr != nil {
			slog.Error("handing a job back failed", "id", j.ID, "error", xerr)
		}
	default:
		var p permanent
		state := Queued
		if errors.As(err, &p) || j.Attempts >= j.MaxAttempts {
			state = Failed
		}
		slog.Warn("job attempt failed", "id", j.ID, "kind", j.Kind, "attempt", j.Attempts, "state", state, "error", err)
		now := micros(time.Now())
		fin := int64(0)
		if state == Failed {
			fin = now
		}
		if _, xerr := q.db.Exec(bg, `UPDATE job SET state = ?, error = ?, worker = CASE WHEN ? = 'queued' THEN '' ELSE worker END, lease_until = 0, finished = ?, updated = ? WHERE id = ? AND worker = ? AND attempts = ? AND state = 'running'`,
			string(state), err.Error(), string(state), fin, now, j.ID, q.o.WorkerID, j.Attempts); xerr != nil {
			slog.Error("recording a job failure failed", "id", j.ID, "error", xerr)
		}
		if state == Queued {
			select {
			case q.wake <- struct{}{}:
			default:
			}
		}
	}
}

// heartbeat renews the lease of r until ctx ends; when the lease is lost
// it cancels the handler.
func (q *Queue) heartbeat(ctx context.Context, cancel context.CancelCauseFunc, r *Run) {
	t := time.NewTicker(q.o.Lease / 3)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		res, err := q.db.Exec(ctx, `UPDATE job SET lease_until = ?, updated = ? WHERE id = ? AND worker = ? AND attempts = ? AND state = 'running'`,
			micros(now.Add(q.o.Lease)), micros(now), r.ID, q.o.WorkerID, r.Attempts)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			slog.Warn("renewing a job lease failed", "id", r.ID, "error", err)
			if now.Sub(lastOK) > q.o.Lease {
				cancel(fmt.Errorf("%w: could not renew the lease: %v", ErrLost, err))
				return
			}
			continue
		}
		if n, _ := res.RowsAffected(); n == 0 {
			cancel(fmt.Errorf("%w: the job was cancelled or claimed by another worker", ErrLost))
			return
		}
		lastOK = now
	}
}

// Run is a claimed job as its handler sees it.
type Run struct {
	Job
	q         *Queue
	completed bool
}

// Report records the handler's progress (JSON). It returns ErrLost when
// the worker no longer holds the job.
func (r *Run) Report(ctx context.Context, progress []byte) error {
	res, err := r.q.db.Exec(ctx, `UPDATE job SET progress = ?, updated = ? WHERE id = ? AND worker = ? AND attempts = ? AND state = 'running'`,
		progress, micros(time.Now()), r.ID, r.q.o.WorkerID, r.Attempts)
	if err != nil {
		return fmt.Errorf("record progress of job %s: %w", r.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrLost
	}
	return nil
}

// Complete marks the job done with result and expiry, and runs fn (when
// not nil) in the same transaction, so that what the job produced is
// recorded if and only if it is the job's outcome. It returns ErrLost when
// the worker no longer holds the job.
func (r *Run) Complete(ctx context.Context, result []byte, expires time.Time, fn func(*sqldb.Tx) error) error {
	err := r.q.db.WriteTx(ctx, func(tx *sqldb.Tx) error {
		now := micros(time.Now())
		res, err := tx.Exec(ctx, `UPDATE job SET state = 'done', result = ?, expires = ?, finished = ?, updated = ?, lease_until = 0, error = '' WHERE id = ? AND worker = ? AND attempts = ? AND state = 'running'`,
			result, micros(expires), now, now, r.ID, r.q.o.WorkerID, r.Attempts)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrLost
		}
		if fn != nil {
			return fn(tx)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrLost) {
			return ErrLost
		}
		return fmt.Errorf("complete job %s: %w", r.ID, err)
	}
	r.completed = true
	return nil
}
