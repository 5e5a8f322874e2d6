package index

import (
	"flag"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/fhirjson"
)

var allSynthea = flag.Bool("synthea-all", false, "extract every Synthea bundle, not just the first ten patients (slow)")

// syntheaFiles returns the Synthea bundles: the two shared-information
// bundles and the first n patients' (all with n < 0).
func syntheaFiles(t testing.TB, n int) []string {
	dir := sharedData(t, "synthea-120-bundles")
	files, err := filepath.Glob(filepath.Join(dir, "*.json.gz"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no bundles in %s: %v", dir, err)
	}
	sort.Strings(files) // the 0-*Information bundles first
	if n >= 0 && len(files) > n+2 {
		files = files[:n+2]
	}
	return files
}

// TestSyntheaBundles extracts every resource of the Synthea bundles (ten
// patients by default; -synthea-all for all 120): none may fail, and the
// references the transaction resolves must give patient entries.
func TestSyntheaBundles(t *testing.T) {
	n := 10
	if *allSynthea {
		n = -1
	}
	resources, entries, withPatient, inCompartment := 0, 0, 0, 0
	for _, f := range syntheaFiles(t, n) {
		for _, r := range readBundle(t, f) {
			rt := r.GetString("resourceType")
			e, err := Extract(rt, r)
			if err != nil {
				t.Errorf("%s: %v", filepath.Base(f), err)
			}
			resources++
			entries += e.Len()
			if hasPatientRef(&e) {
				withPatient++
			}
			if rt != "Patient" && rt != "Practitioner" && rt != "Organization" && rt != "Location" &&
				rt != "PractitionerRole" && rt != "Medication" {
				inCompartment++
			}
		}
	}
	t.Logf("%d resources, %d entries", resources, entries)
	if withPatient != inCompartment {
		t.Errorf("%d of %d patient-related resources have a reference to a Patient", withPatient, inCompartment)
	}
}

func hasPatientRef(e *Entries) bool {
	for _, r := range e.Refs {
		if r.Type == "Patient" && r.ID != "" {
			return true
		}
	}
	return false
}

// loadSynthea parses the resources of the first n patients' bundles.
func loadSynthea(b testing.TB, n int) []*fhirjson.Value {
	var rs []*fhirjson.Value
	for _, f := range syntheaFiles(b, n) {
		rs = append(rs, readBundle(b, f)...)
	}
	return rs
}

// BenchmarkExtract measures extraction alone over the resources of ten
// Synthea patients (parsed beforehand), reporting resources per second.
func BenchmarkExtract(b *testing.B) {
	rs := loadSynthea(b, 10)
	var e Entries
	b.ResetTimer()
	n := 0
	cpu := cpuTime()
	for b.Loop() {
		r := rs[n%len(rs)]
		n++
		e.Reset()
		x, err := For(r.GetString("resourceType"))
		if err != nil {
			b.Fatal(err)
		}
		if err := x.Append(&e, r); err != nil {
			b.Fatal(err)
		}
	}
	reportRates(b, n, cpu)
}

// BenchmarkExtractWrite measures Extract as the write paths call it: into
// new Entries that the version keeps until it is stored.
func BenchmarkExtractWrite(b *testing.B) {
	rs := loadSynthea(b, 10)
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	cpu := cpuTime()
	for b.Loop() {
		r := rs[n%len(rs)]
		n++
		if _, err := Extract(r.GetString("resourceType"), r); err != nil {
			b.Fatal(err)
		}
	}
	reportRates(b, n, cpu)
}

// BenchmarkParseExtract measures parsing plus extraction from the JSON
// bytes, what indexing a write costs when nothing else has parsed it.
func BenchmarkParseExtract(b *testing.B) {
	rs := loadSynthea(b, 10)
	raw := make([][]byte, len(rs))
	size := 0
	for i, r := range rs {
		raw[i] = r.Marshal()
		size += len(raw[i])
	}
	var e Entries
	b.SetBytes(int64(size / len(raw)))
	b.ResetTimer()
	n := 0
	cpu := cpuTime()
	for b.Loop() {
		data := raw[n%len(raw)]
		n++
		r, err := fhirjson.Parse(data)
		if err != nil {
			b.Fatal(err)
		}
		e.Reset()
		x, err := For(r.GetString("resourceType"))
		if err != nil {
			b.Fatal(err)
		}
		if err := x.Append(&e, r); err != nil {
			b.Fatal(err)
		}
	}
	reportRates(b, n, cpu)
}

// reportRates reports resources per second of wall time and per second of
// CPU time (the process's, so garbage collection counts); on a busy
// machine the second is the steadier measure of what one core does.
func reportRates(b *testing.B, n int, cpuStart time.Duration) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "resources/s")
	if cpu := cpuTime() - cpuStart; cpu > 0 {
		b.ReportMetric(float64(n)/cpu.Seconds(), "resources/cpu-s")
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/op")
	}
}

// TestExtractCopiesExactly: Extract, which extracts into pooled scratch
// space and copies, gives what extracting into new Entries gives, for
// every resource of ten Synthea patients, and the entries of one call are
// not changed by the next.
func TestExtractCopiesExactly(t *testing.T) {
	rs := loadSynthea(t, 10)
	var prev []string
	var prevEntries Entries
	composites := 0
	for i, r := range rs {
		rt := r.GetString("resourceType")
		got, err := Extract(rt, r)
		if err != nil {
			t.Fatal(err)
		}
		var want Entries
		x, _ := For(rt)
		if err := x.Append(&want, r); err != nil {
			t.Fatal(err)
		}
		if g, w := dump(&got), dump(&want); g != w {
			t.Fatalf("resource %d (%s): Extract gave\n%s\nextracting into new Entries gave\n%s", i, rt, g, w)
		}
		if cap(got.Tokens) != len(got.Tokens) || cap(got.Refs) != len(got.Refs) {
			t.Errorf("resource %d: spare capacity left", i)
		}
		composites += len(got.Composites)
		if prev != nil {
			if d := dump(&prevEntries); d != strings.Join(prev, "") {
				t.Fatalf("resource %d: extracting it changed the entries of the one before:\n%s\nwas\n%s", i, d, strings.Join(prev, ""))
			}
		}
		prevEntries, prev = got, []string{dump(&got)}
	}
	if composites == 0 {
		t.Fatal("no composite entries: the test does not cover them")
	}
}
