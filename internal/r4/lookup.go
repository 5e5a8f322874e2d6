package r4

import (
	"sort"
	"strings"
)

// The lookup maps are built once at start-up from the generated tables; a
// few thousand map inserts cost well under a millisecond and save every
// caller from scanning the tables.
var (
	typeByName    map[string]*Type
	elementByPath map[string]*Element
	resourceTypes []string
	paramsByType  map[string]map[string]*SearchParam
	paramByURL    map[string]*SearchParam
)

func init() {
	typeByName = make(map[string]*Type, len(typeTable))
	n := 0
	for i := range typeTable {
		typeByName[typeTable[i].Name] = &typeTable[i]
		n += len(typeTable[i].Elements)
	}
	elementByPath = make(map[string]*Element, n)
	for i := range typeTable {
		t := &typeTable[i]
		for j := range t.Elements {
			elementByPath[t.Elements[j].Path] = &t.Elements[j]
		}
		if t.Kind == KindResource && !t.Abstract {
			resourceTypes = append(resourceTypes, t.Name)
		}
	}
	sort.Strings(resourceTypes)

	paramByURL = make(map[string]*SearchParam, len(searchParamTable))
	paramsByType = make(map[string]map[string]*SearchParam, len(resourceTypes))
	for _, rt := range resourceTypes {
		paramsByType[rt] = map[string]*SearchParam{}
	}
	// Common parameters first, so that a type's own parameter of the same
	// code (there is none in 4.0.1) would win.
	for pass := 0; pass < 2; pass++ {
		for i := range searchParamTable {
			p := &searchParamTable[i]
			paramByURL[p.URL] = p
			for _, b := range p.Base {
				common := b == "Resource" || b == "DomainResource"
				if common != (pass == 0) {
					continue
				}
				switch b {
				case "Resource":
					for _, rt := range resourceTypes {
						paramsByType[rt][p.Code] = p
					}
				case "DomainResource":
					for _, rt := range resourceTypes {
						if IsA(rt, "DomainResource") {
							paramsByType[rt][p.Code] = p
						}
					}
				default:
					if m := paramsByType[b]; m != nil {
						m[p.Code] = forType(p, b)
					}
				}
			}
		}
	}
}

// forType returns p as it applies to resourceType: for a parameter shared
// by several bases, a copy whose Expression keeps only the parts of the
// union that start with that type ("Observation.code" of clinical-code).
func forType(p *SearchParam, resourceType string) *SearchParam {
	if len(p.Base) < 2 || p.Expression == "" {
		return p
	}
	var keep []string
	for _, part := range SplitUnion(p.Expression) {
		if ExpressionRoot(part) == resourceType {
			keep = append(keep, part)
		}
	}
	if len(keep) == 0 {
		return p
	}
	c := *p
	c.Expression = strings.Join(keep, " | ")
	return &c
}

// SplitUnion splits a FHIRPath expression at its top-level "|" operators
// (not inside parentheses or string literals), trimming each part.
func SplitUnion(expr string) []string {
	var parts []string
	depth, start := 0, 0
	inStr := false
	for i := 0; i < len(expr); i++ {
		switch c := expr[i]; {
		case inStr:
			if c == '\\' {
				i++
			} else if c == '\'' {
				inStr = false
			}
		case c == '\'':
			inStr = true
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == '|' && depth == 0:
			parts = append(parts, strings.TrimSpace(expr[start:i]))
			start = i + 1
		}
	}
	return append(parts, strings.TrimSpace(expr[start:]))
}

// ExpressionRoot returns the type name a FHIRPath expression part starts
// with, skipping opening parentheses: "Observation" for
// "(Observation.value as Quantity)".
func ExpressionRoot(part string) string {
	part = strings.TrimLeft(part, "( ")
	end := strings.IndexAny(part, ". )")
	if end < 0 {
		return part
	}
	return part[:end]
}

// LookupType returns the resource or data type called name, or nil.
func LookupType(name string) *Type { return typeByName[name] }

// IsResourceType reports whether name is a concrete resource type (not
// Resource or DomainResource): what a resourceType member or a reference's
// type may name.
func IsResourceType(name string) bool {
	t := typeByName[name]
	return t != nil && t.Kind == KindResource && !t.Abstract
}

// ResourceTypes returns the concrete resource types, sorted. The slice is
// shared: do not modify it.
func ResourceTypes() []string { return resourceTypes }

// IsA reports whether type name is base or specialises it, directly or
// not ("Patient" is a "DomainResource" and a "Resource"; "Age" is a
// "Quantity").
func IsA(name, base string) bool {
	for t := typeByName[name]; t != nil; t = typeByName[t.Base] {
		if t.Name == base {
			return true
		}
	}
	return false
}

// LookupElement returns the definition of the element at path, a full
// path without choice suffixes ("Patient.contact.name",
// "Observation.value[x]"). Where a path goes through an element defined
// elsewhere ("Questionnaire.item.item.linkId" reuses Questionnaire.item)
// or into a data type ("Patient.contact.name.family" is HumanName.family)
// it follows them, so search expressions and validation paths resolve
// whatever their depth. It returns nil for an unknown path.
func LookupElement(path string) *Element {
	if e := elementByPath[path]; e != nil {
		return e
	}
	parts := strings.Split(path, ".")
	if typeByName[parts[0]] == nil {
		return nil
	}
	cur := parts[0]
	var el *Element
	for _, seg := range parts[1:] {
		next := cur + "." + seg
		e := elementByPath[next]
		if e == nil && el != nil && len(el.Types) == 1 {
			if t := typeByName[el.Types[0]]; t != nil && t.Name != "BackboneElement" && t.Name != "Element" {
				next = t.Name + "." + seg
				e = elementByPath[next]
			}
		}
		if e == nil {
			return nil
		}
		el, cur = e, next
		if e.ContentRef != "" {
			cur = e.ContentRef
		}
	}
	return el
}

// SearchParams returns the search parameters of a concrete resource type
// by code, including those defined on Resource and DomainResource (_id,
// _lastUpdated, _text...); nil for an unknown type. A parameter shared by
// several types (clinical-code, clinical-patient...) comes with its
// Expression narrowed to this type's part of the union ("Observation.code"),
// which is what an indexer evaluates; SearchParamByURL gives it as
// published. The map is shared: do not modify it.
func SearchParams(resourceType string) map[string]*SearchParam {
	return paramsByType[resourceType]
}

// SearchParamByURL returns the standard search parameter with the given
// canonical URL, or nil.
func SearchParamByURL(url string) *SearchParam { return paramByURL[url] }

// AllSearchParams returns every standard search parameter, sorted by URL.
// The slice is shared: do not modify it.
func AllSearchParams() []SearchParam { return searchParamTable[:] }

// PatientCompartmentParams returns the search parameters that put a
// resource of the given type in a patient's compartment (for Observation:
// subject and performer), or nil when the type is not in the compartment.
// The slice is shared: do not modify it.
func PatientCompartmentParams(resourceType string) []string {
	return patientCompartment[resourceType]
}
