package scope

import (
	"errors"
	"slices"
	"strings"
)

// Grants is the set of scopes a token carries (or a client asks for, or is
// allowed). The zero value grants nothing. Grants is immutable once parsed,
// so one value may be shared by concurrent requests.
type Grants struct {
	scopes  []Scope
	unknown []string
}

// Parse reads a space-separated scope list, as in an OAuth scope parameter or
// a token's scope claim. Malformed resource scopes are errors (all of them are
// reported, joined); scopes this package does not know are kept and returned
// by Unknown. Duplicates are dropped.
func Parse(list string) (Grants, error) {
	var g Grants
	var errs []error
	for i, s := range strings.Fields(list) {
		sc, ok, err := ParseOne(s)
		if err != nil {
			var pe *ParseError
			if errors.As(err, &pe) {
				pe.Index = i
			}
			errs = append(errs, err)
			continue
		}
		if !ok {
			if !slices.Contains(g.unknown, s) {
				g.unknown = append(g.unknown, s)
			}
			continue
		}
		g.add(sc)
	}
	if len(errs) > 0 {
		return Grants{}, errors.Join(errs...)
	}
	return g, nil
}

// MustParse is Parse for scope lists fixed in code (defaults, tests); it
// panics on a malformed scope because that is a programming error.
func MustParse(list string) Grants {
	g, err := Parse(list)
	if err != nil {
		panic("scope.MustParse: " + err.Error())
	}
	return g
}

func (g *Grants) add(sc Scope) {
	for _, have := range g.scopes {
		if have.equal(sc) {
			return
		}
	}
	g.scopes = append(g.scopes, sc)
}

// Scopes returns the understood scopes in the order they were given.
func (g Grants) Scopes() []Scope { return slices.Clone(g.scopes) }

// Unknown returns the scopes that were well-formed but not understood, so the
// token endpoint can report (or drop) them.
func (g Grants) Unknown() []string { return slices.Clone(g.unknown) }

// Empty reports whether no understood scope is present.
func (g Grants) Empty() bool { return len(g.scopes) == 0 }

// String joins the understood scopes with spaces, the form of the scope
// response parameter and the access token's scope claim.
func (g Grants) String() string {
	parts := make([]string, len(g.scopes))
	for i, s := range g.scopes {
		parts[i] = s.String()
	}
	return strings.Join(parts, " ")
}

// Has reports whether a non-resource scope of kind k is present (e.g.
// OfflineAccess before issuing a refresh token).
func (g Grants) Has(k Kind) bool {
	for _, s := range g.scopes {
		if s.Kind == k {
			return true
		}
	}
	return false
}

// HasLaunchContext reports whether launch/<name> was asked for, e.g.
// "patient" for a standalone launch that needs a patient picker.
func (g Grants) HasLaunchContext(name string) bool {
	for _, s := range g.scopes {
		if s.Kind == LaunchContext && s.Name == name {
			return true
		}
	}
	return false
}

// NeedsPatient reports whether any resource scope is a patient/ scope: such a
// token is useless without a patient in its launch context, so the token
// endpoint must refuse to issue it without one.
func (g Grants) NeedsPatient() bool {
	for _, s := range g.scopes {
		if s.Kind == Resource && s.Context == Patient {
			return true
		}
	}
	return false
}

// PatientOnly reports whether every resource scope is a patient/ scope, so
// the token can reach nothing outside its patient's compartment. A token with
// no resource scopes is not PatientOnly (it reaches nothing at all).
func (g Grants) PatientOnly() bool {
	n := 0
	for _, s := range g.scopes {
		if s.Kind != Resource {
			continue
		}
		if s.Context != Patient {
			return false
		}
		n++
	}
	return n > 0
}

// Rule is one way a token reaches resources of a type. A resource is
// reachable through the rule when it is in the token's patient compartment
// (if Compartment) and matches every Param of Filter.
type Rule struct {
	// Compartment limits the rule to the token's patient compartment; it
	// comes from patient/ scopes.
	Compartment bool
	// Filter comes from v2 scope queries; every Param must match (AND).
	Filter []Param
}

// Access is the answer to "may this token do interaction X on type T?".
type Access struct {
	// Allowed is false when no scope grants the interaction on the type.
	Allowed bool
	// Rules are alternatives (OR): a resource is reachable when it satisfies
	// at least one. Rules subsumed by another are dropped, so a single rule
	// with no compartment and no filter means unrestricted access.
	Rules []Rule
}

// Unrestricted reports whether the access reaches every resource of the type
// (a user/ or system/ scope without a query). User scopes are still limited
// by the user's own permissions, which the caller checks.
func (a Access) Unrestricted() bool {
	return a.Allowed && len(a.Rules) == 1 && !a.Rules[0].Compartment && len(a.Rules[0].Filter) == 0
}

// CompartmentOnly reports whether every rule is limited to the patient
// compartment, so the search can be run inside it with the rules' filters.
func (a Access) CompartmentOnly() bool {
	if !a.Allowed {
		return false
	}
	for _, r := range a.Rules {
		if !r.Compartment {
			return false
		}
	}
	return true
}

// Filter returns the search parameters to AND onto a read or search when the
// access can be expressed as one conjunction: one rule, or several rules with
// the same compartment flag that differ in the value of a single token
// parameter only (joined with ',' which FHIR search reads as OR). ok is false
// when the rules cannot be merged; then the caller must evaluate them one by
// one (a resource passes if any rule passes).
func (a Access) Filter() (params []Param, compartment bool, ok bool) {
	if !a.Allowed || len(a.Rules) == 0 {
		return nil, false, false
	}
	if len(a.Rules) == 1 {
		return slices.Clone(a.Rules[0].Filter), a.Rules[0].Compartment, true
	}
	first := a.Rules[0]
	if len(first.Filter) != 1 {
		return nil, false, false
	}
	name := first.Filter[0].Name
	values := []string{first.Filter[0].Value}
	for _, r := range a.Rules[1:] {
		if r.Compartment != first.Compartment || len(r.Filter) != 1 || r.Filter[0].Name != name {
			return nil, false, false
		}
		if strings.Contains(r.Filter[0].Value, ",") {
			return nil, false, false
		}
		values = append(values, r.Filter[0].Value)
	}
	if strings.Contains(first.Filter[0].Value, ",") {
		return nil, false, false
	}
	return []Param{{Name: name, Value: strings.Join(values, ",")}}, first.Compartment, true
}

// Access answers whether the resource scopes allow interaction i (one of
// Create, Read, Update, Delete, Search) on resourceType, and under which
// limits. A combination of interactions is answered conservatively: only
// scopes that each grant all of it count, so ask one interaction at a time.
func (g Grants) Access(i Interaction, resourceType string) Access {
	var rules []Rule
	for _, s := range g.scopes {
		if s.Kind != Resource || s.Interactions&i != i || (s.Type != "*" && s.Type != resourceType) {
			continue
		}
		rules = append(rules, Rule{Compartment: s.Context == Patient, Filter: s.Filter})
	}
	if len(rules) == 0 {
		return Access{}
	}
	return Access{Allowed: true, Rules: minimalRules(rules)}
}

// Allows is Access(i, resourceType).Allowed, for the common yes/no check.
func (g Grants) Allows(i Interaction, resourceType string) bool {
	return g.Access(i, resourceType).Allowed
}

// ruleCovers reports whether every resource reachable through b is also
// reachable through a.
func ruleCovers(a, b Rule) bool {
	return (!a.Compartment || b.Compartment) && filterSubset(a.Filter, b.Filter)
}

// minimalRules drops rules that another rule already covers, keeping the
// first of equal rules.
func minimalRules(rules []Rule) []Rule {
	var out []Rule
	for i, r := range rules {
		covered := false
		for j, o := range rules {
			if i == j || !ruleCovers(o, r) {
				continue
			}
			// Equal rules cover each other: keep only the earlier one.
			if ruleCovers(r, o) && j > i {
				continue
			}
			covered = true
			break
		}
		if !covered {
			out = append(out, Rule{Compartment: r.Compartment, Filter: slices.Clone(r.Filter)})
		}
	}
	return out
}

// Narrow returns what may be granted of requested when the client (or user,
// or policy) is allowed only allowed: the intersection, scope by scope.
//
// A requested resource scope is granted through each allowed scope of the
// same context (patient/ never yields user/ or system/, nor the reverse) whose
// type is "*" or the same type: the permissions are intersected, a requested
// "*" type narrows to an allowed concrete type, and the two queries are
// combined with AND. Other scopes are granted only when allowed holds them.
// Unknown scopes are never granted. Nothing in the result reaches further
// than both inputs, so scope escalation is impossible; scopes the result
// makes redundant are dropped. An empty result means invalid_scope.
func Narrow(requested, allowed Grants) Grants {
	var out Grants
	for _, r := range requested.scopes {
		if r.Kind != Resource {
			for _, a := range allowed.scopes {
				if a.Kind == r.Kind && a.Name == r.Name {
					out.add(r)
					break
				}
			}
			continue
		}
		for _, a := range allowed.scopes {
			if a.Kind != Resource || a.Context != r.Context {
				continue
			}
			typ := r.Type
			switch {
			case a.Type == "*":
			case r.Type == "*":
				typ = a.Type
			case a.Type != r.Type:
				continue
			}
			perms := r.Interactions & a.Interactions
			if perms == 0 {
				continue
			}
			filter := slices.Clone(r.Filter)
			for _, p := range a.Filter {
				if !slices.Contains(filter, p) {
					filter = append(filter, p)
				}
			}
			out.add(Scope{Kind: Resource, Context: r.Context, Type: typ, Interactions: perms, Filter: filter, V1: r.V1})
		}
	}
	// Drop scopes another granted scope covers (e.g. system/Patient.r next
	// to system/*.rs), keeping the first of equals.
	kept := out.scopes[:0:0]
	for i, s := range out.scopes {
		redundant := false
		for j, o := range out.scopes {
			if i != j && o.covers(s) && !(s.covers(o) && j > i) {
				redundant = true
				break
			}
		}
		if !redundant {
			kept = append(kept, s)
		}
	}
	out.scopes = kept
	return out
}
