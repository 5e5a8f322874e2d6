package search

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/r4"
)

// clause is one search parameter of a query: its values are alternatives
// (OR); the clauses of a query all apply (AND).
type clause struct {
	// key is the parameter as written ("code:text"), for messages.
	key  string
	code string
	mod  string
	typ  r4.ParamType
	// values are the comma-separated alternatives, still escaped.
	values []string
	// chain: the referenced resources (of chainTypes) must match inner.
	chainTypes []string
	inner      *clause
	// _has: resources of hasType referring to this one by hasParam must
	// match inner.
	hasType  string
	hasParam string
	// comps are the component types of a composite parameter.
	comps []r4.ParamType
	// types are the resource types the clause applies to.
	types []string
}

// sortKey is one _sort key.
type sortKey struct {
	code string
	typ  r4.ParamType
	desc bool
}

// include is one _include or _revinclude.
type include struct {
	// source type and reference parameter; param "*" for all.
	srcType string
	param   string
	// target type restriction ("" for any).
	target  string
	iterate bool
	// sharedOnly keeps the targets outside the patient compartment
	// ($everything's references to practitioners, organizations...).
	sharedOnly bool
}

// query is a parsed search.
type query struct {
	types    []string
	clauses  []*clause
	sort     []sortKey
	count    int
	summary  string
	elements string
	total    string
	includes []include
	revs     []include
	cursor   string
	// explicitTypes is set when _type named the types.
	explicitTypes bool
	warnings      []fhir.Issue
}

// Control parameters: they shape the result rather than select it.
var controlParams = map[string]bool{
	"_count": true, "_sort": true, "_summary": true, "_elements": true, "_total": true,
	"_include": true, "_revinclude": true, "_format": true, "_pretty": true, "_cursor": true, "_type": true,
}

// Maximum and default page sizes.
const (
	defaultCount = 50
	maxCount     = 1000
)

// paramSets caches, per resource type, the parameters search supports: the
// standard ones extraction indexes.
var paramSets sync.Map // type -> map[string]*r4.SearchParam

// params returns the searchable parameters of a resource type by code.
func params(typ string) map[string]*r4.SearchParam {
	if m, ok := paramSets.Load(typ); ok {
		return m.(map[string]*r4.SearchParam)
	}
	m := map[string]*r4.SearchParam{}
	for _, sp := range index.Supported(typ) {
		if sp.Type == r4.ParamComposite && !compositeSupported(typ, sp) {
			continue
		}
		m[sp.Code] = sp
	}
	// _id and _lastUpdated are answered from the resource table.
	all := r4.SearchParams(typ)
	for _, c := range []string{"_id", "_lastUpdated"} {
		if sp := all[c]; sp != nil {
			m[c] = sp
		}
	}
	paramSets.Store(typ, m)
	return m
}

// compositeSupported reports whether all components of a composite
// parameter are of types the composite matcher handles.
func compositeSupported(typ string, sp *r4.SearchParam) bool {
	if len(sp.Components) == 0 {
		return false
	}
	for _, c := range sp.Components {
		cp := r4.SearchParamByURL(c.Definition)
		if cp == nil {
			return false
		}
		switch cp.Type {
		case r4.ParamToken, r4.ParamQuantity, r4.ParamDate, r4.ParamString, r4.ParamNumber, r4.ParamReference, r4.ParamURI:
		default:
			return false
		}
	}
	return true
}

// Params returns the search parameters supported for a resource type,
// sorted by code (for the CapabilityStatement).
func Params(typ string) []*r4.SearchParam {
	m := params(typ)
	out := make([]*r4.SearchParam, 0, len(m))
	for _, sp := range m {
		out = append(out, sp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Code < out[j].Code })
	return out
}

// lookup finds a parameter code valid for every type in types, and its
// parameter type.
func lookup(types []string, code string) (*r4.SearchParam, bool) {
	var first *r4.SearchParam
	for _, t := range types {
		sp := params(t)[code]
		if sp == nil {
			return nil, false
		}
		if first == nil {
			first = sp
		} else if first.Type != sp.Type {
			return nil, false
		}
	}
	return first, first != nil
}

// badParam reports an unknown or unsupported parameter: an error, or a
// warning under lenient handling.
func (q *query) badParam(lenient bool, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if lenient {
		q.warnings = append(q.warnings, fhir.Issue{Severity: "warning", Code: "not-supported", Diagnostics: msg + " (ignored: Prefer handling=lenient)"})
		return nil
	}
	return fhir.Errorf(http.StatusBadRequest, "not-supported", "%s", msg)
}

// parse turns query parameters into a query over types.
func parse(types []string, v url.Values, lenient bool) (*query, error) {
	q := &query{types: types, count: defaultCount}
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		vals := v[k]
		switch {
		case k == "_count":
			n, err := strconv.Atoi(last(vals))
			if err != nil || n < 0 {
				return nil, fhir.BadRequest("_count must be a non-negative integer, not %q", last(vals))
			}
			q.count = min(n, maxCount)
		case k == "_summary":
			s := last(vals)
			switch s {
			case "true", "false", "text", "data", "count":
			default:
				return nil, fhir.BadRequest("_summary must be true, text, data, count or false, not %q", s)
			}
			q.summary = s
		case k == "_elements":
			q.elements = strings.Join(vals, ",")
		case k == "_total":
			s := last(vals)
			switch s {
			case "none", "estimate", "accurate":
			default:
				return nil, fhir.BadRequest("_total must be none, estimate or accurate, not %q", s)
			}
			q.total = s
		case k == "_sort":
			if err := q.parseSort(strings.Join(vals, ","), lenient); err != nil {
				return nil, err
			}
		case k == "_include" || k == "_include:iterate" || k == "_revinclude" || k == "_revinclude:iterate":
			rev := strings.HasPrefix(k, "_revinclude")
			for _, val := range vals {
				inc, err := parseInclude(val, rev, strings.HasSuffix(k, ":iterate"))
				if err != nil {
					if err := q.badParam(lenient, "%s=%s: %v", k, val, err); err != nil {
						return nil, err
					}
					continue
				}
				if rev {
					q.revs = append(q.revs, inc)
				} else {
					q.includes = append(q.includes, inc)
				}
			}
		case k == "_cursor":
			q.cursor = last(vals)
		case controlParams[k]:
			// _format, _pretty, _type: handled by the caller
		default:
			for _, val := range vals {
				c, err := parseClause(types, k, val)
				if err != nil {
					fe := fhir.AsError(err)
					if fe.Status == http.StatusBadRequest && fe.Issues[0].Code == "not-supported" {
						if err := q.badParam(lenient, "%s", fe.Issues[0].Diagnostics); err != nil {
							return nil, err
						}
						continue
					}
					return nil, err
				}
				q.clauses = append(q.clauses, c)
			}
		}
	}
	if q.summary != "" && q.summary != "false" && q.elements != "" {
		return nil, fhir.BadRequest("_summary and _elements cannot be combined")
	}
	return q, nil
}

func last(vals []string) string {
	if len(vals) == 0 {
		return ""
	}
	return vals[len(vals)-1]
}

func notSupported(format string, args ...any) error {
	return fhir.Errorf(http.StatusBadRequest, "not-supported", format, args...)
}

// parseClause parses one parameter key (with its modifier, chain or _has)
// and value.
func parseClause(types []string, key, value string) (*clause, error) {
	if strings.HasPrefix(key, "_has:") {
		return parseHas(types, key, value)
	}
	if head, rest, chained := strings.Cut(key, "."); chained {
		return parseChain(types, key, head, rest, value)
	}
	code, mod, _ := strings.Cut(key, ":")
	sp, ok := lookup(types, code)
	if !ok {
		if _, known := r4.SearchParams(types[0])[code]; known || len(types) > 1 {
			return nil, notSupported("search parameter %q is not supported for %s", code, strings.Join(types, ","))
		}
		return nil, notSupported("unknown search parameter %q for %s", code, strings.Join(types, ","))
	}
	c := &clause{key: key, code: code, mod: mod, typ: sp.Type, values: splitValues(value), types: types}
	if len(c.values) == 0 {
		return nil, fhir.BadRequest("search parameter %s has an empty value", key)
	}
	if err := checkModifier(c, sp); err != nil {
		return nil, err
	}
	if sp.Type == r4.ParamComposite {
		for _, comp := range sp.Components {
			c.comps = append(c.comps, r4.SearchParamByURL(comp.Definition).Type)
		}
	}
	return c, c.validate()
}

// checkModifier refuses modifiers the parameter's type does not have.
func checkModifier(c *clause, sp *r4.SearchParam) error {
	if c.mod == "" {
		return nil
	}
	if c.mod == "missing" {
		for _, v := range c.values {
			if v != "true" && v != "false" {
				return fhir.BadRequest("%s must be true or false, not %q", c.key, v)
			}
		}
		return nil
	}
	ok := false
	switch sp.Type {
	case r4.ParamToken:
		ok = c.mod == "not" || c.mod == "text" || (c.mod == "of-type" && c.code == "identifier")
	case r4.ParamString:
		ok = c.mod == "exact" || c.mod == "contains"
	case r4.ParamReference:
		ok = c.mod == "identifier" || r4.IsResourceType(c.mod) && (len(sp.Targets) == 0 || slices.Contains(sp.Targets, c.mod))
	case r4.ParamURI:
		ok = c.mod == "below" || c.mod == "above"
	}
	if !ok {
		return notSupported("modifier :%s is not supported on %s search parameter %s", c.mod, sp.Type, c.code)
	}
	return nil
}

// validate checks the values of a clause early, so that bad input is a
// 400 naming the parameter rather than an empty result.
func (c *clause) validate() error {
	if c.mod == "missing" {
		return nil
	}
	for _, v := range c.values {
		var err error
		switch c.typ {
		case r4.ParamDate:
			_, _, _, err = parseDate(v)
		case r4.ParamNumber:
			_, _, _, _, err = parseNumber(v)
		case r4.ParamQuantity:
			_, err = parseQuantity(v)
		case r4.ParamToken:
			if c.mod == "of-type" && len(splitEscaped(v, '|')) != 3 {
				err = fmt.Errorf("identifier:of-type needs system|code|value")
			}
		case r4.ParamComposite:
			if parts := splitEscaped(v, '$'); len(parts) != len(c.comps) {
				err = fmt.Errorf("a composite value needs %d components separated by $", len(c.comps))
			} else {
				for i, p := range parts {
					sub := &clause{key: c.key, typ: c.comps[i], values: []string{p}}
					if err = sub.validate(); err != nil {
						break
					}
				}
			}
		}
		if err != nil {
			return fhir.BadRequest("search parameter %s: %q: %v", c.key, v, err)
		}
	}
	return nil
}

// parseChain parses "subject:Patient.name=x" (one level only).
func parseChain(types []string, key, head, rest, value string) (*clause, error) {
	if strings.Contains(rest, ".") {
		return nil, notSupported("chained parameter %s: only one level of chaining is supported", key)
	}
	code, mod, _ := strings.Cut(head, ":")
	sp, ok := lookup(types, code)
	if !ok || sp.Type != r4.ParamReference {
		return nil, notSupported("chained parameter %s: %q is not a reference search parameter of %s", key, code, strings.Join(types, ","))
	}
	targets := sp.Targets
	if mod != "" {
		if !r4.IsResourceType(mod) {
			return nil, notSupported("chained parameter %s: :%s is not a resource type", key, mod)
		}
		targets = []string{mod}
	}
	innerCode, _, _ := strings.Cut(rest, ":")
	var chainTypes []string
	for _, t := range targets {
		if _, ok := params(t)[innerCode]; ok {
			chainTypes = append(chainTypes, t)
		}
	}
	if len(chainTypes) == 0 {
		return nil, notSupported("chained parameter %s: no target of %s has a search parameter %q", key, code, innerCode)
	}
	inner, err := parseClause(chainTypes, rest, value)
	if err != nil {
		return nil, err
	}
	if inner.inner != nil {
		return nil, notSupported("chained parameter %s: only one level of chaining is supported", key)
	}
	return &clause{key: key, code: code, typ: r4.ParamReference, chainTypes: chainTypes, inner: inner, types: types}, nil
}

// parseHas parses "_has:Observation:patient:code=x" (one level).
func parseHas(types []string, key, value string) (*clause, error) {
	parts := strings.SplitN(strings.TrimPrefix(key, "_has:"), ":", 3)
	if len(parts) != 3 {
		return nil, fhir.BadRequest("%s: _has needs the form _has:Type:reference:parameter", key)
	}
	typ, ref, rest := parts[0], parts[1], parts[2]
	if !r4.IsResourceType(typ) {
		return nil, notSupported("%s: unknown resource type %q", key, typ)
	}
	sp, ok := lookup([]string{typ}, ref)
	if !ok || sp.Type != r4.ParamReference {
		return nil, notSupported("%s: %q is not a reference search parameter of %s", key, ref, typ)
	}
	if strings.HasPrefix(rest, "_has:") {
		return nil, notSupported("%s: only one level of _has is supported", key)
	}
	inner, err := parseClause([]string{typ}, rest, value)
	if err != nil {
		return nil, err
	}
	return &clause{key: key, code: "_has", typ: r4.ParamSpecial, hasType: typ, hasParam: ref, inner: inner}, nil
}

// parseSort parses _sort keys.
func (q *query) parseSort(s string, lenient bool) error {
	for _, k := range strings.Split(s, ",") {
		k = strings.TrimSpace(k)
		if k == "" {
			continue
		}
		desc := strings.HasPrefix(k, "-")
		code := strings.TrimPrefix(k, "-")
		sp, ok := lookup(q.types, code)
		if !ok {
			if err := q.badParam(lenient, "_sort: unknown search parameter %q", code); err != nil {
				return err
			}
			continue
		}
		switch sp.Type {
		case r4.ParamDate, r4.ParamString, r4.ParamToken, r4.ParamNumber, r4.ParamQuantity, r4.ParamURI:
		default:
			if err := q.badParam(lenient, "_sort: cannot sort by %s parameter %q", sp.Type, code); err != nil {
				return err
			}
			continue
		}
		q.sort = append(q.sort, sortKey{code: code, typ: sp.Type, desc: desc})
	}
	return nil
}

// parseInclude parses "Type:param[:target]" or "*" / "Type:*".
func parseInclude(s string, rev, iterate bool) (include, error) {
	inc := include{iterate: iterate}
	if s == "*" {
		inc.param = "*"
		return inc, nil
	}
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return inc, fmt.Errorf("expected Type:parameter[:targetType]")
	}
	inc.srcType, inc.param = parts[0], parts[1]
	if !r4.IsResourceType(inc.srcType) {
		return inc, fmt.Errorf("unknown resource type %q", inc.srcType)
	}
	if len(parts) == 3 {
		if !r4.IsResourceType(parts[2]) {
			return inc, fmt.Errorf("unknown target type %q", parts[2])
		}
		inc.target = parts[2]
	}
	if inc.param != "*" {
		sp, ok := lookup([]string{inc.srcType}, inc.param)
		if !ok || sp.Type != r4.ParamReference {
			return inc, fmt.Errorf("%q is not a reference search parameter of %s", inc.param, inc.srcType)
		}
	}
	return inc, nil
}

// splitValues splits a parameter value at its unescaped commas.
func splitValues(v string) []string {
	var out []string
	for _, p := range splitEscaped(v, ',') {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// splitEscaped splits s at each sep not preceded by a backslash, keeping
// the escapes (unescape removes them).
func splitEscaped(s string, sep byte) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// unescape removes the backslashes of \, \$ \| and \\.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// prefixes of date, number and quantity values.
var prefixes = []string{"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"}

// cutPrefix splits a comparison prefix off a value (default eq).
func cutPrefix(v string) (string, string) {
	if len(v) > 2 && slices.Contains(prefixes, v[:2]) {
		return v[:2], v[2:]
	}
	return "eq", v
}

// parseDate parses a date search value into its prefix and the instants
// it covers (microseconds, inclusive).
func parseDate(v string) (prefix string, low, high int64, err error) {
	prefix, v = cutPrefix(unescape(v))
	low, high, err = index.DateRange(v)
	return prefix, low, high, err
}

// parseNumber parses a number search value.
func parseNumber(v string) (prefix string, value, low, high float64, err error) {
	prefix, v = cutPrefix(unescape(v))
	value, low, high, err = index.DecimalRange(v)
	return prefix, value, low, high, err
}

// quantityValue is a parsed quantity search value.
type quantityValue struct {
	prefix           string
	value, low, high float64
	system, code     string
	hasSystem        bool
}

func parseQuantity(v string) (quantityValue, error) {
	parts := splitEscaped(v, '|')
	if len(parts) != 1 && len(parts) != 3 {
		return quantityValue{}, fmt.Errorf("expected [prefix]number or [prefix]number|system|code")
	}
	var q quantityValue
	var err error
	q.prefix, q.value, q.low, q.high, err = parseNumber(parts[0])
	if err != nil {
		return q, err
	}
	if len(parts) == 3 {
		q.system, q.code = unescape(parts[1]), unescape(parts[2])
		q.hasSystem = q.system != ""
	}
	return q, nil
}
