package importer_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/importer"
)

// TestDiff checks the differences between two versions: meta's version
// and time are not differences, an element added to or removed from the
// middle of an array is one change, and a changed element is compared
// inside.
func TestDiff(t *testing.T) {
	for _, tc := range []struct{ a, b, want string }{
		{`{"resourceType":"Patient","meta":{"versionId":"1","lastUpdated":"2024-01-01T00:00:00Z"},"active":true}`,
			`{"resourceType":"Patient","active":true}`, ``},
		{`{"resourceType":"Patient","name":[{"family":"A"},{"family":"B"},{"family":"C"}]}`,
			`{"resourceType":"Patient","name":[{"family":"X"},{"family":"A"},{"family":"B"},{"family":"C"}]}`,
			`add Patient.name[0] {"family":"X"}`},
		{`{"resourceType":"Patient","name":[{"family":"A"},{"family":"B"},{"family":"C"}]}`,
			`{"resourceType":"Patient","name":[{"family":"A"},{"family":"C"}]}`,
			`delete Patient.name[1] {"family":"B"}`},
		{`{"resourceType":"Patient","name":[{"family":"A"},{"family":"B","given":["b"]},{"family":"C"}]}`,
			`{"resourceType":"Patient","name":[{"family":"A"},{"family":"B","given":["bee"]},{"family":"C"},{"family":"D"}]}`,
			`replace Patient.name[1].given[0] "b" "bee"; add Patient.name[3] {"family":"D"}`},
		{`{"resourceType":"Patient","gender":"male","birthDate":"1970"}`,
			`{"resourceType":"Patient","gender":"female"}`,
			`replace Patient.gender "male" "female"; delete Patient.birthDate "1970"`},
	} {
		changes, err := importer.Diff([]byte(tc.a), []byte(tc.b))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range changes {
			s := c.Op + " " + c.Path
			for _, v := range [][]byte{c.Old, c.New} {
				if v != nil {
					s += " " + string(v)
				}
			}
			got = append(got, s)
		}
		if g := strings.Join(got, "; "); g != tc.want {
			t.Errorf("Diff(%s,\n%s) =\n%s\nwant\n%s", tc.a, tc.b, g, tc.want)
		}
	}
	// Arrays too long to align are compared by position.
	var long, longer []string
	for i := range 200 {
		long = append(long, fmt.Sprint(i))
		longer = append(longer, fmt.Sprint(i+1))
	}
	changes, err := importer.Diff([]byte(`{"resourceType":"List","x":[`+strings.Join(long, ",")+`]}`), []byte(`{"resourceType":"List","x":[`+strings.Join(longer, ",")+`]}`))
	if err != nil || len(changes) != 200 {
		t.Errorf("long arrays: %d changes, %v", len(changes), err)
	}
}
