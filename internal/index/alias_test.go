package index

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/r4"
)

// TestAliasesDerived checks that the derivation finds the aliases the
// store relies on most (a change of it would leave rows it no longer
// reads, or drop rows it still needs) and that none is a source.
func TestAliasesDerived(t *testing.T) {
	want := map[string]Alias{
		"Observation.combo-code":                {Sources: []string{"code", "component-code"}},
		"Observation.combo-value-quantity":      {Sources: []string{"component-value-quantity", "value-quantity"}},
		"Observation.combo-code-value-quantity": {Sources: []string{"code-value-quantity", "component-code-value-quantity"}},
		"Observation.combo-code-value-concept":  {Sources: []string{"code-value-concept", "component-code-value-concept"}},
		"Observation.patient":                   {Sources: []string{"subject"}, TargetType: "Patient"},
		"DiagnosticReport.patient":              {Sources: []string{"subject"}, TargetType: "Patient"},
		"Encounter.practitioner":                {Sources: []string{"participant"}, TargetType: "Practitioner"},
		"AuditEvent.patient":                    {Sources: []string{"agent", "entity"}, TargetType: "Patient"},
		"Patient.phonetic":                      {Sources: []string{"name"}},
	}
	for k, w := range want {
		rt, code, _ := strings.Cut(k, ".")
		got, ok := AliasOf(rt, code)
		if !ok || !slices.Equal(got.Sources, w.Sources) || got.TargetType != w.TargetType {
			t.Errorf("AliasOf(%s, %s) = %+v, %v; want %+v", rt, code, got, ok, w)
		}
	}
	// Claim's patient is Claim.patient, Provenance's is widened
	// (expressionOverrides): no alias
	for _, k := range []string{"Claim.patient", "Provenance.patient", "Observation.subject", "Observation.code"} {
		rt, code, _ := strings.Cut(k, ".")
		if a, ok := AliasOf(rt, code); ok {
			t.Errorf("%s is an alias of %+v", k, a)
		}
	}
	n := 0
	for _, rt := range r4.ResourceTypes() {
		for code, a := range Aliases(rt) {
			n++
			for _, s := range a.Sources {
				if _, ok := AliasOf(rt, s); ok {
					t.Errorf("%s.%s: source %s is an alias too", rt, code, s)
				}
			}
		}
	}
	t.Logf("%d aliases", n)
}

// TestAliasesMatchSources checks the derivation against extraction: for
// every R4 example and the resources of ten Synthea patients, the entries
// each alias's own expression gives are exactly its sources' entries
// (those whose target type is the alias's, for a restricted one).
func TestAliasesMatchSources(t *testing.T) {
	var rs []*fhirjson.Value
	dir := sharedData(t, "r4-spec-examples")
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples in %s: %v", dir, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		v, err := fhirjson.Parse(data)
		if err != nil {
			continue
		}
		rs = append(rs, v)
		// the resources of example Bundles too
		entries := v.Get("entry")
		if entries == nil || entries.Kind != fhirjson.Array {
			continue
		}
		for _, e := range entries.Items {
			if r := e.Get("resource"); r != nil && r.Kind == fhirjson.Object {
				rs = append(rs, r)
			}
		}
	}
	rs = append(rs, loadSynthea(t, 10)...)
	// a contained reference to nothing, with a type: resolve() takes the
	// type, as the index does
	dangling, err := fhirjson.Parse([]byte(`{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"#gone","type":"Patient"}}`))
	if err != nil {
		t.Fatal(err)
	}
	rs = append(rs, dangling)
	checked, nonEmpty := 0, 0
	for _, r := range rs {
		rt := r.GetString("resourceType")
		aliases := Aliases(rt)
		if len(aliases) == 0 {
			continue
		}
		e, err := extractAll(rt, r)
		if err != nil && e.Len() == 0 {
			continue
		}
		for code, a := range aliases {
			checked++
			got := sortedSet(show(e, code))
			var want []string
			for _, s := range a.Sources {
				if a.TargetType == "" {
					want = append(want, show(e, s)...)
					continue
				}
				for _, x := range e.Refs {
					if x.Param == s && x.Type == a.TargetType {
						want = append(want, showRef(x))
					}
				}
			}
			want = sortedSet(want)
			if len(got) > 0 {
				nonEmpty++
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s/%s: alias %s (of %+v) gives\n\t%s\nits sources give\n\t%s", rt, r.GetString("id"), code, a,
					strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
			}
		}
	}
	t.Logf("%d resources, %d alias checks, %d with entries", len(rs), checked, nonEmpty)
	if nonEmpty < 1000 {
		t.Errorf("only %d alias checks had entries: the test covers too little", nonEmpty)
	}
}

func sortedSet(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// TestExtractLeavesAliasesOut: Extract writes no entries of an alias.
func TestExtractLeavesAliasesOut(t *testing.T) {
	rs := readBundle(t, sharedData(t, syntheaPatient))
	e, err := Extract("Observation", find(t, rs, "d0b333f1-1daf-03ed-494a-a7231a113a78"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range params(&e) {
		if _, ok := AliasOf("Observation", p); ok {
			t.Errorf("Extract gave entries of the alias %s", p)
		}
	}
	if len(show(&e, "component-code")) != 2 || len(show(&e, "subject")) != 1 {
		t.Errorf("the sources' entries are missing:\n%s", dump(&e))
	}
}

// TestAliasMigration: the migrations that delete the rows of aliases
// (migrations/*/NNNN_alias*.sql) name every alias the derivation finds,
// and nothing else: a derivation that finds more needs a migration that
// deletes their rows too.
func TestAliasMigration(t *testing.T) {
	want := map[string]bool{}
	for _, rt := range r4.ResourceTypes() {
		for code := range Aliases(rt) {
			want["('"+rt+"', '"+code+"')"] = true
		}
	}
	pair := regexp.MustCompile(`\('[A-Za-z]+', '[a-z_-]+'\)`)
	for _, dialect := range []string{"sqlite", "postgres"} {
		files, _ := filepath.Glob(filepath.Join("..", "store", "sqldb", "migrations", dialect, "*_alias*.sql"))
		if len(files) == 0 {
			t.Fatalf("%s: no alias migration", dialect)
		}
		got := map[string]bool{}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range pair.FindAllString(string(data), -1) {
				got[m] = true
			}
		}
		for k := range want {
			if !got[k] {
				t.Errorf("%s: the migrations do not delete the rows of alias %s", dialect, k)
			}
		}
		for k := range got {
			if !want[k] {
				t.Errorf("%s: the migrations delete the rows of %s, which is no alias", dialect, k)
			}
		}
	}
}
