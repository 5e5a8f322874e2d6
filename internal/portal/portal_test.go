package portal_test

import (
	"context"
	"fmt"
	"github.com/phr-project/phr/internal/store/storetest"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/auth/authdb"
	"github.com/phr-project/phr/internal/authserver"
	"github.com/phr-project/phr/internal/server/servertest"
)

// env is a running server (with the portal wired as in production) and
// a client that does not follow redirects.
type env struct {
	*servertest.Server
	t      *testing.T
	client *http.Client
	users  int
}

func start(t *testing.T, dialect string) *env {
	t.Helper()
	srv := servertest.Start(t, dialect)
	return &env{Server: srv, t: t, client: &http.Client{
		Timeout:       time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// testPassword is the password of the users tests create.
const testPassword = "correct horse battery staple"

// addUser creates a user of the sign-in service and returns its email.
func (e *env) addUser(role, patient string) string {
	e.t.Helper()
	e.users++
	email := fmt.Sprintf("%s%d@example.org", role, e.users)
	if _, err := e.App.Users.AddUser(context.Background(), authdb.User{Email: email, Role: role, Patient: patient}, testPassword); err != nil {
		e.t.Fatalf("add user: %v", err)
	}
	return email
}

// login creates a user and signs in through the real /login form; it
// returns the session cookie.
func (e *env) login(role, patient string) *http.Cookie {
	e.t.Helper()
	return e.signIn(e.addUser(role, patient), testPassword)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (e *env) signIn(email, password string) *http.Cookie {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.URL+"/login", nil)
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := csrfRE.FindStringSubmatch(string(b))
	if m == nil {
		e.t.Fatalf("the login form has no CSRF field:\n%s", b)
	}
	form := url.Values{"email": {email}, "password": {password}, "csrf": {m[1]}, "next": {"/"}}
	req, _ = http.NewRequest(http.MethodPost, e.URL+"/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, c := range resp.Cookies() {
		req.AddCookie(c)
	}
	resp2, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp2.Body.Close()
	for _, c := range resp2.Cookies() {
		if c.Name == authserver.SessionCookie && c.Value != "" {
			return &http.Cookie{Name: c.Name, Value: c.Value}
		}
	}
	e.t.Fatalf("sign-in as %s: %d, no session cookie", email, resp2.StatusCode)
	return nil
}

// csrf returns the session's CSRF token, as its pages carry it.
func (e *env) csrf(c *http.Cookie) string {
	e.t.Helper()
	p := e.get("/", c)
	if p.Status == http.StatusSeeOther {
		p = e.get(p.Header.Get("Location"), c)
	}
	m := csrfRE.FindStringSubmatch(p.Body)
	if m == nil {
		e.t.Fatalf("no CSRF token on the page:\n%s", clip(p.Body))
	}
	return m[1]
}

type page struct {
	Status int
	Header http.Header
	Body   string
}

func (e *env) page(method, path string, c *http.Cookie, form url.Values) page {
	e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, e.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if c != nil {
		req.AddCookie(c)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return page{resp.StatusCode, resp.Header, string(b)}
}

func (e *env) get(path string, c *http.Cookie) page {
	e.t.Helper()
	return e.page(http.MethodGet, path, c, nil)
}

// mustContain fails unless the page has every string.
func (p page) mustContain(t *testing.T, what string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(p.Body, s) {
			t.Errorf("%s: page (status %d) lacks %q\n%s", what, p.Status, s, clip(p.Body))
		}
	}
}

func (p page) mustNotContain(t *testing.T, what string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if strings.Contains(p.Body, s) {
			t.Errorf("%s: page has %q, which it must not", what, s)
		}
	}
}

func clip(s string) string {
	if len(s) > 3000 {
		return s[:3000] + "…"
	}
	return s
}

// put writes a resource with the admin token and fails the test unless
// it is stored.
func (e *env) put(res string) {
	e.t.Helper()
	var typ, id string
	{
		i := strings.Index(res, `"resourceType":"`)
		j := strings.Index(res[i+16:], `"`)
		typ = res[i+16 : i+16+j]
		k := strings.Index(res, `"id":"`)
		l := strings.Index(res[k+6:], `"`)
		id = res[k+6 : k+6+l]
	}
	r := e.Do(http.MethodPut, typ+"/"+id, e.AdminToken(), res)
	if r.Status != 200 && r.Status != 201 {
		e.t.Fatalf("PUT %s/%s: %d %s", typ, id, r.Status, r.Body)
	}
}

// seed writes two patients: alice with cholesterol values, a condition
// and an observation with two versions; bob with one observation.
func (e *env) seed() {
	e.put(`{"resourceType":"Patient","id":"alice","name":[{"given":["Alice"],"family":"Anders"}],"birthDate":"1970-02-03","gender":"female"}`)
	e.put(`{"resourceType":"Patient","id":"bob","name":[{"given":["Bob"],"family":"Berg"}],"birthDate":"1980-04-05","gender":"male"}`)
	for i, v := range []string{"180.5", "201", "195.25"} {
		e.put(`{"resourceType":"Observation","id":"chol-` + string(rune('a'+i)) + `","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2093-3","display":"Cholesterol [Mass/volume] in Serum or Plasma"}]},"subject":{"reference":"Patient/alice"},"effectiveDateTime":"201` + string(rune('5'+i)) + `-06-01T10:00:00Z","valueQuantity":{"value":` + v + `,"unit":"mg/dL","system":"http://unitsofmeasure.org","code":"mg/dL"}}`)
	}
	e.put(`{"resourceType":"Condition","id":"cond-a","clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]},"code":{"text":"Hypertension"},"subject":{"reference":"Patient/alice"},"onsetDateTime":"2014-01-01"}`)
	e.put(`{"resourceType":"Observation","id":"wt-a","status":"preliminary","code":{"coding":[{"system":"http://loinc.org","code":"29463-7","display":"Body weight"}]},"subject":{"reference":"Patient/alice"},"effectiveDateTime":"2019-01-01","valueQuantity":{"value":70.0,"unit":"kg"}}`)
	e.put(`{"resourceType":"Observation","id":"wt-a","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"29463-7","display":"Body weight"}]},"subject":{"reference":"Patient/alice"},"effectiveDateTime":"2019-01-01","valueQuantity":{"value":71.50,"unit":"kg"}}`)
	e.put(`{"resourceType":"Observation","id":"secret-b","status":"final","code":{"text":"Bob's private result"},"subject":{"reference":"Patient/bob"},"effectiveDateTime":"2020-01-01","valueString":"bob-only-value"}`)
}

func TestSignInRequired(t *testing.T) {
	e := start(t, "sqlite")
	e.seed()
	for _, path := range []string{"/", "/p/alice/", "/p/alice/timeline", "/p/alice/r/Observation/wt-a"} {
		p := e.get(path, nil)
		if p.Status != http.StatusSeeOther || !strings.HasPrefix(p.Header.Get("Location"), "/login?next=") {
			t.Errorf("GET %s without a session: %d %q, want a redirect to /login", path, p.Status, p.Header.Get("Location"))
		}
	}
	// A made-up or signed-out session is no better.
	if p := e.get("/p/alice/", &http.Cookie{Name: authserver.SessionCookie, Value: "made-up"}); p.Status != http.StatusSeeOther {
		t.Errorf("made-up session: %d, want 303", p.Status)
	}
	c := e.login("patient", "alice")
	csrf := e.csrf(c)
	if p := e.page(http.MethodPost, "/logout", c, url.Values{"csrf": {csrf}}); p.Status != http.StatusSeeOther {
		t.Fatalf("sign-out: %d", p.Status)
	}
	if p := e.get("/p/alice/", c); p.Status != http.StatusSeeOther {
		t.Errorf("signed-out session: %d, want 303", p.Status)
	}
	// Static assets are public and embedded.
	if p := e.get("/static/portal.css", nil); p.Status != 200 || !strings.Contains(p.Body, "system-ui") {
		t.Errorf("portal.css: %d", p.Status)
	}
}

func TestHomeRedirectsPatient(t *testing.T) {
	e := start(t, "sqlite")
	e.seed()
	c := e.login("patient", "alice")
	p := e.get("/", c)
	if p.Status != http.StatusSeeOther || p.Header.Get("Location") != "/p/alice/" {
		t.Fatalf("GET / as alice: %d %q", p.Status, p.Header.Get("Location"))
	}
}

func TestDetailHistoryDiff(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) { testDetailHistoryDiff(t, d) })
	}
}

func testDetailHistoryDiff(t *testing.T, dialect string) {
	e := start(t, dialect)
	e.seed()
	c := e.login("patient", "alice")
	p := e.get("/p/alice/r/Observation/wt-a", c)
	if p.Status != 200 {
		t.Fatalf("detail: %d\n%s", p.Status, clip(p.Body))
	}
	// Readable, raw JSON with the exact decimal, two versions and the
	// diff from version 1 to 2 by default.
	p.mustContain(t, "detail", "Body weight", "71.50 kg", "&#34;value&#34;: 71.50", "version 2",
		`href="/p/alice/r/Observation/wt-a?v=1"`, "Changes from version 1 to 2",
		`<td class="code">status</td><td class="old">preliminary</td><td class="new">final</td>`,
		`<td class="code">valueQuantity.value</td><td class="old">70.0</td><td class="new">71.50</td>`,
		`<a href="/p/alice/r/Patient/alice">Patient/alice</a>`)
	// An older version, and an explicit comparison.
	p = e.get("/p/alice/r/Observation/wt-a?v=1", c)
	p.mustContain(t, "vread", "70.0 kg", "version 1")
	p.mustNotContain(t, "vread", "71.50 kg")
	p = e.get("/p/alice/r/Observation/wt-a?from=2&to=1", c)
	p.mustContain(t, "reverse diff", `<td class="old">final</td><td class="new">preliminary</td>`)
	// Bad input says what is wrong.
	p = e.get("/p/alice/r/Observation/wt-a?v=x", c)
	if p.Status != 400 || !strings.Contains(p.Body, "v: &#34;x&#34; is not a version number") {
		t.Errorf("bad version: %d\n%s", p.Status, clip(p.Body))
	}
	p = e.get("/p/alice/r/Nonsense/1", c)
	if p.Status != 404 {
		t.Errorf("unknown type: %d", p.Status)
	}
	p = e.get("/p/alice/r/Observation/missing", c)
	if p.Status != 404 {
		t.Errorf("missing resource: %d", p.Status)
	}
}

// TestPatientConfined proves a patient cannot see another patient's pages
// or resources, whichever way the URL is put together, while an admin can.
func TestPatientConfined(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) { testPatientConfined(t, d) })
	}
}

func testPatientConfined(t *testing.T, dialect string) {
	e := start(t, dialect)
	e.seed()
	alice := e.login("patient", "alice")
	for _, path := range []string{"/p/bob/", "/p/bob/timeline", "/p/bob/results", "/p/bob/r/Observation/secret-b", "/p/alice/r/Observation/secret-b", "/p/alice/r/Patient/bob", "/p/alice/r/Observation/secret-b?v=1"} {
		p := e.get(path, alice)
		if p.Status != http.StatusForbidden && p.Status != http.StatusNotFound {
			t.Errorf("alice GET %s: %d, want 403 or 404", path, p.Status)
		}
		p.mustNotContain(t, path, "bob-only-value", "Bob&#39;s private result", "Berg")
	}
	admin := e.login("admin", "")
	p := e.get("/p/bob/r/Observation/secret-b", admin)
	if p.Status != 200 {
		t.Fatalf("admin reads bob's observation: %d", p.Status)
	}
	p.mustContain(t, "admin detail", "bob-only-value")
}
