// Package procmem reads a process's memory and CPU figures (Linux's /proc,
// getrusage) for the benchmarks that report them. On memory: the peak
// resident set size (VmHWM) counts everything the process touched - the Go heap, SQLite's
// page caches (allocated outside the Go heap) and the pages of the
// memory-mapped database it read - which the Go runtime's own statistics
// do not see.
package procmem

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Self is the pid that names the calling process.
const Self = 0

func procPath(pid int, name string) string {
	if pid == Self {
		return "/proc/self/" + name
	}
	return fmt.Sprintf("/proc/%d/%s", pid, name)
}

// ResetPeak sets the peak resident set size of process pid (Self for this
// one) to its current resident size, so that a later Peak measures what
// happened in between (Linux 4.0 and later; the caller needs the rights
// to write the process's /proc/PID/clear_refs).
func ResetPeak(pid int) error {
	if err := os.WriteFile(procPath(pid, "clear_refs"), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset the peak RSS of process %d: %w", pid, err)
	}
	return nil
}

// Peak returns the peak resident set size (VmHWM) of process pid in bytes.
func Peak(pid int) (int64, error) { return Status(pid, "VmHWM") }

// Status returns a size field of /proc/PID/status (VmHWM, VmRSS, RssAnon,
// RssFile...) in bytes.
func Status(pid int, field string) (int64, error) {
	f, err := os.Open(procPath(pid, "status"))
	if err != nil {
		return 0, fmt.Errorf("read memory status: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		v := strings.TrimSpace(rest)
		num, unit, _ := strings.Cut(v, " ")
		kb, err := strconv.ParseInt(num, 10, 64)
		if err != nil || unit != "kB" {
			return 0, fmt.Errorf("%s of process %d: unexpected value %q", field, pid, v)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read memory status: %w", err)
	}
	return 0, fmt.Errorf("%s of process %d: not in %s", field, pid, procPath(pid, "status"))
}
