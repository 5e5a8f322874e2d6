package index

import (
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/phr-project/phr/internal/r4"
)

// Several standard search parameters index exactly the values of others
// of the same resource type: Observation's combo-code is code and
// component-code together ("Observation.code | Observation.component.code"),
// combo-code-value-quantity is code-value-quantity and
// component-code-value-quantity, and the patient parameters written
// "X.subject.where(resolve() is Patient)" are the subject references that
// name a Patient. Writing their entries again costs a tenth of the index
// rows of a Synthea import for nothing, so extraction leaves such aliases
// out, and whoever reads index rows of an alias reads its sources' rows
// instead (AliasOf).
//
// The relations are derived from the definitions when an extractor is
// built, not listed by hand: a parameter is an alias when the parts of its
// FHIRPath union are exactly the union of the parts of other parameters of
// the same type (for composites, also with the same components), or when
// each part is "X.where(resolve() is T)", with one T, and the Xs are
// exactly the parts of other reference parameters that yield only
// References - the rows of the latter whose target type is T (the index
// gives a Ref the type resolve() sees: see TestAliasesMatchSources).

// Alias says where the index entries of an alias parameter are kept.
type Alias struct {
	// Sources are the codes of the parameters (of the same resource type
	// and parameter type, none an alias) whose entries together are the
	// alias's, sorted.
	Sources []string
	// TargetType, when set, keeps only the source entries (references)
	// whose Type is it.
	TargetType string
}

// AliasOf reports whether the parameter code of a resource type is an
// alias, and of what. Its entries are not extracted: a search reads the
// sources' entries (with Ref.Type = TargetType when set) instead.
func AliasOf(resourceType, code string) (Alias, bool) {
	x, err := For(resourceType)
	if err != nil {
		return Alias{}, false
	}
	a, ok := x.aliases[code]
	return a, ok
}

// Aliases returns the alias parameters of a resource type by code (nil
// for none or an unknown type). The map is shared: do not modify it.
func Aliases(resourceType string) map[string]Alias {
	x, err := For(resourceType)
	if err != nil {
		return nil
	}
	return x.aliases
}

// restrictedPart matches a union part "X.where(resolve() is T)".
var restrictedPart = regexp.MustCompile(`^(.+)\.where\(resolve\(\) is ([A-Z][A-Za-z]*)\)$`)

// aliasCand is a compiled parameter seen by findAliases.
type aliasCand struct {
	p     *param
	parts []string // union parts, sorted, without repeats
	sig   string   // parameter type and components: only equal ones relate
}

// findAliases derives the alias parameters among the compiled params of
// a type (see Alias). Sources are never aliases themselves: plain
// parameters (no resolve() in their expression) are taken by increasing
// number of parts, then code, and one is an alias only of plain
// parameters taken before it that are not aliases; restricted aliases
// ("where(resolve() is T)") take their sources among those.
func findAliases(params []param) map[string]Alias {
	var plain, restricted []aliasCand
	for i := range params {
		p := &params[i]
		c := aliasCand{p: p, parts: unionParts(p.sp.Expression), sig: signature(p)}
		if strings.Contains(p.sp.Expression, "resolve()") {
			restricted = append(restricted, c)
		} else {
			plain = append(plain, c)
		}
	}
	sort.Slice(plain, func(i, j int) bool {
		if len(plain[i].parts) != len(plain[j].parts) {
			return len(plain[i].parts) < len(plain[j].parts)
		}
		return plain[i].p.sp.Code < plain[j].p.sp.Code
	})
	out := map[string]Alias{}
	var primary []aliasCand // the plain parameters that are no alias
	for _, c := range plain {
		if src := cover(primary, c.sig, c.parts, nil); src != nil {
			out[c.p.sp.Code] = Alias{Sources: src}
			continue
		}
		primary = append(primary, c)
	}
	for _, c := range restricted {
		if c.p.sp.Type != r4.ParamReference {
			continue
		}
		target := ""
		stripped := make([]string, 0, len(c.parts))
		for _, part := range c.parts {
			m := restrictedPart.FindStringSubmatch(part)
			if m == nil || strings.Contains(m[1], "resolve()") || target != "" && m[2] != target {
				target = ""
				break
			}
			target = m[2]
			stripped = append(stripped, m[1])
		}
		if target == "" {
			continue
		}
		slices.Sort(stripped)
		stripped = slices.Compact(stripped)
		onlyRefs := func(s aliasCand) bool {
			types, known := s.p.expr.ResultTypes()
			if !known || len(types) == 0 {
				return false
			}
			for _, t := range types {
				if t != "Reference" {
					return false
				}
			}
			return true
		}
		if src := cover(primary, c.sig, stripped, onlyRefs); src != nil {
			out[c.p.sp.Code] = Alias{Sources: src, TargetType: target}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// cover returns the codes of the candidates (of signature sig, accepted by
// ok when it is set) whose parts are all among parts and together are all
// of them, leaving out any whose parts the others cover; nil when they do
// not cover parts.
func cover(cands []aliasCand, sig string, parts []string, ok func(aliasCand) bool) []string {
	var use []aliasCand
	for _, s := range cands {
		if s.sig == sig && subset(s.parts, parts) && (ok == nil || ok(s)) {
			use = append(use, s)
		}
	}
	if !slices.Equal(partsOf(use, -1), parts) {
		return nil
	}
	// drop sources the others cover, largest last considered
	for i := len(use) - 1; i >= 0; i-- {
		if slices.Equal(partsOf(use, i), parts) {
			use = slices.Delete(use, i, i+1)
		}
	}
	codes := make([]string, len(use))
	for i, s := range use {
		codes[i] = s.p.sp.Code
	}
	sort.Strings(codes)
	return codes
}

// partsOf returns the union of the parts of cs but cs[skip], sorted.
func partsOf(cs []aliasCand, skip int) []string {
	var all []string
	for i, c := range cs {
		if i != skip {
			all = append(all, c.parts...)
		}
	}
	slices.Sort(all)
	return slices.Compact(all)
}

// subset reports whether every element of a (sorted) is in b (sorted).
func subset(a, b []string) bool {
	for _, s := range a {
		if _, found := slices.BinarySearch(b, s); !found {
			return false
		}
	}
	return true
}

// unionParts returns the parts of a FHIRPath union, sorted, each once.
func unionParts(expr string) []string {
	parts := r4.SplitUnion(expr)
	slices.Sort(parts)
	return slices.Compact(parts)
}

// signature is what two parameters must share for one to be an alias of
// the other: the parameter type and, for composites, each component's type
// and expression (the parts of a composite entry).
func signature(p *param) string {
	s := p.sp.Type.String()
	for _, c := range p.comps {
		s += "\x00" + c.typ.String() + "\x00" + c.expr.String()
	}
	return s
}
