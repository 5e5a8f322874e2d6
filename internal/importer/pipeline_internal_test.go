package importer

import (
	"testing"
	"time"

	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/procmem"
	"github.com/phr-project/phr/internal/records"
	"github.com/phr-project/phr/internal/validate"
)

// benchValidator and benchIndexer are what phr serve gives the record
// service (internal/server's adapters, which this package cannot import).
type benchValidator struct{}

func (benchValidator) Validate(res *fhirjson.Value, conditionalRefs bool) []fhir.Issue {
	var out []fhir.Issue
	for _, is := range (validate.Options{AllowConditionalReferences: conditionalRefs}).Resource(res) {
		out = append(out, fhir.Issue{Severity: string(is.Severity), Code: is.Code, Diagnostics: is.Message, Expression: []string{is.Path}})
	}
	return out
}

type benchIndexer struct{}

func (benchIndexer) Extract(typ string, res *fhirjson.Value) (*index.Entries, error) {
	e, err := index.Extract(typ, res)
	return &e, err
}

// BenchmarkOutsideStore measures what the NDJSON import spends on one
// Synthea resource outside the database: parsing and digesting the line
// (parseItem), the three walks over its references (prefetch, forward
// check and rewrite, here with reference parsing only), and preparing the
// version (validation, meta, index entries, compartments, JSON text).
// cpu-ns/op is the process's CPU time per resource, garbage collection
// included.
//
//	go test ./internal/importer -run '^$' -bench OutsideStore -benchmem
func BenchmarkOutsideStore(b *testing.B) {
	texts := syntheaTexts(b)
	rec := records.New(records.Options{Validator: benchValidator{}, Indexer: benchIndexer{}})
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b.ReportAllocs()
	n, refs := 0, 0
	cpu := procmem.CPU(procmem.Self)
	for b.Loop() {
		it := &item{raw: texts[n%len(texts)]}
		n++
		parseItem(it)
		if it.act == actReject {
			b.Fatalf("rejected: %v", it.issues)
		}
		for range 3 {
			walkRefs(it.tree, func(ref string) string {
				if _, ok := fhir.ParseReference(ref); ok {
					refs++
				}
				return ref
			})
		}
		if _, err := rec.PrepareVersion(it.tree, it.typ, it.sid, 1, at, "POST", records.WriteOptions{Source: "bench", Batch: 1}); err != nil {
			b.Fatalf("%s/%s: %v", it.typ, it.sid, err)
		}
	}
	cpuPerOp(b, cpu)
	b.ReportMetric(float64(refs)/float64(n)/3, "refs/op")
}
