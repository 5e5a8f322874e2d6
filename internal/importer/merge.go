package importer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/r4"
	"github.com/phr-project/phr/internal/records"
	"github.com/phr-project/phr/internal/store"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// action is what the merge decided for an item.
type action int

const (
	actNone action = iota
	actReject
	actCreate
	actUpdate
	actUnchanged
	actConflict
	actDelete
	actSkip
)

// item is one incoming resource (an NDJSON line or a Bundle entry).
type item struct {
	line int
	// entry is 1 + the index of the Bundle entry the item came from (0:
	// not from a Bundle), for the reports: every entry of a Bundle sent
	// on one line (as servers send them) is on line 1.
	entry int
	// raw is the input text, kept verbatim for quarantine.
	raw  []byte
	tree *fhirjson.Value
	// del marks a delete (a Bundle DELETE entry or a Bulk deleted[] entry).
	del     bool
	typ     string
	sid     string // the source's id
	fullURL string
	srcVer  string // the source's meta.versionId
	srcUpd  string // the source's meta.lastUpdated
	// localID is the local id chosen by identity resolution; known says it
	// came from this source's identity map.
	localID string
	known   bool
	knownUp string // src_updated recorded for the mapping
	knownV  string
	// knownAgreed is the local version recorded for the mapping: what the
	// source's last version was written as or found the same as.
	knownAgreed string
	// agreed is the local version this item is written as or found the
	// same as (records writes it to the identity map); empty otherwise.
	agreed string
	newMap bool // write the identity mapping
	// named says that the resource had no id and sid names it by its
	// content (see parseItem and bundleStream.nameByTargets).
	named bool
	// free says that identity resolution found localID free (or drew it
	// new) just now: no version of it exists, and loadCurrent does not
	// look for one.
	free   bool
	cur    *store.Resource
	act    action
	issues []fhir.Issue
	prep   *records.Prepared
	// incoming is the rewritten resource JSON of a conflict.
	incoming []byte
	idents   [][2]string
	// hash is the digest of the resource as received (canonical JSON).
	hash string
	seen bool
	// ownVersion is the local version this item is a copy of (the
	// record's own export read back, see recogniseOwn); ownSame says the
	// content is that version's.
	ownVersion int64
	ownSame    bool
	// prevAct is what the merge decided the first time, for an item
	// merged again (see redo); actNone otherwise.
	prevAct action
	// heldByPatient says that the resource stored under the item's source
	// id, which resolveTaken found to be another, is a patient's own
	// (records' PatientsOwn), for what the import says of it.
	heldByPatient bool
}

func (it *item) key() string { return it.typ + "/" + it.sid }

// mapped takes the local id, source version, source lastUpdated and
// agreed version of an identity map entry (lookupIdentity's values) for
// the item.
func (it *item) mapped(m [4]string) {
	it.localID, it.known, it.knownV, it.knownUp, it.knownAgreed = m[0], true, m[1], m[2], m[3]
}

// reject marks the item rejected with the issues.
func (it *item) reject(issues ...fhir.Issue) {
	it.act = actReject
	it.issues = append(it.issues, issues...)
}

func issue(severity, code, expr, format string, args ...any) fhir.Issue {
	is := fhir.Issue{Severity: severity, Code: code, Diagnostics: fmt.Sprintf(format, args...)}
	if expr != "" {
		is.Expression = []string{expr}
	}
	return is
}

// parseItem parses raw into the item's tree and fields (no I/O).
func parseItem(it *item) {
	if it.del || it.act == actReject {
		return
	}
	if it.tree == nil {
		v, err := fhirjson.Parse(it.raw)
		if err != nil {
			var se *fhirjson.SyntaxError
			msg := err.Error()
			if errors.As(err, &se) {
				_, col := fhirjson.Position(it.raw, se.Offset)
				msg = fmt.Sprintf("%s (column %d)", se.Msg, col)
			}
			it.reject(issue("error", "structure", "", "not valid JSON: %s", msg))
			return
		}
		it.tree = v
	}
	v := it.tree
	if v.Kind == fhirjson.String && strings.HasPrefix(strings.TrimSpace(v.Str), "{") {
		// A resource stored as a JSON string (encoded twice): unwrap it.
		inner, err := fhirjson.Parse([]byte(v.Str))
		if err == nil && inner.Kind == fhirjson.Object {
			it.issues = append(it.issues, issue("warning", "structure", "", "the resource was a JSON string holding JSON (encoded twice); decoded it"))
			v = inner
			it.tree = v
		}
	}
	if v.Kind != fhirjson.Object {
		it.reject(issue("error", "structure", "", "expected a JSON object (a FHIR resource), found %s", v.Kind))
		return
	}
	if x := v.Get("_id"); x != nil && x.Kind == fhirjson.String {
		// A database key (MongoDB/Meteor) left in the export, not FHIR.
		v.Delete("_id")
		it.issues = append(it.issues, issue("warning", "structure", "_id", "removed \"_id\": %q, a database key that is not FHIR (FHIR's _id must be an object)", x.Str))
	}
	rt := v.Get("resourceType")
	if rt == nil || rt.Kind != fhirjson.String {
		it.reject(issue("error", "required", "resourceType", "the resource has no resourceType"))
		return
	}
	if !r4.IsResourceType(rt.Str) {
		it.reject(issue("error", "value", "resourceType", "%q is not an R4 resource type", rt.Str))
		return
	}
	it.typ = rt.Str
	if id := v.Get("id"); id != nil {
		if id.Kind != fhirjson.String || !fhir.ValidID(id.Str) {
			it.reject(issue("error", "value", it.typ+".id", "the id %s is not a valid FHIR id (1-64 of A-Z a-z 0-9 - .)", id.Marshal()))
			return
		}
		it.sid = id.Str
	}
	it.hash = contentHash(v)
	if it.sid == "" {
		// No id: name it by its content, so that importing the same file
		// again finds it instead of creating a copy.
		it.nameByHash()
	}
	if meta := v.Get("meta"); meta != nil && meta.Kind == fhirjson.Object {
		it.srcVer = meta.GetString("versionId")
		it.srcUpd = meta.GetString("lastUpdated")
	}
	if ids := v.Get("identifier"); ids != nil {
		var list []*fhirjson.Value
		switch ids.Kind {
		case fhirjson.Array:
			list = ids.Items
		case fhirjson.Object:
			list = []*fhirjson.Value{ids}
		}
		for _, x := range list {
			if x.Kind != fhirjson.Object {
				continue
			}
			sys, val := x.GetString("system"), x.GetString("value")
			if sys != "" && val != "" && len(sys) < 512 && len(val) < 512 {
				it.idents = append(it.idents, [2]string{sys, val})
			}
		}
	}
}

// nameByHash names an item without an id by its content digest.
func (it *item) nameByHash() {
	it.sid = "h" + it.hash[:40]
	it.named = true
}

// canonBufs hold the canonical JSON contentHash digests, reused across
// resources.
var canonBufs = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// contentHash returns the hex SHA-256 of v's canonical JSON (members
// sorted): the digest by which an exact duplicate is recognised whatever
// its member order.
func contentHash(v *fhirjson.Value) string {
	bp := canonBufs.Get().(*[]byte)
	buf := v.AppendCanonical((*bp)[:0])
	sum := sha256.Sum256(buf)
	if cap(buf) <= 1<<20 { // let a huge one go
		*bp = buf
		canonBufs.Put(bp)
	}
	return hex.EncodeToString(sum[:])
}

// parallel runs f over items with the run's workers: the importer's
// Workers, or all CPUs for a run that only validates (mode=validate, which
// has no writer to leave a core to).
func (r *Run) parallel(items []*item, f func(*item)) {
	w := r.imp.Workers
	if w <= 0 || r.o.Validate {
		w = max(w, runtime.GOMAXPROCS(0))
	}
	if w == 1 || len(items) < 16 {
		for _, it := range items {
			f(it)
		}
		return
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	next := 0
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(items) {
					return
				}
				f(items[i])
			}
		}()
	}
	wg.Wait()
}

// chunk is the unit of processing: the items of a file part plus the
// fullUrl map of their Bundle.
type chunk struct {
	items []*item
	// bundle maps fullUrl (and urn:uuid:) to local "Type/id" for Bundle entries.
	bundle map[string]string
}

// process runs the merge over one chunk and writes it in one transaction.
func (r *Run) process(ch *chunk) error {
	ctx := r.ctx
	if err := ctx.Err(); err != nil {
		return err
	}
	r.parallel(ch.items, parseItem)
	if err := r.resolveIdentities(ctx, ch.items, ch); err != nil {
		return err
	}
	return r.processResolved(ch)
}

// nextAt returns the lastUpdated of the chunk's versions: now, after the
// previous chunk's.
func (r *Run) nextAt() time.Time {
	at := r.imp.rec.Now().UTC().Truncate(time.Microsecond)
	if !at.After(r.lastAt) {
		at = r.lastAt.Add(time.Microsecond)
	}
	r.lastAt = at
	return at
}

// resolveIdentities chooses the local id of every item: this source's
// identity map, then business identifiers, then the source's id when it is
// free, else a new id.
func (r *Run) resolveIdentities(ctx context.Context, items []*item, ch *chunk) error {
	if err := r.checkFresh(ctx); err != nil {
		return err
	}
	if len(r.ids) > 200000 {
		// Bounded memory; misses are looked up again, once the chunk
		// being written (whose identities are only here) has committed.
		if err := r.settle(); err != nil {
			return err
		}
		clear(r.ids)
		clear(r.own)
		clear(r.agreed)
		r.fresh = freshState{} // the identities of this run are not all here now
	}
	byType := map[string][]string{}
	for _, it := range items {
		if it.act == actReject {
			continue
		}
		if it.sid == "" {
			// No id: a new resource every time unless an identifier matches.
			continue
		}
		if _, ok := r.ids[it.key()]; ok && !it.del {
			continue // (a deletion reads what was last taken: decideDelete)
		}
		byType[it.typ] = append(byType[it.typ], it.sid)
	}
	var known map[string][4]string
	if !r.fresh.on { // else nothing recorded of the source but what r.ids holds
		var err error
		if known, err = r.lookupIdentities(ctx, byType); err != nil {
			return err
		}
	}
	var unresolved, ownMapped, shared []*item
	for _, it := range items {
		if it.act == actReject {
			continue
		}
		if it.sid != "" {
			if m, ok := known[it.key()]; ok {
				it.mapped(m)
				r.ids[it.key()] = it.localID
				if r.own[it.key()] {
					ownMapped = append(ownMapped, it)
				} else if r.forksShared(it) {
					shared = append(shared, it)
				}
				continue
			}
			if local, ok := r.ids[it.key()]; ok && it.del {
				// Written earlier in this run (a history Bundle's
				// version before the deletion), or only named by a
				// reference: decideDelete sees which.
				it.localID, it.known = local, true
				continue
			} else if ok {
				// Pre-assigned by a reference seen earlier in this run.
				it.localID = local
				it.newMap = true
				if r.own[it.key()] {
					ownMapped = append(ownMapped, it)
				}
				continue
			}
		}
		if it.del {
			it.act = actSkip
			it.issues = append(it.issues, issue("information", "not-found", "", "delete of %s/%s: nothing from this source to delete", it.typ, it.sid))
			continue
		}
		unresolved = append(unresolved, it)
	}
	if len(unresolved) == 0 && len(ownMapped) == 0 && len(shared) == 0 {
		return nil
	}
	// What follows reads resources, identifiers and ids that the chunk
	// being written may be adding.
	if err := r.settleForItems(ctx, slices.Concat(unresolved, ownMapped, shared), true); err != nil {
		return err
	}
	held, err := r.referenceData(ctx, shared)
	if err != nil {
		return err
	}
	// Versions of this record read back (its own export, or its own
	// history, whose later versions the identity map resolves once the
	// first is recognised).
	if err := r.recogniseOwn(ctx, slices.Concat(ownMapped, unresolved)); err != nil {
		return err
	}
	if len(unresolved) == 0 {
		return r.resolveTaken(ctx, held, ch)
	}
	// Business identifiers.
	if err := r.matchIdentifiers(ctx, unresolved); err != nil {
		return err
	}
	if err := r.matchOwnPatient(ctx, unresolved); err != nil {
		return err
	}
	// Is the source's id free locally?
	free := map[string][]string{}
	for _, it := range unresolved {
		if it.localID == "" && it.sid != "" {
			free[it.typ] = append(free[it.typ], it.sid)
		}
	}
	taken := map[string]bool{}
	for typ, ids := range free {
		if err := r.imp.existing(ctx, typ, ids, taken); err != nil {
			return err
		}
	}
	if len(taken) > 0 {
		// Another import of the source may have written these since
		// the identity map was read (or since checkFresh, when it was
		// not: fresh.go).
		if err := r.takenMapped(ctx, unresolved, taken); err != nil {
			return err
		}
	}
	// held: their ids another source uses, or the store's reference data
	// (referenceData): resolveTaken
	for _, it := range unresolved {
		if it.localID == "" {
			switch {
			case it.sid != "" && !taken[it.key()]:
				it.free, it.localID = true, it.sid
			case it.sid != "":
				held = append(held, it)
				continue
			default:
				it.free, it.localID = true, fhir.NewID()
			}
		}
		r.assigned(it)
	}
	return r.resolveTaken(ctx, held, ch)
}

// assigned records the local id that identity resolution chose for it.
func (r *Run) assigned(it *item) {
	it.newMap = it.sid != ""
	if it.sid != "" {
		r.ids[it.key()] = it.localID
	}
}

// Renamed is what an import says of a resource stored under a new id
// because another source uses its id for other content.
const Renamed = "already exists from another source; stored as"

// RenamedOwned is what an import that is not a patient's says, instead
// of Renamed, of a resource whose id a patient's own copy holds (records'
// PatientsOwn): that patient's upload brought it, under a source key of
// its own, so no --source makes this import's resource that one.
const RenamedOwned = "is held here by a patient's own copy; stored as"

// RenamedCopy is what a patient-scoped import says, instead of Renamed,
// of a shared resource or Binary that becomes the patient's own copy
// under a new id (see identSource): what holds its id may be the store's
// reference data or another member's copy from the very same source, so
// "another source" would send them looking for a label that changes
// nothing.
const RenamedCopy = "is stored already, but not as this record's (reference data, another record's copy or another source's); stored as this record's own copy"

// resolveTaken decides for the items whose source id another source
// already uses (merge rule 1): the same resource (sameAsStored) keeps the
// id and any other gets a new one. An item with a reference to another
// such item of the chunk waits until that one is decided, so the order of
// a file does not matter; items left waiting only for each other get new
// ids.
func (r *Run) resolveTaken(ctx context.Context, held []*item, ch *chunk) error {
	if len(held) == 0 {
		return nil
	}
	decided := map[string]string{} // fullUrl -> "Type/id"
	for _, it := range ch.items {
		if it.fullURL != "" && it.localID != "" && it.typ != "" {
			decided[it.fullURL] = it.typ + "/" + it.localID
		}
	}
	waiting := map[string]bool{} // "Type/id" and fullUrl of the held
	for _, it := range held {
		waiting[it.key()] = true
		if it.fullURL != "" {
			waiting[it.fullURL] = true
		}
	}
	settle := func(it *item, same bool) {
		if same {
			it.localID = it.sid // not free: decide reads it and finds it unchanged
		} else {
			it.free, it.localID = true, fhir.NewID()
			msg := Renamed
			switch {
			case r.identSource(it.typ) != r.source:
				msg = RenamedCopy
			case it.heldByPatient:
				msg = RenamedOwned
			}
			it.issues = append(it.issues, issue("information", "informational", "", "%s/%s "+msg+" %s/%s", it.typ, it.sid, it.typ, it.localID))
		}
		r.assigned(it)
		delete(waiting, it.key())
		if it.fullURL != "" {
			delete(waiting, it.fullURL)
			decided[it.fullURL] = it.typ + "/" + it.localID
		}
	}
	for len(held) > 0 {
		var next []*item
		for _, it := range held {
			same, wait, err := r.sameAsStored(ctx, it, ch, decided, waiting)
			if err != nil {
				return err
			}
			if wait {
				next = append(next, it)
				continue
			}
			settle(it, same)
		}
		if len(next) == len(held) {
			for _, it := range next {
				settle(it, false)
			}
			return nil
		}
		held = next
	}
	return nil
}

// matchIdentifiers matches items by business identifier against imported
// resources (and the Matcher when set). The candidates of an item are the
// resources that carry one of its identifiers; a candidate that carries
// another identifier of a system the item has, and none of the item's
// values of that system, is another resource (two people with one fake
// licence number are still two people). One candidate left is the match;
// several are reported as ambiguous, and the item is imported as a
// separate resource. When every one of several candidates is another
// resource, the identifier they share with the item names a group, not a
// resource (Synthea's ExplanationOfBenefits all carry one placeholder
// claim-group identifier beside their own claim id): nothing is reported.
func (r *Run) matchIdentifiers(ctx context.Context, items []*item) error {
	// The identifiers of every item, looked up together.
	var keys []identKey
	seen := map[identKey]bool{}
	for _, it := range items {
		for _, idn := range it.idents {
			k := identKey{it.typ, idn[0], idn[1]}
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	known := make(map[identKey][]string)
	if err := r.imp.identifierMatchesAll(ctx, keys, known); err != nil {
		return err
	}
	cands := make([][]string, len(items))
	var pairs [][2]string // (type, local id) of every candidate
	seenPair := map[[2]string]bool{}
	for i, it := range items {
		if len(it.idents) == 0 || it.localID != "" {
			continue
		}
		for _, idn := range it.idents {
			ids := known[identKey{it.typ, idn[0], idn[1]}]
			var err error
			if len(ids) == 0 && r.imp.Matcher != nil && searchIdentifiers[it.typ] {
				ids, err = r.imp.Matcher.Match(ctx, it.typ, url.Values{"identifier": {idn[0] + "|" + idn[1]}}, r.matchLimit(2))
				if err != nil {
					return err
				}
			}
			for _, id := range ids {
				if ok, err := r.mayMerge(ctx, it.typ, id); err != nil {
					return err
				} else if !ok {
					continue
				}
				if !slices.Contains(cands[i], id) {
					cands[i] = append(cands[i], id)
				}
				if p := [2]string{it.typ, id}; !seenPair[p] {
					seenPair[p] = true
					pairs = append(pairs, p)
				}
			}
		}
	}
	if len(pairs) == 0 {
		return nil
	}
	// The chunk being written may add identifiers to a candidate.
	if err := r.settleIf(func(fl *flight) bool {
		for _, p := range pairs {
			if fl.keys[p[0]+"/"+p[1]] {
				return true
			}
		}
		return false
	}); err != nil {
		return err
	}
	theirs, err := r.imp.identifiersOfAll(ctx, pairs)
	if err != nil {
		return err
	}
	for i, it := range items {
		if len(cands[i]) == 0 {
			continue
		}
		var fits []string
		sys := ""
		for _, id := range cands[i] {
			if s := contradiction(it.idents, theirs[[2]string{it.typ, id}]); s != "" {
				sys = s
				continue
			}
			fits = append(fits, id)
		}
		switch {
		case len(fits) == 1:
			it.localID = fits[0]
		case len(fits) > 1:
			it.issues = append(it.issues, issue("warning", "multiple-matches", it.typ+".identifier", "the identifiers match several existing %s resources; imported as a separate resource", it.typ))
		case len(cands[i]) == 1:
			it.issues = append(it.issues, issue("warning", "informational", it.typ+".identifier", "an identifier matches %s/%s but their %s identifiers differ; imported as a separate resource", it.typ, cands[i][0], sys))
		}
	}
	return nil
}

// matchOwnPatient takes, in a run of a patient-scoped token, an incoming
// Patient that nothing else matched for the token's own patient when their
// birth dates or family names agree and none differs (samePerson): the
// only patient such a run may write. A
// vaccination card or a lab's file carries the person's Patient without
// an identifier this record knows; without this, it would be a new
// Patient outside the token's compartment, rejected with everything that
// points at it. One whose family name or birth date differs is left to
// be rejected.
func (r *Run) matchOwnPatient(ctx context.Context, items []*item) error {
	if !r.confined() {
		return nil
	}
	pid := r.p.Patient()
	for _, it := range items {
		if it.typ != "Patient" || it.localID != "" || it.tree == nil || it.act == actReject {
			continue
		}
		if !r.ownLoaded {
			res, err := r.readVisible(ctx, "Patient", pid)
			if err != nil {
				return err
			}
			if res != nil { // else no Patient resource yet: this one becomes it
				if r.ownPatient, err = fhirjson.Parse(res.JSON); err != nil {
					return fmt.Errorf("read Patient/%s: %w", pid, err)
				}
			}
			r.ownLoaded = true
		}
		if why := samePerson(it.tree, r.ownPatient); why != "" {
			it.issues = append(it.issues, issue("information", "informational", "", "this Patient is not the record's patient (Patient/%s): %s", pid, why))
			continue
		}
		it.localID = pid
		if r.ownPatient == nil {
			it.issues = append(it.issues, issue("information", "informational", "", "taken as Patient/%s, the record's patient, which has no Patient resource yet", pid))
			// The next ones are compared with this one.
			r.ownPatient = it.tree
		} else {
			it.issues = append(it.issues, issue("information", "informational", "", "taken as Patient/%s, the record's patient: their birth dates or family names agree", pid))
		}
	}
	return nil
}

// samePerson says why Patient a may not be taken for the person Patient b
// is, or "" when it may: their birth dates are the same or their family
// names share one, and neither differs (another birth date, or family
// names none of which the other has). b nil (the record has no Patient
// yet) is anyone.
func samePerson(a, b *fhirjson.Value) string {
	if b == nil {
		return ""
	}
	agree := false
	if x, y := a.GetString("birthDate"), b.GetString("birthDate"); x != "" && y != "" {
		if x != y {
			return fmt.Sprintf("born %s, not %s", x, y)
		}
		agree = true
	}
	families := func(p *fhirjson.Value) []string {
		var out []string
		if ns := p.Get("name"); ns != nil && ns.Kind == fhirjson.Array {
			for _, n := range ns.Items {
				if f := strings.ToLower(strings.TrimSpace(n.GetString("family"))); f != "" {
					out = append(out, f)
				}
			}
		}
		return out
	}
	if fa, fb := families(a), families(b); len(fa) > 0 && len(fb) > 0 {
		if !slices.ContainsFunc(fa, func(f string) bool { return slices.Contains(fb, f) }) {
			return fmt.Sprintf("family name %q, not %q", fa[0], fb[0])
		}
		agree = true
	}
	if !agree {
		return "neither a birth date nor a family name says it is"
	}
	return ""
}

// mayMatch reports whether the run may match an item to the resource
// typ/id by business identifier. A run of a patient-scoped token matches
// only resources the token may read: another patient's resource that
// carries the identifier is not the same fact, and the run's answer must
// not tell that it exists (it would be rejected as belonging to another
// record, and the item with it). Other runs do not match a patient's own
// copy of reference data (records.Service.Unowned).
func (r *Run) mayMatch(ctx context.Context, typ, id string) (bool, error) {
	confined := r.confined()
	if !confined && !index.Ownable(typ) {
		return true, nil
	}
	k := typ + "/" + id
	if ok, seen := r.readable[k]; seen {
		return ok, nil
	}
	res, err := r.readVisible(ctx, typ, id)
	if err != nil {
		return false, err
	}
	if !confined && res != nil {
		if ok, err := r.imp.rec.Unowned(res); err != nil {
			return false, err
		} else if !ok {
			res = nil
		}
	}
	if r.readable == nil {
		r.readable = map[string]bool{}
	}
	if len(r.readable) > 10000 {
		clear(r.readable)
	}
	r.readable[k] = res != nil
	return res != nil, nil
}

// mayMerge reports whether the run may take an item for the resource
// typ/id because their business identifiers match (mayMatch). A
// patient-scoped run does not take its shared resources for the store's
// reference data: what it says otherwise could neither update that (it is
// not the patient's) nor be kept, so the item becomes the patient's own
// copy instead (records: owner.go). One sent under the reference data's
// own id and saying the same is still found the same (resolveTaken).
func (r *Run) mayMerge(ctx context.Context, typ, id string) (bool, error) {
	if !r.confined() || !index.Ownable(typ) {
		return r.mayMatch(ctx, typ, id)
	}
	// (mayMatch of a patient-scoped run is this read, not nil)
	res, err := r.readVisible(ctx, typ, id)
	if err != nil || res == nil {
		return false, err
	}
	unowned, err := r.imp.rec.Unowned(res)
	return !unowned, err
}

// matchLimit is how many matches of a search to read for n: n, or for a
// patient-scoped run, which drops those of other records (mayMatch),
// enough that the ones it may see are among them.
func (r *Run) matchLimit(n int) int {
	if r.confined() {
		return records.ConfinedMatches
	}
	return n
}

// mayMatchAll keeps the ids of typ that mayMatch allows.
func (r *Run) mayMatchAll(ctx context.Context, typ string, ids []string) ([]string, error) {
	if !r.confined() && !index.Ownable(typ) {
		return ids, nil
	}
	var out []string
	for _, id := range ids {
		ok, err := r.mayMatch(ctx, typ, id)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, id)
		}
	}
	return out, nil
}

// sameAsStored reports whether the resource that another source stored
// under the item's id is the item itself: the same content once its
// references are rewritten (as decide compares it). The same file
// imported under two source labels is then one record, not two copies; a
// resource that says something else under that id is another one (merge
// rule 1), and so is one with a reference whose target cannot be told
// (predictRef). wait says that a reference leads to an item still waiting
// (the keys and fullUrls of waiting); decided maps the fullUrls of the
// chunk's items resolved so far to their local "Type/id".
func (r *Run) sameAsStored(ctx context.Context, it *item, ch *chunk, decided map[string]string, waiting map[string]bool) (same, wait bool, err error) {
	if it.tree == nil {
		return false, false, nil
	}
	unknown := false
	withRefs(it.tree, func(ref string) string {
		if unknown || err != nil {
			return ref
		}
		out, st, perr := r.predictRef(ctx, ref, ch, decided, waiting)
		switch {
		case perr != nil:
			err = perr
		case st == refKnown:
			return out
		case st == refWaits:
			wait = true
		default:
			unknown = true
		}
		return ref
	}, func() {
		if err != nil || unknown || wait {
			return
		}
		var cur *store.Resource
		if cur, err = r.readVisible(ctx, it.typ, it.sid); err == nil && cur != nil {
			tree := it.tree
			if records.Shared(it.typ) && r.confined() {
				tree = tree.Clone()
				records.Confine(r.p, it.typ, tree, cur)
			}
			if same = sameContent(tree, cur); !same && !r.confined() && records.Shared(it.typ) {
				it.heldByPatient, err = r.imp.rec.PatientsOwn(ctx, cur)
			}
		}
	})
	if err != nil || unknown {
		return false, false, err
	}
	return same, wait, nil
}

// refState says how far predictRef can tell a reference's rewrite.
type refState int

const (
	refKnown   refState = iota
	refWaits            // on an item of the chunk still waiting (resolveTaken)
	refUnknown          // on what is not resolved yet
)

// predictRef tells what rewrite will make of a reference of an item of
// the chunk being resolved, from what is known now and without changing
// anything. It cannot tell for an entry still to come, an identifier an
// item of the chunk also carries, or a match by search. A resource this
// source has not sent yet is taken to keep the id the reference gives it:
// if it never comes, the reference stays as it is; if it comes later and
// is another than the one stored under that id, the item that relied on
// it is then merged with the stored one as a conflict, nothing lost.
// (A record's export lists the Practitioners and Organizations that its
// resources point at after them.)
func (r *Run) predictRef(ctx context.Context, ref string, ch *chunk, decided map[string]string, waiting map[string]bool) (string, refState, error) {
	if local, ok := ch.bundle[ref]; ok {
		return local, refKnown, nil
	}
	if local, ok := decided[ref]; ok {
		return local, refKnown, nil
	}
	if waiting[ref] {
		return "", refWaits, nil
	}
	if strings.HasPrefix(ref, "urn:uuid:") || strings.HasPrefix(ref, "urn:oid:") {
		return "", refUnknown, nil
	}
	if t, q, ok := strings.Cut(ref, "?"); ok && r4.IsResourceType(t) {
		if local, ok := r.cond[t+"?"+q]; ok {
			return local, refKnown, nil
		}
		vals, err := url.ParseQuery(q)
		if err != nil {
			return "", refUnknown, nil
		}
		sys, val, hasSys, ok := identifierQuery(vals)
		if !ok || !hasSys {
			return "", refUnknown, nil
		}
		for _, it := range ch.items {
			if it.typ == t && slices.Contains(it.idents, [2]string{sys, val}) {
				return "", refUnknown, nil
			}
		}
		matches, err := r.imp.identifierMatches(ctx, t, sys, val)
		if err != nil || len(matches) != 1 {
			return "", refUnknown, err
		}
		return t + "/" + matches[0], refKnown, nil
	}
	pr, ok := r.sourceRef(ref)
	if !ok {
		return ref, refKnown, nil
	}
	key := pr.Type + "/" + pr.ID
	if waiting[key] {
		return "", refWaits, nil
	}
	local, ok := r.ids[key]
	if !ok && !r.fresh.on {
		// What prefetchRefs will find: this source's identity map.
		known, err := r.lookupIdentities(ctx, map[string][]string{pr.Type: {pr.ID}})
		if err != nil {
			return "", refUnknown, err
		}
		if m, found := known[key]; found {
			local, ok = m[0], true
		}
	}
	if !ok {
		local = pr.ID
	}
	return localRef(pr, local), refKnown, nil
}

// readVisible reads the current version of typ/id as the run's token
// may: nil when it may not, or there is none (the client's errors of
// records.Read: not found, gone, forbidden).
func (r *Run) readVisible(ctx context.Context, typ, id string) (*store.Resource, error) {
	res, err := r.imp.rec.Read(ctx, typ, id)
	var fe *fhir.Error
	switch {
	case err == nil:
		return res, nil
	case errors.As(err, &fe) && fe.Status < 500:
		return nil, nil
	}
	return nil, fmt.Errorf("read %s/%s: %w", typ, id, err)
}

// searchIdentifiers are the types whose business identifiers are also
// matched by search (resources written outside imports): the people and
// places records are about, few in number, where a match matters most.
var searchIdentifiers = map[string]bool{"Patient": true, "Practitioner": true, "Organization": true, "Location": true, "PractitionerRole": true}

// rewriteAll rewrites the references of every item of the chunk (whose
// targets prefetchRefs looked up, and whose items that may point forward
// deferForward moved out).
func (r *Run) rewriteAll(ctx context.Context, ch *chunk) error {
	for _, it := range ch.items {
		if it.act == actReject || it.del {
			continue
		}
		if err := r.rewrite(ctx, it, ch); err != nil {
			return err
		}
	}
	return nil
}

// prefetchRefs looks up in bulk the identities of the plain reference
// targets the items name that the run has not resolved yet.
func (r *Run) prefetchRefs(ctx context.Context, items []*item, ch *chunk) error {
	// Collect plain targets not yet in the cache, then look them up in bulk.
	need := map[string][]string{}
	seen := map[string]bool{}
	for _, it := range items {
		if it.act == actReject || it.del {
			continue
		}
		walkRefs(it.tree, func(ref string) string {
			if _, ok := ch.bundle[ref]; ok {
				return ref
			}
			pr, ok := r.sourceRef(ref)
			if !ok {
				return ref
			}
			k := pr.Type + "/" + pr.ID
			if _, ok := r.ids[k]; ok || seen[k] || !r4.IsResourceType(pr.Type) {
				return ref
			}
			seen[k] = true
			need[pr.Type] = append(need[pr.Type], pr.ID)
			return ref
		})
	}
	if len(need) > 0 && !r.fresh.on {
		// Targets this source sent before map through its identity map;
		// others are kept as they are (unresolvable ones are reported by
		// validation only when malformed).
		known, err := r.lookupIdentities(ctx, need)
		if err != nil {
			return err
		}
		for k, m := range known {
			r.ids[k] = m[0]
		}
	}
	return nil
}

// rewrite rewrites one item's references through the identity map.
func (r *Run) rewrite(ctx context.Context, it *item, ch *chunk) error {
	var ferr error
	walkRefs(it.tree, func(ref string) string {
		if ferr != nil {
			return ref
		}
		if local, ok := ch.bundle[ref]; ok {
			return local
		}
		if strings.HasPrefix(ref, "urn:uuid:") || strings.HasPrefix(ref, "urn:oid:") {
			it.issues = append(it.issues, issue("warning", "not-found", "", "reference %q names no entry of the Bundle; kept as it is", ref))
			return ref
		}
		if t, q, ok := strings.Cut(ref, "?"); ok && r4.IsResourceType(t) {
			local, err := r.resolveConditional(ctx, t, q, ch)
			if err != nil {
				ferr = err
				return ref
			}
			if local == "" {
				it.issues = append(it.issues, issue("warning", "not-found", "", "conditional reference %q matches no resource; kept as it is", ref))
				return ref
			}
			return local
		}
		pr, ok := r.sourceRef(ref)
		if !ok {
			return ref
		}
		if local, ok := r.ids[pr.Type+"/"+pr.ID]; ok {
			return localRef(pr, local)
		}
		if pr.Base != "" {
			return pr.Type + "/" + pr.ID
		}
		return ref
	})
	return ferr
}

// walkRefs calls f on every Reference.reference string in v, and on
// every url that points at a Binary (linkURL), and replaces it with the
// result.
func walkRefs(v *fhirjson.Value, f func(string) string) {
	switch v.Kind {
	case fhirjson.Object:
		for i := range v.Fields {
			fl := &v.Fields[i]
			if fl.Value.Kind == fhirjson.String && (fl.Name == "reference" || fl.Name == "url" && linkURL(fl.Value.Str) && v.Get("resourceType") == nil) {
				if out := f(fl.Value.Str); out != fl.Value.Str {
					fl.Value = fhirjson.NewString(out)
				}
				continue
			}
			if fl.Value.Kind == fhirjson.Object || fl.Value.Kind == fhirjson.Array {
				walkRefs(fl.Value, f)
			}
		}
	case fhirjson.Array:
		for _, x := range v.Items {
			if x.Kind == fhirjson.Object || x.Kind == fhirjson.Array {
				walkRefs(x, f)
			}
		}
	}
}

// linkURL reports whether the value of a url element is a link the
// identity map rewrites like a reference: an attachment's url that points
// at a Binary of the source (Binary/[id], [base]/Binary/[id]) or at a
// Bundle entry (urn:uuid:). FHIR's transaction rules replace such links
// in url elements too; without it, a source's document whose Binary is
// stored under a new id (its id taken by another source's) would show
// the other source's content. (walkRefs leaves alone the url of a
// resource itself, its canonical URL, which may be a urn:uuid: too.)
func linkURL(s string) bool {
	if strings.HasPrefix(s, "urn:uuid:") {
		return true
	}
	i := strings.Index(s, "Binary/")
	return i == 0 || i > 0 && s[i-1] == '/'
}

// withRefs calls f while each Reference.reference string of v reads as
// sub makes it, then puts back what each was (walkRefs visits them in the
// same order each time): to compare or hash a resource as if its
// references were rewritten, without rewriting them.
func withRefs(v *fhirjson.Value, sub func(string) string, f func()) {
	var olds []string
	walkRefs(v, func(ref string) string {
		olds = append(olds, ref)
		return sub(ref)
	})
	defer func() {
		i := 0
		walkRefs(v, func(string) string { i++; return olds[i-1] })
	}()
	f()
}

// sourceRef parses a plain reference to a resource of this source:
// relative, or under the source's own base. ok is false for any other
// (another server's, a contained resource's, urn:, conditional), which
// the identity map does not resolve.
func (r *Run) sourceRef(ref string) (pr fhir.Reference, ok bool) {
	pr, ok = fhir.ParseReference(ref)
	return pr, ok && (pr.Base == "" || pr.Base == r.source)
}

// localRef is the reference pr pointing at the local id local, with its
// version when it names one.
func localRef(pr fhir.Reference, local string) string {
	out := pr.Type + "/" + local
	if pr.Version != "" {
		out += "/_history/" + pr.Version
	}
	return out
}

// identifierQuery reads the query of a conditional reference that asks
// for one identifier only: its value, and its system when it gives one
// (hasSys). ok is false for any other query.
func identifierQuery(q url.Values) (sys, val string, hasSys, ok bool) {
	ids := q["identifier"]
	if len(q) != 1 || len(ids) != 1 {
		return "", "", false, false
	}
	if sys, val, hasSys = strings.Cut(ids[0], "|"); !hasSys {
		sys, val = "", ids[0]
	}
	return sys, val, hasSys, true
}

// resolveConditional resolves "Type?query" to "Type/id" ("" when nothing
// matches): entries of the same Bundle, imported identifiers, then search.
func (r *Run) resolveConditional(ctx context.Context, typ, query string, ch *chunk) (string, error) {
	key := typ + "?" + query
	if local, ok := r.cond[key]; ok {
		return local, nil
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", nil
	}
	local := ""
	if sys, val, hasSys, ok := identifierQuery(q); ok {
		for _, it := range ch.items {
			if it.typ != typ || it.localID == "" || it.act == actReject {
				continue
			}
			for _, idn := range it.idents {
				if idn[1] == val && (!hasSys || idn[0] == sys) {
					local = typ + "/" + it.localID
				}
			}
		}
		if local == "" && hasSys {
			// The lookups see committed data only.
			if err := r.settleForConditional(typ, q["identifier"], false); err != nil {
				return "", err
			}
			ids, err := r.imp.identifierMatches(ctx, typ, sys, val)
			if err == nil {
				ids, err = r.mayMatchAll(ctx, typ, ids)
			}
			if err != nil {
				return "", err
			}
			if len(ids) == 1 {
				local = typ + "/" + ids[0]
			}
		}
	}
	if local == "" && r.imp.Matcher != nil {
		if err := r.settleForConditional(typ, q["identifier"], len(q) != 1); err != nil {
			return "", err
		}
		ids, err := r.imp.Matcher.Match(ctx, typ, q, r.matchLimit(2))
		if err == nil {
			ids, err = r.mayMatchAll(ctx, typ, ids)
		}
		if err != nil {
			return "", err
		}
		if len(ids) == 1 {
			local = typ + "/" + ids[0]
		}
	}
	if local != "" {
		if len(r.cond) > 100000 {
			clear(r.cond)
		}
		r.cond[key] = local
	}
	return local, nil
}

// loadCurrent reads the current versions of the items' local resources.
func (r *Run) loadCurrent(ctx context.Context, items []*item) error {
	// The current versions and digests, by local id and digest: the
	// items' identifiers are not read.
	if err := r.settleForItems(ctx, items, false); err != nil {
		return err
	}
	// A resource whose id resolveIdentities found free has no versions:
	// the only chunk of the run that can commit since is the one being
	// written, and the settle before that check covered it. Not reading
	// them again saves the server an index probe and a join per new
	// resource.
	byType := map[string][]string{}
	for _, it := range items {
		if it.act == actReject || it.act == actSkip || it.localID == "" || it.free {
			continue
		}
		byType[it.typ] = append(byType[it.typ], it.localID)
	}
	seen := map[string]bool{}
	if r.fresh.on {
		for _, it := range items {
			if it.hash != "" && it.act != actReject && !it.del && r.fresh.digests[keyOf(it.hash)] {
				seen[it.hash] = true
			}
		}
	} else if err := r.seenHashes(ctx, items, seen); err != nil {
		return err
	}
	for _, it := range items {
		it.seen = it.hash != "" && seen[it.hash]
	}
	cur := map[string]*store.Resource{}
	for typ, ids := range byType {
		if err := r.imp.currentVersions(ctx, typ, ids, cur); err != nil {
			return err
		}
	}
	for _, it := range items {
		if c, ok := cur[it.typ+"/"+it.localID]; ok {
			it.cur = c
		}
	}
	return nil
}

// decide applies the merge rules.
func (r *Run) decide(items []*item) {
	for _, it := range items {
		if it.act == actReject || it.act == actSkip {
			continue
		}
		if it.del {
			r.decideDelete(it)
			continue
		}
		it.tree.SetAfter("id", fhirjson.NewString(it.localID), "resourceType")
		records.Confine(r.p, it.typ, it.tree, it.cur)
		switch {
		case it.cur == nil:
			it.act = actCreate
		case it.cur.Deleted:
			if it.known && !r.deletedHere[it.typ+"/"+it.localID] {
				it.act = actUnchanged
				it.issues = append(it.issues, issue("information", "deleted", "", "%s/%s was deleted here; the import does not bring it back", it.typ, it.localID))
			} else {
				it.act = actCreate
			}
		case it.ownSame:
			// A version this record has, read back from its own export.
			it.act = actUnchanged
			if it.ownVersion != it.cur.Version {
				it.issues = append(it.issues, issue("information", "informational", "", "%s/%s is version %d of this record's own resource, which is now at version %d; nothing to import", it.typ, it.localID, it.ownVersion, it.cur.Version))
			}
		case it.seen:
			// An exact duplicate of something this source sent before.
			it.act = actUnchanged
		case sameContent(it.tree, it.cur):
			it.act = actUnchanged
			it.agreed = strconv.FormatInt(it.cur.Version, 10)
			// (What this run writes has its source in meta.source: only
			// another source's version needs remembering here.)
			r.agreed[it.typ+"/"+it.localID] = it.cur.Version
		default:
			r.decideChange(it)
		}
		switch it.act {
		case actCreate, actUpdate:
			it.agreed = strconv.FormatInt(it.nextVersion(), 10)
		}
	}
}

// nextVersion is the version number a write of the item gives its
// resource.
func (it *item) nextVersion() int64 {
	if it.cur == nil {
		return 1
	}
	return it.cur.Version + 1
}

// agreesWith reports whether the current version of the item's resource
// is what the source's last version was written as or found the same as
// (in this run, or as the identity map records it): the source's own
// statement, even when another source wrote it.
func (r *Run) agreesWith(it *item) bool {
	if v, ok := r.agreed[it.typ+"/"+it.localID]; ok {
		return v == it.cur.Version
	}
	return it.known && it.knownAgreed == strconv.FormatInt(it.cur.Version, 10)
}

// decideChange decides for an item whose content is not the current
// version's: from the same source, a newer version supplements and an
// older or equal one is a conflict; from another source, one that says
// less than what is here and nothing else changes nothing (a vaccination
// card's Patient, a name and a birth date, against the record's own), and
// any other is a conflict.
func (r *Run) decideChange(it *item) {
	switch {
	case metaSource(it.cur.JSON) == r.source || r.agreesWith(it):
		if r.newer(it) {
			it.act = actUpdate
		} else {
			it.act = actConflict
		}
	case covered(it.tree, it.cur):
		it.act = actUnchanged
	default:
		it.act = actConflict
	}
}

// newer reports whether an item from the same source is newer than what
// was last taken from it: by meta.lastUpdated, else meta.versionId; when
// the source gives neither, its latest export is taken as its newest state.
func (r *Run) newer(it *item) bool {
	if it.srcUpd != "" && it.knownUp != "" {
		a, err1 := fhir.ParseInstant(it.srcUpd)
		b, err2 := fhir.ParseInstant(it.knownUp)
		if err1 == nil && err2 == nil {
			return a.After(b)
		}
	}
	if it.srcVer != "" && it.knownV != "" {
		a, err1 := strconv.ParseInt(it.srcVer, 10, 64)
		b, err2 := strconv.ParseInt(it.knownV, 10, 64)
		if err1 == nil && err2 == nil {
			return a > b
		}
		return it.srcVer != it.knownV
	}
	return true
}

// decideDelete: a delete from a source removes only what that source
// alone contributed.
func (r *Run) decideDelete(it *item) {
	switch {
	case it.cur == nil:
		it.act = actSkip
		it.issues = append(it.issues, issue("information", "not-found", "", "delete of %s/%s: nothing from this source to delete", it.typ, it.sid))
	case it.cur.Deleted:
		it.act = actUnchanged
	case (it.srcUpd != "" || it.srcVer != "") && !r.newer(it):
		// The source's later version is here already: a deletion
		// before it, read again (its history imported once more).
		it.act = actUnchanged
	case metaSource(it.cur.JSON) != r.source:
		it.act = actSkip
		it.issues = append(it.issues, issue("information", "conflict", "", "delete of %s/%s not applied: its current version came from another source", it.typ, it.localID))
	default:
		it.act = actDelete
		if len(r.deletedHere) >= 100000 {
			clear(r.deletedHere) // bounded; see decide
		}
		r.deletedHere[it.typ+"/"+it.localID] = true
	}
}

// metaSource returns meta.source of stored JSON without a full parse
// where possible.
func metaSource(js []byte) string {
	i := bytes.Index(js, []byte(`"source":`))
	if i < 0 {
		return ""
	}
	v, err := fhirjson.Parse(js)
	if err != nil {
		return ""
	}
	if m := v.Get("meta"); m != nil && m.Kind == fhirjson.Object {
		return m.GetString("source")
	}
	return ""
}

// sameContent compares an incoming resource with a stored version,
// ignoring meta.versionId, meta.lastUpdated and meta.source. A Binary's
// data is compared with its stored blob by digest.
func sameContent(in *fhirjson.Value, cur *store.Resource) bool {
	stored, err := fhirjson.Parse(cur.JSON)
	if err != nil {
		return false
	}
	a := normalized(in)
	b := normalized(stored)
	if cur.Type == "Binary" {
		if d := a.Get("data"); d != nil && d.Kind == fhirjson.String {
			raw, err := base64.StdEncoding.DecodeString(strings.Map(func(r rune) rune {
				if r == ' ' || r == '\n' || r == '\r' || r == '\t' {
					return -1
				}
				return r
			}, d.Str))
			if err != nil {
				return false
			}
			sum := sha256.Sum256(raw)
			if cur.Blob != "binary/"+hex.EncodeToString(sum[:]) {
				return false
			}
			a.Delete("data")
			b.Delete("data")
		}
	}
	return fhirjson.Equal(a, b)
}

// covered reports whether the stored version cur holds everything the
// incoming resource says: each of its members, with the same value or
// one that holds it, and each element of its arrays in some element of
// the stored array. meta's version, time and source are not compared.
func covered(in *fhirjson.Value, cur *store.Resource) bool {
	stored, err := fhirjson.Parse(cur.JSON)
	if err != nil {
		return false
	}
	return holds(normalized(stored), normalized(in))
}

// holds reports whether b holds everything a says (see covered).
func holds(b, a *fhirjson.Value) bool {
	switch {
	case a.Kind == fhirjson.Object && b.Kind == fhirjson.Object:
		for _, f := range a.Fields {
			bv := b.Get(f.Name)
			if bv == nil || !holds(bv, f.Value) {
				return false
			}
		}
		return true
	case a.Kind == fhirjson.Array && b.Kind == fhirjson.Array:
		for _, x := range a.Items {
			if !slices.ContainsFunc(b.Items, func(y *fhirjson.Value) bool { return holds(y, x) }) {
				return false
			}
		}
		return true
	}
	return fhirjson.Equal(a, b)
}

// normalized returns a shallow copy of a resource without the meta
// elements the server sets.
func normalized(v *fhirjson.Value) *fhirjson.Value {
	out := &fhirjson.Value{Kind: fhirjson.Object, Fields: make([]fhirjson.Field, 0, len(v.Fields))}
	for _, f := range v.Fields {
		if f.Name == "meta" && f.Value.Kind == fhirjson.Object {
			m := &fhirjson.Value{Kind: fhirjson.Object}
			for _, mf := range f.Value.Fields {
				switch mf.Name {
				case "versionId", "lastUpdated", "source":
				default:
					m.Fields = append(m.Fields, mf)
				}
			}
			if len(m.Fields) == 0 {
				continue
			}
			f = fhirjson.Field{Name: "meta", Value: m}
		}
		out.Fields = append(out.Fields, f)
	}
	return out
}

// prepareItem validates and builds the version of a create or update, and
// validates a conflict's incoming side.
func (r *Run) prepareItem(it *item, at time.Time) {
	switch it.act {
	case actCreate, actUpdate, actConflict:
	default:
		return
	}
	version := it.nextVersion()
	method := "PUT"
	if it.cur == nil {
		method = "POST"
	}
	if it.cur != nil && !at.After(it.cur.LastUpdated) {
		at = it.cur.LastUpdated.Add(time.Microsecond)
	}
	tree := it.tree
	if it.act == actConflict {
		it.incoming = tree.Marshal()
		tree = tree.Clone()
	}
	p, err := r.imp.rec.PrepareVersion(tree, it.typ, it.localID, version, at, method, records.WriteOptions{Source: r.source, Batch: r.sum.Batch})
	if err != nil {
		fe := fhir.AsError(err)
		if fe.Status >= 500 {
			it.reject(issue("error", "exception", "", "%v", err))
		} else {
			it.reject(fe.Issues...)
		}
		return
	}
	if it.act != actConflict {
		it.prep = p
	}
}

// checkAccess applies the principal's scopes and patient compartment:
// records' checks of a write (records.Service.CheckWrite) for a prepared
// version; for a delete or a conflict (nothing prepared), the scopes and
// whose the stored resource is.
//
// A patient-scoped run's documents may point at Binaries it writes, and a
// Binary's securityContext may name a document it writes (FHIR's own
// pattern), before either is committed (records.Pending): what the chunk
// writes and what earlier chunks accepted count as accepted, so a
// rejection takes its item out of them, and the items checked before it
// are checked again until none relied on a rejected one. A deferred item
// (one to come later in the run) a Binary's securityContext may name, not
// an attachment: so a record's export, whose documents come first and
// wait for their Binaries, arrives whole however its chunks fall.
func (r *Run) checkAccess(ctx context.Context, items []*item) {
	p := r.p
	confined := p.Patient() != ""
	local := func(it *item) string { return it.typ + "/" + it.localID }
	var writing map[string]bool
	// binaries: a Binary is written, the only kind of item others rely on
	// (by an attachment, or its securityContext naming another).
	binaries := false
	if confined {
		writing = map[string]bool{}
		for _, it := range items {
			if it.prep != nil && (it.act == actCreate || it.act == actUpdate) {
				writing[local(it)] = true
				binaries = binaries || it.typ == "Binary"
			}
		}
	}
	pending := records.Pending{
		Accepted: func(typ, id string) bool {
			k := typ + "/" + id
			return writing[k] || r.accepted[k]
		},
		Later: r.deferredHere,
	}
	rejected := false
	check := func(it *item, i access.Interaction) {
		if err := r.imp.rec.CheckWrite(ctx, p, i, it.prep, it.cur, pending); err != nil {
			var fe *fhir.Error
			if !errors.As(err, &fe) || fe.Status >= 500 || len(fe.Issues) == 0 {
				it.reject(issue("error", "exception", "", "%s/%s: %v", it.typ, it.localID, err))
			} else {
				it.reject(fe.Issues[0])
			}
			if writing[local(it)] {
				delete(writing, local(it))
				rejected = true
			}
			r.forgetDeferred(local(it))
		}
	}
	for _, it := range items {
		var i access.Interaction
		switch it.act {
		case actCreate:
			i = access.Create
		case actUpdate, actConflict:
			i = access.Update
		case actDelete:
			i = access.Delete
		default:
			continue
		}
		if it.prep != nil {
			check(it, i)
			continue
		}
		if !p.Allows(i, it.typ) {
			it.reject(issue("error", "forbidden", "", "the access token does not allow %s of %s", i, it.typ))
			continue
		}
		if !confined {
			continue
		}
		if !records.PatientOwned(it.typ) {
			it.reject(issue("error", "forbidden", "", "a patient-scoped token cannot write %s resources, which are outside every patient compartment", it.typ))
			continue
		}
		if it.cur != nil {
			if ok, err := r.imp.rec.Owns(ctx, it.cur); err != nil || !ok {
				it.reject(issue("error", "forbidden", "", "%s/%s belongs to another patient's record", it.typ, it.localID))
			}
		}
	}
	for rejected && binaries {
		rejected = false
		for _, it := range items {
			if writing[local(it)] && it.act != actReject {
				i := access.Update
				if it.act == actCreate {
					i = access.Create
				}
				check(it, i)
			}
		}
	}
	for k := range writing {
		if len(r.accepted) >= maxAccepted {
			break
		}
		r.accepted[k] = true
	}
}

// maxAccepted bounds Run.accepted: a patient's record rarely holds more.
const maxAccepted = 200000

// deferredHere reports whether the run has deferred an item for the local
// typ/id, to be written once its scope (or the enclosing run's) ends, or
// being written now that it does; one that was refused is forgotten
// (forgetDeferred).
func (r *Run) deferredHere(typ, id string) bool {
	k := typ + "/" + id
	for _, sc := range []*deferScope{r.scope, r.runScope, r.replayed} {
		if sc != nil && sc.local[k] {
			return true
		}
	}
	return false
}

// forgetDeferred takes a refused item out of deferredHere's answers.
func (r *Run) forgetDeferred(k string) {
	for _, sc := range []*deferScope{r.scope, r.runScope, r.replayed} {
		if sc != nil {
			delete(sc.local, k)
		}
	}
}

// write counts and reports the chunk's items, then commits them (in the
// background, see startWrite): versions, identity rows, identifiers,
// conflicts, quarantine and a Provenance citing the versions written.
func (r *Run) write(ctx context.Context, ch *chunk) error {
	items := ch.items
	var written []*item
	for _, it := range items {
		switch it.act {
		case actCreate, actUpdate, actDelete:
			written = append(written, it)
		}
	}
	// Count and report.
	var d Summary
	for _, it := range items {
		d.Resources++
		switch it.act {
		case actCreate:
			d.Created++
		case actUpdate:
			d.Updated++
		case actUnchanged:
			d.Unchanged++
		case actConflict:
			d.Conflicts++
		case actReject:
			d.Rejected++
		case actDelete:
			d.Deleted++
		}
		r.reportItem(it)
	}
	r.sum.add(d, 1)
	if r.o.Validate {
		return nil
	}
	for _, it := range written {
		if it.prep != nil {
			if err := r.imp.rec.StoreBlob(ctx, it.prep); err != nil {
				return err
			}
		}
	}
	var provs []*records.Prepared
	if len(written) > 0 {
		var err error
		provs, err = r.provenance(written)
		if err != nil {
			return err
		}
	}
	return r.startWrite(ctx, &chunkWrite{items: items, written: written, provs: provs, file: r.fileName, lastAt: r.lastAt,
		now: sqldb.Micros(time.Now()), counts: [6]int{r.sum.Created, r.sum.Updated, r.sum.Unchanged, r.sum.Conflicts, r.sum.Rejected, r.sum.Deleted},
		bundle: ch.bundle, delta: d, attempt: r.attempt})
}

// commit writes the chunk of fl in one transaction. It runs in the
// background (startWrite) and reads only fl, its chunk and the run's
// fixed fields.
func (r *Run) commit(ctx context.Context, fl *flight) error {
	w := fl.w
	items, written, now := w.items, w.written, w.now
	write := r.imp.db.WriteTx
	if r.imp.writers > 1 {
		// See awaitEarlier.
		write = r.imp.db.WriteTxOnce
		if fl.prev != nil {
			select {
			case <-fl.prev.begun:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	err := write(ctx, func(tx *sqldb.Tx) error {
		if r.imp.writers > 1 {
			// For the chunk after it (awaitEarlier).
			if err := tx.HoldKey(ctx, fl.key); err != nil {
				return err
			}
			fl.start()
		}
		// A chunk's commit does not wait for the disk (PostgreSQL): a
		// crash of the database server may lose the chunks committed in
		// its last few hundred milliseconds, which leaves the batch
		// unfinished and a re-run imports them again (without duplicates:
		// the identity map and digests were lost with them). Finish marks
		// the batch done with an ordinary commit, which makes every chunk
		// before it durable.
		if err := tx.AsyncCommit(ctx); err != nil {
			return err
		}
		// New resources go in bulk (prepared in startWrite); new
		// versions one by one.
		if err := tx.PutNewPrepared(ctx, w.fresh); err != nil {
			return err
		}
		for _, it := range written {
			if it.act == actCreate && it.cur == nil {
				continue
			}
			var put *store.Put
			if it.act == actDelete {
				put = &store.Put{Resource: store.Resource{Type: it.typ, ID: it.localID, Version: it.cur.Version + 1, LastUpdated: w.lastAt, Deleted: true, Method: "DELETE"}, Batch: r.sum.Batch}
				if !w.lastAt.After(it.cur.LastUpdated) {
					put.LastUpdated = it.cur.LastUpdated.Add(time.Microsecond)
				}
			} else {
				put = it.prep.Put
			}
			if err := tx.Put(ctx, put); err != nil {
				return err
			}
		}
		if !w.fresh.Encoded() {
			// Not sent with the new resources: written here.
			for _, t := range w.records {
				if err := insertMulti(ctx, tx, t.table, t.cols, t.rows, t.suffix); err != nil {
					return fmt.Errorf("record %s: %w", t.what, err)
				}
			}
		}
		for _, it := range items {
			switch it.act {
			case actConflict:
				if err := r.insertConflict(ctx, tx, it, now); err != nil {
					return err
				}
			case actReject:
				reason := fhir.OutcomeJSON(it.issues)
				if _, err := tx.Exec(ctx, `INSERT INTO import_quarantine (batch, file, line, entry, reason, text) VALUES (?, ?, ?, ?, ?, ?)`,
					r.sum.Batch, w.file, it.line, it.entry, string(reason), it.raw); err != nil {
					return fmt.Errorf("quarantine line %d: %w", it.line, err)
				}
			}
		}
		// The batch's row last, after the chunk before it committed:
		// that chunk updates it too.
		if err := r.awaitEarlier(ctx, tx, fl); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE import_batch SET created = ?, updated = ?, unchanged = ?, conflicts = ?, rejected = ?, deleted = ?, heartbeat = ? WHERE id = ?`,
			w.counts[0], w.counts[1], w.counts[2], w.counts[3], w.counts[4], w.counts[5], now, r.sum.Batch)
		return err
	})
	if err != nil {
		return fmt.Errorf("write import chunk (%s): %w", w.file, err)
	}
	return nil
}

// recordRows are rows of one of the importer's tables (identity map,
// digests, identifiers) that a chunk adds. When fresh, the rows are not
// expected to exist (new identity map entries, digests not seen, the
// identifiers of created resources): on PostgreSQL they go in with a
// COPY, which costs the server less than INSERT ... ON CONFLICT, and only
// if one exists after all (another import of the same source at the same
// time) with an insert with suffix (see sqldb.RawCopy.Fallback).
type recordRows struct {
	what, table, cols, suffix string
	fresh                     bool
	rows                      [][]any
}

// records returns the identity map entries, digests and identifiers the
// items add, each table's rows without repeated keys (see dedupe).
func (r *Run) records(items []*item) []recordRows {
	var newIDRows, idRows, seenRows, newIdentRows, identRows [][]any
	for _, it := range items {
		switch it.act {
		case actCreate, actUpdate, actUnchanged, actConflict:
		default:
			continue
		}
		// (An unchanged item's entry is written again when the version the
		// source agrees with moved.)
		if it.sid != "" && (it.newMap || it.act == actUpdate || it.act == actCreate || it.agreed != "" && it.agreed != it.knownAgreed) {
			row := []any{r.identSource(it.typ), it.typ, it.sid, it.localID, it.srcVer, it.srcUpd, it.agreed}
			if it.act == actCreate && !it.known {
				newIDRows = append(newIDRows, row)
			} else {
				idRows = append(idRows, row)
			}
		}
		if !it.seen && it.hash != "" {
			seenRows = append(seenRows, []any{r.identSource(it.typ), it.hash})
		}
		if it.act == actCreate || it.act == actUpdate {
			for _, idn := range it.idents {
				row := []any{it.typ, idn[0], idn[1], it.localID}
				if it.act == actCreate {
					newIdentRows = append(newIdentRows, row)
				} else {
					identRows = append(identRows, row)
				}
			}
		}
	}
	const (
		idTable    = "import_identity"
		idCols     = "source, type, source_id, local_id, src_version, src_updated, agreed"
		idSuffix   = " ON CONFLICT (source, type, source_id) DO UPDATE SET local_id = excluded.local_id, src_version = excluded.src_version, src_updated = excluded.src_updated, agreed = excluded.agreed"
		identTable = "import_identifier"
		identCols  = "type, system, value, local_id"
	)
	out := []recordRows{
		{"identities", idTable, idCols, idSuffix, true, newIDRows},
		{"identities", idTable, idCols, idSuffix, false, idRows},
		{"digests", "import_seen", "source, hash", " ON CONFLICT DO NOTHING", true, seenRows},
		{"identifiers", identTable, identCols, " ON CONFLICT DO NOTHING", true, newIdentRows},
		{"identifiers", identTable, identCols, " ON CONFLICT DO NOTHING", false, identRows},
	}
	for i := range out {
		out[i].rows = dedupe(out[i].table, out[i].rows, out[i].suffix)
		// In key order: the keys are random (ids, digests), and rows
		// inserted in order visit each page of the table's B-tree once,
		// in turn, rather than jumping across it row by row.
		slices.SortFunc(out[i].rows, compareTextRows)
	}
	r.recordedFresh(seenRows)
	return out
}

// compareTextRows orders rows of text values column by column, bytewise:
// the order of the importer tables' keys (their leading columns) under
// SQLite's BINARY and PostgreSQL's "C" collation.
func compareTextRows(a, b []any) int {
	for i := range min(len(a), len(b)) {
		if c := strings.Compare(a[i].(string), b[i].(string)); c != 0 {
			return c
		}
	}
	return len(a) - len(b)
}

// add adds the rows to b: fresh ones as a COPY, which writes them in bulk,
// that falls back on the insert of encode with suffix should one exist
// after all (sqldb.RawCopy.Fallback); others with encode.
func (t recordRows) add(b *sqldb.NewBatch) error {
	if len(t.rows) == 0 {
		return nil
	}
	if !t.fresh {
		b.Add(t.encode()...)
		return nil
	}
	cp, err := sqldb.TextCopy(t.table, strings.Split(t.cols, ", "), t.rows, func() sqldb.RawStmt { return t.encode()[0] })
	if err != nil {
		return fmt.Errorf("record %s: %w", t.what, err)
	}
	b.AddCopy(cp)
	return nil
}

// encode returns the rows as an insert of column arrays (all columns are
// text) followed by suffix, for sqldb.NewBatch.Add; nil when there are
// none.
func (t recordRows) encode() []sqldb.RawStmt {
	if len(t.rows) == 0 {
		return nil
	}
	names := strings.Split(t.cols, ", ")
	cols := make([]*sqldb.ArrayCol, len(names))
	for c := range cols {
		cols[c] = sqldb.NewArrayCol("text")
	}
	for _, row := range t.rows {
		for c, v := range row {
			cols[c].Text(v.(string))
		}
	}
	return []sqldb.RawStmt{sqldb.ArrayInsert(t.table, names, cols, t.suffix)}
}

// insertConflict stores a conflict unless the same incoming content is
// already open for the resource (re-importing must not pile them up).
func (r *Run) insertConflict(ctx context.Context, tx *sqldb.Tx, it *item, now int64) error {
	sum := sha256.Sum256(it.incoming)
	h := hex.EncodeToString(sum[:])
	var n int
	if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM import_conflict WHERE type = ? AND local_id = ? AND hash = ? AND status = 'open'`, it.typ, it.localID, h).Scan(&n); err != nil {
		return fmt.Errorf("check conflicts: %w", err)
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `INSERT INTO import_conflict (batch, type, local_id, source, line, hash, incoming, current_version, current_source, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.sum.Batch, it.typ, it.localID, r.source, it.line, h, it.incoming, it.cur.Version, metaSource(it.cur.JSON), now); err != nil {
		return fmt.Errorf("record conflict: %w", err)
	}
	return nil
}

// reportItem sends an item's issues (and its conflict) to the caller.
func (r *Run) reportItem(it *item) {
	where := r.fileName
	prefix := ""
	if where != "" {
		prefix = where + " "
	}
	if r.attempt > 0 && it.prevAct != actNone {
		// Merged again (redo): the caller has the issues of the first
		// time, and a conflict already reported.
		if it.act != actConflict || it.prevAct == actConflict {
			return
		}
	}
	at := fmt.Sprintf("%sline %d", prefix, it.line)
	if it.entry > 0 {
		at += fmt.Sprintf(", Bundle.entry[%d]", it.entry-1)
	}
	for _, is := range it.issues {
		is.Diagnostics = at + ": " + is.Diagnostics
		r.report(is)
	}
	if it.act == actConflict {
		r.report(fhir.Issue{Severity: "warning", Code: "conflict",
			Diagnostics: fmt.Sprintf("%s: %s/%s differs from the current version %d (from %s); kept as a conflict to resolve", at, it.typ, it.localID, it.cur.Version, orUnknown(metaSource(it.cur.JSON)))})
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "a direct write"
	}
	return s
}

// provenance builds the Provenances of a chunk: one per set of patients
// whose compartments the written versions are in, citing those versions,
// with the source and the importing user as agents. Each names its
// patients (index.ProvenancePatientExtension), so that a patient sees the
// Provenance of what an import wrote into their record and never one
// about another patient's; versions outside every compartment get one
// Provenance of their own, visible to system-level users only.
func (r *Run) provenance(written []*item) ([]*records.Prepared, error) {
	type group struct {
		patients []string
		targets  []*fhirjson.Value
	}
	var groups []*group
	byKey := map[string]*group{}
	for _, it := range written {
		var version int64
		var pats []string
		if it.act == actDelete {
			version, pats = it.cur.Version+1, patientsOfStored(it.cur)
		} else {
			version, pats = it.prep.Put.Version, it.prep.Put.Patients
		}
		pats = slices.Clone(pats)
		slices.Sort(pats)
		key := strings.Join(pats, "\x00")
		g := byKey[key]
		if g == nil {
			g = &group{patients: pats}
			byKey[key] = g
			groups = append(groups, g)
		}
		g.targets = append(g.targets, fhirjson.NewObject(fhirjson.Field{Name: "reference", Value: fhirjson.NewString(fmt.Sprintf("%s/%s/_history/%d", it.typ, it.localID, version))}))
	}
	out := make([]*records.Prepared, 0, len(groups))
	for _, g := range groups {
		p, err := r.imp.buildProvenance(r.lastAt, g.targets, g.patients, r.source, r.p.Subject(), r.fileName, r.sum.Batch, "import", "")
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// patientsOfStored returns the patients whose compartments a stored
// version is in (none when it cannot be read).
func patientsOfStored(res *store.Resource) []string {
	if res == nil || res.Deleted || res.JSON == nil {
		return nil
	}
	v, err := fhirjson.Parse(res.JSON)
	if err != nil {
		return nil
	}
	e, err := index.Extract(res.Type, v)
	if err != nil && len(e.Refs) == 0 {
		return nil
	}
	return records.Patients(res.Type, res.ID, &e)
}

// patientExtensions names the patients a Provenance is about.
func patientExtensions(patients []string) *fhirjson.Value {
	exts := make([]*fhirjson.Value, 0, len(patients))
	for _, pid := range patients {
		exts = append(exts, fhirjson.NewObject(
			fhirjson.Field{Name: "url", Value: fhirjson.NewString(index.ProvenancePatientExtension)},
			fhirjson.Field{Name: "valueReference", Value: fhirjson.NewObject(fhirjson.Field{Name: "reference", Value: fhirjson.NewString("Patient/" + pid)})},
		))
	}
	return fhirjson.NewArray(exts...)
}

// buildProvenance prepares a Provenance resource. It names the patients
// whose records it is about with index.ProvenancePatientExtension, which
// puts it in their compartments.
func (imp *Importer) buildProvenance(at time.Time, targets []*fhirjson.Value, patients []string, source, who, file string, batch int64, activity, reason string) (*records.Prepared, error) {
	id := fhir.NewID()
	var agents []*fhirjson.Value
	if source != "" {
		agents = append(agents, fhirjson.NewObject(
			fhirjson.Field{Name: "type", Value: codeable("http://terminology.hl7.org/CodeSystem/provenance-participant-type", "author", "Author")},
			fhirjson.Field{Name: "who", Value: fhirjson.NewObject(fhirjson.Field{Name: "display", Value: fhirjson.NewString(source)})},
		))
	}
	if who != "" {
		agents = append(agents, fhirjson.NewObject(
			fhirjson.Field{Name: "type", Value: codeable("http://terminology.hl7.org/CodeSystem/provenance-participant-type", "enterer", "Enterer")},
			fhirjson.Field{Name: "who", Value: fhirjson.NewObject(fhirjson.Field{Name: "display", Value: fhirjson.NewString(who)})},
		))
	}
	fields := []fhirjson.Field{
		{Name: "resourceType", Value: fhirjson.NewString("Provenance")},
		{Name: "id", Value: fhirjson.NewString(id)},
		{Name: "target", Value: fhirjson.NewArray(targets...)},
		{Name: "recorded", Value: fhirjson.NewString(fhir.FormatInstant(at))},
		{Name: "activity", Value: activityCode(activity)},
		{Name: "agent", Value: fhirjson.NewArray(agents...)},
	}
	if len(patients) > 0 {
		fields = slices.Insert(fields, 2, fhirjson.Field{Name: "extension", Value: patientExtensions(patients)})
	}
	var ents []*fhirjson.Value
	if file != "" {
		ents = append(ents, fhirjson.NewObject(
			fhirjson.Field{Name: "role", Value: fhirjson.NewString("source")},
			fhirjson.Field{Name: "what", Value: fhirjson.NewObject(fhirjson.Field{Name: "display", Value: fhirjson.NewString(file)})},
		))
	}
	if batch != 0 {
		ents = append(ents, fhirjson.NewObject(
			fhirjson.Field{Name: "role", Value: fhirjson.NewString("source")},
			fhirjson.Field{Name: "what", Value: fhirjson.NewObject(
				fhirjson.Field{Name: "identifier", Value: fhirjson.NewObject(
					fhirjson.Field{Name: "system", Value: fhirjson.NewString(BatchSystem)},
					fhirjson.Field{Name: "value", Value: fhirjson.NewString(strconv.FormatInt(batch, 10))})},
				fhirjson.Field{Name: "display", Value: fhirjson.NewString(fmt.Sprintf("import batch %d", batch))})},
		))
	}
	if len(ents) > 0 {
		fields = append(fields, fhirjson.Field{Name: "entity", Value: fhirjson.NewArray(ents...)})
	}
	if reason != "" {
		at := slices.IndexFunc(fields, func(f fhirjson.Field) bool { return f.Name == "activity" })
		fields = slices.Insert(fields, at, fhirjson.Field{Name: "reason", Value: fhirjson.NewArray(fhirjson.NewObject(fhirjson.Field{Name: "text", Value: fhirjson.NewString(reason)}))})
	}
	tree := fhirjson.NewObject(fields...)
	p, err := imp.rec.PrepareVersion(tree, "Provenance", id, 1, at, "POST", records.WriteOptions{Source: source, Batch: batch})
	if err != nil {
		return nil, fmt.Errorf("build Provenance: %w", err)
	}
	return p, nil
}

// BatchSystem is the identifier system of import batches in Provenance.entity.
const BatchSystem = "urn:phr:import-batch"

func codeable(system, code, display string) *fhirjson.Value {
	return fhirjson.NewObject(fhirjson.Field{Name: "coding", Value: fhirjson.NewArray(fhirjson.NewObject(
		fhirjson.Field{Name: "system", Value: fhirjson.NewString(system)},
		fhirjson.Field{Name: "code", Value: fhirjson.NewString(code)},
		fhirjson.Field{Name: "display", Value: fhirjson.NewString(display)},
	))})
}

func activityCode(activity string) *fhirjson.Value {
	switch activity {
	case "revert", "resolve":
		return codeable("http://terminology.hl7.org/CodeSystem/v3-DataOperation", "UPDATE", "revise")
	}
	return fhirjson.NewObject(
		fhirjson.Field{Name: "coding", Value: fhirjson.NewArray(fhirjson.NewObject(
			fhirjson.Field{Name: "system", Value: fhirjson.NewString("http://terminology.hl7.org/CodeSystem/v3-DataOperation")},
			fhirjson.Field{Name: "code", Value: fhirjson.NewString("CREATE")},
			fhirjson.Field{Name: "display", Value: fhirjson.NewString("create")},
		))},
		fhirjson.Field{Name: "text", Value: fhirjson.NewString("import")},
	)
}

var _ = http.StatusOK

// contradiction returns a system both identifier lists use with no value
// in common ("" when none): the first such system of a. It allocates
// nothing, as the lists are short and it runs for pairs of resources
// (see settleForItems).
func contradiction(a, b [][2]string) string {
	for i, x := range a {
		if !hasSystem(b, x[0]) || hasSystem(a[:i], x[0]) {
			continue // not in b, or checked already
		}
		common := false
		for _, y := range a[i:] {
			if y[0] == x[0] && slices.Contains(b, y) {
				common = true
				break
			}
		}
		if !common {
			return x[0]
		}
	}
	return ""
}

// hasSystem reports whether ids has an identifier of system sys.
func hasSystem(ids [][2]string, sys string) bool {
	for _, x := range ids {
		if x[0] == sys {
			return true
		}
	}
	return false
}
