package search_test

import (
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/store/storetest"
)

// TestConditional checks that If-None-Exist, conditional update and
// delete and the conditional references of transactions use search:
// one match is used, several give 412.
func TestConditional(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			f := setup(t, d)
			s, tok := f.s, f.tok
			// If-None-Exist with one match: nothing created, 200
			r := s.Do("POST", "Patient", tok, `{"resourceType":"Patient","name":[{"family":"Dup"}]}`, "If-None-Exist", "identifier=urn:mrn|A1")
			if r.Status != 200 {
				t.Errorf("If-None-Exist with a match: %d %s", r.Status, r.Body)
			}
			// no match: created
			r = s.Do("POST", "Patient", tok, `{"resourceType":"Patient","identifier":[{"system":"urn:mrn","value":"NEW"}]}`, "If-None-Exist", "identifier=urn:mrn|NEW")
			if r.Status != 201 {
				t.Errorf("If-None-Exist without a match: %d %s", r.Status, r.Body)
			}
			// several matches: 412
			r = s.Do("POST", "Patient", tok, `{"resourceType":"Patient"}`, "If-None-Exist", "gender=male")
			if r.Status != 412 {
				t.Errorf("If-None-Exist with two matches: %d %s", r.Status, r.Body)
			}
			// an unknown parameter is an error, never a silent match-all
			r = s.Do("POST", "Patient", tok, `{"resourceType":"Patient"}`, "If-None-Exist", "nosuch=1")
			if r.Status != 400 {
				t.Errorf("If-None-Exist with an unknown parameter: %d %s", r.Status, r.Body)
			}
			// conditional update: one match updates it, several 412
			r = s.Do("PUT", "Patient?identifier=urn:mrn|A1", tok, `{"resourceType":"Patient","id":"p1","gender":"male","identifier":[{"system":"urn:mrn","value":"A1"}],"name":[{"family":"Smith"}]}`)
			if r.Status != 200 {
				t.Errorf("conditional update: %d %s", r.Status, r.Body)
			}
			r = s.Do("PUT", "Patient?gender=male", tok, `{"resourceType":"Patient","gender":"male"}`)
			if r.Status != 412 {
				t.Errorf("conditional update with two matches: %d %s", r.Status, r.Body)
			}
			// conditional delete
			r = s.Do("DELETE", "Condition?code=195662009", tok, nil)
			if r.Status != 200 && r.Status != 204 {
				t.Errorf("conditional delete: %d %s", r.Status, r.Body)
			}
			if got, _ := f.ids(t, tok, "Condition?code=195662009"); len(got) != 0 {
				t.Errorf("deleted resource still found: %v", got)
			}
			r = s.Do("DELETE", "Condition?clinical-status=active", tok, nil)
			if r.Status != 412 {
				t.Errorf("conditional delete with two matches: %d %s", r.Status, r.Body)
			}
			// transaction conditional references
			tx := `{"resourceType":"Bundle","type":"transaction","entry":[
			 {"resource":{"resourceType":"Observation","status":"final","code":{"text":"tx"},"subject":{"reference":"Patient?identifier=urn:mrn|A1"},"performer":[{"reference":"Practitioner?identifier=urn:npi|123"}]},"request":{"method":"POST","url":"Observation"}}]}`
			r = s.Do("POST", "", tok, tx)
			if r.Status != 200 || !strings.Contains(string(r.Body), `"reference":"Patient/p1"`) || !strings.Contains(string(r.Body), `"reference":"Practitioner/pr1"`) {
				t.Errorf("transaction conditional references: %d %s", r.Status, r.Body)
			}
			tx = `{"resourceType":"Bundle","type":"transaction","entry":[
			 {"resource":{"resourceType":"Observation","status":"final","code":{"text":"tx"},"subject":{"reference":"Patient?gender=male"}},"request":{"method":"POST","url":"Observation"}}]}`
			r = s.Do("POST", "", tok, tx)
			if r.Status != 412 {
				t.Errorf("transaction conditional reference with two matches: %d %s", r.Status, r.Body)
			}
		})
	}
}
