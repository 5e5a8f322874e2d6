package validate

import (
	"fmt"
	"strings"
	"sync"

	"github.com/phr-project/phr/internal/r4"
)

// The validator walks resources against per-object lookup tables built once
// from the generated R4 definitions: for every resource, complex type and
// backbone element a map from JSON member name to what that member must
// hold. Walking then costs one map lookup per member and no allocation.

// valueKind is what JSON a member's values must be.
type valueKind uint8

const (
	kindObject   valueKind = iota // complex type or backbone element
	kindResource                  // a nested resource (contained, Bundle.entry.resource)
	kindString                    // primitive carried as a JSON string
	kindNumber                    // integer, positiveInt, unsignedInt, decimal
	kindBool                      // boolean
)

// prim identifies a primitive type for its format check.
type prim uint8

const (
	primNone prim = iota
	primBoolean
	primInteger
	primPositiveInt
	primUnsignedInt
	primDecimal
	primString
	primMarkdown
	primCode
	primID
	primURI
	primURL
	primCanonical
	primOID
	primUUID
	primBase64
	primDate
	primDateTime
	primInstant
	primTime
	primXHTML
)

var primByName = map[string]prim{
	"boolean": primBoolean, "integer": primInteger, "positiveInt": primPositiveInt,
	"unsignedInt": primUnsignedInt, "decimal": primDecimal, "string": primString,
	"markdown": primMarkdown, "code": primCode, "id": primID, "uri": primURI, "url": primURL,
	"canonical": primCanonical, "oid": primOID, "uuid": primUUID, "base64Binary": primBase64,
	"date": primDate, "dateTime": primDateTime, "instant": primInstant, "time": primTime,
	"xhtml": primXHTML,
}

// node is the definition of one kind of JSON object.
type node struct {
	name     string // type name or backbone path, for messages
	fields   map[string]*field
	elems    []*elem
	required []*elem
	resource bool // resourceType is expected
	domain   bool // a DomainResource (may have contained)
	special  special
}

// special marks types with rules beyond their elements.
type special uint8

const (
	specNone special = iota
	specReference
	specCoding
	specCodeableConcept
	specExtension
)

// elem is one element of a node.
type elem struct {
	idx    int
	name   string // without [x]
	min    int
	max    int // -1 for *
	choice bool
}

// field is one JSON member name of a node: an element, or one type of a
// choice element ("valueQuantity").
type field struct {
	elem    *elem
	segment string // path segment: "name" or "value.ofType(Quantity)"
	typ     string
	kind    valueKind
	prim    prim
	node    *node // for kindObject
	binding *binding
	targets []string // Reference targets; nil means any
}

// binding is a required binding prepared for lookups.
type binding struct {
	valueSet string
	codes    []string
	systems  []string
	index    map[string]int // code -> first index in codes
	sysSet   map[string]bool
}

func (b *binding) hasCode(code string) bool {
	_, ok := b.index[code]
	return ok
}

func (b *binding) hasCoding(system, code string) bool {
	i, ok := b.index[code]
	if !ok {
		return false
	}
	for ; i < len(b.codes); i++ {
		if b.codes[i] == code && b.systems[i] == system {
			return true
		}
	}
	return false
}

type schema struct {
	types     map[string]*node // resources and complex types
	backbones map[string]*node // by element path
	bindings  map[*r4.Binding]*binding
	element   *node // Element: what a primitive's _name object holds
}

var (
	schemaOnce sync.Once
	theSchema  *schema
)

// getSchema builds the lookup tables on first use (a few milliseconds), so
// that programs importing the package without validating pay nothing.
func getSchema() *schema {
	schemaOnce.Do(func() {
		s := &schema{types: map[string]*node{}, backbones: map[string]*node{}, bindings: map[*r4.Binding]*binding{}}
		for _, name := range r4.ResourceTypes() {
			s.typeNode(name)
		}
		s.element = s.typeNode("Element")
		theSchema = s
	})
	return theSchema
}

// typeNode returns the node of a resource or complex type, building it
// (and, lazily through recursion, what it refers to) on first use.
func (s *schema) typeNode(name string) *node {
	if n := s.types[name]; n != nil {
		return n
	}
	t := r4.LookupType(name)
	if t == nil {
		panic(fmt.Sprintf("validate: no type %s in the R4 tables", name))
	}
	n := &node{name: name, resource: t.Kind == r4.KindResource, domain: r4.IsA(name, "DomainResource")}
	switch name {
	case "Reference":
		n.special = specReference
	case "Coding":
		n.special = specCoding
	case "CodeableConcept":
		n.special = specCodeableConcept
	case "Extension":
		n.special = specExtension
	}
	s.types[name] = n // before filling: types refer to themselves (Extension.extension)
	s.fill(n, t, name)
	return n
}

// fill adds the direct children of path (in type t) to n.
func (s *schema) fill(n *node, t *r4.Type, path string) {
	n.fields = map[string]*field{}
	prefix := path + "."
	for i := range t.Elements {
		e := &t.Elements[i]
		rest, ok := strings.CutPrefix(e.Path, prefix)
		if !ok || strings.Contains(rest, ".") {
			continue
		}
		el := &elem{idx: len(n.elems), name: rest, min: e.Min, max: e.Max}
		if base, ok := strings.CutSuffix(rest, "[x]"); ok {
			el.name, el.choice = base, true
		}
		n.elems = append(n.elems, el)
		if e.Min > 0 {
			n.required = append(n.required, el)
		}
		if e.ContentRef != "" {
			f := &field{elem: el, segment: el.name, typ: "BackboneElement", kind: kindObject, node: s.backbone(e.ContentRef)}
			n.fields[el.name] = f
			continue
		}
		for _, tc := range e.Types {
			f := &field{elem: el, segment: el.name, typ: tc, targets: e.TargetTypes}
			jsonName := el.name
			if el.choice {
				jsonName = el.name + strings.ToUpper(tc[:1]) + tc[1:]
				f.segment = el.name + ".ofType(" + tc + ")"
			}
			if e.Binding != nil && e.Binding.Codes != nil {
				f.binding = s.binding(e.Binding)
			}
			switch p := primByName[tc]; {
			case p != primNone:
				f.prim = p
				switch p {
				case primBoolean:
					f.kind = kindBool
				case primInteger, primPositiveInt, primUnsignedInt, primDecimal:
					f.kind = kindNumber
				default:
					f.kind = kindString
				}
			case tc == "Resource":
				f.kind = kindResource
			case tc == "BackboneElement" || tc == "Element":
				f.kind = kindObject
				f.node = s.backbone(e.Path)
			default:
				f.kind = kindObject
				f.node = s.typeNode(tc)
			}
			n.fields[jsonName] = f
		}
	}
	if len(n.elems) > maxElems {
		panic(fmt.Sprintf("validate: %s has %d elements, more than %d", path, len(n.elems), maxElems))
	}
}

// backbone returns the node of the backbone element at path.
func (s *schema) backbone(path string) *node {
	if n := s.backbones[path]; n != nil {
		return n
	}
	typeName, _, _ := strings.Cut(path, ".")
	t := r4.LookupType(typeName)
	n := &node{name: path}
	s.backbones[path] = n
	s.fill(n, t, path)
	return n
}

func (s *schema) binding(rb *r4.Binding) *binding {
	if b := s.bindings[rb]; b != nil {
		return b
	}
	b := &binding{valueSet: rb.ValueSet, codes: rb.Codes, systems: rb.Systems, index: map[string]int{}, sysSet: map[string]bool{}}
	for i, c := range rb.Codes {
		if _, ok := b.index[c]; !ok {
			b.index[c] = i
		}
		b.sysSet[rb.Systems[i]] = true
	}
	s.bindings[rb] = b
	return b
}
