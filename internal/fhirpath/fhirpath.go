// Package fhirpath compiles and evaluates the subset of FHIRPath that the
// standard FHIR R4 search parameters are written in, over resources parsed
// with fhirjson.
//
// Search indexing evaluates every search parameter of a resource's type on
// every write, so expressions are compiled once (Compile, CompileFor) and
// evaluated many times with little allocation (Evaluator). Every result
// node carries its FHIR type taken from the R4 element definitions - a
// node reached through Observation.value from valueQuantity is a Quantity,
// Patient.identifier items are Identifiers, primitives know whether they
// are a code, uri or dateTime - because the indexer normalises by type.
//
// The subset: member paths (choice elements addressed without their type
// suffix), indexers [n], the operators | = != ~ !~ < <= > >= in contains
// and or xor implies is as, unary minus on numbers, string, number,
// boolean, date/time and {} literals, $this, %resource, %rootResource,
// %context, %ucum, %sct, %loinc, and the functions where, select, exists,
// all, empty, not, hasValue, count, first, last, tail, skip, take, ofType,
// as, is, resolve and extension. Anything else is a compile error that
// says where. Deviations from the FHIRPath specification, all lenient in
// the direction search indexing needs:
//
//   - as (operator and function) filters a collection of several items
//     like ofType instead of failing, since expressions such as
//     (Observation.component.value as Quantity) rely on it.
//   - resolve() does not fetch anything: a contained reference ("#id")
//     yields the contained resource (when there is none, a node of the
//     Reference's type, if it has one); any other reference yields a
//     content-less node of the type named by the reference text
//     ("Patient/1", "Patient?identifier=x", "http://host/fhir/Patient/1",
//     or Reference.type), so that resolve() is Patient works; urn:uuid and
//     other untyped references yield nothing.
//   - System types match the FHIR primitives whose values they are: a FHIR
//     dateTime is a DateTime, a code is a String.
//   - | removes repeated nodes (the same element reached twice), not
//     distinct elements that happen to have equal content.
//   - Dates and times compare by their text: equal only when written alike.
package fhirpath

import (
	"fmt"
	"sync"

	"github.com/phr-project/phr/internal/fhirjson"
)

// Node is one item of a result collection: a JSON value with its FHIR
// type.
type Node struct {
	// Value is the JSON value: an object for complex types, backbone
	// elements and resources, a string, number or boolean for primitives.
	// It is nil for a primitive that has only extensions (its "_name"
	// member) and for a resource known only by a reference (resolve()).
	Value *fhirjson.Value
	// Ext is the "_name" companion of a primitive (its id and
	// extensions), nil if there is none.
	Ext *fhirjson.Value
	t   *typeInfo
}

// Type returns the node's FHIR type code ("Quantity", "code", "dateTime",
// "Patient", "BackboneElement" for backbone elements) or, for values the
// expression computed (literals, booleans), the system type
// ("System.String", "System.Boolean"...).
func (n Node) Type() string {
	if n.t == nil {
		return ""
	}
	return n.t.name
}

// Is reports whether the node is of the named type or a type derived from
// it (an Age is a Quantity, a code is a string), with the same naming rules
// as the is operator.
func (n Node) Is(typeName string) bool {
	want := lookupTypeName(typeName)
	return n.t != nil && want != nil && n.t.is(want)
}

// Primitive reports whether the node is a primitive (FHIR or system) value.
func (n Node) Primitive() bool { return n.t != nil && n.t.primitive }

// Path returns, for a backbone element, the element path that defines it
// ("Observation.component"); otherwise the type name.
func (n Node) Path() string {
	if n.t == nil {
		return ""
	}
	return n.t.path
}

// Resource returns the node for a parsed resource, typed by its
// resourceType.
func Resource(res *fhirjson.Value) (Node, error) {
	if res == nil || res.Kind != fhirjson.Object {
		return Node{}, fmt.Errorf("fhirpath: a resource must be a JSON object")
	}
	rt := res.GetString("resourceType")
	if rt == "" {
		return Node{}, fmt.Errorf("fhirpath: resource has no resourceType")
	}
	t := fhirType(rt)
	if t == nil || !t.resource || t.abstract {
		return Node{}, fmt.Errorf("fhirpath: unknown resource type %q", rt)
	}
	return Node{Value: res, t: t}, nil
}

// Expr is a compiled expression; it is immutable and safe for concurrent
// use.
type Expr struct {
	src  string
	root op
	// static result types (when known from the context type), and the
	// type of %resource
	out, rootTypes tset
	// the input's elements the expression reads, if that is all it uses
	members      []string
	membersKnown bool
}

// InputMembers returns the names of the input's elements the expression
// reads ("code" and "component" for Observation.code |
// Observation.component.code), with ok true when those are all it uses of
// its input, so that an input without any of them must give an empty
// result. Indexing uses it to skip, without evaluating them, the many
// parameters whose elements a resource does not have. Choice elements are
// named without their suffix ("value").
func (e *Expr) InputMembers() (names []string, ok bool) {
	return e.members, e.membersKnown
}

// String returns the expression's source text.
func (e *Expr) String() string { return e.src }

// Empty reports whether the expression can be seen at compile time to
// yield nothing for its context type: with CompileFor("Observation"), the
// expression Patient.name is Empty. Indexing skips such parameters.
func (e *Expr) Empty() bool { return e.out.known && len(e.out.types) == 0 }

// Compile compiles expr for evaluation over any input. Member names are
// checked where the types are known from the expression itself (after a
// root type name such as Observation.).
func Compile(expr string) (*Expr, error) {
	return compileExpr(expr, unknown, unknown)
}

// CompileFor compiles expr for evaluation over resources (or other
// values) of the named type: member names are checked against the type's
// definition, and the parts of a union that start with another type's name
// (the way shared search parameters are written) are dropped, which saves
// their evaluation on every call.
func CompileFor(expr, contextType string) (*Expr, error) {
	t := lookupTypeName(contextType)
	if t == nil {
		return nil, fmt.Errorf("fhirpath: unknown type %q", contextType)
	}
	return compileExpr(expr, known(t), known(t))
}

// MustCompile is Compile for expressions known to be valid (package-level
// variables, tests); it panics on error.
func MustCompile(expr string) *Expr {
	e, err := Compile(expr)
	if err != nil {
		panic(err)
	}
	return e
}

// Eval evaluates e over one resource (both the input and %resource) and
// returns a new result collection.
func (e *Expr) Eval(res Node) ([]Node, error) {
	ev := evalPool.Get().(*Evaluator)
	defer evalPool.Put(ev)
	return ev.Eval(e, nil, res, res)
}

var evalPool = sync.Pool{New: func() any { return new(Evaluator) }}

// Evaluator holds the scratch space of evaluations so that a loop
// evaluating many expressions allocates little. The zero value is ready to
// use; an Evaluator must not be used by two goroutines at once.
type Evaluator struct {
	free [][]Node
	one  [1]Node
	root Node
	ctx  []Node
}

// Eval evaluates e with focus as the input (and %context) and root as
// %resource, appending the results to dst.
func (ev *Evaluator) Eval(e *Expr, dst []Node, root, focus Node) ([]Node, error) {
	ev.one[0] = focus
	out, err := ev.EvalCollection(e, dst, root, ev.one[:])
	ev.one[0] = Node{}
	return out, err
}

// EvalCollection is Eval over an input collection of any size.
func (ev *Evaluator) EvalCollection(e *Expr, dst []Node, root Node, focus []Node) ([]Node, error) {
	ev.root = root
	ev.ctx = focus
	out, err := e.root.eval(ev, focus, dst)
	ev.ctx = nil
	ev.root = Node{}
	if err != nil {
		return dst, fmt.Errorf("fhirpath: evaluating %q: %w", e.src, err)
	}
	return out, nil
}

func (ev *Evaluator) get() []Node {
	if n := len(ev.free); n > 0 {
		s := ev.free[n-1]
		ev.free = ev.free[:n-1]
		return s[:0]
	}
	return make([]Node, 0, 8)
}

func (ev *Evaluator) put(s []Node) {
	if cap(s) > 0 {
		clear(s)
		ev.free = append(ev.free, s[:0])
	}
}

// ResultTypes returns the types the expression can yield, as far as the
// compiler can tell from its context type (CompileFor) and the element
// definitions; known is false when it cannot tell (after resolve(), for a
// Compile without a root type name). The indexer uses it to check, when
// it starts, that it can normalise everything a parameter can yield.
func (e *Expr) ResultTypes() (types []string, known bool) {
	if !e.out.known {
		return nil, false
	}
	types = make([]string, len(e.out.types))
	for i, t := range e.out.types {
		types[i] = t.name
	}
	return types, true
}

// CompileRelative compiles expr for evaluation on the results of outer
// (with the same %resource), checking its member names against the types
// outer yields: the components of a composite search parameter are
// written this way.
func CompileRelative(expr string, outer *Expr) (*Expr, error) {
	e, err := compileExpr(expr, outer.out, outer.rootTypes)
	if err != nil {
		return nil, err
	}
	return e, nil
}
