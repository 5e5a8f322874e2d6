package api_test

import (
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/server/servertest"
)

// entries returns the response entries of a Bundle response.
func entries(t *testing.T, b map[string]any) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, e := range b["entry"].([]any) {
		out = append(out, e.(map[string]any))
	}
	return out
}

func status(e map[string]any) string { return e["response"].(map[string]any)["status"].(string) }

func resourceOf(e map[string]any) map[string]any { r, _ := e["resource"].(map[string]any); return r }

func versionOf(t *testing.T, s *servertest.Server, tok, path string) string {
	t.Helper()
	r := expect(t, s.Do("GET", path, tok, nil), 200)
	return r["meta"].(map[string]any)["versionId"].(string)
}

func txBundle(entries ...string) string {
	return `{"resourceType":"Bundle","type":"transaction","entry":[` + strings.Join(entries, ",") + `]}`
}

// TestTransactionSemantics covers what a transaction Bundle must keep
// exact whatever way the server writes it: updates and update-as-create,
// If-Match (412, nothing kept), conditional create, conditional
// references (in the Bundle and in the store, none and several matches),
// deletes, conditional deletes, PATCH entries, Binary content, the
// patient compartment of a patient-scoped token, and that one time is
// given to all versions of a transaction.
func TestTransactionSemantics(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *servertest.Server) {
		tok := s.AdminToken()
		expect(t, s.Do("PUT", "Patient/p1", tok, `{"resourceType":"Patient","id":"p1","identifier":[{"system":"urn:sys","value":"one"}]}`), 201)
		expect(t, s.Do("PUT", "Organization/o1", tok, `{"resourceType":"Organization","id":"o1","identifier":[{"system":"urn:org","value":"A"}],"name":"A"}`), 201)
		expect(t, s.Do("PUT", "Organization/gone", tok, `{"resourceType":"Organization","id":"gone","name":"Gone"}`), 201)
		expect(t, s.Do("PUT", "Observation/obs-old", tok, `{"resourceType":"Observation","id":"obs-old","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"}}`), 201)

		// A transaction mixing every kind of write.
		patch := base64.StdEncoding.EncodeToString([]byte(`[{"op":"replace","path":"/status","value":"amended"}]`))
		resp := expect(t, s.Do("POST", "", tok, txBundle(
			`{"request":{"method":"DELETE","url":"Organization/gone"}}`,
			`{"request":{"method":"DELETE","url":"Organization?identifier=urn:org|none"}}`,
			`{"fullUrl":"urn:uuid:aaaaaaaa-0000-0000-0000-000000000001","resource":{"resourceType":"Patient","identifier":[{"system":"urn:sys","value":"one"}]},"request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=urn:sys|one"}}`,
			`{"fullUrl":"urn:uuid:aaaaaaaa-0000-0000-0000-000000000002","resource":{"resourceType":"Practitioner","identifier":[{"system":"urn:npi","value":"77"}]},"request":{"method":"POST","url":"Practitioner"}}`,
			`{"fullUrl":"urn:uuid:aaaaaaaa-0000-0000-0000-000000000003","resource":{"resourceType":"Encounter","status":"finished","class":{"code":"AMB"},"subject":{"reference":"urn:uuid:aaaaaaaa-0000-0000-0000-000000000001"},"participant":[{"individual":{"reference":"Practitioner?identifier=urn:npi|77"}}],"serviceProvider":{"reference":"Organization?identifier=urn:org|A"}},"request":{"method":"POST","url":"Encounter"}}`,
			`{"resource":{"resourceType":"Patient","id":"p1","identifier":[{"system":"urn:sys","value":"one"}],"gender":"female"},"request":{"method":"PUT","url":"Patient/p1","ifMatch":"W/\"1\""}}`,
			`{"resource":{"resourceType":"Patient","id":"p-new","gender":"male"},"request":{"method":"PUT","url":"Patient/p-new"}}`,
			`{"resource":{"resourceType":"Binary","contentType":"application/json-patch+json","data":"`+patch+`"},"request":{"method":"PATCH","url":"Observation/obs-old"}}`,
			`{"resource":{"resourceType":"Binary","contentType":"text/plain","data":"aGVsbG8="},"request":{"method":"POST","url":"Binary"}}`,
		)), 200)
		es := entries(t, resp)
		want := []string{"204", "204", "200", "201", "201", "200", "201", "200", "201"}
		for i, w := range want {
			if !strings.HasPrefix(status(es[i]), w) {
				t.Fatalf("entry %d: status %s, want %s: %v", i, status(es[i]), w, es[i])
			}
		}
		if id := resourceOf(es[2])["id"]; id != "p1" {
			t.Fatalf("conditional create did not match Patient/p1: %v", id)
		}
		enc := resourceOf(es[4])
		pract := resourceOf(es[3])["id"].(string)
		if ref := enc["subject"].(map[string]any)["reference"]; ref != "Patient/p1" {
			t.Fatalf("reference to the matched conditional create: %v", ref)
		}
		if ref := enc["participant"].([]any)[0].(map[string]any)["individual"].(map[string]any)["reference"]; ref != "Practitioner/"+pract {
			t.Fatalf("conditional reference to a resource of the Bundle: %v (practitioner %s)", ref, pract)
		}
		if ref := enc["serviceProvider"].(map[string]any)["reference"]; ref != "Organization/o1" {
			t.Fatalf("conditional reference to a stored resource: %v", ref)
		}
		if r := s.Do("GET", "Organization/gone", tok, nil); r.Status != 410 {
			t.Fatalf("deleted in a transaction: %d", r.Status)
		}
		if v := versionOf(t, s, tok, "Patient/p1"); v != "2" {
			t.Fatalf("Patient/p1 version %s after the update, want 2", v)
		}
		obs := expect(t, s.Do("GET", "Observation/obs-old", tok, nil), 200)
		if obs["status"] != "amended" || obs["meta"].(map[string]any)["versionId"] != "2" {
			t.Fatalf("patched observation: %v", obs)
		}
		if r := s.Do("GET", resourceOf(es[8])["resourceType"].(string)+"/"+resourceOf(es[8])["id"].(string), tok, nil, "Accept", "*/*"); string(r.Body) != "hello" {
			t.Fatalf("Binary from a transaction: %d %q", r.Status, r.Body)
		}
		// Every version of the transaction has the same lastUpdated, and
		// the response says where each is.
		var lu string
		for i, e := range es {
			if i < 3 {
				continue
			}
			m := resourceOf(e)["meta"].(map[string]any)
			if lu == "" {
				lu = m["lastUpdated"].(string)
			} else if m["lastUpdated"] != lu {
				t.Fatalf("entry %d lastUpdated %v, entry 3 %v", i, m["lastUpdated"], lu)
			}
			loc := e["response"].(map[string]any)["location"].(string)
			if want := fmt.Sprintf("%s/%s/_history/%s", resourceOf(e)["resourceType"], resourceOf(e)["id"], m["versionId"]); loc != want {
				t.Fatalf("entry %d location %q, want %q", i, loc, want)
			}
		}

		// If-Match on a stale version: 412 and nothing of the Bundle kept.
		r := s.Do("POST", "", tok, txBundle(
			`{"resource":{"resourceType":"Patient","id":"p-atomic"},"request":{"method":"PUT","url":"Patient/p-atomic"}}`,
			`{"resource":{"resourceType":"Patient","id":"p1"},"request":{"method":"PUT","url":"Patient/p1","ifMatch":"W/\"1\""}}`,
		))
		if r.Status != 412 || !strings.Contains(outcomeText(t, r), "Bundle.entry[1]") {
			t.Fatalf("stale If-Match: %d %s", r.Status, r.Body)
		}
		if r := s.Do("GET", "Patient/p-atomic", tok, nil); r.Status != 404 {
			t.Fatalf("a failed transaction kept a resource: %d", r.Status)
		}
		if v := versionOf(t, s, tok, "Patient/p1"); v != "2" {
			t.Fatalf("Patient/p1 version %s after a failed transaction, want 2", v)
		}
		// If-Match on a resource that does not exist.
		r = s.Do("POST", "", tok, txBundle(`{"resource":{"resourceType":"Patient","id":"nobody"},"request":{"method":"PUT","url":"Patient/nobody","ifMatch":"W/\"1\""}}`))
		if r.Status != 412 {
			t.Fatalf("If-Match on a missing resource: %d %s", r.Status, r.Body)
		}
		// A validation failure after a good update keeps nothing.
		r = s.Do("POST", "", tok, txBundle(
			`{"resource":{"resourceType":"Patient","id":"p1","gender":"other"},"request":{"method":"PUT","url":"Patient/p1"}}`,
			`{"resource":{"resourceType":"Observation","status":"bogus","code":{"text":"x"}},"request":{"method":"POST","url":"Observation"}}`,
		))
		if r.Status != 400 || !strings.Contains(outcomeText(t, r), "Bundle.entry[1]") {
			t.Fatalf("invalid entry: %d %s", r.Status, r.Body)
		}
		if p := expect(t, s.Do("GET", "Patient/p1", tok, nil), 200); p["gender"] != "female" {
			t.Fatalf("a failed transaction changed Patient/p1: %v", p)
		}
		// The id of a PUT entry must agree with its url.
		r = s.Do("POST", "", tok, txBundle(`{"resource":{"resourceType":"Patient","id":"a"},"request":{"method":"PUT","url":"Patient/b"}}`))
		if r.Status != 400 {
			t.Fatalf("PUT id mismatch: %d %s", r.Status, r.Body)
		}
		// Conditional references: none and several matches.
		r = s.Do("POST", "", tok, txBundle(`{"resource":{"resourceType":"Encounter","status":"finished","class":{"code":"AMB"},"serviceProvider":{"reference":"Organization?identifier=urn:org|missing"}},"request":{"method":"POST","url":"Encounter"}}`))
		if r.Status != 404 || !strings.Contains(outcomeText(t, r), "Encounter.serviceProvider.reference") {
			t.Fatalf("conditional reference to nothing: %d %s", r.Status, r.Body)
		}
		r = s.Do("POST", "", tok, txBundle(
			`{"resource":{"resourceType":"Organization","identifier":[{"system":"urn:org","value":"B"}]},"request":{"method":"POST","url":"Organization"}}`,
			`{"resource":{"resourceType":"Organization","identifier":[{"system":"urn:org","value":"B"}]},"request":{"method":"POST","url":"Organization"}}`,
			`{"resource":{"resourceType":"Encounter","status":"finished","class":{"code":"AMB"},"serviceProvider":{"reference":"Organization?identifier=urn:org|B"}},"request":{"method":"POST","url":"Encounter"}}`,
		))
		if r.Status != 412 || !strings.Contains(outcomeText(t, r), "Bundle.entry[2]") {
			t.Fatalf("conditional reference to several resources of the Bundle: %d %s", r.Status, r.Body)
		}
		// Delete and re-create one resource in one transaction.
		resp = expect(t, s.Do("POST", "", tok, txBundle(
			`{"resource":{"resourceType":"Patient","id":"p-new","gender":"female"},"request":{"method":"PUT","url":"Patient/p-new"}}`,
			`{"request":{"method":"DELETE","url":"Patient/p-new"}}`,
		)), 200)
		es = entries(t, resp)
		if !strings.HasPrefix(status(es[0]), "201") || resourceOf(es[0])["meta"].(map[string]any)["versionId"] != "3" {
			t.Fatalf("PUT after DELETE in one transaction: %v", es[0])
		}
		h := expect(t, s.Do("GET", "Patient/p-new/_history", tok, nil), 200)
		if n := len(h["entry"].([]any)); n != 3 {
			t.Fatalf("Patient/p-new has %d versions, want 3", n)
		}

		// A patient-scoped token writes only its own compartment.
		alice := s.Token("patient/*.*", "p1")
		r = s.Do("POST", "", alice, txBundle(
			`{"resource":{"resourceType":"Observation","status":"final","code":{"text":"mine"},"subject":{"reference":"Patient/p1"}},"request":{"method":"POST","url":"Observation"}}`,
			`{"resource":{"resourceType":"Observation","status":"final","code":{"text":"theirs"},"subject":{"reference":"Patient/p-new"}},"request":{"method":"POST","url":"Observation"}}`,
		))
		if r.Status != 403 || !strings.Contains(outcomeText(t, r), "Bundle.entry[1]") {
			t.Fatalf("patient token writing another compartment: %d %s", r.Status, r.Body)
		}
		expect(t, s.Do("POST", "", alice, txBundle(
			`{"resource":{"resourceType":"Observation","status":"final","code":{"text":"mine"},"subject":{"reference":"Patient/p1"}},"request":{"method":"POST","url":"Observation"}}`,
		)), 200)
	})
}

// TestBatchSemantics: batch entries succeed or fail on their own, a
// conditional create matches what an earlier entry created, and a failed
// entry names its problem.
func TestBatchSemantics(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *servertest.Server) {
		tok := s.AdminToken()
		resp := expect(t, s.Do("POST", "", tok, `{"resourceType":"Bundle","type":"batch","entry":[
		 {"resource":{"resourceType":"Organization","identifier":[{"system":"urn:org","value":"X"}]},"request":{"method":"POST","url":"Organization","ifNoneExist":"identifier=urn:org|X"}},
		 {"resource":{"resourceType":"Organization","identifier":[{"system":"urn:org","value":"X"}]},"request":{"method":"POST","url":"Organization","ifNoneExist":"identifier=urn:org|X"}},
		 {"resource":{"resourceType":"Location","managingOrganization":{"reference":"Organization?identifier=urn:org|X"}},"request":{"method":"POST","url":"Location"}},
		 {"resource":{"resourceType":"Location","managingOrganization":{"reference":"Organization?identifier=urn:org|Y"}},"request":{"method":"POST","url":"Location"}},
		 {"resource":{"resourceType":"Patient","id":"b1"},"request":{"method":"PUT","url":"Patient/b1","ifMatch":"W/\"4\""}},
		 {"request":{"method":"DELETE","url":"Patient/none"}}
		]}`), 200)
		es := entries(t, resp)
		want := []string{"201", "200", "201", "404", "412", "204"}
		for i, w := range want {
			if !strings.HasPrefix(status(es[i]), w) {
				t.Fatalf("entry %d: status %s, want %s: %v", i, status(es[i]), w, es[i])
			}
		}
		org := resourceOf(es[0])["id"]
		if resourceOf(es[1])["id"] != org {
			t.Fatalf("the second conditional create did not match the first: %v %v", resourceOf(es[1])["id"], org)
		}
		if ref := resourceOf(es[2])["managingOrganization"].(map[string]any)["reference"]; ref != "Organization/"+org.(string) {
			t.Fatalf("conditional reference in a batch: %v", ref)
		}
		if out := es[3]["response"].(map[string]any)["outcome"]; out == nil {
			t.Fatalf("failed batch entry without an outcome: %v", es[3])
		}
	})
}

// TestBundleBodyLimit: a Bundle over the body limit gets 413 whether its
// length is declared or it comes chunked, and one within it is processed.
func TestBundleBodyLimit(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	tok := s.AdminToken()
	body := txBundle(`{"resource":{"resourceType":"Patient","id":"lim"},"request":{"method":"PUT","url":"Patient/lim"}}`)
	s.App.FHIR.MaxBody = int64(len(body))
	expect(t, s.Do("POST", "", tok, body), 200)
	s.App.FHIR.MaxBody = int64(len(body)) - 1
	if r := s.Do("POST", "", tok, body); r.Status != 413 {
		t.Fatalf("declared length over the limit: %d %s", r.Status, r.Body)
	}
	// io.MultiReader hides the length: the request is sent chunked.
	if r := s.Do("POST", "", tok, io.MultiReader(strings.NewReader(body))); r.Status != 413 {
		t.Fatalf("chunked body over the limit: %d %s", r.Status, r.Body)
	}
	s.App.FHIR.MaxBody = int64(len(body))
	if r := s.Do("POST", "", tok, io.MultiReader(strings.NewReader(body))); r.Status != 200 {
		t.Fatalf("chunked body within the limit: %d %s", r.Status, r.Body)
	}
}
