package search

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/r4"
	"github.com/phr-project/phr/internal/records"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// builder writes SQL with '?' placeholders and collects their arguments
// in order.
type builder struct {
	sb      strings.Builder
	args    []any
	dialect sqldb.Dialect
	n       int
	base    string
	now     time.Time
	// composite holds the resources matching each composite clause,
	// found before the SQL is built.
	composite map[*clause][]int64
	// who is the caller whose access limits chained and _has conditions
	// (nil: no limits).
	who access.Principal
	// lists marks the query's clauses written as resource lists.
	lists []bool
	// ctx and db resolve the ids index rows name parameters by (pidCond).
	ctx context.Context
	db  *sqldb.DB
	// refArm limits refCond to the reference rows that name their target
	// by rid (armRid) or by type and id (armText); armBoth is either.
	refArm int
	// targets caches lookupTarget (the plan's, shared by the request's
	// builders; see Engine.newBuilder).
	targets map[string]target
}

// The arms of a reference condition (builder.refArm).
const (
	armBoth = iota
	armRid
	armText
)

// pidCond writes the condition that index row x is an entry of parameter
// code of one of types: index rows name their parameter by the id of the
// (type, code) pair (sqldb.DB.ParamID), looked up here so that the
// database seeks its indexes by the id itself. A type without the
// parameter has no entries of it; when no type has any, the condition
// matches nothing (id 0 is no parameter's).
//
// An alias parameter (index.AliasOf: combo-code, most patient
// parameters...) has no entries of its own: its condition names its
// sources' ids instead, with the target type of a restricted alias
// ("x.pid = ? AND x.target_type = 'Patient'" for Observation's patient).
func (b *builder) pidCond(x string, types []string, code string) error {
	return b.pidCondCol(x, x+".pid", types, code)
}

// pidCondCol is pidCond with the pid column written as col.
func (b *builder) pidCondCol(x, col string, types []string, code string) error {
	// the ids by the target type their rows are restricted to ("": none)
	var targets []string
	ids := map[string][]int64{}
	add := func(target, t, c string) error {
		id, err := b.db.ParamID(b.ctx, t, c)
		if err != nil {
			return err
		}
		if id == 0 || slices.Contains(ids[target], id) {
			return nil
		}
		if _, seen := ids[target]; !seen {
			targets = append(targets, target)
		}
		ids[target] = append(ids[target], id)
		return nil
	}
	for _, t := range types {
		if _, ok := r4.SearchParams(t)[code]; !ok {
			continue
		}
		a, alias := index.AliasOf(t, code)
		if !alias {
			if err := add("", t, code); err != nil {
				return err
			}
			continue
		}
		for _, src := range a.Sources {
			if err := add(a.TargetType, t, src); err != nil {
				return err
			}
		}
	}
	if len(targets) == 0 {
		b.w(col + " = 0")
		return nil
	}
	slices.Sort(targets)
	if len(targets) > 1 {
		b.w("(")
	}
	for i, target := range targets {
		if i > 0 {
			b.w(" OR ")
		}
		if target != "" {
			b.w("(")
		}
		if l := ids[target]; len(l) == 1 {
			b.arg(col+" = ?", l[0])
		} else {
			inList(b, col, l)
		}
		if target != "" {
			b.arg(" AND "+x+".target_type = ?)", target)
		}
	}
	if len(targets) > 1 {
		b.w(")")
	}
	return nil
}

// pidProbe writes pidCond's condition for an index row looked up by its
// resource (x.rid = r.rid), with the column behind a unary plus so that no
// planner takes the parameter index for it: on SQLite, without statistics SQLite
// preferred the (pid, value...) index with only pid known, which reads
// every row of the parameter for each candidate resource (a patient's
// Observations with ten codes took 6 s instead of milliseconds), where the
// rid index finds the resource's few rows.
// PostgreSQL plans from statistics and keeps the plain column.
func (b *builder) pidProbe(x string, types []string, code string) error {
	if b.dialect == sqldb.SQLite {
		return b.pidCondCol(x, "+"+x+".pid", types, code)
	}
	return b.pidCond(x, types, code)
}

// typesOf returns the resource types a clause's index rows may be of on a
// resource of type typ ("" when the search spans several types).
func typesOf(typ string, c *clause) []string {
	if typ != "" {
		return []string{typ}
	}
	return c.types
}

// innerAccess writes the conditions that keep a resource alias t of one
// of types within what the caller may see: its patient compartment
// (shared types aside) and its scope filters.
func (b *builder) innerAccess(t string, types []string) error {
	if b.who == nil {
		return nil
	}
	if pid := b.who.Patient(); pid != "" {
		var shared []string
		for _, ty := range types {
			if records.Shared(ty) {
				shared = append(shared, ty)
			}
		}
		b.w(" AND ")
		b.confinedTo(t, pid, shared)
	}
	for _, ty := range types {
		fs := b.who.Filters(ty)
		if len(fs) == 0 {
			continue
		}
		b.arg(" AND ("+t+".type <> ?", ty)
		for _, f := range fs {
			b.w(" OR (1=1")
			for k, vals := range f {
				for _, v := range vals {
					c, err := parseClause([]string{ty}, k, v)
					if err != nil {
						return fhir.Forbidden("the access token's scope filter %s=%s on %s cannot be applied: %v", k, v, ty, err)
					}
					b.w(" AND ")
					if err := b.cond(t, ty, c, false); err != nil {
						return err
					}
				}
			}
			b.w(")")
		}
		b.w(")")
	}
	return nil
}

// confinedTo writes the condition that keeps a resource alias t within
// what patient pid may see: their compartment, which holds the shared
// resources they own (records: owner.go), and of the shared types among
// the searched ones, the resources nobody owns.
func (b *builder) confinedTo(t, pid string, shared []string) {
	b.arg("("+t+".rid IN (SELECT ic.rid FROM compartment ic WHERE ic.patient = ?)", pid)
	if len(shared) > 0 {
		b.w(" OR ")
		inList(b, t+".type", shared)
		b.w(" AND NOT EXISTS (SELECT 1 FROM compartment io WHERE io.rid = " + t + ".rid)")
	}
	b.w(")")
}

func (b *builder) w(s string)          { b.sb.WriteString(s) }
func (b *builder) arg(s string, a any) { b.sb.WriteString(s); b.args = append(b.args, a) }
func (b *builder) alias() string       { b.n++; return "x" + strconv.Itoa(b.n) }

// inList writes "col IN (?, ?, ...)" with vals as the arguments.
func inList[T any](b *builder, col string, vals []T) {
	b.w(col + " IN (")
	for i, v := range vals {
		if i > 0 {
			b.w(", ")
		}
		b.arg("?", v)
	}
	b.w(")")
}

// tableOf is the index table of each parameter type.
func tableOf(t r4.ParamType) string {
	switch t {
	case r4.ParamToken:
		return "idx_token"
	case r4.ParamString:
		return "idx_string"
	case r4.ParamDate:
		return "idx_date"
	case r4.ParamReference:
		return "idx_ref"
	case r4.ParamQuantity:
		return "idx_quantity"
	case r4.ParamNumber:
		return "idx_number"
	case r4.ParamURI:
		return "idx_uri"
	case r4.ParamComposite:
		return "idx_composite"
	}
	return ""
}

// cond writes the SQL condition of clause c on the resource row alias ra
// (with columns rid, type, id, last_updated) of type typ ("" when the
// search spans several types). drive asks for the "ra.rid IN (...)" form,
// which lets the database start from the index.
func (b *builder) cond(ra, typ string, c *clause, drive bool) error {
	switch {
	case c.code == "_id":
		return b.idCond(ra, c)
	case c.code == "_lastUpdated":
		return b.lastUpdatedCond(ra, c)
	case c.hasType != "":
		return b.hasCond(ra, c)
	case c.inner != nil:
		return b.chainCond(ra, typ, c)
	}
	tbl := tableOf(c.typ)
	x := b.alias()
	if c.mod == "missing" {
		// one clause value decides; several (true,false) match everything
		if len(c.values) > 1 {
			b.w("1=1")
			return nil
		}
		if c.values[0] == "true" {
			b.w("NOT ")
		}
		b.w("EXISTS (SELECT 1 FROM " + tbl + " " + x + " WHERE " + x + ".rid = " + ra + ".rid AND ")
		if err := b.pidProbe(x, typesOf(typ, c), c.code); err != nil {
			return err
		}
		b.w(")")
		return nil
	}
	if c.typ == r4.ParamComposite {
		return b.compositeCond(ra, c)
	}
	if c.mod == "not" {
		b.w("NOT ")
		drive = false
	}
	if drive && typ != "" {
		b.w(ra + ".rid IN (")
		if err := b.list(typ, c); err != nil {
			return err
		}
		b.w(")")
		return nil
	}
	b.w("EXISTS (SELECT 1 FROM " + tbl + " " + x + " WHERE " + x + ".rid = " + ra + ".rid AND ")
	if err := b.pidProbe(x, typesOf(typ, c), c.code); err != nil {
		return err
	}
	if err := b.values(x, c); err != nil {
		return err
	}
	b.w(")")
	return nil
}

// list writes a query of the resources of type typ that a selective
// clause (see selective) matches: "SELECT x.rid FROM idx_... WHERE ...".
func (b *builder) list(typ string, c *clause) error {
	if c.typ == r4.ParamReference && c.mod != "identifier" {
		// The rows that name the target by rid, then those that name it
		// by type and id: each list reads one index alone (covering),
		// where one OR of both made SQLite fetch every matching row
		// from the table (MULTI-INDEX OR), a third slower for a
		// patient's thousand Observations.
		u := b.alias()
		b.w("SELECT " + u + ".rid FROM (")
		for i, arm := range []int{armRid, armText} {
			if i > 0 {
				b.w(" UNION ALL ")
			}
			x := b.alias()
			b.w("SELECT " + x + ".rid FROM idx_ref " + x + " WHERE ")
			if err := b.pidCond(x, []string{typ}, c.code); err != nil {
				return err
			}
			b.refArm = arm
			err := b.values(x, c)
			b.refArm = armBoth
			if err != nil {
				return err
			}
		}
		b.w(") " + u)
		return nil
	}
	x := b.alias()
	b.w("SELECT " + x + ".rid FROM " + tableOf(c.typ) + " " + x + " WHERE ")
	if err := b.pidCond(x, []string{typ}, c.code); err != nil {
		return err
	}
	return b.values(x, c)
}

// values writes " AND (value OR value...)" for the index row x.
func (b *builder) values(x string, c *clause) error {
	if codes := tokenCodes(c); len(codes) > 1 {
		// The codes of several token values as one list too, so that the
		// index seeks by (pid, code) for each instead of reading every
		// row of the parameter and testing the ORs (SQLite does not take
		// pid into each OR branch).
		b.w(" AND ")
		inList(b, x+".code", codes)
	}
	b.w(" AND (")
	for i, v := range c.values {
		if i > 0 {
			b.w(" OR ")
		}
		b.w("(")
		if err := b.valueCond(x, c, v); err != nil {
			return err
		}
		b.w(")")
	}
	b.w(")")
	return nil
}

// valueCond writes the condition one value puts on an index row x.
func (b *builder) valueCond(x string, c *clause, v string) error {
	switch c.typ {
	case r4.ParamToken:
		return b.tokenCond(x, c, v)
	case r4.ParamString:
		s := index.NormalizeString(unescape(v))
		switch c.mod {
		case "exact":
			b.arg(x+".exact = ?", unescape(v))
		case "contains":
			b.arg(x+".norm LIKE ? ESCAPE '\\'", "%"+escapeLike(s)+"%")
		default:
			b.arg(x+".norm LIKE ? ESCAPE '\\'", escapeLike(s)+"%")
		}
	case r4.ParamDate:
		prefix, low, high, err := parseDate(v)
		if err != nil {
			return err
		}
		b.rangeCond(x+".low", x+".high", prefix, low, high)
	case r4.ParamNumber:
		prefix, value, low, high, err := parseNumber(v)
		if err != nil {
			return err
		}
		b.numberCond(x, prefix, value, low, high)
	case r4.ParamQuantity:
		q, err := parseQuantity(v)
		if err != nil {
			return err
		}
		b.numberCond(x, q.prefix, q.value, q.low, q.high)
		if q.hasSystem {
			b.arg(" AND "+x+".system = ?", q.system)
		}
		if q.code != "" {
			if q.hasSystem {
				b.arg(" AND "+x+".code = ?", q.code)
			} else {
				b.arg(" AND ("+x+".code = ?", q.code)
				b.arg(" OR "+x+".unit = ?)", q.code)
			}
		}
	case r4.ParamURI:
		u := unescape(v)
		switch c.mod {
		case "below":
			b.arg(x+".value = ?", u)
			b.arg(" OR "+x+".value LIKE ? ESCAPE '\\'", escapeLike(strings.TrimSuffix(u, "/"))+"/%")
		case "above":
			inList(b, x+".value", uriAbove(u))
		default:
			b.arg(x+".value = ?", u)
		}
	case r4.ParamReference:
		return b.refCond(x, c, v)
	default:
		return fmt.Errorf("search parameter %s: %s parameters are not supported", c.key, c.typ)
	}
	return nil
}

// uriAbove returns u and its parent paths ("http://a/b/c" -> ..., "http://a/b", "http://a").
func uriAbove(u string) []string {
	out := []string{u}
	scheme := strings.Index(u, "://")
	for {
		i := strings.LastIndexByte(u, '/')
		if i < 0 || (scheme >= 0 && i <= scheme+2) {
			return out
		}
		u = u[:i]
		out = append(out, u)
	}
}

// tokenCodes returns the codes of a plain token clause whose values all
// name a code (code or system|code), and nil otherwise.
func tokenCodes(c *clause) []string {
	if c.typ != r4.ParamToken || c.mod != "" {
		return nil
	}
	codes := make([]string, 0, len(c.values))
	for _, v := range c.values {
		p := splitEscaped(v, '|')
		code := unescape(p[len(p)-1])
		if len(p) > 2 || code == "" {
			return nil
		}
		if !slices.Contains(codes, code) {
			codes = append(codes, code)
		}
	}
	return codes
}

func (b *builder) tokenCond(x string, c *clause, v string) error {
	switch c.mod {
	case "text":
		s := escapeLike(index.NormalizeString(unescape(v)))
		b.arg("("+x+".text LIKE ? ESCAPE '\\'", s+"%")
		b.arg(" OR "+x+".text LIKE ? ESCAPE '\\')", "% "+s+"%")
		return nil
	case "of-type":
		p := splitEscaped(v, '|')
		b.arg(x+".type_system = ?", unescape(p[0]))
		b.arg(" AND "+x+".type_code = ?", unescape(p[1]))
		b.arg(" AND "+x+".code = ?", unescape(p[2]))
		return nil
	}
	p := splitEscaped(v, '|')
	switch len(p) {
	case 1:
		b.arg(x+".code = ?", unescape(p[0]))
	case 2:
		sys, code := unescape(p[0]), unescape(p[1])
		switch {
		case sys == "" && code == "":
			return fmt.Errorf("search parameter %s: %q has neither system nor code", c.key, v)
		case code == "":
			b.arg(x+".system = ?", sys)
		default:
			b.arg(x+".code = ?", code)
			b.arg(" AND "+x+".system = ?", sys)
		}
	default:
		return fmt.Errorf("search parameter %s: %q has more than one unescaped |", c.key, v)
	}
	return nil
}

func (b *builder) refCond(x string, c *clause, v string) error {
	v = unescape(v)
	if c.mod == "identifier" {
		sys, val, hasSys := strings.Cut(v, "|")
		if !hasSys {
			b.arg(x+".id_value = ?", v)
			return nil
		}
		if sys != "" {
			b.arg(x+".id_system = ? AND ", sys)
		}
		b.arg(x+".id_value = ?", val)
		return nil
	}
	if b.base != "" && strings.HasPrefix(v, b.base+"/") {
		v = strings.TrimPrefix(v, b.base+"/")
	}
	if strings.Contains(v, "://") || strings.HasPrefix(v, "urn:") {
		if b.refArm == armRid {
			b.w("1=0") // the other arm has it
			return nil
		}
		url, version, hasVersion := strings.Cut(v, "|")
		b.arg(x+".url = ?", url)
		if hasVersion {
			b.arg(" AND "+x+".version = ?", version)
		}
		return nil
	}
	typ, id, hasType := strings.Cut(v, "/")
	if hasType && r4.IsResourceType(typ) {
		id, _, _ = strings.Cut(id, "/_history/")
		if c.mod != "" && c.mod != typ {
			b.w("1=0")
			return nil
		}
		// The rows name the target by its rid, or by type and id when
		// it did not exist as they were written (target_rid 0; see
		// sqldb's migrations/*/0014_ref_target_rid.sql).
		t, err := b.lookupTarget([]string{typ}, []string{typ}, id)
		if err != nil {
			return err
		}
		b.targetCond(x, t, func() {
			b.arg(x+".target_type = ?", typ)
			b.arg(" AND "+x+".target_id = ?", id)
		})
		return nil
	}
	// An id alone: a resource of any type the parameter can point at.
	types := []string{c.mod}
	if c.mod == "" {
		types = refTargetTypes(c)
	}
	var textTypes []string // any type
	if c.mod != "" {
		textTypes = types
	}
	t, err := b.lookupTarget(types, textTypes, v)
	if err != nil {
		return err
	}
	b.targetCond(x, t, func() {
		b.arg(x+".target_id = ?", v)
		if c.mod != "" {
			b.arg(" AND "+x+".target_type = ?", c.mod)
		}
	})
	return nil
}

// target is what lookupTarget found of a reference's target.
type target struct {
	// rids are the rids of the resources it names (none when none
	// exists).
	rids []int64
	// byText says that some reference rows name it by type and id
	// (target_rid 0: written before it existed).
	byText bool
}

// targetCond writes the condition that reference row x names target t:
// by rid, or by type and id (text writes that condition, on a row of
// target_rid 0), as builder.refArm allows. A side that no row can match
// is left out, so that the usual search (the target exists, and every row
// that names it says so by rid) is one index range, as before rids.
func (b *builder) targetCond(x string, t target, text func()) {
	byRid := len(t.rids) > 0 && b.refArm != armText
	byText := t.byText && b.refArm != armRid
	switch {
	case byRid && byText:
		b.w("(")
		inList(b, x+".target_rid", t.rids)
		b.w(" OR (" + x + ".target_rid = 0 AND ")
		text()
		b.w("))")
	case byRid:
		inList(b, x+".target_rid", t.rids)
	case byText || b.refArm != armRid:
		// (also when nothing matches: an index seek that finds nothing,
		// where a constant false condition would have SQLite plan a scan)
		b.w("(" + x + ".target_rid = 0 AND ")
		text()
		b.w(")")
	default:
		b.w(x + ".target_rid = -1") // no row: no rid is negative
	}
}

// lookupTarget finds the resources of one of types with id id, and
// whether reference rows name such a target by type and id (of one of
// textTypes; nil: any type) because it did not exist when they were
// written. It runs before the search, rather than as a subquery in it,
// so that the database plans with the values (PostgreSQL took about 4
// ms instead of 2.3 for a Synthea patient's cholesterol results with a
// subquery in their place), and so that the search reads only the index
// it needs. A resource's rid never changes and its row is never removed;
// a row that names a target by type and id and commits between this
// lookup and the search (a write that began before the target existed)
// is missed, as a write that commits after the search would be.
func (b *builder) lookupTarget(types, textTypes []string, id string) (target, error) {
	if b.targets == nil {
		b.targets = map[string]target{}
	}
	key := strings.Join(types, ",") + "|" + strings.Join(textTypes, ",") + "|" + id
	if t, ok := b.targets[key]; ok {
		return t, nil
	}
	var args []any
	for _, t := range types {
		args = append(args, t)
	}
	args = append(args, id, id)
	q := "SELECT rid FROM resource WHERE type IN (" + sqldb.Placeholders(len(types)) + ") AND id = ?" +
		" UNION ALL SELECT 0 WHERE EXISTS (SELECT 1 FROM idx_ref WHERE target_rid = 0 AND target_id = ?"
	if textTypes != nil {
		q += " AND target_type IN (" + sqldb.Placeholders(len(textTypes)) + ")"
		for _, t := range textTypes {
			args = append(args, t)
		}
	}
	rows, err := b.db.Query(b.ctx, q+")", args...)
	if err != nil {
		return target{}, fmt.Errorf("search: look up reference target: %w", err)
	}
	defer rows.Close()
	var t target
	for rows.Next() {
		var rid int64
		if err := rows.Scan(&rid); err != nil {
			return target{}, fmt.Errorf("search: look up reference target: %w", err)
		}
		if rid == 0 {
			t.byText = true
		} else {
			t.rids = append(t.rids, rid)
		}
	}
	if err := rows.Err(); err != nil {
		return target{}, fmt.Errorf("search: look up reference target: %w", err)
	}
	b.targets[key] = t
	return t, nil
}

// refTargetTypes are the resource types reference parameter c can point
// at on the types it applies to (every type when a definition does not
// say).
func refTargetTypes(c *clause) []string {
	var out []string
	for _, typ := range c.types {
		p := r4.SearchParams(typ)[c.code]
		if p == nil || len(p.Targets) == 0 {
			return r4.ResourceTypes()
		}
		for _, t := range p.Targets {
			if !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
	}
	if len(out) == 0 {
		return r4.ResourceTypes()
	}
	slices.Sort(out)
	return out
}

// rangeCond writes the FHIR date comparison of a search range [sl, sh]
// against a stored range [lo, hi] (all inclusive instants).
func (b *builder) rangeCond(lo, hi, prefix string, sl, sh int64) {
	switch prefix {
	case "eq":
		b.arg(lo+" >= ?", sl)
		b.arg(" AND "+hi+" <= ?", sh)
	case "ne":
		b.arg("NOT ("+lo+" >= ?", sl)
		b.arg(" AND "+hi+" <= ?)", sh)
	case "gt":
		b.arg(hi+" > ?", sh)
	case "lt":
		b.arg(lo+" < ?", sl)
	case "ge":
		b.arg(hi+" > ?", sh)
		b.arg(" OR ("+lo+" >= ?", sl)
		b.arg(" AND "+hi+" <= ?)", sh)
	case "le":
		b.arg(lo+" < ?", sl)
		b.arg(" OR ("+lo+" >= ?", sl)
		b.arg(" AND "+hi+" <= ?)", sh)
	case "sa":
		b.arg(lo+" > ?", sh)
	case "eb":
		b.arg(hi+" < ?", sl)
	case "ap":
		// within 10% of the distance between the value and now
		d := b.now.UnixMicro() - sl
		if d < 0 {
			d = -d
		}
		d /= 10
		b.arg(hi+" >= ?", satSub(sl, d))
		b.arg(" AND "+lo+" <= ?", satAdd(sh, d))
	}
}

func satSub(a, d int64) int64 {
	if a < math.MinInt64+d {
		return math.MinInt64
	}
	return a - d
}

func satAdd(a, d int64) int64 {
	if a > math.MaxInt64-d {
		return math.MaxInt64
	}
	return a + d
}

// numberCond compares a number or quantity row x (value, low, high) with a
// search value whose precision covers [low, high).
func (b *builder) numberCond(x, prefix string, value, low, high float64) {
	v := x + ".value"
	switch prefix {
	case "eq":
		b.arg("("+v+" >= ?", low)
		b.arg(" AND "+v+" < ?)", high)
	case "ne":
		b.arg("("+v+" < ?", low)
		b.arg(" OR "+v+" >= ?)", high)
	case "gt":
		b.arg(v+" > ?", value)
	case "lt":
		b.arg(v+" < ?", value)
	case "ge":
		b.arg(v+" >= ?", value)
	case "le":
		b.arg(v+" <= ?", value)
	case "sa":
		b.arg(x+".low > ?", value)
	case "eb":
		b.arg(x+".high < ?", value)
	case "ap":
		d := math.Abs(value) / 10
		b.arg("("+v+" >= ?", value-d)
		b.arg(" AND "+v+" <= ?)", value+d)
	}
}

func escapeLike(s string) string {
	if !strings.ContainsAny(s, `%_\`) {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s)
}

func (b *builder) idCond(ra string, c *clause) error {
	if c.mod == "missing" {
		if c.values[0] == "true" {
			b.w("1=0")
		} else {
			b.w("1=1")
		}
		return nil
	}
	if c.mod == "not" {
		b.w("NOT ")
	}
	b.w(ra + ".id IN (")
	for i, v := range c.values {
		if i > 0 {
			b.w(", ")
		}
		b.arg("?", unescape(v))
	}
	b.w(")")
	return nil
}

func (b *builder) lastUpdatedCond(ra string, c *clause) error {
	if c.mod == "missing" {
		if c.values[0] == "true" {
			b.w("1=0")
		} else {
			b.w("1=1")
		}
		return nil
	}
	b.w("(")
	for i, v := range c.values {
		if i > 0 {
			b.w(" OR ")
		}
		prefix, low, high, err := parseDate(v)
		if err != nil {
			return err
		}
		b.w("(")
		b.rangeCond(ra+".last_updated", ra+".last_updated", prefix, low, high)
		b.w(")")
	}
	b.w(")")
	return nil
}

// chainCond: a reference of c.code points at a resource of c.chainTypes
// that matches c.inner.
func (b *builder) chainCond(ra, typ string, c *clause) error {
	x, t := b.alias(), b.alias()
	b.w("EXISTS (SELECT 1 FROM idx_ref " + x + " JOIN resource " + t + " ON (" + t + ".rid = " + x + ".target_rid OR " + x + ".target_rid = 0 AND " + t + ".type = " + x + ".target_type AND " + t + ".id = " + x + ".target_id)")
	b.w(" WHERE " + x + ".rid = " + ra + ".rid AND ")
	if err := b.pidCond(x, typesOf(typ, c), c.code); err != nil {
		return err
	}
	b.w(" AND ")
	inList(b, x+".target_type", c.chainTypes)
	b.w(" AND " + t + ".deleted = " + b.falseLit() + " AND ")
	innerType := ""
	if len(c.chainTypes) == 1 {
		innerType = c.chainTypes[0]
	}
	if err := b.cond(t, innerType, c.inner, false); err != nil {
		return err
	}
	if err := b.innerAccess(t, c.chainTypes); err != nil {
		return err
	}
	b.w(")")
	return nil
}

// hasCond: a resource of c.hasType refers to this one by c.hasParam and
// matches c.inner. The reference rows name this resource by its rid, or
// by its type and id when it did not exist as they were written
// (target_rid 0): two EXISTS, so that each side joins on its own index
// rather than through one OR, which PostgreSQL can only filter.
func (b *builder) hasCond(ra string, c *clause) error {
	b.w("(")
	for i, by := range []string{"%[1]s.target_rid = %[2]s.rid", "%[1]s.target_rid = 0 AND %[1]s.target_id = %[2]s.id AND %[1]s.target_type = %[2]s.type"} {
		if i > 0 {
			b.w(" OR ")
		}
		x, o := b.alias(), b.alias()
		b.w("EXISTS (SELECT 1 FROM idx_ref " + x + " JOIN resource " + o + " ON " + o + ".rid = " + x + ".rid")
		b.w(" WHERE " + fmt.Sprintf(by, x, ra) + " AND ")
		if err := b.pidCond(x, []string{c.hasType}, c.hasParam); err != nil {
			return err
		}
		b.w(" AND ")
		if err := b.cond(o, c.hasType, c.inner, false); err != nil {
			return err
		}
		if err := b.innerAccess(o, []string{c.hasType}); err != nil {
			return err
		}
		b.w(")")
	}
	b.w(")")
	return nil
}

func (b *builder) compositeCond(ra string, c *clause) error {
	rids := b.composite[c]
	if len(rids) == 0 {
		b.w("1=0")
		return nil
	}
	b.w(ra + ".rid IN (")
	for i, id := range rids {
		if i > 0 {
			b.w(",")
		}
		b.w(strconv.FormatInt(id, 10))
	}
	b.w(")")
	return nil
}

func (b *builder) falseLit() string {
	if b.dialect == sqldb.Postgres {
		return "FALSE"
	}
	return "0"
}

// sortExpr writes the SQL of a sort key on resource alias ra (of one of
// types): the smallest value ascending, the largest descending; resources
// without one sort last.
func (b *builder) sortExpr(ra string, types []string, k sortKey) error {
	switch k.code {
	case "_lastUpdated":
		b.w(ra + ".last_updated")
		return nil
	case "_id":
		b.w(ra + ".id")
		if b.dialect == sqldb.Postgres {
			b.w(` COLLATE "C"`)
		}
		return nil
	}
	agg := "MIN"
	if k.desc {
		agg = "MAX"
	}
	var col string
	var missing any
	switch k.typ {
	case r4.ParamDate:
		col = "low"
		missing = int64(math.MaxInt64)
		if k.desc {
			col, missing = "high", int64(math.MinInt64)
		}
	case r4.ParamString:
		col, missing = "norm", "\uffff"
		if k.desc {
			missing = ""
		}
	case r4.ParamToken:
		col, missing = "code", "\uffff"
		if k.desc {
			missing = ""
		}
	case r4.ParamURI:
		col, missing = "value", "\uffff"
		if k.desc {
			missing = ""
		}
	default: // number, quantity
		col, missing = "value", math.MaxFloat64
		if k.desc {
			missing = -math.MaxFloat64
		}
	}
	x := b.alias()
	b.w("COALESCE((SELECT " + agg + "(" + x + "." + col + ") FROM " + tableOf(k.typ) + " " + x + " WHERE " + x + ".rid = " + ra + ".rid AND ")
	if err := b.pidCond(x, types, k.code); err != nil {
		return err
	}
	b.w(")")
	if b.dialect == sqldb.Postgres {
		switch missing.(type) {
		case string:
			b.arg(", ?::text)", missing)
			b.w(` COLLATE "C"`)
		case int64:
			b.arg(", ?::bigint)", missing)
		default:
			b.arg(", ?::double precision)", missing)
		}
		return nil
	}
	b.arg(", ?)", missing)
	return nil
}
