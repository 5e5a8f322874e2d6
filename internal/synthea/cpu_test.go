package synthea_test

import (
	"syscall"
	"time"
)

// cpuTime returns the user+system CPU time of this process so far. The
// machine is shared, so the benchmarks report resources per CPU-second of
// the process besides the wall-clock rate (PostgreSQL's own CPU, in its
// server processes, is not included).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
