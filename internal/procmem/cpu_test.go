package procmem

import (
	"crypto/sha256"
	"os"
	"testing"
	"time"
)

// TestCPU: the calling process's CPU time grows with work, and reading it
// by pid from /proc gives the same figure to within a few clock ticks.
func TestCPU(t *testing.T) {
	before := CPU(Self)
	b := make([]byte, 1<<20)
	for start := time.Now(); time.Since(start) < 200*time.Millisecond; {
		sha256.Sum256(b)
	}
	self := CPU(Self)
	if self-before < 50*time.Millisecond {
		t.Fatalf("CPU(Self) grew by %v over 200 ms of hashing", self-before)
	}
	byPid := CPU(os.Getpid())
	if d := byPid - self; d < -5*clockTick || d > 5*clockTick+100*time.Millisecond {
		t.Errorf("CPU(pid) = %v, CPU(Self) = %v", byPid, self)
	}
	if CPU(-1) != 0 {
		t.Error("CPU of a pid that cannot exist is not 0")
	}
}
