package index

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/fhirpath"
	"github.com/phr-project/phr/internal/r4"
)

// Extractor extracts the index entries of resources of one type. It holds
// the type's search parameters compiled once; it is safe for concurrent
// use.
type Extractor struct {
	resourceType string
	params       []param
	supported    []*r4.SearchParam
	gaps         []Gap
	// keyBits maps the JSON member names of the type's elements that
	// parameters read to bits of a presence mask.
	keyBits map[string]uint64
	// aliases are the parameters whose entries are other parameters'
	// (see Alias); aliasParams holds them compiled, left out of params.
	aliases     map[string]Alias
	aliasParams []param
}

type param struct {
	sp    *r4.SearchParam
	expr  *fhirpath.Expr
	comps []component
	// mask has the bits of the elements the expression reads when that
	// is all it uses (see fhirpath.Expr.InputMembers); a resource with
	// none of them cannot give entries. Zero means always evaluate.
	mask uint64
}

type component struct {
	typ  r4.ParamType
	expr *fhirpath.Expr
}

// Gap is a standard search parameter, or a part of one, that extraction
// leaves out, with the reason. Nothing is left out silently: the list is
// fixed by a test.
type Gap struct {
	Code string
	URL  string
	// Partial is set when the parameter is indexed but some of the values
	// its expression can yield are not (Types names them).
	Partial bool
	Types   []string
	Reason  string
}

// String is the gap in one line: the parameter's URL, the value types
// left out if only some are, and the reason.
func (g Gap) String() string {
	s := g.URL
	if g.Partial {
		s += " (" + strings.Join(g.Types, ", ") + ")"
	}
	return s + ": " + g.Reason
}

type lazy struct {
	once sync.Once
	x    *Extractor
}

var extractors = func() map[string]*lazy {
	m := make(map[string]*lazy)
	for _, rt := range r4.ResourceTypes() {
		m[rt] = new(lazy)
	}
	return m
}()

// For returns the extractor for a resource type, compiling its search
// parameters on first use.
func For(resourceType string) (*Extractor, error) {
	l := extractors[resourceType]
	if l == nil {
		return nil, fmt.Errorf("index: unknown resource type %q", resourceType)
	}
	l.once.Do(func() { l.x = newExtractor(resourceType) })
	return l.x, nil
}

// Extract returns the index entries of a resource of the given type. An
// error names each value that could not be indexed (an invalid date, a
// decimal that is not one); the entries of everything else are returned
// with it, so a caller may store what it can.
//
// The entries are extracted into pooled scratch space and then copied into
// slices of their exact size, one per kind of entry, rather than grown
// entry by entry: the write paths keep them until the version is stored.
func Extract(resourceType string, res *fhirjson.Value) (Entries, error) {
	x, err := For(resourceType)
	if err != nil {
		return Entries{}, err
	}
	sc := scratchEntries.Get().(*Entries)
	err = x.Append(sc, res)
	e := sc.clone()
	sc.forget()
	scratchEntries.Put(sc)
	return e, err
}

// scratchEntries are the Entries Extract extracts into.
var scratchEntries = sync.Pool{New: func() any { return new(Entries) }}

// forget clears e's entries (so that the scratch space keeps no strings
// of the resource alive) and resets it.
func (e *Entries) forget() {
	clear(e.Tokens)
	clear(e.Strings)
	clear(e.Dates)
	clear(e.Refs)
	clear(e.Quantities)
	clear(e.Numbers)
	clear(e.URIs)
	clear(e.Composites)
	clear(e.pTokens)
	clear(e.pStrings)
	clear(e.pDates)
	clear(e.pRefs)
	clear(e.pQuantities)
	clear(e.pNumbers)
	clear(e.pURIs)
	clear(e.pParts)
	e.Reset()
}

// clone returns a copy of e in slices of their exact size (nil for kinds
// without entries). Composite parts get values of their own, copied from
// what e's parts point at.
func (e *Entries) clone() Entries {
	out := Entries{
		Tokens:     exact(e.Tokens),
		Strings:    exact(e.Strings),
		Dates:      exact(e.Dates),
		Refs:       exact(e.Refs),
		Quantities: exact(e.Quantities),
		Numbers:    exact(e.Numbers),
		URIs:       exact(e.URIs),
	}
	if len(e.Composites) == 0 {
		return out
	}
	var nt, ns, nd, nr, nq, nn, nu, np int
	for _, c := range e.Composites {
		np += len(c.Parts)
		for _, p := range c.Parts {
			switch {
			case p.Token != nil:
				nt++
			case p.String != nil:
				ns++
			case p.Date != nil:
				nd++
			case p.Ref != nil:
				nr++
			case p.Quantity != nil:
				nq++
			case p.Number != nil:
				nn++
			case p.URI != nil:
				nu++
			}
		}
	}
	out.pTokens = make([]Token, 0, nt)
	out.pStrings = make([]String, 0, ns)
	out.pDates = make([]Date, 0, nd)
	out.pRefs = make([]Ref, 0, nr)
	out.pQuantities = make([]Quantity, 0, nq)
	out.pNumbers = make([]Number, 0, nn)
	out.pURIs = make([]URI, 0, nu)
	out.pParts = make([]CompositePart, 0, np)
	out.Composites = make([]Composite, len(e.Composites))
	for i, c := range e.Composites {
		start := len(out.pParts)
		for _, p := range c.Parts {
			var q CompositePart
			switch {
			case p.Token != nil:
				out.pTokens = append(out.pTokens, *p.Token)
				q.Token = &out.pTokens[len(out.pTokens)-1]
			case p.String != nil:
				out.pStrings = append(out.pStrings, *p.String)
				q.String = &out.pStrings[len(out.pStrings)-1]
			case p.Date != nil:
				out.pDates = append(out.pDates, *p.Date)
				q.Date = &out.pDates[len(out.pDates)-1]
			case p.Ref != nil:
				out.pRefs = append(out.pRefs, *p.Ref)
				q.Ref = &out.pRefs[len(out.pRefs)-1]
			case p.Quantity != nil:
				out.pQuantities = append(out.pQuantities, *p.Quantity)
				q.Quantity = &out.pQuantities[len(out.pQuantities)-1]
			case p.Number != nil:
				out.pNumbers = append(out.pNumbers, *p.Number)
				q.Number = &out.pNumbers[len(out.pNumbers)-1]
			case p.URI != nil:
				out.pURIs = append(out.pURIs, *p.URI)
				q.URI = &out.pURIs[len(out.pURIs)-1]
			}
			out.pParts = append(out.pParts, q)
		}
		end := len(out.pParts)
		out.Composites[i] = Composite{Param: c.Param, Parts: out.pParts[start:end:end]}
	}
	return out
}

// exact returns a copy of s with no spare capacity, nil when s is empty.
func exact[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return append(make([]T, 0, len(s)), s...)
}

// Supported returns the search parameters of a resource type that
// extraction indexes (all but those Unsupported lists as wholly left out),
// sorted by code; nil for an unknown type.
func Supported(resourceType string) []*r4.SearchParam {
	x, err := For(resourceType)
	if err != nil {
		return nil
	}
	return x.supported
}

// Unsupported lists, for all resource types, the standard search
// parameters or parts of them that extraction leaves out, sorted by URL.
func Unsupported() []Gap {
	byKey := map[string]int{}
	var gaps []Gap
	for _, rt := range r4.ResourceTypes() {
		x, _ := For(rt)
		for _, g := range x.gaps {
			k := g.URL + "\x00" + g.Reason
			i, ok := byKey[k]
			if !ok {
				byKey[k] = len(gaps)
				g.Types = append([]string(nil), g.Types...)
				gaps = append(gaps, g)
				continue
			}
			// a shared parameter: the types left out for each base
			for _, t := range g.Types {
				if !slices.Contains(gaps[i].Types, t) {
					gaps[i].Types = append(gaps[i].Types, t)
				}
			}
			sort.Strings(gaps[i].Types)
		}
	}
	sort.Slice(gaps, func(i, j int) bool {
		if gaps[i].URL != gaps[j].URL {
			return gaps[i].URL < gaps[j].URL
		}
		return gaps[i].Reason < gaps[j].Reason
	})
	return gaps
}

// FromResourceRow reports the parameters that are supported but not
// extracted into index entries, because every store keeps them in the
// resource row itself (id and last_updated): indexing them again would
// add two rows per resource for nothing.
func FromResourceRow(code string) bool { return code == "_id" || code == "_lastUpdated" }

// newExtractor compiles the parameters of a type. A standard parameter
// that cannot be compiled becomes a Gap rather than a failure: the test of
// the Unsupported list is what keeps that at zero.
// ProvenancePatientExtension is the extension (valueReference to a
// Patient) by which a Provenance names the patient whose record it is
// about when it does not target the Patient resource itself. The importer
// writes one per patient on its Provenance, so that each patient sees the
// Provenance of the versions an import wrote into their record.
const ProvenancePatientExtension = "http://phr-project.github.io/fhir/StructureDefinition/provenance-patient"

// expressionOverrides widen standard parameters' expressions (by URL).
// Provenance's patient parameter, which also decides the Provenance's
// patient compartment, reads the target Patients and the patients named
// by ProvenancePatientExtension.
var expressionOverrides = map[string]string{
	"http://hl7.org/fhir/SearchParameter/Provenance-patient": "Provenance.target.where(resolve() is Patient) | Provenance.extension('" + ProvenancePatientExtension + "').value.ofType(Reference).where(resolve() is Patient)",
}

// OwnerExtension is the extension (valueReference to a Patient) that
// makes a resource of a type outside every patient compartment (a
// Medication, a Practitioner) part of that patient's record: the patient
// who wrote it owns it, and other patients do not see it. It is indexed
// as OwnerParam, and so decides the resource's compartment like the
// compartment parameters of other types do.
const OwnerExtension = "http://phr-project.github.io/fhir/StructureDefinition/owner"

// OwnerParam is the index code of OwnerExtension's reference. It is not a
// search parameter (Supported does not list it, and search refuses it);
// its rows serve the compartment and the references exports follow.
const OwnerParam = "_owner"

// Ownable reports whether resources of type rt may carry OwnerExtension:
// the types outside every patient compartment that may have extensions,
// Binary aside (its securityContext does that).
func Ownable(rt string) bool {
	if rt == "Binary" || len(r4.PatientCompartmentParams(rt)) > 0 {
		return false
	}
	def := r4.LookupType(rt)
	if def == nil {
		return false
	}
	for _, el := range def.Elements {
		if el.Path == rt+".extension" {
			return true
		}
	}
	return false
}

// ownerParam is the synthetic parameter OwnerParam of an ownable type.
func ownerParam(rt string) *r4.SearchParam {
	return &r4.SearchParam{
		Code:       OwnerParam,
		URL:        OwnerExtension,
		Type:       r4.ParamReference,
		Base:       []string{rt},
		Expression: rt + ".extension('" + OwnerExtension + "').value.ofType(Reference).where(resolve() is Patient)",
		Targets:    []string{"Patient"},
	}
}

// SecurityContextParam is the index code of Binary.securityContext, the
// resource whose access rules a Binary follows (records: binaryaccess.go).
// Like OwnerParam it is not a search parameter (R4 gives Binary none); its
// rows let a patient's exports find the Binaries that name their record
// without reading every Binary.
const SecurityContextParam = "_securityContext"

// securityContextParam is the synthetic parameter SecurityContextParam.
func securityContextParam() *r4.SearchParam {
	return &r4.SearchParam{
		Code:       SecurityContextParam,
		URL:        "http://hl7.org/fhir/StructureDefinition/Binary#Binary.securityContext",
		Type:       r4.ParamReference,
		Base:       []string{"Binary"},
		Expression: "Binary.securityContext",
	}
}

func newExtractor(rt string) *Extractor {
	x := &Extractor{resourceType: rt}
	all := r4.SearchParams(rt)
	codes := make([]string, 0, len(all))
	for c := range all {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	if Ownable(rt) {
		p, gaps := compileParam(rt, ownerParam(rt))
		if p == nil || len(gaps) > 0 {
			panic(fmt.Sprintf("index: the owner parameter of %s does not compile: %v", rt, gaps))
		}
		x.params = append(x.params, *p)
	}
	if rt == "Binary" {
		p, gaps := compileParam(rt, securityContextParam())
		if p == nil || len(gaps) > 0 {
			panic(fmt.Sprintf("index: the securityContext parameter of Binary does not compile: %v", gaps))
		}
		x.params = append(x.params, *p)
	}
	for _, code := range codes {
		sp := all[code]
		if expr, ok := expressionOverrides[sp.URL]; ok {
			o := *sp
			o.Expression = expr
			sp = &o
		}
		gap := Gap{Code: sp.Code, URL: sp.URL}
		switch {
		case sp.Type == r4.ParamSpecial:
			gap.Reason = "special parameters have search logic of their own"
		case sp.Expression == "":
			gap.Reason = "no expression: " + noExpressionReason(sp.Code)
		}
		if gap.Reason != "" {
			x.gaps = append(x.gaps, gap)
			continue
		}
		p, gaps := compileParam(rt, sp)
		x.gaps = append(x.gaps, gaps...)
		if p == nil {
			continue
		}
		x.supported = append(x.supported, sp)
		if !p.expr.Empty() && !FromResourceRow(sp.Code) {
			x.params = append(x.params, *p)
		}
	}
	x.aliases = findAliases(x.params)
	kept := x.params[:0]
	for _, p := range x.params {
		if _, ok := x.aliases[p.sp.Code]; ok {
			x.aliasParams = append(x.aliasParams, p)
		} else {
			kept = append(kept, p)
		}
	}
	x.params = kept
	x.presenceMasks()
	return x
}

// presenceMasks gives each parameter whose expression reads only some
// elements of the resource a mask of those elements, so that Append can
// skip it for resources that have none of them: most resources have a
// handful of a type's elements, and most parameters read one or two.
func (x *Extractor) presenceMasks() {
	// JSON member names of each element ("value" -> valueQuantity, ...)
	keys := map[string][]string{}
	if def := r4.LookupType(x.resourceType); def != nil {
		for _, el := range def.Elements {
			name, ok := strings.CutPrefix(el.Path, x.resourceType+".")
			if !ok || strings.IndexByte(name, '.') >= 0 {
				continue
			}
			if base, choice := strings.CutSuffix(name, "[x]"); choice {
				for _, t := range el.Types {
					k := base + strings.ToUpper(t[:1]) + t[1:]
					keys[base] = append(keys[base], k, "_"+k)
				}
				continue
			}
			keys[name] = append(keys[name], name, "_"+name)
		}
	}
	x.keyBits = map[string]uint64{}
	bitOf := map[string]uint64{}
	for i := range x.params {
		p := &x.params[i]
		names, ok := p.expr.InputMembers()
		if !ok || len(names) == 0 {
			continue
		}
		var mask uint64
		for _, n := range names {
			bit, seen := bitOf[n]
			if !seen {
				if len(bitOf) == 64 || len(keys[n]) == 0 {
					mask = 0 // out of bits, or an element the keys do not cover
					break
				}
				bit = 1 << len(bitOf)
				bitOf[n] = bit
				for _, k := range keys[n] {
					x.keyBits[k] |= bit
				}
			}
			mask |= bit
		}
		p.mask = mask
	}
}

func noExpressionReason(code string) string {
	switch code {
	case "_text":
		return "searches the narrative, which needs full-text search"
	case "_content":
		return "searches the whole resource text, which needs full-text search"
	case "_query":
		return "names a custom named query, not a value"
	}
	return "nothing to evaluate"
}

// compileParam compiles one parameter for a type and checks that every
// type of value its expression can yield has a normaliser.
func compileParam(rt string, sp *r4.SearchParam) (*param, []Gap) {
	gapOf := func(reason string) []Gap {
		return []Gap{{Code: sp.Code, URL: sp.URL, Reason: reason}}
	}
	e, err := fhirpath.CompileFor(sp.Expression, rt)
	if err != nil {
		return nil, gapOf(err.Error())
	}
	p := &param{sp: sp, expr: e}
	var gaps []Gap
	if sp.Type == r4.ParamComposite {
		if len(sp.Components) == 0 {
			return nil, gapOf("composite without components")
		}
		for _, c := range sp.Components {
			def := r4.SearchParamByURL(c.Definition)
			if def == nil {
				return nil, gapOf("component definition " + c.Definition + " is not a standard parameter")
			}
			ce, err := fhirpath.CompileRelative(c.Expression, e)
			if err != nil {
				return nil, gapOf("component " + c.Expression + ": " + err.Error())
			}
			p.comps = append(p.comps, component{typ: def.Type, expr: ce})
		}
		fixSwappedComponents(p.comps)
		for _, c := range p.comps {
			if g := typeGap(sp, c.typ, c.expr); g != nil {
				gaps = append(gaps, *g)
			}
		}
		return p, gaps
	}
	if g := typeGap(sp, sp.Type, e); g != nil {
		gaps = append(gaps, *g)
	}
	return p, gaps
}

// fixSwappedComponents corrects composites of two components whose
// definitions are given in the wrong order, as R4 does for
// DocumentReference-relationship (its "code" component points at the
// relatesto reference parameter and "target" at the relation token one):
// when neither component's values fit its definition's type but each fits
// the other's, the types are swapped. Search values are written in the
// components' order (relationship=replaces$DocumentReference/1), so the
// expressions keep theirs.
func fixSwappedComponents(cs []component) {
	if len(cs) != 2 {
		return
	}
	fits := func(e *fhirpath.Expr, pt r4.ParamType) bool {
		types, known := e.ResultTypes()
		if !known {
			return true
		}
		for _, t := range types {
			if kindOf(pt, t) == vNone {
				return false
			}
		}
		return true
	}
	a, b := cs[0], cs[1]
	if !fits(a.expr, a.typ) && !fits(b.expr, b.typ) && fits(a.expr, b.typ) && fits(b.expr, a.typ) {
		cs[0].typ, cs[1].typ = b.typ, a.typ
	}
}

// typeGap reports the result types of e that values of type pt cannot be
// made from.
func typeGap(sp *r4.SearchParam, pt r4.ParamType, e *fhirpath.Expr) *Gap {
	types, known := e.ResultTypes()
	if !known {
		return nil
	}
	var bad []string
	for _, t := range types {
		if kindOf(pt, t) == vNone {
			bad = append(bad, t)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	return &Gap{Code: sp.Code, URL: sp.URL, Partial: true, Types: bad, Reason: skipReason(pt, bad)}
}

func skipReason(pt r4.ParamType, types []string) string {
	switch {
	case pt == r4.ParamDate:
		return "ages, ranges of ages and free text are not points in time"
	case pt == r4.ParamQuantity && len(types) == 1 && types[0] == "SampledData":
		return "sampled data is a series of values, not one quantity"
	}
	return fmt.Sprintf("no %s value can be made from %s", pt, strings.Join(types, ", "))
}

// valueKind is how a value is normalised.
type valueKind uint8

const (
	vNone valueKind = iota
	vText
	vBool
	vNumber
	vDate
	vCoding
	vCodeableConcept
	vIdentifier
	vContactPoint
	vHumanName
	vAddress
	vPeriod
	vTiming
	vReference
	vAttachment
	vResource
	vQuantity
	vMoney
	vRange
)

// kindOf says how a value of FHIR (or system) type t is indexed by a
// parameter of type pt; vNone when it cannot be.
func kindOf(pt r4.ParamType, t string) valueKind {
	switch t {
	case "string", "markdown", "System.String":
		if pt == r4.ParamToken || pt == r4.ParamString {
			return vText
		}
	case "code", "id":
		if pt == r4.ParamToken {
			return vText
		}
	case "uri", "url", "canonical", "oid", "uuid":
		switch pt {
		case r4.ParamToken, r4.ParamReference, r4.ParamURI:
			return vText
		}
	case "boolean", "System.Boolean":
		if pt == r4.ParamToken {
			return vBool
		}
	case "decimal", "integer", "positiveInt", "unsignedInt", "System.Decimal", "System.Integer":
		if pt == r4.ParamNumber {
			return vNumber
		}
	case "date", "dateTime", "instant", "System.Date", "System.DateTime":
		if pt == r4.ParamDate {
			return vDate
		}
	case "Coding":
		if pt == r4.ParamToken {
			return vCoding
		}
	case "CodeableConcept":
		if pt == r4.ParamToken {
			return vCodeableConcept
		}
	case "Identifier":
		if pt == r4.ParamToken {
			return vIdentifier
		}
	case "ContactPoint":
		if pt == r4.ParamToken {
			return vContactPoint
		}
	case "HumanName":
		if pt == r4.ParamString {
			return vHumanName
		}
	case "Address":
		if pt == r4.ParamString {
			return vAddress
		}
	case "Period":
		if pt == r4.ParamDate {
			return vPeriod
		}
	case "Timing":
		if pt == r4.ParamDate {
			return vTiming
		}
	case "Reference":
		if pt == r4.ParamReference {
			return vReference
		}
	case "Attachment":
		if pt == r4.ParamReference {
			return vAttachment
		}
	case "Quantity", "Age", "Duration", "Distance", "Count", "SimpleQuantity", "MoneyQuantity":
		if pt == r4.ParamQuantity {
			return vQuantity
		}
	case "Money":
		if pt == r4.ParamQuantity {
			return vMoney
		}
	case "Range":
		if pt == r4.ParamQuantity || pt == r4.ParamNumber {
			return vRange
		}
	default:
		if pt == r4.ParamReference && r4.IsResourceType(t) {
			return vResource
		}
	}
	return vNone
}

var evaluators = sync.Pool{New: func() any { return new(state) }}

// state is the scratch space of one extraction.
type state struct {
	ev    fhirpath.Evaluator
	nodes []fhirpath.Node
	sub   []fhirpath.Node
	tmp   Entries
	parts [][]CompositePart
	errs  []error
	root  *fhirjson.Value
}

// Append extracts the index entries of res, a resource of the extractor's
// type, and appends them to e (which may be reused across calls after
// Reset). See Extract for errors.
func (x *Extractor) Append(e *Entries, res *fhirjson.Value) error {
	return x.appendParams(e, res, x.params)
}

// appendParams is Append over the given parameters of the type.
func (x *Extractor) appendParams(e *Entries, res *fhirjson.Value, params []param) error {
	root, err := fhirpath.Resource(res)
	if err != nil {
		return fmt.Errorf("index: %w", err)
	}
	if root.Type() != x.resourceType {
		return fmt.Errorf("index: a %s resource given to the %s extractor", root.Type(), x.resourceType)
	}
	st := evaluators.Get().(*state)
	defer evaluators.Put(st)
	st.errs = st.errs[:0]
	st.root = res
	defer func() { st.root = nil }()
	b := builder{e: e, st: st}
	var present uint64
	for _, f := range res.Fields {
		present |= x.keyBits[f.Name]
	}
	for i := range params {
		p := &params[i]
		if p.mask != 0 && p.mask&present == 0 {
			continue
		}
		b.start(p.sp.Code)
		st.nodes, err = st.ev.Eval(p.expr, st.nodes[:0], root, root)
		if err != nil {
			st.errs = append(st.errs, fmt.Errorf("parameter %s: %w", p.sp.Code, err))
			continue
		}
		if p.sp.Type == r4.ParamComposite {
			b.composite(p, root, st.nodes)
			continue
		}
		for _, n := range st.nodes {
			b.add(p.sp.Type, n)
		}
	}
	clear(st.nodes)
	clear(st.sub)
	if len(st.errs) > 0 {
		err := errors.Join(st.errs...)
		st.errs = st.errs[:0]
		return fmt.Errorf("index: %s/%s: %w", x.resourceType, res.GetString("id"), err)
	}
	return nil
}

// Reset empties e, keeping its storage for reuse: entries read from e
// before (including what composite parts point at) are overwritten by the
// next extraction into it.
func (e *Entries) Reset() {
	e.pTokens = e.pTokens[:0]
	e.pStrings = e.pStrings[:0]
	e.pDates = e.pDates[:0]
	e.pRefs = e.pRefs[:0]
	e.pQuantities = e.pQuantities[:0]
	e.pNumbers = e.pNumbers[:0]
	e.pURIs = e.pURIs[:0]
	e.pParts = e.pParts[:0]
	e.Tokens = e.Tokens[:0]
	e.Strings = e.Strings[:0]
	e.Dates = e.Dates[:0]
	e.Refs = e.Refs[:0]
	e.Quantities = e.Quantities[:0]
	e.Numbers = e.Numbers[:0]
	e.URIs = e.URIs[:0]
	e.Composites = e.Composites[:0]
}
