// Package search implements FHIR search over the index entries the store
// keeps for current resource versions: type, system and compartment
// searches with every standard R4 search parameter extraction indexes,
// modifiers and prefixes, chaining, _has, _include/_revinclude, _sort,
// keyset paging, the conditional-interaction Matcher of the record
// service, and Patient/$everything.
//
// A search is parsed into clauses, turned into one SQL statement per
// request (run unprepared: such statements rarely repeat) and answered
// with a searchset Bundle. Access control - the token's scopes, its patient
// compartment and its SMART v2 scope filters - applies to every match and
// every included resource.
package search

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/api"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/r4"
	"github.com/phr-project/phr/internal/records"
	"github.com/phr-project/phr/internal/store"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// Engine answers searches.
type Engine struct {
	db   *sqldb.DB
	rec  *records.Service
	base string
	// Now is the clock of the ap prefix (tests fix it).
	Now   func() time.Time
	stats statsKeeper
}

// New returns an Engine over db; base is the FHIR base URL (absolute
// references under it are local).
func New(db *sqldb.DB, rec *records.Service, base string) *Engine {
	e := &Engine{db: db, rec: rec, base: strings.TrimSuffix(base, "/"), Now: time.Now}
	e.stats.db = db
	return e
}

// Register installs search on the FHIR server: the search handler, the
// conditional-interaction matcher of the record service, the
// Patient/$everything operation and the CapabilityStatement entries.
func Register(srv *api.Server, rec *records.Service, db *sqldb.DB) *Engine {
	e := New(db, rec, srv.Base())
	srv.SetSearch(e.ServeSearch)
	rec.SetMatcher(e)
	srv.HandleOperation(&api.Operation{
		Name: "everything", Definition: "http://hl7.org/fhir/OperationDefinition/Patient-everything",
		Types: []string{"Patient"}, Instance: true, Methods: []string{http.MethodGet, http.MethodPost},
		Handler: e.serveEverything,
	})
	srv.AddCapability(capability)
	return e
}

// capability lists the supported search parameters.
func capability(c *api.Capability) {
	c.Search = true
	for _, t := range r4.ResourceTypes() {
		for _, sp := range Params(t) {
			c.SearchParams[t] = append(c.SearchParams[t], api.CapSearchParam{Name: sp.Code, Definition: sp.URL, Type: sp.Type.String()})
		}
	}
	for _, sp := range Params("Patient") {
		if strings.HasPrefix(sp.Code, "_") {
			c.SystemSearchParams = append(c.SystemSearchParams, api.CapSearchParam{Name: sp.Code, Definition: sp.URL, Type: sp.Type.String()})
		}
	}
}

// plan is a parsed search with its access restrictions.
type plan struct {
	q *query
	// compartment restricts matches to a patient's compartment
	// (Patient/[id]/T searches and $everything).
	compartment string
	// confined is the patient a patient-confined caller is limited to.
	confined string
	// filters are the caller's scope filters per type (alternatives).
	filters map[string][][]*clause
	// who is the caller (nil for the Matcher, which applies no access
	// control): chained and _has conditions look only at resources it
	// may see.
	who access.Principal
	// lists marks the clauses written as resource lists (chosen once).
	lists []bool
	// targets are the reference targets looked up for the request
	// (builder.lookupTarget), once for all its queries: the probes of
	// chooseLists, the page and the total.
	targets map[string]target
	// since, start and end are $everything's bounds (0: none).
	since      int64
	start, end int64
	hasStart   bool
	hasEnd     bool
}

// Match implements records.Matcher: the ids of current resources of typ
// matching q, without access control.
func (e *Engine) Match(ctx context.Context, typ string, v url.Values, limit int) ([]string, error) {
	if !r4.IsResourceType(typ) {
		return nil, fhir.NotFound("unknown resource type %q", typ)
	}
	q, err := parse([]string{typ}, v, false)
	if err != nil {
		return nil, err
	}
	q.sort = nil
	pl := &plan{q: q}
	b, err := e.newBuilder(ctx, pl)
	if err != nil {
		return nil, err
	}
	b.w("SELECT r.id FROM resource r WHERE ")
	if err := e.where(b, pl); err != nil {
		return nil, err
	}
	b.arg(" ORDER BY r.rid LIMIT ?", limit)
	rows, err := e.db.QueryDynamic(ctx, b.sb.String(), b.args...)
	if err != nil {
		return nil, fmt.Errorf("search %s: %w", typ, err)
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

// builder returns an empty SQL builder for a request.
func (e *Engine) builder(ctx context.Context) *builder {
	return &builder{dialect: e.db.SQLDialect(), base: e.base, now: e.Now(), ctx: ctx, db: e.db}
}

func (e *Engine) newBuilder(ctx context.Context, pl *plan) (*builder, error) {
	e.stats.maybeRefresh()
	b := e.builder(ctx)
	b.who = pl.who
	if pl.targets == nil {
		pl.targets = map[string]target{}
	}
	b.targets = pl.targets
	if pl.lists == nil {
		if err := e.chooseLists(ctx, b, pl); err != nil {
			return nil, err
		}
		pl.lists = b.lists
	}
	b.lists = pl.lists
	// composite clauses are resolved to resources first
	var comps []*clause
	collect := func(cs []*clause) {
		for _, c := range cs {
			for c != nil {
				if c.typ == r4.ParamComposite && c.mod != "missing" {
					comps = append(comps, c)
				}
				c = c.inner
			}
		}
	}
	collect(pl.q.clauses)
	for _, fs := range pl.filters {
		for _, f := range fs {
			collect(f)
		}
	}
	if len(comps) > 0 {
		b.composite = map[*clause][]int64{}
		for _, c := range comps {
			ids, err := e.compositeMatches(ctx, c)
			if err != nil {
				return nil, err
			}
			b.composite[c] = ids
		}
	}
	return b, nil
}

// where writes the WHERE condition of a plan on resource alias r.
func (e *Engine) where(b *builder, pl *plan) error {
	q := pl.q
	single := ""
	if len(q.types) == 1 {
		single = q.types[0]
	}
	// Selective clauses (references, codes, strings, uris) that select
	// few resources are written as "r.rid IN (list)", which the database
	// intersects; the rest are checked per candidate (EXISTS).
	in := b.lists
	anyIn := false
	for _, v := range in {
		anyIn = anyIn || v
	}
	// With a driving "r.rid IN (...)" condition, SQLite must not start
	// from the (type, id) index instead: a unary + keeps it off the type
	// and deleted columns (PostgreSQL plans from statistics).
	plus := ""
	if b.dialect == sqldb.SQLite && (anyIn || pl.compartment != "" || pl.confined != "" && single != "" && !records.Shared(single)) {
		plus = "+"
	}
	b.w(plus + "r.deleted = " + b.falseLit())
	if single != "" {
		b.arg(" AND "+plus+"r.type = ?", single)
	} else if out := compartmentComplement(pl.compartment, q.types); out != nil {
		// a compartment holds only its types: name the few left out
		// (AuditEvent...) rather than the many kept
		for _, t := range out {
			b.arg(" AND r.type <> ?", t)
		}
	} else if len(q.types) < len(r4.ResourceTypes()) {
		b.w(" AND ")
		inList(b, "r.type", q.types)
	}
	// the resource lists to intersect: compartments, then selective clauses
	var lists []func() error
	if pl.compartment != "" {
		lists = append(lists, func() error {
			b.arg("SELECT c.rid FROM compartment c WHERE c.patient = ?", pl.compartment)
			return nil
		})
	}
	if pl.confined != "" && pl.confined != pl.compartment {
		var shared []string
		for _, t := range q.types {
			if records.Shared(t) {
				shared = append(shared, t)
			}
		}
		if len(shared) == 0 {
			lists = append(lists, func() error {
				b.arg("SELECT cc.rid FROM compartment cc WHERE cc.patient = ?", pl.confined)
				return nil
			})
		} else {
			b.w(" AND ")
			b.confinedTo("r", pl.confined, shared)
		}
	}
	for t, alts := range pl.filters {
		b.arg(" AND (r.type <> ?", t)
		for _, alt := range alts {
			b.w(" OR (")
			for i, c := range alt {
				if i > 0 {
					b.w(" AND ")
				}
				if err := b.cond("r", t, c, false); err != nil {
					return err
				}
			}
			b.w(")")
		}
		b.w(")")
	}
	if pl.since != 0 {
		b.arg(" AND r.last_updated >= ?", pl.since)
	}
	if pl.hasStart || pl.hasEnd {
		// care dates: resources with no clinical date stay in
		lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
		if pl.hasStart {
			lo = pl.start
		}
		if pl.hasEnd {
			hi = pl.end
		}
		// (_lastUpdated has no index rows: index.FromResourceRow)
		b.w(" AND (NOT EXISTS (SELECT 1 FROM idx_date dd WHERE dd.rid = r.rid)")
		b.arg(" OR EXISTS (SELECT 1 FROM idx_date de WHERE de.rid = r.rid AND de.high >= ?", lo)
		b.arg(" AND de.low <= ?))", hi)
	}
	for i, c := range q.clauses {
		if in[i] {
			lists = append(lists, func() error { return b.list(single, c) })
		}
	}
	if b.dialect == sqldb.Postgres && len(lists) > 0 {
		// One intersection of the lists: without table statistics (right
		// after a bulk load) PostgreSQL may otherwise nest loops over them.
		b.w(" AND r.rid IN (")
		for i, l := range lists {
			if i > 0 {
				b.w(" INTERSECT ")
			}
			if err := l(); err != nil {
				return err
			}
		}
		b.w(")")
	} else {
		// SQLite starts from one list and looks the others up
		for _, l := range lists {
			b.w(" AND r.rid IN (")
			if err := l(); err != nil {
				return err
			}
			b.w(")")
		}
	}
	for i, c := range q.clauses {
		if in[i] {
			continue
		}
		b.w(" AND ")
		if err := b.cond("r", single, c, false); err != nil {
			return err
		}
	}
	return nil
}

// compartmentComplement returns, for a search within a patient's
// compartment over several types, the compartment's types that are not
// among them (non-nil when there are fewer than 8); nil otherwise.
func compartmentComplement(compartment string, types []string) []string {
	if compartment == "" || len(types) < 2 {
		return nil
	}
	// compartment rows are of the compartment types and of the shared
	// resources a patient owns (records: owner.go)
	in := func(t string) bool {
		return t == "Patient" || len(r4.PatientCompartmentParams(t)) > 0 || index.Ownable(t)
	}
	out := []string{}
	for _, t := range r4.ResourceTypes() {
		if in(t) && !slices.Contains(types, t) {
			out = append(out, t)
		}
	}
	for _, t := range types {
		if !in(t) {
			return nil // a type outside the compartment: keep the plain list
		}
	}
	if len(out) >= 8 {
		return nil
	}
	return out
}

// probeCap bounds the index entries counted to judge how selective a
// clause is.
const probeCap = 4000

// chooseLists decides which clauses of a single-type search are written
// as resource lists: those of the selective kinds that match fewer than
// probeCap index entries (counted with a bounded probe), or, when every
// one matches more, the first of them (a list still beats checking every
// resource of the type).
func (e *Engine) chooseLists(ctx context.Context, b *builder, pl *plan) error {
	q := pl.q
	b.lists = make([]bool, len(q.clauses))
	if len(q.types) != 1 {
		return nil
	}
	typ := q.types[0]
	first := -1
	found := false
	for i, c := range q.clauses {
		if !selective(c) {
			continue
		}
		if first < 0 {
			first = i
		}
		pb := e.builder(ctx)
		pb.targets = b.targets
		pb.w("SELECT COUNT(*) FROM (")
		if err := pb.list(typ, c); err != nil {
			return err
		}
		pb.arg(" LIMIT ?) t", probeCap)
		var n int
		rows, err := e.db.QueryDynamic(ctx, pb.sb.String(), pb.args...)
		if err != nil {
			return fmt.Errorf("search: %w", err)
		}
		if rows.Next() {
			err = rows.Scan(&n)
		}
		rows.Close()
		if err != nil {
			return fmt.Errorf("search: %w", err)
		}
		if n < probeCap {
			b.lists[i] = true
			found = true
		}
	}
	if !found && first >= 0 && pl.compartment == "" && (pl.confined == "" || records.Shared(typ)) {
		b.lists[first] = true
	}
	return nil
}

// selective reports whether a clause is likely to select few resources
// and can be written as a list of them.
func selective(c *clause) bool {
	if c.mod == "missing" || c.mod == "not" || c.mod == "text" || c.inner != nil || c.hasType != "" || strings.HasPrefix(c.code, "_") {
		return false
	}
	switch c.typ {
	case r4.ParamReference, r4.ParamToken, r4.ParamString, r4.ParamURI:
		return true
	}
	return false
}

// row is one resource of a result.
type row struct {
	res  store.Resource
	rid  int64
	keys []any
	mode string
}

// sortKinds returns the kind of each sort key's values as cursors carry
// them: 'i' integers (instants), 'f' floats, 's' strings.
func (q *query) sortKinds() []byte {
	kinds := make([]byte, len(q.sort))
	for i, k := range q.sort {
		switch {
		case k.code == "_lastUpdated" || k.typ == r4.ParamDate && k.code != "_id":
			kinds[i] = 'i'
		case k.code == "_id" || k.typ == r4.ParamString || k.typ == r4.ParamToken || k.typ == r4.ParamURI:
			kinds[i] = 's'
		default:
			kinds[i] = 'f'
		}
	}
	return kinds
}

// cursor is a keyset paging position: the sort keys and rid of the row a
// page starts after (or, backwards, before).
type cursor struct {
	back bool
	keys []any
	rid  int64
}

func encodeCursor(back bool, r *row) string {
	vals := []any{back}
	vals = append(vals, r.keys...)
	vals = append(vals, r.rid)
	j, _ := json.Marshal(vals)
	return base64.RawURLEncoding.EncodeToString(j)
}

func decodeCursor(s string, kinds []byte) (*cursor, error) {
	bad := fhir.BadRequest("_cursor %q is not a cursor of this search (start again from the first page)", s)
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, bad
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	var vals []any
	if dec.Decode(&vals) != nil || len(vals) != len(kinds)+2 {
		return nil, bad
	}
	c := &cursor{}
	var ok bool
	if c.back, ok = vals[0].(bool); !ok {
		return nil, bad
	}
	for i, k := range kinds {
		v := vals[i+1]
		switch k {
		case 'i':
			n, ok := v.(json.Number)
			if !ok {
				return nil, bad
			}
			x, err := strconv.ParseInt(string(n), 10, 64)
			if err != nil {
				return nil, bad
			}
			c.keys = append(c.keys, x)
		case 'f':
			n, ok := v.(json.Number)
			if !ok {
				return nil, bad
			}
			x, err := strconv.ParseFloat(string(n), 64)
			if err != nil {
				return nil, bad
			}
			c.keys = append(c.keys, x)
		default:
			s, ok := v.(string)
			if !ok {
				return nil, bad
			}
			c.keys = append(c.keys, s)
		}
	}
	n, ok := vals[len(vals)-1].(json.Number)
	if !ok {
		return nil, bad
	}
	if c.rid, err = strconv.ParseInt(string(n), 10, 64); err != nil {
		return nil, bad
	}
	return c, nil
}

// page runs the query of a plan and returns up to count rows (and whether
// there are more in the direction read). With withTotal (first pages
// only) it also counts all matches in the same statement; total is -1
// otherwise.
func (e *Engine) page(ctx context.Context, pl *plan, cur *cursor, count int, withTotal bool) (out []*row, more bool, total int64, err error) {
	total = -1
	if cur != nil {
		withTotal = false
	}
	q := pl.q
	back := cur != nil && cur.back
	b, err := e.pageSQL(ctx, pl, cur, count, withTotal)
	if err != nil {
		return nil, false, -1, err
	}
	rows, err := e.db.QueryDynamic(ctx, b.sb.String(), b.args...)
	if err != nil {
		return nil, false, -1, fmt.Errorf("search: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		r := &row{mode: "match", keys: make([]any, len(q.sort))}
		var lu int64
		var blob sql.NullString
		dest := []any{&r.rid, &r.res.Type, &r.res.ID, &r.res.Version, &lu, &r.res.Seq, &r.res.Method, &r.res.JSON, &blob}
		for i := range r.keys {
			dest = append(dest, &r.keys[i])
		}
		if withTotal {
			dest = append(dest, &total)
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, false, -1, fmt.Errorf("search: %w", err)
		}
		for i, k := range r.keys {
			if bs, ok := k.([]byte); ok {
				r.keys[i] = string(bs)
			}
		}
		r.res.LastUpdated = sqldb.FromMicros(lu)
		r.res.Blob = blob.String
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, false, -1, fmt.Errorf("search: %w", err)
	}
	if withTotal && total < 0 {
		total = 0 // no matches
	}
	more = len(out) > count
	if more {
		out = out[:count]
	}
	if back {
		slices.Reverse(out)
	}
	return out, more, total, nil
}

// pageSQL builds the query of one page of a plan (see page).
func (e *Engine) pageSQL(ctx context.Context, pl *plan, cur *cursor, count int, withTotal bool) (*builder, error) {
	q := pl.q
	b, err := e.newBuilder(ctx, pl)
	if err != nil {
		return nil, err
	}
	back := cur != nil && cur.back
	dirs := make([]bool, len(q.sort)) // descending?
	for i, k := range q.sort {
		dirs[i] = k.desc != back
	}
	b.w("SELECT p.rid, p.type, p.id, p.version, p.last_updated, p.seq, v.method, v.json, v.blob")
	for i := range q.sort {
		b.w(", p.k" + strconv.Itoa(i))
	}
	if withTotal {
		b.w(", p.total")
	}
	b.w(" FROM (SELECT s.*")
	if withTotal {
		b.w(", COUNT(*) OVER () AS total")
	}
	b.w(" FROM (SELECT r.rid, r.type, r.id, r.version, r.last_updated, r.seq")
	for i, k := range q.sort {
		b.w(", ")
		if err := b.sortExpr("r", q.types, k); err != nil {
			return nil, err
		}
		b.w(" AS k" + strconv.Itoa(i))
	}
	b.w(" FROM resource r WHERE ")
	if err := e.where(b, pl); err != nil {
		return nil, err
	}
	b.w(") s")
	if cur != nil {
		b.w(" WHERE ")
		b.cursorCond("s", cur, dirs, back)
	}
	b.w(" ORDER BY ")
	b.orderBy("s", dirs, back)
	b.arg(" LIMIT ?", count+1)
	b.w(") p JOIN resource_version v ON v.seq = p.seq ORDER BY ")
	b.orderBy("p", dirs, back)
	return b, nil
}

// orderBy writes the sort keys then rid of alias a.
func (b *builder) orderBy(a string, dirs []bool, back bool) {
	for i, d := range dirs {
		b.w(a + ".k" + strconv.Itoa(i))
		if d {
			b.w(" DESC")
		}
		b.w(", ")
	}
	b.w(a + ".rid")
	if back {
		b.w(" DESC")
	}
}

// cursorCond keeps the rows after (or, back, before) the cursor in the
// order the directions give.
func (b *builder) cursorCond(a string, c *cursor, dirs []bool, back bool) {
	b.w("(")
	n := len(dirs)
	for i := 0; i <= n; i++ {
		if i > 0 {
			b.w(" OR ")
		}
		b.w("(")
		for j := 0; j < i; j++ {
			b.arg(a+".k"+strconv.Itoa(j)+" = ? AND ", c.keys[j])
		}
		if i < n {
			op := " > ?"
			if dirs[i] {
				op = " < ?"
			}
			b.arg(a+".k"+strconv.Itoa(i)+op, c.keys[i])
		} else {
			op := " > ?"
			if back {
				op = " < ?"
			}
			b.arg(a+".rid"+op, c.rid)
		}
		b.w(")")
	}
	b.w(")")
}

// count counts the matches of a plan.
func (e *Engine) count(ctx context.Context, pl *plan) (int64, error) {
	b, err := e.newBuilder(ctx, pl)
	if err != nil {
		return 0, err
	}
	b.w("SELECT COUNT(*) FROM resource r WHERE ")
	if err := e.where(b, pl); err != nil {
		return 0, err
	}
	rows, err := e.db.QueryDynamic(ctx, b.sb.String(), b.args...)
	if err != nil {
		return 0, fmt.Errorf("count: %w", err)
	}
	defer rows.Close()
	var n int64
	if rows.Next() {
		if err := rows.Scan(&n); err != nil {
			return 0, err
		}
	}
	return n, rows.Err()
}

// principal returns the caller or a 401.
func principal(ctx context.Context) (access.Principal, error) {
	p := access.From(ctx)
	if p == nil {
		return nil, &fhir.Error{Status: http.StatusUnauthorized, Issues: []fhir.Issue{{Severity: "error", Code: "login", Diagnostics: "authentication required"}}}
	}
	return p, nil
}

// restrict adds the caller's compartment and scope filters to a plan.
func restrict(p access.Principal, pl *plan) error {
	pl.confined = p.Patient()
	pl.who = p
	if pl.confined != "" && slices.Contains(pl.q.types, "Binary") {
		// A Binary is a patient's by its securityContext or by the
		// attachments of their record (records.Service reads decide it),
		// which a search cannot tell: patient-confined callers read
		// Binaries by id.
		if len(pl.q.types) == 1 {
			return fhir.Forbidden("a patient-scoped token cannot search Binary: read Binary/[id], which an attachment of the record names")
		}
		pl.q.types = slices.DeleteFunc(slices.Clone(pl.q.types), func(t string) bool { return t == "Binary" })
	}
	// chained and _has conditions read other types: the caller must be
	// allowed to read them
	for _, c := range pl.q.clauses {
		var inner []string
		switch {
		case c.hasType != "":
			inner = []string{c.hasType}
		case c.inner != nil:
			inner = c.chainTypes
		}
		for _, t := range inner {
			if !p.Allows(access.Read, t) {
				return fhir.Forbidden("search parameter %s reads %s, which the access token does not allow", c.key, t)
			}
		}
	}
	for _, t := range pl.q.types {
		fs := p.Filters(t)
		if len(fs) == 0 {
			continue
		}
		if pl.filters == nil {
			pl.filters = map[string][][]*clause{}
		}
		for _, f := range fs {
			var alt []*clause
			for k, vals := range f {
				for _, v := range vals {
					c, err := parseClause([]string{t}, k, v)
					if err != nil {
						return fhir.Forbidden("the access token's scope filter %s=%s on %s cannot be applied: %v", k, v, t, err)
					}
					alt = append(alt, c)
				}
			}
			pl.filters[t] = append(pl.filters[t], alt)
		}
	}
	return nil
}
