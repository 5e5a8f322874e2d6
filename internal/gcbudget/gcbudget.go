// Package gcbudget raises the garbage collector's soft memory limit
// (runtime/debug.SetMemoryLimit) while work with a larger memory budget
// runs, and lowers it again when that work ends.
//
// Why: `phr serve` runs with GOGC=400 and a soft limit of 128 MiB
// (server.TuneGC), so that a bulk export stays within its goal of 150 MB
// of resident memory beside SQLite's page caches. An import's goal is 300
// MB. On PostgreSQL the process holds no database pages, yet an import
// there kept its Go heap near the 128 MiB limit, with about 60 MB live
// (the chunks being prepared and written): the collector ran a hundred
// times in ten seconds and took a sixth of the process's CPU, on a
// machine whose two cores the import keeps busy. With 192 MiB the
// benchmark process collected 64-70 times instead of 97, and the 120
// Synthea patients imported about 5% faster (2-10% in alternated runs),
// with a peak RSS of about 205 MiB instead of 147; the importer now asks
// for 224 MiB (importer.ImportMemoryLimit: 1-2% faster again, 237 MiB),
// and for 160 MiB on SQLite, where the process holds the page caches
// beside the heap (importer.SQLiteImportMemoryLimit: 6.5% faster, 260 MiB).
package gcbudget

import (
	"runtime/debug"
	"sync"
)

var state struct {
	mu      sync.Mutex
	enabled bool
	base    int64
	raised  map[*int64]bool
}

// Enable sets the limit in force while no raised budget is held; without
// it (a GOMEMLIMIT from the environment, or a program that does not tune
// its collector) Raise does nothing.
func Enable(base int64) {
	state.mu.Lock()
	defer state.mu.Unlock()
	state.enabled, state.base = true, base
	apply()
}

// Raise asks for a soft memory limit of at least limit bytes until the
// returned function is called (once or more; the first call counts).
func Raise(limit int64) (done func()) {
	state.mu.Lock()
	defer state.mu.Unlock()
	if state.raised == nil {
		state.raised = map[*int64]bool{}
	}
	key := &limit
	state.raised[key] = true
	apply()
	return sync.OnceFunc(func() {
		state.mu.Lock()
		defer state.mu.Unlock()
		delete(state.raised, key)
		apply()
	})
}

// Limit returns the limit in force (-1 when not enabled).
func Limit() int64 {
	state.mu.Lock()
	defer state.mu.Unlock()
	if !state.enabled {
		return -1
	}
	return limit()
}

// limit is the base or the highest budget held.
func limit() int64 {
	l := state.base
	for k := range state.raised {
		l = max(l, *k)
	}
	return l
}

func apply() {
	if state.enabled {
		debug.SetMemoryLimit(limit())
	}
}
