package authserver_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// bundleIDs returns "Type/id" of every entry resource of a Bundle response.
func bundleIDs(t *testing.T, body []byte) []string {
	t.Helper()
	var b struct {
		Entry []struct {
			Resource struct {
				ResourceType string `json:"resourceType"`
				ID           string `json:"id"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatalf("not a Bundle: %v\n%s", err, body)
	}
	var out []string
	for _, e := range b.Entry {
		out = append(out, e.Resource.ResourceType+"/"+e.Resource.ID)
	}
	return out
}

// TestPatientConfinement checks that a patient token reaches only its own
// compartment through every FHIR interaction on main: reads, searches
// (including _include and compartment searches), history, writes and
// transactions.
func TestPatientConfinement(t *testing.T) {
	for _, dialect := range storetest.Dialects() {
		t.Run(dialect, func(t *testing.T) { testPatientConfinement(t, dialect) })
	}
}

func testPatientConfinement(t *testing.T, dialect string) {
	s := servertest.Start(t, dialect)
	ann := create(t, s, "Patient", `{"resourceType":"Patient","name":[{"family":"Ann"}]}`)
	bob := create(t, s, "Patient", `{"resourceType":"Patient","name":[{"family":"Bob"}]}`)
	obs := func(p string) string {
		return create(t, s, "Observation", `{"resourceType":"Observation","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/`+p+`"}}`)
	}
	annObs, bobObs := obs(ann), obs(bob)
	tok := s.Token("patient/*.cruds", ann)

	leaks := func(what string, r *servertest.Response) {
		t.Helper()
		t.Logf("%s: %d", what, r.Status)
		if r.Status == 200 {
			for _, id := range bundleIDs(t, r.Body) {
				if id == "Patient/"+bob || id == "Observation/"+bobObs {
					t.Errorf("%s: the patient token got %s", what, id)
				}
			}
			return
		}
		if r.Status < 400 {
			t.Errorf("%s: status %d", what, r.Status)
		}
	}
	for _, path := range []string{"Patient/" + bob, "Observation/" + bobObs, "Observation/" + bobObs + "/_history/1"} {
		if r := s.Do("GET", path, tok, nil); r.Status != http.StatusForbidden && r.Status != http.StatusNotFound {
			t.Errorf("read %s: %d %s", path, r.Status, r.Body)
		}
	}
	has := func(what string, r *servertest.Response, want string) {
		t.Helper()
		leaks(what, r)
		if r.Status != 200 || !strings.Contains(strings.Join(bundleIDs(t, r.Body), " "), want) {
			t.Errorf("%s: %d, the patient's own %s missing", what, r.Status, want)
		}
	}
	has("own search", s.Do("GET", "Observation", tok, nil), "Observation/"+annObs)
	has("own _include", s.Do("GET", "Observation?_include=Observation:subject", tok, nil), "Patient/"+ann)
	leaks("search by subject", s.Do("GET", "Observation?subject=Patient/"+bob, tok, nil))
	leaks("_include", s.Do("GET", "Observation?_include=Observation:subject", tok, nil))
	leaks("_revinclude", s.Do("GET", "Patient?_revinclude=Observation:subject", tok, nil))
	leaks("compartment search", s.Do("GET", "Patient/"+bob+"/Observation", tok, nil))
	leaks("system search", s.Do("GET", "?_type=Observation,Patient", tok, nil))
	leaks("$everything of another patient", s.Do("GET", "Patient/"+bob+"/$everything", tok, nil))
	has("own $everything", s.Do("GET", "Patient/"+ann+"/$everything", tok, nil), "Observation/"+annObs)
	leaks("type history", s.Do("GET", "Observation/_history", tok, nil))
	leaks("system history", s.Do("GET", "_history", tok, nil))
	leaks("instance history", s.Do("GET", "Patient/"+bob+"/_history", tok, nil))
	if r := s.Do("GET", "Observation/_history", tok, nil); r.Status == 200 && !strings.Contains(string(r.Body), annObs) {
		t.Errorf("type history lacks the patient's own observation")
	}

	// Writes outside the compartment are refused.
	if r := s.Do("POST", "Observation", tok, `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/`+bob+`"}}`); r.Status != http.StatusForbidden {
		t.Errorf("create in another compartment: %d %s", r.Status, r.Body)
	}
	if r := s.Do("PUT", "Observation/"+bobObs, tok, `{"resourceType":"Observation","id":"`+bobObs+`","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/`+ann+`"}}`); r.Status != http.StatusForbidden && r.Status != http.StatusNotFound {
		t.Errorf("take over another patient's observation: %d %s", r.Status, r.Body)
	}
	// (A delete of a resource the token cannot see deletes nothing and may
	// answer 204, so as not to reveal that it exists; checked below.)
	if r := s.Do("DELETE", "Observation/"+bobObs, tok, nil); r.Status != http.StatusForbidden && r.Status != http.StatusNotFound && r.Status != http.StatusNoContent {
		t.Errorf("delete another patient's observation: %d %s", r.Status, r.Body)
	}
	tx := `{"resourceType":"Bundle","type":"transaction","entry":[
	 {"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/` + ann + `"}},"request":{"method":"POST","url":"Observation"}},
	 {"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/` + bob + `"}},"request":{"method":"POST","url":"Observation"}}]}`
	if r := s.Do("POST", "", tok, tx); r.Status < 400 {
		t.Errorf("transaction writing into another compartment: %d %s", r.Status, r.Body)
	}
	batch := `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Observation/` + bobObs + `"}}]}`
	if r := s.Do("POST", "", tok, batch); r.Status == 200 && strings.Contains(string(r.Body), `"weight"`) {
		t.Errorf("batch read of another patient's observation: %s", r.Body)
	}
	// Bob's data is unchanged.
	if r := s.Do("GET", "Observation/"+bobObs+"/_history", s.AdminToken(), nil); r.Status != 200 || len(bundleIDs(t, r.Body)) != 1 {
		t.Errorf("another patient's observation changed: %d %s", r.Status, r.Body)
	}
	// Own writes work.
	if r := s.Do("POST", "Observation", tok, `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/`+ann+`"}}`); r.Status != http.StatusCreated {
		t.Errorf("create in own compartment: %d %s", r.Status, r.Body)
	}
	// A system token limited to Patient cannot read Observations.
	sys := s.Token("system/Patient.rs", "")
	if r := s.Do("GET", "Observation/"+annObs, sys, nil); r.Status != http.StatusForbidden {
		t.Errorf("system/Patient.rs reading an Observation: %d", r.Status)
	}
}

// TestImportConfinement: a patient token's $import cannot write into
// another patient's record.
func TestImportConfinement(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	ann := create(t, s, "Patient", `{"resourceType":"Patient"}`)
	bob := create(t, s, "Patient", `{"resourceType":"Patient"}`)
	tok := s.Token("patient/*.cruds", ann)
	lines := `{"resourceType":"Observation","id":"a1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/` + ann + `"}}
{"resourceType":"Observation","id":"b1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/` + bob + `"}}
{"resourceType":"Patient","id":"` + bob + `","name":[{"family":"Taken over"}]}
`
	r := s.Do("POST", "Bundle/$import", tok, lines, "Content-Type", "application/x-ndjson")
	t.Logf("$import by a patient token: %d", r.Status)
	admin := s.AdminToken()
	got := s.Do("GET", "Observation?subject=Patient/"+bob, admin, nil)
	if ids := bundleIDs(t, got.Body); len(ids) != 0 {
		t.Errorf("a patient token's import wrote into another record: %v", ids)
	}
	if own := s.Do("GET", "Observation?subject=Patient/"+ann, admin, nil); len(bundleIDs(t, own.Body)) != 1 {
		t.Errorf("the patient's own line was not imported (status %d): %s", r.Status, r.Body)
	}
	if p := s.Do("GET", "Patient/"+bob, admin, nil); strings.Contains(string(p.Body), "Taken over") {
		t.Error("a patient token's import changed another patient")
	}
}
