package search

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/api"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/r4"
	"github.com/phr-project/phr/internal/records"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// auditType is kept out of wildcard retrievals (everything, Patient/x/*,
// _include=*, _revinclude=*) unless _type asks for it: the server writes
// one per access, and they would swamp a patient's record.
const auditType = "AuditEvent"

// requestParams returns the search parameters of a GET, or of a POST
// _search (form body plus URL query).
func requestParams(r *http.Request) (url.Values, error) {
	if r.Method != http.MethodPost {
		return r.URL.Query(), nil
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, _ := mime.ParseMediaType(ct)
		if mt != "application/x-www-form-urlencoded" {
			return nil, fhir.Errorf(http.StatusUnsupportedMediaType, "not-supported", "POST _search takes application/x-www-form-urlencoded parameters, not %q", mt)
		}
	}
	r.Body = http.MaxBytesReader(nil, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		return nil, fhir.BadRequest("reading the _search parameters: %v", err)
	}
	return r.Form, nil
}

// lenient reports whether the client asked for Prefer: handling=lenient.
func lenient(r *http.Request) bool {
	for _, h := range r.Header.Values("Prefer") {
		for _, tok := range strings.FieldsFunc(h, func(c rune) bool { return c == ',' || c == ';' }) {
			k, v, _ := strings.Cut(strings.TrimSpace(tok), "=")
			if strings.TrimSpace(k) == "handling" && strings.Trim(strings.TrimSpace(v), `"`) == "lenient" {
				return true
			}
		}
	}
	return false
}

// ServeSearch is the api.SearchHandler: typ is "" for system search;
// compType/compID name a compartment.
func (e *Engine) ServeSearch(w http.ResponseWriter, r *http.Request, typ, compType, compID string) {
	if err := e.serveSearch(w, r, typ, compType, compID); err != nil {
		api.WriteError(w, r, err)
	}
}

func (e *Engine) serveSearch(w http.ResponseWriter, r *http.Request, typ, compType, compID string) error {
	ctx := r.Context()
	p, err := principal(ctx)
	if err != nil {
		return err
	}
	v, err := requestParams(r)
	if err != nil {
		return err
	}
	if compType != "" && compType != "Patient" {
		return fhir.Errorf(http.StatusBadRequest, "not-supported", "only the Patient compartment can be searched, not %s", compType)
	}
	types, explicit, err := searchTypes(p, typ, compType, v)
	if err != nil {
		return err
	}
	if len(types) == 0 {
		return fhir.Forbidden("the access token allows searching no resource type")
	}
	q, err := parse(types, v, lenient(r))
	if err != nil {
		return err
	}
	q.explicitTypes = explicit
	pl := &plan{q: q, compartment: compID}
	if err := restrict(p, pl); err != nil {
		return err
	}
	path := e.base
	switch {
	case compType != "":
		path += "/" + compType + "/" + compID + "/"
		if typ == "" {
			path += "*"
		} else {
			path += typ
		}
	case typ != "":
		path += "/" + typ
	}
	return e.respond(w, r, p, pl, path, v)
}

// searchTypes returns the types a search covers, checking the scopes.
func searchTypes(p access.Principal, typ, compType string, v url.Values) ([]string, bool, error) {
	if typ != "" {
		if !p.Allows(access.Search, typ) {
			return nil, false, fhir.Forbidden("the access token does not allow searching %s", typ)
		}
		if compType != "" && typ != "Patient" && len(r4.PatientCompartmentParams(typ)) == 0 {
			return nil, false, fhir.BadRequest("%s is not in the Patient compartment", typ)
		}
		return []string{typ}, true, nil
	}
	var types []string
	if tv := v.Get("_type"); tv != "" {
		for _, t := range strings.Split(tv, ",") {
			t = strings.TrimSpace(t)
			if !r4.IsResourceType(t) {
				return nil, false, fhir.BadRequest("_type: unknown resource type %q", t)
			}
			if !p.Allows(access.Search, t) {
				return nil, false, fhir.Forbidden("the access token does not allow searching %s", t)
			}
			if !slices.Contains(types, t) {
				types = append(types, t)
			}
		}
		return types, true, nil
	}
	for _, t := range r4.ResourceTypes() {
		if compType != "" && (t == auditType || t != "Patient" && len(r4.PatientCompartmentParams(t)) == 0) {
			continue
		}
		if p.Allows(access.Search, t) {
			types = append(types, t)
		}
	}
	return types, false, nil
}

// respond runs a planned search and writes the searchset Bundle.
func (e *Engine) respond(w http.ResponseWriter, r *http.Request, p access.Principal, pl *plan, path string, v url.Values) error {
	ctx := r.Context()
	q := pl.q
	var cur *cursor
	if q.cursor != "" {
		var err error
		if cur, err = decodeCursor(q.cursor, q.sortKinds()); err != nil {
			return err
		}
	}
	var total int64 = -1
	wantTotal := q.summary == "count" || q.count == 0 || (q.total != "none" && cur == nil) || q.total == "accurate"
	var matches []*row
	more := false
	if q.summary != "count" && q.count > 0 {
		// a first page counts the matches in the same statement
		var err error
		if matches, more, total, err = e.page(ctx, pl, cur, q.count, wantTotal); err != nil {
			return err
		}
	}
	if wantTotal && total < 0 {
		n, err := e.count(ctx, pl)
		if err != nil {
			return err
		}
		total = n
	}
	included, err := e.includes(ctx, p, pl, matches)
	if err != nil {
		return err
	}
	// links
	link := func(c string) string {
		nv := url.Values{}
		for k, vals := range v {
			if k != "_cursor" {
				nv[k] = vals
			}
		}
		if c != "" {
			nv.Set("_cursor", c)
		}
		if enc := nv.Encode(); enc != "" {
			return path + "?" + enc
		}
		return path
	}
	var buf bytes.Buffer
	buf.WriteString(`{"resourceType":"Bundle","type":"searchset"`)
	if total >= 0 {
		fmt.Fprintf(&buf, `,"total":%d`, total)
	}
	buf.WriteString(`,"link":[{"relation":"self","url":`)
	buf.Write(fhirjson.AppendString(nil, link(q.cursor)))
	buf.WriteString(`}`)
	if len(matches) > 0 {
		back := cur != nil && cur.back
		if (!back && more) || back {
			buf.WriteString(`,{"relation":"next","url":`)
			buf.Write(fhirjson.AppendString(nil, link(encodeCursor(false, matches[len(matches)-1]))))
			buf.WriteString(`}`)
		}
		if (back && more) || (!back && cur != nil) {
			buf.WriteString(`,{"relation":"previous","url":`)
			buf.Write(fhirjson.AppendString(nil, link(encodeCursor(true, matches[0]))))
			buf.WriteString(`}`)
		}
	}
	buf.WriteString(`],"entry":[`)
	n := 0
	for _, rr := range append(matches, included...) {
		if n > 0 {
			buf.WriteByte(',')
		}
		n++
		if err := e.writeEntry(ctx, &buf, rr, q); err != nil {
			return err
		}
	}
	if len(q.warnings) > 0 {
		if n > 0 {
			buf.WriteByte(',')
		}
		n++
		buf.WriteString(`{"resource":`)
		buf.Write(fhir.OutcomeJSON(q.warnings))
		buf.WriteString(`,"search":{"mode":"outcome"}}`)
	}
	buf.WriteString(`]}`)
	body := buf.Bytes()
	if n == 0 {
		body = bytes.Replace(body, []byte(`,"entry":[]`), nil, 1)
	}
	writeJSON(w, r, body)
	return nil
}

// writeEntry writes one Bundle entry.
func (e *Engine) writeEntry(ctx context.Context, buf *bytes.Buffer, rr *row, q *query) error {
	buf.WriteString(`{"fullUrl":`)
	buf.Write(fhirjson.AppendString(nil, e.base+"/"+rr.res.Type+"/"+rr.res.ID))
	buf.WriteString(`,"resource":`)
	if (q.summary != "" && q.summary != "false") || q.elements != "" {
		body, err := e.rec.JSON(ctx, &rr.res)
		if err != nil {
			return err
		}
		doc, err := fhirjson.Parse(body)
		if err != nil {
			return fmt.Errorf("parse stored %s/%s: %w", rr.res.Type, rr.res.ID, err)
		}
		summary, elements := q.summary, q.elements
		if summary != "" {
			elements = ""
		}
		shaped, err := api.Shape(doc, rr.res.Type, summary, elements)
		if err != nil {
			return err
		}
		buf.Write(shaped.Marshal())
	} else if err := e.rec.WriteJSON(ctx, buf, &rr.res); err != nil {
		return err
	}
	buf.WriteString(`,"search":{"mode":"`)
	buf.WriteString(rr.mode)
	buf.WriteString(`"}}`)
	return nil
}

// writeJSON writes a 200 FHIR JSON body (pretty when asked).
func writeJSON(w http.ResponseWriter, r *http.Request, body []byte) {
	ct := "application/fhir+json; charset=utf-8"
	if f := r.URL.Query().Get("_format"); f == "application/json" {
		ct = "application/json; charset=utf-8"
	}
	if r.URL.Query().Get("_pretty") == "true" {
		var out bytes.Buffer
		if json.Indent(&out, body, "", "  ") == nil {
			body = out.Bytes()
		}
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// sharedTypes are the resource types outside the patient compartment.
var sharedTypes = sync.OnceValue(func() []string {
	var out []string
	for _, t := range r4.ResourceTypes() {
		if records.Shared(t) && t != "Patient" {
			out = append(out, t)
		}
	}
	return out
})

const rowCols = `r.rid, r.type, r.id, r.version, r.last_updated, r.seq, v.method, v.json, v.blob`

func scanRows(rows *sql.Rows, mode string) ([]*row, error) {
	defer rows.Close()
	var out []*row
	for rows.Next() {
		rr := &row{mode: mode}
		var lu int64
		var blob sql.NullString
		if err := rows.Scan(&rr.rid, &rr.res.Type, &rr.res.ID, &rr.res.Version, &lu, &rr.res.Seq, &rr.res.Method, &rr.res.JSON, &blob); err != nil {
			return nil, err
		}
		rr.res.LastUpdated = sqldb.FromMicros(lu)
		rr.res.Blob = blob.String
		out = append(out, rr)
	}
	return out, rows.Err()
}

// includes resolves _include and _revinclude for the matches (and one
// :iterate level over what they include), keeping what the caller may see.
func (e *Engine) includes(ctx context.Context, p access.Principal, pl *plan, matches []*row) ([]*row, error) {
	q := pl.q
	if len(matches) == 0 || (len(q.includes) == 0 && len(q.revs) == 0) {
		return nil, nil
	}
	seen := map[int64]bool{}
	for _, m := range matches {
		seen[m.rid] = true
	}
	var out []*row
	from := matches
	for level := 0; level < 2 && len(from) > 0; level++ {
		var found []*row
		for _, inc := range q.includes {
			if level == 1 && !inc.iterate {
				continue
			}
			rs, err := e.include(ctx, pl, inc, from, false)
			if err != nil {
				return nil, err
			}
			found = append(found, rs...)
		}
		for _, inc := range q.revs {
			if level == 1 && !inc.iterate {
				continue
			}
			rs, err := e.include(ctx, pl, inc, from, true)
			if err != nil {
				return nil, err
			}
			found = append(found, rs...)
		}
		var fresh []*row
		for _, rr := range found {
			if !seen[rr.rid] {
				seen[rr.rid] = true
				fresh = append(fresh, rr)
			}
		}
		fresh, err := e.visible(ctx, p, fresh)
		if err != nil {
			return nil, err
		}
		out = append(out, fresh...)
		from = fresh
	}
	return out, nil
}

// include runs one _include (rev false) or _revinclude over rows.
func (e *Engine) include(ctx context.Context, pl *plan, inc include, from []*row, rev bool) ([]*row, error) {
	b := e.builder(ctx)
	var src []*row
	for _, r := range from {
		if inc.srcType == "" || (!rev && r.res.Type == inc.srcType) || rev {
			src = append(src, r)
		}
	}
	if len(src) == 0 {
		return nil, nil
	}
	// the referenced (or referring) resources, each once, then their JSON
	// srcRids writes the rids of src, comma-separated
	srcRids := func() {
		for i, s := range src {
			if i > 0 {
				b.w(",")
			}
			b.w(strconv.FormatInt(s.rid, 10))
		}
	}
	b.w("SELECT " + rowCols + " FROM resource r JOIN resource_version v ON v.seq = r.seq WHERE r.rid IN (")
	if !rev {
		b.w("SELECT t.rid FROM idx_ref x JOIN resource t ON t.type = x.target_type AND t.id = x.target_id WHERE x.rid IN (")
		srcRids()
		b.w(")")
		if inc.param != "*" {
			b.w(" AND ")
			if err := b.pidCond("x", []string{inc.srcType}, inc.param); err != nil {
				return nil, err
			}
		}
		if inc.target != "" {
			b.arg(" AND x.target_type = ?", inc.target)
		}
		if inc.sharedOnly {
			b.w(" AND ")
			inList(b, "x.target_type", sharedTypes())
		}
	} else {
		// Rows name their target by rid, or by type and id when it did not
		// exist as they were written (target_rid 0).
		b.w("SELECT x.rid FROM idx_ref x WHERE (x.target_rid IN (")
		srcRids()
		b.w(") OR x.target_rid = 0 AND (")
		for i, s := range src {
			if i > 0 {
				b.w(" OR ")
			}
			b.arg("(x.target_id = ?", s.res.ID)
			b.arg(" AND x.target_type = ?)", s.res.Type)
		}
		b.w("))")
		if inc.param != "*" {
			b.w(" AND ")
			if err := b.pidCond("x", []string{inc.srcType}, inc.param); err != nil {
				return nil, err
			}
		}
	}
	b.w(") AND r.deleted = " + b.falseLit())
	if inc.param == "*" && !(pl.q.explicitTypes && slices.Contains(pl.q.types, auditType)) {
		b.arg(" AND r.type <> ?", auditType)
	}
	b.w(" ORDER BY r.rid")
	rows, err := e.db.QueryDynamic(ctx, b.sb.String(), b.args...)
	if err != nil {
		return nil, fmt.Errorf("include: %w", err)
	}
	rs, err := scanRows(rows, "include")
	if err != nil {
		return nil, fmt.Errorf("include: %w", err)
	}
	return rs, nil
}

// visible keeps the included rows the caller may read: its scopes, its
// patient compartment (shared types aside) and its scope filters.
func (e *Engine) visible(ctx context.Context, p access.Principal, rs []*row) ([]*row, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	var keep []*row
	for _, r := range rs {
		if p.Allows(access.Read, r.res.Type) {
			keep = append(keep, r)
		}
	}
	if pid := p.Patient(); pid != "" {
		var check, shared []*row
		var out []*row
		for _, r := range keep {
			switch {
			case r.res.Type == "Binary":
				// A patient's Binaries are theirs by securityContext or by
				// their record's attachments (records.Service), not by
				// what points at them: an include leaves them out.
			case records.Shared(r.res.Type):
				shared = append(shared, r)
			default:
				check = append(check, r)
			}
		}
		check = append(check, shared...)
		if len(check) > 0 {
			in, err := e.inCompartment(ctx, pid, check)
			if err != nil {
				return nil, err
			}
			// a shared resource is seen by all unless a patient owns it
			owned := map[int64]bool{}
			if len(shared) > 0 {
				if owned, err = e.inCompartment(ctx, "", shared); err != nil {
					return nil, err
				}
			}
			for _, r := range check {
				if in[r.rid] || records.Shared(r.res.Type) && !owned[r.rid] {
					out = append(out, r)
				}
			}
		}
		keep = out
	}
	// scope filters, one query per filtered type
	byType := map[string][]*row{}
	for _, r := range keep {
		if len(p.Filters(r.res.Type)) > 0 {
			byType[r.res.Type] = append(byType[r.res.Type], r)
		}
	}
	if len(byType) == 0 {
		return keep, nil
	}
	drop := map[int64]bool{}
	for t, rs := range byType {
		pl := &plan{q: &query{types: []string{t}}}
		if err := restrict(p, pl); err != nil {
			return nil, err
		}
		pl.confined = ""
		b, err := e.newBuilder(ctx, pl)
		if err != nil {
			return nil, err
		}
		b.w("SELECT r.rid FROM resource r WHERE r.rid IN (")
		for i, r := range rs {
			if i > 0 {
				b.w(",")
			}
			b.w(strconv.FormatInt(r.rid, 10))
		}
		b.w(") AND ")
		if err := e.where(b, pl); err != nil {
			return nil, err
		}
		ok, err := e.rids(ctx, b)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			if !ok[r.rid] {
				drop[r.rid] = true
			}
		}
	}
	var out []*row
	for _, r := range keep {
		if !drop[r.rid] {
			out = append(out, r)
		}
	}
	return out, nil
}

// inCompartment returns which of rs are in patient pid's compartment, or
// with pid empty, in anyone's (a shared resource there has an owner).
func (e *Engine) inCompartment(ctx context.Context, pid string, rs []*row) (map[int64]bool, error) {
	b := e.builder(ctx)
	b.w("SELECT c.rid FROM compartment c WHERE ")
	if pid != "" {
		b.arg("c.patient = ? AND ", pid)
	}
	b.w("c.rid IN (")
	for i, r := range rs {
		if i > 0 {
			b.w(",")
		}
		b.w(strconv.FormatInt(r.rid, 10))
	}
	b.w(")")
	return e.rids(ctx, b)
}

func (e *Engine) rids(ctx context.Context, b *builder) (map[int64]bool, error) {
	rows, err := e.db.QueryDynamic(ctx, b.sb.String(), b.args...)
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	defer rows.Close()
	out := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out[id] = true
	}
	return out, rows.Err()
}

// compositeMatches returns the resources with an entry of a composite
// parameter matching one of the clause's values: candidates are read from
// idx_composite and their parts compared here.
func (e *Engine) compositeMatches(ctx context.Context, c *clause) ([]int64, error) {
	b := e.builder(ctx)
	b.w("SELECT x.rid, x.parts FROM idx_composite x WHERE ")
	if err := b.pidCond("x", c.types, c.code); err != nil {
		return nil, err
	}
	b.w(" ORDER BY x.rid")
	rows, err := e.db.QueryDynamic(ctx, b.sb.String(), b.args...)
	if err != nil {
		return nil, fmt.Errorf("composite %s: %w", c.key, err)
	}
	defer rows.Close()
	var out []int64
	last := int64(-1)
	for rows.Next() {
		var rid int64
		var parts string
		if err := rows.Scan(&rid, &parts); err != nil {
			return nil, err
		}
		if rid == last {
			continue
		}
		var ps []index.CompositePart
		if err := json.Unmarshal([]byte(parts), &ps); err != nil {
			return nil, fmt.Errorf("composite %s: stored parts: %w", c.key, err)
		}
		for _, v := range c.values {
			if compositeMatch(c, ps, v, e.Now().UnixMicro()) {
				out = append(out, rid)
				last = rid
				break
			}
		}
	}
	return out, rows.Err()
}
