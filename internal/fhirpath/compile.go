package fhirpath

import (
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/phr-project/phr/internal/fhirjson"
)

// tset is what the compiler knows of the types an expression yields:
// nothing (known false), or a set of possible types (empty when the
// expression can only ever yield nothing).
type tset struct {
	known bool
	types []*typeInfo
}

var unknown = tset{}

func known(ts ...*typeInfo) tset { return tset{known: true, types: ts} }

func (s tset) empty() bool { return s.known && len(s.types) == 0 }

func (s tset) names() string {
	var b strings.Builder
	for i, t := range s.types {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(t.path)
	}
	return b.String()
}

func (s tset) add(t *typeInfo) tset {
	for _, x := range s.types {
		if x == t {
			return s
		}
	}
	s.types = append(s.types, t)
	return s
}

var boolType = known(sysTypes[sysBoolean])

// compiler compiles one expression.
type compiler struct {
	src  string
	root tset // the context type, for %resource
}

// compileExpr compiles src for inputs typed in, with %resource typed
// root.
func compileExpr(src string, in, root tset) (*Expr, error) {
	a, err := parse(src)
	if err != nil {
		return nil, err
	}
	c := &compiler{src: src, root: root}
	o, out, err := c.compile(a, in)
	if err != nil {
		return nil, err
	}
	e := &Expr{src: src, root: o, out: out, rootTypes: root}
	names := map[string]bool{}
	if !inputMembers(a, names) || !emptyWithout(a) {
		e.members, e.membersKnown = nil, false
	} else {
		e.membersKnown = true
		for n := range names {
			e.members = append(e.members, n)
		}
		sort.Strings(e.members)
	}
	return e, nil
}

// inputMembers adds to names the elements of the input that a reads
// (the first member after the input or its type name); it returns false
// when a may use the input in another way (the input itself, $this,
// %resource, %context, a function of the input), which makes the set
// meaningless.
func inputMembers(a *ast, names map[string]bool) bool {
	switch a.kind {
	case aString, aNumber, aBool, aEmpty, aDate:
		return true
	case aEnv:
		switch a.name {
		case "ucum", "sct", "loinc":
			return true
		}
		return false
	case aSpecial:
		return false
	case aParen:
		return inputMembers(a.args[0], names)
	case aMember:
		switch {
		case a.left == nil && isTypeName(a.name):
			return false // the input itself
		case a.left == nil:
			names[a.name] = true
			return true
		case a.left.kind == aMember && a.left.left == nil && isTypeName(a.left.name):
			names[a.name] = true
			return true
		}
		return inputMembers(a.left, names)
	case aFunc:
		if a.left == nil {
			return false
		}
		if !inputMembers(a.left, names) {
			return false
		}
		// arguments are evaluated on the items of the left side, or are
		// literals and type names; only variables reach back to the input
		for _, arg := range a.args {
			if usesVariables(arg) {
				return false
			}
		}
		return true
	case aIndex, aType:
		return inputMembers(a.left, names)
	case aUnary:
		return inputMembers(a.args[0], names)
	case aBinary:
		return inputMembers(a.args[0], names) && inputMembers(a.args[1], names)
	}
	return false
}

// emptyWithout reports whether a yields nothing when every member path
// of its input yields nothing: member paths and the functions that map
// empty to empty do; literals, exists(), count(), and, or... do not.
func emptyWithout(a *ast) bool {
	switch a.kind {
	case aMember:
		return a.left == nil || emptyWithout(a.left)
	case aParen:
		return emptyWithout(a.args[0])
	case aIndex, aType:
		return emptyWithout(a.left)
	case aFunc:
		switch a.name {
		case "exists", "empty", "count", "all", "hasValue":
			return false
		}
		return a.left != nil && emptyWithout(a.left)
	case aBinary:
		l, r := emptyWithout(a.args[0]), emptyWithout(a.args[1])
		switch a.name {
		case "|":
			return l && r
		case "=", "!=", "<", "<=", ">", ">=":
			return l || r
		case "in":
			return l
		case "contains":
			return r
		}
	}
	return false
}

func isTypeName(name string) bool {
	r := []rune(name)
	return unicode.IsUpper(r[0])
}

// usesVariables reports whether a refers to %resource or %context.
func usesVariables(a *ast) bool {
	if a == nil {
		return false
	}
	if a.kind == aEnv {
		switch a.name {
		case "ucum", "sct", "loinc":
		default:
			return true
		}
	}
	if usesVariables(a.left) {
		return true
	}
	for _, x := range a.args {
		if usesVariables(x) {
			return true
		}
	}
	return false
}

func (c *compiler) errorf(a *ast, format string, args ...any) error {
	return errAt(c.src, a.pos, format, args...)
}

// compile turns a into an operation; in is what is known of the input's
// types. When the result is known to be always empty the operation is
// replaced by one that does nothing.
func (c *compiler) compile(a *ast, in tset) (op, tset, error) {
	o, out, err := c.compile1(a, in)
	if err != nil {
		return nil, out, err
	}
	if out.empty() {
		return opEmpty{}, out, nil
	}
	return o, out, nil
}

func (c *compiler) compile1(a *ast, in tset) (op, tset, error) {
	switch a.kind {
	case aString:
		return literal(fhirjson.String, a.name, sysString), known(sysTypes[sysString]), nil
	case aNumber:
		k := sysInteger
		if strings.IndexByte(a.name, '.') >= 0 {
			k = sysDecimal
		}
		return literal(fhirjson.Number, a.name, k), known(sysTypes[k]), nil
	case aBool:
		return opLiteral{boolNode(a.name == "true")}, boolType, nil
	case aEmpty:
		return opEmpty{}, known(), nil
	case aDate:
		k := sysDate
		if strings.HasPrefix(a.name, "T") {
			k = sysTime
		} else if strings.IndexByte(a.name, 'T') >= 0 {
			k = sysDateTime
		}
		return literal(fhirjson.String, strings.TrimPrefix(a.name, "T"), k), known(sysTypes[k]), nil
	case aEnv:
		switch a.name {
		case "resource", "rootResource":
			return opRoot{}, c.root, nil
		case "context":
			return opContext{}, unknown, nil
		case "ucum":
			return literal(fhirjson.String, "http://unitsofmeasure.org", sysString), known(sysTypes[sysString]), nil
		case "sct":
			return literal(fhirjson.String, "http://snomed.info/sct", sysString), known(sysTypes[sysString]), nil
		case "loinc":
			return literal(fhirjson.String, "http://loinc.org", sysString), known(sysTypes[sysString]), nil
		}
		return nil, unknown, c.errorf(a, "variable %%%s is not supported (only %%resource, %%rootResource, %%context, %%ucum, %%sct, %%loinc)", a.name)
	case aSpecial:
		if a.name == "$this" {
			return opThis{}, in, nil
		}
		return nil, unknown, c.errorf(a, "%s is not supported (only $this)", a.name)
	case aParen:
		return c.compile(a.args[0], in)
	case aMember:
		return c.member(a, in)
	case aFunc:
		return c.function(a, in)
	case aIndex:
		left, lt, err := c.compile(a.left, in)
		if err != nil {
			return nil, unknown, err
		}
		idx := a.args[0]
		if idx.kind != aNumber || strings.IndexByte(idx.name, '.') >= 0 {
			return nil, unknown, c.errorf(idx, "an index must be a non-negative integer literal")
		}
		n, err := strconv.Atoi(idx.name)
		if err != nil {
			return nil, unknown, c.errorf(idx, "index %s is out of range", idx.name)
		}
		return opIndex{left: left, n: n}, lt, nil
	case aUnary:
		operand := a.args[0]
		if operand.kind == aNumber {
			if a.name == "-" {
				operand = &ast{kind: aNumber, pos: a.pos, name: "-" + operand.name}
			}
			return c.compile1(operand, in)
		}
		return nil, unknown, c.errorf(a, "unary %s is only supported on number literals", a.name)
	case aType:
		left, lt, err := c.compile(a.left, in)
		if err != nil {
			return nil, unknown, err
		}
		t, err := c.typeName(a.args[0])
		if err != nil {
			return nil, unknown, err
		}
		if a.name == "is" {
			return opIs{left: left, t: t}, boolType, nil
		}
		return opAs{left: left, t: t}, filterTypes(lt, t), nil
	case aBinary:
		return c.binary(a, in)
	}
	return nil, unknown, c.errorf(a, "unsupported expression")
}

func literal(kind fhirjson.Kind, text string, k sysKind) op {
	return opLiteral{Node{Value: &fhirjson.Value{Kind: kind, Str: text}, t: sysTypes[k]}}
}

// member compiles a name: a child element, or at the root of a path a type
// name that selects the inputs of that type ("Observation.code").
func (c *compiler) member(a *ast, in tset) (op, tset, error) {
	var left op
	if a.left != nil {
		var err error
		left, in, err = c.compile(a.left, in)
		if err != nil {
			return nil, unknown, err
		}
		if in.empty() {
			return opEmpty{}, in, nil
		}
	} else if r := []rune(a.name); unicode.IsUpper(r[0]) {
		hasChild := false
		for _, t := range in.types {
			hasChild = hasChild || t.child(a.name) != nil
		}
		if !hasChild {
			t := lookupTypeName(a.name)
			if t == nil {
				return nil, unknown, c.errorf(a, "unknown type %q", a.name)
			}
			return opRootType{t: t}, filterTypes(in, t), nil
		}
	}
	m := opMember{left: left, name: a.name}
	if in.empty() {
		return opEmpty{}, in, nil
	}
	if !in.known {
		return m, unknown, nil
	}
	out := known()
	found := false
	for _, t := range in.types {
		ch := t.child(a.name)
		if ch == nil {
			continue
		}
		found = true
		if len(in.types) == 1 {
			m.t0, m.c0 = t, ch
		}
		for _, ct := range ch.types {
			if ct.resource && ct.abstract {
				// Bundle.entry.resource, contained: the JSON says which.
				out.known = false
			}
			out = out.add(ct)
		}
	}
	if !found {
		return nil, unknown, c.errorf(a, "%s has no element %q", in.names(), a.name)
	}
	if !out.known {
		out = unknown
	}
	return m, out, nil
}

// filterTypes is what is known of the items of a collection typed in that
// are of type t.
func filterTypes(in tset, t *typeInfo) tset {
	if !in.known {
		return known(t)
	}
	out := known()
	for _, x := range in.types {
		switch {
		case x.is(t):
			out = out.add(x)
		case x.resource && x.abstract && t.is(x):
			out = out.add(t)
		}
	}
	return out
}

// typeName resolves the type specifier argument of is, as and ofType.
func (c *compiler) typeName(a *ast) (*typeInfo, error) {
	name, ok := qualifiedName(a)
	if !ok {
		return nil, c.errorf(a, "expected a type name")
	}
	t := lookupTypeName(name)
	if t == nil {
		return nil, c.errorf(a, "unknown type %q", name)
	}
	return t, nil
}

func qualifiedName(a *ast) (string, bool) {
	if a.kind != aMember {
		return "", false
	}
	if a.left == nil {
		return a.name, true
	}
	l, ok := qualifiedName(a.left)
	return l + "." + a.name, ok
}

func (c *compiler) binary(a *ast, in tset) (op, tset, error) {
	switch a.name {
	case "+", "-", "*", "/", "&", "div", "mod":
		return nil, unknown, c.errorf(a, "operator '%s' is not supported", a.name)
	}
	l, lt, err := c.compile(a.args[0], in)
	if err != nil {
		return nil, unknown, err
	}
	r, rt, err := c.compile(a.args[1], in)
	if err != nil {
		return nil, unknown, err
	}
	switch a.name {
	case "|":
		// A side that can only be empty is dropped: this is how the parts
		// of shared search parameters for other resource types go.
		switch {
		case lt.empty():
			return r, rt, nil
		case rt.empty():
			return l, lt, nil
		}
		out := unknown
		if lt.known && rt.known {
			out = lt
			out.types = append([]*typeInfo(nil), lt.types...)
			for _, t := range rt.types {
				out = out.add(t)
			}
		}
		return opUnion{l: l, r: r}, out, nil
	case "=", "!=", "~", "!~":
		return opEqual{l: l, r: r, not: a.name[0] == '!', equiv: strings.HasSuffix(a.name, "~")}, boolType, nil
	case "<", "<=", ">", ">=":
		return opCompare{l: l, r: r, cmp: a.name}, boolType, nil
	case "in":
		return opMembership{item: l, coll: r}, boolType, nil
	case "contains":
		return opMembership{item: r, coll: l}, boolType, nil
	case "and", "or", "xor", "implies":
		return opLogic{l: l, r: r, kind: a.name}, boolType, nil
	}
	return nil, unknown, c.errorf(a, "operator '%s' is not supported", a.name)
}

// functions lists the supported functions with their argument counts.
var functions = map[string][2]int{
	"where": {1, 1}, "select": {1, 1}, "exists": {0, 1}, "all": {1, 1},
	"empty": {0, 0}, "not": {0, 0}, "hasValue": {0, 0}, "count": {0, 0},
	"first": {0, 0}, "last": {0, 0}, "tail": {0, 0}, "skip": {1, 1}, "take": {1, 1},
	"ofType": {1, 1}, "as": {1, 1}, "is": {1, 1}, "resolve": {0, 0}, "extension": {1, 1},
}

func (c *compiler) function(a *ast, in tset) (op, tset, error) {
	arity, ok := functions[a.name]
	if !ok {
		return nil, unknown, c.errorf(a, "function %s() is not supported", a.name)
	}
	if len(a.args) < arity[0] || len(a.args) > arity[1] {
		want := strconv.Itoa(arity[0])
		if arity[1] != arity[0] {
			want += " or " + strconv.Itoa(arity[1])
		}
		return nil, unknown, c.errorf(a, "%s() takes %s argument(s), not %d", a.name, want, len(a.args))
	}
	var left op
	if a.left != nil {
		var err error
		left, in, err = c.compile(a.left, in)
		if err != nil {
			return nil, unknown, err
		}
	}
	// argument compiled against the input's items, for the iterating
	// functions
	arg := func() (op, tset, error) { return c.compile(a.args[0], in) }
	switch a.name {
	case "where":
		crit, _, err := arg()
		return opWhere{left: left, crit: crit}, in, err
	case "select":
		proj, pt, err := arg()
		return opSelect{left: left, proj: proj}, pt, err
	case "exists":
		if len(a.args) == 0 {
			return opExists{left: left}, boolType, nil
		}
		crit, _, err := arg()
		return opExists{left: left, crit: crit}, boolType, err
	case "all":
		crit, _, err := arg()
		return opAll{left: left, crit: crit}, boolType, err
	case "empty":
		return opNot{left: opExists{left: left}}, boolType, nil
	case "not":
		return opNot{left: left}, boolType, nil
	case "hasValue":
		return opHasValue{left: left}, boolType, nil
	case "count":
		return opCount{left: left}, known(sysTypes[sysInteger]), nil
	case "first":
		return opSlice{left: left, from: 0, n: 1}, in, nil
	case "last":
		return opSlice{left: left, from: -1, n: 1}, in, nil
	case "tail":
		return opSlice{left: left, from: 1, n: -1}, in, nil
	case "skip", "take":
		n := a.args[0]
		if n.kind != aNumber || strings.IndexByte(n.name, '.') >= 0 {
			return nil, unknown, c.errorf(n, "%s() takes an integer literal", a.name)
		}
		k, err := strconv.Atoi(n.name)
		if err != nil {
			return nil, unknown, c.errorf(n, "%s is out of range", n.name)
		}
		if a.name == "skip" {
			return opSlice{left: left, from: k, n: -1}, in, nil
		}
		return opSlice{left: left, from: 0, n: k}, in, nil
	case "ofType", "as", "is":
		t, err := c.typeName(a.args[0])
		if err != nil {
			return nil, unknown, err
		}
		if a.name == "is" {
			return opIs{left: left, t: t}, boolType, nil
		}
		return opAs{left: left, t: t}, filterTypes(in, t), nil
	case "resolve":
		return opResolve{left: left}, unknown, nil
	case "extension":
		u := a.args[0]
		if u.kind != aString {
			return nil, unknown, c.errorf(u, "extension() takes a string literal (the extension's url)")
		}
		return opExtension{left: left, url: u.name}, known(fhirType("Extension")), nil
	}
	return nil, unknown, c.errorf(a, "function %s() is not supported", a.name)
}
