package validate

import (
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/fhirjson"
)

func mustParse(t testing.TB, s string) *fhirjson.Value {
	t.Helper()
	v, err := fhirjson.Parse([]byte(s))
	if err != nil {
		t.Fatalf("bad test JSON %s: %v", s, err)
	}
	return v
}

// Each rule: a resource that breaks it must give exactly the expected
// issue at the expected path, and the valid variants must give none.
func TestRules(t *testing.T) {
	tests := []struct {
		name string
		json string
		code string // "" means valid
		path string
		frag string
	}{
		// resourceType
		{"no resourceType", `{"id":"a"}`, CodeRequired, "", "no resourceType"},
		{"unknown type", `{"resourceType":"Patientx"}`, CodeValue, "", `unknown resource type "Patientx"`},
		{"abstract type", `{"resourceType":"DomainResource"}`, CodeValue, "", "unknown resource type"},
		{"R4B type", `{"resourceType":"SubscriptionStatus","status":"active","type":"heartbeat","subscription":{"reference":"Subscription/1"}}`, CodeValue, "", "unknown resource type"},
		{"resourceType not string", `{"resourceType":1}`, CodeStructure, "", "resourceType must be a string"},
		{"not an object", `[1]`, CodeStructure, "", "expected a resource"},
		{"minimal patient", `{"resourceType":"Patient"}`, "", "", ""},
		// unknown elements
		{"unknown element", `{"resourceType":"Patient","foo":1}`, CodeStructure, "Patient.foo", `unknown element "foo" in Patient`},
		{"unknown nested", `{"resourceType":"Patient","name":[{"famly":"X"}]}`, CodeStructure, "Patient.name[0].famly", `unknown element "famly" in HumanName`},
		{"unknown in backbone", `{"resourceType":"Patient","contact":[{"nam":{"text":"x"}}]}`, CodeStructure, "Patient.contact[0].nam", "Patient.contact"},
		{"non-R4 Meta element", `{"resourceType":"Patient","meta":{"project":"x"}}`, CodeStructure, "Patient.meta.project", "unknown element"},
		{"resourceType inside datatype", `{"resourceType":"Patient","name":[{"resourceType":"x"}]}`, CodeStructure, "Patient.name[0].resourceType", "unknown element"},
		// JSON types
		{"string for boolean", `{"resourceType":"Patient","active":"true"}`, CodeStructure, "Patient.active", "expected boolean"},
		{"number for string", `{"resourceType":"Patient","name":[{"family":1}]}`, CodeStructure, "Patient.name[0].family", "expected string (a JSON string), found a number"},
		{"string for integer", `{"resourceType":"Patient","multipleBirthInteger":"2"}`, CodeStructure, "Patient.multipleBirth.ofType(integer)", "expected integer (a JSON number)"},
		{"string for object", `{"resourceType":"Patient","maritalStatus":"M"}`, CodeStructure, "Patient.maritalStatus", "expected CodeableConcept (a JSON object), found a string"},
		{"object for string", `{"resourceType":"Patient","gender":{"value":"male"}}`, CodeStructure, "Patient.gender", "expected code (a JSON string), found an object"},
		// arrays
		{"array for max 1", `{"resourceType":"Patient","gender":["male"]}`, CodeStructure, "Patient.gender", "at most one value"},
		{"single for max *", `{"resourceType":"Patient","name":{"family":"X"}}`, CodeStructure, "Patient.name", "expected an array, found an object"},
		{"given as string", `{"resourceType":"Patient","name":[{"given":"Ann"}]}`, CodeStructure, "Patient.name[0].given", "given repeats"},
		{"empty array", `{"resourceType":"Patient","name":[]}`, CodeStructure, "Patient.name", "empty array"},
		{"empty object", `{"resourceType":"Patient","name":[{}]}`, CodeStructure, "Patient.name[0]", "empty object"},
		{"empty string", `{"resourceType":"Patient","name":[{"family":""}]}`, CodeValue, "Patient.name[0].family", "empty string"},
		{"null member", `{"resourceType":"Patient","gender":null}`, CodeStructure, "Patient.gender", "expected code (a JSON string), found null"},
		{"null in complex array", `{"resourceType":"Patient","name":[null]}`, CodeStructure, "Patient.name[0]", "null is only allowed"},
		{"null without _ array", `{"resourceType":"Patient","name":[{"given":["a",null]}]}`, CodeStructure, "Patient.name[0].given[1]", "null is only allowed"},
		// primitive extensions
		{"aligned _given", `{"resourceType":"Patient","name":[{"given":["a",null],"_given":[null,{"extension":[{"url":"http://x","valueString":"b"}]}]}]}`, "", "", ""},
		{"_given only", `{"resourceType":"Patient","name":[{"_given":[{"id":"x"}]}]}`, "", "", ""},
		{"misaligned _given", `{"resourceType":"Patient","name":[{"given":["a","b"],"_given":[null]}]}`, CodeStructure, "Patient.name[0].given", "must align"},
		{"null in both", `{"resourceType":"Patient","name":[{"given":["a",null],"_given":[null,null]}]}`, CodeStructure, "Patient.name[0].given[1]", "null is only allowed"},
		{"_birthDate extension", `{"resourceType":"Patient","_birthDate":{"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/data-absent-reason","valueCode":"unknown"}]}}`, "", "", ""},
		{"_birthDate string", `{"resourceType":"Patient","_birthDate":"x"}`, CodeStructure, "Patient.birthDate", "_birthDate must be an object"},
		{"_birthDate unknown member", `{"resourceType":"Patient","_birthDate":{"value":"x"}}`, CodeStructure, "Patient.birthDate.value", `unknown element "value" in Element`},
		{"_ on complex", `{"resourceType":"Patient","_name":[{"id":"x"}]}`, CodeStructure, "Patient._name", "unknown element"},
		{"_ array not array", `{"resourceType":"Patient","name":[{"given":["a"],"_given":{"id":"x"}}]}`, CodeStructure, "Patient.name[0].given", "must be an array aligned"},
		// cardinality
		{"missing required", `{"resourceType":"Observation","code":{"text":"x"}}`, CodeRequired, "Observation.status", "missing required element status (min 1)"},
		{"missing in backbone", `{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST"}}]}`, CodeRequired, "Bundle.entry[0].request.url", "missing required element url"},
		{"missing in datatype", `{"resourceType":"Patient","extension":[{"valueString":"x"}]}`, CodeRequired, "Patient.extension[0].url", "missing required element url"},
		{"missing narrative div", `{"resourceType":"Patient","text":{"status":"generated"}}`, CodeRequired, "Patient.text.div", "missing required element div"},
		{"missing choice", `{"resourceType":"Extension"}`, CodeValue, "", "unknown resource type"},
		{"required choice", `{"resourceType":"Questionnaire","status":"draft","item":[{"linkId":"1","type":"choice","answerOption":[{"initialSelected":true}]}]}`, CodeRequired, "Questionnaire.item[0].answerOption[0].value", "missing required element value[x]"},
		{"required via _", `{"resourceType":"Observation","_status":{"extension":[{"url":"http://x","valueCode":"y"}]},"code":{"text":"x"}}`, "", "", ""},
		// choice types
		{"choice ok", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.50}}`, "", "", ""},
		{"bad choice suffix", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueFoo":1}`, CodeStructure, "Observation.valueFoo", "unknown element"},
		{"disallowed choice type", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueDecimal":1}`, CodeStructure, "Observation.valueDecimal", "unknown element"},
		{"two choices", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueString":"a","valueBoolean":true}`, CodeStructure, "Observation.value.ofType(boolean)", "more than one type"},
		{"choice and other _", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueString":"a","_valueBoolean":{"id":"x"}}`, CodeStructure, "Observation.value.ofType(boolean)", "more than one type"},
		{"choice with own _", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueString":"a","_valueString":{"id":"x"}}`, "", "", ""},
		{"bare choice name", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"value":1}`, CodeStructure, "Observation.value", "unknown element"},
		// primitive formats
		{"bad date", `{"resourceType":"Patient","birthDate":"1990-13-01"}`, CodeValue, "Patient.birthDate", "invalid date"},
		{"no such day", `{"resourceType":"Patient","birthDate":"2019-02-29"}`, CodeValue, "Patient.birthDate", "no such day"},
		{"leap day", `{"resourceType":"Patient","birthDate":"2020-02-29"}`, "", "", ""},
		{"dateTime without zone", `{"resourceType":"Patient","deceasedDateTime":"2020-01-01T10:00:00"}`, CodeValue, "Patient.deceased.ofType(dateTime)", "invalid dateTime"},
		{"dateTime ok", `{"resourceType":"Patient","deceasedDateTime":"2020-01-01T10:00:00.123+01:00"}`, "", "", ""},
		{"instant partial", `{"resourceType":"Patient","meta":{"lastUpdated":"2020-01-01"}}`, CodeValue, "Patient.meta.lastUpdated", "invalid instant"},
		{"bad time", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueTime":"25:00:00"}`, CodeValue, "Observation.value.ofType(time)", "invalid time"},
		{"bad id", `{"resourceType":"Patient","id":"a_b"}`, CodeValue, "Patient.id", "invalid id"},
		{"long id", `{"resourceType":"Patient","id":"` + strings.Repeat("a", 65) + `"}`, CodeValue, "Patient.id", "invalid id"},
		{"decimal for integer", `{"resourceType":"Patient","multipleBirthInteger":1.5}`, CodeValue, "Patient.multipleBirth.ofType(integer)", "invalid integer"},
		{"integer range", `{"resourceType":"Patient","multipleBirthInteger":2147483648}`, CodeValue, "Patient.multipleBirth.ofType(integer)", "32-bit range"},
		{"integer min", `{"resourceType":"Patient","multipleBirthInteger":-2147483648}`, "", "", ""},
		{"unsignedInt zero", `{"resourceType":"Patient","photo":[{"size":0}],"communication":[{"language":{"text":"x"}}]}`, "", "", ""},
		{"positiveInt 0", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueSampledData":{"origin":{"value":0},"period":1,"dimensions":0}}`, CodeValue, "Observation.value.ofType(SampledData).dimensions", "invalid positiveInt"},
		{"unsignedInt negative", `{"resourceType":"Patient","photo":[{"size":-1}]}`, CodeValue, "Patient.photo[0].size", "invalid unsignedInt"},
		{"code spaces", `{"resourceType":"Patient","gender":" male"}`, CodeValue, "Patient.gender", "invalid code"},
		{"uri space", `{"resourceType":"Patient","implicitRules":"http://x y"}`, CodeValue, "Patient.implicitRules", "invalid uri"},
		{"oid", `{"resourceType":"Patient","identifier":[{"system":"urn:oid:1.2.3"}],"extension":[{"url":"http://x","valueOid":"urn:oid:1.02"}]}`, CodeValue, "Patient.extension[0].value.ofType(oid)", "invalid oid"},
		{"uuid", `{"resourceType":"Patient","extension":[{"url":"http://x","valueUuid":"urn:uuid:ABC"}]}`, CodeValue, "Patient.extension[0].value.ofType(uuid)", "invalid uuid"},
		{"base64", `{"resourceType":"Binary","contentType":"text/plain","data":"abc"}`, CodeValue, "Binary.data", "invalid base64Binary"},
		{"base64 ok", `{"resourceType":"Binary","contentType":"text/plain","data":"YWJj ZA=="}`, "", "", ""},
		{"markdown control", `{"resourceType":"Patient","extension":[{"url":"http://x","valueMarkdown":"a\u0001"}]}`, CodeValue, "Patient.extension[0].value.ofType(markdown)", "control character"},
		{"canonical", `{"resourceType":"Patient","meta":{"profile":["http://x y"]}}`, CodeValue, "Patient.meta.profile[0]", "invalid canonical"},
		// required bindings
		{"bad code", `{"resourceType":"Patient","gender":"M"}`, CodeCodeInvalid, "Patient.gender", `code "M" is not in the required value set http://hl7.org/fhir/ValueSet/administrative-gender`},
		{"bad status", `{"resourceType":"Observation","status":"done","code":{"text":"x"}}`, CodeCodeInvalid, "Observation.status", "observation-status"},
		{"CodeableConcept binding text only", `{"resourceType":"Condition","subject":{"reference":"Patient/1"},"clinicalStatus":{"text":"active"}}`, CodeCodeInvalid, "Condition.clinicalStatus", "no coding from the required value set"},
		{"CodeableConcept bad code", `{"resourceType":"Condition","subject":{"reference":"Patient/1"},"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"gone"}]}}`, CodeCodeInvalid, "Condition.clinicalStatus.coding[0]", `code "gone" is not in`},
		{"CodeableConcept ok", `{"resourceType":"Condition","subject":{"reference":"Patient/1"},"clinicalStatus":{"coding":[{"system":"http://snomed.info/sct","code":"1"},{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]}}`, "", "", ""},
		{"unexpanded binding not enforced", `{"resourceType":"Patient","photo":[{"contentType":"image/x-anything"}]}`, "", "", ""},
		// references
		{"relative ref", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/1"}}`, "", "", ""},
		{"versioned ref", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/1/_history/2"}}`, "", "", ""},
		{"absolute ref", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"https://x.org/fhir/Patient/1"}}`, "", "", ""},
		{"urn uuid ref", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"urn:uuid:0b7e4b5c-1a35-4f4c-9b5b-6a0c2d3e4f5a"}}`, "", "", ""},
		{"other scheme ref", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"resource:0"}}`, "", "", ""},
		{"bad urn uuid", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"urn:uuid:x"}}`, CodeInvalid, "Observation.subject.reference", "invalid urn:uuid"},
		{"bad history", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/1/history/2"}}`, CodeInvalid, "Observation.subject.reference", "expected Type/id/_history/version"},
		{"unknown ref type", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Person1/1"}}`, CodeInvalid, "Observation.subject.reference", "not a resource type"},
		{"wrong target", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Practitioner/1"}}`, CodeInvalid, "Observation.subject.reference", "reference to Practitioner is not allowed here: expected Patient, Group, Device, Location"},
		{"wrong absolute target", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"http://x/fhir/Medication/1/_history/3"}}`, CodeInvalid, "Observation.subject.reference", "reference to Medication"},
		{"any target", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"focus":[{"reference":"Medication/1"}]}`, "", "", ""},
		{"conditional ref", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient?identifier=x|1"}}`, CodeInvalid, "Observation.subject.reference", "only allowed in a transaction"},
		{"contained ref", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"contained":[{"resourceType":"Patient","id":"p"}],"subject":{"reference":"#p"}}`, "", "", ""},
		{"contained ref missing", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"#p"}}`, CodeInvalid, "Observation.subject.reference", `no contained resource has id "p"`},
		{"contained wrong target", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"contained":[{"resourceType":"Practitioner","id":"p"}],"subject":{"reference":"#p"}}`, CodeInvalid, "Observation.subject.reference", "reference to Practitioner"},
		{"ref in extension", `{"resourceType":"Patient","extension":[{"url":"http://x","valueReference":{"reference":"Foo/1"}}]}`, CodeInvalid, "Patient.extension[0].value.ofType(Reference).reference", "not a resource type"},
		// nested resources
		{"contained invalid", `{"resourceType":"Patient","contained":[{"resourceType":"Observation","status":"final"}]}`, CodeRequired, "Patient.contained[0].ofType(Observation).code", "missing required element code"},
		{"contained contains", `{"resourceType":"Patient","contained":[{"resourceType":"Patient","id":"a","contained":[{"resourceType":"Patient"}]}]}`, CodeInvariant, "Patient.contained[0].ofType(Patient)", "dom-2"},
		{"bundle entry", `{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient"}},{"resource":{"resourceType":"Observation","status":"x","code":{"text":"a"}}}]}`, CodeCodeInvalid, "Bundle.entry[1].resource.ofType(Observation).status", `code "x"`},
		{"bundle entry no type", `{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"id":"1"}}]}`, CodeRequired, "Bundle.entry[0].resource", "no resourceType"},
		{"parameters resource", `{"resourceType":"Parameters","parameter":[{"name":"a","resource":{"resourceType":"Patient","gender":"x"}}]}`, CodeCodeInvalid, "Parameters.parameter[0].resource.ofType(Patient).gender", `code "x"`},
		{"contentReference", `{"resourceType":"Questionnaire","status":"draft","item":[{"linkId":"1","type":"group","item":[{"linkId":"2","type":"string","bogus":1}]}]}`, CodeStructure, "Questionnaire.item[0].item[0].bogus", `unknown element "bogus" in Questionnaire.item`},
		{"contentReference required", `{"resourceType":"Questionnaire","status":"draft","item":[{"linkId":"1","type":"group","item":[{"type":"string"}]}]}`, CodeRequired, "Questionnaire.item[0].item[0].linkId", "missing required element linkId"},
		// narrative
		{"narrative ok", `{"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}}`, "", "", ""},
		{"narrative no ns", `{"resourceType":"Patient","text":{"status":"generated","div":"<div>x</div>"}}`, CodeValue, "Patient.text.div", "xmlns"},
		{"narrative not div", `{"resourceType":"Patient","text":{"status":"generated","div":"<p xmlns=\"http://www.w3.org/1999/xhtml\">x</p>"}}`, CodeValue, "Patient.text.div", "must start with <div"},
		// extensions
		{"extension both", `{"resourceType":"Patient","extension":[{"url":"http://x","valueString":"a","extension":[{"url":"y","valueString":"b"}]}]}`, CodeInvariant, "Patient.extension[0]", "ext-1"},
		{"extension neither", `{"resourceType":"Patient","extension":[{"url":"http://x"}]}`, CodeInvariant, "Patient.extension[0]", "ext-1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			issues := Resource(mustParse(t, tc.json))
			var errs []Issue
			for _, is := range issues {
				if is.Severity == Error || tc.code != "" {
					errs = append(errs, is)
				}
			}
			if tc.code == "" {
				if len(errs) > 0 {
					t.Fatalf("valid resource gave issues: %v", errs)
				}
				return
			}
			if !hasIssue(issues, tc.code, tc.path, tc.frag) {
				t.Fatalf("want %s at %q (%q), got %v", tc.code, tc.path, tc.frag, issues)
			}
		})
	}
}

func TestNil(t *testing.T) {
	if issues := Resource(nil); !HasErrors(issues) {
		t.Errorf("nil resource accepted: %v", issues)
	}
}

func TestConditionalOption(t *testing.T) {
	v := mustParse(t, `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient?identifier=x|1"}}`)
	if issues := (Options{AllowConditionalReferences: true}).Resource(v); issues != nil {
		t.Errorf("conditional reference rejected with the option: %v", issues)
	}
	v = mustParse(t, `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Practitioner?identifier=x|1"}}`)
	if issues := (Options{AllowConditionalReferences: true}).Resource(v); !hasIssue(issues, CodeInvalid, "Observation.subject.reference", "reference to Practitioner") {
		t.Errorf("conditional reference target not checked: %v", issues)
	}
}

// Offsets point at the value at fault, so callers can report lines.
func TestOffsets(t *testing.T) {
	data := []byte("{\n  \"resourceType\": \"Patient\",\n  \"gender\": \"M\"\n}")
	v, err := fhirjson.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	issues := Resource(v)
	if len(issues) != 1 {
		t.Fatalf("got %v", issues)
	}
	line, col := fhirjson.Position(data, issues[0].Offset)
	if line != 3 || col != 13 {
		t.Errorf("issue at line %d col %d, want 3:13", line, col)
	}
}

func TestNoIssuesIsNil(t *testing.T) {
	v := mustParse(t, `{"resourceType":"Patient","name":[{"family":"X"}]}`)
	if issues := Resource(v); issues != nil {
		t.Errorf("got %v", issues)
	}
	allocs := testing.AllocsPerRun(100, func() { Resource(v) })
	if allocs != 0 {
		t.Errorf("valid resource costs %v allocations, want 0", allocs)
	}
}
