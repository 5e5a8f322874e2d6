// Package bench runs one SQLite workload shaped like the phr store against any
// database/sql SQLite driver, so that the drivers can be compared on the same machine
// with the same schema, data and access pattern. Each driver has its own main package
// beside this one because two of the candidates register the same driver name.
package bench

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Driver describes how to open one driver: its registered name and how to build a DSN
// that sets the same pragmas as the others (each driver spells them differently).
type Driver struct {
	// Name is a label for reports.
	Name string
	// SQLName is the name the driver registers with database/sql.
	SQLName string
	// DSN returns the data source name for the database file at path with the given
	// pragmas and immediate transactions, so a write transaction takes the lock up front.
	DSN func(path string, pragmas []Pragma) string
}

// Pragma is one PRAGMA name and value, set on every connection through the DSN.
type Pragma struct{ Name, Value string }

// Config is the workload size; the defaults match the README figures.
type Config struct {
	Resources      int           // resources to insert
	Batch          int           // resources per write transaction
	Group          int           // resources per multi-row INSERT (1: one row per statement)
	Readers        int           // goroutines doing point reads
	ReadFor        time.Duration // how long the read phase runs
	CountRounds    int           // repetitions of each count query
	CacheKiB       int           // SQLite page cache per connection, in KiB
	Synchronous    string        // PRAGMA synchronous (NORMAL is what the store will use with WAL)
	TempStore      string        // PRAGMA temp_store
	Clustered      bool          // index tables WITHOUT ROWID, keyed by the search columns
	NoIndex        bool          // insert only resource rows, to show what the index rows cost
	PageSize       int           // PRAGMA page_size, set before the database is created
	AutoCheckpoint int           // PRAGMA wal_autocheckpoint, in pages
	MmapBytes      int64         // PRAGMA mmap_size: read through a memory map shared by all connections
	Dir            string        // where the database file goes (a temp dir when empty)
}

// Result holds the measured figures of one run.
type Result struct {
	Driver     string
	Resources  int
	IndexRows  int
	InsertTime time.Duration // wall time spent in insert transactions
	InsertCPU  time.Duration // process CPU time (user+system) of the insert phase
	InsertSys  time.Duration // the system (kernel) part of InsertCPU
	Reads      int
	ReadTime   time.Duration
	ReadCPU    time.Duration // process CPU time (user+system) of the read phase
	ReadP50    time.Duration
	ReadP99    time.Duration
	Counts     []Timing // mean time of each count query
	FileBytes  int64
}

// Timing is the mean duration of one named query.
type Timing struct {
	Name string
	Mean time.Duration
}

// InsertsPerSec is the ingest rate in resources (each with its index rows) per second.
func (r Result) InsertsPerSec() float64 { return float64(r.Resources) / r.InsertTime.Seconds() }

// ReadsPerSec is the point-read rate over all readers.
func (r Result) ReadsPerSec() float64 { return float64(r.Reads) / r.ReadTime.Seconds() }

// Main parses flags, runs the workload for d and prints a result line; it is the whole
// body of each per-driver main package.
func Main(d Driver) {
	cfg := Config{}
	flag.IntVar(&cfg.Resources, "n", 100_000, "resources to insert")
	flag.IntVar(&cfg.Batch, "batch", 1000, "resources per transaction")
	flag.IntVar(&cfg.Group, "group", 25, "resources per multi-row INSERT statement (1: one row per execution)")
	flag.IntVar(&cfg.Readers, "readers", 16, "concurrent readers")
	flag.DurationVar(&cfg.ReadFor, "readfor", 5*time.Second, "duration of the read phase")
	flag.IntVar(&cfg.CountRounds, "counts", 20, "repetitions of each count query")
	flag.IntVar(&cfg.CacheKiB, "cache", 16384, "page cache per connection in KiB (SQLite's default is 2000)")
	flag.StringVar(&cfg.Synchronous, "sync", "NORMAL", "PRAGMA synchronous value")
	flag.StringVar(&cfg.TempStore, "temp", "MEMORY", "PRAGMA temp_store value")
	flag.BoolVar(&cfg.Clustered, "clustered", false, "make the index tables WITHOUT ROWID, clustered on their search key")
	flag.BoolVar(&cfg.NoIndex, "noindex", false, "insert resource rows only (no index rows; the count phase is skipped)")
	flag.IntVar(&cfg.PageSize, "pagesize", 4096, "PRAGMA page_size for the new database")
	flag.IntVar(&cfg.AutoCheckpoint, "autocheckpoint", 10000, "PRAGMA wal_autocheckpoint in pages (SQLite's default is 1000)")
	flag.Int64Var(&cfg.MmapBytes, "mmap", 0, "PRAGMA mmap_size in bytes (0: read with pread into each connection's page cache)")
	flag.StringVar(&cfg.Dir, "dir", "", "directory for the database file (default: a temp dir)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", d.Name, err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "%s: start profile: %v\n", d.Name, err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	res, err := Run(context.Background(), d, cfg)
	if err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintf(os.Stderr, "%s: %v\n", d.Name, err)
		os.Exit(1)
	}
	fmt.Printf("driver=%s go=%s cpus=%d resources=%d index_rows=%d db_mb=%.0f cache_kib=%d sync=%s temp_store=%s page_size=%d autocheckpoint=%d mmap=%d clustered=%v\n",
		res.Driver, runtime.Version(), runtime.NumCPU(), res.Resources, res.IndexRows, float64(res.FileBytes)/1e6, cfg.CacheKiB, cfg.Synchronous, cfg.TempStore, cfg.PageSize, cfg.AutoCheckpoint, cfg.MmapBytes, cfg.Clustered)
	fmt.Printf("  insert: %.0f resources/s (%.0f index rows/s) in %v, group %d; CPU %v = %.0f µs/resource (%.0f%% kernel)\n",
		res.InsertsPerSec(), float64(res.IndexRows)/res.InsertTime.Seconds(), res.InsertTime.Round(time.Millisecond), cfg.Group,
		res.InsertCPU.Round(time.Millisecond), float64(res.InsertCPU.Microseconds())/float64(res.Resources),
		100*res.InsertSys.Seconds()/res.InsertCPU.Seconds())
	fmt.Printf("  read:   %.0f reads/s, p50 %v, p99 %v (%d readers, %d reads); CPU %.1f µs/read\n",
		res.ReadsPerSec(), res.ReadP50.Round(time.Microsecond), res.ReadP99.Round(time.Microsecond), cfg.Readers, res.Reads,
		float64(res.ReadCPU.Microseconds())/float64(max(res.Reads, 1)))
	fmt.Printf("  count: ")
	for _, c := range res.Counts {
		fmt.Printf(" %s %v;", c.Name, c.Mean.Round(time.Microsecond))
	}
	fmt.Printf(" (mean of %d)\n", cfg.CountRounds)
	fmt.Printf("  memory: max RSS %.0f MB\n", float64(maxRSS())/1e6)
}

const schema = `
CREATE TABLE resource_version (
  rid          INTEGER PRIMARY KEY,
  type         TEXT    NOT NULL,
  id           TEXT    NOT NULL,
  version      INTEGER NOT NULL,
  last_updated INTEGER NOT NULL,
  deleted      INTEGER NOT NULL DEFAULT 0,
  json         BLOB    NOT NULL,
  UNIQUE (type, id, version)
);
`

// rowidIndexes are index tables as heaps with a secondary index: every index row
// costs two B-tree inserts (the table and its index).
const rowidIndexes = `
CREATE TABLE idx_token (
  rid    INTEGER NOT NULL,
  param  TEXT    NOT NULL,
  system TEXT    NOT NULL,
  code   TEXT    NOT NULL
);
CREATE INDEX idx_token_code ON idx_token (param, code, system);
CREATE TABLE idx_string (
  rid   INTEGER NOT NULL,
  param TEXT    NOT NULL,
  value TEXT    NOT NULL
);
CREATE INDEX idx_string_value ON idx_string (param, value);
CREATE TABLE idx_date (
  rid   INTEGER NOT NULL,
  param TEXT    NOT NULL,
  lo    INTEGER NOT NULL,
  hi    INTEGER NOT NULL
);
CREATE INDEX idx_date_lo ON idx_date (param, lo, hi);
`

// clusteredIndexes are the same index tables WITHOUT ROWID, clustered on the search
// key: one B-tree insert per index row.
const clusteredIndexes = `
CREATE TABLE idx_token (
  param  TEXT    NOT NULL,
  code   TEXT    NOT NULL,
  system TEXT    NOT NULL,
  rid    INTEGER NOT NULL,
  PRIMARY KEY (param, code, system, rid)
) WITHOUT ROWID;
CREATE TABLE idx_string (
  param TEXT    NOT NULL,
  value TEXT    NOT NULL,
  rid   INTEGER NOT NULL,
  PRIMARY KEY (param, value, rid)
) WITHOUT ROWID;
CREATE TABLE idx_date (
  param TEXT    NOT NULL,
  lo    INTEGER NOT NULL,
  hi    INTEGER NOT NULL,
  rid   INTEGER NOT NULL,
  PRIMARY KEY (param, lo, hi, rid)
) WITHOUT ROWID;
`

// Index rows per resource: tokens, strings and dates add up to 20.
const (
	tokensPer  = 10
	stringsPer = 5
	datesPer   = 5
)

var types = []string{"Observation", "Condition", "Encounter", "Procedure", "MedicationRequest",
	"DiagnosticReport", "Immunization", "Claim", "ExplanationOfBenefit", "Patient"}

// Run creates a fresh database, inserts cfg.Resources resources in batches, then runs the
// read and count phases.
func Run(ctx context.Context, d Driver, cfg Config) (Result, error) {
	res := Result{Driver: d.Name, Resources: cfg.Resources}
	dir := cfg.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "sqlitebench-")
		if err != nil {
			return res, fmt.Errorf("temp dir: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	path := filepath.Join(dir, d.Name+".db")
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(path + suffix); err != nil && !os.IsNotExist(err) {
			return res, fmt.Errorf("remove old database: %w", err)
		}
	}

	// page_size only takes effect on an empty database before it switches to WAL, and
	// modernc sorts DSN pragmas by name, so create the database first, by hand.
	if err := create(ctx, d, path, cfg.PageSize, cfg.Clustered); err != nil {
		return res, err
	}
	pragmas := []Pragma{{"journal_mode", "WAL"},
		{"wal_autocheckpoint", strconv.Itoa(cfg.AutoCheckpoint)}, {"synchronous", cfg.Synchronous},
		{"busy_timeout", "5000"}, {"cache_size", strconv.Itoa(-cfg.CacheKiB)},
		// Multi-row INSERTs need a statement journal; on disk it costs a write syscall
		// per page, so keep it (and other temporary data) in memory.
		{"temp_store", cfg.TempStore}, {"mmap_size", strconv.FormatInt(cfg.MmapBytes, 10)}}
	// One writer connection, as the store will have: SQLite serialises writers anyway.
	w, err := sql.Open(d.SQLName, d.DSN(path, pragmas))
	if err != nil {
		return res, fmt.Errorf("open writer: %w", err)
	}
	defer w.Close()
	w.SetMaxOpenConns(1)
	var mode string
	if err := w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return res, fmt.Errorf("read journal_mode: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return res, fmt.Errorf("journal_mode is %q, want wal: the DSN did not apply the pragma", mode)
	}

	var ps int
	if err := w.QueryRowContext(ctx, "PRAGMA page_size").Scan(&ps); err != nil {
		return res, fmt.Errorf("read page_size: %w", err)
	}
	if ps != cfg.PageSize {
		return res, fmt.Errorf("page_size is %d, want %d: the DSN did not apply the pragma", ps, cfg.PageSize)
	}
	cpu0, sys0 := cpuTime(), sysTime()
	n, spent, err := insertAll(ctx, w, cfg)
	if err != nil {
		return res, err
	}
	res.InsertCPU = cpuTime() - cpu0
	res.InsertSys = sysTime() - sys0
	res.InsertTime = spent
	res.IndexRows = n

	r, err := sql.Open(d.SQLName, d.DSN(path, pragmas))
	if err != nil {
		return res, fmt.Errorf("open readers: %w", err)
	}
	defer r.Close()
	r.SetMaxOpenConns(cfg.Readers)
	r.SetMaxIdleConns(cfg.Readers)
	if err := readPhase(ctx, r, cfg, &res); err != nil {
		return res, err
	}
	if !cfg.NoIndex {
		if err := countPhase(ctx, r, cfg, &res); err != nil {
			return res, err
		}
	}
	if fi, err := os.Stat(path); err == nil {
		res.FileBytes = fi.Size()
	}
	return res, nil
}

// create makes the database file with the given page size, in WAL mode, with the schema.
func create(ctx context.Context, d Driver, path string, pageSize int, clustered bool) error {
	indexes := rowidIndexes
	if clustered {
		indexes = clusteredIndexes
	}
	db, err := sql.Open(d.SQLName, d.DSN(path, nil))
	if err != nil {
		return fmt.Errorf("open to create: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, q := range []string{"PRAGMA page_size = " + strconv.Itoa(pageSize), "PRAGMA journal_mode = WAL", schema, indexes} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("create database: %s: %w", strings.Fields(q)[:2], err)
		}
	}
	return db.Close()
}

// cpuTime is the user plus system CPU time of this process so far. On a shared machine it
// is steadier than wall time, since other load delays us without adding to it.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// dateValue is the k-th date (Unix seconds) of resource i, spread evenly over about 13
// years so that a range query selects a predictable share of the resources.
func dateValue(i, k int) int64 {
	return 1_300_000_000 + int64((uint64(i)*2654435761+uint64(k)*40503)%400_000_000)
}

// maxRSS is the peak resident set size of this process in bytes.
func maxRSS() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss * 1024 // Linux reports KiB
}

// sysTime is the system (kernel) CPU time of this process so far.
func sysTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Stime.Nano())
}

// resourceID is the id of the i-th resource; readers recompute it to pick random keys.
func resourceID(i int) (typ, id string) {
	return types[i%len(types)], fmt.Sprintf("%08x-%04x-4%03x", uint32(i)*2654435761, i%65536, i%4096)
}

// resourceJSON builds a ~2.3 KB Observation-like document that differs per resource.
func resourceJSON(buf []byte, i int, rng *rand.Rand) []byte {
	typ, id := resourceID(i)
	buf = buf[:0]
	buf = fmt.Appendf(buf, `{"resourceType":%q,"id":%q,"meta":{"versionId":"1","lastUpdated":"2024-03-%02dT10:%02d:00Z"},"status":"final",`,
		typ, id, 1+i%28, i%60)
	buf = append(buf, `"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory","display":"Laboratory"}]}],`...)
	buf = fmt.Appendf(buf, `"code":{"coding":[{"system":"http://loinc.org","code":"%d-%d","display":"Analyte number %d in serum or plasma"}],"text":"Analyte %d"},`,
		1000+i%5000, i%10, i%5000, i%5000)
	buf = fmt.Appendf(buf, `"subject":{"reference":"Patient/%08x"},"encounter":{"reference":"Encounter/%08x"},`, i%1000, i%20000)
	buf = fmt.Appendf(buf, `"effectiveDateTime":"20%02d-%02d-%02dT%02d:%02d:00Z","issued":"2024-01-01T00:00:00.000Z",`,
		10+i%14, 1+i%12, 1+i%28, i%24, i%60)
	buf = fmt.Appendf(buf, `"valueQuantity":{"value":%d.%03d,"unit":"mg/dL","system":"http://unitsofmeasure.org","code":"mg/dL"},`,
		rng.IntN(500), rng.IntN(1000))
	buf = append(buf, `"note":[{"text":"`...)
	for len(buf) < 2200 {
		buf = strconv.AppendUint(buf, rng.Uint64(), 36)
		buf = append(buf, ' ')
	}
	buf = append(buf, `"}],"interpretation":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation","code":"N"}]}]}`...)
	return buf
}

// insertAll inserts every resource and returns the number of index rows written. Only the
// database work is timed: the documents of a batch are generated before its transaction.
func insertAll(ctx context.Context, db *sql.DB, cfg Config) (int, time.Duration, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	docs := make([][]byte, cfg.Batch)
	rows := 0
	var spent time.Duration
	for base := 0; base < cfg.Resources; base += cfg.Batch {
		end := min(base+cfg.Batch, cfg.Resources)
		for i := base; i < end; i++ {
			docs[i-base] = resourceJSON(docs[i-base], i, rng)
		}
		t0 := time.Now()
		n, err := insertBatch(ctx, db, base, end, docs, cfg.Group, !cfg.NoIndex)
		spent += time.Since(t0)
		if err != nil {
			return rows, spent, fmt.Errorf("insert batch at resource %d: %w", base, err)
		}
		rows += n
	}
	return rows, spent, nil
}

var (
	tokParams  = []string{"code", "category", "status", "identifier", "combo-code", "interpretation", "_tag", "_security", "value-concept", "method"}
	strParams  = []string{"name", "family", "given", "address", "text"}
	dateParams = []string{"date", "issued", "_lastUpdated", "onset", "recorded"}
)

// multiRow returns "INSERT ... VALUES (?,..),(?,..)" with rows tuples of cols placeholders.
func multiRow(head string, cols, rows int) string {
	var b strings.Builder
	b.WriteString(head)
	b.WriteString(" VALUES ")
	tuple := "(" + strings.Repeat("?, ", cols-1) + "?)"
	for r := range rows {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteString(tuple)
	}
	return b.String()
}

// stmts are the four prepared inserts for a group of g resources.
type stmts struct {
	res, tok, str, date *sql.Stmt
}

// prepareGroup prepares the inserts for g resources per execution; g = 0 prepares
// single-row statements.
func prepareGroup(ctx context.Context, tx *sql.Tx, g int) (stmts, error) {
	per := [4]int{g, g * tokensPer, g * stringsPer, g * datesPer}
	if g == 0 {
		per = [4]int{1, 1, 1, 1}
	}
	var s stmts
	var err error
	for _, p := range []struct {
		dst        **sql.Stmt
		head       string
		cols, rows int
	}{
		{&s.res, "INSERT INTO resource_version (rid, type, id, version, last_updated, json)", 6, per[0]},
		{&s.tok, "INSERT INTO idx_token (rid, param, system, code)", 4, per[1]},
		{&s.str, "INSERT INTO idx_string (rid, param, value)", 3, per[2]},
		{&s.date, "INSERT INTO idx_date (rid, param, lo, hi)", 4, per[3]},
	} {
		if *p.dst, err = tx.PrepareContext(ctx, multiRow(p.head, p.cols, p.rows)); err != nil {
			return s, fmt.Errorf("prepare %s: %w", p.head, err)
		}
	}
	return s, nil
}

// insertBatch writes resources [from, to) in one transaction. group is how many
// resources share one multi-row INSERT per table; 1 means one row per statement
// execution (21 executions per resource).
func insertBatch(ctx context.Context, db *sql.DB, from, to int, docs [][]byte, group int, index bool) (int, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	if group <= 1 && index {
		return insertRows(ctx, tx, from, to, docs)
	}
	group = max(group, 1)
	full, err := prepareGroup(ctx, tx, group)
	if err != nil {
		return 0, err
	}
	rows := 0
	now := time.Now().UnixMicro()
	var resArgs, tokArgs, strArgs, dateArgs []any
	for g0 := from; g0 < to; g0 += group {
		g1 := min(g0+group, to)
		st := full
		if g1-g0 != group {
			if st, err = prepareGroup(ctx, tx, g1-g0); err != nil {
				return rows, err
			}
		}
		resArgs, tokArgs, strArgs, dateArgs = resArgs[:0], tokArgs[:0], strArgs[:0], dateArgs[:0]
		for i := g0; i < g1; i++ {
			typ, id := resourceID(i)
			rid := int64(i + 1)
			resArgs = append(resArgs, rid, typ, id, 1, now, docs[i-from])
			for k, p := range tokParams[:tokensPer] {
				tokArgs = append(tokArgs, rid, p, "http://loinc.org", strconv.Itoa(1000+(i+k)%5000))
			}
			for k, p := range strParams[:stringsPer] {
				strArgs = append(strArgs, rid, p, fmt.Sprintf("value %d %d", i%7919, k))
			}
			for k, p := range dateParams[:datesPer] {
				lo := dateValue(i, k)
				dateArgs = append(dateArgs, rid, p, lo, lo+86399)
			}
		}
		for _, e := range []struct {
			st   *sql.Stmt
			args []any
		}{{st.res, resArgs}, {st.tok, tokArgs}, {st.str, strArgs}, {st.date, dateArgs}} {
			if !index && e.st != st.res {
				continue
			}
			if _, err := e.st.ExecContext(ctx, e.args...); err != nil {
				return rows, fmt.Errorf("resources %d-%d: %w", g0, g1-1, err)
			}
		}
		if index {
			rows += (g1 - g0) * (tokensPer + stringsPer + datesPer)
		}
	}
	if err := tx.Commit(); err != nil {
		return rows, fmt.Errorf("commit: %w", err)
	}
	return rows, nil
}

// insertRows is the one-row-per-execution path of insertBatch.
func insertRows(ctx context.Context, tx *sql.Tx, from, to int, docs [][]byte) (int, error) {
	st, err := prepareGroup(ctx, tx, 0)
	if err != nil {
		return 0, err
	}
	rows := 0
	now := time.Now().UnixMicro()
	for i := from; i < to; i++ {
		typ, id := resourceID(i)
		rid := int64(i + 1)
		if _, err := st.res.ExecContext(ctx, rid, typ, id, 1, now, docs[i-from]); err != nil {
			return rows, fmt.Errorf("resource %s/%s: %w", typ, id, err)
		}
		for k, p := range tokParams[:tokensPer] {
			if _, err := st.tok.ExecContext(ctx, rid, p, "http://loinc.org", strconv.Itoa(1000+(i+k)%5000)); err != nil {
				return rows, fmt.Errorf("token row: %w", err)
			}
		}
		for k, p := range strParams[:stringsPer] {
			if _, err := st.str.ExecContext(ctx, rid, p, fmt.Sprintf("value %d %d", i%7919, k)); err != nil {
				return rows, fmt.Errorf("string row: %w", err)
			}
		}
		for k, p := range dateParams[:datesPer] {
			lo := dateValue(i, k)
			if _, err := st.date.ExecContext(ctx, rid, p, lo, lo+86399); err != nil {
				return rows, fmt.Errorf("date row: %w", err)
			}
		}
		rows += tokensPer + stringsPer + datesPer
	}
	if err := tx.Commit(); err != nil {
		return rows, fmt.Errorf("commit: %w", err)
	}
	return rows, nil
}

// readPhase runs point reads by (type, id) from cfg.Readers goroutines: one second to
// warm the pool and the page caches, then cfg.ReadFor measured.
func readPhase(ctx context.Context, db *sql.DB, cfg Config, res *Result) error {
	stmt, err := db.PrepareContext(ctx, `SELECT version, json FROM resource_version WHERE type = ? AND id = ? ORDER BY version DESC LIMIT 1`)
	if err != nil {
		return fmt.Errorf("prepare read: %w", err)
	}
	defer stmt.Close()
	if _, err := readFor(ctx, stmt, cfg, time.Second); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	cpu0 := cpuTime()
	start := time.Now()
	lat, err := readFor(ctx, stmt, cfg, cfg.ReadFor)
	res.ReadTime = time.Since(start)
	res.ReadCPU = cpuTime() - cpu0
	if err != nil {
		return err
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	res.Reads = len(all)
	if len(all) > 0 {
		res.ReadP50 = all[len(all)/2]
		res.ReadP99 = all[len(all)*99/100]
	}
	return nil
}

// readFor reads random resources from cfg.Readers goroutines for d and returns each
// goroutine's latencies.
func readFor(ctx context.Context, stmt *sql.Stmt, cfg Config, d time.Duration) ([][]time.Duration, error) {
	deadline := time.Now().Add(d)
	lat := make([][]time.Duration, cfg.Readers)
	errs := make([]error, cfg.Readers)
	var wg sync.WaitGroup
	for g := range cfg.Readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
			var js []byte
			var ver int
			local := make([]time.Duration, 0, 1<<16)
			for n := 0; ; n++ {
				if n%64 == 0 && time.Now().After(deadline) {
					break
				}
				typ, id := resourceID(rng.IntN(cfg.Resources))
				t0 := time.Now()
				if err := stmt.QueryRowContext(ctx, typ, id).Scan(&ver, &js); err != nil {
					errs[g] = fmt.Errorf("read %s/%s: %w", typ, id, err)
					return
				}
				local = append(local, time.Since(t0))
				if len(js) < 2000 || js[0] != '{' {
					errs[g] = fmt.Errorf("read %s/%s: got %d bytes of json", typ, id, len(js))
					return
				}
			}
			lat[g] = local
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return lat, err
		}
	}
	return lat, nil
}

// countQueries are the indexed counts timed by countPhase: a selective token search
// (a handful of rows), a date range covering a tenth of the resources, and one type.
var countQueries = []struct {
	name string
	sql  string
	args func(k, resources int) []any
	min  func(resources int) int // fewest rows a correct database must count
}{
	{"token", `SELECT count(DISTINCT rid) FROM idx_token WHERE param = 'code' AND code = ? AND system = 'http://loinc.org'`,
		func(k, _ int) []any { return []any{strconv.Itoa(1000 + (k*131)%5000)} },
		func(n int) int { return min(n/5000, 1) }},
	{"date-range-10%", `SELECT count(DISTINCT rid) FROM idx_date WHERE param = 'date' AND lo >= ? AND lo < ?`,
		func(k, _ int) []any {
			lo := 1_300_000_000 + (k*7919)%360_000_000
			return []any{lo, lo + 40_000_000}
		},
		func(n int) int { return n / 20 }},
	{"type", `SELECT count(*) FROM resource_version WHERE type = ?`,
		func(k, _ int) []any { return []any{types[k%len(types)]} },
		func(n int) int { return n / len(types) }},
}

// countPhase times each count query cfg.CountRounds times with varying arguments and
// checks the answers are plausible, so a broken index cannot look fast.
func countPhase(ctx context.Context, db *sql.DB, cfg Config, res *Result) error {
	for _, q := range countQueries {
		var total time.Duration
		for k := range cfg.CountRounds {
			var n int
			t0 := time.Now()
			err := db.QueryRowContext(ctx, q.sql, q.args(k, cfg.Resources)...).Scan(&n)
			total += time.Since(t0)
			if err != nil {
				return fmt.Errorf("count %s: %w", q.name, err)
			}
			if want := q.min(cfg.Resources); n < want {
				return fmt.Errorf("count %s %v: got %d, want at least %d", q.name, q.args(k, cfg.Resources), n, want)
			}
		}
		res.Counts = append(res.Counts, Timing{q.name, total / time.Duration(cfg.CountRounds)})
	}
	return nil
}
