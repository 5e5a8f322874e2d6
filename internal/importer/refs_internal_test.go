package importer

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/procmem"
	"github.com/phr-project/phr/internal/synthea"
)

// syntheaTexts returns the JSON text of the entry resources of the first
// ten Synthea patients (and the two shared-information bundles) as the
// NDJSON import benchmark feeds them: urn:uuid: references to entries of
// the same Bundle turned into Type/id.
func syntheaTexts(tb testing.TB) [][]byte {
	tb.Helper()
	files, err := synthea.Files(synthea.Require(tb), 10)
	if err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	for _, f := range files {
		b, _, err := synthea.ReadBundle(f)
		if err != nil {
			tb.Fatal(err)
		}
		urls := map[string]string{}
		for _, e := range b.Get("entry").Items {
			res := e.Get("resource")
			urls[e.GetString("fullUrl")] = res.GetString("resourceType") + "/" + res.GetString("id")
		}
		for _, e := range b.Get("entry").Items {
			res := e.Get("resource")
			walkRefs(res, func(ref string) string {
				if local, ok := urls[ref]; ok {
					return local
				}
				return ref
			})
			out = append(out, res.Marshal())
		}
	}
	return out
}

func parseAll(tb testing.TB, texts [][]byte) []*fhirjson.Value {
	out := make([]*fhirjson.Value, len(texts))
	for i, t := range texts {
		v, err := fhirjson.Parse(t)
		if err != nil {
			tb.Fatal(err)
		}
		out[i] = v
	}
	return out
}

// TestContentHash: the digest is the SHA-256 of the canonical JSON (as
// stored digests of earlier imports were made), whatever the member order
// and however the pooled buffer was used before.
func TestContentHash(t *testing.T) {
	a, _ := fhirjson.Parse([]byte(`{"resourceType":"Observation","id":"1","valueQuantity":{"value":1.50,"unit":"kg"}}`))
	b, _ := fhirjson.Parse([]byte(`{"valueQuantity":{"unit":"kg","value":1.50},"id":"1","resourceType":"Observation"}`))
	c, _ := fhirjson.Parse([]byte(`{"resourceType":"Observation","id":"1","valueQuantity":{"value":1.5,"unit":"kg"}}`))
	sum := sha256.Sum256([]byte(`{"id":"1","resourceType":"Observation","valueQuantity":{"unit":"kg","value":1.50}}`))
	want := hex.EncodeToString(sum[:])
	big, _ := fhirjson.Parse([]byte(`{"text":"` + strings.Repeat("x", 100000) + `"}`))
	contentHash(big) // leaves a long buffer in the pool
	if got := contentHash(a); got != want {
		t.Errorf("contentHash = %s, want %s", got, want)
	}
	if contentHash(b) != want {
		t.Error("member order changed the digest")
	}
	if contentHash(c) == want {
		t.Error("1.5 and 1.50 gave the same digest")
	}
}

// TestWalkRefs: every Reference.reference is visited, wherever it is, and
// replaced by what f returns; nothing else changes.
func TestWalkRefs(t *testing.T) {
	v, _ := fhirjson.Parse([]byte(`{"subject":{"reference":"Patient/1"},"x":[{"reference":"A/1"},[{"a":{"reference":"B/2"}}]],"reference":"C/3","y":{"reference":{"reference":"D/4"}},"z":"reference"}`))
	var seen []string
	walkRefs(v, func(ref string) string {
		seen = append(seen, ref)
		if ref == "A/1" {
			return "A/9"
		}
		return ref
	})
	if got := strings.Join(seen, " "); got != "Patient/1 A/1 B/2 C/3 D/4" {
		t.Errorf("visited %s", got)
	}
	if got := string(v.Marshal()); got != `{"subject":{"reference":"Patient/1"},"x":[{"reference":"A/9"},[{"a":{"reference":"B/2"}}]],"reference":"C/3","y":{"reference":{"reference":"D/4"}},"z":"reference"}` {
		t.Errorf("rewritten to %s", got)
	}
}

// cpuPerOp reports the process's CPU time per operation since start
// (steadier than ns/op on a busy machine).
func cpuPerOp(b *testing.B, start time.Duration) {
	if cpu := procmem.CPU(procmem.Self) - start; cpu > 0 && b.N > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

// BenchmarkContentHash measures the duplicate-detection digest of one
// Synthea resource.
//
//	go test ./internal/importer -run '^$' -bench 'ContentHash|WalkRefs' -benchmem
func BenchmarkContentHash(b *testing.B) {
	vals := parseAll(b, syntheaTexts(b))
	b.ReportAllocs()
	n := 0
	cpu := procmem.CPU(procmem.Self)
	for b.Loop() {
		contentHash(vals[n%len(vals)])
		n++
	}
	cpuPerOp(b, cpu)
}

// BenchmarkWalkRefs measures one walk over the references of a Synthea
// resource (the import walks each resource three times).
func BenchmarkWalkRefs(b *testing.B) {
	vals := parseAll(b, syntheaTexts(b))
	b.ReportAllocs()
	n, refs := 0, 0
	cpu := procmem.CPU(procmem.Self)
	for b.Loop() {
		walkRefs(vals[n%len(vals)], func(ref string) string {
			refs++
			return ref
		})
		n++
	}
	cpuPerOp(b, cpu)
	b.ReportMetric(float64(refs)/float64(n), "refs/op")
}

func TestContradiction(t *testing.T) {
	type ids = [][2]string
	for _, c := range []struct {
		a, b ids
		want string
	}{
		{ids{{"s", "1"}}, ids{{"s", "2"}}, "s"},
		{ids{{"s", "1"}, {"s", "2"}}, ids{{"s", "2"}}, ""},
		{ids{{"s", "1"}}, ids{{"s", "2"}, {"s", "1"}}, ""},
		{ids{{"s", "1"}}, ids{{"t", "1"}}, ""},
		{ids{{"t", "9"}, {"s", "1"}}, ids{{"s", "2"}, {"t", "9"}}, "s"},
		{ids{{"s", "1"}, {"u", "3"}}, ids{{"s", "1"}, {"u", "4"}}, "u"},
		{ids{{"s", "1"}, {"s", "1"}}, ids{{"s", "2"}}, "s"},
		{nil, ids{{"s", "2"}}, ""},
		{ids{{"s", "2"}}, nil, ""},
	} {
		if got := contradiction(c.a, c.b); got != c.want {
			t.Errorf("contradiction(%v, %v) = %q, want %q", c.a, c.b, got, c.want)
		}
	}
}
