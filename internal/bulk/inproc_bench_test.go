package bulk_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/synthea"
)

// BenchmarkExportInProcess is the Synthea system export with the server
// in the test process, for CPU and memory profiles (-cpuprofile).
func BenchmarkExportInProcess(b *testing.B) {
	dir := synthea.Require(b)
	files, err := synthea.Files(dir, benchPatients())
	if err != nil {
		b.Fatal(err)
	}
	s := servertest.Start(b, "sqlite", servertest.Options{Configure: func(c *server.Config) { c.ExportRate = time.Millisecond }})
	if _, err := synthea.Load(context.Background(), s.App.Records, files); err != nil {
		b.Fatal(err)
	}
	tok := s.Token("system/*.read", "")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := s.Do("GET", "$export", tok, nil, kickHeaders...)
		if r.Status != 202 {
			b.Fatalf("kick-off %d", r.Status)
		}
		status := r.Header.Get("Content-Location")
		for {
			time.Sleep(10 * time.Millisecond)
			r := s.Do("GET", status, tok, nil)
			if r.Status == http.StatusOK {
				break
			}
		}
	}
}
