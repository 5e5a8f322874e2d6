// Package importer brings exports a person receives (Bulk Data NDJSON,
// FHIR Bundles, .phr and .sphr files) into the record and merges them like
// branches of a repository, following ../shared/specs/sync-and-merge.md:
//
//   - every import is a batch (the commit) with a source;
//   - an identity map per source maps (source, type, source id) to the
//     local id; other sources' resources are matched by business identifier;
//   - references (Type/id, urn:uuid:, conditional Type?identifier=...) are
//     rewritten through the map;
//   - an incoming resource equal to the current version writes nothing, a
//     newer one from the same source supplements (a new version), anything
//     else is kept as a conflict with both sides until a person resolves it;
//   - every version written carries meta.source and is cited by a
//     Provenance of its batch; invalid input is reported with its line
//     number and kept verbatim in quarantine.
//
// Input is read as a stream and written in chunks of up to a thousand
// versions per transaction, so memory stays flat and a crash loses no committed
// work: running the same import again completes it without duplicates.
package importer

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/gcbudget"
	"github.com/phr-project/phr/internal/procs"
	"github.com/phr-project/phr/internal/records"
	"github.com/phr-project/phr/internal/shc"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// Matcher finds current resources by FHIR search (the records Matcher);
// the importer uses it for conditional references and identifier matches
// its own tables do not answer.
type Matcher = records.Matcher

// Importer imports files into the record.
type Importer struct {
	db  *sqldb.DB
	rec *records.Service
	// Matcher, when set, resolves what the importer's own identity tables
	// cannot (resources written outside imports).
	Matcher Matcher
	// CardKeys finds the keys that SMART Health Cards are checked with
	// (see healthCards); nil imports cards with a warning that their
	// signatures were not checked.
	CardKeys shc.Keys
	// ChunkSize is the number of input resources processed and written per
	// transaction. A transaction rewrites every index page it touches into
	// the WAL (SQLite), so fewer, larger ones write less: 1,000 instead of
	// 500 wrote 29% fewer bytes and read 22% fewer importing 60 Synthea
	// patients, at the same peak RSS. New sets 2,000 on SQLite (see
	// sqliteChunks) and 1,000 on PostgreSQL.
	ChunkSize int
	// ChunkBytes ends a chunk early once its resources' input text
	// reaches this many bytes, so that a chunk of large resources takes
	// no more memory than one of typical ones (two chunks are in memory
	// at a time: one written, the next prepared). New sets 4 MiB on
	// SQLite and 2 MiB on PostgreSQL.
	ChunkBytes int
	// Workers is the parallelism of parsing and validation (a run that
	// only validates uses all CPUs). New sets 1 on SQLite, where the
	// single writer is the bottleneck: a second worker only took CPU from
	// it (the writer waited about 2 of 13 s for a CPU in a trace of the
	// Synthea import), and one imported 5% more resources per second
	// (tools/loadtest/ab.sh, 10 of 10 alternated pairs); 2 on PostgreSQL,
	// whose writers are server processes.
	Workers int

	// writers is how many chunks are written at a time (see writers).
	writers int

	cacheMu sync.Mutex
}

// New returns an Importer writing through rec's validation and indexing
// into db.
func New(db *sqldb.DB, rec *records.Service) *Importer {
	imp := &Importer{db: db, rec: rec, ChunkSize: 1000, ChunkBytes: 2 << 20, Workers: 2, writers: writers(db)}
	if db != nil && db.SQLDialect() == sqldb.SQLite {
		imp.ChunkSize, imp.ChunkBytes = sqliteChunks()
		imp.Workers = 1
	}
	return imp
}

// sqliteChunks are the chunks on SQLite: 2,000 resources or 4 MiB. A
// chunk's transaction dirties about 5,000 pages, most of them leaves of
// indexes with random keys (reference targets, identity map, digests)
// that the next chunk dirties again, so half as many transactions write
// them to the WAL half as often. For the 120 Synthea patients against
// 1,000 or 2 MiB (WAL checkpoints every 256 MiB, 16 MiB writer cache; five
// runs each, alternating, on a shared machine): 2.35 instead of 3.31 GB
// written, 2.6-3.7 instead of 3.5-4.7 GB read, 3,100-4,400 instead of
// 2,200-4,000 resources/s and 3,300-4,000 instead of 2,850-3,900 per
// CPU-second, peak RSS 245-253 instead of 237-248 MiB. (With checkpoints
// every 64 MiB, such chunks had cost more CPU than 1,000.)
func sqliteChunks() (size, bytes int) { return 2000, 4 << 20 }

// Options describe one import.
type Options struct {
	// Source names where the data came from (a label or URL). It becomes
	// meta.source (as a URI) of every version written.
	Source string
	// Filename is the name of the uploaded or read file, for the log.
	Filename string
	// Validate checks and reports but writes nothing (mode=validate).
	Validate bool
	// Report receives each problem as it is found (may be nil). It is
	// called from one goroutine at a time.
	Report func(fhir.Issue)
}

// Summary counts what an import did.
type Summary struct {
	Batch     int64  `json:"batch"`
	Source    string `json:"source"`
	Created   int    `json:"created"`
	Updated   int    `json:"updated"`
	Unchanged int    `json:"unchanged"`
	Conflicts int    `json:"conflicts"`
	Rejected  int    `json:"rejected"`
	Deleted   int    `json:"deleted"`
	Warnings  int    `json:"warnings"`
	// Resources is the number of input resources read.
	Resources int `json:"resources"`
	// Bytes is the number of input bytes read.
	Bytes int64 `json:"bytes"`
}

// SourceURI turns a source label into the URI written to meta.source:
// URLs and URNs stay as they are, other labels become urn:phr:source:label.
func SourceURI(label string) string {
	label = strings.TrimSpace(label)
	if label == "" {
		return "urn:phr:source:unknown"
	}
	if u, err := url.Parse(label); err == nil && u.Scheme != "" && (u.Host != "" || u.Opaque != "") {
		return strings.TrimSuffix(label, "/")
	}
	var b strings.Builder
	for _, r := range label {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.', r == '_', r == ':':
			b.WriteRune(r)
		default:
			b.WriteString(url.PathEscape(string(r)))
		}
	}
	return "urn:phr:source:" + b.String()
}

// Run is one running import (a batch): feed it files with NDJSON, Bundle
// or Zip, then Finish.
type Run struct {
	imp     *Importer
	ctx     context.Context
	p       access.Principal
	o       Options
	source  string
	sum     Summary
	started time.Time
	// readable caches mayMatch's answers (a patient-scoped run only).
	readable map[string]bool
	// ownPatient is the token's own Patient (a patient-scoped run), read
	// once matchOwnPatient needs it (ownLoaded); nil when there is none.
	ownPatient *fhirjson.Value
	ownLoaded  bool
	// deletedHere are the local "Type/id" this run deleted: a later
	// version from the source (a history Bundle's, after the deletion)
	// brings one back, where a resource deleted before the run stays
	// deleted.
	deletedHere map[string]bool
	// accepted are the local "Type/id" this patient-scoped run is writing,
	// having passed records' checks (records.Pending): its documents may
	// point at its Binaries before they are committed. Bounded
	// (maxAccepted); past it, only what is committed counts.
	accepted map[string]bool
	// cache of resolved identities and reference targets: key
	// "Type/sourceId" -> local id.
	ids map[string]string
	// own are the "Type/id" of items this run recognised as versions of
	// the record's own resources (see recogniseOwn): a later version of
	// one, in a history Bundle, is checked in the same way.
	own map[string]bool
	// agreed maps the local "Type/id" of the resources whose current
	// version this run found to say what the source says to that version
	// (see item.agreed): a later item for one of them from the source
	// updates it while that version is current.
	agreed map[string]int64
	// cond caches conditional reference resolutions ("Type?query" -> "Type/id").
	cond map[string]string
	// fileName is the file being read, for reports.
	fileName string
	lastAt   time.Time
	// attach reads a file of the archive being imported that an
	// attachment names by relative URL (nil outside archives).
	attach func(url string) ([]byte, bool, error)
	// stopBeat ends the heartbeat goroutine (nil when none runs).
	stopBeat chan struct{}
	// scope receives the items deferred for forward references: the
	// current Bundle's, else runScope (replayed by Complete).
	scope, runScope *deferScope
	// replaying is set while deferred items are processed; replayed is
	// their scope.
	replaying bool
	replayed  *deferScope
	// fls are the chunks being written in the background, oldest first
	// (see startWrite).
	fls []*flight
	// fresh says whether the source is new to the database (fresh.go).
	fresh freshState
	// attempt is set while a chunk is merged again (see redo): how many
	// times its write lost a race.
	attempt int
	// bulkDone ends the run's claim on all CPUs (package procs).
	bulkDone func()
}

// ImportMemoryLimit is the garbage collector's soft memory limit while an
// import into PostgreSQL runs (package gcbudget; where the server tunes its
// collector). An import's goal is a peak RSS under 300 MB; on PostgreSQL
// the Go heap is nearly all of it. The live heap of such an import is
// about 60 MB, and the collector runs whenever the heap reaches the limit:
// at 128 MiB the 120 Synthea patients imported about 5% slower than at 192
// MiB, and at 192 MiB (peak RSS 206 MiB) about 1% slower than at this
// limit (peak RSS 236 MiB).
const ImportMemoryLimit = 224 << 20

// SQLiteImportMemoryLimit is ImportMemoryLimit for an import into SQLite,
// where the process holds the database's page caches too: with the
// server's 128 MiB the Synthea import's peak RSS was about 230 MiB, with
// this limit 260 MiB, and it imported 6.5% faster (7,986 -> 8,510
// resources/s, medians of 3 alternated pairs). At 176 MiB it was faster
// still, but its peak RSS of 275 MiB left too little room under the goal.
const SQLiteImportMemoryLimit = 160 << 20

// Begin starts an import batch for the principal in ctx.
func (imp *Importer) Begin(ctx context.Context, o Options) (*Run, error) {
	p := access.From(ctx)
	if p == nil {
		return nil, &fhir.Error{Status: 401, Issues: []fhir.Issue{{Severity: "error", Code: "login", Diagnostics: "authentication required"}}}
	}
	if !p.Allows(access.Create, "Provenance") {
		return nil, fhir.Forbidden("importing needs permission to create resources (and Provenance)")
	}
	r := &Run{imp: imp, ctx: ctx, p: p, o: o, source: SourceURI(o.Source), started: time.Now().UTC(),
		ids: map[string]string{}, own: map[string]bool{}, agreed: map[string]int64{}, cond: map[string]string{}, deletedHere: map[string]bool{}, accepted: map[string]bool{}}
	r.sum.Source = r.source
	// An import is bulk work: it runs with all CPUs until Finish, and
	// with a larger Go heap (see ImportMemoryLimit).
	limit := int64(SQLiteImportMemoryLimit)
	if imp.db.SQLDialect() == sqldb.Postgres {
		limit = ImportMemoryLimit
	}
	procsDone, memDone := procs.Bulk(), gcbudget.Raise(limit)
	r.bulkDone = sync.OnceFunc(func() { procsDone(); memDone() })
	r.runScope = newScope()
	r.scope = r.runScope
	if o.Validate {
		return r, nil
	}
	mode := "merge"
	id, err := imp.insertBatch(ctx, r.source, o.Filename, mode, p.Subject(), p.Patient(), r.started)
	if err != nil {
		r.bulkDone()
		return nil, err
	}
	r.sum.Batch = id
	if err := r.beginFresh(ctx); err != nil {
		r.bulkDone()
		return nil, err
	}
	r.stopBeat = make(chan struct{})
	go r.heartbeat(r.stopBeat)
	return r, nil
}

// Summary returns the counts so far.
func (r *Run) Summary() Summary { return r.sum }

// Finish records the batch's end and counts.
func (r *Run) Finish(status string) (Summary, error) {
	defer r.bulkDone()
	var cerr error
	if status == "done" {
		if cerr = r.Complete(); cerr != nil {
			status = "failed"
		}
	}
	if err := r.settle(); err != nil && cerr == nil {
		// Only a run that stopped early still writes here, and it failed.
		cerr = err
		if status == "done" {
			status = "failed"
		}
	}
	r.discard()
	if r.o.Validate || r.sum.Batch == 0 {
		return r.sum, cerr
	}
	if r.stopBeat != nil {
		close(r.stopBeat)
		r.stopBeat = nil
	}
	ctx := context.WithoutCancel(r.ctx)
	_, err := r.imp.db.Exec(ctx, `UPDATE import_batch SET finished = ?, status = ?, created = ?, updated = ?, unchanged = ?, conflicts = ?, rejected = ?, deleted = ? WHERE id = ?`,
		sqldb.Micros(time.Now()), status, r.sum.Created, r.sum.Updated, r.sum.Unchanged, r.sum.Conflicts, r.sum.Rejected, r.sum.Deleted, r.sum.Batch)
	if err != nil {
		return r.sum, fmt.Errorf("record import batch %d: %w", r.sum.Batch, err)
	}
	return r.sum, cerr
}

// report sends an issue to the caller.
func (r *Run) report(is fhir.Issue) {
	if is.Severity == "warning" || is.Severity == "information" {
		r.sum.Warnings++
	}
	if r.o.Report != nil {
		r.o.Report(is)
	}
}

func (imp *Importer) insertBatch(ctx context.Context, source, filename, mode, subject, patient string, at time.Time) (int64, error) {
	var id int64
	err := imp.db.WriteTx(ctx, func(tx *sqldb.Tx) error {
		return tx.QueryRow(ctx, `INSERT INTO import_batch (source, filename, mode, subject, patient, started, owner, heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			source, filename, mode, subject, patient, sqldb.Micros(at), owner, sqldb.Micros(at)).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("start import batch: %w", err)
	}
	return id, nil
}

// errAborted marks a run stopped by its context.
var errAborted = errors.New("import aborted")
