package api_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/server/servertest"
)

// securityContextOf reads a Binary as the admin and returns its
// securityContext reference ("" without one).
func securityContextOf(t *testing.T, s *servertest.Server, id string) string {
	t.Helper()
	r := s.Do("GET", "Binary/"+id, s.AdminToken(), nil, "Accept", "application/fhir+json")
	var b struct {
		SecurityContext struct{ Reference string }
	}
	if err := json.Unmarshal(r.Body, &b); err != nil || r.Status != 200 {
		t.Fatalf("read Binary/%s: %d %v %.300s", id, r.Status, err, r.Body)
	}
	return b.SecurityContext.Reference
}

// TestPatientWritesBinary: a patient (or their app) stores the content of
// their own documents. A Binary they write gets a securityContext naming
// their record when it has none, one naming another record is refused,
// and they may change or delete only Binaries whose securityContext names
// their record: not an admin's shared one, not another patient's (nor,
// once deleted, its id). A transaction may carry the Binary and the
// document that points at it, and the Binary's securityContext may name
// that document. A Binary no document points at yet is still in the
// exports of the record its securityContext names.
func TestPatientWritesBinary(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *servertest.Server) {
		admin := s.AdminToken()
		doc := func(id, patient, url string) string {
			return `{"resourceType":"DocumentReference","id":"` + id + `","status":"current","subject":{"reference":"Patient/` + patient + `"},"content":[{"attachment":{"contentType":"text/plain","url":"` + url + `"}}]}`
		}
		binary := func(id, extra string) string {
			return `{"resourceType":"Binary","id":"` + id + `","contentType":"text/plain",` + extra + `"data":"U0VDUkVU"}`
		}
		for path, body := range map[string]string{
			"Patient/alice":             `{"resourceType":"Patient","id":"alice"}`,
			"Patient/bob":               `{"resourceType":"Patient","id":"bob"}`,
			"Binary/of-bob":             binary("of-bob", `"securityContext":{"reference":"Patient/bob"},`),
			"DocumentReference/d-bob":   doc("d-bob", "bob", "Binary/of-bob"),
			"Binary/shared":             binary("shared", ""),
			"DocumentReference/d-alice": doc("d-alice", "alice", "Binary/shared"),
		} {
			if r := s.Do("PUT", path, admin, body); r.Status >= 300 {
				t.Fatalf("PUT %s: %d %s", path, r.Status, r.Body)
			}
		}
		alice, bob := s.Token("patient/*.cruds", "alice"), s.Token("patient/*.cruds", "bob")

		// A raw upload: the server names her record as its context.
		r := s.Do("POST", "Binary", alice, "my scan", "Content-Type", "text/plain")
		if r.Status != 201 {
			t.Fatalf("alice uploads a Binary: %d %s", r.Status, r.Body)
		}
		scan := strings.TrimPrefix(strings.Split(r.Header.Get("Location"), "/_history")[0], s.FHIR+"/Binary/")
		if sc := securityContextOf(t, s, scan); sc != "Patient/alice" {
			t.Errorf("her upload's securityContext: %q", sc)
		}
		if r := s.Do("GET", "Binary/"+scan, alice, nil, "Accept", "text/plain"); r.Status != 200 || string(r.Body) != "my scan" {
			t.Errorf("alice reads her upload: %d %q", r.Status, r.Body)
		}
		if r := s.Do("GET", "Binary/"+scan, bob, nil); r.Status != 404 {
			t.Errorf("bob reads alice's upload: %d", r.Status)
		}
		expect(t, s.Do("POST", "DocumentReference", alice, doc("x", "alice", "Binary/"+scan)), 201)

		// A securityContext of her own record is kept; another's refused.
		for body, status := range map[string]int{
			binary("x", `"securityContext":{"reference":"DocumentReference/d-alice"},`): 201,
			binary("x", `"securityContext":{"reference":"Patient/bob"},`):               403,
			binary("x", `"securityContext":{"reference":"DocumentReference/d-bob"},`):   403,
			binary("x", `"securityContext":{"reference":"DocumentReference/none"},`):    403,
		} {
			if r := s.Do("POST", "Binary", alice, body); r.Status != status {
				t.Errorf("alice posts %s: %d, want %d: %.300s", body, r.Status, status, r.Body)
			}
		}

		// Update as create under a new id; then again without a
		// securityContext: the stored one stays.
		expect(t, s.Do("PUT", "Binary/alice-1", alice, binary("alice-1", `"securityContext":{"reference":"DocumentReference/d-alice"},`)), 201)
		expect(t, s.Do("PUT", "Binary/alice-1", alice, binary("alice-1", "")), 200)
		if sc := securityContextOf(t, s, "alice-1"); sc != "DocumentReference/d-alice" {
			t.Errorf("her Binary's securityContext after an update without one: %q", sc)
		}
		// Not hers to change: the admin's shared Binary (which she may
		// read), bob's.
		if r := s.Do("GET", "Binary/shared", alice, nil); r.Status != 200 {
			t.Errorf("alice reads the shared Binary her document points at: %d", r.Status)
		}
		for _, id := range []string{"shared", "of-bob"} {
			if r := s.Do("PUT", "Binary/"+id, alice, binary(id, "")); r.Status != 403 {
				t.Errorf("alice overwrites Binary/%s: %d %.300s", id, r.Status, r.Body)
			}
		}
		if r := s.Do("DELETE", "Binary/shared", alice, nil); r.Status != 403 {
			t.Errorf("alice deletes the shared Binary: %d %.300s", r.Status, r.Body)
		}
		s.Do("DELETE", "Binary/of-bob", alice, nil)
		if r := s.Do("GET", "Binary/of-bob", bob, nil); r.Status != 200 {
			t.Errorf("bob's Binary after alice's delete: %d", r.Status)
		}
		// Her own she deletes; its id stays hers.
		if r := s.Do("DELETE", "Binary/alice-1", alice, nil); r.Status >= 300 {
			t.Errorf("alice deletes her Binary: %d %.300s", r.Status, r.Body)
		}
		if r := s.Do("PUT", "Binary/alice-1", bob, binary("alice-1", "")); r.Status != 403 {
			t.Errorf("bob writes over alice's deleted Binary: %d %.300s", r.Status, r.Body)
		}
		if r := s.Do("GET", "Binary/alice-1/_history/4", admin, nil); r.Status != 404 && r.Status != 410 {
			t.Errorf("bob's write over alice's deleted Binary was stored: %d", r.Status)
		}

		// A transaction: the Binary names the document in its
		// securityContext, the document points at the Binary.
		tx := `{"resourceType":"Bundle","type":"transaction","entry":[
			{"fullUrl":"urn:uuid:0b5e7a52-0000-4000-8000-000000000001","resource":{"resourceType":"Binary","contentType":"text/plain","securityContext":{"reference":"urn:uuid:0b5e7a52-0000-4000-8000-000000000002"},"data":"TEVUVEVS"},"request":{"method":"POST","url":"Binary"}},
			{"fullUrl":"urn:uuid:0b5e7a52-0000-4000-8000-000000000002","resource":` + doc("", "alice", "urn:uuid:0b5e7a52-0000-4000-8000-000000000001") + `,"request":{"method":"POST","url":"DocumentReference"}}]}`
		r = s.Do("POST", "", alice, tx)
		var resp struct {
			Entry []struct{ Response struct{ Location string } }
		}
		if err := json.Unmarshal(r.Body, &resp); err != nil || r.Status != 200 || len(resp.Entry) != 2 {
			t.Fatalf("alice's transaction: %d %v %.500s", r.Status, err, r.Body)
		}
		binID := strings.Split(resp.Entry[0].Response.Location, "/")[1]
		docID := strings.Split(resp.Entry[1].Response.Location, "/")[1]
		if sc := securityContextOf(t, s, binID); sc != "DocumentReference/"+docID {
			t.Errorf("the transaction's Binary's securityContext: %q, want DocumentReference/%s", sc, docID)
		}
		if r := s.Do("GET", "Binary/"+binID, alice, nil, "Accept", "text/plain"); r.Status != 200 || string(r.Body) != "LETTER" {
			t.Errorf("alice reads the transaction's Binary: %d %q", r.Status, r.Body)
		}
		// The same with bob's Patient as the Binary's context fails as a
		// whole: nothing of it is stored.
		bad := strings.Replace(strings.Replace(tx, "urn:uuid:0b5e7a52-0000-4000-8000-000000000002\"},\"data\"", "Patient/bob\"},\"data\"", 1), "TEVUVEVS", "QkFE", 1)
		if r := s.Do("POST", "", alice, bad); r.Status != 403 {
			t.Errorf("alice's transaction with a Binary of bob's context: %d %.300s", r.Status, r.Body)
		}
		if r := s.Do("GET", "DocumentReference?patient=alice", admin, nil); !strings.Contains(string(r.Body), `"total":3`) {
			t.Errorf("alice's documents after the failed transaction: %.300s", r.Body)
		}

		// An upload no document points at yet is part of her record: her
		// export and the admin's export of her record carry it, bob's
		// does not.
		expect(t, s.Do("PUT", "Binary/orphan", alice, binary("orphan", "")), 201)
		expect(t, s.Do("PUT", "Binary/orphan-doc", alice, binary("orphan-doc", `"securityContext":{"reference":"DocumentReference/d-alice"},`)), 201)
		for who, tok := range map[string]string{"alice": alice, "the admin": admin} {
			exp := string(s.Do("GET", "Patient/alice/$phr-export", tok, nil).Body)
			if !strings.Contains(exp, `"id":"orphan"`) || !strings.Contains(exp, `"id":"orphan-doc"`) || strings.Contains(exp, `"id":"of-bob"`) {
				t.Errorf("%s's export of alice's record: orphan %v, orphan-doc %v, of-bob %v", who, strings.Contains(exp, `"id":"orphan"`), strings.Contains(exp, `"id":"orphan-doc"`), strings.Contains(exp, `"id":"of-bob"`))
			}
		}
		if exp := string(s.Do("GET", "Patient/bob/$phr-export", bob, nil).Body); strings.Contains(exp, `"id":"orphan"`) || !strings.Contains(exp, `"id":"of-bob"`) {
			t.Errorf("bob's export: alice's orphan %v, his own %v", strings.Contains(exp, `"id":"orphan"`), strings.Contains(exp, `"id":"of-bob"`))
		}
	})
}
