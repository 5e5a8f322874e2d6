package synthea_test

import (
	"context"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/procmem"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
	"github.com/phr-project/phr/internal/synthea"
)

// BenchmarkIngest measures transaction-Bundle ingest through the record
// service (validation, index extraction, conditional references, store
// writes; no HTTP): the two batch Bundles and the patients (all 120 with
// PHR_LONG=1) into a fresh server per iteration. Reported: resources/s and
// resources per CPU-second of the process.
func BenchmarkIngest(b *testing.B) {
	dir := synthea.Require(b)
	files, err := synthea.Files(dir, patients())
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range storetest.Dialects() {
		b.Run(d, func(b *testing.B) {
			var total int
			var el, cpu time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				s := servertest.Start(b, d)
				b.StartTimer()
				start, cpu0 := time.Now(), procmem.CPU(procmem.Self)
				st, err := synthea.Load(context.Background(), s.App.Records, files)
				if err != nil {
					b.Fatal(err)
				}
				el += time.Since(start)
				cpu += procmem.CPU(procmem.Self) - cpu0
				total += st.Resources
			}
			b.ReportMetric(float64(total)/el.Seconds(), "resources/s")
			b.ReportMetric(float64(total)/cpu.Seconds(), "resources/cpu-s")
		})
	}
}
