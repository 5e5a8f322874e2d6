package validate

import (
	"testing"
	"time"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/procmem"
)

// syntheaResources returns every entry resource of the Synthea bundles as
// its own JSON text: what the server validates, one write at a time.
func syntheaResources(b *testing.B) [][]byte {
	var out [][]byte
	for _, path := range synthea(b) {
		v, err := fhirjson.Parse(readGzip(b, path))
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range v.Get("entry").Items {
			out = append(out, e.Get("resource").Marshal())
		}
	}
	return out
}

// report reports rates per second of wall time and the process's CPU
// time per resource since cpuStart (garbage collection included), the
// steadier figure on a busy machine.
func report(b *testing.B, n, size int, cpuStart time.Duration) {
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(n)/sec, "resources/s")
	b.ReportMetric(float64(size)/sec/1e6, "MB/s")
	if cpu := procmem.CPU(procmem.Self) - cpuStart; cpu > 0 && n > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/op")
	}
}

// BenchmarkValidate measures validation alone over parsed Synthea
// resources.
func BenchmarkValidate(b *testing.B) {
	raw := syntheaResources(b)
	vals := make([]*fhirjson.Value, len(raw))
	for i, r := range raw {
		v, err := fhirjson.Parse(r)
		if err != nil {
			b.Fatal(err)
		}
		vals[i] = v
	}
	opts := Options{AllowConditionalReferences: true}
	b.ReportAllocs()
	b.ResetTimer()
	n, size := 0, 0
	cpu := procmem.CPU(procmem.Self)
	for i := 0; i < b.N; i++ {
		k := i % len(vals)
		if issues := opts.Resource(vals[k]); issues != nil {
			b.Fatalf("resource %d: %v", k, issues)
		}
		n++
		size += len(raw[k])
	}
	report(b, n, size, cpu)
}

// BenchmarkParseValidate measures the write path's share: parse the JSON
// text and validate it.
func BenchmarkParseValidate(b *testing.B) {
	raw := syntheaResources(b)
	opts := Options{AllowConditionalReferences: true}
	b.ReportAllocs()
	b.ResetTimer()
	n, size := 0, 0
	cpu := procmem.CPU(procmem.Self)
	for i := 0; i < b.N; i++ {
		k := i % len(raw)
		v, err := fhirjson.Parse(raw[k])
		if err != nil {
			b.Fatal(err)
		}
		if issues := opts.Resource(v); issues != nil {
			b.Fatalf("resource %d: %v", k, issues)
		}
		n++
		size += len(raw[k])
	}
	report(b, n, size, cpu)
}
