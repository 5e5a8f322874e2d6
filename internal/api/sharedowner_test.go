package api_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/server/servertest"
)

// ids returns the ids of the resources of type typ a Bundle (search,
// history) or an NDJSON/Bundle export holds, as "Type/id".
func idsIn(body []byte, typ string) map[string]bool {
	out := map[string]bool{}
	text := string(body)
	for {
		i := strings.Index(text, `"resourceType":"`+typ+`","id":"`)
		if i < 0 {
			return out
		}
		text = text[i+len(`"resourceType":"`+typ+`","id":"`):]
		out[typ+"/"+text[:strings.IndexByte(text, '"')]] = true
	}
}

// TestPatientOwnsSharedResources: a person who brings their own record
// brings the Medications, Practitioners and Organizations it names. A
// shared resource a patient writes is theirs: it gets an owner extension
// naming their Patient, other patients neither read nor find it (read,
// search, chained search, _include, history, exports), and only its owner
// changes or deletes it (its id stays theirs once deleted). Reference data
// without an owner stays visible to all and read-only to patients.
func TestPatientOwnsSharedResources(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *servertest.Server) {
		admin := s.AdminToken()
		for path, body := range map[string]string{
			"Patient/alice":    `{"resourceType":"Patient","id":"alice"}`,
			"Patient/bob":      `{"resourceType":"Patient","id":"bob"}`,
			"Organization/org": `{"resourceType":"Organization","id":"org","name":"General Hospital"}`,
		} {
			if r := s.Do("PUT", path, admin, body); r.Status >= 300 {
				t.Fatalf("PUT %s: %d %s", path, r.Status, r.Body)
			}
		}
		alice, bob := s.Token("patient/*.cruds", "alice"), s.Token("patient/*.cruds", "bob")
		med := func(id, code, extra string) string {
			return `{"resourceType":"Medication","id":"` + id + `",` + extra + `"code":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"` + code + `"}]}}`
		}
		request := func(patient, medID string) string {
			return `{"resourceType":"MedicationRequest","status":"active","intent":"order","subject":{"reference":"Patient/` + patient + `"},"medicationReference":{"reference":"Medication/` + medID + `"}}`
		}
		// Each writes a Medication: it becomes theirs.
		for who, tok := range map[string]string{"alice": alice, "bob": bob} {
			if r := s.Do("PUT", "Medication/"+who+"-med", tok, med(who+"-med", who+"-code", "")); r.Status != 201 {
				t.Fatalf("%s writes a Medication: %d %s", who, r.Status, r.Body)
			}
			if o := s.Owner("Medication", who+"-med"); o != "Patient/"+who {
				t.Errorf("%s's Medication is owned by %q", who, o)
			}
			expect(t, s.Do("POST", "MedicationRequest", tok, request(who, who+"-med")), 201)
		}
		// A transaction: her prescription and its Medication together.
		tx := `{"resourceType":"Bundle","type":"transaction","entry":[
			{"fullUrl":"urn:uuid:6d1e8f0a-0000-4000-8000-000000000001","resource":` + med("", "tx-code", "") + `,"request":{"method":"POST","url":"Medication"}},
			{"fullUrl":"urn:uuid:6d1e8f0a-0000-4000-8000-000000000002","resource":{"resourceType":"MedicationRequest","status":"active","intent":"order","subject":{"reference":"Patient/alice"},"medicationReference":{"reference":"urn:uuid:6d1e8f0a-0000-4000-8000-000000000001"}},"request":{"method":"POST","url":"MedicationRequest"}}]}`
		r := s.Do("POST", "", alice, tx)
		var resp struct {
			Entry []struct{ Response struct{ Location string } }
		}
		if err := json.Unmarshal(r.Body, &resp); err != nil || r.Status != 200 || len(resp.Entry) != 2 {
			t.Fatalf("alice's transaction: %d %v %.500s", r.Status, err, r.Body)
		}
		if txMed := strings.Split(resp.Entry[0].Response.Location, "/")[1]; s.Owner("Medication", txMed) != "Patient/alice" {
			t.Errorf("the Medication of her transaction is not hers")
		}
		// One of hers that nothing points at.
		expect(t, s.Do("PUT", "Medication/alice-spare", alice, med("alice-spare", "spare", "")), 201)
		// alice's prescription also names bob's Medication (she learnt its id).
		expect(t, s.Do("POST", "MedicationRequest", alice, request("alice", "bob-med")), 201)

		// Reads: her own and the store's reference data, not bob's.
		if r := s.Do("GET", "Medication/alice-med", alice, nil); r.Status != 200 {
			t.Errorf("alice reads her Medication: %d", r.Status)
		}
		if r := s.Do("GET", "Medication/alice-med", bob, nil); r.Status != 404 {
			t.Errorf("bob reads alice's Medication: %d", r.Status)
		}
		if r := s.Do("GET", "Medication/alice-med/_history/1", bob, nil); r.Status != 404 {
			t.Errorf("bob reads a version of alice's Medication: %d", r.Status)
		}
		if r := s.Do("GET", "Organization/org", bob, nil); r.Status != 200 {
			t.Errorf("bob reads reference data: %d", r.Status)
		}
		if r := s.Do("GET", "Medication/bob-med", admin, nil); r.Status != 200 {
			t.Errorf("the admin reads bob's Medication: %d", r.Status)
		}

		// Searches, includes and chains.
		for _, c := range []struct {
			q         string
			tok, name string
			want      []string
			not       []string
		}{
			{"Medication", alice, "alice", []string{"Medication/alice-med"}, []string{"Medication/bob-med"}},
			{"Medication?code=bob-code", alice, "alice", nil, []string{"Medication/bob-med"}},
			{"Medication", admin, "admin", []string{"Medication/alice-med", "Medication/bob-med"}, nil},
			{"Medication,Organization?_type=Medication,Organization", bob, "bob", []string{"Medication/bob-med", "Organization/org"}, []string{"Medication/alice-med"}},
			{"?_type=Medication,Organization,MedicationRequest", bob, "bob", []string{"Medication/bob-med", "Organization/org"}, []string{"Medication/alice-med"}},
			{"MedicationRequest?_include=MedicationRequest:medication", alice, "alice", []string{"Medication/alice-med"}, []string{"Medication/bob-med"}},
			{"MedicationRequest?_include=MedicationRequest:medication", bob, "bob", []string{"Medication/bob-med"}, []string{"Medication/alice-med"}},
			{"Medication/_history", bob, "bob", []string{"Medication/bob-med"}, []string{"Medication/alice-med"}},
			{"_history", bob, "bob", []string{"Medication/bob-med"}, []string{"Medication/alice-med"}},
			{"Patient/alice/$everything", alice, "alice", []string{"Medication/alice-med", "Medication/alice-spare"}, []string{"Medication/bob-med"}},
			{"Patient/alice/$everything", admin, "admin", []string{"Medication/alice-med", "Medication/alice-spare", "Medication/bob-med"}, nil},
			{"Patient/bob/$everything", bob, "bob", []string{"Medication/bob-med"}, []string{"Medication/alice-med", "Medication/alice-spare"}},
		} {
			path := c.q
			if strings.HasPrefix(path, "Medication,Organization") {
				path = strings.SplitN(path, "?", 2)[1]
				path = "?" + path
			}
			r := s.Do("GET", path, c.tok, nil)
			if r.Status != 200 {
				t.Errorf("%s: GET %s: %d %.300s", c.name, path, r.Status, r.Body)
				continue
			}
			got := idsIn(r.Body, "Medication")
			for k := range idsIn(r.Body, "Organization") {
				got[k] = true
			}
			for _, w := range c.want {
				if !got[w] {
					t.Errorf("%s: GET %s lacks %s", c.name, path, w)
				}
			}
			for _, n := range c.not {
				if got[n] {
					t.Errorf("%s: GET %s shows %s", c.name, path, n)
				}
			}
		}
		// A chain through bob's Medication finds nothing for alice,
		// though her prescription points at it.
		b := expect(t, s.Do("GET", "MedicationRequest?medication.code=bob-code", alice, nil), 200)
		if b["total"] != float64(0) {
			t.Errorf("alice's chained search through bob's Medication: total %v", b["total"])
		}
		b = expect(t, s.Do("GET", "MedicationRequest?medication.code=alice-code", alice, nil), 200)
		if b["total"] != float64(1) {
			t.Errorf("alice's chained search through her Medication: total %v", b["total"])
		}

		// Writes: only the owner changes or deletes; an owner must be hers.
		for _, c := range []struct {
			method, path, body string
			status             int
		}{
			{"PUT", "Medication/bob-med", med("bob-med", "x", ""), 403},
			{"PUT", "Organization/org", `{"resourceType":"Organization","id":"org","name":"Mine"}`, 403},
			{"POST", "Medication", med("", "x", `"extension":[{"url":"`+index.OwnerExtension+`","valueReference":{"reference":"Patient/bob"}}],`), 403},
			{"DELETE", "Organization/org", "", 403},
			{"PUT", "Medication/alice-med", med("alice-med", "alice-code-2", ""), 200},
		} {
			var body any
			if c.body != "" {
				body = c.body
			}
			if r := s.Do(c.method, c.path, alice, body); r.Status != c.status {
				t.Errorf("alice: %s %s: %d, want %d: %.300s", c.method, c.path, r.Status, c.status, r.Body)
			}
		}
		s.Do("DELETE", "Medication/bob-med", alice, nil)
		if r := s.Do("GET", "Medication/bob-med", bob, nil); r.Status != 200 {
			t.Errorf("bob's Medication after alice's delete: %d", r.Status)
		}
		if o := s.Owner("Medication", "alice-med"); o != "Patient/alice" {
			t.Errorf("alice's update without an owner: owned by %q", o)
		}
		if r := s.Do("GET", "Organization/org", admin, nil); !strings.Contains(string(r.Body), "General Hospital") {
			t.Errorf("the reference data changed: %s", r.Body)
		}

		// An admin who corrects her Medication does not publish it.
		if r := s.Do("PUT", "Medication/alice-med", admin, med("alice-med", "alice-code-2", "")); r.Status != 200 {
			t.Errorf("the admin corrects alice's Medication: %d %.300s", r.Status, r.Body)
		}
		if o := s.Owner("Medication", "alice-med"); o != "Patient/alice" {
			t.Errorf("alice's Medication after the admin's update: owned by %q", o)
		}
		// In a transaction, whose entries are prepared before the
		// versions they replace are read, an update without the owner is
		// refused rather than publish her Medication.
		txPut := `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":` + med("alice-med", "alice-code-3", "") + `,"request":{"method":"PUT","url":"Medication/alice-med"}}]}`
		if r := s.Do("POST", "", admin, txPut); r.Status != 422 {
			t.Errorf("the admin's transaction that leaves her owner out: %d %.300s", r.Status, r.Body)
		}
		if o := s.Owner("Medication", "alice-med"); o != "Patient/alice" {
			t.Errorf("alice's Medication after the admin's transaction: owned by %q", o)
		}
		// An admin's conditional create does not take alice's own copy
		// for the store's reference data.
		if r := s.Do("POST", "Medication", admin, med("", "alice-code-2", ""), "If-None-Exist", "code=http://www.nlm.nih.gov/research/umls/rxnorm|alice-code-2"); r.Status != 201 {
			t.Errorf("the admin's conditional create matched alice's Medication: %d %.300s", r.Status, r.Body)
		}

		// Exports: hers carries her Medication, not bob's (which her
		// prescription names); bob's carries his.
		for _, c := range []struct {
			path, tok, name string
			want, not       string
		}{
			{"Patient/alice/$phr-export", alice, "alice", "Medication/alice-med", "Medication/bob-med"},
			{"Patient/bob/$phr-export", bob, "bob", "Medication/bob-med", "Medication/alice-med"},
			{"Patient/alice/$phr-export", admin, "admin", "Medication/alice-med", ""},
		} {
			r := s.Do("GET", c.path, c.tok, nil)
			got := idsIn(r.Body, "Medication")
			if r.Status != 200 || !got[c.want] || c.not != "" && got[c.not] {
				t.Errorf("%s: %s: %d, Medications %v", c.name, c.path, r.Status, got)
			}
		}

		// Her deleted Medication's id stays hers.
		if r := s.Do("DELETE", "Medication/alice-med", alice, nil); r.Status >= 300 {
			t.Errorf("alice deletes her Medication: %d %.300s", r.Status, r.Body)
		}
		if r := s.Do("PUT", "Medication/alice-med", bob, med("alice-med", "y", "")); r.Status != 403 {
			t.Errorf("bob writes over alice's deleted Medication: %d %.300s", r.Status, r.Body)
		}
		if r := s.Do("GET", "Medication/alice-med/_history", bob, nil); strings.Contains(string(r.Body), "alice-code") {
			t.Errorf("bob reads the history of alice's deleted Medication: %s", r.Body)
		}
	})
}
