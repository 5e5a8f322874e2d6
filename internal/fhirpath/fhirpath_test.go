package fhirpath

import (
	"errors"
	"sort"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/r4"
)

// render shows a result collection as "type:value" items, values as JSON
// (primitives without a value show their extensions as "type:_{...}").
func render(nodes []Node) string {
	var parts []string
	for _, n := range nodes {
		switch {
		case n.Value != nil:
			parts = append(parts, n.Type()+":"+string(n.Value.Marshal()))
		case n.Ext != nil:
			parts = append(parts, n.Type()+":_"+string(n.Ext.Marshal()))
		default:
			parts = append(parts, n.Type()+":(ref)")
		}
	}
	return strings.Join(parts, " ")
}

func mustResource(t *testing.T, js string) Node {
	t.Helper()
	v, err := fhirjson.Parse([]byte(js))
	if err != nil {
		t.Fatalf("parse test resource: %v", err)
	}
	n, err := Resource(v)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

const observation = `{
  "resourceType": "Observation",
  "id": "o1",
  "meta": {"profile": ["http://example.org/p1", "http://example.org/p2"], "tag": [{"system": "s", "code": "t"}]},
  "contained": [{"resourceType": "Patient", "id": "p1", "name": [{"family": "Inner"}]}],
  "extension": [
    {"url": "http://example.org/a", "valueString": "A"},
    {"url": "http://example.org/b", "valueCodeableConcept": {"text": "B"}}
  ],
  "status": "final",
  "_status": {"extension": [{"url": "http://example.org/s", "valueBoolean": true}]},
  "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
  "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure"}], "text": "BP"},
  "subject": {"reference": "Patient/123"},
  "encounter": {"reference": "urn:uuid:4b5d2c7e-0d5b-4c9a-9c1e-2b0f2c7a1d11"},
  "performer": [
    {"reference": "Practitioner/9/_history/2"},
    {"reference": "https://fhir.example.org/r4/Organization/7"},
    {"reference": "#p1"},
    {"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|99"},
    {"type": "RelatedPerson", "identifier": {"value": "x"}}
  ],
  "effectiveDateTime": "2019-05-02T10:00:00+02:00",
  "valueQuantity": {"value": 1.50, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
  "component": [
    {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, "valueQuantity": {"value": 120, "code": "mm[Hg]"}},
    {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]}, "valueQuantity": {"value": 80, "code": "mm[Hg]"}},
    {"code": {"text": "note"}, "valueString": "fine"}
  ]
}`

func TestEval(t *testing.T) {
	res := mustResource(t, observation)
	tests := []struct{ expr, want string }{
		// paths and root type names
		{"Observation.status", `code:"final"`},
		{"status", `code:"final"`},
		{"Resource.id", `id:"o1"`},
		{"DomainResource.id", `id:"o1"`},
		{"Patient.name", ``},
		{"Observation.meta.profile", `canonical:"http://example.org/p1" canonical:"http://example.org/p2"`},
		{"Observation.code.coding.code", `code:"85354-9"`},
		{"Observation.code.text", `string:"BP"`},
		{"Observation.subject", `Reference:{"reference":"Patient/123"}`},
		{"Observation.category", `CodeableConcept:{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}`},
		// choice elements without suffix, typed by the suffix found
		{"Observation.value", `Quantity:{"value":1.50,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}`},
		{"Observation.value.value", `decimal:1.50`},
		{"Observation.effective", `dateTime:"2019-05-02T10:00:00+02:00"`},
		{"Observation.component.value", `Quantity:{"value":120,"code":"mm[Hg]"} Quantity:{"value":80,"code":"mm[Hg]"} string:"fine"`},
		{"Observation.component.value.value", `decimal:120 decimal:80`},
		// backbone elements
		{"Observation.component.code.coding.code", `code:"8480-6" code:"8462-4"`},
		{"Observation.component[1].code.coding.code", `code:"8462-4"`},
		// as, ofType, is
		{"(Observation.value as Quantity).unit", `string:"mmHg"`},
		{"Observation.value as CodeableConcept", ``},
		{"Observation.value.as(Quantity).code", `code:"mm[Hg]"`},
		{"(Observation.component.value as string)", `string:"fine"`},
		{"Observation.component.value.ofType(Quantity).value", `decimal:120 decimal:80`},
		{"Observation.value is Quantity", `System.Boolean:true`},
		{"Observation.value.is(CodeableConcept)", `System.Boolean:false`},
		{"Observation.effective.as(DateTime)", `dateTime:"2019-05-02T10:00:00+02:00"`},
		{"Observation.effective.as(System.DateTime)", `dateTime:"2019-05-02T10:00:00+02:00"`},
		{"Observation.effective.as(FHIR.dateTime)", `dateTime:"2019-05-02T10:00:00+02:00"`},
		{"Observation.effective.as(Period)", ``},
		{"Observation.status is string", `System.Boolean:true`},
		{"Observation.status is code", `System.Boolean:true`},
		{"Observation.status is uri", `System.Boolean:false`},
		// union
		{"Observation.status | Observation.code.text", `code:"final" string:"BP"`},
		{"Observation.status | Observation.status", `code:"final"`},
		{"Patient.gender | Observation.status", `code:"final"`},
		// where, equality, logic
		{"Observation.component.where(code.coding.code = '8480-6').value.value", `decimal:120`},
		{"Observation.component.where(code.coding.code != '8480-6').code.coding.code", `code:"8462-4"`},
		{"Observation.component.where(value.exists() and code.text = 'note').value", `string:"fine"`},
		{"Observation.component.where(code.text = 'note' or value.value = 120).value", `Quantity:{"value":120,"code":"mm[Hg]"} string:"fine"`},
		{"Observation.component.where(code.text.empty()).code.coding.code", `code:"8480-6" code:"8462-4"`},
		{"Observation.component.where(code.text.exists().not()).code.coding.code", `code:"8480-6" code:"8462-4"`},
		{"Observation.component.where($this.value.value = 80.0).code.coding.code", `code:"8462-4"`},
		{"Observation.component.where(value.value > 100).code.coding.code", `code:"8480-6"`},
		{"Observation.component.where(value.value <= 80).code.coding.code", `code:"8462-4"`},
		{"Observation.component.exists(value.value = 80)", `System.Boolean:true`},
		{"Observation.component.all(code.exists())", `System.Boolean:true`},
		{"Observation.status = 'final'", `System.Boolean:true`},
		{"Observation.status ~ 'FINAL'", `System.Boolean:true`},
		{"Observation.status !~ 'FINAL'", `System.Boolean:false`},
		{"Observation.issued = 'x'", ``},
		{"Observation.status = 'final' and Observation.issued = 'x'", ``},
		{"Observation.status = 'final' or Observation.issued = 'x'", `System.Boolean:true`},
		{"Observation.status = 'x' and Observation.issued = 'x'", `System.Boolean:false`},
		{"Observation.status = 'x' implies Observation.issued = 'x'", `System.Boolean:true`},
		{"Observation.status = 'final' xor true", `System.Boolean:false`},
		{"'final' in Observation.status", `System.Boolean:true`},
		{"Observation.component.code.text contains 'note'", `System.Boolean:true`},
		{"Observation.component.count()", `System.Integer:3`},
		{"Observation.component.count() = 3", `System.Boolean:true`},
		{"Observation.value.value = 1.5", `System.Boolean:true`},
		{"Observation.effective = @2019-05-02T10:00:00+02:00", `System.Boolean:true`},
		{"-1 < 0", `System.Boolean:true`},
		{"{}.exists()", `System.Boolean:false`},
		// first, last, tail, skip, take, indexers
		{"Observation.meta.profile.first()", `canonical:"http://example.org/p1"`},
		{"Observation.meta.profile.last()", `canonical:"http://example.org/p2"`},
		{"Observation.meta.profile.tail()", `canonical:"http://example.org/p2"`},
		{"Observation.meta.profile.skip(1)", `canonical:"http://example.org/p2"`},
		{"Observation.meta.profile.take(1)", `canonical:"http://example.org/p1"`},
		{"Observation.meta.profile[1]", `canonical:"http://example.org/p2"`},
		{"Observation.meta.profile[2]", ``},
		// extensions, on elements and primitives
		{"Observation.extension('http://example.org/a').value", `string:"A"`},
		{"Observation.extension.where(url = 'http://example.org/b').value.text", `string:"B"`},
		{"Observation.status.extension('http://example.org/s').value", `boolean:true`},
		{"Observation.status.extension.url", `uri:"http://example.org/s"`},
		{"Observation.status.hasValue()", `System.Boolean:true`},
		{"Observation.code.hasValue()", `System.Boolean:false`},
		// resolve() decided from the reference text
		{"Observation.subject.where(resolve() is Patient)", `Reference:{"reference":"Patient/123"}`},
		{"Observation.subject.where(resolve() is Group)", ``},
		{"Observation.subject.where((resolve() is Patient).not())", ``},
		{"Observation.performer.where(resolve() is Practitioner)", `Reference:{"reference":"Practitioner/9/_history/2"} Reference:{"reference":"Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|99"}`},
		{"Observation.performer.where(resolve() is Organization)", `Reference:{"reference":"https://fhir.example.org/r4/Organization/7"}`},
		{"Observation.performer.where(resolve() is RelatedPerson)", `Reference:{"type":"RelatedPerson","identifier":{"value":"x"}}`},
		{"Observation.performer.resolve().name.family", `string:"Inner"`},
		{"Observation.encounter.resolve()", ``},
		{"Observation.subject.resolve()", `Patient:(ref)`},
		// variables
		{"%resource.id", `id:"o1"`},
		{"Observation.component.where(%resource.status = 'final').value.value", `decimal:120 decimal:80`},
		{"%context.id", `id:"o1"`},
		{"%loinc", `System.String:"http://loinc.org"`},
		// contained resources are typed by their resourceType
		{"Observation.contained.name.family", `string:"Inner"`},
		{"Observation.contained.ofType(Patient).id", `id:"p1"`},
		{"Observation.contained.ofType(Group)", ``},
		{"Observation.contained is Patient", `System.Boolean:true`},
		// select
		{"Observation.component.select(code.coding.code)", `code:"8480-6" code:"8462-4"`},
		// delimited identifiers and comments
		{"Observation.`status` // trailing comment", `code:"final"`},
		{"Observation /* c */ .status", `code:"final"`},
	}
	for _, tc := range tests {
		for _, mode := range []string{"Compile", "CompileFor"} {
			var e *Expr
			var err error
			if mode == "Compile" {
				e, err = Compile(tc.expr)
			} else {
				e, err = CompileFor(tc.expr, "Observation")
			}
			if err != nil {
				t.Errorf("%s(%q): %v", mode, tc.expr, err)
				continue
			}
			got, err := e.Eval(res)
			if err != nil {
				t.Errorf("%s(%q).Eval: %v", mode, tc.expr, err)
				continue
			}
			if s := render(got); s != tc.want {
				t.Errorf("%s(%q)\n got %s\nwant %s", mode, tc.expr, s, tc.want)
			}
		}
	}
}

func TestPrimitiveArraysWithExtensions(t *testing.T) {
	res := mustResource(t, `{"resourceType": "Patient",
		"name": [{"given": ["Ann", null, "Eve"], "_given": [null, {"extension": [{"url": "u", "valueString": "hidden"}]}, {"id": "g3"}]}],
		"_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]}}`)
	checkEvals(t, res, []evalCase{
		{"Patient.name.given", `string:"Ann" string:_{"extension":[{"url":"u","valueString":"hidden"}]} string:"Eve"`},
		{"Patient.name.given.id", `string:"g3"`},
		{"Patient.name.given.extension('u').value", `string:"hidden"`},
		{"Patient.birthDate.exists()", `System.Boolean:true`},
		{"Patient.birthDate.hasValue()", `System.Boolean:false`},
		{"Patient.birthDate = @2000", ``},
		{"Patient.birthDate.extension.value", `code:"unknown"`},
	})
}

func TestBundleEntryResource(t *testing.T) {
	res := mustResource(t, `{"resourceType": "Bundle", "type": "document", "entry": [
		{"resource": {"resourceType": "Composition", "id": "c", "status": "final", "subject": {"reference": "Patient/1"}}},
		{"resource": {"resourceType": "Patient", "id": "1"}}]}`)
	for _, tc := range []struct{ expr, want string }{
		{"Bundle.entry[0].resource", `Composition:{"resourceType":"Composition","id":"c","status":"final","subject":{"reference":"Patient/1"}}`},
		{"Bundle.entry.resource.id", `id:"c" id:"1"`},
		{"Bundle.entry.resource.subject.reference", `string:"Patient/1"`},
		{"Bundle.entry.resource.ofType(Patient).id", `id:"1"`},
		{"Bundle.entry.resource.where($this is Composition).status", `code:"final"`},
	} {
		e, err := CompileFor(tc.expr, "Bundle")
		if err != nil {
			t.Errorf("%q: %v", tc.expr, err)
			continue
		}
		got, err := e.Eval(res)
		if err != nil {
			t.Errorf("%q: %v", tc.expr, err)
			continue
		}
		if s := render(got); s != tc.want {
			t.Errorf("%q\n got %s\nwant %s", tc.expr, s, tc.want)
		}
	}
}

func TestContentReference(t *testing.T) {
	res := mustResource(t, `{"resourceType": "Questionnaire", "status": "draft",
		"item": [{"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "string", "item": [{"linkId": "1.1.1", "type": "display"}]}]}]}`)
	got, err := MustCompile("Questionnaire.item.item.item.linkId").Eval(res)
	if err != nil {
		t.Fatal(err)
	}
	if s := render(got); s != `string:"1.1.1"` {
		t.Errorf("got %s", s)
	}
}

func TestRuntimeErrors(t *testing.T) {
	res := mustResource(t, observation)
	for _, expr := range []string{
		"Observation.where(component.code)",               // several items as a criterion
		"Observation.component.value.value > 1",           // several items compared
		"Observation.component.code is CodeableConcept",   // is over several items
		"Observation.code < 1",                            // complex compared
		"Observation.component.value.value.first() < 'a'", // number with string
		"Observation.meta.profile.not()",
	} {
		_, err := MustCompile(expr).Eval(res)
		if err == nil {
			t.Errorf("%q: no error", expr)
		} else if !strings.Contains(err.Error(), expr) {
			t.Errorf("%q: error does not name the expression: %v", expr, err)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		expr string
		pos  int
		msg  string
	}{
		{"", 1, "empty expression"},
		{"Observation.", 13, "expected a name after '.'"},
		{"Observation.code.where(", 24, "unexpected end"},
		{"Observation.code.where(x = 'a'", 31, "expected ')'"},
		{"Observation.code.frobnicate()", 18, "function frobnicate() is not supported"},
		{"Observation.code.where()", 18, "where() takes 1 argument"},
		{"Observation.code.first(1)", 18, "first() takes 0 argument"},
		{"Observation.value as Quantiti", 19, `unknown type "Quantiti"`},
		{"Observation.value.ofType('Quantity')", 26, "expected a type name"},
		{"Observatoin.code", 1, `unknown type "Observatoin"`},
		{"Observation.code + 1", 18, "operator '+' is not supported"},
		{"Observation.code & 'x'", 18, "operator '&' is not supported"},
		{"Observation.code[x]", 18, "index must be a non-negative integer literal"},
		{"Observation.extension(url)", 23, "extension() takes a string literal"},
		{"%vs", 1, "variable %vs is not supported"},
		{"$index", 1, "$index is not supported"},
		{"Observation.code 'x'", 18, "unexpected string 'x'"},
		{"'abc", 1, "unterminated '-quoted text"},
		{"Observation.code = 'a\\qb'", 22, `invalid escape \q`},
		{"Observation.code # 1", 18, "unexpected character '#'"},
		{"(Observation.code", 18, "expected ')'"},
		{"Observation.skip(1.5)", 18, "skip() takes an integer literal"},
		{"-Observation.code", 1, "unary - is only supported on number literals"},
		{"Observation.cod", 13, `Observation has no element "cod"`},                                  // CompileFor only
		{"Observation.component.valu", 23, `Observation.component has no element "valu"`},            // CompileFor only
		{"Observation.component.where(cod = 'x')", 29, `Observation.component has no element "cod"`}, // CompileFor only
	}
	for _, tc := range tests {
		_, err := CompileFor(tc.expr, "Observation")
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("%q: got %v, want a SyntaxError", tc.expr, err)
			continue
		}
		if se.Pos != tc.pos || !strings.Contains(se.Msg, tc.msg) {
			t.Errorf("%q: got %q at %d, want %q at %d", tc.expr, se.Msg, se.Pos, tc.msg, tc.pos)
		}
		if !strings.Contains(err.Error(), "column") {
			t.Errorf("%q: message lacks the column: %v", tc.expr, err)
		}
	}
	if _, err := CompileFor("code", "Nonsense"); err == nil {
		t.Error("CompileFor with an unknown context type: no error")
	}
}

func TestParsePrecedence(t *testing.T) {
	for _, tc := range []struct{ expr, want string }{
		{"a | b as C", "(a | (b as C))"},
		{"a = b and c != d or e", "(((a = b) and (c != d)) or e)"},
		{"a or b and c", "(a or (b and c))"},
		{"a implies b or c", "(a implies (b or c))"},
		{"a | b = c | d", "((a | b) = (c | d))"},
		{"a.b[0].c(d, 'e')", "a.b[0].c(d, 'e')"},
		{"(a | b).c", "(a | b).c"},
		{"a < b = true", "((a < b) = true)"},
		{"a in b and c contains d", "((a in b) and (c contains d))"},
		{"x.contains.code", "x.contains.code"},
		{"a is FHIR.Patient", "(a is FHIR.Patient)"},
		{"-1", "(-1)"},
	} {
		a, err := parse(tc.expr)
		if err != nil {
			t.Errorf("%q: %v", tc.expr, err)
			continue
		}
		if s := a.String(); s != tc.want {
			t.Errorf("%q parsed as %s, want %s", tc.expr, s, tc.want)
		}
	}
}

func TestEmptyForOtherTypes(t *testing.T) {
	e, err := CompileFor("Patient.name | Practitioner.name", "Observation")
	if err != nil {
		t.Fatal(err)
	}
	if !e.Empty() {
		t.Error("expression over other types is not Empty for Observation")
	}
	e, err = CompileFor("Patient.name | Practitioner.name", "Practitioner")
	if err != nil {
		t.Fatal(err)
	}
	if e.Empty() {
		t.Error("expression is Empty for Practitioner")
	}
	res := mustResource(t, `{"resourceType": "Practitioner", "name": [{"family": "Doe"}]}`)
	got, err := e.Eval(res)
	if err != nil {
		t.Fatal(err)
	}
	if s := render(got); s != `HumanName:{"family":"Doe"}` {
		t.Errorf("got %s", s)
	}
}

func TestReferenceType(t *testing.T) {
	for ref, want := range map[string]string{
		"Patient/1":                                     "Patient",
		"Patient/1/_history/2":                          "Patient",
		"http://x.org/fhir/Patient/1":                   "Patient",
		"http://x.org/fhir/Patient/1/_history/2":        "Patient",
		"Patient?identifier=a|b":                        "Patient",
		"http://hl7.org/fhir/ValueSet/x|4.0.1":          "ValueSet",
		"urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0": "",
		"#p1":         "",
		"Patients/1":  "",
		"Resource/1":  "",
		"":            "",
		"patient/1":   "",
		"Patient":     "",
		"Patient/":    "",
		"/Patient/1x": "Patient",
	} {
		if got := ReferenceType(ref); got != want {
			t.Errorf("ReferenceType(%q) = %q, want %q", ref, got, want)
		}
	}
}

func TestInputMembers(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want string // "" with ok false
	}{
		{"Observation.code", "code"},
		{"Observation.code | Observation.component.code", "code component"},
		{"(Observation.value as Quantity) | (Observation.component.value as SampledData)", "component value"},
		{"Observation.subject.where(resolve() is Patient)", "subject"},
		{"Observation.component.where(code.text = 'x').value", "component"},
		{"Patient.name.given.first()", "name"},
		{"Bundle.entry[0].resource", "entry"},
		{"code", "code"},
		{"value.as(Quantity) | value.as(Range)", "value"},
		{"Observation.status = 'final'", "status"},
		// yield something even without the elements, or use the input whole
		{"Patient.deceased.exists() and Patient.deceased != false", ""},
		{"Observation", ""},
		{"Observation | Observation.component", ""},
		{"%resource.referenceSeq.chromosome", ""},
		{"Observation.component.where(%resource.status = 'final')", ""},
		{"Observation.code.count()", ""},
		{"Observation.code ~ 'x'", ""},
		{"'x'", ""},
	} {
		e := MustCompile(tc.expr)
		names, ok := e.InputMembers()
		got := strings.Join(names, " ")
		if !ok {
			got = ""
		}
		if ok == (tc.want == "") || got != tc.want {
			t.Errorf("InputMembers(%q) = %q, %v; want %q", tc.expr, names, ok, tc.want)
		}
	}
}

// TestSearchParameterSurvey compiles every standard search parameter's
// expression (and its composite components) for every resource type it
// applies to, and checks which functions and operators they use: the
// survey the subset was chosen from.
func TestSearchParameterSurvey(t *testing.T) {
	used := map[string]bool{}
	var walk func(a *ast)
	walk = func(a *ast) {
		if a == nil {
			return
		}
		switch a.kind {
		case aFunc:
			used[a.name+"()"] = true
		case aBinary, aType:
			used[a.name] = true
		case aIndex:
			used["[]"] = true
		case aEnv:
			used["%"+a.name] = true
		case aString:
			used["'string'"] = true
		case aBool:
			used["boolean"] = true
		}
		walk(a.left)
		for _, x := range a.args {
			walk(x)
		}
	}
	n := 0
	for _, rt := range r4.ResourceTypes() {
		for code, p := range r4.SearchParams(rt) {
			if p.Expression == "" {
				continue
			}
			e, err := CompileFor(p.Expression, rt)
			if err != nil {
				t.Errorf("%s %s: %v", rt, code, err)
				continue
			}
			if e.Empty() {
				t.Errorf("%s %s: %q yields nothing for %s", rt, code, p.Expression, rt)
			}
			for _, c := range p.Components {
				if _, err := CompileRelative(c.Expression, e); err != nil {
					t.Errorf("%s %s component %q: %v", rt, code, c.Expression, err)
				}
				a, _ := parse(c.Expression)
				walk(a)
			}
			a, _ := parse(p.Expression)
			walk(a)
			n++
		}
	}
	var got []string
	for k := range used {
		got = append(got, k)
	}
	sort.Strings(got)
	want := "!= %resource 'string' = [] and as as() boolean exists() is resolve() where() |"
	if strings.Join(got, " ") != want {
		t.Errorf("the search parameters use %s; want %s", strings.Join(got, " "), want)
	}
	if n < 2000 {
		t.Errorf("only %d (type, parameter) pairs compiled", n)
	}
}

// TestResolveDanglingContained: a contained reference to a resource that
// is not there resolves to the Reference's type when it has one (what the
// search index records as the reference's type), and to nothing without.
func TestResolveDanglingContained(t *testing.T) {
	res := mustResource(t, `{"resourceType": "Observation",
		"contained": [{"resourceType": "Group", "id": "g"}],
		"performer": [{"reference": "#gone", "type": "Patient"}, {"reference": "#gone2"}, {"reference": "#g", "type": "Patient"}]}`)
	checkEvals(t, res, []evalCase{
		{"Observation.performer.where(resolve() is Patient)", `Reference:{"reference":"#gone","type":"Patient"}`},
		{"Observation.performer.where(resolve() is Group)", `Reference:{"reference":"#g","type":"Patient"}`},
		{"Observation.performer.resolve().count()", `System.Integer:2`},
	})
}

// evalCase is an expression and the rendering of what it yields.
type evalCase struct{ expr, want string }

// checkEvals evaluates each case's expression on res and compares the
// rendered result with the case's.
func checkEvals(t *testing.T, res Node, cases []evalCase) {
	t.Helper()
	for _, tc := range cases {
		got, err := MustCompile(tc.expr).Eval(res)
		if err != nil {
			t.Errorf("%q: %v", tc.expr, err)
			continue
		}
		if s := render(got); s != tc.want {
			t.Errorf("%q\n got %s\nwant %s", tc.expr, s, tc.want)
		}
	}
}
