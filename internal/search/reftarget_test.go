package search_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// TestReferenceTargetWrittenLater checks the two ways reference rows name
// their target: by its rid when it exists as they are written, and by
// type and id when it does not yet (target_rid 0). Rows of both kinds
// must be found by every search that follows references backwards to a
// target: the reference itself (typed and by id alone), _has,
// _revinclude and a chain.
func TestReferenceTargetWrittenLater(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			f := &fixture{s: servertest.Start(t, d)}
			f.tok = f.s.AdminToken()
			obs := func(id string) string {
				return `{"resourceType":"Observation","id":"` + id + `","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"1-8"}]},"subject":{"reference":"Patient/late"}}`
			}
			// o1 names Patient/late before it exists, o2 after.
			f.put(t, obs("o1"))
			f.put(t, `{"resourceType":"Patient","id":"late","name":[{"family":"Laterman"}]}`)
			f.put(t, obs("o2"))
			f.put(t, `{"resourceType":"Patient","id":"other","name":[{"family":"Laterman"}]}`)
			f.put(t, `{"resourceType":"Observation","id":"o3","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"1-8"}]},"subject":{"reference":"Patient/other"}}`)

			ctx := context.Background()
			rows, err := f.s.App.Store.Query(ctx, `SELECT r.id, x.target_rid, COALESCE(t.id, '') FROM idx_ref x JOIN resource r ON r.rid = x.rid LEFT JOIN resource t ON t.rid = x.target_rid WHERE r.type = 'Observation' AND x.target_id = 'late' ORDER BY r.id`)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for rows.Next() {
				var id, target string
				var rid int64
				if err := rows.Scan(&id, &rid, &target); err != nil {
					t.Fatal(err)
				}
				got = append(got, fmt.Sprintf("%s:%v:%s", id, rid != 0, target))
			}
			rows.Close()
			if want := []string{"o1:false:", "o2:true:late"}; !slices.Equal(got, want) {
				t.Fatalf("reference rows (id:resolved:target) = %v, want %v", got, want)
			}

			both := []string{"Observation/o1", "Observation/o2"}
			for _, c := range []struct {
				q    string
				want []string
			}{
				{"Observation?subject=Patient/late", both},
				{"Observation?subject=late", both},
				{"Observation?subject:Patient=late", both},
				{"Observation?patient=Patient/late", both},
				{"Observation?subject:Patient.family=Laterman&_id=o1,o2,o3", []string{"Observation/o1", "Observation/o2", "Observation/o3"}},
				{"Patient?_has:Observation:subject:_id=o1", []string{"Patient/late"}},
				{"Patient?_has:Observation:subject:_id=o2", []string{"Patient/late"}},
				{"Patient?_has:Observation:patient:code=1-8", []string{"Patient/late", "Patient/other"}},
				{"Observation?subject=Patient/nobody", nil},
			} {
				if got, _ := f.ids(t, f.tok, c.q); !slices.Equal(sorted(got), c.want) {
					t.Errorf("%s: %v, want %v", c.q, got, c.want)
				}
			}
			r := f.s.Do("GET", "Patient?_id=late&_revinclude=Observation:subject", f.tok, nil)
			if r.Status != 200 {
				t.Fatalf("_revinclude: %d %s", r.Status, r.Body)
			}
			var all []string
			entries, _ := r.JSON(t)["entry"].([]any)
			for _, e := range entries {
				res := e.(map[string]any)["resource"].(map[string]any)
				all = append(all, fmt.Sprint(res["resourceType"], "/", res["id"]))
			}
			if want := []string{"Observation/o1", "Observation/o2", "Patient/late"}; !slices.Equal(sorted(all), want) {
				t.Errorf("_revinclude: %v, want %v", all, want)
			}
		})
	}
}
