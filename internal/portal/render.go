package portal

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"html/template"
	"net/url"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/phr-project/phr/internal/fhir"
)

var funcs = template.FuncMap{
	"date":     fmtDate,
	"codeText": func(v any) string { return codeText(v) },
	"name":     func(v any) string { return humanName(v) },
	"qty":      func(v any) string { return quantity(v) },
	"str":      func(o obj, path ...any) string { return o.str(path...) },
	"link":     resourceLink,
	"join":     strings.Join,
	"add":      func(a, b int) int { return a + b },
	"source":   sourceName,
}

// sourceName shows an import source readably: the importer's
// urn:phr:source:<label> URIs as their label, other URIs as they are.
func sourceName(s string) string {
	if rest, ok := strings.CutPrefix(s, "urn:phr:source:"); ok {
		if l, err := url.PathUnescape(rest); err == nil {
			return l
		}
		return rest
	}
	return s
}

// fmtDate shortens a FHIR date or dateTime for display: the date, and the
// time of day (in its own offset) when there is one.
func fmtDate(s string) string {
	if len(s) <= 10 {
		return s
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return s
	}
	return t.Format("2006-01-02 15:04")
}

// parseFHIRTime parses a FHIR date, dateTime or instant (partial dates to
// their first instant, in UTC when no offset is given).
func parseFHIRTime(s string) (time.Time, bool) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02", "2006-01", "2006"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// codeText is the best human text of a CodeableConcept or Coding.
func codeText(v any) string {
	m, ok := asMap(v)
	if !ok {
		if l, ok := v.([]any); ok && len(l) > 0 {
			return codeText(l[0])
		}
		if s, ok := v.(string); ok {
			return s
		}
		return ""
	}
	o := obj(m)
	if t := o.str("text"); t != "" {
		return t
	}
	if d := o.str("display"); d != "" {
		return d
	}
	for _, c := range o.list("coding") {
		if d := c.str("display"); d != "" {
			return d
		}
	}
	if c := o.str("code"); c != "" {
		return c
	}
	return o.str("coding", 0, "code")
}

// humanName formats the first (official or usual) HumanName of a list.
func humanName(v any) string {
	l, ok := v.([]any)
	if !ok {
		if m, ok := asMap(v); ok {
			l = []any{m}
		}
	}
	var pick obj
	for _, n := range l {
		m, ok := asMap(n)
		if !ok {
			continue
		}
		o := obj(m)
		if pick == nil || o.str("use") == "official" {
			pick = o
		}
	}
	if pick == nil {
		return ""
	}
	if t := pick.str("text"); t != "" {
		return t
	}
	var parts []string
	for _, g := range asStrings(pick.get("given")) {
		parts = append(parts, g)
	}
	if f := pick.str("family"); f != "" {
		parts = append(parts, f)
	}
	return strings.Join(parts, " ")
}

func asStrings(v any) []string {
	l, _ := v.([]any)
	var out []string
	for _, x := range l {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// quantity formats a Quantity with its exact value text.
func quantity(v any) string {
	m, ok := asMap(v)
	if !ok {
		return ""
	}
	o := obj(m)
	s := o.str("comparator") + o.str("value")
	u := o.str("unit")
	if u == "" {
		u = o.str("code")
	}
	if u != "" {
		s += " " + u
	}
	return s
}

// resourceLink is the portal URL of a resource reference, "" when the
// reference is not a local Type/id.
func resourceLink(pid, ref string) string {
	r, ok := fhir.ParseReference(ref)
	if !ok || r.Type == "" || r.ID == "" || strings.Contains(ref, "://") {
		return ""
	}
	u := "/p/" + url.PathEscape(pid) + "/r/" + url.PathEscape(r.Type) + "/" + url.PathEscape(r.ID)
	if r.Version != "" {
		u += "?v=" + url.QueryEscape(r.Version)
	}
	return u
}

// label turns a FHIR element name into words: "onsetDateTime" -> "Onset date time".
func label(k string) string {
	var b strings.Builder
	for i, r := range k {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte(' ')
			r = unicode.ToLower(r)
		}
		if i == 0 {
			r = unicode.ToUpper(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// readable renders a resource as nested definition lists, with the common
// data types (CodeableConcept, Quantity, Reference, Period, HumanName,
// Address) shown as text. Narrative XHTML is not rendered (it is not ours
// to trust); the raw JSON shows it.
func readable(pid string, res obj) template.HTML {
	var b strings.Builder
	writeFields(&b, pid, map[string]any(res), true)
	return template.HTML(b.String())
}

var skipTop = map[string]bool{"resourceType": true, "id": true, "meta": true, "text": true, "contained": false}

func writeFields(b *strings.Builder, pid string, m map[string]any, top bool) {
	keys := make([]string, 0, len(m))
	for k := range m {
		if top && skipTop[k] {
			continue
		}
		if strings.HasPrefix(k, "_") {
			continue
		}
		keys = append(keys, k)
	}
	sort.SliceStable(keys, func(i, j int) bool { return fieldRank(keys[i]) < fieldRank(keys[j]) })
	b.WriteString(`<dl class="fields">`)
	for _, k := range keys {
		b.WriteString("<dt>")
		b.WriteString(html.EscapeString(label(k)))
		b.WriteString("</dt><dd>")
		writeValue(b, pid, k, m[k])
		b.WriteString("</dd>")
	}
	b.WriteString("</dl>")
}

// fieldRank puts the fields people look for first.
func fieldRank(k string) int {
	switch k {
	case "code", "status", "clinicalStatus", "verificationStatus", "category", "name", "vaccineCode", "medicationCodeableConcept", "type":
		return 0
	case "subject", "patient", "encounter":
		return 2
	}
	if strings.HasPrefix(k, "value") || strings.HasPrefix(k, "effective") || strings.HasPrefix(k, "onset") || strings.HasPrefix(k, "occurrence") || strings.HasPrefix(k, "performed") || k == "period" || k == "authoredOn" || k == "issued" {
		return 1
	}
	return 3
}

func writeValue(b *strings.Builder, pid, key string, v any) {
	switch x := v.(type) {
	case []any:
		if len(x) == 1 {
			writeValue(b, pid, key, x[0])
			return
		}
		b.WriteString(`<ul class="vals">`)
		for _, e := range x {
			b.WriteString("<li>")
			writeValue(b, pid, key, e)
			b.WriteString("</li>")
		}
		b.WriteString("</ul>")
	case map[string]any:
		o := obj(x)
		switch {
		case key == "text" && o.str("div") != "":
			b.WriteString(`<span class="muted">narrative (see the raw JSON)</span>`)
		case o.get("reference") != nil:
			ref := o.str("reference")
			disp := o.str("display")
			if disp == "" {
				disp = ref
			}
			if l := resourceLink(pid, ref); l != "" {
				fmt.Fprintf(b, `<a href="%s">%s</a>`, html.EscapeString(l), html.EscapeString(disp))
			} else {
				b.WriteString(html.EscapeString(disp))
			}
		case o.get("coding") != nil || (len(x) == 1 && o.str("text") != ""):
			b.WriteString(html.EscapeString(codeText(x)))
			var codes []string
			for _, c := range o.list("coding") {
				if c.str("code") != "" {
					codes = append(codes, systemShort(c.str("system"))+" "+c.str("code"))
				}
			}
			if len(codes) > 0 {
				fmt.Fprintf(b, ` <span class="code">(%s)</span>`, html.EscapeString(strings.Join(codes, ", ")))
			}
		case o.get("system") != nil && o.get("code") != nil && o.get("value") == nil:
			fmt.Fprintf(b, `%s <span class="code">(%s %s)</span>`, html.EscapeString(codeText(x)), html.EscapeString(systemShort(o.str("system"))), html.EscapeString(o.str("code")))
		case o.get("value") != nil && (o.get("unit") != nil || o.get("code") != nil) && len(x) <= 5:
			b.WriteString(html.EscapeString(quantity(x)))
		case (o.get("start") != nil || o.get("end") != nil) && len(x) <= 2:
			fmt.Fprintf(b, "%s – %s", html.EscapeString(fmtDate(o.str("start"))), html.EscapeString(fmtDate(o.str("end"))))
		case (o.get("family") != nil || o.get("given") != nil) && key == "name":
			b.WriteString(html.EscapeString(humanName(x)))
		case o.get("line") != nil || o.get("city") != nil:
			parts := asStrings(o.get("line"))
			for _, k := range []string{"city", "state", "postalCode", "country"} {
				if s := o.str(k); s != "" {
					parts = append(parts, s)
				}
			}
			b.WriteString(html.EscapeString(strings.Join(parts, ", ")))
		case o.get("url") != nil && len(x) <= 3 && key == "extension":
			fmt.Fprintf(b, `<span class="code">%s</span>: `, html.EscapeString(lastSegment(o.str("url"))))
			for k, vv := range x {
				if strings.HasPrefix(k, "value") {
					writeValue(b, pid, k, vv)
				}
			}
		default:
			writeFields(b, pid, x, false)
		}
	case string:
		if strings.HasPrefix(key, "effective") || strings.HasSuffix(strings.ToLower(key), "date") || strings.HasSuffix(key, "DateTime") || key == "issued" || key == "authoredOn" || key == "recordedDate" || key == "birthDate" {
			b.WriteString(html.EscapeString(fmtDate(x)))
			return
		}
		if len(x) > 300 {
			x = x[:300] + "…"
		}
		b.WriteString(html.EscapeString(x))
	case json.Number:
		b.WriteString(html.EscapeString(x.String()))
	case bool:
		if x {
			b.WriteString("yes")
		} else {
			b.WriteString("no")
		}
	}
}

func lastSegment(u string) string {
	if i := strings.LastIndexAny(u, "/#"); i >= 0 {
		return u[i+1:]
	}
	return u
}

// systemShort names well-known code systems briefly.
func systemShort(s string) string {
	switch s {
	case "http://loinc.org":
		return "LOINC"
	case "http://snomed.info/sct":
		return "SNOMED"
	case "http://www.nlm.nih.gov/research/umls/rxnorm":
		return "RxNorm"
	case "http://hl7.org/fhir/sid/cvx":
		return "CVX"
	case "http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/icd-10":
		return "ICD-10"
	}
	return lastSegment(s)
}

// pretty indents JSON without touching its numbers.
func pretty(b []byte) string {
	var buf bytes.Buffer
	if json.Indent(&buf, b, "", "  ") != nil {
		return string(b)
	}
	return buf.String()
}

// change is one line of a diff between two versions.
type change struct {
	Path     string
	Old, New string
	// Kind is "added", "removed" or "changed".
	Kind string
}

// diffJSON compares two resources element by element (by JSON path).
func diffJSON(a, b obj) []change {
	fa, fb := map[string]string{}, map[string]string{}
	var order []string
	seen := map[string]bool{}
	flatten("", map[string]any(a), fa, &order, seen)
	flatten("", map[string]any(b), fb, &order, seen)
	var out []change
	for _, p := range order {
		va, ina := fa[p]
		vb, inb := fb[p]
		switch {
		case ina && !inb:
			out = append(out, change{Path: p, Old: va, Kind: "removed"})
		case !ina && inb:
			out = append(out, change{Path: p, New: vb, Kind: "added"})
		case va != vb:
			out = append(out, change{Path: p, Old: va, New: vb, Kind: "changed"})
		}
	}
	return out
}

// flatten writes the leaf values of v under FHIRPath-like paths, keeping
// the order paths are first seen in.
func flatten(prefix string, v any, out map[string]string, order *[]string, seen map[string]bool) {
	add := func(p, s string) {
		out[p] = s
		if !seen[p] {
			seen[p] = true
			*order = append(*order, p)
		}
	}
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			flatten(p, x[k], out, order, seen)
		}
	case []any:
		for i, e := range x {
			flatten(fmt.Sprintf("%s[%d]", prefix, i), e, out, order, seen)
		}
	case string:
		add(prefix, x)
	case json.Number:
		add(prefix, x.String())
	case bool:
		add(prefix, fmt.Sprint(x))
	case nil:
		add(prefix, "null")
	}
}
