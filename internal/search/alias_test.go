package search_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/store/storetest"
)

// aliasResources add to the fixture what tells an alias parameter from a
// careless reading of its sources: an Observation whose code and values
// are only in components, one with a coded value, one whose subject is a
// Group, a Patient-compartment type whose compartment parameter (subject)
// is an alias of patient, and a type whose patient parameter is no alias.
var aliasResources = []string{
	`{"resourceType":"Group","id":"g1","type":"person","actual":true}`,
	`{"resourceType":"Observation","id":"oc","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"55284-4"}]},"subject":{"reference":"Patient/p2"},"component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":140,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}},{"code":{"coding":[{"system":"http://loinc.org","code":"72166-2"}]},"valueCodeableConcept":{"coding":[{"system":"http://snomed.info/sct","code":"8517006"}]}}]}`,
	`{"resourceType":"Observation","id":"oq","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"72166-2"}]},"subject":{"reference":"Patient/p1"},"valueCodeableConcept":{"coding":[{"system":"http://snomed.info/sct","code":"266919005"}]}}`,
	`{"resourceType":"Observation","id":"og","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2093-3"}]},"subject":{"reference":"Group/g1"},"valueQuantity":{"value":190,"unit":"mg/dL","system":"http://unitsofmeasure.org","code":"mg/dL"}}`,
	`{"resourceType":"Device","id":"d1"}`,
	`{"resourceType":"DeviceUseStatement","id":"dus1","status":"active","subject":{"reference":"Patient/p1"},"device":{"reference":"Device/d1"}}`,
	`{"resourceType":"Immunization","id":"im1","status":"completed","vaccineCode":{"coding":[{"system":"http://hl7.org/fhir/sid/cvx","code":"140"}]},"patient":{"reference":"Patient/p1"},"occurrenceDateTime":"2020-01-01"}`,
}

// TestAliasSearches: a search by an alias parameter (index.AliasOf), whose
// entries are read from its sources', finds what searches by the sources
// find, on both stores: plain values, modifiers, :missing, composites,
// sorting, chains, _has, _include, _revinclude, several types at once and
// compartments.
func TestAliasSearches(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			f := setup(t, d)
			for _, r := range aliasResources {
				f.put(t, r)
			}
			get := func(q string) []string {
				got, _ := f.ids(t, f.tok, q)
				return sorted(got)
			}
			union := func(qs ...string) []string {
				var out []string
				for _, q := range qs {
					out = append(out, get(q)...)
				}
				return slices.Compact(sorted(out))
			}
			minus := func(a, b []string) []string {
				var out []string
				for _, x := range a {
					if !slices.Contains(b, x) {
						out = append(out, x)
					}
				}
				return out
			}
			check := func(what string, got, want []string, nonEmpty bool) {
				t.Helper()
				if !slices.Equal(got, want) {
					t.Errorf("%s:\n got %v\nwant %v", what, got, want)
				}
				if nonEmpty && len(want) == 0 {
					t.Errorf("%s: nothing found: the case tests nothing", what)
				}
			}
			same := func(alias string, sources ...string) {
				t.Helper()
				check(alias, get(alias), union(sources...), true)
			}
			all := get("Observation?_count=1000")

			// combo-*: the union of the parameter and its component one
			for _, v := range []string{"http://loinc.org|8480-6", "8480-6", "2093-3,8480-6", "http://loinc.org|72166-2", "http://loinc.org|"} {
				same("Observation?combo-code="+v, "Observation?code="+v, "Observation?component-code="+v)
			}
			same("Observation?combo-code:text=blood", "Observation?code:text=blood", "Observation?component-code:text=blood")
			check("combo-code:not", get("Observation?combo-code:not=8480-6"),
				minus(all, union("Observation?code=8480-6", "Observation?component-code=8480-6")), true)
			same("Observation?combo-code:missing=false", "Observation?code:missing=false", "Observation?component-code:missing=false")
			check("combo-value-quantity:missing=true", get("Observation?combo-value-quantity:missing=true"),
				minus(all, union("Observation?value-quantity:missing=false", "Observation?component-value-quantity:missing=false")), true)
			for _, v := range []string{"gt100", "lt100", "140|http://unitsofmeasure.org|mm[Hg]", "ge150||mg/dL"} {
				same("Observation?combo-value-quantity="+v, "Observation?value-quantity="+v, "Observation?component-value-quantity="+v)
			}
			for _, v := range []string{"http://snomed.info/sct|8517006", "266919005,8517006"} {
				same("Observation?combo-value-concept="+v, "Observation?value-concept="+v, "Observation?component-value-concept="+v)
			}
			for _, v := range []string{"http://loinc.org|8480-6$gt100", "2093-3$gt200", "8462-4$lt100,2093-3$lt160"} {
				same("Observation?combo-code-value-quantity="+v, "Observation?code-value-quantity="+v, "Observation?component-code-value-quantity="+v)
			}
			for _, v := range []string{"http://loinc.org|72166-2$http://snomed.info/sct|8517006", "72166-2$266919005"} {
				same("Observation?combo-code-value-concept="+v, "Observation?code-value-concept="+v, "Observation?component-code-value-concept="+v)
			}
			// AND of an alias with another clause, and with its own source
			same("Observation?combo-code=8480-6&subject=Patient/p2", "Observation?component-code=8480-6&subject=Patient/p2")
			same("Observation?combo-code=2093-3&code=2093-3&combo-value-quantity=gt180", "Observation?code=2093-3&value-quantity=gt180")
			// sorted by the smallest of the values and component values
			got, _ := f.ids(t, f.tok, "Observation?combo-value-quantity:missing=false&_sort=combo-value-quantity")
			check("_sort=combo-value-quantity", got, []string{"Observation/o3", "Observation/o5", "Observation/oc", "Observation/o4", "Observation/o1", "Observation/og", "Observation/o2"}, true)
			got, _ = f.ids(t, f.tok, "Observation?combo-value-quantity:missing=false&_sort=-combo-value-quantity")
			check("_sort=-combo-value-quantity", got, []string{"Observation/o2", "Observation/og", "Observation/o1", "Observation/o4", "Observation/oc", "Observation/o5", "Observation/o3"}, true)

			// patient: the subject references to a Patient, never the Group
			same("Observation?patient=Patient/p1", "Observation?subject:Patient=Patient/p1")
			same("Observation?patient=p1", "Observation?subject:Patient=p1")
			same("Observation?patient=p1,p2", "Observation?subject:Patient=p1", "Observation?subject:Patient=p2")
			check("patient=Group/g1", get("Observation?patient=Group/g1"), nil, false)
			check("subject=Group/g1", get("Observation?subject=Group/g1"), []string{"Observation/og"}, true)
			check("patient:missing=true", get("Observation?patient:missing=true"), []string{"Observation/o6", "Observation/og"}, true)
			check("patient:missing=false", get("Observation?patient:missing=false"), minus(all, []string{"Observation/o6", "Observation/og"}), true)
			check("patient:identifier", get("Observation?patient:identifier=urn:mrn|A1"), nil, false)
			same("Observation?patient:Patient=p2", "Observation?subject:Patient=p2")
			same("Condition?patient=p1", "Condition?subject:Patient=p1")
			same("DeviceUseStatement?subject=Patient/p1", "DeviceUseStatement?patient=Patient/p1")
			// chains and _has
			same("Observation?patient.name=smith", "Observation?subject:Patient.name=smith")
			same("Observation?patient.gender=female&combo-code=8480-6", "Observation?subject:Patient.gender=female&component-code=8480-6")
			same("Patient?_has:Observation:patient:code=2093-3", "Patient?_has:Observation:subject:code=2093-3")
			same("Patient?_has:Observation:patient:combo-code=8480-6", "Patient?_has:Observation:subject:component-code=8480-6")
			check("Group _has patient", get("Group?_has:Observation:patient:code=2093-3"), nil, false)
			check("Group _has subject", get("Group?_has:Observation:subject:code=2093-3"), []string{"Group/g1"}, true)
			// several types: an alias for one, a parameter of its own for the other
			same("?_type=Observation,Immunization&patient=Patient/p1", "Observation?patient=Patient/p1", "Immunization?patient=Patient/p1")
			same("?_type=Observation,Immunization&patient:missing=true", "Observation?patient:missing=true", "Immunization?patient:missing=true")
			// _include and _revinclude
			inc := func(q string) []string {
				_, b := f.ids(t, f.tok, q)
				var out []string
				entries, _ := b["entry"].([]any)
				for _, e := range entries {
					em := e.(map[string]any)
					if em["search"].(map[string]any)["mode"] == "include" {
						res := em["resource"].(map[string]any)
						out = append(out, fmt.Sprint(res["resourceType"], "/", res["id"]))
					}
				}
				return sorted(out)
			}
			check("_include=Observation:patient", inc("Observation?code=2093-3&_include=Observation:patient"),
				inc("Observation?code=2093-3&_include=Observation:subject:Patient"), true)
			check("_include=Observation:patient (Group)", inc("Observation?_id=og&_include=Observation:patient"), nil, false)
			check("_revinclude=Observation:patient", inc("Patient?_id=p1,p2&_revinclude=Observation:patient"),
				inc("Patient?_id=p1,p2&_revinclude=Observation:subject"), true)
			check("_revinclude=Observation:patient (Group)", inc("Group?_id=g1&_revinclude=Observation:patient"), nil, false)
			// compartments rest on the sources' Patient references
			check("Patient/p1/Condition", get("Patient/p1/Condition"), []string{"Condition/c1", "Condition/c2"}, true)
			check("Patient/p1/DeviceUseStatement", get("Patient/p1/DeviceUseStatement"), []string{"DeviceUseStatement/dus1"}, true)
			same("Patient/p2/Observation", "Observation?subject=Patient/p2")
			// the CapabilityStatement still lists the aliases
			r := f.s.Do("GET", "metadata", "", nil)
			for _, p := range []string{`"combo-code"`, `"combo-code-value-quantity"`, `"patient"`} {
				if !strings.Contains(string(r.Body), `"name":`+p) && !strings.Contains(string(r.Body), `"name": `+p) {
					t.Errorf("the CapabilityStatement does not list %s", p)
				}
			}
		})
	}
}
