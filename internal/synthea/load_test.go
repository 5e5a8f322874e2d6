package synthea_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/procmem"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
	"github.com/phr-project/phr/internal/synthea"
)

// patients is how many patient bundles the default test loads; PHR_LONG=1
// loads all 120 (what the foundation issue's acceptance asks).
func patients() int {
	if os.Getenv("PHR_LONG") != "" {
		return 0
	}
	return 8
}

// gunzip reads a gzipped bundle file as bytes.
func gunzip(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLoadOverHTTP posts the two batch Bundles and then the patients'
// transaction Bundles to a real server, requires every entry to succeed,
// and then checks that every reference in every stored resource resolves
// to a stored resource.
func TestLoadOverHTTP(t *testing.T) {
	dir := synthea.Require(t)
	files, err := synthea.Files(dir, patients())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			tok := s.AdminToken()
			total := 0
			start := time.Now()
			for _, f := range files {
				r := s.Do("POST", "", tok, gunzip(t, f))
				if r.Status != 200 {
					t.Fatalf("%s: status %d: %.500s", f, r.Status, r.Body)
				}
				var resp struct {
					Type  string `json:"type"`
					Entry []struct {
						Response struct {
							Status  string          `json:"status"`
							Outcome json.RawMessage `json:"outcome"`
						} `json:"response"`
					} `json:"entry"`
				}
				if err := json.Unmarshal(r.Body, &resp); err != nil {
					t.Fatal(err)
				}
				for i, e := range resp.Entry {
					if !strings.HasPrefix(e.Response.Status, "201") && !strings.HasPrefix(e.Response.Status, "200") {
						t.Fatalf("%s entry %d: %s %s", f, i, e.Response.Status, e.Response.Outcome)
					}
				}
				total += len(resp.Entry)
			}
			el := time.Since(start)
			t.Logf("%s: %d bundles, %d resources in %v (%.0f resources/s over HTTP)", d, len(files), total, el.Round(time.Millisecond), float64(total)/el.Seconds())
			checkReferences(t, s, total)
		})
	}
}

// checkReferences walks every current resource and resolves each
// "reference" string against the store.
func checkReferences(t *testing.T, s *servertest.Server, want int) {
	// AuditEvents the server wrote about the load itself are not part of it.
	t.Helper()
	ctx := context.Background()
	st := s.App.Store
	rows, err := st.Query(ctx, `SELECT v.json FROM resource r JOIN resource_version v ON v.rid = r.rid AND v.version = r.version WHERE NOT r.deleted AND r.type <> 'AuditEvent'`)
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	n := 0
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			t.Fatal(err)
		}
		n++
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		collectRefs(v, &refs)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	if n != want {
		t.Fatalf("%d current resources stored, want %d", n, want)
	}
	seen := map[string]bool{}
	for _, ref := range refs {
		if strings.HasPrefix(ref, "#") || seen[ref] {
			continue
		}
		seen[ref] = true
		typ, id, ok := strings.Cut(strings.TrimPrefix(ref, s.FHIR+"/"), "/")
		if !ok || strings.Contains(id, "/") {
			t.Fatalf("reference %q is not a resolved local Type/id reference", ref)
		}
		if _, err := st.Read(ctx, typ, id); err != nil {
			t.Fatalf("reference %q does not resolve: %v", ref, err)
		}
	}
	t.Logf("%d resources, %d references (%d distinct), all resolve", n, len(refs), len(seen))
}

func collectRefs(v any, out *[]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if k == "reference" {
				if s, ok := e.(string); ok {
					*out = append(*out, s)
					continue
				}
			}
			collectRefs(e, out)
		}
	case []any:
		for _, e := range x {
			collectRefs(e, out)
		}
	}
}

// BenchmarkIngestHTTP measures transaction-Bundle ingest over HTTP: the
// two batch Bundles and the patients (all 120 with PHR_LONG=1), one client
// posting bundles back to back, into a fresh server per iteration.
// Reported: resources/s and resources per CPU-second of the process
// (server and client share it).
func BenchmarkIngestHTTP(b *testing.B) {
	dir := synthea.Require(b)
	files, err := synthea.Files(dir, patients())
	if err != nil {
		b.Fatal(err)
	}
	bodies := make([][]byte, len(files))
	for i, f := range files {
		bodies[i] = gunzip(b, f)
	}
	for _, d := range storetest.Dialects() {
		b.Run(d, func(b *testing.B) {
			var total int
			var el, cpu time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				s := servertest.Start(b, d)
				tok := s.AdminToken()
				b.StartTimer()
				start, cpu0 := time.Now(), procmem.CPU(procmem.Self)
				for _, body := range bodies {
					r := s.Do("POST", "", tok, bytes.NewReader(body))
					if r.Status != 200 {
						b.Fatalf("status %d: %.300s", r.Status, r.Body)
					}
					total += bytes.Count(r.Body, []byte(`"status":"20`))
				}
				el += time.Since(start)
				cpu += procmem.CPU(procmem.Self) - cpu0
			}
			b.ReportMetric(float64(total)/el.Seconds(), "resources/s")
			b.ReportMetric(float64(total)/cpu.Seconds(), "resources/cpu-s")
			b.ReportMetric(float64(total)/float64(b.N), "resources/op")
		})
	}
}
