package portal_test

import (
	"fmt"
	"github.com/phr-project/phr/internal/store/storetest"
	"html"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestOverview(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) { testOverview(t, d) })
	}
}

func testOverview(t *testing.T, dialect string) {
	e := start(t, dialect)
	e.seed()
	c := e.login("patient", "alice")
	p := e.get("/p/alice/", c)
	if p.Status != 200 {
		t.Fatalf("overview: %d\n%s", p.Status, clip(p.Body))
	}
	p.mustContain(t, "overview", "Alice Anders", "1970-02-03", "Active problems", `<a href="/p/alice/r/Condition/cond-a">Hypertension</a>`,
		"Current medications", "Allergies", "Immunizations", "Recent encounters", `href="/p/alice/timeline?type=Condition"`)
	p.mustNotContain(t, "overview", "Berg", "bob-only-value", `class="error"`)
}

var nextRE = regexp.MustCompile(`href="([^"]*)" rel="next"`)
var itemRE = regexp.MustCompile(`<li data-type="([A-Za-z]+)"><span class="type">[A-Za-z]+</span> <a href="/p/alice/r/[A-Za-z]+/([^"]+)">`)

func TestTimelinePagingAndFilters(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) { testTimelinePagingAndFilters(t, d) })
	}
}

func testTimelinePagingAndFilters(t *testing.T, dialect string) {
	e := start(t, dialect)
	e.seed()
	// 70 more observations on 35 instants (two per instant) so pages
	// split ties.
	for i := 0; i < 70; i++ {
		e.put(fmt.Sprintf(`{"resourceType":"Observation","id":"hr-%02d","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}]},"subject":{"reference":"Patient/alice"},"effectiveDateTime":"2021-03-%02dT08:00:00+01:00","valueQuantity":{"value":%d,"unit":"/min"}}`, i, 1+i/2%28, 60+i))
	}
	// And one entry without a date: listed once, apart.
	e.put(`{"resourceType":"Procedure","id":"undated-p","status":"completed","code":{"text":"Appendectomy"},"subject":{"reference":"Patient/alice"}}`)
	c := e.login("patient", "alice")
	seen := map[string]bool{}
	var order []string
	path := "/p/alice/timeline"
	for pages := 0; path != ""; pages++ {
		if pages > 10 {
			t.Fatal("timeline paging does not end")
		}
		p := e.get(path, c)
		if p.Status != 200 {
			t.Fatalf("GET %s: %d\n%s", path, p.Status, clip(p.Body))
		}
		for _, m := range itemRE.FindAllStringSubmatch(p.Body, -1) {
			k := m[1] + "/" + m[2]
			if seen[k] {
				t.Errorf("%s shown twice (page %d)", k, pages)
			}
			seen[k] = true
			order = append(order, k)
		}
		path = ""
		if m := nextRE.FindStringSubmatch(p.Body); m != nil {
			path = "/p/alice/timeline" + html.UnescapeString(m[1])
		}
	}
	// 70 + 3 cholesterol + 1 weight + 1 condition + 1 undated; never bob's.
	if len(order) != 76 || !seen["Procedure/undated-p"] {
		t.Errorf("timeline showed %d entries, want 76 with Procedure/undated-p: %v", len(order), order)
	}
	if seen["Observation/secret-b"] {
		t.Error("alice's timeline shows bob's observation")
	}
	// Newest first: the oldest dated entry is the 2014 condition.
	if i := slices.Index(order, "Condition/cond-a"); i < 0 || order[len(order)-1] != "Condition/cond-a" && order[len(order)-2] != "Condition/cond-a" {
		t.Errorf("the 2014 condition is not the oldest entry: %v", order)
	}
	// Type filter.
	p := e.get("/p/alice/timeline?type=Condition", c)
	if got := itemRE.FindAllStringSubmatch(p.Body, -1); len(got) != 1 || got[0][2] != "cond-a" {
		t.Errorf("type=Condition shows %v", got)
	}
	// Date filter: only the 2016-2017 cholesterol values.
	p = e.get("/p/alice/timeline?from=2016-01-01&to=2017-12-31", c)
	got := itemRE.FindAllStringSubmatch(p.Body, -1)
	if len(got) != 2 || got[0][2] != "chol-c" || got[1][2] != "chol-b" {
		t.Errorf("from 2016 to 2017 shows %v, want chol-c, chol-b", got)
	}
	// Bad filters say what is wrong.
	if p := e.get("/p/alice/timeline?from=yesterday", c); p.Status != 400 || !strings.Contains(p.Body, "from: &#34;yesterday&#34; is not a date") {
		t.Errorf("bad from: %d %s", p.Status, clip(p.Body))
	}
	if p := e.get("/p/alice/timeline?type=Bogus", c); p.Status != 400 || !strings.Contains(p.Body, "type: &#34;Bogus&#34;") {
		t.Errorf("bad type: %d", p.Status)
	}
}

func TestResultsCharts(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) { testResultsCharts(t, d) })
	}
}

func testResultsCharts(t *testing.T, dialect string) {
	e := start(t, dialect)
	e.seed()
	e.put(`{"resourceType":"Observation","id":"bp-1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},"subject":{"reference":"Patient/alice"},"effectiveDateTime":"2019-05-01T09:00:00Z","component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":128,"unit":"mm[Hg]"}},{"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":82,"unit":"mm[Hg]"}}]}`)
	e.put(`{"resourceType":"Observation","id":"bp-2","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},"subject":{"reference":"Patient/alice"},"effectiveDateTime":"2020-05-01T09:00:00Z","component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":121,"unit":"mm[Hg]"}},{"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":79,"unit":"mm[Hg]"}}]}`)
	c := e.login("patient", "alice")
	p := e.get("/p/alice/results", c)
	if p.Status != 200 {
		t.Fatalf("results: %d\n%s", p.Status, clip(p.Body))
	}
	p.mustContain(t, "results", `<a href="/p/alice/results?code=2093-3">Total cholesterol</a>`, `<svg class="chart"`, "Blood pressure", "Body weight", "121 mm[Hg] / 79 mm[Hg]")
	p = e.get("/p/alice/results?code=2093-3", c)
	p.mustContain(t, "cholesterol chart", "<polyline", "3 values from 2015-06-01 to 2017-06-01", "195.25 mg/dL", "180.5 mg/dL")
	if strings.Index(p.Body, "195.25 mg/dL</td>") > strings.Index(p.Body, "180.5 mg/dL</td>") {
		t.Error("the values table is not newest first")
	}
	if n := strings.Count(p.Body, `<circle class="pt s0"`); n != 3 {
		t.Errorf("cholesterol chart has %d points, want 3", n)
	}
	p = e.get("/p/alice/results?code=85354-9", c)
	p.mustContain(t, "blood pressure chart", `class="line s0"`, `class="line s1"`, "Systolic", "Diastolic", "<td>128 mm[Hg]</td><td>82 mm[Hg]</td>")
	if p := e.get("/p/alice/results?code=drop%20table", c); p.Status != 400 {
		t.Errorf("bad code: %d", p.Status)
	}
}
