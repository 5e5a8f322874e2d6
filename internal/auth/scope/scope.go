// Package scope parses SMART App Launch scopes (v1 and v2) and answers the
// questions every FHIR endpoint asks of a token: may it do this interaction on
// this resource type, limited to which patient compartment, and with which
// search filters.
//
// Resource scopes have the form
//
//	(patient|user|system)/(Type|*).(read|write|*|[c][r][u][d][s])[?param=value&...]
//
// The v1 permissions map onto v2 letters: read = rs, write = cud, * = cruds.
// SMART v2 ties the letters to FHIR interactions like this (the HTTP layer
// maps each request onto one Interaction):
//
//	c  create
//	r  read, vread, history-instance
//	u  update, patch
//	d  delete
//	s  search-type, search-system, history-type, history-system
//
// The other scopes understood are launch, launch/patient (and any other
// launch/<context>), openid, fhirUser, offline_access and online_access.
// Anything else is kept as unknown rather than rejected: OAuth lets a server
// ignore scopes it does not know, and the token endpoint decides.
package scope

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// Context is the part before the slash of a resource scope. It decides whose
// data the scope reaches.
type Context uint8

// The three SMART contexts.
const (
	// Patient scopes reach only the token's patient compartment.
	Patient Context = iota + 1
	// User scopes reach what the signed-in user may see.
	User
	// System scopes are for backend services with no user.
	System
)

// String returns the context as written in a scope.
func (c Context) String() string {
	switch c {
	case Patient:
		return "patient"
	case User:
		return "user"
	case System:
		return "system"
	}
	return fmt.Sprintf("Context(%d)", uint8(c))
}

// Interaction is a set of SMART v2 permissions (c, r, u, d, s), a bit each, so
// that granting the allowed subset is a bitwise AND.
type Interaction uint8

// The five SMART v2 permissions; see the package comment for the FHIR
// interactions each covers.
const (
	Create Interaction = 1 << iota
	Read
	Update
	Delete
	Search

	// All is cruds, the v1 ".*".
	All = Create | Read | Update | Delete | Search
	// v1Read and v1Write are what the v1 words stand for.
	v1Read  = Read | Search
	v1Write = Create | Update | Delete
)

var letters = [...]struct {
	i Interaction
	c byte
}{{Create, 'c'}, {Read, 'r'}, {Update, 'u'}, {Delete, 'd'}, {Search, 's'}}

// String returns the v2 letters in canonical order (e.g. "rs").
func (i Interaction) String() string {
	var b []byte
	for _, l := range letters {
		if i&l.i != 0 {
			b = append(b, l.c)
		}
	}
	return string(b)
}

// Kind tells what sort of scope a Scope is.
type Kind uint8

// Scope kinds. Resource is the one with Context, Type and Interactions.
const (
	Resource      Kind = iota + 1
	Launch             // "launch": EHR launch, a launch parameter follows
	LaunchContext      // "launch/patient", "launch/encounter", ...: ask for that context in a standalone launch
	OpenID             // "openid": an id_token is wanted
	FHIRUser           // "fhirUser": the id_token names the user's FHIR resource
	OfflineAccess      // "offline_access": a refresh token that outlives the session
	OnlineAccess       // "online_access": a refresh token bound to the session
)

// Param is one name=value pair of a v2 scope's query. The value is kept as
// written (after percent-decoding), e.g. "http://loinc.org|1234-5".
type Param struct {
	Name  string
	Value string
}

// Scope is one parsed scope.
type Scope struct {
	Kind Kind
	// Context, Type, Interactions, Filter and V1 are set for Resource scopes.
	Context Context
	// Type is a resource type name or "*".
	Type         string
	Interactions Interaction
	// Filter is the v2 query: a resource must match every Param.
	Filter []Param
	// V1 records that the permission was written as read, write or *, so that
	// a granted scope is echoed in the form the client asked for.
	V1 bool
	// Name is the launch context for LaunchContext scopes ("patient").
	Name string
}

// ParseError reports a malformed scope: which one, where in the list, and why.
type ParseError struct {
	Scope  string
	Index  int // 0-based position in the space-separated list
	Reason string
}

// Error says which scope was malformed and why.
func (e *ParseError) Error() string {
	return fmt.Sprintf("scope %d %q: %s", e.Index+1, e.Scope, e.Reason)
}

// ParseOne parses a single scope. It returns ok=false with a nil error for a
// well-formed scope this package does not know (e.g. "profile"), and a
// *ParseError for a scope that starts like a resource scope but is not one.
func ParseOne(s string) (sc Scope, ok bool, err error) {
	switch s {
	case "launch":
		return Scope{Kind: Launch}, true, nil
	case "openid":
		return Scope{Kind: OpenID}, true, nil
	case "fhirUser":
		return Scope{Kind: FHIRUser}, true, nil
	case "offline_access":
		return Scope{Kind: OfflineAccess}, true, nil
	case "online_access":
		return Scope{Kind: OnlineAccess}, true, nil
	}
	if name, found := strings.CutPrefix(s, "launch/"); found {
		if !isName(name) {
			return Scope{}, false, &ParseError{Scope: s, Reason: "launch context name must be letters and digits, like launch/patient"}
		}
		return Scope{Kind: LaunchContext, Name: name}, true, nil
	}
	ctxName, rest, found := strings.Cut(s, "/")
	if !found {
		return Scope{}, false, nil
	}
	var ctx Context
	switch ctxName {
	case "patient":
		ctx = Patient
	case "user":
		ctx = User
	case "system":
		ctx = System
	default:
		return Scope{}, false, nil
	}
	fail := func(format string, args ...any) (Scope, bool, error) {
		return Scope{}, false, &ParseError{Scope: s, Reason: fmt.Sprintf(format, args...)}
	}
	rest, query, hasQuery := strings.Cut(rest, "?")
	typ, perm, found := strings.Cut(rest, ".")
	if !found {
		return fail("missing '.' between resource type and permissions (want %s/Type.rs)", ctxName)
	}
	if typ != "*" && !isResourceType(typ) {
		return fail("resource type %q must be * or a FHIR resource type name such as Observation", typ)
	}
	sc = Scope{Kind: Resource, Context: ctx, Type: typ}
	switch perm {
	case "read":
		sc.Interactions, sc.V1 = v1Read, true
	case "write":
		sc.Interactions, sc.V1 = v1Write, true
	case "*":
		sc.Interactions, sc.V1 = All, true
	default:
		i, err := parseLetters(perm)
		if err != "" {
			return fail("permissions %q: %s", perm, err)
		}
		sc.Interactions = i
	}
	if hasQuery {
		if sc.V1 {
			return fail("a ?query is only allowed with v2 permissions (cruds letters), not .%s", perm)
		}
		f, err := parseFilter(query)
		if err != "" {
			return fail("query %q: %s", query, err)
		}
		sc.Filter = f
	}
	return sc, true, nil
}

// parseLetters reads v2 permission letters, which must appear in c r u d s
// order, each at most once.
func parseLetters(p string) (Interaction, string) {
	if p == "" {
		return 0, "empty; want read, write, * or letters from cruds"
	}
	var i Interaction
	next := 0
	for k := 0; k < len(p); k++ {
		j := next
		for j < len(letters) && letters[j].c != p[k] {
			j++
		}
		if j == len(letters) {
			if strings.IndexByte("cruds", p[k]) >= 0 {
				return 0, fmt.Sprintf("letter %q is out of order or repeated; letters must follow c, r, u, d, s", p[k])
			}
			return 0, fmt.Sprintf("letter %q is not one of c, r, u, d, s (or the v1 words read, write, *)", p[k])
		}
		i |= letters[j].i
		next = j + 1
	}
	return i, ""
}

func parseFilter(q string) ([]Param, string) {
	if q == "" {
		return nil, "empty query after '?'"
	}
	var out []Param
	for part := range strings.SplitSeq(q, "&") {
		name, value, found := strings.Cut(part, "=")
		if !found || name == "" || value == "" {
			return nil, fmt.Sprintf("%q is not name=value", part)
		}
		n, err := url.PathUnescape(name)
		if err != nil {
			return nil, fmt.Sprintf("parameter name %q: bad percent-encoding", name)
		}
		v, err := url.PathUnescape(value)
		if err != nil {
			return nil, fmt.Sprintf("parameter %q: bad percent-encoding in value %q", n, value)
		}
		p := Param{Name: n, Value: v}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, ""
}

func isResourceType(s string) bool {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	return isName(s)
}

func isName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// String writes the scope back in SMART syntax. Resource scopes parsed from
// v1 words are written as v1 when their permissions still equal a v1 word.
func (s Scope) String() string {
	switch s.Kind {
	case Launch:
		return "launch"
	case LaunchContext:
		return "launch/" + s.Name
	case OpenID:
		return "openid"
	case FHIRUser:
		return "fhirUser"
	case OfflineAccess:
		return "offline_access"
	case OnlineAccess:
		return "online_access"
	case Resource:
	default:
		return fmt.Sprintf("Scope(kind %d)", s.Kind)
	}
	var b strings.Builder
	b.WriteString(s.Context.String())
	b.WriteByte('/')
	b.WriteString(s.Type)
	b.WriteByte('.')
	switch {
	case s.V1 && s.Interactions == v1Read:
		b.WriteString("read")
	case s.V1 && s.Interactions == v1Write:
		b.WriteString("write")
	case s.V1 && s.Interactions == All:
		b.WriteString("*")
	default:
		b.WriteString(s.Interactions.String())
	}
	for k, p := range s.Filter {
		if k == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		b.WriteString(escapeQuery(p.Name))
		b.WriteByte('=')
		b.WriteString(escapeQuery(p.Value))
	}
	return b.String()
}

// escapeQuery percent-encodes only what would break the scope syntax (space,
// '&', '=', '%', '#'), so token values such as "http://loinc.org|1234-5"
// stay readable as SMART examples write them. '+' is kept: scope queries are
// not form-encoded, so it means itself (as in a time zone offset).
func escapeQuery(s string) string {
	if !strings.ContainsAny(s, " &=%#") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '&', '=', '%', '#':
			fmt.Fprintf(&b, "%%%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// equal reports whether two scopes are the same (filters compared as sets).
func (s Scope) equal(o Scope) bool {
	if s.Kind != o.Kind || s.Context != o.Context || s.Type != o.Type ||
		s.Interactions != o.Interactions || s.Name != o.Name || len(s.Filter) != len(o.Filter) {
		return false
	}
	return filterSubset(s.Filter, o.Filter)
}

// filterSubset reports whether every condition of a is also in b, i.e. a
// resource matching b matches a: a is at most as strict as b.
func filterSubset(a, b []Param) bool {
	for _, p := range a {
		if !slices.Contains(b, p) {
			return false
		}
	}
	return true
}

// covers reports whether s grants everything o grants: same context, a type
// at least as wide, a superset of permissions and a filter no stricter.
func (s Scope) covers(o Scope) bool {
	if s.Kind != o.Kind {
		return false
	}
	if s.Kind != Resource {
		return s.Name == o.Name
	}
	return s.Context == o.Context && (s.Type == "*" || s.Type == o.Type) &&
		s.Interactions&o.Interactions == o.Interactions && filterSubset(s.Filter, o.Filter)
}
