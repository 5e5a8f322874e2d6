// Package procs sets how many threads run Go code at once (GOMAXPROCS) in
// `phr serve`: one fewer than the CPUs while the server answers requests,
// all of them while bulk work (an import, an export job, a large Bundle)
// runs.
//
// Why: answering a single-resource read takes tens of microseconds, and
// the client, the database server or the system need CPU beside it. On
// the 2-core development machine, with the load generator (wrk, 16
// connections) on the same machine, one thread answered as many reads a
// second as two (21,000 on SQLite), with less CPU per request (46 against
// 55-67 µs), and the 99th percentile latency fell from 5.2-6.3 ms to 3-4
// ms in most runs; on PostgreSQL, 22,700 against 17,500 reads a second.
// With two threads the Go scheduler's spinning and cross-thread wake-ups
// took the core the client needed. The price: when the (virtual) CPU is
// taken away for tens of milliseconds, no second thread keeps serving,
// and such runs reached a p99 of 6-9 ms. Bulk work, by contrast, keeps several threads busy (the
// importer prepares the next chunk while the last one is written), so it
// gets all CPUs while it runs.
package procs

import (
	"runtime"
	"sync"
	"time"
)

// Linger is how long the process keeps all CPUs after the last bulk work
// ended, so that a client sending Bundle after Bundle does not switch the
// setting for each one (each switch stops the world for a moment).
var Linger = time.Second

var gov struct {
	mu      sync.Mutex
	enabled bool
	base    int // GOMAXPROCS while no bulk work runs
	all     int // GOMAXPROCS while bulk work runs
	active  int // bulk work running
	timer   *time.Timer
	gen     int // invalidates a pending lowering
}

// Enable makes the process run with base threads while no bulk work runs
// and with the current GOMAXPROCS (the runtime's default: the CPUs
// available to the process) while some does. It returns the setting in
// force. base < 1 means one fewer than all, at least 1; a base of all or
// more leaves GOMAXPROCS alone.
func Enable(base int) int {
	gov.mu.Lock()
	defer gov.mu.Unlock()
	if gov.enabled {
		return runtime.GOMAXPROCS(0)
	}
	all := runtime.GOMAXPROCS(0)
	if base < 1 {
		base = max(1, all-1)
	}
	if base >= all {
		return all
	}
	gov.enabled, gov.base, gov.all = true, base, all
	if gov.active == 0 {
		runtime.GOMAXPROCS(base)
	}
	return base
}

// Bulk marks the start of bulk work and returns the function that marks
// its end (call it exactly once). Without Enable both do nothing.
func Bulk() (done func()) {
	gov.mu.Lock()
	defer gov.mu.Unlock()
	gov.active++
	if gov.enabled && gov.active == 1 {
		gov.gen++
		if gov.timer != nil {
			gov.timer.Stop()
			gov.timer = nil
		}
		if runtime.GOMAXPROCS(0) != gov.all {
			runtime.GOMAXPROCS(gov.all)
		}
	}
	var once sync.Once
	return func() { once.Do(release) }
}

// Active returns how much bulk work is running.
func Active() int {
	gov.mu.Lock()
	defer gov.mu.Unlock()
	return gov.active
}

func release() {
	gov.mu.Lock()
	defer gov.mu.Unlock()
	gov.active--
	if !gov.enabled || gov.active > 0 {
		return
	}
	gov.gen++
	gen := gov.gen
	gov.timer = time.AfterFunc(Linger, func() {
		gov.mu.Lock()
		defer gov.mu.Unlock()
		if gov.gen == gen && gov.active == 0 {
			gov.timer = nil
			runtime.GOMAXPROCS(gov.base)
		}
	})
}
