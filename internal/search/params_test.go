package search_test

import (
	"slices"
	"sort"
	"testing"

	"github.com/phr-project/phr/internal/r4"
	"github.com/phr-project/phr/internal/search"
	"github.com/phr-project/phr/internal/server/servertest"
)

// leftOut are the standard search parameters search does not support,
// with the reason; nothing else is left out, and these are not in the
// CapabilityStatement. (Parameters indexed only in part are listed by
// the index package's own test of index.Unsupported.)
var leftOut = map[string]string{
	"http://hl7.org/fhir/SearchParameter/DomainResource-text": "_text searches the narrative: needs full-text search",
	"http://hl7.org/fhir/SearchParameter/Resource-content":    "_content searches the whole resource: needs full-text search",
	"http://hl7.org/fhir/SearchParameter/Resource-query":      "_query names a custom named query",
	"http://hl7.org/fhir/SearchParameter/Location-near":       "special: geographic distance",
}

func TestUnsupportedParametersListed(t *testing.T) {
	seen := map[string]bool{}
	var got []string
	for _, rt := range r4.ResourceTypes() {
		supported := map[string]bool{}
		for _, sp := range search.Params(rt) {
			supported[sp.Code] = true
		}
		for code, sp := range r4.SearchParams(rt) {
			if !supported[code] && !seen[sp.URL] {
				seen[sp.URL] = true
				got = append(got, sp.URL)
			}
		}
	}
	sort.Strings(got)
	var want []string
	for u := range leftOut {
		want = append(want, u)
	}
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("parameters left out of search:\n got %v\nwant %v", got, want)
	}
}

func TestCapabilityStatementListsSearch(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	b := s.Do("GET", "metadata", "", nil).JSON(t)
	rest := b["rest"].([]any)[0].(map[string]any)
	if !slices.ContainsFunc(rest["interaction"].([]any), func(x any) bool { return x.(map[string]any)["code"] == "search-system" }) {
		t.Error("no search-system interaction")
	}
	for _, r := range rest["resource"].([]any) {
		res := r.(map[string]any)
		typ := res["type"].(string)
		var names []string
		sps, _ := res["searchParam"].([]any)
		for _, sp := range sps {
			m := sp.(map[string]any)
			names = append(names, m["name"].(string))
			if _, out := leftOut[m["definition"].(string)]; out {
				t.Errorf("%s lists unsupported %s", typ, m["name"])
			}
		}
		var want []string
		for _, sp := range search.Params(typ) {
			want = append(want, sp.Code)
		}
		if !slices.Equal(names, want) {
			t.Errorf("%s search parameters: %v, want %v", typ, names, want)
		}
		if typ == "Observation" && (!slices.Contains(names, "code-value-quantity") || !slices.Contains(names, "_lastUpdated")) {
			t.Errorf("Observation: %v", names)
		}
	}
	if b := s.Do("GET", "Patient?_text=x", s.AdminToken(), nil); b.Status != 400 {
		t.Errorf("_text is not implemented and must say so: %d", b.Status)
	}
}
