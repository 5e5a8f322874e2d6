package importer_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/importer"
	"github.com/phr-project/phr/internal/procmem"
	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/store/sqldb"
	"github.com/phr-project/phr/internal/store/storetest"
	"github.com/phr-project/phr/internal/synthea"
)

// BenchmarkImportSynthea imports the 120 Synthea patients as NDJSON
// (produced from the bundles, about 92,000 resources) into a fresh store
// of each dialect and reports resources/s and the process's peak RSS
// during the import (the input is produced before, and its memory given
// back). The garbage collector runs with the settings of phr serve
// (server.TuneGC; GOGC and GOMEMLIMIT in the environment win), which is
// where imports run. PHR_BENCH_PATIENTS=n imports fewer;
// PHR_BENCH_CHUNK=n sets the importer's ChunkSize, PHR_BENCH_CHUNK_BYTES=n
// its ChunkBytes, PHR_BENCH_WORKERS=n its Workers, PHR_BENCH_SQL statements to run on the store first
// (benchSQL). PHR_BENCH_BULK=1
// opens the store as `phr import --data` does (server.Config.BulkWrites:
// a bigger SQLite writer cache in slots, 2,000-resource chunks; run
// SQLite alone then, as the slots are the first store's of the process). It also reports the
// bytes the process wrote and read through system calls during the import
// (/proc/self/io wchar and rchar: SQLite's WAL frames and checkpoints, and
// the input file and page-cache misses).
//
//	go test ./internal/importer -run '^$' -bench ImportSynthea -benchtime 1x
func BenchmarkImportSynthea(b *testing.B) {
	server.TuneGC()
	dir := synthea.Require(b)
	n := 120
	if v, err := strconv.Atoi(os.Getenv("PHR_BENCH_PATIENTS")); err == nil && v > 0 {
		n = v
	}
	files, err := synthea.Files(dir, n)
	if err != nil {
		b.Fatal(err)
	}
	input := filepath.Join(b.TempDir(), "synthea.ndjson")
	f, _ := os.Create(input)
	total := syntheaNDJSON(b, files, f)
	f.Close()
	for _, d := range storetest.Dialects() {
		b.Run(d, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				var app *server.App
				if os.Getenv("PHR_BENCH_BULK") != "" {
					app = openAppWith(b, d, server.Config{BulkWrites: true})
				} else {
					app = openApp(b, d)
				}
				imp := importer.New(app.Store, app.Records)
				if v, err := strconv.Atoi(os.Getenv("PHR_BENCH_CHUNK")); err == nil && v > 0 {
					imp.ChunkSize = v
				}
				if v, err := strconv.Atoi(os.Getenv("PHR_BENCH_CHUNK_BYTES")); err == nil && v > 0 {
					imp.ChunkBytes = v
				}
				if v, err := strconv.Atoi(os.Getenv("PHR_BENCH_WORKERS")); err == nil && v > 0 {
					imp.Workers = v
				}
				ctx := access.With(context.Background(), access.System{Name: "bench"})
				if err := benchSQL(ctx, app.Store); err != nil {
					b.Fatal(err)
				}
				run, err := imp.Begin(ctx, importer.Options{Source: "synthea"})
				if err != nil {
					b.Fatal(err)
				}
				in, _ := os.Open(input)
				// Measure the import alone: give the memory of producing
				// the input back to the system, reset the peak RSS to what
				// the process holds now (the opened store, the test
				// binary), and sample the Go heap meanwhile.
				debug.FreeOSMemory()
				if err := procmem.ResetPeak(procmem.Self); err != nil {
					b.Fatal(err)
				}
				startRSS, err := procmem.Status(procmem.Self, "VmRSS")
				if err != nil {
					b.Fatal(err)
				}
				stopHeap := make(chan struct{})
				heapPeak := make(chan uint64, 1)
				go func() {
					var peak uint64
					var ms runtime.MemStats
					tick := time.NewTicker(100 * time.Millisecond)
					defer tick.Stop()
					for {
						select {
						case <-stopHeap:
							heapPeak <- peak
							return
						case <-tick.C:
							runtime.ReadMemStats(&ms)
							peak = max(peak, ms.HeapInuse)
						}
					}
				}()
				b.StartTimer()
				start := time.Now()
				cpu0 := procmem.CPU(procmem.Self)
				db0 := storetest.BackendCPU(ctx, app.Store)
				io0 := selfIO(b)
				if err := run.NDJSON(in, "synthea.ndjson"); err != nil {
					b.Fatal(err)
				}
				sum, err := run.Finish("done")
				el := time.Since(start)
				cpu := procmem.CPU(procmem.Self) - cpu0
				io1 := selfIO(b)
				b.StopTimer()
				dbCPU := storetest.BackendCPU(ctx, app.Store) - db0
				close(stopHeap)
				heap := <-heapPeak
				in.Close()
				if err != nil {
					b.Fatal(err)
				}
				if sum.Created != total || sum.Rejected != 0 {
					b.Fatalf("created %d of %d, rejected %d", sum.Created, total, sum.Rejected)
				}
				b.ReportMetric(float64(total)/el.Seconds(), "resources/s")
				b.ReportMetric(float64(total)/cpu.Seconds(), "resources/cpu-s")
				peakRSS, err := procmem.Peak(procmem.Self)
				if err != nil {
					b.Fatal(err)
				}
				anon, _ := procmem.Status(procmem.Self, "RssAnon")
				file, _ := procmem.Status(procmem.Self, "RssFile")
				b.ReportMetric(float64(peakRSS)/(1<<20), "peakRSS-MiB")
				b.ReportMetric(float64(startRSS)/(1<<20), "startRSS-MiB")
				b.ReportMetric(float64(heap)/(1<<20), "peakHeap-MiB")
				b.ReportMetric(float64(io1["wchar"]-io0["wchar"])/(1<<20), "written-MiB")
				b.ReportMetric(float64(io1["rchar"]-io0["rchar"])/(1<<20), "read-MiB")
				if dbCPU > 0 {
					b.ReportMetric(float64(total)/(cpu+dbCPU).Seconds(), "resources/cpu-s-with-db")
				}
				rows, size := storeSize(b, ctx, app.Store)
				b.ReportMetric(float64(rows), "index-rows")
				b.ReportMetric(float64(size)/(1<<20), "db-MiB")
				b.Logf("%s: %d resources in %v (%v CPU of this process, %v of the database server's backends): %.0f resources/s, %.0f resources per CPU-second, peak RSS %d MiB (from %d MiB at the start; SQLite's page cache and mmap included; after: anon %d MiB, file %d MiB), peak Go heap %d MiB",
					d, total, el.Round(time.Millisecond), cpu.Round(time.Millisecond), dbCPU, float64(total)/el.Seconds(), float64(total)/cpu.Seconds(), peakRSS>>20, startRSS>>20, anon>>20, file>>20, heap>>20)
				b.StartTimer()
			}
		})
	}
}

// benchSQL runs the statements of PHR_BENCH_SQL (separated by ";") on the
// fresh store before the import, outside the measured time: what an index
// costs the import, for example, is the difference the benchmark shows
// with PHR_BENCH_SQL='DROP INDEX idx_ref_target'. Such a store is for
// measuring only.
func benchSQL(ctx context.Context, db *sqldb.DB) error {
	for _, q := range strings.Split(os.Getenv("PHR_BENCH_SQL"), ";") {
		if strings.TrimSpace(q) == "" {
			continue
		}
		if _, err := db.Exec(ctx, q); err != nil {
			return fmt.Errorf("PHR_BENCH_SQL: %s: %w", q, err)
		}
	}
	return nil
}

// storeSize returns the number of search index rows in a store and the
// size of its database (SQLite: the pages of the main file, after a WAL
// checkpoint; PostgreSQL: pg_database_size), which load-independent
// comparisons of the index's cost rest on.
func storeSize(b *testing.B, ctx context.Context, db *sqldb.DB) (rows, size int64) {
	b.Helper()
	for _, t := range []string{"idx_token", "idx_string", "idx_date", "idx_ref", "idx_quantity", "idx_number", "idx_uri", "idx_composite"} {
		var n int64
		if err := db.QueryRow(ctx, "SELECT COUNT(*) FROM "+t).Scan(&n); err != nil {
			b.Fatalf("count %s: %v", t, err)
		}
		rows += n
	}
	q := `SELECT pg_database_size(current_database())`
	if db.SQLDialect() == sqldb.SQLite {
		if _, err := db.Exec(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
			b.Fatalf("checkpoint: %v", err)
		}
		q = `SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()`
	}
	if err := db.QueryRow(ctx, q).Scan(&size); err != nil {
		b.Fatalf("database size: %v", err)
	}
	return rows, size
}

// selfIO returns the counters of /proc/self/io (rchar, wchar, syscr...).
func selfIO(b *testing.B) map[string]int64 {
	b.Helper()
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Fatalf("read I/O counters: %v", err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err == nil {
			out[k] = n
		}
	}
	return out
}
