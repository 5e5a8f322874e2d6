package phrexport_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/auth/token"
	"github.com/phr-project/phr/internal/phrexport"
	"github.com/phr-project/phr/internal/procmem"
	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/synthea"
)

// The benchmark store: the Synthea patients loaded once per test binary
// (PHR_BENCH_PATIENTS, default all 120) into a SQLite data directory.
var (
	benchOnce sync.Once
	benchApp  *server.App
	benchDir  string
	benchErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if benchApp != nil {
		benchApp.Close()
	}
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}

func benchStore(b *testing.B) *server.App {
	dir := synthea.Require(b)
	benchOnce.Do(func() {
		n := 0
		if v := os.Getenv("PHR_BENCH_PATIENTS"); v != "" {
			n, _ = strconv.Atoi(v)
		}
		files, err := synthea.Files(dir, n)
		if err != nil {
			benchErr = err
			return
		}
		// PHR_BENCH_DIR keeps the loaded data directory between runs.
		keep := os.Getenv("PHR_BENCH_DIR")
		dataDir := keep
		if keep == "" {
			if benchDir, benchErr = os.MkdirTemp("", "phrexport-bench-"); benchErr != nil {
				return
			}
			dataDir = benchDir
		}
		_, statErr := os.Stat(filepath.Join(dataDir, "phr.db"))
		if benchApp, benchErr = server.Open(context.Background(), server.Config{DataDir: dataDir}); benchErr != nil {
			return
		}
		if keep != "" && statErr == nil {
			b.Logf("using the store loaded before in %s", keep)
			return
		}
		start := time.Now()
		st, err := synthea.Load(context.Background(), benchApp.Records, files)
		benchErr = err
		b.Logf("loaded %d bundles, %d resources (%.0f MB) in %s", st.Bundles, st.Resources, float64(st.Bytes)/1e6, time.Since(start).Round(time.Second))
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchApp
}

// peakHeap samples the heap in use while f runs and returns the peak
// above the level before.
func peakHeap(f func()) uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(20 * time.Millisecond) // ReadMemStats stops the world: not too often
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				var m runtime.MemStats
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peak {
					peak = m.HeapInuse
				}
			}
		}
	}()
	f()
	close(done)
	wg.Wait()
	if peak < base {
		return 0
	}
	return peak - base
}

// BenchmarkExportSynthea streams the whole store (every patient's group,
// then the shared resources) in each format to io.Discard, and reports
// resources/s, MB/s (of output), the peak heap growth during an export
// and the process's peak RSS during the export alone (VmHWM reset after
// the store was loaded; it includes SQLite's page caches and the pages of
// the memory-mapped database the export read). The garbage collector runs
// with the settings of phr serve (server.TuneGC; GOGC and GOMEMLIMIT in
// the environment win), so the heap is the one the server would keep.
//
//	go test ./internal/phrexport -run '^$' -bench ExportSynthea -benchtime 3x
func BenchmarkExportSynthea(b *testing.B) {
	server.TuneGC()
	app := benchStore(b)
	svc := phrexport.New(phrexport.Options{DB: app.Store, Records: app.Records, BaseURL: "http://x/fhir", Signer: app.Tokens})
	ctx := access.With(context.Background(), access.System{Name: "bench"})

	// content is the size of the record as NDJSON, to give the .sphr rate
	// in record bytes (its output is compressed).
	var content int64
	for _, format := range []string{"ndjson", "sphr", "bundle"} {
		b.Run(format, func(b *testing.B) {
			var res, bytes, peakRSS, startRSS int64
			var peak uint64
			cpu0 := procmem.CPU(procmem.Self)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p := &phrexport.Params{Format: format, Passphrase: "bench passphrase"}
				if err := svc.Prepare(ctx, p); err != nil {
					b.Fatal(err)
				}
				var st phrexport.Stats
				var err error
				// The peak RSS of the export: reset after the store was
				// loaded and the previous runs. What the process holds at
				// that point counts (start-RSS): the SQLite writer's cache
				// filled by a load in this process stays, so the export's
				// own figure comes from a run on a store loaded before
				// (PHR_BENCH_DIR).
				debug.FreeOSMemory()
				if err := procmem.ResetPeak(procmem.Self); err != nil {
					b.Fatal(err)
				}
				if rss, err := procmem.Status(procmem.Self, "VmRSS"); err == nil {
					startRSS = max(startRSS, rss)
				}
				pk := peakHeap(func() { st, err = svc.Export(ctx, p, io.Discard, nil) })
				if err != nil {
					b.Fatal(err)
				}
				rss, rerr := procmem.Peak(procmem.Self)
				if rerr != nil {
					b.Fatal(rerr)
				}
				peakRSS = max(peakRSS, rss)
				if st.Outcomes > 0 {
					b.Fatalf("%d inline errors", st.Outcomes)
				}
				res, bytes = res+st.Resources, bytes+st.Bytes
				peak = max(peak, pk)
			}
			s := b.Elapsed().Seconds()
			cpu := (procmem.CPU(procmem.Self) - cpu0).Seconds()
			b.ReportMetric(float64(res)/cpu, "res/cpu-s")
			b.ReportMetric(float64(bytes)/1e6/cpu, "MB/cpu-s")
			if format == "ndjson" {
				content = bytes / int64(b.N)
			}
			b.ReportMetric(float64(res)/s, "res/s")
			b.ReportMetric(float64(bytes)/1e6/s, "MB/s")
			if format == "sphr" && content > 0 {
				b.ReportMetric(float64(content*int64(b.N))/1e6/s, "record-MB/s")
				b.ReportMetric(float64(content*int64(b.N))/1e6/cpu, "record-MB/cpu-s")
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
			b.ReportMetric(float64(peakRSS)/(1<<20), "peak-RSS-MiB")
			b.ReportMetric(float64(startRSS)/(1<<20), "start-RSS-MiB")
			b.ReportMetric(float64(res)/float64(b.N), "res/op")
		})
	}
	// One patient at a time, as a patient app would ask.
	b.Run("per-patient-ndjson", func(b *testing.B) {
		ids, err := patientIDs(app)
		if err != nil {
			b.Fatal(err)
		}
		var res, bytes int64
		cpu0 := procmem.CPU(procmem.Self)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			for _, id := range ids {
				p := &phrexport.Params{Format: "ndjson", Patient: id}
				if err := svc.Prepare(ctx, p); err != nil {
					b.Fatal(err)
				}
				st, err := svc.Export(ctx, p, io.Discard, nil)
				if err != nil {
					b.Fatal(err)
				}
				res, bytes = res+st.Resources, bytes+st.Bytes
			}
		}
		s := b.Elapsed().Seconds()
		cpu := (procmem.CPU(procmem.Self) - cpu0).Seconds()
		b.ReportMetric(float64(res)/s, "res/s")
		b.ReportMetric(float64(bytes)/1e6/s, "MB/s")
		b.ReportMetric(float64(res)/cpu, "res/cpu-s")
		b.ReportMetric(float64(bytes)/1e6/cpu, "MB/cpu-s")
	})
	// The whole store over HTTP from the real server on 127.0.0.1, read
	// by a client in the same process (its CPU counts too).
	// PHR_BENCH_NOJOBS=1 serves without the background job workers, and
	// with PHR_BENCH_NOAUDIT=1 also without the audit middleware: on the
	// 2-core machine the audit middleware made the export cost about three
	// times the CPU (see the export notes).
	b.Run("http-ndjson", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		var stop func()
		if os.Getenv("PHR_BENCH_NOJOBS") != "" {
			// The HTTP server alone, without the background job workers.
			srv := app.HTTPServer()
			if os.Getenv("PHR_BENCH_NOAUDIT") != "" {
				mux := http.NewServeMux()
				mux.Handle("/fhir/", app.FHIR)
				srv.Handler = mux
			}
			go srv.Serve(ln)
			stop = func() { srv.Close() }
		} else {
			sctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { app.Serve(sctx, ln, time.Second); close(done) }()
			stop = func() { cancel(); <-done }
		}
		defer stop()
		tok, err := app.Tokens.Sign(token.Claims{Subject: "bench", Scope: "system/*.*", Expiry: time.Now().Add(time.Hour)})
		if err != nil {
			b.Fatal(err)
		}
		url := "http://" + ln.Addr().String() + "/fhir/Bundle/$phr-export?outputFormat=ndjson"
		var res, n, peakRSS int64
		cpu0 := procmem.CPU(procmem.Self)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := procmem.ResetPeak(procmem.Self); err != nil {
				b.Fatal(err)
			}
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			cw := &lineCounter{}
			_, err = io.Copy(cw, resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				b.Fatalf("%d %v", resp.StatusCode, err)
			}
			res, n = res+cw.lines, n+cw.n
			rss, err := procmem.Peak(procmem.Self)
			if err != nil {
				b.Fatal(err)
			}
			peakRSS = max(peakRSS, rss)
		}
		s := b.Elapsed().Seconds()
		cpu := (procmem.CPU(procmem.Self) - cpu0).Seconds()
		b.ReportMetric(float64(res)/s, "res/s")
		b.ReportMetric(float64(n)/1e6/s, "MB/s")
		b.ReportMetric(float64(res)/cpu, "res/cpu-s")
		b.ReportMetric(float64(n)/1e6/cpu, "MB/cpu-s")
		// Server and client in one process: the client's part is small
		// (a line counter).
		b.ReportMetric(float64(peakRSS)/(1<<20), "peak-RSS-MiB")
	})
	debug.FreeOSMemory()
}

type lineCounter struct{ n, lines int64 }

func (c *lineCounter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	c.lines += int64(bytes.Count(p, []byte{'\n'}))
	return len(p), nil
}

func patientIDs(app *server.App) ([]string, error) {
	rows, err := app.Store.Query(context.Background(), `SELECT id FROM resource WHERE type = 'Patient' AND NOT deleted ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}
