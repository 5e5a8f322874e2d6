package procs

import (
	"runtime"
	"testing"
	"time"
)

// waitProcs waits until GOMAXPROCS is n (the lowering runs on a timer).
func waitProcs(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.GOMAXPROCS(0) != n {
		if time.Now().After(deadline) {
			t.Fatalf("GOMAXPROCS is %d, want %d", runtime.GOMAXPROCS(0), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestGovernor(t *testing.T) {
	prev := runtime.GOMAXPROCS(4)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	Linger = 50 * time.Millisecond

	// Before Enable, bulk work changes nothing.
	done := Bulk()
	if n := runtime.GOMAXPROCS(0); n != 4 {
		t.Fatalf("GOMAXPROCS %d before Enable", n)
	}
	// Enable while bulk work runs keeps all CPUs until it ends.
	if got := Enable(0); got != 3 {
		t.Fatalf("Enable(0) with 4 CPUs = %d, want 3", got)
	}
	if n := runtime.GOMAXPROCS(0); n != 4 {
		t.Fatalf("GOMAXPROCS %d while bulk work runs, want 4", n)
	}
	done()
	done() // a second call does nothing
	waitProcs(t, 3)

	// Two overlapping bulk works: all CPUs until both end.
	d1 := Bulk()
	if n := runtime.GOMAXPROCS(0); n != 4 {
		t.Fatalf("GOMAXPROCS %d during bulk work, want 4", n)
	}
	d2 := Bulk()
	d1()
	time.Sleep(3 * Linger)
	if n := runtime.GOMAXPROCS(0); n != 4 {
		t.Fatalf("GOMAXPROCS %d with one bulk work still running, want 4", n)
	}
	d2()
	// New bulk work within the linger cancels the lowering.
	d3 := Bulk()
	time.Sleep(3 * Linger)
	if n := runtime.GOMAXPROCS(0); n != 4 {
		t.Fatalf("GOMAXPROCS %d: lowered during bulk work", n)
	}
	d3()
	waitProcs(t, 3)
	if g := gov.active; g != 0 {
		t.Fatalf("%d bulk works counted after all ended", g)
	}
}
