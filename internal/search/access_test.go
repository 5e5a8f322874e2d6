package search_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/store/storetest"
)

func TestAccessControl(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			f := setup(t, d)
			p2 := f.s.Token("patient/*.rs", "p2")
			got, _ := f.ids(t, p2, "Observation")
			if !slices.Equal(got, []string{"Observation/o4"}) {
				t.Errorf("patient p2 sees %v", got)
			}
			got, _ = f.ids(t, p2, "Observation?code=2093-3&_sort=-date")
			if !slices.Equal(got, []string{"Observation/o4"}) {
				t.Errorf("patient p2 code search sees %v", got)
			}
			got, _ = f.ids(t, p2, "Patient")
			if !slices.Equal(got, []string{"Patient/p2"}) {
				t.Errorf("patient p2 sees patients %v", got)
			}
			got, _ = f.ids(t, p2, "Patient/p1/Observation")
			if len(got) != 0 {
				t.Errorf("patient p2 sees p1's compartment: %v", got)
			}
			got, _ = f.ids(t, p2, "Practitioner")
			if !slices.Equal(got, []string{"Practitioner/pr1"}) {
				t.Errorf("shared resources: %v", got)
			}
			got, _ = f.ids(t, p2, "?_type=Observation,Condition,Practitioner")
			if want := []string{"Condition/c3", "Observation/o4", "Practitioner/pr1"}; !slices.Equal(sorted(got), want) {
				t.Errorf("system search of p2: %v", got)
			}
			// includes never leak another patient's data
			_, b := f.ids(t, p2, "Practitioner?_revinclude=Observation:performer&_revinclude=Provenance:agent")
			for _, e := range entries(b) {
				if strings.Contains(e, "Observation/o1") {
					t.Errorf("p2 included %s", e)
				}
			}
			_, b = f.ids(t, p2, "Organization?_revinclude=Patient:organization")
			if want := []string{"match:Organization/org1", "include:Patient/p2"}; !slices.Equal(entries(b), want) {
				t.Errorf("p2 revinclude: %v", entries(b))
			}
			// conditional matching by a patient token sees only its own
			_, b = f.ids(t, p2, "Observation?_has:Condition:subject:code=44054006")
			_ = b
			got, _ = f.ids(t, p2, "Patient?_has:Condition:subject:code=44054006")
			if !slices.Equal(got, []string{"Patient/p2"}) {
				t.Errorf("_has for p2: %v", got)
			}

			// scope filters (SMART v2): only laboratory observations
			lab := f.s.Token("patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory", "p1")
			got, _ = f.ids(t, lab, "Observation")
			if want := []string{"Observation/o1", "Observation/o2"}; !slices.Equal(sorted(got), want) {
				t.Errorf("filtered scope sees %v", got)
			}
			// ...and no Patient read scope: the subject is not included
			_, b = f.ids(t, lab, "Observation?_include=Observation:subject")
			for _, e := range entries(b) {
				if strings.HasPrefix(e, "include:") {
					t.Errorf("filtered scope included %s", e)
				}
			}
			r := f.s.Do("GET", "Condition", lab, nil)
			if r.Status != 403 {
				t.Errorf("search without scope: %d", r.Status)
			}
			// includes are filtered too
			pr := f.s.Token("user/Practitioner.rs user/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs", "")
			_, b = f.ids(t, pr, "Practitioner?_revinclude=Observation:performer")
			if want := []string{"match:Practitioner/pr1"}; !slices.Equal(entries(b), want) {
				t.Errorf("filtered revinclude: %v", entries(b))
			}
			// chained and _has conditions see only what the caller may see
			if got, _ := f.ids(t, f.tok, "Practitioner?_has:Observation:performer:code=2093-3"); len(got) != 1 {
				t.Errorf("admin _has: %v", got)
			}
			if got, _ := f.ids(t, p2, "Practitioner?_has:Observation:performer:code=2093-3"); len(got) != 0 {
				t.Errorf("p2 learns about p1's observations through _has: %v", got)
			}
			if got, _ := f.ids(t, pr, "Practitioner?_has:Observation:performer:status=final"); len(got) != 0 {
				t.Errorf("scope filters ignored in _has: %v", got)
			}
			if got, _ := f.ids(t, p2, "Organization?_has:Patient:organization:name=smith"); !slices.Equal(got, []string{"Organization/org1"}) {
				t.Errorf("p2 _has on its own patient: %v", got)
			}
			if got, _ := f.ids(t, f.s.Token("patient/*.rs", "p3"), "Organization?_has:Patient:organization:name=smith"); len(got) != 0 {
				t.Errorf("p3 learns about other patients through _has: %v", got)
			}
			if got, _ := f.ids(t, p2, "Observation?subject:Patient.name=smith"); !slices.Equal(got, []string{"Observation/o4"}) {
				t.Errorf("p2 chained: %v", got)
			}
			r = f.s.Do("GET", "Patient?_has:Observation:patient:code=8867-4", f.s.Token("user/Patient.rs", ""), nil)
			if r.Status != 403 {
				t.Errorf("_has on a type the token cannot read: %d", r.Status)
			}
			r = f.s.Do("GET", "Observation?subject:Patient.name=smith", f.s.Token("user/Observation.rs", ""), nil)
			if r.Status != 403 {
				t.Errorf("chain into a type the token cannot read: %d", r.Status)
			}
			r = f.s.Do("GET", "Observation", "", nil)
			if r.Status != 401 {
				t.Errorf("no token: %d", r.Status)
			}
		})
	}
}

func TestEverything(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			f := setup(t, d)
			_, b := f.ids(t, f.tok, "Patient/p1/$everything")
			es := entries(b)
			want := []string{"match:Patient/p1", "match:Observation/o1", "match:Observation/o2", "match:Observation/o3", "match:Observation/o5",
				"match:Condition/c1", "match:Condition/c2", "match:RiskAssessment/ra1", "include:Organization/org1", "include:Practitioner/pr1"}
			if !slices.Equal(sorted(es), sorted(want)) {
				t.Errorf("$everything: %v\nwant %v", es, want)
			}
			_, b = f.ids(t, f.tok, "Patient/p1/$everything?_type=AuditEvent,Patient")
			// The server's own audit log (internal/audit) adds AuditEvents
			// about p1 for this test's requests, in the background; only
			// the one written here is compared.
			var got []string
			for _, e := range entries(b) {
				if !strings.HasPrefix(e, "match:AuditEvent/") || e == "match:AuditEvent/ae1" {
					got = append(got, e)
				}
			}
			if want := []string{"match:AuditEvent/ae1", "match:Patient/p1", "include:Organization/org1", "include:Practitioner/pr1"}; !slices.Equal(sorted(got), sorted(want)) {
				t.Errorf("$everything _type=AuditEvent: %v", entries(b))
			}
			_, b = f.ids(t, f.tok, "Patient/p1/$everything?start=2020-01-01&end=2021-12-31&_type=Observation,Condition")
			// o3 (2020) and o2 (2021), c2 has no date
			if want := []string{"match:Observation/o2", "match:Observation/o3", "match:Condition/c2"}; !slices.Equal(sorted(entries(b)), sorted(want)) {
				t.Errorf("$everything start/end: %v", entries(b))
			}
			_, b = f.ids(t, f.tok, "Patient/p1/$everything?_since=2999-01-01T00:00:00Z")
			if len(entries(b)) != 0 {
				t.Errorf("$everything _since future: %v", entries(b))
			}
			// paging through everything returns each resource once
			seen := map[string]bool{}
			next := "Patient/p1/$everything?_count=3"
			for pages := 0; next != ""; pages++ {
				if pages > 10 {
					t.Fatal("too many pages")
				}
				_, b = f.ids(t, f.tok, next)
				for _, e := range entries(b) {
					if strings.HasPrefix(e, "match:") {
						if seen[e] {
							t.Errorf("%s twice", e)
						}
						seen[e] = true
					}
				}
				next = links(t, f, b)["next"]
			}
			if len(seen) != 8 {
				t.Errorf("paged $everything: %d matches %v", len(seen), seen)
			}
			// a patient sees only its own
			r := f.s.Do("GET", "Patient/p1/$everything", f.s.Token("patient/*.rs", "p2"), nil)
			if r.Status != 404 {
				t.Errorf("p2 asking for p1's everything: %d", r.Status)
			}
			_, b = f.ids(t, f.s.Token("patient/*.rs", "p2"), "Patient/p2/$everything")
			if want := []string{"match:Patient/p2", "match:Observation/o4", "match:Condition/c3", "include:Organization/org1"}; !slices.Equal(sorted(entries(b)), sorted(want)) {
				t.Errorf("p2 everything: %v", entries(b))
			}
		})
	}
}

func TestPagingStable(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			f := setup(t, d)
			for i := 0; i < 25; i++ {
				f.put(t, fmt.Sprintf(`{"resourceType":"Observation","id":"pg%02d","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p3"},"effectiveDateTime":"2010-01-%02d"}`, i, 1+i%12))
			}
			var all []string
			var first map[string]any
			next := "Observation?patient=p3&_sort=-date&_count=10"
			for pages := 0; next != ""; pages++ {
				got, b := f.ids(t, f.tok, next)
				if pages == 0 {
					first = b
				}
				if pages == 1 {
					// data changes between pages: a new match sorting
					// before the cursor and one deleted ahead of it
					f.put(t, `{"resourceType":"Observation","id":"pgnew","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p3"},"effectiveDateTime":"2011-01-01"}`)
					// previous link goes back to page one
					prev := links(t, f, b)["previous"]
					back, _ := f.ids(t, f.tok, prev)
					if !slices.Equal(back, all[:10]) {
						t.Errorf("previous page %v, want %v", back, all[:10])
					}
				}
				all = append(all, got...)
				next = links(t, f, b)["next"]
			}
			if first["total"] != 25.0 {
				t.Errorf("total %v", first["total"])
			}
			if len(all) != 25 {
				t.Fatalf("paged %d resources: %v", len(all), all)
			}
			seen := map[string]bool{}
			for _, id := range all {
				if seen[id] {
					t.Errorf("%s twice", id)
				}
				seen[id] = true
			}
			// dates descending, then rid
			got, _ := f.ids(t, f.tok, "Observation?patient=p3&_sort=-date&_count=100")
			if got[0] != "Observation/pgnew" || len(got) != 26 {
				t.Errorf("after insert: %v", got)
			}
		})
	}
}

// TestAuditEventsStayOutOfWildcards checks that the AuditEvents the server
// writes for every access (they are in the patient compartment) do not
// swamp wildcard retrievals, but can be asked for with _type.
func TestAuditEventsStayOutOfWildcards(t *testing.T) {
	f := setup(t, "sqlite")
	p1 := f.s.Token("patient/*.rs", "p1")
	for i := 0; i < 3; i++ {
		f.ids(t, p1, "Observation?code=2093-3")
		f.ids(t, p1, "Patient/p1")
	}
	if err := f.s.App.Audit.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	audits, _ := f.ids(t, f.tok, "AuditEvent?patient=p1")
	if len(audits) < 6 {
		t.Fatalf("expected the server's AuditEvents for p1, got %v", audits)
	}
	for _, q := range []string{"Patient/p1/$everything?_count=1000", "Patient/p1/*?_count=1000", "Patient?_id=p1&_revinclude=*", "Observation?_id=o1&_include=*&_revinclude=*"} {
		_, b := f.ids(t, f.tok, q)
		for _, e := range entries(b) {
			if strings.Contains(e, "AuditEvent") {
				t.Errorf("%s returned %s", q, e)
			}
		}
	}
	got, _ := f.ids(t, f.tok, "Patient/p1/$everything?_type=AuditEvent&_count=1000")
	if len(got) < len(audits) {
		t.Errorf("$everything?_type=AuditEvent: %d, want at least %d", len(got), len(audits))
	}
	got, _ = f.ids(t, f.tok, "Patient/p1/*?_type=AuditEvent&_count=1000")
	if len(got) < len(audits) {
		t.Errorf("Patient/p1/*?_type=AuditEvent: %d, want at least %d", len(got), len(audits))
	}
}
