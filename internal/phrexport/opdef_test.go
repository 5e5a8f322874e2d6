package phrexport

import (
	"testing"
	"time"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/r4"
	"github.com/phr-project/phr/internal/validate"
)

// The served OperationDefinition and a cover page are valid R4.
func TestDefinitionsValid(t *testing.T) {
	for name, raw := range map[string][]byte{
		"OperationDefinition": []byte(operationDefinition),
		"cover page":          CoverPage("c1", "p1", "Ann Smith", time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC), "2010", "2020-06", "https://phr.example/fhir").Marshal(),
	} {
		v, err := fhirjson.Parse(raw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, is := range (validate.Options{}).Resource(v) {
			if is.Severity == "error" || is.Severity == "fatal" {
				t.Errorf("%s: %s: %s", name, is.Path, is.Message)
			}
		}
	}
}

// Every clinical date parameter exists in R4 for its type.
func TestClinicalDateParams(t *testing.T) {
	for typ, params := range clinicalDates {
		for _, p := range params {
			sp := r4.SearchParams(typ)[p]
			if sp == nil || sp.Type != r4.ParamDate {
				t.Errorf("%s.%s is not a date search parameter of R4", typ, p)
			}
		}
	}
}
