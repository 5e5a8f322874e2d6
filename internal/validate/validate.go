// Package validate checks FHIR R4 resources against the 4.0.1 definitions
// before the server stores them.
//
// It checks structure (known elements, JSON types, arrays where the
// cardinality allows many, cardinality, choice types), primitive formats,
// required bindings, references and narrative, recursively through
// contained resources, Bundle entries and Parameters. It does not evaluate
// FHIRPath invariants beyond a few structural ones, profiles or
// terminology outside the core definitions. Every issue names the
// FHIRPath-style path and the JSON byte offset of the value at fault.
//
// Required bindings: a code element must hold a code of its value set. R4
// has no Coding element with a required binding; for the 14 CodeableConcept
// ones (Condition.clinicalStatus, AllergyIntolerance.verificationStatus...)
// FHIR requires one coding from the value set, so a CodeableConcept with
// only text, or only codings of other systems, is an error, and a coding
// of the value set's own system with a code outside it is an error too.
// Value sets the definitions cannot expand (mime types, currencies, UCUM,
// two external ones: 18 elements) are not enforced.
//
// Resources are validated as they are written, so the walk allocates
// nothing for a valid resource: lookups are precomputed per object type and
// primitive formats use hand-written matchers proven equal to the R4
// regexes (see primitive_test.go).
package validate

import (
	"fmt"
	"strconv"
	"sync"

	"github.com/phr-project/phr/internal/fhirjson"
)

// Severity says whether an issue makes the resource invalid.
type Severity string

// The severities used.
const (
	Error   Severity = "error"
	Warning Severity = "warning"
)

// The OperationOutcome issue-type codes used.
const (
	CodeStructure   = "structure"
	CodeRequired    = "required"
	CodeValue       = "value"
	CodeCodeInvalid = "code-invalid"
	CodeInvalid     = "invalid"
	CodeInvariant   = "invariant"
)

// Issue is one problem found in a resource, ready to become an
// OperationOutcome.issue.
type Issue struct {
	Severity Severity
	// Code is the FHIR issue-type code (structure, required, value,
	// code-invalid, invalid, invariant).
	Code string
	// Path is a FHIRPath-style location with indexes:
	// "Patient.name[0].given[1]",
	// "Bundle.entry[3].resource.ofType(Observation).status".
	Path    string
	Message string
	// Offset is the byte offset in the parsed JSON of the value at fault
	// (of the object that lacks a required element); see
	// fhirjson.Position for a line and column.
	Offset int
}

func (i Issue) String() string {
	return fmt.Sprintf("%s %s at %s: %s", i.Severity, i.Code, i.Path, i.Message)
}

// HasErrors reports whether any issue is an error.
func HasErrors(issues []Issue) bool {
	for _, i := range issues {
		if i.Severity == Error {
			return true
		}
	}
	return false
}

// Options adjust validation to where a resource comes from.
type Options struct {
	// AllowConditionalReferences accepts conditional references
	// ("Patient?identifier=http://x|1"), which only a transaction may carry
	// because the server resolves them before storing.
	AllowConditionalReferences bool
}

// Resource validates one resource with the default options.
func Resource(v *fhirjson.Value) []Issue { return Options{}.Resource(v) }

// Resource validates one resource (and what it contains) and returns the
// issues found, nil when there are none.
func (o Options) Resource(v *fhirjson.Value) []Issue {
	if v == nil {
		return []Issue{{Severity: Error, Code: CodeStructure, Message: "no resource"}}
	}
	st := statePool.Get().(*state)
	st.opts = o
	st.s = getSchema()
	st.path = st.path[:0]
	st.issues = st.issues[:0]
	st.contained = nil
	st.resource(v, false)
	var out []Issue
	if len(st.issues) > 0 {
		out = make([]Issue, len(st.issues))
		copy(out, st.issues)
	}
	st.contained = nil
	statePool.Put(st)
	return out
}

var statePool = sync.Pool{New: func() any { return &state{path: make([]byte, 0, 256)} }}

// maxElems bounds the elements of one object so that presence can be kept
// in a fixed bitset on the stack.
const maxElems = 256

type bits [maxElems / 64]uint64

func (b *bits) set(i int)      { b[i>>6] |= 1 << (i & 63) }
func (b *bits) has(i int) bool { return b[i>>6]&(1<<(i&63)) != 0 }

type state struct {
	opts   Options
	s      *schema
	path   []byte
	issues []Issue
	// contained are the contained resources "#id" references resolve
	// against: those of the enclosing top-level resource.
	contained *fhirjson.Value
}

func (st *state) add(sev Severity, code string, off int, msg string) {
	st.issues = append(st.issues, Issue{Severity: sev, Code: code, Path: string(st.path), Message: msg, Offset: off})
}

func (st *state) errorf(code string, off int, format string, args ...any) {
	st.add(Error, code, off, fmt.Sprintf(format, args...))
}

func (st *state) push(seg string) int {
	n := len(st.path)
	if n > 0 {
		st.path = append(st.path, '.')
	}
	st.path = append(st.path, seg...)
	return n
}

func (st *state) pushIndex(i int) int {
	n := len(st.path)
	st.path = append(st.path, '[')
	st.path = strconv.AppendInt(st.path, int64(i), 10)
	st.path = append(st.path, ']')
	return n
}

func (st *state) pop(n int) { st.path = st.path[:n] }

// resource validates a resource at the current path; nested resources get
// ".ofType(Type)" appended, as FHIRPath names them.
func (st *state) resource(v *fhirjson.Value, contained bool) {
	if v.Kind != fhirjson.Object {
		st.errorf(CodeStructure, v.Offset, "expected a resource (JSON object), found %s", kindName(v))
		return
	}
	rt := v.Get("resourceType")
	if rt == nil {
		st.errorf(CodeRequired, v.Offset, "resource has no resourceType")
		return
	}
	if rt.Kind != fhirjson.String {
		st.errorf(CodeStructure, rt.Offset, "resourceType must be a string, found %s", kindName(rt))
		return
	}
	n := st.s.types[rt.Str]
	if n == nil || !n.resource || (rt.Str == "Resource" || rt.Str == "DomainResource") {
		st.errorf(CodeValue, rt.Offset, "unknown resource type %q", rt.Str)
		return
	}
	mark := len(st.path)
	if mark == 0 {
		st.path = append(st.path, rt.Str...)
	} else {
		st.path = append(st.path, ".ofType("...)
		st.path = append(st.path, rt.Str...)
		st.path = append(st.path, ')')
	}
	saved := st.contained
	if !contained {
		st.contained = v.Get("contained")
	} else if c := v.Get("contained"); c != nil {
		st.errorf(CodeInvariant, c.Offset, "a contained resource must not contain resources (dom-2)")
	}
	st.object(v, n)
	st.contained = saved
	st.pop(mark)
}

// object validates the members of a JSON object against node n.
func (st *state) object(v *fhirjson.Value, n *node) {
	if len(v.Fields) == 0 {
		st.errorf(CodeStructure, v.Offset, "empty object: an element must have a value or children")
		return
	}
	var seen bits
	// choices remembers the type chosen for each choice element seen, to
	// reject valueString together with valueInteger (or _valueBoolean).
	var choices [8]struct {
		el  *elem
		typ string
	}
	nChoices := 0
	for i := range v.Fields {
		name := v.Fields[i].Name
		val := v.Fields[i].Value
		f := n.fields[name]
		ext := false
		if f == nil {
			if name == "resourceType" && n.resource {
				continue
			}
			if len(name) > 1 && name[0] == '_' {
				if g := n.fields[name[1:]]; g != nil && g.prim != primNone {
					f, ext = g, true
				}
			}
			if f == nil {
				mark := st.push(name)
				st.errorf(CodeStructure, val.Offset, "unknown element %q in %s", name, n.name)
				st.pop(mark)
				continue
			}
		}
		el := f.elem
		if el.choice {
			dup := false
			for c := 0; c < nChoices; c++ {
				if choices[c].el == el {
					dup = true
					if choices[c].typ != f.typ {
						mark := st.push(f.segment)
						st.errorf(CodeStructure, val.Offset, "%s[x] has more than one type (%s and %s)", el.name, choices[c].typ, f.typ)
						st.pop(mark)
					}
					break
				}
			}
			if !dup && nChoices < len(choices) {
				choices[nChoices].el, choices[nChoices].typ = el, f.typ
				nChoices++
			}
		}
		seen.set(el.idx)
		mark := st.push(f.segment)
		if ext {
			st.primitiveExtensions(v, name, val, f)
		} else {
			st.member(v, name, val, f)
		}
		st.pop(mark)
	}
	for _, el := range n.required {
		if !seen.has(el.idx) {
			name := el.name
			if el.choice {
				name += "[x]"
			}
			mark := st.push(el.name)
			st.errorf(CodeRequired, v.Offset, "missing required element %s (min %d) in %s", name, el.min, n.name)
			st.pop(mark)
		}
	}
	switch n.special {
	case specExtension:
		hasValue := false
		for i := range v.Fields {
			if f := n.fields[v.Fields[i].Name]; f != nil && f.elem.choice {
				hasValue = true
			}
		}
		hasExt := v.Get("extension") != nil
		if hasValue == hasExt {
			st.errorf(CodeInvariant, v.Offset, "an extension must have either extensions or a value[x], not both and not neither (ext-1)")
		}
	}
}

// member validates the value of one member (not a _name one).
func (st *state) member(obj *fhirjson.Value, name string, v *fhirjson.Value, f *field) {
	if f.elem.max == 1 {
		if v.Kind == fhirjson.Array {
			st.errorf(CodeStructure, v.Offset, "%s has at most one value: expected %s, found an array", f.elem.name, expectName(f))
			return
		}
		st.single(v, f)
		return
	}
	if v.Kind != fhirjson.Array {
		st.errorf(CodeStructure, v.Offset, "%s repeats: expected an array, found %s", f.elem.name, kindName(v))
		return
	}
	if len(v.Items) == 0 {
		st.errorf(CodeStructure, v.Offset, "empty array: leave the element out instead")
		return
	}
	if f.elem.max > 1 && len(v.Items) > f.elem.max {
		st.errorf(CodeStructure, v.Offset, "%s has %d values, at most %d allowed", f.elem.name, len(v.Items), f.elem.max)
	}
	var exts *fhirjson.Value
	if f.prim != primNone {
		exts = sibling(obj, '_', name)
		if exts != nil && exts.Kind == fhirjson.Array && len(exts.Items) != len(v.Items) {
			st.errorf(CodeStructure, v.Offset, "%s has %d values but _%s has %d: the arrays must align", name, len(v.Items), name, len(exts.Items))
		}
	}
	for i, it := range v.Items {
		mark := st.pushIndex(i)
		if it.Kind == fhirjson.Null {
			if f.prim == primNone || exts == nil || exts.Kind != fhirjson.Array || i >= len(exts.Items) || exts.Items[i].Kind == fhirjson.Null {
				st.errorf(CodeStructure, it.Offset, "null is only allowed in a primitive array whose _%s array has an extension at the same index", name)
			}
		} else {
			st.single(it, f)
		}
		st.pop(mark)
	}
}

// primitiveExtensions validates a _name member: the id and extensions of
// a primitive (or of each item of a primitive array).
func (st *state) primitiveExtensions(obj *fhirjson.Value, name string, v *fhirjson.Value, f *field) {
	if f.elem.max == 1 {
		if v.Kind != fhirjson.Object {
			st.errorf(CodeStructure, v.Offset, "_%s must be an object with id and/or extension, found %s", name[1:], kindName(v))
			return
		}
		st.object(v, st.s.element)
		return
	}
	if v.Kind != fhirjson.Array {
		st.errorf(CodeStructure, v.Offset, "_%s must be an array aligned with %s, found %s", name[1:], name[1:], kindName(v))
		return
	}
	vals := sibling(obj, 0, name[1:])
	if vals == nil && len(v.Items) == 0 {
		st.errorf(CodeStructure, v.Offset, "empty array: leave the element out instead")
	}
	for i, it := range v.Items {
		mark := st.pushIndex(i)
		switch it.Kind {
		case fhirjson.Null:
			if vals == nil || vals.Kind != fhirjson.Array || i >= len(vals.Items) || vals.Items[i].Kind == fhirjson.Null {
				st.errorf(CodeStructure, it.Offset, "null in _%s needs a value in %s at the same index", name[1:], name[1:])
			}
		case fhirjson.Object:
			st.object(it, st.s.element)
		default:
			st.errorf(CodeStructure, it.Offset, "_%s items must be objects or null, found %s", name[1:], kindName(it))
		}
		st.pop(mark)
	}
}

// sibling returns the member of obj called prefix+name (prefix 0: none).
func sibling(obj *fhirjson.Value, prefix byte, name string) *fhirjson.Value {
	for i := range obj.Fields {
		fn := obj.Fields[i].Name
		if prefix != 0 {
			if len(fn) == len(name)+1 && fn[0] == prefix && fn[1:] == name {
				return obj.Fields[i].Value
			}
		} else if fn == name {
			return obj.Fields[i].Value
		}
	}
	return nil
}

// single validates one value of a member.
func (st *state) single(v *fhirjson.Value, f *field) {
	switch f.kind {
	case kindObject:
		if v.Kind != fhirjson.Object {
			st.errorf(CodeStructure, v.Offset, "expected %s (a JSON object), found %s", f.typ, kindName(v))
			return
		}
		st.object(v, f.node)
		if f.binding != nil {
			switch f.node.special {
			case specCodeableConcept:
				st.codeableConcept(v, f.binding)
			case specCoding:
				st.coding(v, f.binding, true)
			}
		}
		if f.node.special == specReference {
			st.reference(v, f.targets)
		}
	case kindResource:
		st.resource(v, len(st.path) > 0 && isContainedPath(st.path))
	case kindString:
		if v.Kind != fhirjson.String {
			st.errorf(CodeStructure, v.Offset, "expected %s (a JSON string), found %s", f.typ, kindName(v))
			return
		}
		st.stringValue(v, f)
	case kindNumber:
		if v.Kind != fhirjson.Number {
			st.errorf(CodeStructure, v.Offset, "expected %s (a JSON number), found %s", f.typ, kindName(v))
			return
		}
		st.numberValue(v, f)
	case kindBool:
		if v.Kind != fhirjson.Bool {
			st.errorf(CodeStructure, v.Offset, "expected boolean (true or false), found %s", kindName(v))
		}
	}
}

// isContainedPath reports whether the path ends in ".contained[n]".
func isContainedPath(p []byte) bool {
	i := len(p) - 1
	if i < 0 || p[i] != ']' {
		return false
	}
	for i > 0 && p[i] != '[' {
		i--
	}
	const suffix = "contained"
	return i >= len(suffix) && string(p[i-len(suffix):i]) == suffix
}

func (st *state) numberValue(v *fhirjson.Value, f *field) {
	s := v.Str
	switch f.prim {
	case primDecimal:
		if !matchDecimal(s) {
			st.errorf(CodeValue, v.Offset, "invalid decimal %s", s)
		}
	case primInteger:
		ok, inRange := matchInteger(s)
		if !ok {
			st.errorf(CodeValue, v.Offset, "invalid integer %s: must be a whole number without fraction or exponent", s)
		} else if !inRange {
			st.errorf(CodeValue, v.Offset, "integer %s is outside the 32-bit range", s)
		}
	case primUnsignedInt:
		if !matchUnsigned(s) {
			st.errorf(CodeValue, v.Offset, "invalid unsignedInt %s: must be a whole number >= 0", s)
		} else if !fits31(s) {
			st.errorf(CodeValue, v.Offset, "unsignedInt %s is larger than 2147483647", s)
		}
	case primPositiveInt:
		if !matchUnsigned(s) || s == "0" {
			st.errorf(CodeValue, v.Offset, "invalid positiveInt %s: must be a whole number >= 1", s)
		} else if !fits31(s) {
			st.errorf(CodeValue, v.Offset, "positiveInt %s is larger than 2147483647", s)
		}
	}
}

func (st *state) stringValue(v *fhirjson.Value, f *field) {
	s := v.Str
	if s == "" {
		st.errorf(CodeValue, v.Offset, "empty string: leave the element out instead")
		return
	}
	if len(s) > maxString {
		st.errorf(CodeValue, v.Offset, "string of %d bytes is longer than the 1 MB FHIR allows", len(s))
		return
	}
	switch f.prim {
	case primString, primMarkdown:
		if i := controlChar(s); i >= 0 {
			st.add(Warning, CodeValue, v.Offset, fmt.Sprintf("string contains control character 0x%02x", s[i]))
		}
	case primCode:
		if !matchCode(s) {
			st.errorf(CodeValue, v.Offset, "invalid code %q: no leading, trailing or repeated whitespace", s)
			return
		}
		if f.binding != nil && !f.binding.hasCode(s) {
			st.errorf(CodeCodeInvalid, v.Offset, "code %q is not in the required value set %s", s, f.binding.valueSet)
		}
	case primID:
		if !matchID(s) {
			st.errorf(CodeValue, v.Offset, "invalid id %q: 1-64 characters from A-Z a-z 0-9 - .", s)
		}
	case primURI, primURL, primCanonical:
		if !matchURI(s) {
			st.errorf(CodeValue, v.Offset, "invalid %s %q: must not contain whitespace", f.typ, s)
		}
	case primOID:
		if !matchOID(s) {
			st.errorf(CodeValue, v.Offset, "invalid oid %q: expected urn:oid:1.2.3...", s)
		}
	case primUUID:
		if !matchUUID(s) {
			st.errorf(CodeValue, v.Offset, "invalid uuid %q: expected urn:uuid: and a lower-case UUID", s)
		}
	case primBase64:
		if !matchBase64(s) {
			st.errorf(CodeValue, v.Offset, "invalid base64Binary: expected groups of 4 base64 characters")
		}
	case primDate:
		if ok, day := matchDate(s); !ok {
			st.errorf(CodeValue, v.Offset, "invalid date %q: expected YYYY, YYYY-MM or YYYY-MM-DD", s)
		} else if !day {
			st.errorf(CodeValue, v.Offset, "invalid date %q: no such day", s)
		}
	case primDateTime:
		if ok, day := matchDateTime(s); !ok {
			st.errorf(CodeValue, v.Offset, "invalid dateTime %q: expected YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss(.sss)+zz:zz", s)
		} else if !day {
			st.errorf(CodeValue, v.Offset, "invalid dateTime %q: no such day", s)
		}
	case primInstant:
		if ok, day := matchInstant(s); !ok {
			st.errorf(CodeValue, v.Offset, "invalid instant %q: expected YYYY-MM-DDThh:mm:ss(.sss)Z or +zz:zz", s)
		} else if !day {
			st.errorf(CodeValue, v.Offset, "invalid instant %q: no such day", s)
		}
	case primTime:
		if !matchTime(s) {
			st.errorf(CodeValue, v.Offset, "invalid time %q: expected hh:mm:ss(.sss)", s)
		}
	case primXHTML:
		if msg := checkXHTML(s); msg != "" {
			st.errorf(CodeValue, v.Offset, "%s", msg)
		}
	}
}

// controlChar returns the index of the first control character other than
// tab, CR and LF in s, or -1. Strings are checked eight bytes at a time
// for any byte below 0x20 (most have none: not even a tab or newline).
func controlChar(s string) int {
	const highs, below = 0x8080808080808080, 0x2020202020202020
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		// nonzero exactly when some byte is below 0x20 (Hacker's Delight
		// "hasless"); the bytes are then looked at one by one
		if (x-below)&^x&highs != 0 {
			break
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' && c != '\r' && c != '\n' {
			return i
		}
	}
	return -1
}

// coding checks a Coding bound to a required value set: a coding of one of
// the value set's systems must carry one of its codes. When alone
// (a Coding element, not inside a CodeableConcept) it must be from the
// value set.
func (st *state) coding(v *fhirjson.Value, b *binding, alone bool) bool {
	sys := v.GetString("system")
	code := v.GetString("code")
	if b.hasCoding(sys, code) {
		return true
	}
	if b.sysSet[sys] && code != "" {
		st.errorf(CodeCodeInvalid, v.Offset, "code %q is not in the required value set %s", code, b.valueSet)
	} else if alone {
		st.errorf(CodeCodeInvalid, v.Offset, "coding %s#%s is not from the required value set %s", sys, code, b.valueSet)
	}
	return false
}

// codeableConcept checks a CodeableConcept bound to a required value set:
// FHIR requires one of its codings to come from the value set.
func (st *state) codeableConcept(v *fhirjson.Value, b *binding) {
	codings := v.Get("coding")
	found := false
	if codings != nil && codings.Kind == fhirjson.Array {
		for i, c := range codings.Items {
			if c.Kind != fhirjson.Object {
				continue
			}
			mark := st.push("coding")
			m2 := st.pushIndex(i)
			if st.coding(c, b, false) {
				found = true
			}
			st.pop(m2)
			st.pop(mark)
		}
	}
	if !found {
		st.errorf(CodeCodeInvalid, v.Offset, "no coding from the required value set %s", b.valueSet)
	}
}

func kindName(v *fhirjson.Value) string {
	switch v.Kind {
	case fhirjson.Null:
		return "null"
	case fhirjson.Bool:
		return "a boolean"
	case fhirjson.Number:
		return "a number"
	case fhirjson.String:
		return "a string"
	case fhirjson.Array:
		return "an array"
	case fhirjson.Object:
		return "an object"
	}
	return "invalid JSON"
}

func expectName(f *field) string {
	switch f.kind {
	case kindObject:
		return f.typ + " (an object)"
	case kindResource:
		return "a resource (an object)"
	case kindString:
		return f.typ + " (a string)"
	case kindNumber:
		return f.typ + " (a number)"
	case kindBool:
		return "a boolean"
	}
	return f.typ
}
