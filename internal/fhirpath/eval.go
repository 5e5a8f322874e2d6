package fhirpath

import (
	"fmt"
	"math/big"
	"strings"

	"github.com/phr-project/phr/internal/fhirjson"
)

// op is one compiled operation. eval appends the result of applying it to
// the input collection focus onto dst; dst never aliases focus.
type op interface {
	eval(ev *Evaluator, focus, dst []Node) ([]Node, error)
}

// input evaluates the left operand of an invocation (or takes focus when
// there is none); owned says whether the caller must put the slice back.
func (ev *Evaluator) input(left op, focus []Node) (in []Node, owned bool, err error) {
	if left == nil {
		return focus, false, nil
	}
	in, err = left.eval(ev, focus, ev.get())
	return in, true, err
}

func (ev *Evaluator) done(in []Node, owned bool) {
	if owned {
		ev.put(in)
	}
}

var (
	trueValue  = &fhirjson.Value{Kind: fhirjson.Bool, Bool: true}
	falseValue = &fhirjson.Value{Kind: fhirjson.Bool}
)

func boolNode(b bool) Node {
	if b {
		return Node{Value: trueValue, t: sysTypes[sysBoolean]}
	}
	return Node{Value: falseValue, t: sysTypes[sysBoolean]}
}

type opEmpty struct{}

func (opEmpty) eval(_ *Evaluator, _, dst []Node) ([]Node, error) { return dst, nil }

type opLiteral struct{ n Node }

func (o opLiteral) eval(_ *Evaluator, _, dst []Node) ([]Node, error) { return append(dst, o.n), nil }

type opThis struct{}

func (opThis) eval(_ *Evaluator, focus, dst []Node) ([]Node, error) {
	return append(dst, focus...), nil
}

type opRoot struct{}

func (opRoot) eval(ev *Evaluator, _, dst []Node) ([]Node, error) {
	if ev.root.t == nil {
		return dst, nil
	}
	return append(dst, ev.root), nil
}

type opContext struct{}

func (opContext) eval(ev *Evaluator, _, dst []Node) ([]Node, error) {
	return append(dst, ev.ctx...), nil
}

// opRootType is a type name at the root of a path: it keeps the inputs of
// that type.
type opRootType struct{ t *typeInfo }

func (o opRootType) eval(_ *Evaluator, focus, dst []Node) ([]Node, error) {
	for _, n := range focus {
		if n.t != nil && n.t.is(o.t) {
			dst = append(dst, n)
		}
	}
	return dst, nil
}

// opMember navigates to the child elements called name. t0/c0 cache the
// child definition for the input type the compiler expects.
type opMember struct {
	left op
	name string
	t0   *typeInfo
	c0   *child
}

func (o opMember) eval(ev *Evaluator, focus, dst []Node) ([]Node, error) {
	in, owned, err := ev.input(o.left, focus)
	if err != nil {
		return dst, err
	}
	for _, n := range in {
		c := o.c0
		if n.t != o.t0 || c == nil {
			if n.t == nil {
				continue
			}
			c = n.t.child(o.name)
			if c == nil {
				continue
			}
		}
		obj := n.Value
		if n.t.primitive {
			obj = n.Ext
		}
		dst = appendChildren(dst, obj, c)
	}
	ev.done(in, owned)
	return dst, nil
}

// appendChildren appends the values of element c of object obj, pairing
// primitives with their "_name" companions.
func appendChildren(dst []Node, obj *fhirjson.Value, c *child) []Node {
	if obj == nil || obj.Kind != fhirjson.Object {
		return dst
	}
	if !c.choice {
		key := c.keys[0]
		var val, ext *fhirjson.Value
		for i := range obj.Fields {
			f := &obj.Fields[i]
			if f.Name == key {
				val = f.Value
			} else if len(f.Name) == len(key)+1 && f.Name[0] == '_' && f.Name[1:] == key {
				ext = f.Value
			}
		}
		return appendValues(dst, val, ext, c.types[0])
	}
	name := c.name
	for i := range obj.Fields {
		f := &obj.Fields[i]
		if len(f.Name) <= len(name) || f.Name[:len(name)] != name {
			continue
		}
		for j, key := range c.keys {
			if f.Name == key {
				dst = appendValues(dst, f.Value, underscore(obj, key), c.types[j])
				break
			}
		}
	}
	// primitives present only through their extensions
	for i := range obj.Fields {
		f := &obj.Fields[i]
		if len(f.Name) <= len(name)+1 || f.Name[0] != '_' || f.Name[1:len(name)+1] != name {
			continue
		}
		for j, key := range c.keys {
			if f.Name[1:] == key && obj.Get(key) == nil {
				dst = appendValues(dst, nil, f.Value, c.types[j])
				break
			}
		}
	}
	return dst
}

// underscore returns the "_key" member of obj (a primitive's id and
// extensions), or nil.
func underscore(obj *fhirjson.Value, key string) *fhirjson.Value {
	for i := range obj.Fields {
		f := &obj.Fields[i]
		if len(f.Name) == len(key)+1 && f.Name[0] == '_' && f.Name[1:] == key {
			return f.Value
		}
	}
	return nil
}

// appendValues appends one node per value (arrays are flattened; nulls,
// which FHIR JSON uses only to align primitive arrays with their
// extensions, are skipped).
func appendValues(dst []Node, val, ext *fhirjson.Value, t *typeInfo) []Node {
	if val != nil && val.Kind == fhirjson.Array {
		for i, it := range val.Items {
			var e *fhirjson.Value
			if ext != nil && ext.Kind == fhirjson.Array && i < len(ext.Items) && ext.Items[i].Kind == fhirjson.Object {
				e = ext.Items[i]
			}
			if it.Kind == fhirjson.Null {
				if e != nil {
					dst = append(dst, Node{Ext: e, t: t})
				}
				continue
			}
			dst = append(dst, Node{Value: it, Ext: e, t: runtimeType(t, it)})
		}
		return dst
	}
	if val == nil && ext != nil {
		if ext.Kind == fhirjson.Array {
			for _, e := range ext.Items {
				if e.Kind == fhirjson.Object {
					dst = append(dst, Node{Ext: e, t: t})
				}
			}
		} else if ext.Kind == fhirjson.Object {
			dst = append(dst, Node{Ext: ext, t: t})
		}
		return dst
	}
	if val == nil || val.Kind == fhirjson.Null {
		return dst
	}
	if ext != nil && ext.Kind != fhirjson.Object {
		ext = nil
	}
	return append(dst, Node{Value: val, Ext: ext, t: runtimeType(t, val)})
}

type opIndex struct {
	left op
	n    int
}

func (o opIndex) eval(ev *Evaluator, focus, dst []Node) ([]Node, error) {
	in, owned, err := ev.input(o.left, focus)
	if err == nil && o.n < len(in) {
		dst = append(dst, in[o.n])
	}
	ev.done(in, owned)
	return dst, err
}

// opSlice implements first (from 0, n 1), last (from -1), tail, skip and
// take; n < 0 means to the end.
type opSlice struct {
	left    op
	from, n int
}

func (o opSlice) eval(ev *Evaluator, focus, dst []Node) ([]Node, error) {
	in, owned, err := ev.input(o.left, focus)
	if err == nil {
		from := o.from
		if from < 0 {
			from = len(in) + from
		}
		if from < 0 {
			from = 0
		}
		if from < len(in) {
			part := in[from:]
			if o.n >= 0 && o.n < len(part) {
				part = part[:o.n]
			}
			dst = append(dst, part...)
		}
	}
	ev.done(in, owned)
	return dst, err
}

type opUnion struct{ l, r op }

func (o opUnion) eval(ev *Evaluator, focus, dst []Node) ([]Node, error) {
	start := len(dst)
	dst, err := o.l.eval(ev, focus, dst)
	if err != nil {
		return dst, err
	}
	mid := len(dst)
	dst, err = o.r.eval(ev, focus, dst)
	if err != nil {
		return dst, err
	}
	// drop repeats: the same element reached through both sides
	out := mid
	for i := mid; i < len(dst); i++ {
		if !containsNode(dst[start:mid], dst[i]) && !containsNode(dst[mid:out], dst[i]) {
			dst[out] = dst[i]
			out++
		}
	}
	return dst[:out], nil
}

func containsNode(s []Node, n Node) bool {
	if n.Value == nil && n.Ext == nil {
		return false // resources known only by reference are not compared
	}
	for _, x := range s {
		if x.t == n.t && x.Value == n.Value && x.Ext == n.Ext {
			return true
		}
	}
	return false
}

// truth converts a collection to a boolean the way FHIRPath's singleton
// evaluation does: empty is unknown, one boolean is itself, any other
// single item is true, several items are an error.
func truth(c []Node) (val, ok bool, err error) {
	switch len(c) {
	case 0:
		return false, false, nil
	case 1:
		if v := c[0].Value; v != nil && v.Kind == fhirjson.Bool {
			return v.Bool, true, nil
		}
		return true, true, nil
	}
	return false, false, fmt.Errorf("expected a single boolean but found %d items", len(c))
}

// evalTruth evaluates a criterion over one item.
func (ev *Evaluator) evalTruth(crit op, item []Node) (val, ok bool, err error) {
	r, err := crit.eval(ev, item, ev.get())
	if err == nil {
		val, ok, err = truth(r)
	}
	ev.put(r)
	return val, ok, err
}

type opWhere struct{ left, crit op }

func (o opWhere) eval(ev *Evaluator, focus, dst []Node) ([]Node, error) {
	in, owned, err := ev.input(o.left, focus)
	if err != nil {
		return dst, err
	}
	item := ev.get()
	for _, n := range in {
		item = append(item[:0], n)
		v, ok, err2 := ev.evalTruth(o.crit, item)
		if err2 != nil {
			err = fmt.Errorf("where(): %w", err2)
			break
		}
		if ok && v {
			dst = append(dst, n)
		}
	}
	ev.put(item)
	ev.done(in, owned)
	return dst, err
}

type opSelect struct{ left, proj op }

func (o opSelect) eval(ev *Evaluator, focus, dst []Node) ([]Node, error) {
	in, owned, err := ev.input(o.left, focus)
	if err != nil {
		return dst, err
	}
	item := ev.get()
	for _, n := range in {
		item = append(item[:0], n)
		if dst, err = o.proj.eval(ev, item, dst); err != nil {
			break
		}
	}
	ev.put(item)
	ev.done(in, owned)
	return dst, err
}

// opExists is exists() and, with crit, exists(criteria).
type opExists struct{ left, crit op }

func (o opExists) eval(ev *Evaluator, focus, dst []Node) ([]Node, error) {
	in, owned, err := ev.input(o.left, focus)
	if err != nil {
		return dst, err
	}
	found := false
	if o.crit == nil {
		found = len(in) > 0
	} else {
		item := ev.get()
		for _, n := range in {
			item = append(item[:0], n)
			v, ok, err2 := ev.evalTruth(o.crit, item)
			if err2 != nil {
				err = fmt.Errorf("exists(): %w", err2)
				break
			}
			if ok && v {
				found = true
				break
			}
		}
		ev.put(item)
	}
	ev.done(in, owned)
	return append(dst, boolNode(found)), err
}

type opAll struct{ left, crit op }

func (o opAll) eval(ev *Evaluator, focus, dst []Node) ([]Node, error) {
	in, owned, err := ev.input(o.left, focus)
	if err != nil {
		return dst, err
	}
	all := true
	item := ev.get()
	for _, n := range in {
		item = append(item[:0], n)
		v, ok, err2 := ev.evalTruth(o.crit, item)
		if err2 != nil {
			err = fmt.Errorf("all(): %w", err2)
			break
		}
		if !ok || !v {
			all = false
			break
		}
	}
	ev.put(item)
	ev.done(in, owned)
	return append(dst, boolNode(all)), err
}

type opNot struct{ left op }

func (o opNot) eval(ev *Evaluator, focus, dst []Node) ([]Node, error) {
	in, owned, err := ev.input(o.left, focus)
	if err == nil {
		var v, ok bool
		v, ok, err = truth(in)
		if err != nil {
			err = fmt.Errorf("not(): %w", err)
		} else if ok {
			dst = append(dst, boolNode(!v))
		}
	}
	ev.done(in, owned)
	return dst, err
}

type opHasValue struct{ left op }

func (o opHasValue) eval(ev *Evaluator, focus, dst []Node) ([]Node, error) {
	in, owned, err := ev.input(o.left, focus)
	if err == nil {
		dst = append(dst, boolNode(len(in) == 1 && in[0].t.primitive && in[0].Value != nil))
	}
	ev.done(in, owned)
	return dst, err
}

type opCount struct{ left op }

func (o opCount) eval(ev *Evaluator, focus, dst []Node) ([]Node, error) {
	in, owned, err := ev.input(o.left, focus)
	if err == nil {
		dst = append(dst, Node{Value: fhirjson.NewNumber(fmt.Sprint(len(in))), t: sysTypes[sysInteger]})
	}
	ev.done(in, owned)
	return dst, err
}

// opIs is the is operator and function: one item in, a boolean out.
type opIs struct {
	left op
	t    *typeInfo
}

func (o opIs) eval(ev *Evaluator, focus, dst []Node) ([]Node, error) {
	in, owned, err := ev.input(o.left, focus)
	switch {
	case err != nil:
	case len(in) == 1:
		dst = append(dst, boolNode(in[0].t != nil && in[0].t.is(o.t)))
	case len(in) > 1:
		err = fmt.Errorf("is %s: expected one item but found %d", o.t.name, len(in))
	}
	ev.done(in, owned)
	return dst, err
}

// opAs is as and ofType: the items of the type.
type opAs struct {
	left op
	t    *typeInfo
}

func (o opAs) eval(ev *Evaluator, focus, dst []Node) ([]Node, error) {
	in, owned, err := ev.input(o.left, focus)
	if err == nil {
		for _, n := range in {
			if n.t != nil && n.t.is(o.t) {
				dst = append(dst, n)
			}
		}
	}
	ev.done(in, owned)
	return dst, err
}

type opExtension struct {
	left op
	url  string
}

func (o opExtension) eval(ev *Evaluator, focus, dst []Node) ([]Node, error) {
	in, owned, err := ev.input(o.left, focus)
	if err != nil {
		return dst, err
	}
	ext := fhirType("Extension")
	for _, n := range in {
		obj := n.Value
		if n.t != nil && n.t.primitive {
			obj = n.Ext
		}
		if obj == nil || obj.Kind != fhirjson.Object {
			continue
		}
		list := obj.Get("extension")
		if list == nil || list.Kind != fhirjson.Array {
			continue
		}
		for _, e := range list.Items {
			if e.GetString("url") == o.url {
				dst = append(dst, Node{Value: e, t: ext})
			}
		}
	}
	ev.done(in, owned)
	return dst, nil
}

type opResolve struct{ left op }

func (o opResolve) eval(ev *Evaluator, focus, dst []Node) ([]Node, error) {
	in, owned, err := ev.input(o.left, focus)
	if err != nil {
		return dst, err
	}
	for _, n := range in {
		if r, ok := ev.resolve(n); ok {
			dst = append(dst, r)
		}
	}
	ev.done(in, owned)
	return dst, nil
}

// resolve finds what a Reference, canonical or uri node points at, as far
// as that can be told without fetching anything (see the package
// documentation).
func (ev *Evaluator) resolve(n Node) (Node, bool) {
	if n.Value == nil || n.t == nil {
		return Node{}, false
	}
	var ref, typ string
	switch {
	case n.Value.Kind == fhirjson.Object:
		ref = n.Value.GetString("reference")
		typ = n.Value.GetString("type")
	case n.Value.Kind == fhirjson.String:
		ref = n.Value.Str
	default:
		return Node{}, false
	}
	if id, ok := strings.CutPrefix(ref, "#"); ok {
		if r, found := ev.contained(id); found {
			return r, true
		}
		// a contained resource that is not there: the Reference's type,
		// if it has one, is all that can be told (the search index gives
		// such a reference that type too, which Observation's patient
		// parameter, read from its subject entries, relies on)
	} else if rt := ReferenceType(ref); rt != "" {
		typ = rt
	}
	if typ == "" {
		return Node{}, false
	}
	t := fhirType(typ)
	if t == nil || !t.resource {
		return Node{}, false
	}
	return Node{t: t}, true
}

// contained returns the contained resource with the given id.
func (ev *Evaluator) contained(id string) (Node, bool) {
	if ev.root.Value == nil {
		return Node{}, false
	}
	list := ev.root.Value.Get("contained")
	if list == nil || list.Kind != fhirjson.Array {
		return Node{}, false
	}
	for _, r := range list.Items {
		if r.GetString("id") == id {
			if t := fhirType(r.GetString("resourceType")); t != nil && t.resource {
				return Node{Value: r, t: t}, true
			}
		}
	}
	return Node{}, false
}

// ReferenceType returns the resource type a reference's text names, or ""
// when the text does not say: "Patient/1", "Patient/1/_history/2",
// "Patient?identifier=x" (a conditional reference) and absolute URLs ending
// in such a path ("http://host/fhir/Patient/1", canonical URLs of
// definitional resources, with or without a |version) give "Patient"
// (or the canonical's type); "urn:uuid:...", "#id" and anything else give "".
func ReferenceType(ref string) string {
	if ref == "" || ref[0] == '#' || strings.HasPrefix(ref, "urn:") {
		return ""
	}
	if i := strings.IndexByte(ref, '|'); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.IndexByte(ref, '?'); i >= 0 {
		// conditional reference: the type is what precedes the query
		t := ref[:i]
		if j := strings.LastIndexByte(t, '/'); j >= 0 {
			t = t[j+1:]
		}
		if isResourceName(t) {
			return t
		}
		return ""
	}
	ref = strings.TrimSuffix(ref, "/")
	// the last two segments, or the two before a trailing _history/v
	typ, id := lastTwo(ref)
	if typ == "_history" {
		if i := strings.LastIndexByte(ref, '/'); i >= 0 {
			if j := strings.LastIndexByte(ref[:i], '/'); j >= 0 {
				typ, id = lastTwo(ref[:j])
			}
		}
	}
	if id != "" && isResourceName(typ) {
		return typ
	}
	return ""
}

// lastTwo returns the last two '/'-separated segments of s.
func lastTwo(s string) (string, string) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return "", ""
	}
	return s[strings.LastIndexByte(s[:i], '/')+1 : i], s[i+1:]
}

func isResourceName(s string) bool {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	t := fhirType(s)
	return t != nil && t.resource && !t.abstract
}

// opLogic is and, or, xor and implies with FHIRPath's three-valued logic.
type opLogic struct {
	l, r op
	kind string
}

func (o opLogic) eval(ev *Evaluator, focus, dst []Node) ([]Node, error) {
	lv, lok, err := ev.evalTruth(o.l, focus)
	if err != nil {
		return dst, fmt.Errorf("%s: %w", o.kind, err)
	}
	// short cuts that do not need the right side
	switch {
	case o.kind == "and" && lok && !lv:
		return append(dst, boolNode(false)), nil
	case o.kind == "or" && lok && lv:
		return append(dst, boolNode(true)), nil
	case o.kind == "implies" && lok && !lv:
		return append(dst, boolNode(true)), nil
	}
	rv, rok, err := ev.evalTruth(o.r, focus)
	if err != nil {
		return dst, fmt.Errorf("%s: %w", o.kind, err)
	}
	switch o.kind {
	case "and":
		switch {
		case rok && !rv:
			return append(dst, boolNode(false)), nil
		case lok && rok:
			return append(dst, boolNode(true)), nil
		}
	case "or":
		switch {
		case rok && rv:
			return append(dst, boolNode(true)), nil
		case lok && rok:
			return append(dst, boolNode(false)), nil
		}
	case "xor":
		if lok && rok {
			return append(dst, boolNode(lv != rv)), nil
		}
	case "implies":
		switch {
		case rok && rv:
			return append(dst, boolNode(true)), nil
		case lok && rok:
			return append(dst, boolNode(false)), nil
		}
	}
	return dst, nil
}

// opEqual is = and != (or ~ and !~ when equiv).
type opEqual struct {
	l, r       op
	not, equiv bool
}

func (o opEqual) eval(ev *Evaluator, focus, dst []Node) ([]Node, error) {
	l, err := o.l.eval(ev, focus, ev.get())
	if err != nil {
		return dst, err
	}
	r, err := o.r.eval(ev, focus, ev.get())
	if err != nil {
		ev.put(l)
		return dst, err
	}
	res, ok := false, true
	switch {
	case len(l) == 0 && len(r) == 0 && o.equiv:
		res = true
	case len(l) == 0 || len(r) == 0:
		ok = o.equiv // empty ~ x is false; empty = x is empty
	case len(l) != len(r):
	default:
		res = true
		for i := range l {
			eq, known := equalNodes(l[i], r[i], o.equiv)
			if !known {
				ok = false
				break
			}
			if !eq {
				res = false
				break
			}
		}
	}
	ev.put(l)
	ev.put(r)
	if !ok {
		return dst, nil
	}
	return append(dst, boolNode(res != o.not)), nil
}

// equalNodes compares two items; known is false when FHIRPath says the
// comparison has no answer (a primitive without a value).
func equalNodes(a, b Node, equiv bool) (eq, known bool) {
	if a.t == nil || b.t == nil {
		return false, true
	}
	if a.t.primitive && b.t.primitive {
		if a.Value == nil || b.Value == nil {
			return false, false
		}
		as, bs := a.t.sys, b.t.sys
		switch {
		case as == sysString && bs == sysString:
			if equiv {
				return normEquiv(a.Value.Str) == normEquiv(b.Value.Str), true
			}
			return a.Value.Str == b.Value.Str, true
		case as == sysBoolean && bs == sysBoolean:
			return a.Value.Bool == b.Value.Bool, true
		case isNumeric(as) && isNumeric(bs):
			c, ok := compareDecimal(a.Value.Str, b.Value.Str)
			return c == 0, ok
		case isTemporal(as) && isTemporal(bs):
			return a.Value.Str == b.Value.Str, true
		}
		return false, true
	}
	if a.t.primitive || b.t.primitive || a.Value == nil || b.Value == nil {
		return false, true
	}
	return fhirjson.Equal(a.Value, b.Value), true
}

func isNumeric(k sysKind) bool  { return k == sysInteger || k == sysDecimal }
func isTemporal(k sysKind) bool { return k == sysDate || k == sysDateTime || k == sysTime }

func normEquiv(s string) string { return strings.ToLower(strings.Join(strings.Fields(s), " ")) }

// compareDecimal compares two JSON number texts exactly.
func compareDecimal(a, b string) (int, bool) {
	var x, y big.Rat
	if _, ok := x.SetString(a); !ok {
		return 0, false
	}
	if _, ok := y.SetString(b); !ok {
		return 0, false
	}
	return x.Cmp(&y), true
}

type opCompare struct {
	l, r op
	cmp  string
}

func (o opCompare) eval(ev *Evaluator, focus, dst []Node) ([]Node, error) {
	l, err := o.l.eval(ev, focus, ev.get())
	if err != nil {
		return dst, err
	}
	r, err := o.r.eval(ev, focus, ev.get())
	if err != nil {
		ev.put(l)
		return dst, err
	}
	defer ev.put(l)
	defer ev.put(r)
	if len(l) == 0 || len(r) == 0 {
		return dst, nil
	}
	if len(l) > 1 || len(r) > 1 {
		return dst, fmt.Errorf("'%s' expects single items but found %d and %d", o.cmp, len(l), len(r))
	}
	a, b := l[0], r[0]
	if a.t == nil || b.t == nil || !a.t.primitive || !b.t.primitive || a.Value == nil || b.Value == nil {
		return dst, fmt.Errorf("'%s' compares primitive values only", o.cmp)
	}
	var c int
	switch as, bs := a.t.sys, b.t.sys; {
	case isNumeric(as) && isNumeric(bs):
		var ok bool
		if c, ok = compareDecimal(a.Value.Str, b.Value.Str); !ok {
			return dst, nil
		}
	case as == sysString && bs == sysString:
		c = strings.Compare(a.Value.Str, b.Value.Str)
	case isTemporal(as) && isTemporal(bs):
		if len(a.Value.Str) != len(b.Value.Str) {
			return dst, nil // different precisions: no answer
		}
		c = strings.Compare(a.Value.Str, b.Value.Str)
	default:
		return dst, fmt.Errorf("'%s' cannot compare %s with %s", o.cmp, a.t.name, b.t.name)
	}
	var res bool
	switch o.cmp {
	case "<":
		res = c < 0
	case "<=":
		res = c <= 0
	case ">":
		res = c > 0
	case ">=":
		res = c >= 0
	}
	return append(dst, boolNode(res)), nil
}

// opMembership is in and contains: whether item equals an element of
// coll.
type opMembership struct{ item, coll op }

func (o opMembership) eval(ev *Evaluator, focus, dst []Node) ([]Node, error) {
	it, err := o.item.eval(ev, focus, ev.get())
	if err != nil {
		return dst, err
	}
	defer ev.put(it)
	coll, err := o.coll.eval(ev, focus, ev.get())
	if err != nil {
		return dst, err
	}
	defer ev.put(coll)
	switch len(it) {
	case 0:
		return dst, nil
	case 1:
	default:
		return dst, fmt.Errorf("membership test expects one item but found %d", len(it))
	}
	found := false
	for _, n := range coll {
		if eq, ok := equalNodes(it[0], n, false); ok && eq {
			found = true
			break
		}
	}
	return append(dst, boolNode(found)), nil
}
