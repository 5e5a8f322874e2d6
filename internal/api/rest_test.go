package api_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/phr-project/phr/internal/api"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
)

func forEachStore(t *testing.T, fn func(t *testing.T, s *servertest.Server)) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			fn(t, servertest.Start(t, d))
		})
	}
}

func expect(t *testing.T, r *servertest.Response, status int) map[string]any {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	if len(r.Body) == 0 {
		return nil
	}
	return r.JSON(t)
}

func outcomeText(t *testing.T, r *servertest.Response) string {
	t.Helper()
	m := r.JSON(t)
	if m["resourceType"] != "OperationOutcome" {
		t.Fatalf("not an OperationOutcome: %s", r.Body)
	}
	return string(r.Body)
}

const patientBody = `{"resourceType":"Patient","name":[{"family":"Smith","given":["Ann"]}],"birthDate":"1970-01-01"}`

func TestCRUD(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *servertest.Server) {
		tok := s.AdminToken()
		r := s.Do("POST", "Patient", tok, patientBody)
		p := expect(t, r, 201)
		id := p["id"].(string)
		if loc := r.Header.Get("Location"); loc != s.FHIR+"/Patient/"+id+"/_history/1" {
			t.Fatalf("Location %q", loc)
		}
		if r.Header.Get("ETag") != `W/"1"` || r.Header.Get("Last-Modified") == "" {
			t.Fatalf("headers: %v", r.Header)
		}
		meta := p["meta"].(map[string]any)
		if meta["versionId"] != "1" || meta["lastUpdated"] == nil {
			t.Fatalf("meta: %v", meta)
		}
		// read
		r = s.Do("GET", "Patient/"+id, tok, nil)
		got := expect(t, r, 200)
		if got["birthDate"] != "1970-01-01" || r.Header.Get("Content-Type") != "application/fhir+json; charset=utf-8" {
			t.Fatalf("read: %v %v", got, r.Header)
		}
		// update with If-Match
		upd := strings.Replace(patientBody, `"resourceType":"Patient"`, `"resourceType":"Patient","id":"`+id+`"`, 1)
		upd = strings.Replace(upd, "1970-01-01", "1971-02-03", 1)
		r = s.Do("PUT", "Patient/"+id, tok, upd, "If-Match", `W/"1"`)
		expect(t, r, 200)
		if r.Header.Get("ETag") != `W/"2"` {
			t.Fatalf("update ETag %q", r.Header.Get("ETag"))
		}
		// stale If-Match -> 412
		r = s.Do("PUT", "Patient/"+id, tok, upd, "If-Match", `W/"1"`)
		expect(t, r, 412)
		// vread of version 1 still has the old birthDate
		v1 := expect(t, s.Do("GET", "Patient/"+id+"/_history/1", tok, nil), 200)
		if v1["birthDate"] != "1970-01-01" {
			t.Fatalf("vread 1: %v", v1)
		}
		// patch
		r = s.Do("PATCH", "Patient/"+id, tok, `[{"op":"replace","path":"/birthDate","value":"1972-03-04"},{"op":"add","path":"/gender","value":"female"}]`,
			"Content-Type", "application/json-patch+json")
		pp := expect(t, r, 200)
		if pp["birthDate"] != "1972-03-04" || pp["gender"] != "female" || pp["meta"].(map[string]any)["versionId"] != "3" {
			t.Fatalf("patch: %v", pp)
		}
		// a patch that makes the resource invalid is refused
		r = s.Do("PATCH", "Patient/"+id, tok, `[{"op":"replace","path":"/gender","value":"robot"}]`, "Content-Type", "application/json-patch+json")
		if r.Status != 400 || !strings.Contains(outcomeText(t, r), "Patient.gender") {
			t.Fatalf("invalid patch: %d %s", r.Status, r.Body)
		}
		// delete -> 410, history keeps it
		expect(t, s.Do("DELETE", "Patient/"+id, tok, nil), 204)
		r = s.Do("GET", "Patient/"+id, tok, nil)
		if r.Status != 410 {
			t.Fatalf("read after delete: %d", r.Status)
		}
		h := expect(t, s.Do("GET", "Patient/"+id+"/_history", tok, nil), 200)
		entries := h["entry"].([]any)
		if len(entries) != 4 || h["type"] != "history" {
			t.Fatalf("history: %d entries", len(entries))
		}
		first := entries[0].(map[string]any)
		if first["request"].(map[string]any)["method"] != "DELETE" || first["resource"] != nil {
			t.Fatalf("newest history entry: %v", first)
		}
		last := entries[3].(map[string]any)
		if last["request"].(map[string]any)["method"] != "POST" {
			t.Fatalf("oldest history entry: %v", last)
		}
		// update-as-create with a client id, after delete, recreates
		r = s.Do("PUT", "Patient/"+id, tok, upd)
		expect(t, r, 201)
		r = s.Do("PUT", "Patient/client-chosen-1", tok, strings.Replace(upd, id, "client-chosen-1", 1))
		expect(t, r, 201)
		// Prefer
		r = s.Do("POST", "Patient", tok, patientBody, "Prefer", "return=minimal")
		if r.Status != 201 || len(r.Body) != 0 || r.Header.Get("Location") == "" {
			t.Fatalf("return=minimal: %d %q", r.Status, r.Body)
		}
		r = s.Do("POST", "Patient", tok, patientBody, "Prefer", "return=OperationOutcome")
		if r.Status != 201 || !strings.Contains(outcomeText(t, r), "created Patient/") {
			t.Fatalf("return=OperationOutcome: %s", r.Body)
		}
	})
}

func TestErrors(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *servertest.Server) {
		tok := s.AdminToken()
		cases := []struct {
			name, method, path, body string
			headers                  []string
			status                   int
			want                     string
		}{
			{"no token", "GET", "Patient/x", "", nil, 401, "Authorization"},
			{"unknown type", "GET", "Patientx/1", "", nil, 404, "unknown resource type"},
			{"missing", "GET", "Patient/nope", "", nil, 404, "not known"},
			{"bad json", "POST", "Patient", `{"resourceType":"Patient",}`, nil, 400, "line 1"},
			{"wrong type", "POST", "Patient", `{"resourceType":"Observation"}`, nil, 400, "Observation"},
			{"invalid date", "POST", "Patient", `{"resourceType":"Patient","birthDate":"1970-13-01"}`, nil, 400, "Patient.birthDate"},
			{"unknown element", "POST", "Patient", `{"resourceType":"Patient","colour":"blue"}`, nil, 400, "colour"},
			{"id mismatch", "PUT", "Patient/a", `{"resourceType":"Patient","id":"b"}`, nil, 400, "differs"},
			{"no id", "PUT", "Patient/a", `{"resourceType":"Patient"}`, nil, 400, "id"},
			{"bad id", "PUT", "Patient/a_b", `{"resourceType":"Patient","id":"a_b"}`, nil, 400, "valid resource id"},
			{"xml accept", "GET", "Patient/x", "", []string{"Accept", "application/fhir+xml"}, 406, "JSON"},
			{"xml body", "POST", "Patient", `<Patient/>`, []string{"Content-Type", "application/fhir+xml"}, 415, "Content-Type"},
			{"xml format", "GET", "Patient/x", "", []string{}, 406, "_format"},
			{"bad if-match", "PUT", "Patient/a", `{"resourceType":"Patient","id":"a"}`, []string{"If-Match", "abc"}, 400, "If-Match"},
			{"not a bundle", "POST", "", `{"resourceType":"Patient"}`, nil, 400, "Bundle"},
			{"method", "DELETE", "Patient/a/_history", "", nil, 404, "no FHIR interaction"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				path := c.path
				if c.name == "xml format" {
					path += "?_format=xml"
				}
				tk := tok
				if c.name == "no token" {
					tk = ""
				}
				r := s.Do(c.method, path, tk, nilIfEmpty(c.body), c.headers...)
				if r.Status != c.status {
					t.Fatalf("status %d, want %d: %s", r.Status, c.status, r.Body)
				}
				if txt := outcomeText(t, r); !strings.Contains(txt, c.want) {
					t.Fatalf("outcome %s does not mention %q", txt, c.want)
				}
			})
		}
		// An invalid write left nothing behind.
		r := s.Do("GET", "Patient/a", tok, nil)
		if r.Status != 404 {
			t.Fatalf("a refused write stored something: %d", r.Status)
		}
	})
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func TestDecimalsKeepTheirText(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *servertest.Server) {
		tok := s.AdminToken()
		body := `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.50,"unit":"mmol/L"}}`
		p := expect(t, s.Do("POST", "Observation", tok, body), 201)
		r := s.Do("GET", "Observation/"+p["id"].(string), tok, nil)
		if !strings.Contains(string(r.Body), `"value":1.50`) {
			t.Fatalf("decimal text changed: %s", r.Body)
		}
	})
}

func TestConcurrentUpdatesOverHTTP(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *servertest.Server) {
		tok := s.AdminToken()
		expect(t, s.Do("PUT", "Patient/c", tok, `{"resourceType":"Patient","id":"c"}`), 201)
		const n = 20
		var wg sync.WaitGroup
		statuses := make(chan int, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				r := s.Do("PUT", "Patient/c", tok, fmt.Sprintf(`{"resourceType":"Patient","id":"c","birthDate":"19%02d-01-01"}`, i))
				statuses <- r.Status
			}(i)
		}
		wg.Wait()
		close(statuses)
		ok := 0
		for st := range statuses {
			switch st {
			case 200:
				ok++
			case 409, 412:
			default:
				t.Fatalf("unexpected status %d", st)
			}
		}
		h := expect(t, s.Do("GET", "Patient/c/_history?_count=100", tok, nil), 200)
		if got := len(h["entry"].([]any)); got != ok+1 {
			t.Fatalf("%d updates succeeded but history has %d versions: an update was lost", ok, got)
		}
	})
}

func TestBinary(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *servertest.Server) {
		tok := s.AdminToken()
		content := []byte("%PDF-1.4 not really a pdf \x00\x01\x02")
		body := fmt.Sprintf(`{"resourceType":"Binary","contentType":"application/pdf","data":%q}`, base64.StdEncoding.EncodeToString(content))
		b := expect(t, s.Do("POST", "Binary", tok, body), 201)
		id := b["id"].(string)
		if b["data"] != base64.StdEncoding.EncodeToString(content) {
			t.Fatalf("created Binary lost its data: %v", b)
		}
		// raw when asked for something else than FHIR JSON
		r := s.Do("GET", "Binary/"+id, tok, nil, "Accept", "application/pdf")
		if r.Status != 200 || r.Header.Get("Content-Type") != "application/pdf" || string(r.Body) != string(content) {
			t.Fatalf("raw read: %d %q %q", r.Status, r.Header.Get("Content-Type"), r.Body)
		}
		// FHIR JSON when asked
		j := expect(t, s.Do("GET", "Binary/"+id, tok, nil, "Accept", "application/fhir+json"), 200)
		if j["data"] != base64.StdEncoding.EncodeToString(content) {
			t.Fatalf("JSON read: %v", j)
		}
		// the bytes are not in the database row
		var stored []byte
		if err := s.App.Store.QueryRow(t.Context(), `SELECT v.json FROM resource_version v JOIN resource r ON r.rid = v.rid WHERE r.id = ?`, id).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(stored), `"data"`) {
			t.Fatalf("Binary data stored in the row: %s", stored)
		}
		// raw upload
		r = s.Do("POST", "Binary", tok, []byte("hello image"), "Content-Type", "image/png")
		rb := expect(t, r, 201)
		r = s.Do("GET", "Binary/"+rb["id"].(string), tok, nil, "Accept", "*/*")
		if string(r.Body) != "hello image" || r.Header.Get("Content-Type") != "image/png" {
			t.Fatalf("raw upload read back: %q %q", r.Body, r.Header.Get("Content-Type"))
		}
	})
}

func TestTransaction(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *servertest.Server) {
		tok := s.AdminToken()
		bundle := `{"resourceType":"Bundle","type":"transaction","entry":[
		 {"fullUrl":"urn:uuid:11111111-1111-1111-1111-111111111111","resource":{"resourceType":"Patient","name":[{"family":"Tx"}]},"request":{"method":"POST","url":"Patient"}},
		 {"fullUrl":"urn:uuid:22222222-2222-2222-2222-222222222222","resource":{"resourceType":"Observation","status":"final","code":{"text":"hr"},"subject":{"reference":"urn:uuid:11111111-1111-1111-1111-111111111111"}},"request":{"method":"POST","url":"Observation"}},
		 {"resource":{"resourceType":"Patient","id":"tx-fixed"},"request":{"method":"PUT","url":"Patient/tx-fixed"}}
		]}`
		resp := expect(t, s.Do("POST", "", tok, bundle), 200)
		if resp["type"] != "transaction-response" {
			t.Fatalf("type %v", resp["type"])
		}
		es := resp["entry"].([]any)
		pat := es[0].(map[string]any)
		obs := es[1].(map[string]any)
		if pat["response"].(map[string]any)["status"] != "201 Created" {
			t.Fatalf("entry 0: %v", pat)
		}
		pid := pat["resource"].(map[string]any)["id"].(string)
		ref := obs["resource"].(map[string]any)["subject"].(map[string]any)["reference"]
		if ref != "Patient/"+pid {
			t.Fatalf("urn:uuid reference not rewritten: %v (patient %s)", ref, pid)
		}
		// Atomic: a bad entry fails the whole transaction and nothing is kept.
		bad := `{"resourceType":"Bundle","type":"transaction","entry":[
		 {"resource":{"resourceType":"Patient","id":"atomic-1"},"request":{"method":"PUT","url":"Patient/atomic-1"}},
		 {"resource":{"resourceType":"Patient","id":"atomic-2","birthDate":"nope"},"request":{"method":"PUT","url":"Patient/atomic-2"}}
		]}`
		r := s.Do("POST", "", tok, bad)
		if r.Status != 400 || !strings.Contains(outcomeText(t, r), "Bundle.entry[1]") {
			t.Fatalf("bad transaction: %d %s", r.Status, r.Body)
		}
		if r := s.Do("GET", "Patient/atomic-1", tok, nil); r.Status != 404 {
			t.Fatalf("a failed transaction kept a resource: %d", r.Status)
		}
		// Batch: entries fail on their own.
		batch := `{"resourceType":"Bundle","type":"batch","entry":[
		 {"resource":{"resourceType":"Patient","id":"batch-1"},"request":{"method":"PUT","url":"Patient/batch-1"}},
		 {"resource":{"resourceType":"Patient","id":"batch-2","birthDate":"nope"},"request":{"method":"PUT","url":"Patient/batch-2"}},
		 {"request":{"method":"GET","url":"Patient/batch-1"}}
		]}`
		br := expect(t, s.Do("POST", "", tok, batch), 200)
		bes := br["entry"].([]any)
		st := func(i int) string {
			return bes[i].(map[string]any)["response"].(map[string]any)["status"].(string)
		}
		if st(0) != "201 Created" || !strings.HasPrefix(st(1), "400") || st(2) != "200 OK" {
			t.Fatalf("batch statuses: %s %s %s", st(0), st(1), st(2))
		}
		if bes[2].(map[string]any)["resource"].(map[string]any)["id"] != "batch-1" {
			t.Fatalf("batch GET entry: %v", bes[2])
		}
	})
}

func TestHistoryPaging(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *servertest.Server) {
		tok := s.AdminToken()
		for i := 0; i < 7; i++ {
			expect(t, s.Do("POST", "Patient", tok, patientBody), 201)
		}
		seen := map[string]bool{}
		next := "Patient/_history?_count=3"
		pages := 0
		for next != "" {
			h := expect(t, s.Do("GET", next, tok, nil), 200)
			pages++
			for _, e := range h["entry"].([]any) {
				seen[e.(map[string]any)["fullUrl"].(string)] = true
			}
			next = ""
			for _, l := range h["link"].([]any) {
				if l.(map[string]any)["relation"] == "next" {
					next = l.(map[string]any)["url"].(string)
				}
			}
			if pages > 5 {
				t.Fatal("paging does not end")
			}
		}
		if len(seen) != 7 {
			t.Fatalf("paging saw %d resources, want 7", len(seen))
		}
		// system history with _since in the future is empty
		h := expect(t, s.Do("GET", "_history?_since=2999-01-01", tok, nil), 200)
		if e, _ := h["entry"].([]any); len(e) != 0 {
			t.Fatalf("_since in the future: %d entries", len(e))
		}
	})
}

func TestCapabilityStatement(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	r := s.Do("GET", "metadata", "", nil)
	cs := expect(t, r, 200)
	if cs["resourceType"] != "CapabilityStatement" || cs["fhirVersion"] != "4.0.1" {
		t.Fatalf("metadata: %v", cs["resourceType"])
	}
	var doc struct {
		Rest []struct {
			Resource []struct {
				Type        string `json:"type"`
				Interaction []struct {
					Code string `json:"code"`
				} `json:"interaction"`
			} `json:"resource"`
		} `json:"rest"`
	}
	json.Unmarshal(r.Body, &doc)
	found := false
	for _, res := range doc.Rest[0].Resource {
		if res.Type == "Patient" {
			found = true
			if len(res.Interaction) < 8 {
				t.Fatalf("Patient interactions: %v", res.Interaction)
			}
		}
	}
	if !found {
		t.Fatal("Patient not in the CapabilityStatement")
	}
}

func TestPatientCompartment(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *servertest.Server) {
		admin := s.AdminToken()
		expect(t, s.Do("PUT", "Patient/alice", admin, `{"resourceType":"Patient","id":"alice"}`), 201)
		expect(t, s.Do("PUT", "Patient/bob", admin, `{"resourceType":"Patient","id":"bob"}`), 201)
		expect(t, s.Do("PUT", "Observation/bob-obs", admin, `{"resourceType":"Observation","id":"bob-obs","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/bob"}}`), 201)
		expect(t, s.Do("PUT", "Organization/org", admin, `{"resourceType":"Organization","id":"org","name":"Hospital"}`), 201)
		alice := s.Token("patient/*.*", "alice")
		if r := s.Do("GET", "Patient/alice", alice, nil); r.Status != 200 {
			t.Fatalf("alice reads herself: %d", r.Status)
		}
		if r := s.Do("GET", "Patient/bob", alice, nil); r.Status != 404 {
			t.Fatalf("alice reads bob: %d %s", r.Status, r.Body)
		}
		if r := s.Do("GET", "Observation/bob-obs", alice, nil); r.Status != 404 {
			t.Fatalf("alice reads bob's observation: %d", r.Status)
		}
		if r := s.Do("GET", "Observation/bob-obs/_history", alice, nil); r.Status != 404 {
			t.Fatalf("alice reads bob's observation history: %d", r.Status)
		}
		if r := s.Do("GET", "Organization/org", alice, nil); r.Status != 200 {
			t.Fatalf("alice reads shared reference data: %d", r.Status)
		}
		// writes outside her compartment are refused
		r := s.Do("POST", "Observation", alice, `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/bob"}}`)
		if r.Status != 403 {
			t.Fatalf("alice writes into bob's record: %d %s", r.Status, r.Body)
		}
		r = s.Do("PUT", "Observation/bob-obs", alice, `{"resourceType":"Observation","id":"bob-obs","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/alice"}}`)
		if r.Status != 403 {
			t.Fatalf("alice takes over bob's observation: %d %s", r.Status, r.Body)
		}
		if r := s.Do("DELETE", "Observation/bob-obs", alice, nil); r.Status >= 300 {
			t.Fatalf("delete of an invisible resource: %d", r.Status)
		}
		if r := s.Do("GET", "Observation/bob-obs", admin, nil); r.Status != 200 {
			t.Fatalf("alice's delete removed bob's observation: %d", r.Status)
		}
		// shared reference data she may not change (her own shared
		// resources: TestPatientOwnsSharedResources)
		r = s.Do("PUT", "Organization/org", alice, `{"resourceType":"Organization","id":"org","name":"x"}`)
		if r.Status != 403 {
			t.Fatalf("a patient token changed shared data: %d", r.Status)
		}
		// in her compartment: allowed
		expect(t, s.Do("POST", "Observation", alice, `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/alice"}}`), 201)
		// scope enforcement
		ro := s.Token("system/Patient.rs", "")
		if r := s.Do("POST", "Patient", ro, patientBody); r.Status != 403 {
			t.Fatalf("read-only scope created: %d", r.Status)
		}
		if r := s.Do("GET", "Observation/bob-obs", ro, nil); r.Status != 403 {
			t.Fatalf("Patient-only scope read an Observation: %d", r.Status)
		}
		if r := s.Do("GET", "Patient/bob", ro, nil); r.Status != 200 {
			t.Fatalf("system/Patient.rs read a Patient: %d", r.Status)
		}
		if r := s.Do("GET", "Patient/bob", "not-a-token", nil); r.Status != 401 {
			t.Fatalf("garbage token: %d", r.Status)
		}
		// system history hides other patients' data from alice
		h := expect(t, s.Do("GET", "_history?_count=100", alice, nil), 200)
		for _, e := range h["entry"].([]any) {
			u := e.(map[string]any)["fullUrl"].(string)
			if strings.Contains(u, "bob") {
				t.Fatalf("alice's system history shows %s", u)
			}
		}
		_ = http.StatusOK
	})
}

// TestPatientDeletedAndMoved: a patient cannot take over the id of another
// patient's deleted resource (its earlier versions would come with it),
// and a resource that moved into a patient's compartment shows that
// patient only the versions in it, in its history as in version reads.
func TestPatientDeletedAndMoved(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *servertest.Server) {
		admin := s.AdminToken()
		obs := func(id, patient, text string) string {
			return `{"resourceType":"Observation","id":"` + id + `","status":"final","code":{"text":"` + text + `"},"subject":{"reference":"Patient/` + patient + `"}}`
		}
		expect(t, s.Do("PUT", "Patient/alice", admin, `{"resourceType":"Patient","id":"alice"}`), 201)
		expect(t, s.Do("PUT", "Patient/bob", admin, `{"resourceType":"Patient","id":"bob"}`), 201)
		expect(t, s.Do("PUT", "Observation/gone", admin, obs("gone", "bob", "bob-secret-1")), 201)
		if r := s.Do("DELETE", "Observation/gone", admin, nil); r.Status != 204 && r.Status != 200 {
			t.Fatalf("delete: %d", r.Status)
		}
		alice := s.Token("patient/*.cruds", "alice")
		if r := s.Do("PUT", "Observation/gone", alice, obs("gone", "alice", "mine")); r.Status != 403 {
			t.Errorf("alice takes over bob's deleted observation: %d %s", r.Status, r.Body)
		}
		bundle := `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":` + obs("gone", "alice", "mine") + `,"request":{"method":"PUT","url":"Observation/gone"}}]}`
		if r := s.Do("POST", "", alice, bundle); r.Status < 400 {
			t.Errorf("alice takes over bob's deleted observation in a transaction: %d %s", r.Status, r.Body)
		}
		if r := s.Do("GET", "Observation/gone/_history", admin, nil); !strings.Contains(string(r.Body), `"total":2`) {
			t.Errorf("bob's deleted observation changed: %s", r.Body)
		}
		// Moved by an admin from bob's record to alice's.
		expect(t, s.Do("PUT", "Observation/moved", admin, obs("moved", "bob", "bob-secret-2")), 201)
		expect(t, s.Do("PUT", "Observation/moved", admin, obs("moved", "alice", "now alice's")), 200)
		r := s.Do("GET", "Observation/moved/_history", alice, nil)
		if r.Status != 200 || strings.Contains(string(r.Body), "bob-secret-2") || !strings.Contains(string(r.Body), "now alice's") {
			t.Errorf("alice's history of the moved observation: %d %s", r.Status, r.Body)
		}
		if r := s.Do("GET", "Observation/moved/_history/1", alice, nil); r.Status != 404 {
			t.Errorf("alice reads the moved observation's first version: %d %s", r.Status, r.Body)
		}
	})
}

// TestPatientBinary: a Binary is in no compartment, so a patient sees one
// only through its securityContext or, without one, through an attachment
// of their own record; searching Binaries is not open to them. A patient
// cannot make another's Binary theirs by pointing an attachment of their
// own at it, over REST or by an import.
func TestPatientBinary(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *servertest.Server) {
		admin := s.AdminToken()
		binary := func(id, extra string) string {
			return `{"resourceType":"Binary","id":"` + id + `","contentType":"text/plain",` + extra + `"data":"U0VDUkVU"}`
		}
		doc := func(id, patient, url string) string {
			return `{"resourceType":"DocumentReference","id":"` + id + `","status":"current","subject":{"reference":"Patient/` + patient + `"},"content":[{"attachment":{"contentType":"text/plain","url":"` + url + `"}}]}`
		}
		for path, body := range map[string]string{
			"Patient/alice":             `{"resourceType":"Patient","id":"alice"}`,
			"Patient/bob":               `{"resourceType":"Patient","id":"bob"}`,
			"Binary/of-bob":             binary("of-bob", ""),
			"DocumentReference/d-bob":   doc("d-bob", "bob", "Binary/of-bob"),
			"Binary/of-alice":           binary("of-alice", ""),
			"DocumentReference/d-alice": doc("d-alice", "alice", s.FHIR+"/Binary/of-alice"),
			"Binary/ctx-alice":          binary("ctx-alice", `"securityContext":{"reference":"Patient/alice"},`),
			"Binary/ctx-bob":            binary("ctx-bob", `"securityContext":{"reference":"DocumentReference/d-bob"},`),
			"DocumentReference/d-a2":    doc("d-a2", "alice", "Binary/ctx-bob"),
		} {
			if r := s.Do("PUT", path, admin, body); r.Status >= 300 {
				t.Fatalf("PUT %s: %d %s", path, r.Status, r.Body)
			}
		}
		alice := s.Token("patient/*.cruds", "alice")
		for id, status := range map[string]int{"of-alice": 200, "ctx-alice": 200, "of-bob": 404, "ctx-bob": 404} {
			if r := s.Do("GET", "Binary/"+id, alice, nil); r.Status != status {
				t.Errorf("alice reads Binary/%s: %d, want %d: %.200s", id, r.Status, status, r.Body)
			}
			if r := s.Do("GET", "Binary/"+id, alice, nil, "Accept", "text/plain"); r.Status != status {
				t.Errorf("alice reads Binary/%s raw: %d, want %d", id, r.Status, status)
			}
			if r := s.Do("GET", "Binary/"+id+"/_history/1", alice, nil); r.Status != status {
				t.Errorf("alice reads Binary/%s version 1: %d, want %d", id, r.Status, status)
			}
		}
		if r := s.Do("GET", "Binary/of-bob/_history", alice, nil); r.Status != 404 {
			t.Errorf("alice reads the history of bob's Binary: %d %.200s", r.Status, r.Body)
		}
		if r := s.Do("GET", "Binary", alice, nil); r.Status != 403 {
			t.Errorf("alice searches Binaries: %d %.300s", r.Status, r.Body)
		}
		if r := s.Do("GET", "_history", alice, nil); strings.Contains(string(r.Body), "/Binary/of-bob\"") || strings.Contains(string(r.Body), "/Binary/ctx-bob\"") || !strings.Contains(string(r.Body), "/Binary/ctx-alice\"") {
			t.Errorf("alice's system history shows bob's Binaries: %.500s", r.Body)
		}
		if r := s.Do("GET", "Binary", admin, nil); r.Status != 200 || !strings.Contains(string(r.Body), `"total":4`) {
			t.Errorf("the admin searches Binaries: %d %.300s", r.Status, r.Body)
		}
		// Pointing an attachment of her own at bob's Binary: refused, in
		// any form that names this server's Binary.
		for _, url := range []string{"Binary/of-bob", s.FHIR + "/Binary/of-bob", "Binary/not-yet"} {
			if r := s.Do("POST", "DocumentReference", alice, doc("x", "alice", url)); r.Status != 403 {
				t.Errorf("alice points at %s: %d %.300s", url, r.Status, r.Body)
			}
		}
		if r := s.Do("PUT", "DocumentReference/d-alice", alice, doc("d-alice", "alice", "Binary/of-bob")); r.Status != 403 {
			t.Errorf("alice repoints her document at bob's Binary: %d %.300s", r.Status, r.Body)
		}
		bundle := `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":` + doc("x", "alice", "Binary/of-bob") + `,"request":{"method":"POST","url":"DocumentReference"}}]}`
		if r := s.Do("POST", "", alice, bundle); r.Status < 400 {
			t.Errorf("alice points at bob's Binary in a transaction: %d %.300s", r.Status, r.Body)
		}
		r := s.Do("POST", "Bundle/$import?source=app", alice, doc("imp", "alice", "Binary/of-bob")+"\n", "Content-Type", "application/x-ndjson")
		if r.Status != 200 || !strings.Contains(string(r.Body), `"name":"rejected","valueInteger":1`) {
			t.Errorf("alice imports a pointer at bob's Binary: %d %.600s", r.Status, r.Body)
		}
		// Her own Binary, and a Binary elsewhere, she may point at.
		expect(t, s.Do("POST", "DocumentReference", alice, doc("x", "alice", "Binary/of-alice")), 201)
		expect(t, s.Do("POST", "DocumentReference", alice, doc("x", "alice", "https://other.example/fhir/Binary/of-bob")), 201)
		// A reference (not an attachment) may name any resource; it does
		// not make bob's Binary part of alice's record, nor of her export.
		expect(t, s.Do("POST", "Observation", alice, `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/alice"},"focus":[{"reference":"Binary/of-bob"}]}`), 201)
		if r := s.Do("GET", "Binary/of-bob", alice, nil); r.Status != 404 {
			t.Errorf("alice reads bob's Binary in the end: %d", r.Status)
		}
		if r := s.Do("GET", "Observation?_include=Observation:focus", alice, nil); strings.Contains(string(r.Body), `"id":"of-bob"`) {
			t.Errorf("alice includes bob's Binary: %.600s", r.Body)
		}
		exp := string(s.Do("GET", "Patient/alice/$phr-export", alice, nil).Body)
		if strings.Contains(exp, `"id":"of-bob"`) || strings.Contains(exp, `"id":"ctx-bob"`) || !strings.Contains(exp, `"id":"of-alice"`) {
			t.Errorf("alice's export: of-bob %v, ctx-bob %v, of-alice %v", strings.Contains(exp, `"id":"of-bob"`), strings.Contains(exp, `"id":"ctx-bob"`), strings.Contains(exp, `"id":"of-alice"`))
		}
		// An admin's export of her record keeps every Binary her
		// attachments point at.
		if exp := string(s.Do("GET", "Patient/alice/$phr-export", admin, nil).Body); !strings.Contains(exp, `"id":"ctx-bob"`) || !strings.Contains(exp, `"id":"of-alice"`) {
			t.Errorf("the admin's export of alice's record lacks a Binary her attachments point at")
		}
	})
}

// TestPatientConditionalSearches: a patient's conditional searches
// (conditional references, If-None-Exist, conditional update) match only
// what the patient may see, so that none tells them of another patient:
// a national identifier of another person answers as one no one has, and
// the patient's own resources still match.
func TestPatientConditionalSearches(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *servertest.Server) {
		admin := s.AdminToken()
		expect(t, s.Do("PUT", "Patient/alice", admin, `{"resourceType":"Patient","id":"alice","identifier":[{"system":"urn:ssn","value":"111"}]}`), 201)
		expect(t, s.Do("PUT", "Patient/bob", admin, `{"resourceType":"Patient","id":"bob","identifier":[{"system":"urn:ssn","value":"222"}]}`), 201)
		expect(t, s.Do("PUT", "Observation/bob-obs", admin, `{"resourceType":"Observation","id":"bob-obs","identifier":[{"system":"urn:acc","value":"B1"}],"status":"final","code":{"text":"x"},"subject":{"reference":"Patient/bob"}}`), 201)
		alice := s.Token("patient/*.cruds", "alice")
		tx := func(ssn string) *servertest.Response {
			return s.Do("POST", "", alice, `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/alice"},"focus":[{"reference":"Patient?identifier=urn:ssn|`+ssn+`"}]},"request":{"method":"POST","url":"Observation"}}]}`)
		}
		other, nobody := tx("222"), tx("999")
		if other.Status != nobody.Status || strings.Contains(string(other.Body), "bob") || strings.ReplaceAll(outcomeText(t, other), "222", "999") != outcomeText(t, nobody) {
			t.Errorf("another patient's identifier: %d %s; no one's: %d %s", other.Status, other.Body, nobody.Status, nobody.Body)
		}
		if r := tx("111"); r.Status != 200 || !strings.Contains(string(r.Body), `"focus":[{"reference":"Patient/alice"}]`) {
			t.Errorf("her own identifier: %d %.400s", r.Status, r.Body)
		}
		// If-None-Exist: bob's Observation is no match; she creates hers.
		obs := `{"resourceType":"Observation","identifier":[{"system":"urn:acc","value":"B1"}],"status":"final","code":{"text":"mine"},"subject":{"reference":"Patient/alice"}}`
		r := s.Do("POST", "Observation", alice, obs, "If-None-Exist", "identifier=urn:acc|B1")
		if r.Status != 201 || strings.Contains(string(r.Body), "bob") {
			t.Errorf("conditional create: %d %.400s", r.Status, r.Body)
		}
		// Again: now her own matches.
		if r := s.Do("POST", "Observation", alice, obs, "If-None-Exist", "identifier=urn:acc|B1"); r.Status != 200 || !strings.Contains(string(r.Body), "mine") {
			t.Errorf("conditional create again: %d %.400s", r.Status, r.Body)
		}
		// Conditional update: hers, not bob's.
		if r := s.Do("PUT", "Observation?identifier=urn:acc|B1", alice, strings.Replace(obs, "mine", "mine, updated", 1)); r.Status != 200 || !strings.Contains(string(r.Body), "mine, updated") {
			t.Errorf("conditional update: %d %.400s", r.Status, r.Body)
		}
		if r := s.Do("GET", "Observation/bob-obs", admin, nil); !strings.Contains(string(r.Body), `"versionId":"1"`) {
			t.Errorf("bob's Observation changed: %s", r.Body)
		}
		// An import resolves her conditional references the same way.
		line := func(ssn string) string {
			return `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/alice"},"focus":[{"reference":"Patient?identifier=urn:ssn|` + ssn + `"}]}` + "\n"
		}
		for _, ssn := range []string{"222", "999"} {
			r := s.Do("POST", "Bundle/$import?source=app-"+ssn, alice, line(ssn), "Content-Type", "application/x-ndjson")
			if strings.Contains(string(r.Body), "bob") {
				t.Errorf("an import with another patient's identifier: %.600s", r.Body)
			}
		}
		if r := s.Do("GET", "Observation?focus=Patient/bob", admin, nil); strings.Contains(string(r.Body), `"total":1`) || strings.Contains(string(r.Body), `"total":2`) {
			t.Errorf("alice's writes point at bob: %.600s", r.Body)
		}
	})
}

func TestOperationDefinitionServed(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	s.App.FHIR.HandleOperation(&api.Operation{
		Name: "ping", System: true, Methods: []string{"GET"},
		Resource: []byte(`{"resourceType":"OperationDefinition","id":"phr-ping","url":"http://example.org/OperationDefinition/phr-ping","name":"Ping","status":"active","kind":"operation","code":"ping","system":true,"type":false,"instance":false}`),
		Handler:  func(w http.ResponseWriter, r *http.Request, typ, id string) { w.WriteHeader(204) },
	})
	def := expect(t, s.Do("GET", "OperationDefinition/phr-ping", "", nil), 200)
	if def["code"] != "ping" {
		t.Fatalf("definition: %v", def)
	}
	expect(t, s.Do("GET", "OperationDefinition/nope", "", nil), 401)
	cs := string(s.Do("GET", "metadata", "", nil).Body)
	if !strings.Contains(cs, s.URL+"/fhir/OperationDefinition/phr-ping") {
		t.Fatalf("capability statement does not point at the definition: %s", cs)
	}
}
