package jobs_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/phr-project/phr/internal/jobs"
	"github.com/phr-project/phr/internal/procs"
	"github.com/phr-project/phr/internal/store/sqldb"
	"github.com/phr-project/phr/internal/store/storetest"
)

func waitState(t *testing.T, q *jobs.Queue, id string, want jobs.State) *jobs.Job {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		j, err := q.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State == want {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: state %s (error %q), want %s", id, j.State, j.Error, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestQueue(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			db := storetest.Open(t, d)
			ctx := context.Background()

			t.Run("runs and completes", func(t *testing.T) {
				q := jobs.New(db, jobs.Options{Workers: 2, Lease: time.Second, Poll: 50 * time.Millisecond})
				q.Register("echo", func(ctx context.Context, r *jobs.Run) error {
					if err := r.Report(ctx, []byte(`{"n":1}`)); err != nil {
						return err
					}
					return r.Complete(ctx, append([]byte("done:"), r.Params...), time.Now().Add(time.Hour), nil)
				})
				q.Start()
				defer q.Stop()
				j, err := q.Enqueue(ctx, "echo", "alice", []byte("p"))
				if err != nil {
					t.Fatal(err)
				}
				got := waitState(t, q, j.ID, jobs.Done)
				if string(got.Result) != "done:p" || string(got.Progress) != `{"n":1}` || got.Attempts != 1 || got.Owner != "alice" || got.Expires.IsZero() {
					t.Fatalf("job = %+v", got)
				}
			})

			t.Run("a running job is bulk work", func(t *testing.T) {
				q := jobs.New(db, jobs.Options{Workers: 1, Lease: time.Second, Poll: 50 * time.Millisecond})
				before := procs.Active()
				during := make(chan int, 1)
				q.Register("bulk", func(ctx context.Context, r *jobs.Run) error {
					during <- procs.Active()
					return nil
				})
				q.Start()
				defer q.Stop()
				j, err := q.Enqueue(ctx, "bulk", "alice", nil)
				if err != nil {
					t.Fatal(err)
				}
				if got := <-during; got != before+1 {
					t.Fatalf("bulk work while the job runs: %d, want %d", got, before+1)
				}
				waitState(t, q, j.ID, jobs.Done)
				if got := procs.Active(); got != before {
					t.Fatalf("bulk work after the job: %d, want %d", got, before)
				}
			})

			t.Run("retries then fails permanently", func(t *testing.T) {
				q := jobs.New(db, jobs.Options{Workers: 1, Lease: time.Second, Poll: 50 * time.Millisecond, MaxAttempts: 3})
				var calls atomic.Int32
				q.Register("flaky", func(ctx context.Context, r *jobs.Run) error {
					if calls.Add(1) < 2 {
						return errors.New("transient")
					}
					return jobs.Permanent(fmt.Errorf("broken input"))
				})
				q.Start()
				defer q.Stop()
				j, _ := q.Enqueue(ctx, "flaky", "bob", nil)
				got := waitState(t, q, j.ID, jobs.Failed)
				if got.Attempts != 2 || got.Error != "broken input" {
					t.Fatalf("attempts %d error %q", got.Attempts, got.Error)
				}
			})

			t.Run("cancel stops a running handler", func(t *testing.T) {
				q := jobs.New(db, jobs.Options{Workers: 1, Lease: time.Second, Poll: 50 * time.Millisecond})
				started := make(chan struct{})
				stopped := make(chan error, 1)
				q.Register("long", func(ctx context.Context, r *jobs.Run) error {
					close(started)
					<-ctx.Done()
					stopped <- context.Cause(ctx)
					return ctx.Err()
				})
				q.Start()
				defer q.Stop()
				j, _ := q.Enqueue(ctx, "long", "c", nil)
				<-started
				if _, err := q.Cancel(ctx, j.ID); err != nil {
					t.Fatal(err)
				}
				select {
				case err := <-stopped:
					if !errors.Is(err, jobs.ErrLost) {
						t.Fatalf("cause %v", err)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("handler not stopped")
				}
				waitState(t, q, j.ID, jobs.Cancelled)
			})

			t.Run("an expired lease is claimed by another worker and the old one is fenced", func(t *testing.T) {
				// Worker A claims the job and hangs without heartbeats being
				// able to help: we simulate a dead process by a queue whose
				// heartbeats cannot renew (its handler blocks, then we make
				// its lease run out by stopping nothing and waiting).
				dead := jobs.New(db, jobs.Options{Workers: 1, Lease: 300 * time.Millisecond, Poll: 20 * time.Millisecond, WorkerID: "dead"})
				claimed := make(chan *jobs.Run, 1)
				release := make(chan struct{})
				dead.Register("handover", func(ctx context.Context, r *jobs.Run) error {
					claimed <- r
					<-release
					return nil
				})
				j, _ := dead.Enqueue(ctx, "handover", "d", nil)
				dead.Start()
				r := <-claimed
				// Freeze worker "dead": push its lease into the past as a
				// crashed process would leave it (no heartbeats).
				if _, err := db.Exec(ctx, `UPDATE job SET lease_until = 1, worker = 'crashed' WHERE id = ?`, j.ID); err != nil {
					t.Fatal(err)
				}
				var mu sync.Mutex
				var ranBy string
				live := jobs.New(db, jobs.Options{Workers: 1, Lease: time.Second, Poll: 20 * time.Millisecond, WorkerID: "live"})
				live.Register("handover", func(ctx context.Context, r *jobs.Run) error {
					mu.Lock()
					ranBy = "live"
					mu.Unlock()
					return r.Complete(ctx, []byte("live"), time.Time{}, func(tx *sqldb.Tx) error { return nil })
				})
				live.Start()
				defer live.Stop()
				got := waitState(t, live, j.ID, jobs.Done)
				if string(got.Result) != "live" || got.Attempts != 2 || got.Worker != "live" {
					t.Fatalf("job = %+v", got)
				}
				// The old worker can no longer record anything.
				if err := r.Report(ctx, []byte("x")); !errors.Is(err, jobs.ErrLost) {
					t.Fatalf("stale progress: %v", err)
				}
				if err := r.Complete(ctx, []byte("dead"), time.Time{}, nil); !errors.Is(err, jobs.ErrLost) {
					t.Fatalf("stale complete: %v", err)
				}
				close(release)
				dead.Stop()
				mu.Lock()
				defer mu.Unlock()
				if ranBy != "live" {
					t.Fatal("live worker did not run the job")
				}
			})

			t.Run("gives up after max attempts of lost leases", func(t *testing.T) {
				q := jobs.New(db, jobs.Options{Workers: 1, Lease: 200 * time.Millisecond, Poll: 20 * time.Millisecond, MaxAttempts: 2, WorkerID: "w"})
				j, _ := q.Enqueue(ctx, "crashy", "e", nil)
				// Both attempts were taken by workers that died.
				if _, err := db.Exec(ctx, `UPDATE job SET state = 'running', attempts = 2, lease_until = 1 WHERE id = ?`, j.ID); err != nil {
					t.Fatal(err)
				}
				q.Register("crashy", func(ctx context.Context, r *jobs.Run) error { t.Error("must not run"); return nil })
				q.Start()
				defer q.Stop()
				got := waitState(t, q, j.ID, jobs.Failed)
				if got.Error == "" {
					t.Fatal("no error recorded")
				}
			})

			t.Run("stop hands a running job back", func(t *testing.T) {
				q := jobs.New(db, jobs.Options{Workers: 1, Lease: time.Second, Poll: 20 * time.Millisecond})
				started := make(chan struct{})
				q.Register("stoppable", func(ctx context.Context, r *jobs.Run) error {
					close(started)
					<-ctx.Done()
					return ctx.Err()
				})
				j, _ := q.Enqueue(ctx, "stoppable", "f", nil)
				q.Start()
				<-started
				q.Stop()
				got, err := q.Get(ctx, j.ID)
				if err != nil {
					t.Fatal(err)
				}
				if got.State != jobs.Queued || got.Attempts != 0 {
					t.Fatalf("after stop: %s attempts %d", got.State, got.Attempts)
				}
				if _, err := q.Cancel(ctx, j.ID); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

func TestConcurrentClaimsOnce(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			db := storetest.Open(t, d)
			ctx := context.Background()
			const n = 30
			var mu sync.Mutex
			seen := map[string]int{}
			var queues []*jobs.Queue
			for w := 0; w < 3; w++ {
				q := jobs.New(db, jobs.Options{Workers: 3, Lease: 5 * time.Second, Poll: 10 * time.Millisecond, WorkerID: fmt.Sprint("w", w)})
				q.Register("count", func(ctx context.Context, r *jobs.Run) error {
					mu.Lock()
					seen[r.ID]++
					mu.Unlock()
					return r.Complete(ctx, nil, time.Time{}, nil)
				})
				queues = append(queues, q)
			}
			var ids []string
			for i := 0; i < n; i++ {
				j, err := queues[0].Enqueue(ctx, "count", "x", nil)
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, j.ID)
			}
			for _, q := range queues {
				q.Start()
				defer q.Stop()
			}
			for _, id := range ids {
				waitState(t, queues[0], id, jobs.Done)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				if seen[id] != 1 {
					t.Fatalf("job %s ran %d times", id, seen[id])
				}
			}
		})
	}
}

// TestIdlePollWritesNothing: idle workers look for jobs on a read
// connection and write nothing (on SQLite a write, even one that changes
// nothing, takes the one writer that imports and every other write wait
// for); a job enqueued meanwhile still runs. The store is SQLite opened
// here with a hook that counts the write transactions that commit.
func TestIdlePollWritesNothing(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "phr.db")
	open := func(q string) *sql.DB {
		d, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)"+q)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	w := open("&_txlock=immediate")
	w.SetMaxOpenConns(1)
	var commits atomic.Int64
	db := sqldb.New(sqldb.Options{Dialect: sqldb.SQLite, Write: w, Read: open(""),
		IsConflict: func(error) bool { return false }, AfterCommit: func(context.Context) { commits.Add(1) }})
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	q := jobs.New(db, jobs.Options{Workers: 2, Lease: time.Second, Poll: 5 * time.Millisecond})
	ran := make(chan struct{})
	q.Register("echo", func(ctx context.Context, r *jobs.Run) error {
		close(ran)
		return r.Complete(ctx, nil, time.Now().Add(time.Hour), nil)
	})
	base := commits.Load()
	q.Start()
	defer q.Stop()
	time.Sleep(300 * time.Millisecond) // about 60 polls per worker
	if n := commits.Load() - base; n != 0 {
		t.Fatalf("idle workers committed %d write transactions, want 0", n)
	}
	j, err := q.Enqueue(ctx, "echo", "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-ran:
	case <-time.After(20 * time.Second):
		t.Fatal("the enqueued job did not run")
	}
	waitState(t, q, j.ID, jobs.Done)
}
