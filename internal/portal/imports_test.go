package portal_test

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/shc/shctest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// upload posts a file body to the portal's import endpoint as the page's
// script does and returns the streamed report.
func (e *env) upload(c *http.Cookie, csrf, name, contentType, body string, extra ...string) page {
	e.t.Helper()
	return e.uploadWith(c, csrf, name, contentType, body, nil, extra...)
}

// uploadWith is upload with more request headers.
func (e *env) uploadWith(c *http.Cookie, csrf, name, contentType, body string, h http.Header, extra ...string) page {
	e.t.Helper()
	q := url.Values{"filename": {name}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	req, err := http.NewRequest(http.MethodPost, e.URL+"/p/alice/import/upload?"+q.Encode(), strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/x-ndjson")
	req.Header.Set("X-CSRF-Token", csrf)
	for k, v := range h {
		req.Header[k] = v
	}
	req.AddCookie(c)
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return page{resp.StatusCode, resp.Header, string(b)}
}

const labA = `{"resourceType":"Condition","id":"a-1","identifier":[{"system":"urn:test:cond","value":"c-77"}],"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]},"code":{"text":"Asthma"},"subject":{"reference":"Patient/alice"},"onsetDateTime":"2012-05-01"}
{"resourceType":"Observation","status":"final","code":{"text":"broken"},"subject":{"reference":"Patient/alice"},"valueQuantity":{"value":"not a number"}}
this is not JSON
`

const labB = `{"resourceType":"Condition","id":"b-9","identifier":[{"system":"urn:test:cond","value":"c-77"}],"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]},"code":{"text":"Asthma, mild intermittent"},"subject":{"reference":"Patient/alice"},"onsetDateTime":"2012-05-01"}
`

var conflictLinkRE = regexp.MustCompile(`href="(/p/alice/conflicts/\d+)"`)

func TestImportAndConflicts(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) { testImportAndConflicts(t, d) })
	}
}

func testImportAndConflicts(t *testing.T, dialect string) {
	e := start(t, dialect)
	e.seed()
	alice := e.login("patient", "alice")
	csrf := e.csrf(alice)

	p := e.get("/p/alice/import", alice)
	p.mustContain(t, "import page", `id="import-form"`, `type="file"`, "Import history", `href="/p/alice/import"`)

	// The report streams per line: the broken lines are named by number.
	p = e.upload(alice, csrf, "lab-a.phr", "application/x-ndjson", labA, "source", "Lab A")
	if p.Status != 200 || !strings.Contains(p.Header.Get("Content-Type"), "ndjson") {
		t.Fatalf("upload: %d %s\n%s", p.Status, p.Header.Get("Content-Type"), clip(p.Body))
	}
	lines := strings.Split(strings.TrimSpace(p.Body), "\n")
	last := lines[len(lines)-1]
	if !strings.Contains(last, `"resourceType":"Parameters"`) || !strings.Contains(last, `"name":"created","valueInteger":1`) || !strings.Contains(last, `"name":"rejected","valueInteger":2`) {
		t.Errorf("summary line: %s", last)
	}
	if !strings.Contains(p.Body, "line 2") || !strings.Contains(p.Body, "line 3") {
		t.Errorf("the report does not name lines 2 and 3:\n%s", p.Body)
	}
	// The history lists it; its page shows what it wrote and the rejected lines verbatim.
	p = e.get("/p/alice/import", alice)
	p.mustContain(t, "history", "lab-a.phr", `href="/p/alice/import/`)
	m := regexp.MustCompile(`href="(/p/alice/import/\d+)"`).FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("no batch link in\n%s", clip(p.Body))
	}
	p = e.get(m[1], alice)
	p.mustContain(t, "batch", "lab-a.phr", "Condition/", "this is not JSON", "not a number")

	// A Bundle on one line: its rejected entry is named by its index too.
	oneLine := `{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Observation","status":"final","code":{"text":"ok"},"subject":{"reference":"Patient/alice"}}},` +
		`{"resource":{"resourceType":"Observation","status":"final","code":{"text":"bad"},"subject":{"reference":"Patient/alice"},"valueQuantity":{"value":"high"}}}]}`
	p = e.upload(alice, csrf, "bundle.json", "application/fhir+json", oneLine, "source", "Lab C")
	if !strings.Contains(p.Body, "line 1, Bundle.entry[1]") {
		t.Errorf("the report does not name the entry:\n%s", clip(p.Body))
	}
	p = e.get("/p/alice/import", alice)
	m = regexp.MustCompile(`href="(/p/alice/import/\d+)">#\d+</a></td><td>[^<]*</td><td>bundle\.json<`).FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("no link to the Bundle's batch in\n%s", clip(p.Body))
	}
	p = e.get(m[1], alice)
	p.mustContain(t, "Bundle batch", "<td>1, Bundle.entry[1]</td>", "high")

	// The same condition from another source, said differently: a conflict.
	p = e.upload(alice, csrf, "lab-b.phr", "application/x-ndjson", labB, "source", "Lab B")
	if !strings.Contains(p.Body, `"name":"conflicts","valueInteger":1`) {
		t.Fatalf("second source: no conflict reported:\n%s", p.Body)
	}
	p = e.get("/p/alice/conflicts", alice)
	cm := conflictLinkRE.FindStringSubmatch(p.Body)
	if cm == nil {
		t.Fatalf("no conflict listed:\n%s", clip(p.Body))
	}
	p = e.get(cm[1], alice)
	p.mustContain(t, "conflict", "Asthma, mild intermittent", ">Asthma<", "Lab B", `<td class="code">code.text</td>`, `value="keep"`, `value="take"`, `name="merged"`)

	// Resolve with an edited merge: a new version, the conflict closed.
	merged := strings.Replace(strings.SplitN(labB, "\n", 2)[0], "Asthma, mild intermittent", "Asthma (mild, intermittent)", 1)
	if p := e.page(http.MethodPost, cm[1], alice, url.Values{"csrf": {"wrong"}, "action": {"keep"}}); p.Status != 403 {
		t.Errorf("resolve without the CSRF token: %d", p.Status)
	}
	if p := e.page(http.MethodPost, cm[1], alice, url.Values{"csrf": {csrf}, "action": {"merge"}, "merged": {"{not json"}}); p.Status != 400 || !strings.Contains(p.Body, "not valid JSON") {
		t.Errorf("resolve with broken JSON: %d %s", p.Status, clip(p.Body))
	}
	p = e.page(http.MethodPost, cm[1], alice, url.Values{"csrf": {csrf}, "action": {"merge"}, "merged": {merged}})
	if p.Status != http.StatusSeeOther || !strings.Contains(p.Header.Get("Location"), "/p/alice/r/Condition/") {
		t.Fatalf("resolve: %d %q\n%s", p.Status, p.Header.Get("Location"), clip(p.Body))
	}
	p = e.get(p.Header.Get("Location"), alice)
	p.mustContain(t, "resolved resource", "is resolved", "Asthma (mild, intermittent)")
	p = e.get("/p/alice/conflicts", alice)
	p.mustContain(t, "after resolving", "No open conflicts.")

	// A third source disagrees again; keeping the current version (a
	// resolution without a body) works too.
	p = e.upload(alice, csrf, "lab-c.phr", "application/x-ndjson", strings.NewReplacer("b-9", "c-3", "Asthma, mild intermittent", "Reactive airway disease").Replace(labB), "source", "Lab C")
	if !strings.Contains(p.Body, `"name":"conflicts","valueInteger":1`) {
		t.Fatalf("third source: no conflict reported:\n%s", p.Body)
	}
	cm = conflictLinkRE.FindStringSubmatch(e.get("/p/alice/conflicts", alice).Body)
	if cm == nil {
		t.Fatal("the third source's conflict is not listed")
	}
	p = e.page(http.MethodPost, cm[1], alice, url.Values{"csrf": {csrf}, "action": {"keep"}})
	if p.Status != http.StatusSeeOther {
		t.Fatalf("keep: %d\n%s", p.Status, clip(p.Body))
	}
	p = e.get(p.Header.Get("Location"), alice)
	p.mustContain(t, "kept resource", "is resolved", "Asthma (mild, intermittent)")
	p.mustNotContain(t, "kept resource", "Reactive airway disease</dd>")

	// The resource's provenance names its import, for the patient too
	// (the importer writes a Provenance per patient) and for an admin;
	// the version history shows the source to all.
	admin := e.login("admin", "")
	e.get("/p/alice/r/Condition/a-1", admin).mustContain(t, "provenance", "lab-a.phr", `href="/p/alice/import/1">import #1</a>`)
	e.get("/p/alice/r/Condition/a-1", alice).mustContain(t, "patient's provenance", "lab-a.phr", `href="/p/alice/import/1">import #1</a>`, "urn:phr:source:Lab%20A")
	e.get("/p/alice/r/Condition/a-1?v=1", alice).mustContain(t, "history source", `title="urn:phr:source:Lab%20A">Lab A</span>`)

	// Bob sees neither alice's imports nor her conflicts.
	bob := e.login("patient", "bob")
	p = e.get("/p/bob/import", bob)
	p.mustNotContain(t, "bob's history", "lab-a.phr", "lab-b.phr")
	p = e.get("/p/bob/conflicts?status=all", bob)
	p.mustNotContain(t, "bob's conflicts", "/conflicts/1\"")
	if p := e.get(strings.Replace(cm[1], "alice", "bob", 1), bob); p.Status != 404 && p.Status != 403 {
		t.Errorf("bob opens alice's conflict: %d", p.Status)
	}
	// Bad uploads say what is wrong.
	if p := e.upload(alice, csrf, "x.exe", "application/x-msdownload", "MZ"); p.Status != http.StatusUnsupportedMediaType {
		t.Errorf("upload of an executable: %d", p.Status)
	}
	if p := e.upload(alice, "bad", "x.phr", "application/x-ndjson", "{}"); p.Status != 403 {
		t.Errorf("upload without the CSRF token: %d", p.Status)
	}
}

// TestImportHealthCard: a patient uploads their own SMART Health Card on
// the import page; its Patient is taken as theirs and the Immunization
// lands in their record (the server has no issuer keys here, so the
// report says the signature was not checked).
func TestImportHealthCard(t *testing.T) {
	e := start(t, "sqlite")
	e.seed()
	alice := e.login("patient", "alice")
	csrf := e.csrf(alice)
	e.get("/p/alice/import", alice).mustContain(t, "import page", `.smart-health-card`)
	bundle := `{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"resource:0","resource":{"resourceType":"Patient","name":[{"family":"Anders","given":["Alice"]}],"birthDate":"1970-02-03"}},{"fullUrl":"resource:1","resource":{"resourceType":"Immunization","status":"completed","vaccineCode":{"coding":[{"system":"http://hl7.org/fhir/sid/cvx","code":"208"}]},"patient":{"reference":"resource:0"},"occurrenceDateTime":"2025-09-15"}}]}`
	card := shctest.File(shctest.NewIssuer(t).Card(t, "https://pharmacy.example", bundle))
	p := e.upload(alice, csrf, "flu.smart-health-card", "application/smart-health-card", card, "source", "Pharmacy")
	if p.Status != 200 || !strings.Contains(p.Body, `"name":"created","valueInteger":1`) || !strings.Contains(p.Body, `"name":"rejected","valueInteger":0`) || !strings.Contains(p.Body, "its signature was not checked") {
		t.Fatalf("card upload: %d\n%s", p.Status, clip(p.Body))
	}
}
