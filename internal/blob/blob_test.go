package blob

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestDir(t *testing.T) {
	ctx := context.Background()
	d, err := NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("phr"), 100000)
	n, err := d.Put(ctx, "binary/ab/cd", bytes.NewReader(data))
	if err != nil || n != int64(len(data)) {
		t.Fatalf("put: %d %v", n, err)
	}
	r, size, err := d.Get(ctx, "binary/ab/cd")
	if err != nil || size != int64(len(data)) {
		t.Fatalf("get: %d %v", size, err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
	if err := d.Delete(ctx, "binary/ab/cd"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Get(ctx, "binary/ab/cd"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if err := d.Delete(ctx, "binary/ab/cd"); err != nil {
		t.Fatalf("deleting a missing blob: %v", err)
	}
	for _, bad := range []string{"", "/abs", "../x", "a/../b", "a//b", "a b", "a/."} {
		if _, err := d.Put(ctx, bad, bytes.NewReader(nil)); err == nil {
			t.Errorf("key %q accepted", bad)
		}
	}
}

type failing struct{ n int }

func (f *failing) Read(p []byte) (int, error) {
	if f.n > 0 {
		f.n--
		return copy(p, "xxxx"), nil
	}
	return 0, errors.New("broken upload")
}

func TestPutLeavesNothingOnFailure(t *testing.T) {
	dir := t.TempDir()
	d, _ := NewDir(dir)
	if _, err := d.Put(context.Background(), "k", &failing{n: 3}); err == nil {
		t.Fatal("failed read not reported")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		t.Errorf("left behind: %s", filepath.Join(dir, e.Name()))
	}
}
