package api_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// BenchmarkReadHandler measures the in-process cost of an authenticated
// GET /fhir/Patient/[id] (no network), to profile the read path, on each
// store (PostgreSQL when PHR_TEST_POSTGRES_URL is set).
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
	b.ReportAllocs()
	b.ResetTimer()
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
