package procmem

import (
	"os"
	"runtime"
	"testing"
)

func TestPeakFollowsTouchedMemory(t *testing.T) {
	if _, err := os.Stat("/proc/self/clear_refs"); err != nil {
		t.Skip("no /proc/self/clear_refs on this system")
	}
	if err := ResetPeak(Self); err != nil {
		t.Fatal(err)
	}
	before, err := Peak(Self)
	if err != nil {
		t.Fatal(err)
	}
	// Touch 64 MiB: the peak must grow by about that much.
	const n = 64 << 20
	b := make([]byte, n)
	for i := 0; i < n; i += 4096 {
		b[i] = 1
	}
	after, err := Peak(Self)
	if err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(b)
	if after-before < n*3/4 {
		t.Fatalf("peak RSS grew by %d bytes after touching %d", after-before, n)
	}
	b = nil
	runtime.GC()
	// The reset brings the peak down to the current RSS, which no longer
	// holds (all of) the buffer once it is freed and returned.
	if err := ResetPeak(Self); err != nil {
		t.Fatal(err)
	}
	rss, err := Status(Self, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	peak, err := Peak(Self)
	if err != nil {
		t.Fatal(err)
	}
	if peak < rss || peak > rss+8<<20 {
		t.Fatalf("after a reset the peak is %d, the RSS %d", peak, rss)
	}
}

func TestStatusUnknownField(t *testing.T) {
	if _, err := Status(Self, "NoSuchField"); err == nil {
		t.Fatal("no error for an unknown field")
	}
}
