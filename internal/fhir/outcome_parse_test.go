package fhir

import "testing"

// TestParseOutcome reads what servers send: diagnostics, or only
// details.text, and where; anything else is not an outcome.
func TestParseOutcome(t *testing.T) {
	issues, ok := ParseOutcome([]byte(`{"resourceType":"OperationOutcome","issue":[
		{"severity":"error","code":"exception","diagnostics":"Observation/o7 could not be exported","expression":["Observation"]},
		{"severity":"warning","code":"processing","details":{"text":"the _type parameter was ignored"}},
		{"severity":"information","code":"informational"}]}`))
	if !ok || len(issues) != 3 {
		t.Fatalf("%v %+v", ok, issues)
	}
	for i, want := range []string{"Observation/o7 could not be exported (at Observation)", "the _type parameter was ignored", "informational"} {
		if got := issues[i].Text(); got != want {
			t.Errorf("issue %d: %q, want %q", i, got, want)
		}
	}
	if issues[1].Severity != "warning" || issues[0].Code != "exception" {
		t.Errorf("severity or code lost: %+v", issues)
	}
	for _, in := range []string{`{"resourceType":"Patient"}`, `not json`, `[]`} {
		if _, ok := ParseOutcome([]byte(in)); ok {
			t.Errorf("%s read as an OperationOutcome", in)
		}
	}
}
