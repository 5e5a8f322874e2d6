package search_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/auth/token"
	"github.com/phr-project/phr/internal/procmem"
	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/store/storetest"
	"github.com/phr-project/phr/internal/synthea"
)

// syntheaPatients is how many Synthea patients the tests load: a few by
// default, all 120 with PHR_LONG=1 (or PHR_SYNTHEA_PATIENTS=n).
func syntheaPatients() int {
	if v := os.Getenv("PHR_SYNTHEA_PATIENTS"); v != "" {
		n, _ := strconv.Atoi(v)
		return n
	}
	if os.Getenv("PHR_LONG") != "" {
		return 120
	}
	return 3
}

type loaded struct {
	app      *server.App
	tok      string
	patient  string // the patient with the most observations
	family   string
	resouces int
	ingest   time.Duration
	// ingestCPU is the CPU time the process used while ingesting.
	ingestCPU time.Duration
}

func loadSynthea(t testing.TB, dialect string, patients int) *loaded {
	dir := synthea.Require(t)
	files, err := synthea.Files(dir, patients)
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{DataDir: t.TempDir(), Addr: "127.0.0.1:0"}
	if d := os.Getenv("PHR_BENCH_DATA"); d != "" {
		cfg.DataDir = d // keep the loaded SQLite database for inspection
	}
	if dialect == "postgres" {
		cfg.DB = os.Getenv("PHR_BENCH_PG_URL") // a database kept for inspection
		if cfg.DB == "" {
			cfg.DB = storetest.NewPostgresURL(t)
		}
	}
	ctx := context.Background()
	app, err := server.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	start, cpu := time.Now(), procmem.CPU(procmem.Self)
	var st synthea.Stats
	if os.Getenv("PHR_BENCH_REUSE") == "" {
		// PHR_BENCH_REUSE=1 with PHR_BENCH_DATA queries a database loaded before
		if st, err = synthea.Load(ctx, app.Records, files); err != nil {
			t.Fatalf("load: %v", err)
		}
	}
	l := &loaded{app: app, resouces: st.Resources, ingest: time.Since(start), ingestCPU: procmem.CPU(procmem.Self) - cpu}
	if dialect == "postgres" {
		// planner statistics as autovacuum (off on some machines; search
		// then refreshes them itself, in the background) would leave them
		if _, err := app.Store.Exec(ctx, "ANALYZE"); err != nil {
			t.Fatal(err)
		}
	}
	l.tok, err = app.Tokens.Sign(token.Claims{Subject: "bench", Scope: "system/*.*", Expiry: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	// the patient with the most observations
	rows, err := app.Store.Query(ctx, `SELECT c.patient, COUNT(*) FROM compartment c JOIN resource r ON r.rid = c.rid JOIN idx_token t ON t.rid = r.rid AND t.pid = (SELECT id FROM search_param WHERE type = 'Observation' AND param = 'code') AND t.code = '2093-3' WHERE r.type = 'Observation' GROUP BY c.patient ORDER BY COUNT(*) DESC, c.patient LIMIT 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n int
		rows.Scan(&l.patient, &n)
	}
	rows.Close()
	b := l.get(t, "Patient/"+l.patient)
	var p struct {
		Name []struct{ Family string } `json:"name"`
	}
	json.Unmarshal(b, &p)
	l.family = p.Name[0].Family
	return l
}

func (l *loaded) get(t testing.TB, path string) []byte {
	req := httptest.NewRequest("GET", "http://127.0.0.1/fhir/"+path, nil)
	req.Header.Set("Authorization", "Bearer "+l.tok)
	w := httptest.NewRecorder()
	l.app.Handler().ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, w.Code, w.Body.Bytes())
	}
	return w.Body.Bytes()
}

// queries are the dozen searches of the benchmark.
func (l *loaded) queries() []string {
	x := l.patient
	return []string{
		"Observation?patient=" + x + "&code=http://loinc.org|2093-3&date=ge2015&_sort=-date",
		"Condition?clinical-status=active&patient=" + x,
		"Observation?code=http://loinc.org|2093-3&_summary=count",
		"Observation?patient=" + x + "&category=laboratory&_count=50",
		"Observation?patient=" + x + "&_sort=-date&_count=100",
		"MedicationRequest?patient=" + x + "&status=active",
		"Encounter?patient=" + x + "&date=ge2018&_sort=-date&_count=20",
		"Patient?name=" + l.family,
		"Patient/" + x + "/Condition",
		"Immunization?patient=" + x + "&date=ge2010-01-01",
		"DiagnosticReport?patient=" + x + "&_include=DiagnosticReport:result&_count=20",
		"Observation?code=http://loinc.org|8302-2&value-quantity=gt180&_summary=count",
		"Observation?subject:Patient.name=" + l.family + "&code=http://loinc.org|2093-3",
		"Patient/" + x + "/$everything?_count=100",
	}
}

func total(t testing.TB, b []byte) (int, int) {
	var m struct {
		Total *int  `json:"total"`
		Entry []any `json:"entry"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	n := -1
	if m.Total != nil {
		n = *m.Total
	}
	return n, len(m.Entry)
}

// TestSynthea runs the benchmark queries over a few Synthea patients and
// checks they find what the data has.
func TestSynthea(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			l := loadSynthea(t, d, 2)
			for _, q := range l.queries() {
				n, entries := total(t, l.get(t, q))
				t.Logf("total %d, entries %d: %s", n, entries, q)
			}
			n, _ := total(t, l.get(t, "Observation?patient="+l.patient))
			m, _ := total(t, l.get(t, "Patient/"+l.patient+"/Observation"))
			if n <= 0 || n != m {
				t.Errorf("patient search %d, compartment search %d", n, m)
			}
			c, _ := total(t, l.get(t, "Observation?code=http://loinc.org|2093-3&_summary=count"))
			if c <= 0 {
				t.Errorf("no cholesterol observations")
			}
		})
	}
}

// TestSyntheaBenchmark loads the Synthea patients (all 120 with PHR_LONG=1)
// and reports the ingest rate and the median and p99 of each benchmark
// query, in process (handler and Bundle writing included, no network).
func TestSyntheaBenchmark(t *testing.T) {
	if os.Getenv("PHR_LONG") == "" && os.Getenv("PHR_SYNTHEA_PATIENTS") == "" {
		t.Skip("set PHR_LONG=1 (or PHR_SYNTHEA_PATIENTS=n) to run the Synthea search benchmark")
	}
	runs := 200
	if v := os.Getenv("PHR_BENCH_RUNS"); v != "" {
		runs, _ = strconv.Atoi(v)
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			l := loadSynthea(t, d, syntheaPatients())
			t.Logf("%s: ingested %d resources in %v: %.0f resources/s (process CPU %v: %.0f resources per CPU-second)", d, l.resouces, l.ingest.Round(time.Millisecond),
				float64(l.resouces)/l.ingest.Seconds(), l.ingestCPU.Round(time.Millisecond), float64(l.resouces)/l.ingestCPU.Seconds())
			for _, q := range l.queries() {
				var ds, cs []time.Duration
				var n, entries int
				l.get(t, q) // warm
				for i := 0; i < runs; i++ {
					start, cpu := time.Now(), procmem.CPU(procmem.Self)
					b := l.get(t, q)
					ds = append(ds, time.Since(start))
					cs = append(cs, procmem.CPU(procmem.Self)-cpu)
					if i == 0 {
						n, entries = total(t, b)
					}
				}
				sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
				sort.Slice(cs, func(i, j int) bool { return cs[i] < cs[j] })
				med, p99 := ds[len(ds)/2], ds[min(len(ds)-1, len(ds)*99/100)]
				t.Logf("%-8s median %7.2f ms  p99 %7.2f ms  (process CPU median %6.2f ms)  total %5d entries %4d  %s", d, ms(med), ms(p99), ms(cs[len(cs)/2]), n, entries, q)
			}
		})
	}
}

// BenchmarkSearch runs each benchmark query as a sub-benchmark over the
// Synthea patients (a few; all 120 with PHR_LONG=1), on each store:
// go test -run '^$' -bench Search -benchtime 200x ./internal/search/
func BenchmarkSearch(b *testing.B) {
	for _, d := range storetest.Dialects() {
		b.Run(d, func(b *testing.B) {
			l := loadSynthea(b, d, syntheaPatients())
			for i, q := range l.queries() {
				b.Run(fmt.Sprintf("q%02d", i+1), func(b *testing.B) {
					for b.Loop() {
						l.get(b, q)
					}
				})
			}
		})
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

var _ = fmt.Sprint
