package synthea_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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

// concurrency is how many patient Bundles the HTTP load test and benchmark
// send at once (PHR_LOAD_CONCURRENCY; default 2): a loader of many
// Bundles keeps more than one request in flight, so that the server can
// prepare one Bundle while it writes another.
func concurrency(t testing.TB) int {
	v := os.Getenv("PHR_LOAD_CONCURRENCY")
	if v == "" {
		return 2
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("PHR_LOAD_CONCURRENCY=%q: want a positive number", v)
	}
	return n
}

// sendBundles posts the bodies to the server: the leading batch Bundles
// (the first nFirst bodies: hospitals, practitioners) one after the other,
// then the rest with conc requests in flight. It fails on the first
// Bundle or entry that does not succeed and returns the number of
// entries the responses count.
func sendBundles(t testing.TB, s *servertest.Server, tok string, names []string, bodies [][]byte, nFirst, conc int) int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu    sync.Mutex
		total int
		first error
	)
	send := func(i int) {
		n, err := postBundle(ctx, s, tok, bodies[i])
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if first == nil {
				first = fmt.Errorf("%s: %w", names[i], err)
				cancel()
			}
			return
		}
		total += n
	}
	for i := range nFirst {
		if send(i); first != nil {
			t.Fatal(first)
		}
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				send(i)
			}
		}()
	}
feed:
	for i := nFirst; i < len(bodies); i++ {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
	return total
}

// postBundle posts one transaction or batch Bundle and requires it and
// every entry to succeed; it returns the number of entries.
func postBundle(ctx context.Context, s *servertest.Server, tok string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", s.FHIR, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := s.Client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("reading the response: %w", err)
	}
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("status %d: %.500s", resp.StatusCode, rb)
	}
	var r struct {
		Type  string `json:"type"`
		Entry []struct {
			Response struct {
				Status  string          `json:"status"`
				Outcome json.RawMessage `json:"outcome"`
			} `json:"response"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(rb, &r); err != nil {
		return 0, fmt.Errorf("the response: %w", err)
	}
	for i, e := range r.Entry {
		if !strings.HasPrefix(e.Response.Status, "201") && !strings.HasPrefix(e.Response.Status, "200") {
			return 0, fmt.Errorf("entry %d: %s %s", i, e.Response.Status, e.Response.Outcome)
		}
	}
	return len(r.Entry), nil
}

// batchCount is how many of the files (in load order) are the batch
// Bundles that must be loaded before the patients.
func batchCount(files []string) int {
	n := 0
	for n < len(files) && strings.HasPrefix(filepath.Base(files[n]), "0-") {
		n++
	}
	return n
}

// TestLoadOverHTTP posts the two batch Bundles and then the patients'
// transaction Bundles (PHR_LOAD_CONCURRENCY at once) to a real server,
// requires every entry to succeed, and then checks that every reference
// in every stored resource resolves to a stored resource. It logs the
// load's rate and resources per CPU-second of the process (server and
// client share it).
func TestLoadOverHTTP(t *testing.T) {
	dir := synthea.Require(t)
	files, err := synthea.Files(dir, patients())
	if err != nil {
		t.Fatal(err)
	}
	bodies := make([][]byte, len(files))
	for i, f := range files {
		bodies[i] = gunzip(t, f)
	}
	conc := concurrency(t)
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			tok := s.AdminToken()
			start, cpu0 := time.Now(), procmem.CPU(procmem.Self)
			total := sendBundles(t, s, tok, files, bodies, batchCount(files), conc)
			el, cpu := time.Since(start), procmem.CPU(procmem.Self)-cpu0
			t.Logf("%s: %d bundles (%d at once), %d resources in %v (%.0f resources/s over HTTP), CPU %v (%.0f resources/cpu-s, %.0f%% of one core)",
				d, len(files), conc, total, el.Round(time.Millisecond), float64(total)/el.Seconds(),
				cpu.Round(time.Millisecond), float64(total)/cpu.Seconds(), 100*cpu.Seconds()/el.Seconds())
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
		servertest.References(v, &refs)
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

// BenchmarkIngestHTTP measures transaction-Bundle ingest over HTTP: the
// two batch Bundles and the patients (all 120 with PHR_LONG=1), the
// patients PHR_LOAD_CONCURRENCY at once, into a fresh server per
// iteration. Reported: resources/s and resources per CPU-second of the
// process (server and client share it).
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
	conc := concurrency(b)
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
				total += sendBundles(b, s, tok, files, bodies, batchCount(files), conc)
				el += time.Since(start)
				cpu += procmem.CPU(procmem.Self) - cpu0
			}
			b.ReportMetric(float64(total)/el.Seconds(), "resources/s")
			b.ReportMetric(float64(total)/cpu.Seconds(), "resources/cpu-s")
			b.ReportMetric(float64(total)/float64(b.N), "resources/op")
		})
	}
}
