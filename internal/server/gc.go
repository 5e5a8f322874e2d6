package server

import (
	"os"
	"runtime/debug"

	"github.com/phr-project/phr/internal/gcbudget"
)

// GOGC and MemoryLimit are the garbage collector settings of `phr serve`
// (TuneGC).
const (
	GOGC        = 400
	MemoryLimit = 128 << 20
)

// TuneGC sets the garbage collector of a server process, unless GOGC or
// GOMEMLIMIT in the environment say otherwise; `phr serve` calls it, and
// so do the benchmarks that measure the server's memory in-process, so
// that they see the heap the server keeps.
//
// A read allocates about 10 KB, so at thousands of requests per second
// the default GOGC=100 collects every few dozen milliseconds on a small
// live heap. GOGC=400 cut the collector's share and raised single-resource
// GET throughput by about a quarter (tools/loadtest/get.sh). It also lets
// the heap grow to five times what is live, which during a bulk export or
// an import is tens of MB: the soft limit keeps the Go heap near 128 MiB
// then (the collector works harder near it, like GOGC=100 would), so that
// the process stays within its memory goals (import under 300 MB, bulk
// export under 150 MB, with SQLite's page caches beside the Go heap). A
// small live heap, as when serving reads, stays far below the limit and
// keeps the GOGC=400 throughput. Work with a larger budget raises the
// limit while it runs (package gcbudget: PostgreSQL imports).
func TuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(GOGC)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		gcbudget.Enable(MemoryLimit)
	}
}
