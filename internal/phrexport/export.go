// Package phrexport implements the PHR IG's $phr-export: a person's whole
// record (or a date range, some types, the changes since a time) as a FHIR
// document Bundle, NDJSON, a .phr file or an encrypted .sphr archive, over
// HTTP ([base]/Bundle/$phr-export, [base]/Patient/[id]/$phr-export) and for
// the command line.
//
// Exports stream: current versions are read from the store in bounded
// pages (keyset paging on the row id) and written out as they come, so
// memory stays flat whatever the size of the record. The order is the
// project's .phr layout: a Composition cover page (LOINC 11503-0, the
// patient as subject) first, then the Patient, then the patient's
// compartment, then the shared resources it references (Practitioner,
// Organization, Location, Medication...) and the Binary contents its
// attachments point at. An error on one resource after the output has
// started is written inline as an OperationOutcome and the export goes on.
package phrexport

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/r4"
	"github.com/phr-project/phr/internal/records"
	"github.com/phr-project/phr/internal/sphr"
	"github.com/phr-project/phr/internal/store"
	"github.com/phr-project/phr/internal/store/sqldb"
	"github.com/phr-project/phr/internal/zipaes"
)

// MinPassphrase is the shortest .sphr passphrase accepted from a user.
const MinPassphrase = 8

// Signer makes detached JWS signatures with the server's key.
type Signer interface {
	SignDetached(payload []byte) (string, error)
}

// Event describes a finished export, for audit.
type Event struct {
	Subject   string
	Patient   string
	Format    string
	Resources int64
	Bytes     int64
	Err       error
}

// Service runs exports.
type Service struct {
	db        *sqldb.DB
	rec       *records.Service
	base      string
	tmpDir    string
	now       func() time.Time
	pageSize  int
	pageBytes int
	level     int
	signer    Signer
	matcher   records.Matcher
	// storeID caches the store's id (source).
	storeID atomic.Pointer[string]
	// OnExport, when set, is called after every export (audit).
	OnExport func(ctx context.Context, e Event)
}

// Options configure a Service.
type Options struct {
	DB      *sqldb.DB
	Records *records.Service
	// BaseURL is the FHIR base (fullUrl of Bundle entries).
	BaseURL string
	// TempDir holds the .sphr spool files (os.TempDir() when empty).
	TempDir string
	// Signer signs exports when asked (nil: signing is not offered).
	Signer Signer
	// Matcher is the search that applies SMART v2 scope filters
	// (patient/Observation.rs?category=laboratory) inside an export. Without
	// one, a type with scope filters is left out with a warning.
	Matcher records.Matcher
	// PageSize is the number of rows read per query (default 500).
	PageSize int
	// PageBytes bounds the JSON of one page held in memory (default 4 MiB;
	// a larger single resource is still read whole).
	PageBytes int
	// SPHRLevel is the DEFLATE level of .sphr archives (0: DefaultSPHRLevel).
	SPHRLevel int
	Now       func() time.Time
}

// New returns a Service.
func New(o Options) *Service {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.PageSize <= 0 {
		o.PageSize = 500
	}
	if o.PageBytes <= 0 {
		o.PageBytes = 4 << 20
	}
	if o.SPHRLevel == 0 {
		o.SPHRLevel = DefaultSPHRLevel
	}
	return &Service{db: o.DB, rec: o.Records, base: strings.TrimSuffix(o.BaseURL, "/"), tmpDir: o.TempDir, now: o.Now, pageSize: o.PageSize, pageBytes: o.PageBytes, level: o.SPHRLevel, signer: o.Signer, matcher: o.Matcher}
}

// CanSign reports whether signed exports are offered.
func (s *Service) CanSign() bool { return s.signer != nil }

// Stats count what an export wrote.
type Stats struct {
	Resources int64
	// Outcomes counts the inline OperationOutcome issues (problems met
	// after the output started).
	Outcomes int64
	Bytes    int64
	// Signature is the detached JWS when Params.Sign was set.
	Signature string
}

// Prepare checks p against the caller in ctx before anything is written:
// the format, dates and types, the patient (a patient-confined caller may
// export only itself: 403), that it exists (404), and which types the
// caller's scopes allow. It fills the passphrase of a .sphr when none was
// given.
func (s *Service) Prepare(ctx context.Context, p *Params) error {
	pr := access.From(ctx)
	if pr == nil {
		return &fhir.Error{Status: http.StatusUnauthorized, Issues: []fhir.Issue{{Severity: "error", Code: "login", Diagnostics: "authentication required"}}}
	}
	f, err := ParseFormat(p.Format)
	if err != nil {
		return err
	}
	p.Format = f
	if err := p.parseRange(); err != nil {
		return err
	}
	if own := pr.Patient(); own != "" {
		if p.Patient == "" {
			p.Patient = own
		} else if p.Patient != own {
			return fhir.Forbidden("this access token may export only Patient/%s, not Patient/%s", own, p.Patient)
		}
	}
	if p.Patient != "" {
		res, err := s.db.Read(ctx, "Patient", p.Patient)
		if errors.Is(err, store.ErrNotFound) || (err == nil && res.Deleted) {
			return fhir.NotFound("Patient/%s is not known", p.Patient)
		}
		if err != nil {
			return err
		}
		// The name goes into the cover page, the file name and the .sphr
		// folder: only for a caller who may read the Patient.
		ok, err := s.visible(ctx, pr, "Patient", p.Patient)
		if err != nil {
			return err
		}
		if ok {
			p.patientName = patientName(res.JSON)
		}
	}
	everything := len(p.Types) == 0
	all := everything
	universe := p.Types
	if everything {
		universe = r4.ResourceTypes()
	}
	p.types, p.excluded, p.filtered = nil, nil, nil
	for _, t := range universe {
		if everything && t == "AuditEvent" {
			continue // only when _type asks for it
		}
		if !pr.Allows(access.Read, t) {
			all = false
			continue
		}
		if fs := pr.Filters(t); len(fs) > 0 {
			all = false
			if s.matcher == nil {
				p.excluded = append(p.excluded, fmt.Sprintf("%s resources were left out: the access token restricts them with scope filters, and this server has no search to apply them", t))
				continue
			}
			// Check the filters now, so that one the search cannot run
			// is known before the output starts, not an error mid-stream:
			// a type _type asks for is refused (403); without _type (a
			// wildcard scope with a filter some types lack) the type is
			// left out with a warning.
			var bad error
			for _, f := range fs {
				if _, err := s.matcher.Match(ctx, t, f, 1); err != nil {
					bad = fmt.Errorf("the access token's scope filter %s?%s cannot be applied: %v", t, f.Encode(), err)
					break
				}
			}
			if bad != nil && !everything {
				return fhir.Forbidden("%v", bad)
			}
			if bad != nil {
				p.excluded = append(p.excluded, fmt.Sprintf("%s resources were left out: %v", t, bad))
				continue
			}
			if p.filtered == nil {
				p.filtered = map[string][]url.Values{}
			}
			p.filtered[t] = fs
		}
		p.types = append(p.types, t)
	}
	if len(p.types) == 0 {
		return fhir.Forbidden("the access token allows reading none of the requested resource types")
	}
	if all {
		p.types = nil // every type but AuditEvent: no type list in the queries
	}
	if p.Sign && s.signer == nil {
		return fhir.Errorf(http.StatusBadRequest, "not-supported", "signed exports are not available on this server").AtPath("sign")
	}
	if p.Format == FormatSPHR && p.Passphrase != "" && utf8.RuneCountInString(p.Passphrase) < MinPassphrase {
		return fhir.BadRequest("the .sphr passphrase has %d characters; use at least %d (or none, and the server generates a strong one)", utf8.RuneCountInString(p.Passphrase), MinPassphrase).AtPath("passphrase")
	}
	if p.Format == FormatSPHR && p.Passphrase == "" {
		pass, err := zipaes.GeneratePassphrase()
		if err != nil {
			return err
		}
		p.Passphrase, p.GeneratedPassphrase = pass, true
	}
	return nil
}

// visible reports whether the caller may read typ/id as far as its scope
// (type and SMART v2 filters) goes; compartment confinement is checked by
// the queries.
func (s *Service) visible(ctx context.Context, pr access.Principal, typ, id string) (bool, error) {
	if !pr.Allows(access.Read, typ) {
		return false, nil
	}
	fs := pr.Filters(typ)
	if len(fs) == 0 {
		return true, nil
	}
	if s.matcher == nil {
		return false, nil
	}
	set, err := s.matchFilters(ctx, typ, fs, []string{id})
	var fe *fhir.Error
	if errors.As(err, &fe) && fe.Status < 500 {
		return false, nil // a filter the type cannot have (patient/*.rs?category=...) selects nothing
	}
	return set[id], err
}

// matchFilters returns which of ids (of type typ) match one of the scope
// filters fs.
func (s *Service) matchFilters(ctx context.Context, typ string, fs []url.Values, ids []string) (map[string]bool, error) {
	set := make(map[string]bool, len(ids))
	for _, f := range fs {
		q := url.Values{}
		for k, v := range f {
			q[k] = v
		}
		q.Set("_id", strings.Join(ids, ","))
		got, err := s.matcher.Match(ctx, typ, q, len(ids))
		if err != nil {
			return nil, fmt.Errorf("apply the access token's scope filter %s?%s: %w", typ, f.Encode(), err)
		}
		for _, id := range got {
			set[id] = true
		}
	}
	return set, nil
}

// FileName is the download name of an export: the patient's name (or
// "phr-export") and the date, with the format's extension.
func (s *Service) FileName(p *Params) string {
	base := "phr-export"
	if p.Patient != "" {
		base = sphr.SafeName(p.patientName, "patient-"+p.Patient)
	}
	base += "-" + s.now().UTC().Format("2006-01-02")
	switch p.Format {
	case FormatSPHR:
		return base + ".sphr"
	case FormatPHR:
		return base + ".phr"
	case FormatNDJSON:
		return base + ".ndjson"
	}
	return base + ".json"
}

// ContentType is the Content-Type of an export's output.
func ContentType(p *Params) string {
	switch p.Format {
	case FormatSPHR:
		return "application/zip"
	case FormatNDJSON, FormatPHR:
		if p.FHIRNDJSON {
			return "application/fhir+ndjson"
		}
		return "application/x-ndjson"
	}
	return "application/fhir+json; charset=utf-8"
}

// Export writes the export p (checked by Prepare) to w. flush, when not
// nil, is called after each page so that a streamed response moves on.
// The error is for failures that stop the export (the client went away,
// the store failed); problems with single resources are written inline.
func (s *Service) Export(ctx context.Context, p *Params, w io.Writer, flush func()) (st Stats, err error) {
	cw := &countWriter{w: w}
	var hw *hashWriter
	out := io.Writer(cw)
	if p.Sign {
		hw = newHashWriter(cw)
		out = hw
	}
	e := &exporter{s: s, p: p, ctx: ctx, flush: flush, cw: cw, sharedDone: map[string]bool{}, binaries: map[string]bool{}}
	if pr := access.From(ctx); pr != nil && pr.Patient() != "" {
		e.confined = true
	}
	if e.em, err = s.newEmitter(ctx, p, out); err != nil {
		return st, err
	}
	defer func() {
		st.Resources, st.Outcomes, st.Bytes = e.resources, e.outcomes, cw.n
		if s.OnExport != nil {
			subj := ""
			if pr := access.From(ctx); pr != nil {
				subj = pr.Subject()
			}
			s.OnExport(ctx, Event{Subject: subj, Patient: p.Patient, Format: p.Format, Resources: st.Resources, Bytes: st.Bytes, Err: err})
		}
	}()
	if err = e.run(); err != nil {
		if ctx.Err() != nil {
			e.em.abort()
			return st, err
		}
		// Close the output properly, so that what was written stays
		// usable, and say that it is incomplete.
		e.outcome("fatal", "exception", "the export stopped early because of a server error; the resources before this line are complete")
		if ferr := e.em.finish(); ferr != nil {
			e.em.abort()
		}
		return st, err
	}
	if err = e.em.finish(); err != nil {
		return st, err
	}
	if hw != nil {
		if st.Signature, err = s.signer.SignDetached(hw.sum()); err != nil {
			return st, fmt.Errorf("sign the export: %w", err)
		}
	}
	return st, nil
}

// row is one stored resource read for the export. id and json are only
// valid until the next row is read (they point into the driver's buffers).
type row struct {
	rid  int64
	typ  string
	id   string
	json []byte
	blob string
}

type exporter struct {
	s     *Service
	p     *Params
	ctx   context.Context
	em    emitter
	flush func()
	cw    *countWriter
	// the page being written (reused)
	buf  []byte
	rows []buffered

	resources, outcomes int64
	// single-patient exports: shared resources already written and Binary
	// ids the record's attachments point at
	sharedDone map[string]bool
	binaries   map[string]bool
	// confined: the caller is patient-confined (see shared).
	confined bool
}

func (e *exporter) run() error {
	if err := e.body(); err != nil {
		return err
	}
	// What the scopes left out, at the end (the cover page stays first),
	// in one OperationOutcome.
	if len(e.p.excluded) == 0 {
		return nil
	}
	issues := make([]fhir.Issue, len(e.p.excluded))
	for i, msg := range e.p.excluded {
		issues[i] = fhir.Issue{Severity: "warning", Code: "forbidden", Diagnostics: msg}
	}
	e.outcomes += int64(len(issues))
	return e.em.outcome(fhir.OutcomeJSON(issues))
}

func (e *exporter) body() error {
	p := e.p
	if p.Patient != "" {
		if p.Format == FormatBundle {
			if err := e.cover(p.Patient, p.patientName); err != nil {
				return err
			}
		}
		return e.patient(p.Patient, true)
	}
	if p.Format == FormatBundle {
		ids, err := e.patientIDs("", 2)
		if err != nil {
			return err
		}
		subject, name := "", ""
		if len(ids) == 1 {
			subject = ids[0]
			ok, err := e.s.visible(e.ctx, access.From(e.ctx), "Patient", subject)
			if err != nil {
				return err
			}
			if res, err := e.s.db.Read(e.ctx, "Patient", subject); ok && err == nil && !res.Deleted {
				name = patientName(res.JSON)
			}
		}
		if err := e.cover(subject, name); err != nil {
			return err
		}
	}
	after := ""
	for {
		ids, err := e.patientIDs(after, 200)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if err := e.patient(id, false); err != nil {
				return err
			}
		}
		if len(ids) < 200 {
			break
		}
		after = ids[len(ids)-1]
	}
	return e.rest()
}

// patientIDs pages through the patients that have a compartment.
func (e *exporter) patientIDs(after string, limit int) ([]string, error) {
	rows, err := e.s.db.Query(e.ctx, `SELECT DISTINCT patient FROM compartment WHERE patient > ? ORDER BY patient LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list patients: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("list patients: %w", err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// patient writes one patient's group: cover page (NDJSON forms), Patient,
// compartment; for a single-patient export also the shared resources and
// Binaries it references.
func (e *exporter) patient(id string, single bool) error {
	pr := access.From(e.ctx)
	res, err := e.s.db.Read(e.ctx, "Patient", id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("read Patient/%s: %w", id, err)
	}
	show := false
	if err == nil && !res.Deleted {
		if show, err = e.s.visible(e.ctx, pr, "Patient", id); err != nil {
			return err
		}
	}
	if show {
		if e.p.Format != FormatBundle {
			if err := e.cover(id, patientName(res.JSON)); err != nil {
				return err
			}
		}
		if err := e.emit(&row{typ: "Patient", id: id, json: res.JSON, blob: res.Blob}); err != nil {
			return err
		}
	}
	where, args := e.filters("r", true)
	q := `SELECT r.rid, r.type, r.id, v.json, v.blob FROM compartment c JOIN resource r ON r.rid = c.rid JOIN resource_version v ON v.seq = r.seq
		WHERE c.patient = ? AND c.rid > ? AND ` + where
	if single {
		q += ` AND NOT (r.type = 'Patient' AND r.id = ?)`
	} else {
		// Every Patient heads its own group; a resource in several
		// compartments goes with the first of them.
		q += ` AND r.type <> 'Patient' AND NOT EXISTS (SELECT 1 FROM compartment c2 WHERE c2.rid = c.rid AND c2.patient < ?)`
	}
	q += ` ORDER BY c.rid LIMIT ?`
	var after int64
	for {
		a := append([]any{id, after}, args...)
		a = append(a, id, e.s.pageSize)
		more, last, err := e.page(q, a, single)
		if err != nil {
			return err
		}
		if !more {
			break
		}
		after = last
	}
	if single {
		return e.shared(id)
	}
	return nil
}

// rest writes the resources outside every compartment (whole-system
// exports).
func (e *exporter) rest() error {
	where, args := e.filters("r", true)
	q := `SELECT r.rid, r.type, r.id, v.json, v.blob FROM resource r JOIN resource_version v ON v.seq = r.seq
		WHERE r.rid > ? AND ` + where + ` AND NOT EXISTS (SELECT 1 FROM compartment c WHERE c.rid = r.rid) ORDER BY r.rid LIMIT ?`
	var after int64
	for {
		a := append([]any{after}, args...)
		a = append(a, e.s.pageSize)
		more, last, err := e.page(q, a, false)
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
		after = last
	}
}

// sharedTypes are the resource types outside the patient compartment, as a
// SQL list of literals (the names come from the R4 tables);
// sharedNotBinary the same without Binary.
var sharedTypes, sharedNotBinary = func() (string, string) {
	var b []string
	for _, t := range r4.ResourceTypes() {
		if records.Shared(t) && t != "Binary" {
			b = append(b, "'"+t+"'")
		}
	}
	return strings.Join(append(slices.Clone(b), "'Binary'"), ","), strings.Join(b, ",")
}()

// shared writes the shared resources a patient's record references
// (transitively: a PractitionerRole's Organization...), the Binaries its
// attachments point at, and those whose securityContext names it.
//
// For a patient-confined caller a Binary comes only through the record's
// attachments, not through a reference: any resource of the record may
// reference any resource (Observation.focus, Provenance.target), while an
// attachment of the record points only at a Binary that is the patient's
// (records: a patient's write that points elsewhere is refused).
func (e *exporter) shared(patient string) error {
	types := sharedTypes
	// A shared resource a patient owns is in their compartment, so the
	// patient's own are written already; for a patient-confined caller
	// those of other patients are not theirs to see (records: owner.go).
	owned := ""
	if e.confined {
		types = sharedNotBinary
		owned = ` AND NOT EXISTS (SELECT 1 FROM compartment o WHERE o.rid = t.rid)`
	}
	rows, err := e.s.db.Query(e.ctx, `WITH RECURSIVE refd(rid) AS (
		SELECT t.rid FROM compartment c JOIN idx_ref x ON x.rid = c.rid JOIN resource t ON t.type = x.target_type AND t.id = x.target_id
		WHERE c.patient = ? AND x.target_type IN (`+types+`)`+owned+`
		UNION
		SELECT t.rid FROM refd JOIN idx_ref x ON x.rid = refd.rid JOIN resource t ON t.type = x.target_type AND t.id = x.target_id
		WHERE x.target_type IN (`+types+`)`+owned+`
	) SELECT rid FROM refd`, patient)
	if err != nil {
		return fmt.Errorf("find referenced resources: %w", err)
	}
	var rids []int64
	for rows.Next() {
		var rid int64
		if err := rows.Scan(&rid); err != nil {
			rows.Close()
			return fmt.Errorf("find referenced resources: %w", err)
		}
		rids = append(rids, rid)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("find referenced resources: %w", err)
	}
	sort.Slice(rids, func(i, j int) bool { return rids[i] < rids[j] })
	where, args := e.filters("r", false)
	for len(rids) > 0 {
		n := min(len(rids), e.s.pageSize)
		part := rids[:n]
		rids = rids[n:]
		q := `SELECT r.rid, r.type, r.id, v.json, v.blob FROM resource r JOIN resource_version v ON v.seq = r.seq
			WHERE ` + where + ` AND r.rid IN (` + sqldb.Placeholders(n) + `) AND r.rid > ? ORDER BY r.rid`
		if err := chunk(e, q, args, part, true); err != nil {
			return err
		}
	}
	// Binaries whose securityContext names the record (also those no
	// attachment points at), and those found in attachments, not yet
	// written.
	if e.allowed("Binary") && e.s.rec != nil {
		if err := e.s.rec.BinariesInContext(e.ctx, func(p string) bool { return p == patient }, func(id string) { e.binaries[id] = true }); err != nil {
			return fmt.Errorf("find the Binaries of Patient/%s: %w", patient, err)
		}
	}
	var ids []string
	for id := range e.binaries {
		if !e.sharedDone["Binary/"+id] {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	if !e.allowed("Binary") {
		return nil
	}
	if e.confined && e.s.rec != nil {
		// The record's attachments point only at Binaries of its own
		// (records refuses a patient's write that points elsewhere), but
		// one whose securityContext names another record is not the
		// patient's, as a read would say.
		kept := ids[:0]
		for _, id := range ids {
			b, err := e.s.db.Read(e.ctx, "Binary", id)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return fmt.Errorf("read Binary/%s: %w", id, err)
			}
			ok, err := e.s.rec.SecurityContextAllows(e.ctx, b)
			if err != nil {
				return err
			}
			if ok {
				kept = append(kept, id)
			}
		}
		ids = kept
	}
	for len(ids) > 0 {
		n := min(len(ids), e.s.pageSize)
		part := ids[:n]
		ids = ids[n:]
		q := `SELECT r.rid, r.type, r.id, v.json, v.blob FROM resource r JOIN resource_version v ON v.seq = r.seq
			WHERE ` + where + ` AND r.type = 'Binary' AND r.id IN (` + sqldb.Placeholders(n) + `) AND r.rid > ? ORDER BY r.rid`
		if err := chunk(e, q, args, part, false); err != nil {
			return err
		}
	}
	return nil
}

func (e *exporter) allowed(typ string) bool {
	if e.p.types == nil {
		return typ != "AuditEvent"
	}
	return slices.Contains(e.p.types, typ)
}

// filters returns the WHERE conditions on alias r common to every query:
// current, of an allowed type, in the _since/_until window and, with
// dates, in the clinical date range.
func (e *exporter) filters(r string, dates bool) (string, []any) {
	p := e.p
	conds := []string{"NOT " + r + ".deleted"}
	var args []any
	if p.types == nil {
		conds = append(conds, r+".type <> 'AuditEvent'")
	} else {
		lits := make([]string, len(p.types))
		for i, t := range p.types {
			lits[i] = "'" + t + "'" // checked resource type names
		}
		conds = append(conds, r+".type IN ("+strings.Join(lits, ",")+")")
	}
	if !p.Since.IsZero() {
		conds = append(conds, r+".last_updated >= ?")
		args = append(args, p.Since.UnixMicro())
	}
	if !p.Until.IsZero() {
		conds = append(conds, r+".last_updated <= ?")
		args = append(args, p.Until.UnixMicro())
	}
	if dates && p.hasRange {
		var types, pairs []string
		for t, params := range clinicalDates {
			types = append(types, "'"+t+"'")
			for _, prm := range params {
				pairs = append(pairs, "'"+t+"|"+prm+"'")
			}
		}
		sort.Strings(types)
		sort.Strings(pairs)
		// index rows name their parameter by its id in search_param
		in := "d.pid IN (SELECT id FROM search_param WHERE (type || '|' || param) IN (" + strings.Join(pairs, ",") + "))"
		conds = append(conds, "("+r+".type NOT IN ("+strings.Join(types, ",")+")"+
			" OR NOT EXISTS (SELECT 1 FROM idx_date d WHERE d.rid = "+r+".rid AND "+in+")"+
			" OR EXISTS (SELECT 1 FROM idx_date d WHERE d.rid = "+r+".rid AND "+in+" AND d.low <= ? AND d.high >= ?))")
		args = append(args, p.endHigh, p.startLow)
	}
	return strings.Join(conds, " AND "), args
}

// chunk runs a query over a list of keys (args, then the keys, then the
// rid to continue after), page by page.
func chunk[K any](e *exporter, q string, args []any, keys []K, single bool) error {
	var after int64
	for {
		a := append([]any{}, args...)
		for _, k := range keys {
			a = append(a, k)
		}
		a = append(a, after)
		more, last, err := e.page(q, a, single)
		if err != nil || !more {
			return err
		}
		after = last
	}
}

// buffered is a row of the page being written; its id and JSON are ranges
// of exporter.buf.
type buffered struct {
	rid              int64
	typ, blob        string
	id0, id1, j0, j1 int
	// hidden: the caller's scope filters do not select it
	hidden bool
}

// page runs one page query and reads its rows into memory - at most
// pageSize rows and about pageBytes of JSON - so that the database
// connection goes back to the pool before anything is written to a client
// that may be slow; then it writes them. more reports that the page was
// full (another may follow after last, the last rid read).
func (e *exporter) page(q string, args []any, single bool) (more bool, last int64, err error) {
	rows, err := e.s.db.Query(e.ctx, q, args...)
	if err != nil {
		return false, 0, fmt.Errorf("read resources: %w", err)
	}
	var (
		typ, id, js sql.RawBytes
		blob        sql.NullString
		rid         int64
	)
	e.buf, e.rows = e.buf[:0], e.rows[:0]
	for rows.Next() {
		if err := rows.Scan(&rid, &typ, &id, &js, &blob); err != nil {
			rows.Close()
			return false, last, fmt.Errorf("read resources: %w", err)
		}
		b := buffered{rid: rid, blob: blob.String}
		// Type names come from a fixed set: no string per row for them.
		if t, ok := typeNames[string(typ)]; ok {
			b.typ = t
		} else {
			b.typ = string(typ)
		}
		b.id0 = len(e.buf)
		e.buf = append(e.buf, id...)
		b.id1 = len(e.buf)
		e.buf = append(e.buf, js...)
		b.j1 = len(e.buf)
		b.j0 = b.id1
		e.rows = append(e.rows, b)
		last = rid
		if len(e.rows) >= e.s.pageSize || len(e.buf) >= e.s.pageBytes {
			more = true
			break
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, last, fmt.Errorf("read resources: %w", err)
	}
	if len(e.p.filtered) > 0 {
		if err := e.applyFilters(); err != nil {
			return false, last, err
		}
	}
	var r row
	for _, b := range e.rows {
		if b.hidden {
			continue
		}
		r = row{rid: b.rid, typ: b.typ, id: unsafeString(e.buf[b.id0:b.id1]), json: e.buf[b.j0:b.j1], blob: b.blob}
		if single {
			if records.Shared(r.typ) {
				e.sharedDone[r.typ+"/"+r.id] = true // the concatenation copies
			}
			e.findBinaries(r.json)
		}
		if err := e.emit(&r); err != nil {
			return false, last, err
		}
	}
	if e.flush != nil {
		if err := e.em.flush(); err != nil {
			return false, last, err
		}
		e.flush()
	}
	if e.p.Progress != nil {
		e.p.Progress(e.resources, e.cw.n)
	}
	return more, last, nil
}

// applyFilters marks the rows of the page that the caller's SMART v2
// scope filters do not select (one search per filtered type and page).
func (e *exporter) applyFilters() error {
	byType := map[string][]int{}
	for i, b := range e.rows {
		if _, ok := e.p.filtered[b.typ]; ok {
			byType[b.typ] = append(byType[b.typ], i)
		}
	}
	for typ, idx := range byType {
		ids := make([]string, len(idx))
		for j, i := range idx {
			ids[j] = string(e.buf[e.rows[i].id0:e.rows[i].id1])
		}
		set, err := e.s.matchFilters(e.ctx, typ, e.p.filtered[typ], ids)
		if err != nil {
			return err
		}
		for j, i := range idx {
			e.rows[i].hidden = !set[ids[j]]
		}
	}
	return nil
}

var typeNames = func() map[string]string {
	m := map[string]string{}
	for _, t := range r4.ResourceTypes() {
		m[t] = t
	}
	return m
}()

// unsafeString views b as a string without copying; the string must not
// outlive b (see row).
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// findBinaries records the local Binary resources a resource points at
// (attachment urls, and references unless the caller is patient-confined:
// see shared).
func (e *exporter) findBinaries(raw []byte) {
	for _, id := range records.BinariesOf(raw, e.s.base, !e.confined) {
		e.binaries[id] = true
	}
}

// emit writes one resource, or an inline OperationOutcome when it cannot.
func (e *exporter) emit(r *row) error {
	if err := e.ctx.Err(); err != nil {
		return err
	}
	if r.typ == "Composition" && sphr.IsCoverPage(r.json) {
		return nil // a cover page an earlier export made and an import kept: each export makes its own
	}
	if !wellFormed(r.json) {
		return e.outcome("error", "processing", fmt.Sprintf("%s/%s could not be exported: its stored JSON is damaged (%d bytes)", r.typ, r.id, len(r.json)))
	}
	err := e.em.resource(r)
	var re *resourceError
	if errors.As(err, &re) {
		return e.outcome("error", "processing", fmt.Sprintf("%s/%s could not be exported: %v", r.typ, r.id, re.err))
	}
	if err != nil {
		return err
	}
	e.resources++
	return nil
}

func (e *exporter) outcome(severity, code, msg string) error {
	e.outcomes++
	return e.em.outcome(fhir.OutcomeJSON([]fhir.Issue{{Severity: severity, Code: code, Diagnostics: msg}}))
}

// wellFormed is the cheap check that a stored resource can go on one
// NDJSON line: a JSON object without raw line breaks.
func wellFormed(b []byte) bool {
	return len(b) >= 2 && b[0] == '{' && b[len(b)-1] == '}' && bytes.IndexByte(b, '\n') < 0
}

// cover writes the Composition cover page of a patient's record.
func (e *exporter) cover(patient, name string) error {
	source, err := e.s.source(e.ctx)
	if err != nil {
		return err
	}
	c := CoverPage(fhir.NewID(), patient, name, e.s.now(), e.p.Start, e.p.End, source)
	if err := e.em.resource(&row{typ: "Composition", id: c.GetString("id"), json: c.Marshal()}); err != nil {
		return err
	}
	e.resources++
	return nil
}

// storeIDKey is the setting that holds the store's id (source).
const storeIDKey = "store-id"

// source is what the cover page gives as the export's origin: the FHIR
// base, and when that is on a loopback address (every phr serve's default,
// the same on every machine) the store's own id after it as its fragment
// (sphr.StoreFragment). The id is made the first time it is needed and
// kept in the store, so every export of one store says the same, and two
// stores are two sources to an import of their exports.
func (s *Service) source(ctx context.Context) (string, error) {
	if !loopbackURL(s.base) {
		return s.base, nil
	}
	// Kept once read: InitKV writes, and would wait for an import's
	// transaction on SQLite's one writer.
	if id := s.storeID.Load(); id != nil {
		return s.base + "#" + sphr.StoreFragment + *id, nil
	}
	b, err := s.db.InitKV(ctx, storeIDKey, []byte(fhir.NewID()))
	if err != nil {
		return "", fmt.Errorf("store id: %w", err)
	}
	id := string(b)
	s.storeID.Store(&id)
	return s.base + "#" + sphr.StoreFragment + id, nil
}

// loopbackURL reports whether u is an http(s) URL on a loopback address
// (localhost, 127.0.0.0/8, ::1).
func loopbackURL(u string) bool {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") {
		return false
	}
	h := p.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// CoverPage builds the Composition an export starts with: LOINC 11503-0
// "Medical records", the patient as subject, tagged with
// sphr.CoverTagSystem so that imports can recognise it. Its meta.source
// is source, the exporting server's FHIR base (Service.source: with the
// store's id on a loopback base): an import of the file elsewhere takes
// it for the source label (sphr.CoverSource), the one `phr clone` of that
// server gives (when the base names the server), so that a later export
// of the same record updates what an earlier one brought.
func CoverPage(id, patient, name string, now time.Time, start, end, source string) *fhirjson.Value {
	str := fhirjson.NewString
	coding := fhirjson.NewObject(
		fhirjson.Field{Name: "system", Value: str("http://loinc.org")},
		fhirjson.Field{Name: "code", Value: str("11503-0")},
		fhirjson.Field{Name: "display", Value: str("Medical records")},
	)
	title := "Personal health record"
	if name != "" {
		title += " of " + name
	}
	c := fhirjson.NewObject(
		fhirjson.Field{Name: "resourceType", Value: str("Composition")},
		fhirjson.Field{Name: "id", Value: str(id)},
		fhirjson.Field{Name: "meta", Value: fhirjson.NewObject(fhirjson.Field{Name: "tag", Value: fhirjson.NewArray(fhirjson.NewObject(
			fhirjson.Field{Name: "system", Value: str(sphr.CoverTagSystem)},
			fhirjson.Field{Name: "code", Value: str(sphr.CoverTagCode)},
		))})},
		fhirjson.Field{Name: "status", Value: str("final")},
		fhirjson.Field{Name: "type", Value: fhirjson.NewObject(fhirjson.Field{Name: "coding", Value: fhirjson.NewArray(coding)}, fhirjson.Field{Name: "text", Value: str("Medical records")})},
	)
	if patient != "" {
		subj := fhirjson.NewObject(fhirjson.Field{Name: "reference", Value: str("Patient/" + patient)})
		if name != "" {
			subj.Set("display", str(name))
		}
		c.Set("subject", subj)
	}
	if source != "" {
		c.Get("meta").Set("source", str(source))
	}
	c.Set("date", str(fhir.FormatInstant(now)))
	c.Set("author", fhirjson.NewArray(fhirjson.NewObject(fhirjson.Field{Name: "display", Value: str("phr export")})))
	c.Set("title", str(title))
	if start != "" || end != "" {
		period := fhirjson.NewObject()
		if start != "" {
			period.Set("start", str(start))
		}
		if end != "" {
			period.Set("end", str(end))
		}
		c.Set("event", fhirjson.NewArray(fhirjson.NewObject(fhirjson.Field{Name: "period", Value: period})))
	}
	return c
}

// patientName returns a display name from a Patient's JSON.
func patientName(raw []byte) string {
	v, err := fhirjson.Parse(raw)
	if err != nil {
		return ""
	}
	return fhir.PatientName(v)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// resourceError marks a failure confined to one resource (reported inline).
type resourceError struct{ err error }

func (r *resourceError) Error() string { return r.err.Error() }
