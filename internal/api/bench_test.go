package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/phr-project/phr/internal/procmem"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// BenchmarkReadHandler measures the in-process cost of an authenticated
// GET /fhir/Patient/[id] (no network), to profile the read path, on each
// store (PostgreSQL when PHR_TEST_POSTGRES_URL is set), with 16 requests
// at a time (as tools/loadtest/get.sh). Besides the wall time it reports
// the CPU time per request of this process and of the PostgreSQL server's
// backends (when local), which a busy shared machine distorts far less.
func BenchmarkReadHandler(b *testing.B) {
	for _, d := range storetest.Dialects() {
		b.Run(d, func(b *testing.B) { benchRead(b, d) })
	}
}

func benchRead(b *testing.B, dialect string) {
	s := servertest.Start(b, dialect)
	tok := s.AdminToken()
	if r := s.Do("PUT", "Patient/p1", tok, `{"resourceType":"Patient","id":"p1","name":[{"family":"Smith","given":["Ann"]}],"birthDate":"1970-01-01"}`); r.Status != 201 {
		b.Fatal(r.Status)
	}
	h := s.App.Handler()
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	cpu0, db0 := procmem.CPU(procmem.Self), storetest.BackendCPU(ctx, s.App.Store)
	defer func() {
		b.StopTimer()
		b.ReportMetric(float64((procmem.CPU(procmem.Self)-cpu0).Microseconds())/float64(b.N), "cpu-us/op")
		if d := storetest.BackendCPU(ctx, s.App.Store) - db0; d > 0 {
			b.ReportMetric(float64(d.Microseconds())/float64(b.N), "db-cpu-us/op")
		}
	}()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest("GET", "/fhir/Patient/p1", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Fatal(w.Code)
			}
		}
	})
}
