package fhirpath

import (
	"strings"
	"sync"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/r4"
)

// sysKind is the FHIRPath system type a value maps to (System.String,
// System.Boolean...); sysNone for complex types and resources.
type sysKind uint8

const (
	sysNone sysKind = iota
	sysString
	sysBoolean
	sysInteger
	sysDecimal
	sysDate
	sysDateTime
	sysTime
)

var sysNames = [...]string{"", "String", "Boolean", "Integer", "Decimal", "Date", "DateTime", "Time"}

// typeInfo is a type as the engine sees it: a FHIR type, a backbone
// element (identified by its definition path, since its children are
// defined there) or a FHIRPath system type (for literals and computed
// values). Children are worked out on first use from the r4 tables.
type typeInfo struct {
	name string // FHIR type code ("Quantity", "code", "Patient", "BackboneElement") or "System.X"
	// path is where the children are defined: the type name, or the
	// element path of a backbone element ("Observation.component").
	path      string
	base      *typeInfo
	sys       sysKind
	system    bool // a System.X type, not a FHIR one
	primitive bool
	resource  bool
	abstract  bool
	def       *r4.Type // the type whose Elements define the children

	once     sync.Once
	children map[string]*child
	// backbones of a root type, by path; filled with children.
	backbones map[string]*typeInfo
	root      *typeInfo // the root type of a backbone element
}

// child is one element of a type.
type child struct {
	name   string
	choice bool
	// types and keys are parallel: the allowed types and the JSON member
	// name each is stored under (name+"Quantity" for a choice, else name).
	types []*typeInfo
	keys  []string
}

var (
	typeCache  sync.Map // name -> *typeInfo
	typeCreate sync.Mutex
	sysTypes   = makeSysTypes()
)

func makeSysTypes() (ts [len(sysNames)]*typeInfo) {
	for k := sysString; int(k) < len(sysNames); k++ {
		ts[k] = &typeInfo{name: "System." + sysNames[k], path: "System." + sysNames[k], sys: k, system: true, primitive: true}
		ts[k].once.Do(func() {}) // no children
	}
	return ts
}

// primitiveSys maps FHIR primitive types to the system type of their value.
func primitiveSys(name string) sysKind {
	switch name {
	case "boolean":
		return sysBoolean
	case "integer", "positiveInt", "unsignedInt", "integer64":
		return sysInteger
	case "decimal":
		return sysDecimal
	case "date":
		return sysDate
	case "dateTime", "instant":
		return sysDateTime
	case "time":
		return sysTime
	}
	return sysString
}

// systemTypeCode turns a type code of the form used for a few elements in
// the R4 definitions ("http://hl7.org/fhirpath/System.String") into the
// FHIR primitive it stands for.
func systemTypeCode(code string) string {
	if !strings.HasPrefix(code, "http://hl7.org/fhirpath/System.") {
		return code
	}
	switch strings.TrimPrefix(code, "http://hl7.org/fhirpath/System.") {
	case "Boolean":
		return "boolean"
	case "Integer":
		return "integer"
	case "Decimal":
		return "decimal"
	case "Date":
		return "date"
	case "DateTime":
		return "dateTime"
	case "Time":
		return "time"
	}
	return "string"
}

// fhirType returns the engine's view of the FHIR type called name, or nil
// if R4 has no such type.
func fhirType(name string) *typeInfo {
	if t, ok := typeCache.Load(name); ok {
		return t.(*typeInfo)
	}
	def := r4.LookupType(name)
	if def == nil {
		return nil
	}
	var base *typeInfo
	if def.Base != "" && def.Base != def.Name {
		base = fhirType(def.Base)
	}
	typeCreate.Lock()
	defer typeCreate.Unlock()
	if t, ok := typeCache.Load(name); ok {
		return t.(*typeInfo)
	}
	t := &typeInfo{
		name:      def.Name,
		path:      def.Name,
		base:      base,
		primitive: def.Kind == r4.KindPrimitive,
		resource:  def.Kind == r4.KindResource,
		abstract:  def.Abstract,
		def:       def,
	}
	if t.primitive {
		t.sys = primitiveSys(def.Name)
	}
	typeCache.Store(name, t)
	return t
}

// lookupTypeName resolves a type specifier as written in an expression:
// "FHIR.X" and "System.X" explicitly, otherwise a FHIR type first and a
// system type second (so "Quantity" is FHIR.Quantity but "DateTime", which
// FHIR does not define, is System.DateTime).
func lookupTypeName(name string) *typeInfo {
	if n, ok := strings.CutPrefix(name, "FHIR."); ok {
		return fhirType(n)
	}
	if n, ok := strings.CutPrefix(name, "System."); ok {
		return systemType(n)
	}
	if t := fhirType(name); t != nil {
		return t
	}
	return systemType(name)
}

func systemType(name string) *typeInfo {
	for k, n := range sysNames {
		if k > 0 && n == name {
			return sysTypes[k]
		}
	}
	return nil
}

// is reports whether values of type t are of type want: want itself or a
// type derived from it. A system type matches the FHIR primitives whose
// values are of that system type (a FHIR dateTime "is" a System.DateTime),
// which is what search parameter expressions such as value.as(DateTime)
// mean.
func (t *typeInfo) is(want *typeInfo) bool {
	if want.system {
		return t.sys == want.sys && t.primitive
	}
	for x := t; x != nil; x = x.base {
		if x == want || x.path == want.path {
			return true
		}
	}
	return false
}

// child returns the element called name, or nil if the type has none.
func (t *typeInfo) child(name string) *child {
	t.once.Do(t.build)
	return t.children[name]
}

// build fills children from the element definitions.
func (t *typeInfo) build() {
	root := t
	if t.root != nil {
		root = t.root
	}
	def := root.def
	if def == nil {
		return
	}
	if root == t && t.backbones == nil {
		t.makeBackbones()
	}
	prefix := t.path + "."
	t.children = make(map[string]*child)
	for i := range def.Elements {
		el := &def.Elements[i]
		rest, ok := strings.CutPrefix(el.Path, prefix)
		if !ok || strings.IndexByte(rest, '.') >= 0 {
			continue
		}
		c := &child{name: rest}
		if n, ok := strings.CutSuffix(rest, "[x]"); ok {
			c.name, c.choice = n, true
		}
		if el.ContentRef != "" {
			ref := strings.TrimPrefix(el.ContentRef, "#")
			if bb := root.backbones[ref]; bb != nil {
				c.types, c.keys = []*typeInfo{bb}, []string{c.name}
			}
		} else if bb := root.backbones[el.Path]; bb != nil {
			c.types, c.keys = []*typeInfo{bb}, []string{c.name}
		} else {
			for _, code := range el.Types {
				ct := fhirType(systemTypeCode(code))
				if ct == nil {
					continue
				}
				key := c.name
				if c.choice {
					key += strings.ToUpper(ct.name[:1]) + ct.name[1:]
				}
				c.types = append(c.types, ct)
				c.keys = append(c.keys, key)
			}
		}
		if len(c.types) > 0 {
			t.children[c.name] = c
		}
	}
}

// makeBackbones creates the backbone element types of a root type: the
// elements that define children of their own (type BackboneElement, or
// Element inside data types such as Timing.repeat).
func (t *typeInfo) makeBackbones() {
	t.backbones = make(map[string]*typeInfo)
	def := t.def
	for i := range def.Elements {
		el := &def.Elements[i]
		if el.ContentRef != "" || len(el.Types) != 1 {
			continue
		}
		code := el.Types[0]
		if code != "BackboneElement" && code != "Element" {
			continue
		}
		// Only elements with children of their own are backbones; an
		// Element-typed leaf (rare) stays a plain Element.
		// (the snapshot lists children right after their parent).
		if i+1 >= len(def.Elements) || !strings.HasPrefix(def.Elements[i+1].Path, el.Path+".") {
			continue
		}
		t.backbones[el.Path] = &typeInfo{name: code, path: el.Path, base: fhirType(code), root: t}
	}
}

// runtimeType refines a declared type with what the JSON says: elements
// declared as the abstract Resource (Bundle.entry.resource, contained)
// hold concrete resources named by their resourceType.
func runtimeType(declared *typeInfo, v *fhirjson.Value) *typeInfo {
	if !declared.resource || v == nil || v.Kind != fhirjson.Object {
		return declared
	}
	rt := v.GetString("resourceType")
	if rt == "" || rt == declared.name {
		return declared
	}
	if t := fhirType(rt); t != nil && t.resource {
		return t
	}
	return declared
}
