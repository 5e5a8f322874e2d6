package search_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// fixture is a small record: two patients with observations, conditions
// and references to shared resources.
type fixture struct {
	s   *servertest.Server
	tok string
}

func (f *fixture) put(t *testing.T, res string) {
	t.Helper()
	var m struct {
		ResourceType string `json:"resourceType"`
		ID           string `json:"id"`
	}
	if err := jsonUnmarshal([]byte(res), &m); err != nil {
		t.Fatalf("bad fixture %s: %v", res, err)
	}
	r := f.s.Do("PUT", m.ResourceType+"/"+m.ID, f.tok, res)
	if r.Status != 200 && r.Status != 201 {
		t.Fatalf("PUT %s/%s: %d %s", m.ResourceType, m.ID, r.Status, r.Body)
	}
}

var resources = []string{
	`{"resourceType":"Organization","id":"org1","name":"General Hospital","identifier":[{"system":"urn:org","value":"G1"}]}`,
	`{"resourceType":"Practitioner","id":"pr1","name":[{"family":"Welby","given":["Marcus"]}],"identifier":[{"system":"urn:npi","value":"123"}]}`,
	`{"resourceType":"Patient","id":"p1","name":[{"family":"Smith","given":["José"]}],"gender":"male","birthDate":"1970-05-01","managingOrganization":{"reference":"Organization/org1"},"generalPractitioner":[{"reference":"Practitioner/pr1"}],"identifier":[{"system":"urn:mrn","value":"A1","type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"MR"}]}}],"telecom":[{"system":"email","value":"js@example.org"}]}`,
	`{"resourceType":"Patient","id":"p2","name":[{"family":"Smithson","given":["Ann"]}],"gender":"female","birthDate":"1985","managingOrganization":{"reference":"Organization/org1"}}`,
	`{"resourceType":"Patient","id":"p3","name":[{"family":"Jones, Jr","given":["Bob"]}],"gender":"male","active":true}`,
	`{"resourceType":"Observation","id":"o1","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"2093-3","display":"Cholesterol"}],"text":"Cholesterol total"},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2019-03-10T10:00:00+01:00","valueQuantity":{"value":180,"unit":"mg/dL","system":"http://unitsofmeasure.org","code":"mg/dL"},"performer":[{"reference":"Practitioner/pr1"}]}`,
	`{"resourceType":"Observation","id":"o2","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"2093-3"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2021-07","valueQuantity":{"value":215.5,"unit":"mg/dL","system":"http://unitsofmeasure.org","code":"mg/dL"}}`,
	`{"resourceType":"Observation","id":"o3","status":"amended","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}]},"subject":{"reference":"Patient/p1"},"effectivePeriod":{"start":"2020-01-01","end":"2020-01-03"},"valueQuantity":{"value":72,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}`,
	`{"resourceType":"Observation","id":"o4","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2093-3"}]},"subject":{"reference":"Patient/p2"},"effectiveDateTime":"2018-12-31T23:30:00-05:00","valueQuantity":{"value":150,"unit":"mg/dL","system":"http://unitsofmeasure.org","code":"mg/dL"}}`,
	`{"resourceType":"Observation","id":"o5","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"85354-9","display":"Blood pressure"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2022-02-02","component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":120,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}},{"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":80,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}]}`,
	`{"resourceType":"Condition","id":"c1","clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]},"code":{"coding":[{"system":"http://snomed.info/sct","code":"44054006","display":"Diabetes"}]},"subject":{"reference":"Patient/p1"},"onsetDateTime":"2015"}`,
	`{"resourceType":"Condition","id":"c2","clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"resolved"}]},"code":{"coding":[{"system":"http://snomed.info/sct","code":"195662009"}]},"subject":{"reference":"Patient/p1"}}`,
	`{"resourceType":"Condition","id":"c3","clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]},"code":{"coding":[{"system":"http://snomed.info/sct","code":"44054006"}]},"subject":{"reference":"Patient/p2"}}`,
	`{"resourceType":"Provenance","id":"prov1","target":[{"reference":"Observation/o1"}],"recorded":"2019-03-11T00:00:00Z","agent":[{"who":{"reference":"Practitioner/pr1"}}]}`,
	`{"resourceType":"ValueSet","id":"vs1","url":"http://example.org/fhir/ValueSet/a/b","status":"active"}`,
	`{"resourceType":"RiskAssessment","id":"ra1","status":"final","subject":{"reference":"Patient/p1"},"prediction":[{"probabilityDecimal":0.25}]}`,
	`{"resourceType":"Observation","id":"o6","meta":{"tag":[{"system":"urn:tags","code":"imported"}],"profile":["http://example.org/StructureDefinition/obs"],"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}],"source":"http://lab.example.org/feed"},"status":"preliminary","code":{"text":"Glucose, fasting"},"subject":{"identifier":{"system":"urn:mrn","value":"A1"}}}`,
	`{"resourceType":"AuditEvent","id":"ae1","type":{"system":"http://dicom.nema.org/resources/ontology/DCM","code":"110110"},"recorded":"2023-01-01T00:00:00Z","agent":[{"who":{"reference":"Patient/p1"},"requestor":true}],"source":{"observer":{"reference":"Organization/org1"}},"entity":[{"what":{"reference":"Patient/p1"}}]}`,
}

func setup(t *testing.T, dialect string) *fixture {
	s := servertest.Start(t, dialect)
	f := &fixture{s: s, tok: s.AdminToken()}
	for _, r := range resources {
		f.put(t, r)
	}
	return f
}

// ids runs a search and returns the sorted "Type/id" of its matches.
func (f *fixture) ids(t *testing.T, tok, path string, headers ...string) ([]string, map[string]any) {
	t.Helper()
	r := f.s.Do("GET", path, tok, nil, headers...)
	if r.Status != 200 {
		t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
	}
	b := r.JSON(t)
	var out []string
	entries, _ := b["entry"].([]any)
	for _, e := range entries {
		em := e.(map[string]any)
		res := em["resource"].(map[string]any)
		if em["search"].(map[string]any)["mode"] != "match" {
			continue
		}
		out = append(out, fmt.Sprint(res["resourceType"], "/", res["id"]))
	}
	return out, b
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}

func TestSearchTypes(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			f := setup(t, d)
			cases := []struct {
				q    string
				want string
			}{
				// token
				{"Observation?code=http://loinc.org|2093-3", "o1 o2 o4"},
				{"Observation?code=2093-3", "o1 o2 o4"},
				{"Observation?code=|2093-3", ""},
				{"Observation?code=http://loinc.org|", "o1 o2 o3 o4 o5"},
				{"Observation?code:not=http://loinc.org|", "o6"},
				{"Observation?code=2093-3,8867-4", "o1 o2 o3 o4"},
				{"Observation?code:not=2093-3", "o3 o5 o6"},
				{"Observation?code:text=cholesterol", "o1"},
				{"Observation?code:text=heart", "o3"},
				{"Observation?status=final&code=2093-3", "o1 o2 o4"},
				{"Observation?status=amended", "o3"},
				{"Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|A1", "p1"},
				{"Patient?identifier=urn:mrn|A1", "p1"},
				{"Patient?email=js@example.org", "p1"},
				{"Patient?active=true", "p3"},
				{"Patient?gender=male", "p1 p3"},
				{"Condition?clinical-status=active&patient=p1", "c1"},
				// string
				{"Patient?name=smith", "p1 p2"},
				{"Patient?name=SMITH", "p1 p2"},
				{"Patient?name:exact=Smith", "p1"},
				{"Patient?name:exact=smith", ""},
				{"Patient?name:contains=mith", "p1 p2"},
				{"Patient?given=jose", "p1"},
				{"Patient?family=jones\\,%20jr", "p3"},
				{"Patient?family=smith&given=ann", "p2"},
				// date
				{"Observation?date=2019", "o1 o4"}, // o4 is 2019-01-01T04:30Z
				{"Observation?date=2019-03-10", "o1"},
				{"Observation?date=ge2021", "o2 o5"},
				{"Observation?date=gt2021-07-15", "o2 o5"},
				{"Observation?date=lt2019", ""},
				{"Observation?date=lt2019-01-02", "o4"},
				{"Observation?date=le2018-12-31", ""},
				{"Observation?date=le2019-01-01", "o4"},
				{"Observation?date=eq2020-01", "o3"},
				{"Observation?date=2020-01-02", ""},
				{"Observation?date=ne2020-01-02", "o1 o2 o3 o4 o5"}, // o6 has no date
				{"Observation?date=sa2020-01-02", "o2 o5"},
				{"Observation?date=eb2019-04", "o1 o4"},
				{"Observation?date=ge2019&date=lt2021", "o1 o3 o4"},
				{"Observation?date=2019-01-01T04:30:00Z", "o4"},
				{"Observation?date=2019-03-10T09:00:00Z", "o1"},
				{"Patient?birthdate=1985-06", ""},
				{"Patient?birthdate=1985", "p2"},
				{"Patient?birthdate=ap1970-05-02", "p1"},
				{"Condition?onset-date=2015-06", ""},
				{"Condition?onset-date=ge2015-06", "c1"},
				// reference
				{"Observation?subject=Patient/p1", "o1 o2 o3 o5"},
				{"Observation?subject=p2", "o4"},
				{"Observation?subject:Patient=p2", "o4"},
				{"Observation?patient=p1&code=2093-3", "o1 o2"},
				{"Observation?performer=Practitioner/pr1", "o1"},
				{"Patient?organization=Organization/org1", "p1 p2"},
				{"Observation?subject=" + url.QueryEscape("{base}/Patient/p2"), "o4"},
				{"Patient?general-practitioner:Practitioner=pr1", "p1"},
				// quantity
				{"Observation?value-quantity=180", "o1"},
				{"Observation?value-quantity=gt170", "o1 o2"},
				{"Observation?value-quantity=lt100|http://unitsofmeasure.org|/min", "o3"},
				{"Observation?value-quantity=215.5|http://unitsofmeasure.org|mg/dL", "o2"},
				{"Observation?value-quantity=215|http://unitsofmeasure.org|mg/dL", ""},
				{"Observation?value-quantity=ap150||mg/dL", "o4"},
				{"Observation?component-value-quantity=ge120", "o5"},
				// number
				{"RiskAssessment?probability=0.25", "ra1"},
				{"RiskAssessment?probability=gt0.3", ""},
				{"RiskAssessment?probability=lt0.3", "ra1"},
				// uri
				{"ValueSet?url=http://example.org/fhir/ValueSet/a/b", "vs1"},
				{"ValueSet?url:below=http://example.org/fhir", "vs1"},
				{"ValueSet?url:above=http://example.org/fhir/ValueSet/a/b/c", "vs1"},
				{"ValueSet?url=http://example.org/fhir", ""},
				// composite
				{"Observation?code-value-quantity=2093-3$gt200", "o2"},
				{"Observation?code-value-quantity=http://loinc.org|2093-3$lt200", "o1 o4"},
				{"Observation?component-code-value-quantity=8480-6$120", "o5"},
				{"Observation?component-code-value-quantity=8480-6$80", ""},
				// missing
				{"Patient?birthdate:missing=true", "p3"},
				{"Patient?birthdate:missing=false", "p1 p2"},
				{"Observation?value-quantity:missing=true", "o5 o6"},
				// common
				{"Observation?_id=o1,o3", "o1 o3"},
				{"Observation?_tag=urn:tags|imported", "o6"},
				{"Observation?_tag:not=urn:tags|imported&status=preliminary", ""},
				{"Observation?_profile=http://example.org/StructureDefinition/obs", "o6"},
				{"Observation?_security=R", "o6"},
				{"Observation?_source=http://lab.example.org/feed", "o6"},
				{"Observation?subject:identifier=urn:mrn|A1", "o6"},
				{"Observation?subject:missing=true", ""}, // o6 has a subject by identifier
				{"Observation?performer:missing=false", "o1"},
				{"Observation?category:missing=true&subject:missing=false", "o4 o5 o6"},
				{"Observation?code:text=glucose", "o6"},
				{"Patient?name:missing=true", ""},
				{"Observation?value-quantity=ne180&value-quantity:missing=false", "o2 o3 o4"},
				{"Observation?_lastUpdated=gt2000-01-01", "o1 o2 o3 o4 o5 o6"},
				{"Observation?_lastUpdated=lt2000-01-01", ""},
				// chaining
				{"Observation?subject:Patient.name=smithson", "o4"},
				{"Observation?patient.identifier=urn:mrn|A1", "o1 o2 o3 o5"},
				{"Observation?performer:Practitioner.family=welby", "o1"},
				// _has
				{"Patient?_has:Observation:patient:code=8867-4", "p1"},
				{"Patient?_has:Condition:subject:clinical-status=active", "p1 p2"},
				{"Practitioner?_has:Observation:performer:status=final", "pr1"},
			}
			for _, c := range cases {
				q := strings.ReplaceAll(c.q, url.QueryEscape("{base}"), url.QueryEscape(f.s.FHIR))
				got, _ := f.ids(t, f.tok, q)
				typ, _, _ := strings.Cut(c.q, "?")
				var want []string
				for _, id := range strings.Fields(c.want) {
					want = append(want, typ+"/"+id)
				}
				if !slices.Equal(sorted(got), want) {
					t.Errorf("%s: got %v, want %v", c.q, got, want)
				}
			}
		})
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
