package s3_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/blob"
	"github.com/phr-project/phr/internal/blob/s3"
	"github.com/phr-project/phr/internal/blob/s3/s3test"
)

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("source broke")
	}
	n := min(len(p), f.n)
	f.n -= n
	return n, nil
}

func TestStore(t *testing.T) {
	srv := s3test.Start(t)
	ctx := context.Background()
	st, err := s3.Open(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(st.String(), os.Getenv("AWS_SECRET_ACCESS_KEY")) {
		t.Fatal("the store's description shows the secret")
	}
	get := func(key string) []byte {
		t.Helper()
		rc, size, err := st.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil || int64(len(b)) != size {
			t.Fatalf("get %s: %d bytes, size %d, %v", key, len(b), size, err)
		}
		return b
	}
	if n, err := st.Put(ctx, "a/b/one.txt", strings.NewReader("hello")); err != nil || n != 5 {
		t.Fatalf("put: %d %v", n, err)
	}
	if got := get("a/b/one.txt"); string(got) != "hello" {
		t.Fatalf("got %q", got)
	}
	// The object is where the prefix says, in the real server's storage.
	if b, err := os.ReadFile(filepath.Join(srv.Root, srv.Bucket, "phr", "a", "b", "one.txt")); err != nil || string(b) != "hello" {
		t.Fatalf("object on the server's disk: %q %v", b, err)
	}
	st.Put(ctx, "a/b/one.txt", strings.NewReader("replaced"))
	if got := get("a/b/one.txt"); string(got) != "replaced" {
		t.Fatalf("after replace %q", got)
	}
	// A 40 MiB stream goes up in 16 MiB parts.
	big := make([]byte, 40<<20)
	rand.Read(big)
	if n, err := st.Put(ctx, "big.bin", bytes.NewReader(big)); err != nil || n != int64(len(big)) {
		t.Fatalf("put big: %d %v", n, err)
	}
	if a, b := sha256.Sum256(get("big.bin")), sha256.Sum256(big); a != b {
		t.Fatal("big blob differs")
	}
	// A failed upload leaves nothing behind.
	if _, err := st.Put(ctx, "broken.bin", &failingReader{n: 20 << 20}); err == nil {
		t.Fatal("put from a failing reader succeeded")
	}
	if _, _, err := st.Get(ctx, "broken.bin"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("partial blob visible: %v", err)
	}
	if err := st.Delete(ctx, "a/b/one.txt"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Get(ctx, "a/b/one.txt"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if err := st.Delete(ctx, "never-there"); err != nil {
		t.Fatalf("delete missing: %v", err)
	}
	if _, err := st.Put(ctx, "../escape", strings.NewReader("x")); err == nil {
		t.Fatal("invalid key accepted")
	}
	// Wrong credentials and a missing bucket are reported at Open.
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
	if _, err := s3.Open(ctx, srv.URL); err == nil {
		t.Fatal("open with a wrong secret succeeded")
	}
	if _, err := s3.Open(ctx, "s3://user:pw@bucket/x?endpoint="+srv.Endpoint); err == nil || !strings.Contains(err.Error(), "not in the URL") {
		t.Fatalf("credentials in the URL: %v", err)
	}
}
