package fhirjson

import (
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/procmem"
)

// The benchmarks below run over the entry resources of Synthea bundles
// (the two shared-information bundles and the first ten patients), each
// resource as its own JSON text as the write paths see it. One operation
// is one resource, so ns/op, B/op and allocs/op are per resource.
//
//	go test ./internal/fhirjson -run '^$' -bench Synthea -benchmem

// syntheaDir is where the shared Synthea bundles are, relative to this
// package's directory.
const syntheaDir = "../../../shared/data/synthea-120-bundles"

// syntheaRaw returns the JSON text of every entry resource of the first
// ten patients' bundles (and the two shared-information ones); the test
// or benchmark is skipped when the data is absent.
func syntheaRaw(b testing.TB) [][]byte {
	b.Helper()
	files, _ := filepath.Glob(filepath.Join(syntheaDir, "*.json.gz"))
	if len(files) == 0 {
		b.Skip(syntheaDir + " not found; skipping the Synthea benchmarks")
	}
	sort.Strings(files) // the 0-*Information bundles first
	if len(files) > 12 {
		files = files[:12]
	}
	var out [][]byte
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			b.Fatalf("%s: %v", path, err)
		}
		data, err := io.ReadAll(zr)
		f.Close()
		if err != nil {
			b.Fatalf("%s: %v", path, err)
		}
		v, err := Parse(data)
		if err != nil {
			b.Fatalf("%s: %v", path, err)
		}
		for _, e := range v.Get("entry").Items {
			out = append(out, e.Get("resource").Marshal())
		}
	}
	return out
}

// cpuPerOp reports the process's CPU time per operation since start.
func cpuPerOp(b *testing.B, start time.Duration) {
	if cpu := procmem.CPU(procmem.Self) - start; cpu > 0 && b.N > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

// benchEach runs op over items in turn, one item per operation, and
// reports bytes (the mean size of an item) per operation, allocations and
// the CPU time per operation.
func benchEach[T any](b *testing.B, items []T, bytes int, op func(T)) {
	b.SetBytes(int64(bytes))
	b.ReportAllocs()
	n := 0
	cpu := procmem.CPU(procmem.Self)
	for b.Loop() {
		op(items[n%len(items)])
		n++
	}
	cpuPerOp(b, cpu)
}

func syntheaTrees(b *testing.B) ([]*Value, int) {
	raw := syntheaRaw(b)
	vals := make([]*Value, len(raw))
	size := 0
	for i, r := range raw {
		v, err := Parse(r)
		if err != nil {
			b.Fatal(err)
		}
		vals[i] = v
		size += len(r)
	}
	return vals, size / len(raw)
}

func BenchmarkSyntheaParse(b *testing.B) {
	raw := syntheaRaw(b)
	size := 0
	for _, r := range raw {
		size += len(r)
	}
	benchEach(b, raw, size/len(raw), func(r []byte) {
		if _, err := Parse(r); err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkSyntheaMarshal(b *testing.B) {
	vals, size := syntheaTrees(b)
	benchEach(b, vals, size, func(v *Value) { _ = v.Marshal() })
}

func BenchmarkSyntheaAppend(b *testing.B) {
	vals, size := syntheaTrees(b)
	var buf []byte
	benchEach(b, vals, size, func(v *Value) { buf = v.Append(buf[:0]) })
}

func BenchmarkSyntheaAppendCanonical(b *testing.B) {
	vals, size := syntheaTrees(b)
	var buf []byte
	benchEach(b, vals, size, func(v *Value) { buf = v.AppendCanonical(buf[:0]) })
}

func BenchmarkSyntheaClone(b *testing.B) {
	vals, size := syntheaTrees(b)
	benchEach(b, vals, size, func(v *Value) { _ = v.Clone() })
}

// BenchmarkSyntheaAppendString appends every string value and member name
// of the Synthea resources; one operation is one string.
func BenchmarkSyntheaAppendString(b *testing.B) {
	vals, _ := syntheaTrees(b)
	var strs []string
	var walk func(v *Value)
	walk = func(v *Value) {
		switch v.Kind {
		case String:
			strs = append(strs, v.Str)
		case Array:
			for _, it := range v.Items {
				walk(it)
			}
		case Object:
			for _, f := range v.Fields {
				strs = append(strs, f.Name)
				walk(f.Value)
			}
		}
	}
	for _, v := range vals {
		walk(v)
	}
	var buf []byte
	benchEach(b, strs, len(strings.Join(strs, ""))/len(strs), func(s string) { buf = AppendString(buf[:0], s) })
}
