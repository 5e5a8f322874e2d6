package bulk_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/auth/token"
	"github.com/phr-project/phr/internal/procmem"
	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/synthea"
)

// benchPatients is how many Synthea patients the benchmark loads: all 120
// with PHR_LONG=1, PHR_SYNTHEA_PATIENTS=n, else 5.
func benchPatients() int {
	if v := os.Getenv("PHR_SYNTHEA_PATIENTS"); v != "" {
		n, _ := strconv.Atoi(v)
		return n
	}
	if os.Getenv("PHR_LONG") != "" {
		return 120
	}
	return 5
}

// BenchmarkSystemExportSynthea measures a system-level $export of the
// Synthea patients on SQLite, from kick-off to the complete manifest,
// against a real `phr serve` process (built for the benchmark, so with
// its GOGC and memory limit), and reports that process's peak resident
// memory (VmHWM) during the exports, reset after it started.
//
//	PHR_LONG=1 go test ./internal/bulk -run '^$' -bench SystemExportSynthea -benchtime 3x
//
// Measured 2026-12-06 on the shared 2-core development machine (load
// average about 25, so wall time is mostly waiting for a core): 92,114
// resources, 138.5 MB of NDJSON in 24 files: 19.0 s/op wall, 3.35 s of
// server CPU per export, peak RSS 181 MB (88 MB anonymous after it: the
// SQLite page cache of the read connection and the Go heap).
func BenchmarkSystemExportSynthea(b *testing.B) {
	sv := benchServer(b)
	base, tok, stored := sv.base, sv.tok, sv.stored
	client := &http.Client{Timeout: time.Minute}
	do := func(method, u string, headers ...string) *http.Response {
		req, _ := http.NewRequest(method, u, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		return resp
	}
	var m manifest
	pid := sv.cmd.Process.Pid
	// Measure the exports alone: the server process is fresh (it has
	// only started and answered /healthz), and its peak RSS is reset to
	// what it holds now.
	if err := procmem.ResetPeak(pid); err != nil {
		b.Fatal(err)
	}
	startRSS, _ := procmem.Status(pid, "VmRSS")
	cpu0 := procmem.CPU(pid)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp := do("GET", base+"/fhir/$export", "Accept", "application/fhir+json", "Prefer", "respond-async")
		resp.Body.Close()
		if resp.StatusCode != 202 {
			b.Fatalf("kick-off: %d", resp.StatusCode)
		}
		status := resp.Header.Get("Content-Location")
		for {
			time.Sleep(20 * time.Millisecond)
			resp := do("GET", status)
			if resp.StatusCode == 200 {
				m = manifest{}
				err := json.NewDecoder(resp.Body).Decode(&m)
				resp.Body.Close()
				if err != nil {
					b.Fatal(err)
				}
				break
			}
			resp.Body.Close()
			if resp.StatusCode != 202 && resp.StatusCode != 429 {
				b.Fatalf("status: %d", resp.StatusCode)
			}
		}
	}
	b.StopTimer()
	if cpu := procmem.CPU(sv.cmd.Process.Pid) - cpu0; cpu > 0 {
		// CPU seconds of the server per export: a figure that stays
		// meaningful on a machine shared with other work.
		b.ReportMetric(cpu.Seconds()/float64(b.N), "server-cpu-s/op")
	}
	total := 0
	for _, it := range m.Output {
		if it.Type != "AuditEvent" { // the audit log writes these as the benchmark runs
			total += it.Count
		}
	}
	if total != stored {
		b.Fatalf("exported %d resources, the store has %d", total, stored)
	}
	var size float64
	for _, it := range m.Output {
		if v, ok := it.Extension["size"].(float64); ok {
			size += v
		}
	}
	b.ReportMetric(size/(1<<20), "ndjson-MB")
	b.ReportMetric(float64(total), "resources")
	b.ReportMetric(float64(len(m.Output)), "files")
	hwm, err := procmem.Peak(pid)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(hwm)/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(float64(startRSS)/(1<<20), "start-RSS-MiB")
	// What the resident memory is now: anonymous (Go heap, SQLite's page
	// caches) and file-backed (the binary, SQLite's memory-mapped database).
	for _, f := range []string{"RssAnon", "RssFile"} {
		if v, err := procmem.Status(pid, f); err == nil {
			b.ReportMetric(float64(v)/(1<<20), f+"-MiB")
		}
	}
}

// benchSrv is the loaded store and the phr serve process the benchmark
// uses; it is set up once per test binary (the testing package calls a
// benchmark more than once) and removed by TestMain.
type benchSrv struct {
	dir, base, tok string
	stored         int
	cmd            *exec.Cmd
}

var benchState *benchSrv

func benchServer(b *testing.B) *benchSrv {
	if benchState != nil {
		return benchState
	}
	dir := synthea.Require(b)
	files, err := synthea.Files(dir, benchPatients())
	if err != nil {
		b.Fatal(err)
	}
	tmp, err := os.MkdirTemp("", "phr-bulk-bench-")
	if err != nil {
		b.Fatal(err)
	}
	sv := &benchSrv{dir: tmp}
	benchState = sv
	// PHR_BENCH_DIR keeps the loaded data directory between runs.
	data := os.Getenv("PHR_BENCH_DIR")
	if data == "" {
		data = filepath.Join(tmp, "data")
	}
	_, statErr := os.Stat(filepath.Join(data, "phr.db"))
	ctx := context.Background()
	app, err := server.Open(ctx, server.Config{DataDir: data, Addr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	var st synthea.Stats
	if statErr == nil && os.Getenv("PHR_BENCH_DIR") != "" {
		b.Logf("using the store loaded before in %s", data)
	} else if st, err = synthea.Load(ctx, app.Records, files); err != nil {
		b.Fatal(err)
	}
	if err := app.Store.QueryRow(ctx, `SELECT COUNT(*) FROM resource WHERE NOT deleted AND type <> 'AuditEvent'`).Scan(&sv.stored); err != nil {
		b.Fatal(err)
	}
	sv.tok, err = app.Tokens.Sign(token.Claims{Subject: "bench", Scope: "system/*.read", Expiry: time.Now().Add(2 * time.Hour)})
	if err != nil {
		b.Fatal(err)
	}
	app.Close()
	b.Logf("loaded %d bundles, %d resources (%d current)", st.Bundles, st.Resources, sv.stored)

	bin := filepath.Join(tmp, "phr")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/phr").CombinedOutput(); err != nil {
		b.Fatalf("build phr: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	sv.cmd = exec.Command(bin, "serve", "--data", data, "--addr", addr, "--export-rate", "10ms", "--log-level", "warn")
	sv.cmd.Stderr = os.Stderr
	if err := sv.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	sv.base = "http://" + addr
	for i := 0; ; i++ {
		if r, err := http.Get(sv.base + "/healthz"); err == nil {
			r.Body.Close()
			break
		}
		if i > 200 {
			b.Fatal("phr serve did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return sv
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sv := benchState; sv != nil {
		if sv.cmd != nil && sv.cmd.Process != nil {
			sv.cmd.Process.Signal(os.Interrupt)
			sv.cmd.Wait()
		}
		os.RemoveAll(sv.dir)
	}
	os.Exit(code)
}
