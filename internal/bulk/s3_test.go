package bulk_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/blob/s3/s3test"
	"github.com/phr-project/phr/internal/server"
)

// An export whose files live in S3-compatible object storage (a real
// versitygw server): written there, downloaded through phr, removed by
// the expiry sweep.
func TestExportOnS3(t *testing.T) {
	srv := s3test.Start(t)
	e := start(t, "sqlite", func(c *server.Config) { c.Blob = srv.URL })
	e.seed()
	reader := e.s.Token("system/*.read", "")
	status := e.kick(reader, "$export?_type=Patient,Observation")
	m := e.wait(reader, status)
	if got := counts(m); got["Patient"] != 3 || got["Observation"] != 9 {
		t.Fatalf("counts %v", got)
	}
	e.ids(reader, m) // downloads and checks every file
	id := status[strings.LastIndex(status, "/")+1:]
	objects := func() []string {
		var out []string
		filepath.Walk(filepath.Join(srv.Root, srv.Bucket, "phr", "bulk", id), func(p string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				out = append(out, p)
			}
			return nil
		})
		return out
	}
	if n := len(objects()); n != len(m.Output) {
		t.Fatalf("%d objects in the bucket for %d files", n, len(m.Output))
	}
	if _, err := e.s.App.Store.Exec(context.Background(), `UPDATE job SET expires = 1000 WHERE id = ?`, id); err != nil {
		t.Fatal(err)
	}
	if err := e.s.App.Bulk.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if left := objects(); len(left) != 0 {
		t.Fatalf("objects left after expiry: %v", left)
	}
}

// When the blob store fails for good, the export fails after its attempts
// and the status URL answers 500 with an OperationOutcome.
func TestExportFailsWhenStorageIsGone(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the S3 client's retries")
	}
	srv := s3test.Start(t)
	e := start(t, "sqlite", func(c *server.Config) { c.Blob = srv.URL })
	e.seed()
	reader := e.s.Token("system/*.read", "")
	srv.Stop()
	status := e.kick(reader, "$export?_type=Patient")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r := e.s.Do("GET", status, reader, nil)
		if r.Status == http.StatusAccepted {
			if time.Now().After(deadline) {
				t.Fatal("the export did not fail")
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		wantError(t, r, http.StatusInternalServerError, "failed after 3 attempt")
		if strings.Contains(string(r.Body), srv.Endpoint) {
			t.Fatalf("the error shows internal details: %s", r.Body)
		}
		return
	}
}
