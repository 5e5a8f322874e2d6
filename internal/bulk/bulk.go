// Package bulk implements FHIR Bulk Data Access 2.0.0 $export: the
// kick-off at system, Patient and Group level, status polling with
// progress, the completion manifest, file downloads, cancellation and the
// expiry of finished exports.
//
// An export is a job in the persisted queue (package jobs), so any replica
// may run it and a crashed replica's export is run again by another. The
// export streams current resource versions from the store in pages of
// PageSize and writes NDJSON files to the blob store, one resource type
// per file, starting a new file when one reaches MaxFileResources lines or
// MaxFileBytes bytes (defaults: 100,000 resources, 128 MiB). Each file is
// named by its CIDv1 (raw, sha2-256; see package cid) in the manifest
// item's extension and can be fetched by it at [root]/ipfs/[cid].
//
// What a patient-level export includes: the resources in the selected
// patients' compartments (R4 CompartmentDefinition patient), Provenance
// whose target is such a resource, and the shared resources
// (Organization, Practitioner, Location, Medication...) that those
// resources reference through a search parameter.
package bulk

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/phr-project/phr/internal/api"
	"github.com/phr-project/phr/internal/blob"
	"github.com/phr-project/phr/internal/jobs"
	"github.com/phr-project/phr/internal/records"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// JobKind is the kind of export jobs in the queue.
const JobKind = "bulk-export"

// Options configure the Service.
type Options struct {
	DB      *sqldb.DB
	Records *records.Service
	Blobs   blob.Store
	Queue   *jobs.Queue
	Auth    api.Authenticator
	// BaseURL is the public FHIR base (ending in /fhir); the server root
	// (where /ipfs/ is served) is the part before /fhir.
	BaseURL string
	// Matcher applies _typeFilter with the search engine; without one,
	// _typeFilter is refused (400), never ignored.
	Matcher records.Matcher
	// Expiry is how long a completed export's files are kept (default 24h).
	Expiry time.Duration
	// MinPoll is the shortest interval between status polls of one export;
	// faster polls get 429 (default 500ms).
	MinPoll time.Duration
	// SweepInterval is how often expired exports are removed (default 1m).
	SweepInterval time.Duration
	// PageSize is the number of resources read per query (default 1000).
	PageSize int
	// MaxFileResources and MaxFileBytes split big types into several
	// files (defaults 100,000 and 128 MiB).
	MaxFileResources int
	MaxFileBytes     int64
	// MaxTypeFilterMatches caps the ids one _typeFilter query may select
	// (default 10,000,000).
	MaxTypeFilterMatches int
	// MaxBody caps POST kick-off bodies (default 1 MiB).
	MaxBody int64
	// Parallel is how many resource types one export writes at once
	// (default 2).
	Parallel int
	// MaxActive caps the exports one requester may have queued or running
	// at once; more get 429 + Retry-After (default 8).
	MaxActive int
	// RowDelay slows exports down by this much per resource, so that tests
	// can catch one running (kill its replica, cancel it); zero in normal
	// use. The PHR_BULK_ROW_DELAY environment variable (a duration) sets
	// it for `phr serve` processes started by such tests.
	RowDelay time.Duration
}

// Service serves $export.
type Service struct {
	o       Options
	db      *sqldb.DB
	records *records.Service
	blobs   blob.Store
	queue   *jobs.Queue
	auth    api.Authenticator
	matcher records.Matcher
	base    string
	root    string

	mu       sync.Mutex
	lastPoll map[string]time.Time
	stop     context.CancelFunc
	done     chan struct{}
}

// New returns the Service and registers its job handler with the queue.
func New(o Options) *Service {
	if o.Expiry <= 0 {
		o.Expiry = 24 * time.Hour
	}
	if o.MinPoll <= 0 {
		o.MinPoll = 500 * time.Millisecond
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = time.Minute
	}
	if o.PageSize <= 0 {
		o.PageSize = 1000
	}
	if o.MaxFileResources <= 0 {
		o.MaxFileResources = 100000
	}
	if o.MaxFileBytes <= 0 {
		o.MaxFileBytes = 128 << 20
	}
	if o.MaxTypeFilterMatches <= 0 {
		o.MaxTypeFilterMatches = 10_000_000
	}
	if o.MaxBody <= 0 {
		o.MaxBody = 1 << 20
	}
	if o.Parallel <= 0 {
		o.Parallel = 2
	}
	if o.MaxActive <= 0 {
		o.MaxActive = 8
	}
	if o.RowDelay == 0 {
		if d, err := time.ParseDuration(os.Getenv("PHR_BULK_ROW_DELAY")); err == nil && d > 0 {
			o.RowDelay = d
		}
	}
	base := trimSuffix(o.BaseURL, "/")
	s := &Service{o: o, db: o.DB, records: o.Records, blobs: o.Blobs, queue: o.Queue, auth: o.Auth, matcher: o.Matcher,
		base: base, root: trimSuffix(base, "/fhir"), lastPoll: map[string]time.Time{}}
	o.Queue.Register(JobKind, s.runExport)
	return s
}

func trimSuffix(s, suffix string) string {
	if len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix {
		return s[:len(s)-len(suffix)]
	}
	return s
}

// SetMatcher installs the search used for _typeFilter (the search service
// is built after this one).
func (s *Service) SetMatcher(m records.Matcher) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.matcher = m
}

// Matcher returns the search used for _typeFilter (nil: none).
func (s *Service) Matcher() records.Matcher {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.matcher
}

// opts returns the options (which tests may change while exports run).
func (s *Service) opts() Options {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.o
}

// Start starts the expiry sweep; Stop ends it.
func (s *Service) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop, s.done = cancel, make(chan struct{})
	go func() {
		defer close(s.done)
		t := time.NewTicker(s.opts().SweepInterval)
		defer t.Stop()
		for {
			if err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
				slog.Warn("bulk export sweep failed", "error", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// Stop stops the sweep.
func (s *Service) Stop() {
	s.mu.Lock()
	stop, done := s.stop, s.done
	s.stop = nil
	s.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// Sweep removes exports that expired, were cancelled or failed, with
// their files.
func (s *Service) Sweep(ctx context.Context) error {
	now := time.Now()
	rows, err := s.db.Query(ctx, `SELECT id, progress FROM job WHERE kind = ? AND ((state = 'done' AND expires > 0 AND expires < ?) OR (state IN ('cancelled', 'failed') AND finished < ?)) LIMIT 100`,
		JobKind, sqldb.Micros(now), sqldb.Micros(now.Add(-s.grace())))
	if err != nil {
		return fmt.Errorf("find expired exports: %w", err)
	}
	type gone struct {
		id       string
		progress []byte
	}
	var list []gone
	for rows.Next() {
		var g gone
		if err := rows.Scan(&g.id, &g.progress); err != nil {
			rows.Close()
			return fmt.Errorf("find expired exports: %w", err)
		}
		list = append(list, g)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("find expired exports: %w", err)
	}
	for _, g := range list {
		if err := s.remove(ctx, g.id, g.progress); err != nil {
			return err
		}
		if err := s.db.WriteTx(ctx, func(tx *sqldb.Tx) error {
			for _, q := range []string{`DELETE FROM bulk_member WHERE job = ?`, `DELETE FROM job WHERE id = ?`} {
				if _, err := tx.Exec(ctx, q, g.id); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("remove export %s: %w", g.id, err)
		}
		slog.Info("removed export", "job", g.id)
	}
	return nil
}

// grace is how long cancelled and failed exports stay before the sweep
// removes their rows (their files go at once): long enough for a worker
// still writing to notice the cancellation.
func (s *Service) grace() time.Duration { return time.Minute }

// remove deletes the files of an export (recorded ones and any an
// attempt started) and their rows.
func (s *Service) remove(ctx context.Context, id string, prog []byte) error {
	keys, err := s.fileKeys(ctx, id)
	if err != nil {
		return err
	}
	keys = append(keys, progressKeys(prog)...)
	for _, k := range keys {
		if err := s.blobs.Delete(ctx, k); err != nil {
			return fmt.Errorf("remove export file: %w", err)
		}
	}
	if _, err := s.db.Exec(ctx, `DELETE FROM bulk_file WHERE job = ?`, id); err != nil {
		return fmt.Errorf("remove export files of %s: %w", id, err)
	}
	return nil
}

func (s *Service) fileKeys(ctx context.Context, id string) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT blob_key FROM bulk_file WHERE job = ?`, id)
	if err != nil {
		return nil, fmt.Errorf("list export files: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// members returns the patients a confined export covers.
func (s *Service) members(ctx context.Context, job string) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT patient FROM bulk_member WHERE job = ?`, job)
	if err != nil {
		return nil, fmt.Errorf("read export members: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// SetMaxActive changes the cap on a requester's active exports (tests).
func (s *Service) SetMaxActive(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.o.MaxActive = n
}

// SetMaxFileResources changes the split size of later exports (tests use
// small files).
func (s *Service) SetMaxFileResources(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.o.MaxFileResources = n
}
