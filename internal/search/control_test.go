package search_test

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/store/storetest"
)

// links returns the Bundle's links by relation, relative to the FHIR base.
func links(t *testing.T, f *fixture, b map[string]any) map[string]string {
	t.Helper()
	out := map[string]string{}
	ls, _ := b["link"].([]any)
	for _, l := range ls {
		m := l.(map[string]any)
		u := m["url"].(string)
		if !strings.HasPrefix(u, f.s.FHIR+"/") {
			t.Fatalf("link %s is not under %s", u, f.s.FHIR)
		}
		out[m["relation"].(string)] = strings.TrimPrefix(u, f.s.FHIR+"/")
	}
	return out
}

// entries returns "mode:Type/id" of every entry.
func entries(b map[string]any) []string {
	var out []string
	es, _ := b["entry"].([]any)
	for _, e := range es {
		em := e.(map[string]any)
		res := em["resource"].(map[string]any)
		out = append(out, fmt.Sprint(em["search"].(map[string]any)["mode"], ":", res["resourceType"], "/", res["id"]))
	}
	return out
}

func TestResultControl(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			f := setup(t, d)
			// _sort on date descending, then ascending
			got, _ := f.ids(t, f.tok, "Observation?_sort=-date")
			if want := []string{"Observation/o5", "Observation/o2", "Observation/o3", "Observation/o1", "Observation/o4", "Observation/o6"}; !slices.Equal(got, want) {
				t.Errorf("_sort=-date: %v, want %v", got, want)
			}
			got, _ = f.ids(t, f.tok, "Observation?_sort=date")
			if want := []string{"Observation/o4", "Observation/o1", "Observation/o3", "Observation/o2", "Observation/o5", "Observation/o6"}; !slices.Equal(got, want) {
				t.Errorf("_sort=date: %v, want %v", got, want)
			}
			// several keys: status then -date; missing values last
			got, _ = f.ids(t, f.tok, "Observation?_sort=status,-date")
			if want := []string{"Observation/o3", "Observation/o5", "Observation/o2", "Observation/o1", "Observation/o4", "Observation/o6"}; !slices.Equal(got, want) {
				t.Errorf("_sort=status,-date: %v, want %v", got, want)
			}
			got, _ = f.ids(t, f.tok, "Patient?_sort=birthdate")
			if want := []string{"Patient/p1", "Patient/p2", "Patient/p3"}; !slices.Equal(got, want) {
				t.Errorf("_sort=birthdate: %v, want %v", got, want)
			}
			got, _ = f.ids(t, f.tok, "Patient?_sort=-birthdate")
			if want := []string{"Patient/p2", "Patient/p1", "Patient/p3"}; !slices.Equal(got, want) {
				t.Errorf("_sort=-birthdate: %v, want %v", got, want)
			}
			got, _ = f.ids(t, f.tok, "Patient?_sort=-family")
			if want := []string{"Patient/p2", "Patient/p1", "Patient/p3"}; !slices.Equal(got, want) {
				t.Errorf("_sort=-family: %v, want %v", got, want)
			}
			got, _ = f.ids(t, f.tok, "Observation?_sort=value-quantity&value-quantity:missing=false")
			if want := []string{"Observation/o3", "Observation/o4", "Observation/o1", "Observation/o2"}; !slices.Equal(got, want) {
				t.Errorf("_sort=value-quantity: %v, want %v", got, want)
			}
			got, _ = f.ids(t, f.tok, "Observation?_sort=-_lastUpdated")
			if want := []string{"Observation/o6", "Observation/o5", "Observation/o4", "Observation/o3", "Observation/o2", "Observation/o1"}; !slices.Equal(got, want) {
				t.Errorf("_sort=-_lastUpdated: %v, want %v", got, want)
			}

			// _summary=count and _total
			_, b := f.ids(t, f.tok, "Observation?code=2093-3&_summary=count")
			if b["total"] != 3.0 || b["entry"] != nil {
				t.Errorf("_summary=count: total %v entries %v", b["total"], b["entry"])
			}
			_, b = f.ids(t, f.tok, "Observation?_total=none")
			if _, ok := b["total"]; ok {
				t.Errorf("_total=none gave a total")
			}
			_, b = f.ids(t, f.tok, "Observation?_total=accurate&_count=1")
			if b["total"] != 6.0 {
				t.Errorf("_total=accurate: %v", b["total"])
			}
			// _summary=true drops non-summary elements; _elements keeps asked ones
			r := f.s.Do("GET", "Observation?_id=o1&_summary=true", f.tok, nil)
			if strings.Contains(string(r.Body), `"performer"`) == false || strings.Contains(string(r.Body), `"valueQuantity"`) == false || !strings.Contains(string(r.Body), "SUBSETTED") {
				// performer and value are summary elements of Observation
				t.Errorf("_summary=true: %s", r.Body)
			}
			r = f.s.Do("GET", "Patient?_id=p1&_elements=gender", f.tok, nil)
			if strings.Contains(string(r.Body), `"name"`) || !strings.Contains(string(r.Body), `"gender"`) {
				t.Errorf("_elements=gender: %s", r.Body)
			}
			r = f.s.Do("GET", "Patient?_id=p1&_summary=data", f.tok, nil)
			if r.Status != 200 || !strings.Contains(string(r.Body), `"name"`) {
				t.Errorf("_summary=data: %d %s", r.Status, r.Body)
			}

			// _include / _revinclude (:iterate, *)
			_, b = f.ids(t, f.tok, "Observation?_id=o1&_include=Observation:subject&_revinclude=Provenance:target")
			if want := []string{"match:Observation/o1", "include:Patient/p1", "include:Provenance/prov1"}; !slices.Equal(entries(b), want) {
				t.Errorf("_include+_revinclude: %v, want %v", entries(b), want)
			}
			_, b = f.ids(t, f.tok, "Observation?_id=o1&_include=Observation:subject&_include:iterate=Patient:organization")
			if want := []string{"match:Observation/o1", "include:Patient/p1", "include:Organization/org1"}; !slices.Equal(entries(b), want) {
				t.Errorf("_include:iterate: %v, want %v", entries(b), want)
			}
			_, b = f.ids(t, f.tok, "Observation?_id=o1&_include=Observation:subject:Group")
			if want := []string{"match:Observation/o1"}; !slices.Equal(entries(b), want) {
				t.Errorf("_include with a target type: %v, want %v", entries(b), want)
			}
			_, b = f.ids(t, f.tok, "Patient?_id=p1&_include=*")
			if want := []string{"match:Patient/p1", "include:Organization/org1", "include:Practitioner/pr1"}; !slices.Equal(sorted(entries(b)), sorted(want)) {
				t.Errorf("_include=*: %v, want %v", entries(b), want)
			}
			// _revinclude=* leaves AuditEvents out unless _type asks for them
			_, b = f.ids(t, f.tok, "Patient?_id=p1&_revinclude=*")
			for _, e := range entries(b) {
				if strings.Contains(e, "AuditEvent") {
					t.Errorf("_revinclude=* included %s", e)
				}
			}
			if n := len(entries(b)); n != 8 { // p1 + o1 o2 o3 o5 c1 c2 ra1
				t.Errorf("_revinclude=*: %v", entries(b))
			}
			_, b = f.ids(t, f.tok, "Patient?_id=p1&_revinclude=AuditEvent:patient")
			if !slices.Contains(entries(b), "include:AuditEvent/ae1") {
				t.Errorf("_revinclude=AuditEvent:patient: %v", entries(b))
			}
			// chained + _include
			_, b = f.ids(t, f.tok, "Observation?subject:Patient.name=smithson&_include=Observation:patient")
			if want := []string{"match:Observation/o4", "include:Patient/p2"}; !slices.Equal(entries(b), want) {
				t.Errorf("chain + _include: %v, want %v", entries(b), want)
			}

			// POST _search
			r = f.s.Do("POST", "Observation/_search", f.tok, "code=2093-3&subject=Patient/p2", "Content-Type", "application/x-www-form-urlencoded")
			if r.Status != 200 || !strings.Contains(string(r.Body), `"id":"o4"`) || strings.Contains(string(r.Body), `"id":"o1"`) {
				t.Errorf("POST _search: %d %s", r.Status, r.Body)
			}
			// system search with _type
			got, _ = f.ids(t, f.tok, "?_type=Patient,Practitioner&_id=p1,pr1")
			if want := []string{"Patient/p1", "Practitioner/pr1"}; !slices.Equal(sorted(got), want) {
				t.Errorf("system _type search: %v", got)
			}
			// compartment search
			got, _ = f.ids(t, f.tok, "Patient/p2/Observation")
			if want := []string{"Observation/o4"}; !slices.Equal(got, want) {
				t.Errorf("Patient/p2/Observation: %v", got)
			}
			got, _ = f.ids(t, f.tok, "Patient/p2/*")
			if want := []string{"Condition/c3", "Observation/o4", "Patient/p2"}; !slices.Equal(sorted(got), want) {
				t.Errorf("Patient/p2/*: %v", got)
			}
			got, _ = f.ids(t, f.tok, "Patient/p1/*")
			for _, id := range got {
				if strings.HasPrefix(id, "AuditEvent") {
					t.Errorf("Patient/p1/* has %s", id)
				}
			}
			got, _ = f.ids(t, f.tok, "Patient/p1/*?_type=AuditEvent")
			if want := []string{"AuditEvent/ae1"}; !slices.Equal(got, want) {
				t.Errorf("Patient/p1/*?_type=AuditEvent: %v", got)
			}
		})
	}
}

func TestErrorsAndLenient(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			f := setup(t, d)
			for _, q := range []string{
				"Observation?foo=bar",
				"Observation?code:below=x",
				"Observation?date=2019-13",
				"Observation?date=soon",
				"Observation?value-quantity=abc",
				"Observation?_sort=foo",
				"Observation?_count=-1",
				"Observation?_summary=maybe",
				"Observation?subject.organization.name=x",
				"Observation?_include=Observation:foo",
				"Observation?code-value-quantity=2093-3",
				"Observation?_text=cholesterol",
				"Observation?_cursor=garbage",
				"Patient?birthdate:missing=maybe",
				"Patient?_summary=true&_elements=name",
			} {
				r := f.s.Do("GET", q, f.tok, nil)
				if r.Status != 400 || !strings.Contains(string(r.Body), "OperationOutcome") {
					t.Errorf("%s: %d %s", q, r.Status, r.Body)
				}
			}
			// lenient: unknown parameters are ignored and reported
			got, b := f.ids(t, f.tok, "Observation?foo=bar&code=8867-4", "Prefer", "handling=lenient")
			if !slices.Equal(got, []string{"Observation/o3"}) {
				t.Errorf("lenient: %v", got)
			}
			if es := entries(b); len(es) != 2 || es[1] != "outcome:OperationOutcome/<nil>" {
				t.Errorf("lenient outcome entry: %v", es)
			}
			if !strings.Contains(fmt.Sprint(b), "foo") {
				t.Errorf("lenient outcome does not name the parameter: %v", b)
			}
			// a bad value is an error even when lenient
			r := f.s.Do("GET", "Observation?date=soon", f.tok, nil, "Prefer", "handling=lenient")
			if r.Status != 400 {
				t.Errorf("lenient bad value: %d", r.Status)
			}
			// escaping: \, is a literal comma, \| a literal bar
			f.put(t, `{"resourceType":"Patient","id":"esc","identifier":[{"system":"urn:x","value":"a,b|c$d"}]}`)
			got, _ = f.ids(t, f.tok, "Patient?identifier="+url.QueryEscape(`urn:x|a\,b\|c\$d`))
			if !slices.Equal(got, []string{"Patient/esc"}) {
				t.Errorf("escaped identifier: %v", got)
			}
			got, _ = f.ids(t, f.tok, "Patient?identifier="+url.QueryEscape(`urn:x|a,b`))
			if len(got) != 0 {
				t.Errorf("unescaped comma should split: %v", got)
			}
		})
	}
}
