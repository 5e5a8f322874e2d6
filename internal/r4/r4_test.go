package r4

import (
	"regexp"
	"slices"
	"testing"
)

func TestKnownElements(t *testing.T) {
	tests := []struct {
		path     string
		min, max int
		types    []string
		targets  []string
	}{
		{"Patient.birthDate", 0, 1, []string{"date"}, nil},
		{"Patient.id", 0, 1, []string{"id"}, nil},
		{"Patient.name", 0, -1, []string{"HumanName"}, nil},
		{"Patient.contact.name", 0, 1, []string{"HumanName"}, nil},
		{"Patient.contact.name.family", 0, 1, []string{"string"}, nil},
		{"Observation.status", 1, 1, []string{"code"}, nil},
		{"Observation.subject", 0, 1, []string{"Reference"}, []string{"Patient", "Group", "Device", "Location"}},
		{"Questionnaire.item.item.linkId", 1, 1, []string{"string"}, nil},
		{"Questionnaire.item.item.item.answerOption.value[x]", 1, 1, []string{"integer", "date", "time", "string", "Coding", "Reference"}, nil},
		{"Extension.url", 1, 1, []string{"uri"}, nil},
		{"Narrative.div", 1, 1, []string{"xhtml"}, nil},
		{"Bundle.entry.resource", 0, 1, []string{"Resource"}, nil},
		{"Bundle.entry.response.outcome", 0, 1, []string{"Resource"}, nil},
		{"EvidenceVariable.characteristic.definition[x]", 1, 1, []string{"Reference", "canonical", "CodeableConcept", "Expression", "DataRequirement", "TriggerDefinition"}, []string{"Group", "ActivityDefinition"}},
	}
	for _, tc := range tests {
		e := LookupElement(tc.path)
		if e == nil {
			t.Errorf("%s: not found", tc.path)
			continue
		}
		if e.Min != tc.min || e.Max != tc.max || !slices.Equal(e.Types, tc.types) || !slices.Equal(e.TargetTypes, tc.targets) {
			t.Errorf("%s: got %d..%d %v %v, want %d..%d %v %v", tc.path, e.Min, e.Max, e.Types, e.TargetTypes, tc.min, tc.max, tc.types, tc.targets)
		}
	}
	if e := LookupElement("Observation.value[x]"); e == nil || len(e.Types) != 11 {
		t.Errorf("Observation.value[x] should have 11 types, got %+v", e)
	}
	if e := LookupElement("Questionnaire.item.item"); e == nil || e.ContentRef != "Questionnaire.item" {
		t.Errorf("Questionnaire.item.item: contentReference = %+v", e)
	}
	for _, p := range []string{"Patient.foo", "Nope.id", "Patient.contact.name.nope", "Meta.account", "Meta.project", "Binary.url", "ResearchStudy.label", "EvidenceVariable.characteristic.definitionByCombination"} {
		if e := LookupElement(p); e != nil {
			t.Errorf("%s: should not exist in R4, got %+v", p, e)
		}
	}
	if e := LookupElement("Patient.gender"); e == nil || !e.Summary || e.Binding == nil {
		t.Errorf("Patient.gender should be summary with a binding: %+v", e)
	} else if !slices.Equal(e.Binding.Codes, []string{"male", "female", "other", "unknown"}) || e.Binding.Systems[0] != "http://hl7.org/fhir/administrative-gender" {
		t.Errorf("Patient.gender binding = %+v", e.Binding)
	}
	if e := LookupElement("Patient.active"); e == nil || !e.Modifier {
		t.Errorf("Patient.active should be a modifier: %+v", e)
	}
	if e := LookupElement("DetectedIssue.status"); e == nil || e.Binding == nil || !slices.Contains(e.Binding.Codes, "amended") {
		t.Errorf("DetectedIssue.status should be bound to ObservationStatus: %+v", e)
	}
	if e := LookupElement("Attachment.contentType"); e == nil || e.Binding == nil || e.Binding.Codes != nil {
		t.Errorf("Attachment.contentType binding should be present and not expanded: %+v", e)
	}
	if e := LookupElement("Condition.clinicalStatus"); e == nil || e.Binding == nil || !slices.Contains(e.Binding.Codes, "active") {
		t.Errorf("Condition.clinicalStatus binding: %+v", e)
	}
}

func TestTypes(t *testing.T) {
	rts := ResourceTypes()
	if len(rts) != 146 || !slices.IsSorted(rts) {
		t.Errorf("ResourceTypes: %d types (want 146), sorted=%v", len(rts), slices.IsSorted(rts))
	}
	// The resource-types code system (bound to
	// CapabilityStatement.rest.resource.type) lists the same types, plus
	// the abstract Resource and DomainResource.
	var codes []string
	for _, c := range LookupElement("CapabilityStatement.rest.resource.type").Binding.Codes {
		if c != "Resource" && c != "DomainResource" {
			codes = append(codes, c)
		}
	}
	slices.Sort(codes)
	if !slices.Equal(codes, rts) {
		t.Errorf("ResourceTypes differs from the resource-types code system:\n%v\n%v", rts, codes)
	}
	for _, n := range []string{"Patient", "Observation", "Bundle", "Parameters", "Binary"} {
		if !IsResourceType(n) {
			t.Errorf("IsResourceType(%s) = false", n)
		}
	}
	for _, n := range []string{"Resource", "DomainResource", "HumanName", "SubscriptionStatus", "SubscriptionTopic", "MetadataResource", "string", ""} {
		if IsResourceType(n) {
			t.Errorf("IsResourceType(%q) = true", n)
		}
	}
	if ty := LookupType("date"); ty == nil || ty.Kind != KindPrimitive || ty.Regex == "" {
		t.Errorf("date type: %+v", ty)
	}
	if ty := LookupType("Age"); ty == nil || ty.Base != "Quantity" || !IsA("Age", "Quantity") {
		t.Errorf("Age type: %+v", ty)
	}
	if ty := LookupType("DomainResource"); ty == nil || !ty.Abstract || ty.Kind != KindResource {
		t.Errorf("DomainResource: %+v", ty)
	}
	if LookupType("SimpleQuantity") != nil {
		t.Errorf("SimpleQuantity is a profile, not a type")
	}
	meta := LookupType("Meta")
	var names []string
	for _, e := range meta.Elements {
		names = append(names, e.Path)
	}
	want := []string{"Meta.id", "Meta.extension", "Meta.versionId", "Meta.lastUpdated", "Meta.source", "Meta.profile", "Meta.security", "Meta.tag"}
	if !slices.Equal(names, want) {
		t.Errorf("Meta elements = %v, want %v", names, want)
	}
}

func TestSearchParams(t *testing.T) {
	if n := len(AllSearchParams()); n != 1377 {
		t.Errorf("%d search parameters, want 1377 (1378 in the package less one R5 parameter)", n)
	}
	obs := SearchParams("Observation")
	code := obs["code"]
	if code == nil || code.Type != ParamToken || code.Expression != "Observation.code" {
		t.Fatalf("Observation code = %+v", code)
	}
	for _, c := range []string{"_id", "_lastUpdated", "_profile", "_text", "subject", "patient", "value-quantity", "code-value-quantity"} {
		if obs[c] == nil {
			t.Errorf("Observation has no %s", c)
		}
	}
	if p := obs["code-value-quantity"]; p == nil || p.Type != ParamComposite || len(p.Components) != 2 {
		t.Errorf("code-value-quantity = %+v", p)
	}
	if p := obs["subject"]; p == nil || p.Type != ParamReference || !slices.Contains(p.Targets, "Patient") {
		t.Errorf("Observation subject = %+v", p)
	}
	if SearchParams("Bundle")["_text"] != nil {
		t.Errorf("Bundle is not a DomainResource and has no _text")
	}
	if SearchParams("Bundle")["_id"] == nil {
		t.Errorf("Bundle should have _id")
	}
	if SearchParams("Nope") != nil {
		t.Errorf("unknown type has params")
	}
	if p := SearchParamByURL("http://hl7.org/fhir/SearchParameter/individual-birthdate"); p == nil || p.Code != "birthdate" || p.Type != ParamDate || len(p.Base) != 3 {
		t.Errorf("individual-birthdate = %+v", p)
	}
	if SearchParamByURL("http://hl7.org/fhir/SearchParameter/DeviceDefinition-classification") != nil {
		t.Errorf("R5 DeviceDefinition-classification should be left out")
	}
	if p := SearchParams("Patient")["birthdate"]; p == nil || p.Expression != "Patient.birthDate" {
		t.Errorf("Patient birthdate = %+v", p)
	}
	if p := SearchParams("MedicationRequest")["code"]; p == nil || p.Expression != "(MedicationRequest.medication as CodeableConcept)" {
		t.Errorf("MedicationRequest code = %+v", p)
	}
	if p := SearchParams("Patient")["name"]; p == nil || p.Type.String() != "string" {
		t.Errorf("Patient name = %+v", p)
	}
}

// Every composite's components and every base and target must resolve.
func TestSearchParamsConsistent(t *testing.T) {
	for _, p := range AllSearchParams() {
		for _, c := range p.Components {
			if SearchParamByURL(c.Definition) == nil {
				t.Errorf("%s: component %s does not resolve", p.URL, c.Definition)
			}
		}
		for _, b := range p.Base {
			if LookupType(b) == nil || LookupType(b).Kind != KindResource {
				t.Errorf("%s: unknown base %s", p.URL, b)
			}
		}
		for _, tt := range p.Targets {
			if !IsResourceType(tt) {
				t.Errorf("%s: unknown target %s", p.URL, tt)
			}
		}
		if (p.Type == ParamComposite) != (len(p.Components) > 0) {
			t.Errorf("%s: type %s with %d components", p.URL, p.Type, len(p.Components))
		}
		if p.Expression == "" && p.Code != "_text" && p.Code != "_content" && p.Code != "_query" {
			t.Errorf("%s: no expression", p.URL)
		}
	}
}

func TestCompartment(t *testing.T) {
	if got := PatientCompartmentParams("Observation"); !slices.Equal(got, []string{"subject", "performer"}) {
		t.Errorf("Observation compartment params = %v", got)
	}
	if got := PatientCompartmentParams("Patient"); !slices.Equal(got, []string{"link"}) {
		t.Errorf("Patient compartment params = %v", got)
	}
	if got := PatientCompartmentParams("Organization"); got != nil {
		t.Errorf("Organization is not in the patient compartment: %v", got)
	}
	for rt, params := range patientCompartment {
		if !IsResourceType(rt) {
			t.Errorf("compartment names unknown type %s", rt)
		}
		for _, p := range params {
			if p != "{def}" && SearchParams(rt)[p] == nil {
				t.Errorf("compartment param %s.%s is not a search parameter", rt, p)
			}
		}
	}
}

// Every element's types, targets and content references must name things
// that exist, or the validator would chase them into nothing.
func TestTablesConsistent(t *testing.T) {
	for i := range typeTable {
		ty := &typeTable[i]
		for _, e := range ty.Elements {
			for _, tc := range e.Types {
				if LookupType(tc) == nil {
					t.Errorf("%s: unknown type %s", e.Path, tc)
				}
			}
			for _, tt := range e.TargetTypes {
				if LookupType(tt) == nil || LookupType(tt).Kind != KindResource {
					t.Errorf("%s: unknown target %s", e.Path, tt)
				}
			}
			if e.ContentRef != "" && elementByPath[e.ContentRef] == nil {
				t.Errorf("%s: unknown contentReference %s", e.Path, e.ContentRef)
			}
			if len(e.Types) == 0 && e.ContentRef == "" {
				t.Errorf("%s: no type", e.Path)
			}
			if b := e.Binding; b != nil && len(b.Codes) != len(b.Systems) {
				t.Errorf("%s: %d codes but %d systems", e.Path, len(b.Codes), len(b.Systems))
			}
		}
	}
}

func TestSplitUnion(t *testing.T) {
	got := SplitUnion("A.b | (C.d as E) | F.g.where(h = 'x|y') | I.j.where((k | l).exists())")
	want := []string{"A.b", "(C.d as E)", "F.g.where(h = 'x|y')", "I.j.where((k | l).exists())"}
	if !slices.Equal(got, want) {
		t.Errorf("SplitUnion = %q, want %q", got, want)
	}
	for in, root := range map[string]string{"(C.d as E)": "C", "Patient.name": "Patient", "Resource": "Resource"} {
		if r := ExpressionRoot(in); r != root {
			t.Errorf("ExpressionRoot(%q) = %q, want %q", in, r, root)
		}
	}
}

// Every plain path in a search expression ("Patient.contact.name") must
// resolve through LookupElement, following data types and
// contentReference: the indexer depends on it.
func TestExpressionPathsResolve(t *testing.T) {
	simple := regexp.MustCompile(`^[A-Za-z]+(\.[a-zA-Z]+)+$`)
	n := 0
	for _, p := range AllSearchParams() {
		for _, part := range SplitUnion(p.Expression) {
			if !simple.MatchString(part) {
				continue
			}
			n++
			if LookupElement(part) == nil && LookupElement(part+"[x]") == nil {
				t.Errorf("%s: %s does not resolve", p.URL, part)
			}
		}
	}
	if n < 1000 {
		t.Errorf("only %d plain paths found; the test no longer covers the expressions", n)
	}
}
