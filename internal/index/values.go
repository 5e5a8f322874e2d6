package index

import (
	"fmt"
	"math"
	"strings"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/fhirpath"
	"github.com/phr-project/phr/internal/r4"
)

// builder turns the values one parameter's expression yields into
// entries.
type builder struct {
	e     *Entries
	st    *state
	param string
	// where the current parameter's tokens and strings start, for
	// dropping repeats
	tokStart, strStart int
}

func (b *builder) start(code string) {
	b.param = code
	b.tokStart = len(b.e.Tokens)
	b.strStart = len(b.e.Strings)
}

func (b *builder) errorf(format string, args ...any) {
	b.st.errs = append(b.st.errs, fmt.Errorf("parameter "+b.param+": "+format, args...))
}

// add normalises one value into the entries of parameter type pt.
func (b *builder) add(pt r4.ParamType, n fhirpath.Node) {
	v := n.Value
	if v == nil {
		return // a primitive with only extensions, or a resource known by reference only
	}
	k := kindOf(pt, n.Type())
	if !shapeOK(k, v) {
		b.errorf("a %s value is a JSON %s", n.Type(), v.Kind)
		return
	}
	switch pt {
	case r4.ParamToken:
		b.token(k, v)
	case r4.ParamString:
		b.string(k, v)
	case r4.ParamDate:
		b.date(k, v)
	case r4.ParamReference:
		b.reference(k, n)
	case r4.ParamQuantity:
		b.quantity(k, v)
	case r4.ParamNumber:
		b.number(k, v)
	case r4.ParamURI:
		if k == vText {
			b.e.URIs = append(b.e.URIs, URI{Param: b.param, Value: v.Str})
		}
	}
}

// shapeOK checks the JSON kind a value of kind k must have.
func shapeOK(k valueKind, v *fhirjson.Value) bool {
	switch k {
	case vNone:
		return true
	case vText, vDate:
		return v.Kind == fhirjson.String
	case vBool:
		return v.Kind == fhirjson.Bool
	case vNumber:
		return v.Kind == fhirjson.Number
	}
	return v.Kind == fhirjson.Object
}

func (b *builder) addToken(t Token) {
	if t.System == "" && t.Code == "" && t.Text == "" && t.TypeCode == "" {
		return
	}
	t.Param = b.param
	for _, x := range b.e.Tokens[b.tokStart:] {
		if x == t {
			return
		}
	}
	b.e.Tokens = append(b.e.Tokens, t)
}

func (b *builder) token(k valueKind, v *fhirjson.Value) {
	switch k {
	case vText:
		b.addToken(Token{Code: v.Str})
	case vBool:
		if v.Bool {
			b.addToken(Token{Code: "true"})
		} else {
			b.addToken(Token{Code: "false"})
		}
	case vCoding:
		b.coding(v)
	case vCodeableConcept:
		first := len(b.e.Tokens)
		if list := v.Get("coding"); list != nil && list.Kind == fhirjson.Array {
			for _, c := range list.Items {
				b.coding(c)
			}
		}
		if text := v.GetString("text"); text != "" {
			// a text that repeats a coding's display adds nothing
			norm := NormalizeString(text)
			for _, x := range b.e.Tokens[first:] {
				if x.Text == norm {
					return
				}
			}
			b.addToken(Token{Text: norm})
		}
	case vIdentifier:
		t := Token{System: v.GetString("system"), Code: v.GetString("value")}
		typ := v.Get("type")
		if typ == nil {
			b.addToken(t)
			return
		}
		t.Text = NormalizeString(typ.GetString("text"))
		added := false
		if list := typ.Get("coding"); list != nil && list.Kind == fhirjson.Array {
			for _, c := range list.Items {
				tc := t
				tc.TypeSystem, tc.TypeCode = c.GetString("system"), c.GetString("code")
				b.addToken(tc)
				added = true
			}
		}
		if !added {
			b.addToken(t)
		}
	case vContactPoint:
		// As other servers do: the contact point's system (phone, email)
		// as the token's system, so email=x and phone=y can be told apart.
		b.addToken(Token{System: v.GetString("system"), Code: v.GetString("value")})
	}
}

func (b *builder) coding(c *fhirjson.Value) {
	if c.Kind != fhirjson.Object {
		return
	}
	var t Token
	var display string
	for i := range c.Fields {
		f := &c.Fields[i]
		if f.Value.Kind != fhirjson.String {
			continue
		}
		switch f.Name {
		case "system":
			t.System = f.Value.Str
		case "code":
			t.Code = f.Value.Str
		case "display":
			display = f.Value.Str
		}
	}
	t.Text = NormalizeString(display)
	b.addToken(t)
}

func (b *builder) addString(s string) {
	if s == "" {
		return
	}
	for _, x := range b.e.Strings[b.strStart:] {
		if x.Exact == s {
			return
		}
	}
	b.e.Strings = append(b.e.Strings, String{Param: b.param, Norm: NormalizeString(s), Exact: s})
}

// addStrings adds the string member name of v, or each string of it when
// it is an array.
func (b *builder) addStrings(v *fhirjson.Value, name string) {
	m := v.Get(name)
	if m == nil {
		return
	}
	if m.Kind == fhirjson.String {
		b.addString(m.Str)
		return
	}
	if m.Kind == fhirjson.Array {
		for _, it := range m.Items {
			if it.Kind == fhirjson.String {
				b.addString(it.Str)
			}
		}
	}
}

func (b *builder) string(k valueKind, v *fhirjson.Value) {
	switch k {
	case vText:
		b.addString(v.Str)
	case vHumanName:
		for _, part := range [...]string{"family", "given", "prefix", "suffix", "text"} {
			b.addStrings(v, part)
		}
		if v.GetString("text") == "" {
			b.addString(wholeName(v))
		}
	case vAddress:
		for _, part := range [...]string{"line", "city", "district", "state", "postalCode", "country", "text"} {
			b.addStrings(v, part)
		}
	}
}

// wholeName is a HumanName written out: prefixes, given names, family
// name, suffixes.
func wholeName(v *fhirjson.Value) string {
	var sb strings.Builder
	add := func(name string) {
		m := v.Get(name)
		if m == nil {
			return
		}
		var items []*fhirjson.Value
		switch m.Kind {
		case fhirjson.String:
			items = []*fhirjson.Value{m}
		case fhirjson.Array:
			items = m.Items
		}
		for _, it := range items {
			if it.Kind == fhirjson.String && it.Str != "" {
				if sb.Len() > 0 {
					sb.WriteByte(' ')
				}
				sb.WriteString(it.Str)
			}
		}
	}
	add("prefix")
	add("given")
	add("family")
	add("suffix")
	return sb.String()
}

func (b *builder) date(k valueKind, v *fhirjson.Value) {
	switch k {
	case vDate:
		low, high, err := DateRange(v.Str)
		if err != nil {
			b.errorf("%w", err)
			return
		}
		b.e.Dates = append(b.e.Dates, Date{Param: b.param, Low: low, High: high})
	case vPeriod:
		low, high, ok := b.period(v)
		if ok {
			b.e.Dates = append(b.e.Dates, Date{Param: b.param, Low: low, High: high})
		}
	case vTiming:
		// A timing covers its events and its bounding period.
		low, high, any := int64(math.MaxInt64), int64(math.MinInt64), false
		if ev := v.Get("event"); ev != nil && ev.Kind == fhirjson.Array {
			for _, e := range ev.Items {
				if e.Kind != fhirjson.String {
					continue
				}
				l, h, err := DateRange(e.Str)
				if err != nil {
					b.errorf("%w", err)
					continue
				}
				low, high, any = min(low, l), max(high, h), true
			}
		}
		if rep := v.Get("repeat"); rep != nil {
			if bp := rep.Get("boundsPeriod"); bp != nil {
				if l, h, ok := b.period(bp); ok {
					low, high, any = min(low, l), max(high, h), true
				}
			}
		}
		if any {
			b.e.Dates = append(b.e.Dates, Date{Param: b.param, Low: low, High: high})
		}
	}
}

// period returns the instants a Period covers; a missing end is open.
func (b *builder) period(v *fhirjson.Value) (low, high int64, ok bool) {
	start, end := v.GetString("start"), v.GetString("end")
	if start == "" && end == "" {
		return 0, 0, false
	}
	low, high = math.MinInt64, math.MaxInt64
	if start != "" {
		l, _, err := DateRange(start)
		if err != nil {
			b.errorf("Period.start: %w", err)
			return 0, 0, false
		}
		low = l
	}
	if end != "" {
		_, h, err := DateRange(end)
		if err != nil {
			b.errorf("Period.end: %w", err)
			return 0, 0, false
		}
		high = h
	}
	if high < low {
		b.errorf("Period ends (%s) before it starts (%s)", end, start)
		return 0, 0, false
	}
	return low, high, true
}

func (b *builder) reference(k valueKind, n fhirpath.Node) {
	v := n.Value
	r := Ref{Param: b.param}
	switch k {
	case vReference:
		var ref, typ string
		var id *fhirjson.Value
		for i := range v.Fields {
			f := &v.Fields[i]
			switch f.Name {
			case "reference":
				if f.Value.Kind == fhirjson.String {
					ref = f.Value.Str
				}
			case "type":
				if f.Value.Kind == fhirjson.String {
					typ = f.Value.Str
				}
			case "identifier":
				id = f.Value
			}
		}
		if ref != "" {
			parseReference(ref, &r)
			if ref[0] == '#' {
				r.Type = b.containedType(ref[1:])
			}
		}
		if r.Type == "" {
			r.Type = typ
		}
		if id != nil {
			r.IdentifierSystem, r.IdentifierValue = id.GetString("system"), id.GetString("value")
		}
	case vText: // canonical, uri, url
		url, version, _ := strings.Cut(v.Str, "|")
		if url == "" {
			return
		}
		parseReference(url, &r)
		if r.URL == "" {
			// written relative ("Library/x"), as some canonicals are
			r.URL = url
		}
		r.Version = version
	case vAttachment:
		r.URL = v.GetString("url")
	case vResource:
		r.Type, r.ID = n.Type(), v.GetString("id")
		if r.ID == "" {
			return
		}
	default:
		return
	}
	if r.Type == "" && r.ID == "" && r.URL == "" && r.IdentifierValue == "" {
		return
	}
	b.e.Refs = append(b.e.Refs, r)
}

// containedType returns the resource type of the contained resource with
// the given id, or "".
func (b *builder) containedType(id string) string {
	list := b.st.root.Get("contained")
	if list == nil || list.Kind != fhirjson.Array {
		return ""
	}
	for _, c := range list.Items {
		if c.GetString("id") == id {
			return c.GetString("resourceType")
		}
	}
	return ""
}

// parseReference fills r from a Reference.reference text. Relative
// references ("Patient/1", "Patient/1/_history/2") give Type, ID and
// Version; everything else is kept as written in URL - absolute URLs
// (with the Type they name, for the :Type modifier), urn:uuid and urn:oid
// references, contained references ("#id"), and conditional references
// ("Patient?identifier=...") left unresolved by whoever wrote them.
func parseReference(ref string, r *Ref) {
	if strings.IndexByte(ref, ':') < 0 && strings.IndexByte(ref, '?') < 0 && ref[0] != '#' {
		typ, rest, ok := strings.Cut(ref, "/")
		if ok && r4.IsResourceType(typ) {
			id, hist, versioned := strings.Cut(rest, "/_history/")
			if id != "" && strings.IndexByte(id, '/') < 0 && (!versioned || hist != "" && strings.IndexByte(hist, '/') < 0) {
				r.Type, r.ID, r.Version = typ, id, hist
				return
			}
		}
	}
	r.URL = ref
	r.Type = fhirpath.ReferenceType(ref)
}

// decimal parses the "value" member of v; ok is false if there is none.
func (b *builder) decimal(v *fhirjson.Value, what string) (text string, value, low, high float64, ok bool) {
	m := v.Get("value")
	if m == nil {
		return "", 0, 0, 0, false
	}
	if m.Kind != fhirjson.Number {
		b.errorf("%s.value is a JSON %s, not a number", what, m.Kind)
		return "", 0, 0, 0, false
	}
	value, low, high, err := DecimalRange(m.Str)
	if err != nil {
		b.errorf("%s.value: %w", what, err)
		return "", 0, 0, 0, false
	}
	return m.Str, value, low, high, true
}

func (b *builder) quantity(k valueKind, v *fhirjson.Value) {
	switch k {
	case vQuantity:
		text, value, low, high, ok := b.decimal(v, "Quantity")
		if !ok {
			return
		}
		// a comparator makes the value a bound, open on the other side
		switch v.GetString("comparator") {
		case "<", "<=":
			low = math.Inf(-1)
		case ">", ">=":
			high = math.Inf(1)
		}
		b.e.Quantities = append(b.e.Quantities, Quantity{Param: b.param, Value: value, Low: low, High: high, Text: text,
			System: v.GetString("system"), Code: v.GetString("code"), Unit: v.GetString("unit")})
	case vMoney:
		text, value, low, high, ok := b.decimal(v, "Money")
		if !ok {
			return
		}
		cur := v.GetString("currency")
		b.e.Quantities = append(b.e.Quantities, Quantity{Param: b.param, Value: value, Low: low, High: high, Text: text,
			System: "urn:iso:std:iso:4217", Code: cur, Unit: cur})
	case vRange:
		q, ok := b.rangeQuantity(v)
		if ok {
			b.e.Quantities = append(b.e.Quantities, q)
		}
	}
}

// rangeQuantity turns a Range into one quantity entry covering it: from
// the low bound's range to the high bound's, open where a bound is
// missing; Value is the low value (the high one if there is no low), Text
// is empty, and the units are the low bound's (else the high's).
func (b *builder) rangeQuantity(v *fhirjson.Value) (Quantity, bool) {
	q := Quantity{Param: b.param, Low: math.Inf(-1), High: math.Inf(1)}
	lo, hi := v.Get("low"), v.Get("high")
	found := false
	if hi != nil && hi.Kind == fhirjson.Object {
		if _, value, _, high, ok := b.decimal(hi, "Range.high"); ok {
			q.Value, q.High, found = value, high, true
			q.System, q.Code, q.Unit = hi.GetString("system"), hi.GetString("code"), hi.GetString("unit")
		}
	}
	if lo != nil && lo.Kind == fhirjson.Object {
		if _, value, low, _, ok := b.decimal(lo, "Range.low"); ok {
			q.Value, q.Low, found = value, low, true
			q.System, q.Code, q.Unit = lo.GetString("system"), lo.GetString("code"), lo.GetString("unit")
		}
	}
	return q, found
}

func (b *builder) number(k valueKind, v *fhirjson.Value) {
	switch k {
	case vNumber:
		value, low, high, err := DecimalRange(v.Str)
		if err != nil {
			b.errorf("%w", err)
			return
		}
		b.e.Numbers = append(b.e.Numbers, Number{Param: b.param, Value: value, Low: low, High: high, Text: v.Str})
	case vRange:
		if q, ok := b.rangeQuantity(v); ok {
			b.e.Numbers = append(b.e.Numbers, Number{Param: b.param, Value: q.Value, Low: q.Low, High: q.High})
		}
	}
}

// composite builds the entries of a composite parameter: for each element
// its base expression yields, the component values found on that element,
// one entry per combination.
func (b *builder) composite(p *param, root fhirpath.Node, bases []fhirpath.Node) {
	st := b.st
	for len(st.parts) < len(p.comps) {
		st.parts = append(st.parts, nil)
	}
	for _, base := range bases {
		n := 0
		for i, c := range p.comps {
			var err error
			st.sub, err = st.ev.Eval(c.expr, st.sub[:0], root, base)
			if err != nil {
				b.errorf("%w", err)
				return
			}
			st.tmp.Reset()
			tb := builder{e: &st.tmp, st: st}
			tb.start(b.param)
			for _, n := range st.sub {
				tb.add(c.typ, n)
			}
			st.parts[i] = b.e.compositeParts(st.parts[i][:0], &st.tmp)
			if len(st.parts[i]) == 0 {
				break // no combination without this component
			}
			n++
		}
		if n == len(p.comps) {
			b.combine(st.parts[:n])
		}
	}
}

// compositeParts appends to ps one part per entry of src, copying the
// values into e's part storage.
func (e *Entries) compositeParts(ps []CompositePart, src *Entries) []CompositePart {
	for _, t := range src.Tokens {
		if t.System == "" && t.Code == "" {
			continue // text only: composite values are matched by code
		}
		e.pTokens = append(e.pTokens, t)
		ps = append(ps, CompositePart{Token: &e.pTokens[len(e.pTokens)-1]})
	}
	for _, x := range src.Strings {
		e.pStrings = append(e.pStrings, x)
		ps = append(ps, CompositePart{String: &e.pStrings[len(e.pStrings)-1]})
	}
	for _, x := range src.Dates {
		e.pDates = append(e.pDates, x)
		ps = append(ps, CompositePart{Date: &e.pDates[len(e.pDates)-1]})
	}
	for _, x := range src.Refs {
		e.pRefs = append(e.pRefs, x)
		ps = append(ps, CompositePart{Ref: &e.pRefs[len(e.pRefs)-1]})
	}
	for _, x := range src.Quantities {
		e.pQuantities = append(e.pQuantities, x)
		ps = append(ps, CompositePart{Quantity: &e.pQuantities[len(e.pQuantities)-1]})
	}
	for _, x := range src.Numbers {
		e.pNumbers = append(e.pNumbers, x)
		ps = append(ps, CompositePart{Number: &e.pNumbers[len(e.pNumbers)-1]})
	}
	for _, x := range src.URIs {
		e.pURIs = append(e.pURIs, x)
		ps = append(ps, CompositePart{URI: &e.pURIs[len(e.pURIs)-1]})
	}
	return ps
}

// combine appends one composite entry per combination of one part from
// each component.
func (b *builder) combine(parts [][]CompositePart) {
	var idx [8]int
	if len(parts) > len(idx) {
		b.errorf("more than %d components", len(idx))
		return
	}
	e := b.e
	for {
		start := len(e.pParts)
		for i, p := range parts {
			e.pParts = append(e.pParts, p[idx[i]])
		}
		e.Composites = append(e.Composites, Composite{Param: b.param, Parts: e.pParts[start:len(e.pParts):len(e.pParts)]})
		i := len(parts) - 1
		for ; i >= 0; i-- {
			idx[i]++
			if idx[i] < len(parts[i]) {
				break
			}
			idx[i] = 0
		}
		if i < 0 {
			return
		}
	}
}
