package sqldb

import (
	"bytes"
	"testing"
)

// TestCopyBufReuse checks that a COPY buffer handed back (NewBatch.Release,
// recycle) and taken again starts empty: only the header, then the new
// rows. sync.Pool may drop what it is given (the race detector drops some
// on purpose), so the buffer is given back until it comes back.
func TestCopyBufReuse(t *testing.T) {
	header := newCopyBuf(bufText).b
	reused := false
	for range 100 {
		old := newCopyBuf(bufText)
		old.startRow(1)
		old.text("stale row")
		cp := old.copy("COPY t (a) FROM STDIN BINARY")
		b := &NewBatch{encoded: true, copies: []RawCopy{cp}}
		b.Release()
		c := newCopyBuf(bufText)
		if &c.b[:1][0] != &cp.Data[:1][0] {
			continue // a new buffer
		}
		reused = true
		if !bytes.Equal(c.b, header) {
			t.Fatalf("a reused buffer starts with %q, want the header %q", c.b, header)
		}
		c.startRow(1)
		c.text("new")
		if got := c.copy("COPY t (a) FROM STDIN BINARY").Data; bytes.Contains(got, []byte("stale")) {
			t.Fatalf("reused buffer's COPY data holds the old rows: %q", got)
		}
		break
	}
	if !reused {
		t.Fatal("no buffer was reused in 100 tries")
	}
}
