package records

import (
	"bytes"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/store"
)

// TestStampAfterRender: a version rendered before its write transaction
// and then stamped with its final time reads exactly as if rendered with
// that time, also when the time's text occurs elsewhere in the resource
// before meta (a contained resource's meta), where only a new rendering is
// right.
func TestStampAfterRender(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 15, 0, 0, 123456000, time.UTC)
	t1 := t0.Add(1500 * time.Microsecond)
	for _, doc := range []string{
		`{"resourceType":"Observation","id":"o","status":"final","code":{"text":"x"}}`,
		`{"resourceType":"Observation","id":"o","contained":[{"resourceType":"Patient","id":"p","meta":{"lastUpdated":"` + fhir.FormatInstant(t0) + `"}}],"meta":{"profile":["urn:p"]},"status":"final","code":{"text":"x"}}`,
		`{"resourceType":"Observation","id":"o","meta":{"source":"urn:s","lastUpdated":"2020-01-01T00:00:00Z"},"status":"final","code":{"text":"x"}}`,
	} {
		prep := func() *prepared {
			tree, err := fhirjson.Parse([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			setMeta(tree, 1, t0, "")
			return &prepared{tree: tree, put: &store.Put{Resource: store.Resource{Type: "Observation", ID: "o", Version: 1, LastUpdated: t0}}}
		}
		early := prep()
		early.render()
		early.stamp(1, t1)
		late := prep()
		late.stamp(1, t1)
		if !bytes.Equal(early.put.JSON, late.put.JSON) {
			t.Fatalf("rendered early, then stamped:\n%s\nrendered when stamped:\n%s", early.put.JSON, late.put.JSON)
		}
		if !early.put.LastUpdated.Equal(t1) || !bytes.Contains(early.put.JSON, []byte(`"lastUpdated":"`+fhir.FormatInstant(t1)+`"`)) {
			t.Fatalf("the stamped version does not carry its time: %v %s", early.put.LastUpdated, early.put.JSON)
		}
		// A second stamp (a retried transaction) moves the time again.
		t2 := t1.Add(time.Second)
		early.stamp(1, t2)
		late.stamp(1, t2)
		if !bytes.Equal(early.put.JSON, late.put.JSON) {
			t.Fatalf("stamped again:\n%s\nwant\n%s", early.put.JSON, late.put.JSON)
		}
	}
}
