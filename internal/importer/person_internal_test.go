package importer

import (
	"testing"

	"github.com/phr-project/phr/internal/fhirjson"
)

func mustParse(t *testing.T, s string) *fhirjson.Value {
	t.Helper()
	v, err := fhirjson.Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSamePerson: a Patient is taken for the record's when its birth date
// or a family name agrees and neither disagrees; one that says nothing of
// either is not.
func TestSamePerson(t *testing.T) {
	own := mustParse(t, `{"resourceType":"Patient","name":[{"family":"Anders","given":["Alice"]},{"family":"Berg"}],"birthDate":"1970-02-03"}`)
	for in, want := range map[string]string{
		`{"resourceType":"Patient","name":[{"family":"anders"}],"birthDate":"1970-02-03"}`: "",
		`{"resourceType":"Patient","name":[{"family":"Berg","given":["A."]}]}`:             "",
		`{"resourceType":"Patient"}`:                              "neither a birth date nor a family name says it is",
		`{"resourceType":"Patient","name":[{"given":["Alice"]}]}`: "neither a birth date nor a family name says it is",
		`{"resourceType":"Patient","birthDate":"1971-02-03"}`:     "born 1971-02-03, not 1970-02-03",
		`{"resourceType":"Patient","name":[{"family":"Other"}]}`:  `family name "other", not "anders"`,
	} {
		if got := samePerson(mustParse(t, in), own); got != want {
			t.Errorf("samePerson(%s) = %q, want %q", in, got, want)
		}
	}
	if got := samePerson(own, nil); got != "" {
		t.Errorf("with no own Patient: %q", got)
	}
}

// TestHolds: the stored resource holds the incoming one when each member
// and each array element the incoming has is there.
func TestHolds(t *testing.T) {
	stored := mustParse(t, `{"resourceType":"Patient","name":[{"use":"official","family":"Anders","given":["Alice","Mary"]}],"telecom":[{"system":"phone","value":"1"},{"system":"email","value":"a@x"}],"birthDate":"1970-02-03"}`)
	for in, want := range map[string]bool{
		`{"resourceType":"Patient","name":[{"family":"Anders","given":["Alice"]}],"birthDate":"1970-02-03"}`: true,
		`{"resourceType":"Patient","telecom":[{"value":"a@x"}]}`:                                             true,
		`{"resourceType":"Patient","name":[{"family":"Anders","given":["Alicia"]}]}`:                         false,
		`{"resourceType":"Patient","gender":"female"}`:                                                       false,
		`{"resourceType":"Patient","birthDate":"1970-02-04"}`:                                                false,
	} {
		if got := holds(stored, mustParse(t, in)); got != want {
			t.Errorf("holds(%s) = %v, want %v", in, got, want)
		}
	}
}
