package procmem

import (
	"crypto/sha256"
	"os"
	"runtime"
	"testing"
	"time"
)

// TestCPU: the calling process's CPU time grows with work, and reading it
// by pid from /proc gives the same figure to within a few clock ticks.
func TestCPU(t *testing.T) {
	// Hash until the process has used 100 ms of CPU by its own count; on
	// a loaded machine that takes longer in wall time, so the bound is
	// wide. Meanwhile the count cannot grow faster than all CPUs allow.
	before := CPU(Self)
	b := make([]byte, 1<<20)
	start := time.Now()
	self := before
	for self-before < 100*time.Millisecond {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("CPU(Self) grew by %v over 30 s of hashing", self-before)
		}
		for range 16 {
			sha256.Sum256(b)
		}
		self = CPU(Self)
	}
	if most := time.Duration(runtime.NumCPU())*time.Since(start) + 5*clockTick; self-before > most {
		t.Errorf("CPU(Self) grew by %v in %v of wall time on %d CPUs", self-before, time.Since(start), runtime.NumCPU())
	}
	byPid := CPU(os.Getpid())
	if d := byPid - self; d < -5*clockTick || d > 5*clockTick+100*time.Millisecond {
		t.Errorf("CPU(pid) = %v, CPU(Self) = %v", byPid, self)
	}
	if CPU(-1) != 0 {
		t.Error("CPU of a pid that cannot exist is not 0")
	}
}
