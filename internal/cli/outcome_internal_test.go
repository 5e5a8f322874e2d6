package cli

import "testing"

// TestOutcomeText: an issue's location comes first, unless its
// diagnostics name it already.
func TestOutcomeText(t *testing.T) {
	for in, want := range map[string]string{
		`{"resourceType":"OperationOutcome","issue":[{"diagnostics":"f.json line 1: reference not allowed","expression":["DeviceMetric.parent"]}]}`:                     "DeviceMetric.parent: f.json line 1: reference not allowed",
		`{"resourceType":"OperationOutcome","issue":[{"diagnostics":"f.json line 9, Bundle.entry[6]: Observation/14 appears twice","expression":["Bundle.entry[6]"]}]}`: "f.json line 9, Bundle.entry[6]: Observation/14 appears twice",
		`{"resourceType":"OperationOutcome","issue":[{"diagnostics":"a"},{"diagnostics":"b","expression":["x","y"]}]}`:                                                  "a; x, y: b",
		`{"resourceType":"OperationOutcome","issue":[{"code":"forbidden","details":{"text":"not yours"}},{"code":"timeout"}]}`:                                          "not yours; timeout",
		`not json`: "not json",
	} {
		if got := outcomeText([]byte(in)); got != want {
			t.Errorf("outcomeText(%s) = %q, want %q", in, got, want)
		}
	}
}
