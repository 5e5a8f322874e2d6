package bulk

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/phr-project/phr/internal/cid"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/jobs"
	"github.com/phr-project/phr/internal/r4"
	"github.com/phr-project/phr/internal/records"
	"github.com/phr-project/phr/internal/store"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// File kinds in the manifest.
const (
	kindOutput  = "output"
	kindDeleted = "deleted"
	kindError   = "error"
)

// progress is the JSON progress of an export job.
type progress struct {
	Total int64 `json:"total"`
	Done  int64 `json:"done"`
	// Keys are the blobs the attempt has started writing, so that a later
	// attempt or the sweep can remove them.
	Keys []string `json:"keys,omitempty"`
}

// fileInfo is one written file.
type fileInfo struct {
	Name  string
	Kind  string
	Type  string
	Key   string
	Count int64
	Size  int64
	CID   string
}

// exporter runs one attempt of one export job.
type exporter struct {
	s *Service
	// o and matcher are the service's settings when the attempt started.
	o       Options
	matcher records.Matcher
	run     *jobs.Run
	req     *Request
	// mu guards prog, files, seq and lastReport: types are exported in
	// parallel.
	mu   sync.Mutex
	prog progress
	// files written so far.
	files []fileInfo
	// seq numbers files per (kind, type).
	seq         map[string]int
	lastReport  time.Time
	typeMatches map[string]map[string]bool
}

// runExport is the jobs.Handler of export jobs.
func (s *Service) runExport(ctx context.Context, run *jobs.Run) error {
	var req Request
	if err := json.Unmarshal(run.Params, &req); err != nil {
		return jobs.Permanent(fmt.Errorf("the export's parameters are unreadable: %w", err))
	}
	e := &exporter{s: s, o: s.opts(), matcher: s.Matcher(), run: run, req: &req, seq: map[string]int{}}
	// A previous attempt (interrupted by a crash) may have left blobs.
	if len(run.Progress) > 0 {
		var old progress
		if json.Unmarshal(run.Progress, &old) == nil {
			for _, k := range old.Keys {
				if err := s.blobs.Delete(ctx, k); err != nil {
					slog.Warn("removing a file of an earlier export attempt failed", "job", run.ID, "key", k, "error", err)
				}
			}
		}
	}
	if err := e.count(ctx); err != nil {
		return err
	}
	if err := e.report(ctx, true); err != nil {
		return err
	}
	if err := e.prepareTypeFilters(ctx); err != nil {
		return err
	}
	if err := e.prepareBinaries(ctx); err != nil {
		return err
	}
	// Types are exported by Parallel goroutines (the store's read pool
	// serves them at once; gzip and JSON work spread over the cores).
	if req.Level == LevelSystem && !req.Confined && len(req.Types) > 3 {
		// Most types of the whole system: one pass over the versions.
		if err := e.exportScan(ctx); err != nil {
			return err
		}
	} else {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(e.o.Parallel)
		for _, typ := range req.Types {
			g.Go(func() error { return e.exportType(gctx, typ) })
		}
		if err := g.Wait(); err != nil {
			return err
		}
	}
	if !req.Since.IsZero() {
		for _, typ := range req.Types {
			if err := e.exportDeleted(ctx, typ); err != nil {
				return err
			}
		}
	}
	if len(req.Ignored) > 0 {
		if err := e.writeErrors(ctx); err != nil {
			return err
		}
	}
	expires := time.Now().Add(e.o.Expiry)
	files := e.files
	return run.Complete(ctx, nil, expires, func(tx *sqldb.Tx) error {
		for _, f := range files {
			if _, err := tx.Exec(ctx, `INSERT INTO bulk_file (job, name, kind, type, blob_key, count, size, cid) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
				run.ID, f.Name, f.Kind, f.Type, f.Key, f.Count, f.Size, f.CID); err != nil {
				return fmt.Errorf("record export file %s: %w", f.Name, err)
			}
		}
		return nil
	})
}

// inCompartment reports whether typ belongs to the patient compartment
// (the others are shared reference data: Organization, Practitioner...).
func inCompartment(typ string) bool {
	return typ == "Patient" || len(r4.PatientCompartmentParams(typ)) > 0
}

// refersToR is the condition that reference row i points at resource r
// (by rid, or by type and id while the target was not yet stored).
const refersToR = "(i.target_rid = r.rid OR i.target_rid = 0 AND i.target_type = r.type AND i.target_id = r.id)"

// memberJoin is the join (on compartment c) that limits a confined
// export's compartments to its members, with its argument; none for an
// export that is not confined.
func (e *exporter) memberJoin() (string, []any) {
	if !e.req.Confined {
		return "", nil
	}
	return " JOIN bulk_member m ON m.patient = c.patient AND m.job = ?", []any{e.run.ID}
}

// where returns the conditions selecting the current resources of typ the
// export covers (on "resource r").
func (e *exporter) where(typ string) (string, []any) {
	req := e.req
	conds := []string{"r.type = ?", "NOT r.deleted", "r.last_updated <= ?"}
	args := []any{typ, sqldb.Micros(req.TransactionTime)}
	limited := req.Level != LevelSystem || req.Confined
	member, memberArgs := e.memberJoin()
	switch {
	case req.Since.IsZero():
	case limited && typ == "Binary":
		// prepareBinaries applies _since.
	case limited && !inCompartment(typ):
		// A shared resource changed since, or referenced by a resource
		// of the compartments that changed since: an incremental export
		// (phr pull) must bring what the changed resources point at.
		conds = append(conds, "(r.last_updated > ? OR EXISTS (SELECT 1 FROM idx_ref i JOIN resource s ON s.rid = i.rid JOIN compartment c ON c.rid = i.rid"+member+
			" WHERE "+refersToR+" AND s.last_updated > ?))")
		args = append(args, sqldb.Micros(req.Since))
		args = append(args, memberArgs...)
		args = append(args, sqldb.Micros(req.Since))
	default:
		conds = append(conds, "r.last_updated > ?")
		args = append(args, sqldb.Micros(req.Since))
	}
	if !req.Until.IsZero() {
		conds = append(conds, "r.last_updated <= ?")
		args = append(args, sqldb.Micros(req.Until))
	}
	if limited {
		if inCompartment(typ) {
			cond := "EXISTS (SELECT 1 FROM compartment c" + member + " WHERE c.rid = r.rid)"
			args = append(args, memberArgs...)
			if typ == "Provenance" {
				// Provenance of resources in the compartments, too.
				cond = "(" + cond + " OR EXISTS (SELECT 1 FROM idx_ref i JOIN resource t ON t.type = i.target_type AND t.id = i.target_id JOIN compartment c ON c.rid = t.rid" + member +
					" WHERE i.rid = r.rid AND i.pid = (SELECT id FROM search_param WHERE type = 'Provenance' AND param = 'target')))"
				args = append(args, memberArgs...)
			}
			conds = append(conds, cond)
		} else if typ == "Binary" {
			// Every current Binary is looked at; prepareBinaries chose
			// those of the patients (typeMatches).
		} else {
			// Shared resources referenced from the compartments, or
			// owned by one of their patients (records: owner.go).
			conds = append(conds, "(EXISTS (SELECT 1 FROM idx_ref i JOIN compartment c ON c.rid = i.rid"+member+" WHERE "+refersToR+
				") OR EXISTS (SELECT 1 FROM compartment c"+member+" WHERE c.rid = r.rid))")
			args = append(args, memberArgs...)
			args = append(args, memberArgs...)
			if req.Patient != "" {
				// A patient's own export: not what another patient owns.
				conds = append(conds, "(NOT EXISTS (SELECT 1 FROM compartment o WHERE o.rid = r.rid) OR EXISTS (SELECT 1 FROM compartment o WHERE o.rid = r.rid AND o.patient = ?))")
				args = append(args, req.Patient)
			}
		}
	}
	return strings.Join(conds, " AND "), args
}

// prepareBinaries chooses the Binaries of an export limited to patients
// (Patient or Group level, or a patient's token), as a type filter: those
// the attachments of their current resources point at (Binary/[id],
// [base]/Binary/[id]; an attachment is not a reference, so the reference
// rows cannot tell), those whose securityContext names one of them
// (records.BinariesInContext) and, but for a patient's own export, those
// their resources reference. A patient's own export keeps only Binaries
// whose securityContext is absent or names their record, as a read would:
// any resource of a record may reference any Binary (Observation.focus).
func (e *exporter) prepareBinaries(ctx context.Context) error {
	req := e.req
	if req.Level == LevelSystem && !req.Confined || !slices.Contains(req.Types, "Binary") {
		return nil
	}
	ids := map[string]bool{}
	member, memberArgs := e.memberJoin()
	var members map[string]bool
	if req.Confined {
		list, err := e.s.members(ctx, e.run.ID)
		if err != nil {
			return err
		}
		members = map[string]bool{}
		for _, m := range list {
			members[m] = true
		}
	}
	// Type by type, in rid order: the (type, rid) index gives each page
	// without sorting what follows it.
	// fresh: Binaries that resources changed since _since point at, sent
	// by an incremental export whether or not they changed themselves.
	fresh := map[string]bool{}
	since := sqldb.Micros(req.Since)
	// An incremental export in which no Binary changed needs only the
	// attachments of what changed (fresh); else every attachment of the
	// compartments, to tell whether a changed Binary is theirs.
	from := int64(math.MinInt64)
	if !req.Since.IsZero() {
		var changed int
		if err := e.s.db.QueryRow(ctx, `SELECT COUNT(*) FROM resource WHERE type = 'Binary' AND NOT deleted AND last_updated > ? AND last_updated <= ?`,
			since, sqldb.Micros(req.TransactionTime)).Scan(&changed); err != nil {
			return fmt.Errorf("count the Binaries changed since: %w", err)
		}
		if changed == 0 {
			from = since
		}
	}
	q := `SELECT r.rid, r.last_updated, v.json FROM resource r JOIN resource_version v ON v.seq = r.seq
		WHERE r.type = ? AND r.rid > ? AND NOT r.deleted AND r.last_updated <= ? AND r.last_updated > ?
		AND EXISTS (SELECT 1 FROM compartment c` + member + ` WHERE c.rid = r.rid) ORDER BY r.rid LIMIT ?`
	for _, typ := range records.AttachmentTypes() {
		var after int64
		for {
			args := append([]any{typ, after, sqldb.Micros(req.TransactionTime), from}, memberArgs...)
			rows, err := e.s.db.Query(ctx, q, append(args, e.o.PageSize)...)
			if err != nil {
				return fmt.Errorf("find the Binaries attachments point at: %w", err)
			}
			n := 0
			for rows.Next() {
				var (
					raw     []byte
					updated int64
				)
				if err := rows.Scan(&after, &updated, &raw); err != nil {
					rows.Close()
					return fmt.Errorf("find the Binaries attachments point at: %w", err)
				}
				n++
				for _, id := range records.BinariesOf(raw, e.s.base, false) {
					ids[id] = true
					if updated > since {
						fresh[id] = true
					}
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("find the Binaries attachments point at: %w", err)
			}
			if n < e.o.PageSize {
				break
			}
		}
	}
	if req.Patient == "" {
		rows, err := e.s.db.Query(ctx, `SELECT r.id, (SELECT MAX(s.last_updated) FROM idx_ref i JOIN resource s ON s.rid = i.rid JOIN compartment c ON c.rid = i.rid`+member+`
			WHERE `+refersToR+`) FROM resource r WHERE r.type = 'Binary' AND NOT r.deleted`, memberArgs...)
		if err != nil {
			return fmt.Errorf("find the Binaries the records reference: %w", err)
		}
		for rows.Next() {
			var (
				id      string
				updated *int64
			)
			if err := rows.Scan(&id, &updated); err != nil {
				rows.Close()
				return fmt.Errorf("find the Binaries the records reference: %w", err)
			}
			if updated == nil {
				continue // referenced by no resource of the compartments
			}
			ids[id] = true
			if *updated > since {
				fresh[id] = true
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("find the Binaries the records reference: %w", err)
		}
	}
	want := func(p string) bool { return members == nil || members[p] }
	if err := e.s.records.BinariesInContext(ctx, want, func(id string) { ids[id] = true }); err != nil {
		return err
	}
	if req.Patient != "" || !req.Since.IsZero() {
		for id := range ids {
			b, err := e.s.db.Read(ctx, "Binary", id)
			if errors.Is(err, store.ErrNotFound) {
				delete(ids, id)
				continue
			}
			if err != nil {
				return fmt.Errorf("read Binary/%s: %w", id, err)
			}
			if !req.Since.IsZero() && !b.LastUpdated.After(req.Since) && !fresh[id] {
				delete(ids, id)
				continue
			}
			if req.Patient == "" {
				continue
			}
			if ok, has, err := e.s.records.PatientSecurityContext(ctx, req.Patient, b); err != nil {
				return err
			} else if has && !ok {
				delete(ids, id)
			}
		}
	}
	if e.typeMatches == nil {
		e.typeMatches = map[string]map[string]bool{}
	}
	if prev, ok := e.typeMatches["Binary"]; ok {
		for id := range ids {
			if !prev[id] {
				delete(ids, id)
			}
		}
	}
	e.typeMatches["Binary"] = ids
	return nil
}

// count sets the total number of resources the export will look at.
func (e *exporter) count(ctx context.Context) error {
	var total int64
	for _, typ := range e.req.Types {
		where, args := e.where(typ)
		var n int64
		if err := e.s.db.QueryRow(ctx, `SELECT COUNT(*) FROM resource r WHERE `+where, args...).Scan(&n); err != nil {
			return fmt.Errorf("count %s: %w", typ, err)
		}
		total += n
	}
	e.prog.Total = total
	return nil
}

// addDone counts resources looked at.
func (e *exporter) addDone(n int64) {
	e.mu.Lock()
	e.prog.Done += n
	e.mu.Unlock()
}

// report records progress (at most every 250ms unless forced).
func (e *exporter) report(ctx context.Context, force bool) error {
	e.mu.Lock()
	if !force && time.Since(e.lastReport) < 250*time.Millisecond {
		e.mu.Unlock()
		return nil
	}
	e.lastReport = time.Now()
	b, _ := json.Marshal(e.prog)
	e.mu.Unlock()
	return e.run.Report(ctx, b)
}

// prepareTypeFilters resolves the _typeFilter queries to the ids they
// match, with the search engine.
func (e *exporter) prepareTypeFilters(ctx context.Context) error {
	if len(e.req.TypeFilters) == 0 && len(e.req.ScopeFilters) == 0 {
		return nil
	}
	if e.matcher == nil {
		return jobs.Permanent(errors.New("_typeFilter and scope filters cannot be applied: search is not available"))
	}
	e.typeMatches = map[string]map[string]bool{}
	for _, filters := range []map[string][]string{e.req.TypeFilters, e.req.ScopeFilters} {
		for typ, queries := range filters {
			set, err := e.matchAny(ctx, typ, queries)
			if err != nil {
				return err
			}
			if prev, ok := e.typeMatches[typ]; ok {
				// Both a _typeFilter and a scope filter: keep what both select.
				for id := range set {
					if !prev[id] {
						delete(set, id)
					}
				}
			}
			e.typeMatches[typ] = set
		}
	}
	return nil
}

// matchAny returns the ids of typ's resources matching any of the queries.
func (e *exporter) matchAny(ctx context.Context, typ string, queries []string) (map[string]bool, error) {
	set := map[string]bool{}
	for _, q := range queries {
		v, err := url.ParseQuery(q)
		if err != nil {
			return nil, jobs.Permanent(fmt.Errorf("filter %s?%s: %w", typ, q, err))
		}
		ids, err := e.matcher.Match(ctx, typ, v, e.o.MaxTypeFilterMatches)
		if err != nil {
			return nil, jobs.Permanent(fmt.Errorf("filter %s?%s: %w", typ, q, err))
		}
		for _, id := range ids {
			set[id] = true
		}
	}
	return set, nil
}

// exportType writes the current resources of typ, in pages by rid.
func (e *exporter) exportType(ctx context.Context, typ string) error {
	where, args := e.where(typ)
	// Walk the type's versions in seq order (the version table's own
	// order, so its pages are read in sequence) and keep the current ones.
	q := `SELECT v.seq, r.id, v.json, v.blob FROM resource_version v JOIN resource r ON r.rid = v.rid AND r.seq = v.seq WHERE v.type = ? AND ` + where + ` AND v.seq > ? ORDER BY v.seq LIMIT ?`
	args = append([]any{typ}, args...)
	var (
		f       *fileWriter
		after   int64
		matches = e.typeMatches[typ]
		elems   = e.elementsFor(typ)
		buf     []byte
	)
	defer func() {
		if f != nil {
			f.abort()
		}
	}()
	for {
		rows, err := e.s.db.Query(ctx, q, append(args, after, e.o.PageSize)...)
		if err != nil {
			return fmt.Errorf("export %s: %w", typ, err)
		}
		n := 0
		for rows.Next() {
			var (
				res  = store.Resource{Type: typ}
				blob *string
			)
			if err := rows.Scan(&after, &res.ID, &res.JSON, &blob); err != nil {
				rows.Close()
				return fmt.Errorf("export %s: %w", typ, err)
			}
			n++
			if e.o.RowDelay > 0 {
				time.Sleep(e.o.RowDelay)
			}
			if n%100 == 0 {
				e.addDone(100)
				if err := e.report(ctx, false); err != nil {
					rows.Close()
					return err
				}
			}
			if matches != nil && !matches[res.ID] {
				continue
			}
			if blob != nil {
				res.Blob = *blob
			}
			if f == nil {
				if f, err = e.open(ctx, kindOutput, typ); err != nil {
					rows.Close()
					return err
				}
			}
			if elems != nil {
				if buf, err = subset(buf[:0], typ, res.JSON, elems); err != nil {
					rows.Close()
					return jobs.Permanent(fmt.Errorf("export %s/%s: %w", typ, res.ID, err))
				}
				res.JSON = buf
			}
			if err := e.s.records.WriteJSON(ctx, f.w, &res); err != nil {
				rows.Close()
				return fmt.Errorf("export %s/%s: %w", typ, res.ID, err)
			}
			if err := f.endLine(); err != nil {
				rows.Close()
				return err
			}
			if f.full(e.s.o) {
				if err := e.finish(f); err != nil {
					rows.Close()
					return err
				}
				f = nil
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("export %s: %w", typ, err)
		}
		e.addDone(int64(n % 100))
		if err := e.report(ctx, false); err != nil {
			return err
		}
		if n < e.o.PageSize {
			break
		}
	}
	if f != nil {
		err := e.finish(f)
		f = nil
		return err
	}
	return nil
}

// exportScan writes a system-level export in one pass over the version
// table in seq order (its own order, so every page is read once and in
// sequence), keeping the current versions of the wanted types, with one
// open file per type. Reading the store is what bounds an export; this
// reads it once instead of once per type.
func (e *exporter) exportScan(ctx context.Context) error {
	req := e.req
	wanted := map[string]bool{}
	for _, t := range req.Types {
		wanted[t] = true
	}
	conds := []string{"NOT r.deleted", "r.last_updated <= ?"}
	args := []any{sqldb.Micros(req.TransactionTime)}
	if !req.Since.IsZero() {
		conds = append(conds, "r.last_updated > ?")
		args = append(args, sqldb.Micros(req.Since))
	}
	if !req.Until.IsZero() {
		conds = append(conds, "r.last_updated <= ?")
		args = append(args, sqldb.Micros(req.Until))
	}
	q := `SELECT v.seq, v.type, r.id, v.json, v.blob FROM resource_version v JOIN resource r ON r.rid = v.rid AND r.seq = v.seq WHERE v.seq > ? AND ` +
		strings.Join(conds, " AND ") + ` ORDER BY v.seq LIMIT ?`
	files := map[string]*fileWriter{}
	defer func() {
		for _, f := range files {
			f.abort()
		}
	}()
	var (
		after int64
		buf   []byte
		done  int64
	)
	for {
		rows, err := e.s.db.Query(ctx, q, append(append([]any{after}, args...), e.o.PageSize)...)
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		n := 0
		for rows.Next() {
			var (
				res  store.Resource
				blob *string
			)
			if err := rows.Scan(&after, &res.Type, &res.ID, &res.JSON, &blob); err != nil {
				rows.Close()
				return fmt.Errorf("export: %w", err)
			}
			n++
			if !wanted[res.Type] {
				continue
			}
			if e.o.RowDelay > 0 {
				time.Sleep(e.o.RowDelay)
			}
			if done++; done%100 == 0 {
				e.addDone(100)
				if err := e.report(ctx, false); err != nil {
					rows.Close()
					return err
				}
			}
			if m := e.typeMatches[res.Type]; m != nil && !m[res.ID] {
				continue
			}
			if blob != nil {
				res.Blob = *blob
			}
			f := files[res.Type]
			if f == nil {
				if f, err = e.open(ctx, kindOutput, res.Type); err != nil {
					rows.Close()
					return err
				}
				files[res.Type] = f
			}
			if elems := e.elementsFor(res.Type); elems != nil {
				if buf, err = subset(buf[:0], res.Type, res.JSON, elems); err != nil {
					rows.Close()
					return jobs.Permanent(fmt.Errorf("export %s/%s: %w", res.Type, res.ID, err))
				}
				res.JSON = buf
			}
			if err := e.s.records.WriteJSON(ctx, f.w, &res); err != nil {
				rows.Close()
				return fmt.Errorf("export %s/%s: %w", res.Type, res.ID, err)
			}
			if err := f.endLine(); err != nil {
				rows.Close()
				return err
			}
			if f.full(e.s.o) {
				delete(files, res.Type)
				if err := e.finish(f); err != nil {
					rows.Close()
					return err
				}
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		if n < e.o.PageSize {
			break
		}
	}
	e.addDone(done % 100)
	types := make([]string, 0, len(files))
	for t := range files {
		types = append(types, t)
	}
	slices.Sort(types)
	for _, t := range types {
		f := files[t]
		delete(files, t)
		if err := e.finish(f); err != nil {
			return err
		}
	}
	return nil
}

// elementsFor returns the elements to keep for typ (nil: all).
func (e *exporter) elementsFor(typ string) []string {
	if len(e.req.Elements) == 0 {
		return nil
	}
	var out []string
	out = append(out, e.req.Elements[""]...)
	out = append(out, e.req.Elements[typ]...)
	if len(out) == 0 {
		// _elements named only other types: this one is exported whole.
		return nil
	}
	return out
}

// subset keeps resourceType, id, meta, the mandatory elements and those
// asked for, and tags the result SUBSETTED.
func subset(dst []byte, typ string, data []byte, elems []string) ([]byte, error) {
	v, err := fhirjson.Parse(data)
	if err != nil {
		return nil, err
	}
	keep := func(name string) bool {
		switch name {
		case "resourceType", "id", "meta":
			return true
		}
		for _, el := range elems {
			if name == el {
				return true
			}
			if d := elementOf(typ, el); d != nil && strings.HasSuffix(d.Path, "[x]") && strings.HasPrefix(name, el) {
				return true
			}
		}
		base := name
		d := r4.LookupElement(typ + "." + base)
		if d == nil {
			// A typed choice name (valueQuantity): find its [x] element.
			for i := len(name) - 1; i > 0; i-- {
				if name[i] >= 'A' && name[i] <= 'Z' {
					if x := r4.LookupElement(typ + "." + name[:i] + "[x]"); x != nil {
						d = x
						break
					}
				}
			}
		}
		return d != nil && d.Min > 0
	}
	fields := v.Fields[:0]
	for _, f := range v.Fields {
		if keep(f.Name) {
			fields = append(fields, f)
		}
	}
	v.Fields = fields
	meta := v.Get("meta")
	if meta == nil {
		meta = fhirjson.NewObject()
		v.SetAfter("meta", meta, "id")
	}
	tags := meta.Get("tag")
	if tags == nil {
		tags = fhirjson.NewArray()
		meta.Set("tag", tags)
	}
	tags.Items = append(tags.Items, fhirjson.NewObject(
		fhirjson.Field{Name: "system", Value: fhirjson.NewString("http://terminology.hl7.org/CodeSystem/v3-ObservationValue")},
		fhirjson.Field{Name: "code", Value: fhirjson.NewString("SUBSETTED")},
		fhirjson.Field{Name: "display", Value: fhirjson.NewString("subsetted")},
	))
	return v.Append(dst), nil
}

// exportDeleted writes, for a _since export, a Bundle line with a DELETE
// entry for each resource of typ deleted since then.
func (e *exporter) exportDeleted(ctx context.Context, typ string) error {
	conds := []string{"r.type = ?", "r.deleted", "r.last_updated > ?", "r.last_updated <= ?"}
	args := []any{typ, sqldb.Micros(e.req.Since), sqldb.Micros(e.req.TransactionTime)}
	if !e.req.Until.IsZero() {
		conds = append(conds, "r.last_updated <= ?")
		args = append(args, sqldb.Micros(e.req.Until))
	}
	q := `SELECT r.rid, r.id, r.version FROM resource r WHERE ` + strings.Join(conds, " AND ") + ` AND r.rid > ? ORDER BY r.rid LIMIT ?`
	var members []string
	if e.req.Confined {
		var err error
		if members, err = e.s.members(ctx, e.run.ID); err != nil {
			return err
		}
	}
	var (
		f     *fileWriter
		after int64
	)
	defer func() {
		if f != nil {
			f.abort()
		}
	}()
	type del struct {
		id      string
		version int64
	}
	for {
		rows, err := e.s.db.Query(ctx, q, append(args, after, e.o.PageSize)...)
		if err != nil {
			return fmt.Errorf("deleted %s: %w", typ, err)
		}
		var page []del
		for rows.Next() {
			var d del
			if err := rows.Scan(&after, &d.id, &d.version); err != nil {
				rows.Close()
				return fmt.Errorf("deleted %s: %w", typ, err)
			}
			page = append(page, d)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("deleted %s: %w", typ, err)
		}
		for _, d := range page {
			if e.req.Level != LevelSystem || e.req.Confined {
				ok, err := e.deletedInScope(ctx, typ, d.id, d.version, members)
				if err != nil {
					return err
				}
				if !ok {
					continue
				}
			}
			if f == nil {
				if f, err = e.open(ctx, kindDeleted, typ); err != nil {
					return err
				}
			}
			line := fmt.Appendf(nil, `{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"DELETE","url":%s}}]}`, fhirjson.AppendString(nil, typ+"/"+d.id))
			if _, err := f.w.Write(line); err != nil {
				return err
			}
			if err := f.endLine(); err != nil {
				return err
			}
		}
		if len(page) < e.o.PageSize {
			break
		}
	}
	if f != nil {
		err := e.finish(f)
		f = nil
		return err
	}
	return nil
}

// deletedInScope reports whether a deleted resource was in the export's
// compartments, judged on its last live version.
func (e *exporter) deletedInScope(ctx context.Context, typ, id string, version int64, members []string) (bool, error) {
	if version < 2 {
		return false, nil
	}
	prev, err := e.s.db.ReadVersion(ctx, typ, id, version-1)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if typ == "Binary" && e.req.Patient != "" {
		// A patient's own export: a Binary of their record (as
		// prepareBinaries chose them), not every deleted Binary's id.
		if e.typeMatches["Binary"][id] {
			return true, nil
		}
		ok, has, err := e.s.records.PatientSecurityContext(ctx, e.req.Patient, prev)
		return ok && has, err
	}
	if !inCompartment(typ) && !index.Ownable(typ) {
		return true, nil
	}
	v, err := fhirjson.Parse(prev.JSON)
	if err != nil {
		return false, fmt.Errorf("parse stored %s/%s: %w", typ, id, err)
	}
	ent, err := index.Extract(typ, v)
	if err != nil {
		return false, err
	}
	pats := records.Patients(typ, id, &ent)
	if !inCompartment(typ) && len(pats) == 0 {
		// Shared resources nobody owns are reported deleted to every
		// patient export that may have received them; an owned one (in
		// its owner's compartment) only to its owner's.
		return true, nil
	}
	if !e.req.Confined {
		return len(pats) > 0, nil
	}
	for _, p := range pats {
		if slices.Contains(members, p) {
			return true, nil
		}
	}
	return false, nil
}

// writeErrors writes the OperationOutcomes of parameters ignored under
// handling=lenient.
func (e *exporter) writeErrors(ctx context.Context) error {
	f, err := e.open(ctx, kindError, "OperationOutcome")
	if err != nil {
		return err
	}
	for _, is := range e.req.Ignored {
		if _, err := f.w.Write(fhir.OutcomeJSON([]fhir.Issue{is})); err != nil {
			f.abort()
			return err
		}
		if err := f.endLine(); err != nil {
			f.abort()
			return err
		}
	}
	return e.finish(f)
}

// fileWriter streams one file into the blob store, gzip-compressed (the
// CID and size are those of the NDJSON itself). Compressing costs little
// CPU and saves most of the disk or network writes, which bound an
// export's speed; clients that accept gzip get the stored bytes as they are.
//
// The exporter writes lines into w (hashed and counted as they go); full
// 64 KiB chunks go through a small channel to the file's own goroutine,
// which compresses them into the blob store's Put: compression runs on
// another core than the store reads. Each chunk is compressed on its own
// by a shared compressor (chunkedGzip), so memory per open file is the
// chunks in flight, at most about 400 KiB.
type fileWriter struct {
	info   fileInfo
	w      *bufio.Writer
	hasher *cid.Hasher
	size   countWriter
	chunks chan []byte
	// aborted, set before chunks is closed, makes the upload fail.
	aborted atomic.Bool
	// done receives the outcome of compressing and storing.
	done chan error
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// chunkSender hands copies of what it is given to the compressor, in
// buffers the compressor gives back to chunkPool.
type chunkSender struct{ ch chan []byte }

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

func (c chunkSender) Write(p []byte) (int, error) {
	bp := chunkPool.Get().(*[]byte)
	c.ch <- append((*bp)[:0], p...)
	return len(p), nil
}

// open starts a new file of kind and typ.
func (e *exporter) open(ctx context.Context, kind, typ string) (*fileWriter, error) {
	k := kind + "/" + typ
	e.mu.Lock()
	e.seq[k]++
	name := fmt.Sprintf("%s-%d.ndjson", typ, e.seq[k])
	if kind != kindOutput {
		name = kind + "-" + name
	}
	key := fmt.Sprintf("bulk/%s/a%d/%s", e.run.ID, e.run.Attempts, name)
	e.prog.Keys = append(e.prog.Keys, key)
	e.mu.Unlock()
	// Record the key before writing, so that it is cleaned up whatever
	// happens to this attempt.
	if err := e.report(ctx, true); err != nil {
		return nil, err
	}
	if kind == kindDeleted {
		typ = "Bundle"
	}
	f := &fileWriter{info: fileInfo{Name: name, Kind: kind, Type: typ, Key: key}, hasher: cid.NewHasher(),
		chunks: make(chan []byte, 4), done: make(chan error, 1)}
	f.w = bufio.NewWriterSize(io.MultiWriter(chunkSender{f.chunks}, f.hasher, &f.size), 64<<10)
	pr, pw := io.Pipe()
	put := make(chan error, 1)
	go func() {
		_, err := e.s.blobs.Put(ctx, key, pr)
		pr.CloseWithError(err)
		put <- err
	}()
	go func() {
		gz := &chunkedGzip{w: pw}
		var err error
		for c := range f.chunks {
			if err == nil {
				err = gz.writeChunk(c)
			}
			if cap(c) == 64<<10 {
				chunkPool.Put(&c)
			}
			// After an error keep draining, so that the exporter never blocks.
		}
		if err == nil && f.aborted.Load() {
			err = errors.New("export aborted")
		}
		if err == nil {
			err = gz.close()
		}
		if err != nil {
			pw.CloseWithError(err)
		} else {
			pw.Close()
		}
		if perr := <-put; perr != nil {
			err = perr
		}
		f.done <- err
	}()
	return f, nil
}

// endLine ends an NDJSON line and counts it.
func (f *fileWriter) endLine() error {
	f.info.Count++
	return f.w.WriteByte('\n')
}

// full reports whether the file reached the split size.
func (f *fileWriter) full(o Options) bool {
	return f.info.Count >= int64(o.MaxFileResources) || f.size.n+int64(f.w.Buffered()) >= o.MaxFileBytes
}

// finish closes f and records it.
func (e *exporter) finish(f *fileWriter) error {
	ferr := f.w.Flush()
	close(f.chunks)
	err := <-f.done
	if ferr != nil {
		return fmt.Errorf("write %s: %w", f.info.Name, ferr)
	}
	if err != nil {
		return fmt.Errorf("store %s: %w", f.info.Name, err)
	}
	f.info.Size = f.size.n
	f.info.CID = f.hasher.CID()
	e.mu.Lock()
	e.files = append(e.files, f.info)
	e.mu.Unlock()
	return nil
}

// abort stops writing f (the blob store keeps no partial blob: the
// upload is made to fail).
func (f *fileWriter) abort() {
	f.aborted.Store(true)
	close(f.chunks)
	<-f.done
}
