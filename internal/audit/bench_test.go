package audit_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/audit"
	"github.com/phr-project/phr/internal/server/servertest"
)

// BenchmarkRecord measures the cost of storing audit events (the write
// path behind every FHIR request): events per second through the batches.
func BenchmarkRecord(b *testing.B) {
	s := servertest.Start(b, "sqlite")
	r := s.Do("POST", "Patient", s.AdminToken(), `{"resourceType":"Patient"}`)
	id := r.JSON(b)["id"].(string)
	l := s.App.Audit
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		l.Record(audit.Event{Time: time.Now(), Method: http.MethodGet, Path: "/fhir/Patient/" + id, Status: 200, Subject: "Patient/" + id, Patient: id, IP: "127.0.0.1"})
	}
	if err := l.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	if l.Dropped() > 0 {
		b.Log(fmt.Sprint(l.Dropped(), " dropped"))
	}
}
