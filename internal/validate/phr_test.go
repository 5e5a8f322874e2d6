package validate

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/fhirjson"
)

// phrLines parses an NDJSON .phr file into one value per non-empty line
// (1-based line numbers).
func phrLines(t *testing.T, path string) map[int]*fhirjson.Value {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	out := map[int]*fhirjson.Value{}
	for line := 1; sc.Scan(); line++ {
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		v, err := fhirjson.Parse(sc.Bytes())
		if err != nil {
			t.Fatalf("%s:%d: %v", path, line, err)
		}
		out[line] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func hasIssue(issues []Issue, code, path, fragment string) bool {
	for _, is := range issues {
		if is.Code == code && is.Path == path && strings.Contains(is.Message, fragment) {
			return true
		}
	}
	return false
}

// The PHR IG examples carry the mistakes real exports make; each must be
// reported at its exact place.
func TestPHRExamples(t *testing.T) {
	dir := sharedData(t, "phr-ig-examples")
	tests := []struct {
		file             string
		line             int
		code, path, frag string
	}{
		{"WilliamSim.phr", 2, CodeStructure, "Patient.name[0].given", "given repeats: expected an array, found a string"},
		{"WilliamSim.phr", 3, CodeStructure, "Condition.clinicalStatus", "expected CodeableConcept (a JSON object), found a string"},
		{"WilliamSim.phr", 3, CodeValue, "Condition.code.text", "empty string"},
		{"WilliamSim.phr", 9, CodeStructure, "Observation.category", "category repeats: expected an array, found an object"},
		{"WilliamSim.phr", 9, CodeStructure, "Observation.issued", "expected instant (a JSON string), found a number"},
		{"WilliamSim.phr", 1, CodeRequired, "Composition.type", "missing required element type"},
		{"WilliamSim.phr", 1, CodeStructure, "Composition.section[0].reference", `unknown element "reference" in Composition.section`},
		{"JohnDoe.phr", 1, CodeValue, "Composition.subject.reference", "empty string"},
		{"JohnDoe.phr", 5, CodeCodeInvalid, "Condition.clinicalStatus", "no coding from the required value set http://hl7.org/fhir/ValueSet/condition-clinical"},
		{"JohnDoe.phr", 5, CodeInvalid, "Condition.subject.reference", `invalid reference "Patient/Anyman/Bob"`},
		{"JohnDoe.phr", 5, CodeInvalid, "Condition.asserter.reference", `"Provider" is not a resource type`},
		{"Roger-McBee.phr", 2, CodeRequired, "DocumentManifest.content", "missing required element content"},
		{"Roger-McBee.phr", 42, CodeValue, "ValueSet.text.div", "xmlns"},
		{"Roger-McBee.phr", 43, CodeRequired, "ValueSet.status", "missing required element status"},
		// A Meteor/MongoDB "_id" member is read as the primitive extension of id.
		{"Mr.Adrian111Smith67-d5b0f2de-08c8-8259-68b0-af1fb66be392.phr", 2, CodeStructure, "Patient.id", "_id must be an object with id and/or extension, found a string"},
	}
	files := map[string]map[int]*fhirjson.Value{}
	for _, tc := range tests {
		lines := files[tc.file]
		if lines == nil {
			lines = phrLines(t, filepath.Join(dir, tc.file))
			files[tc.file] = lines
		}
		v := lines[tc.line]
		if v == nil {
			t.Fatalf("%s:%d: no resource on that line", tc.file, tc.line)
		}
		issues := Resource(v)
		if !hasIssue(issues, tc.code, tc.path, tc.frag) {
			t.Errorf("%s:%d: want %s at %s (%q), got:\n%v", tc.file, tc.line, tc.code, tc.path, tc.frag, issues)
		}
	}

	// PatientDataReceipt.json: Procedure.performer.role is not R4 (the
	// element is performer.function).
	issues := Resource(parseFile(t, filepath.Join(dir, "PatientDataReceipt.json")))
	if len(issues) != 1 || !hasIssue(issues, CodeStructure, "Procedure.performer[0].role", `unknown element "role"`) {
		t.Errorf("PatientDataReceipt.json: got %v", issues)
	}

	// Roger-McBee.Bundle.json holds the Bundle as a JSON string; decoded,
	// its Composition lacks type and its sections use a non-R4 reference.
	raw, err := os.ReadFile(filepath.Join(dir, "Roger-McBee.Bundle.json"))
	if err != nil {
		t.Fatal(err)
	}
	var inner string
	if err := json.Unmarshal(raw, &inner); err != nil {
		t.Fatalf("Roger-McBee.Bundle.json is no longer a JSON string: %v", err)
	}
	b, err := fhirjson.Parse([]byte(inner))
	if err != nil {
		t.Fatal(err)
	}
	issues = Resource(b)
	if !hasIssue(issues, CodeRequired, "Bundle.entry[0].resource.ofType(Composition).type", "missing required element type") {
		t.Errorf("Roger-McBee.Bundle.json: want the Composition's missing type, got:\n%v", issues)
	}
}
