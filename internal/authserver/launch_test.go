package authserver_test

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/auth/pkce"
	"github.com/phr-project/phr/internal/auth/token"
	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// browser is an HTTP client with cookies that does not follow redirects,
// so each step of a flow can be checked.
type browser struct {
	t *testing.T
	c *http.Client
}

func newBrowser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t, &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type page struct {
	status   int
	location string
	body     string
}

func (b *browser) do(method, u string, form url.Values) page {
	b.t.Helper()
	var resp *http.Response
	var err error
	if method == "GET" {
		resp, err = b.c.Get(u)
	} else {
		resp, err = b.c.PostForm(u, form)
	}
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return page{resp.StatusCode, resp.Header.Get("Location"), string(body)}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, p page) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no csrf field in page:\n%s", p.body)
	}
	return html.UnescapeString(m[1])
}

// hiddenFields returns the hidden inputs of a form.
func hiddenFields(body string) url.Values {
	v := url.Values{}
	for _, m := range regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`).FindAllStringSubmatch(body, -1) {
		v.Set(html.UnescapeString(m[1]), html.UnescapeString(m[2]))
	}
	return v
}

func create(t *testing.T, s *servertest.Server, typ, body string) string {
	t.Helper()
	r := s.Do("POST", typ, s.AdminToken(), body)
	if r.Status != http.StatusCreated {
		t.Fatalf("create %s: %d %s", typ, r.Status, r.Body)
	}
	return r.JSON(t)["id"].(string)
}

func addUser(t *testing.T, s *servertest.Server, email, role, patient, pw string) {
	t.Helper()
	r := s.Do("POST", "/admin/users", s.AdminToken(), map[string]string{"email": email, "role": role, "patient": patient, "password": pw})
	if r.Status != http.StatusCreated {
		t.Fatalf("add user: %d %s", r.Status, r.Body)
	}
}

func TestAppLaunch(t *testing.T) {
	for _, dialect := range storetest.Dialects() {
		t.Run(dialect, func(t *testing.T) { testAppLaunch(t, dialect) })
	}
}

func testAppLaunch(t *testing.T, dialect string) {
	s := servertest.Start(t, dialect)
	ann := create(t, s, "Patient", `{"resourceType":"Patient","name":[{"family":"Ann"}]}`)
	bob := create(t, s, "Patient", `{"resourceType":"Patient","name":[{"family":"Bob"}]}`)
	bobObs := create(t, s, "Observation", `{"resourceType":"Observation","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/`+bob+`"}}`)
	annObs := create(t, s, "Observation", `{"resourceType":"Observation","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/`+ann+`"}}`)
	addUser(t, s, "ann@example.org", "patient", ann, "ann's long password")

	redirect := "http://127.0.0.1:1/callback"
	reg := s.Do("POST", "/admin/clients", s.AdminToken(), map[string]any{"name": "Weight Tracker",
		"scope": "patient/*.rs launch/patient offline_access openid fhirUser", "redirect_uris": []string{redirect}})
	if reg.Status != http.StatusCreated {
		t.Fatalf("register app: %d %s", reg.Status, reg.Body)
	}
	clientID := reg.JSON(t)["id"].(string)

	verifier := token.NewID() + token.NewID() + "-abc" // 47 characters
	authz := url.Values{"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {redirect},
		"scope": {"launch/patient patient/*.rs patient/Observation.cruds offline_access openid fhirUser"}, "state": {"st-123"}, "aud": {s.FHIR},
		"code_challenge": {pkce.Challenge(verifier)}, "code_challenge_method": {"S256"}}
	b := newBrowser(t)

	// 1. authorize without a session -> login.
	p := b.do("GET", s.URL+"/auth/authorize?"+authz.Encode(), nil)
	if p.status != http.StatusSeeOther || !strings.HasPrefix(p.location, "/login?next=") {
		t.Fatalf("authorize without session: %d %s", p.status, p.location)
	}
	next, _ := url.Parse(p.location)
	// 2. login page, then a wrong password, then the right one.
	login := b.do("GET", s.URL+p.location, nil)
	if login.status != 200 {
		t.Fatalf("login page: %d", login.status)
	}
	form := url.Values{"email": {"ann@example.org"}, "password": {"wrong password!"}, "csrf": {csrfOf(t, login)}, "next": {next.Query().Get("next")}}
	if bad := b.do("POST", s.URL+"/login", form); bad.status != http.StatusUnauthorized || !strings.Contains(bad.body, "Wrong email or password") {
		t.Fatalf("wrong password: %d %s", bad.status, bad.body)
	}
	login = b.do("GET", s.URL+p.location, nil)
	form.Set("csrf", csrfOf(t, login))
	form.Set("password", "ann's long password")
	p = b.do("POST", s.URL+"/login", form)
	if p.status != http.StatusSeeOther || !strings.HasPrefix(p.location, "/auth/authorize?") {
		t.Fatalf("login: %d %s", p.status, p.location)
	}
	// 3. consent page lists the scopes granted (Observation writes not registered for the app, Observation reads
	// covered by patient/*.rs).
	consent := b.do("GET", s.URL+p.location, nil)
	if consent.status != 200 || !strings.Contains(consent.body, "Weight Tracker") {
		t.Fatalf("consent: %d %s", consent.status, consent.body)
	}
	for _, want := range []string{"patient/*.rs", "launch/patient", "offline_access", "openid", "fhirUser"} {
		if !strings.Contains(consent.body, want) {
			t.Errorf("consent page does not list %s", want)
		}
	}
	list := consent.body[strings.Index(consent.body, `<ul class="scopes">`):]
	if list = list[:strings.Index(list, "</ul>")]; strings.Contains(list, ".cruds") {
		t.Error("consent page lists a scope the app may not have")
	}
	// A consent POST without the session's CSRF token is refused.
	approve := hiddenFields(consent.body)
	approve.Set("decision", "approve")
	forged := url.Values{}
	for k, v := range approve {
		forged[k] = v
	}
	forged.Set("csrf", "forged")
	if f := b.do("POST", s.URL+"/auth/authorize", forged); f.status != http.StatusForbidden {
		t.Fatalf("forged consent: %d", f.status)
	}
	// 4. approve -> code.
	p = b.do("POST", s.URL+"/auth/authorize", approve)
	if p.status != http.StatusFound || !strings.HasPrefix(p.location, redirect+"?") {
		t.Fatalf("approve: %d %s %s", p.status, p.location, p.body)
	}
	cb, _ := url.Parse(p.location)
	code := cb.Query().Get("code")
	if code == "" || cb.Query().Get("state") != "st-123" {
		t.Fatalf("callback %s", p.location)
	}
	// 5. token: a wrong verifier spends nothing... but the code is single-use,
	// so check the verifier on the real exchange's failure path first with a
	// second flow below; here the right exchange.
	tf := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "client_id": {clientID}, "code_verifier": {verifier}}
	r := postToken(t, s, tf)
	if r.status != 200 {
		t.Fatalf("token: %d %v", r.status, r.body)
	}
	if r.body["patient"] != ann || r.body["refresh_token"] == nil || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("token response: %v", r.body)
	}
	scopeGranted := r.body["scope"].(string)
	if !strings.Contains(scopeGranted, "openid") || !strings.Contains(scopeGranted, "fhirUser") || !strings.Contains(scopeGranted, "patient/*.rs") {
		t.Errorf("granted scope %q", scopeGranted)
	}
	checkIDToken(t, s, r.body["id_token"], clientID, s.FHIR+"/Patient/"+ann)
	at := r.body["access_token"].(string)
	if g := s.Do("GET", "Patient/"+ann, at, nil); g.Status != 200 {
		t.Fatalf("read own patient: %d %s", g.Status, g.Body)
	}
	if g := s.Do("GET", "Observation/"+annObs, at, nil); g.Status != 200 {
		t.Fatalf("read own observation: %d %s", g.Status, g.Body)
	}
	for _, path := range []string{"Patient/" + bob, "Observation/" + bobObs, "Observation/" + bobObs + "/_history"} {
		if g := s.Do("GET", path, at, nil); g.Status != http.StatusForbidden && g.Status != http.StatusNotFound {
			t.Errorf("patient token read %s of another patient: %d %s", path, g.Status, g.Body)
		}
	}
	// The code is single use.
	if again := postToken(t, s, tf); again.status != 400 || again.body["error"] != "invalid_grant" {
		t.Fatalf("code reuse: %d %v", again.status, again.body)
	}
	// 6. refresh.
	rf := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r.body["refresh_token"].(string)}, "client_id": {clientID}}
	r2 := postToken(t, s, rf)
	if r2.status != 200 || r2.body["patient"] != ann || r2.body["access_token"] == at {
		t.Fatalf("refresh: %d %v", r2.status, r2.body)
	}
	if g := s.Do("GET", "Patient/"+ann, r2.body["access_token"].(string), nil); g.Status != 200 {
		t.Fatalf("read with refreshed token: %d", g.Status)
	}
	rf.Set("scope", "patient/Observation.rs")
	if sub := postToken(t, s, rf); sub.status != 200 || sub.body["scope"] != "patient/Observation.rs" {
		t.Fatalf("refresh with a narrower scope: %d %v", sub.status, sub.body)
	}
	rf.Set("scope", "patient/*.cruds")
	if esc := postToken(t, s, rf); esc.status != 400 || esc.body["error"] != "invalid_scope" {
		t.Fatalf("refresh with wider scope: %d %v", esc.status, esc.body)
	}

	// A second flow: wrong verifier and wrong redirect_uri are refused;
	// deny sends access_denied back.
	consent = b.do("GET", s.URL+"/auth/authorize?"+authz.Encode(), nil)
	approve = hiddenFields(consent.body)
	approve.Set("decision", "approve")
	cb, _ = url.Parse(b.do("POST", s.URL+"/auth/authorize", approve).location)
	tf.Set("code", cb.Query().Get("code"))
	tf.Set("code_verifier", token.NewID()+token.NewID()+"-xyz")
	if bad := postToken(t, s, tf); bad.status != 400 || bad.body["error"] != "invalid_grant" {
		t.Fatalf("wrong verifier: %d %v", bad.status, bad.body)
	}
	approve.Set("decision", "deny")
	p = b.do("POST", s.URL+"/auth/authorize", approve)
	cb, _ = url.Parse(p.location)
	if cb.Query().Get("error") != "access_denied" || cb.Query().Get("state") != "st-123" {
		t.Fatalf("deny: %s", p.location)
	}
	// An unregistered redirect URI is never redirected to.
	evil := url.Values{}
	for k, v := range authz {
		evil[k] = v
	}
	evil.Set("redirect_uri", "https://evil.example/cb")
	if p = b.do("GET", s.URL+"/auth/authorize?"+evil.Encode(), nil); p.status != 400 || p.location != "" {
		t.Fatalf("unregistered redirect: %d %s", p.status, p.location)
	}
	// A plain PKCE method is refused back to the app.
	plain := url.Values{}
	for k, v := range authz {
		plain[k] = v
	}
	plain.Set("code_challenge_method", "plain")
	p = b.do("GET", s.URL+"/auth/authorize?"+plain.Encode(), nil)
	if cb, _ = url.Parse(p.location); p.status != http.StatusFound || cb.Query().Get("error") != "invalid_request" {
		t.Fatalf("plain PKCE: %d %s", p.status, p.location)
	}
}

func TestSessions(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	ann := create(t, s, "Patient", `{"resourceType":"Patient"}`)
	addUser(t, s, "ann@example.org", "patient", ann, "ann's long password")
	addUser(t, s, "root@example.org", "admin", "", "the admin's password")
	as := s.App.AuthServer

	signIn := func(email, pw, next string) (*browser, page) {
		b := newBrowser(t)
		login := b.do("GET", s.URL+"/login?next="+url.QueryEscape(next), nil)
		p := b.do("POST", s.URL+"/login", url.Values{"email": {email}, "password": {pw}, "csrf": {csrfOf(t, login)}, "next": {next}})
		return b, p
	}
	b, p := signIn("ann@example.org", "ann's long password", "//evil.example/x")
	if p.status != http.StatusSeeOther || p.location != "/" {
		t.Fatalf("login with an off-site next: %d %q", p.status, p.location)
	}
	u, _ := url.Parse(s.URL)
	cookies := b.c.Jar.Cookies(u)
	req, _ := http.NewRequest("GET", s.URL+"/", nil)
	for _, c := range cookies {
		req.AddCookie(c)
	}
	sess, ok := as.Session(req)
	if !ok || sess.Role != "patient" || sess.Patient != ann || sess.Email != "ann@example.org" || sess.CSRF == "" {
		t.Fatalf("session: %+v %v", sess, ok)
	}
	pr := as.Principal(sess)
	if pr.Patient() != ann || !pr.Allows(access.Read, "Observation") || !access.InCompartment(pr, []string{ann}) || access.InCompartment(pr, []string{"other"}) {
		t.Fatalf("patient principal: patient %q", pr.Patient())
	}
	post, _ := http.NewRequest("POST", s.URL+"/x", strings.NewReader(""))
	post.Header.Set("X-CSRF-Token", sess.CSRF)
	if !as.CheckCSRF(post, sess) {
		t.Error("CheckCSRF refuses the right header")
	}
	post.Header.Set("X-CSRF-Token", "nope")
	if as.CheckCSRF(post, sess) {
		t.Error("CheckCSRF accepts a wrong header")
	}
	// The cookie is HttpOnly and SameSite=Lax.
	resp := b.do("GET", s.URL+"/login", nil) // signed in: redirected to next
	if resp.status != http.StatusSeeOther {
		t.Errorf("login page while signed in: %d", resp.status)
	}
	// A patient session cannot use the admin API.
	if p := b.do("GET", s.URL+"/admin/users", nil); p.status != http.StatusForbidden {
		t.Errorf("patient session on admin API: %d", p.status)
	}
	// Logout needs the CSRF token.
	if p := b.do("POST", s.URL+"/logout", url.Values{"csrf": {"nope"}}); p.status != http.StatusForbidden {
		t.Fatalf("logout without csrf: %d", p.status)
	}
	if p := b.do("POST", s.URL+"/logout", url.Values{"csrf": {sess.CSRF}}); p.status != http.StatusSeeOther || p.location != "/login" {
		t.Fatalf("logout: %d %s", p.status, p.location)
	}
	if _, ok := as.Session(req); ok {
		t.Fatal("session still valid after logout")
	}

	// Admin session: everything, and the admin API with CSRF on writes.
	ab, p := signIn("root@example.org", "the admin's password", "/portal")
	if p.location != "/portal" {
		t.Fatalf("admin login next: %q", p.location)
	}
	if g := ab.do("GET", s.URL+"/admin/users", nil); g.status != 200 || !strings.Contains(g.body, "ann@example.org") {
		t.Fatalf("admin list users: %d %s", g.status, g.body)
	}
	areq, _ := http.NewRequest("GET", s.URL+"/", nil)
	for _, c := range ab.c.Jar.Cookies(u) {
		areq.AddCookie(c)
	}
	asess, _ := as.Session(areq)
	ap := as.Principal(asess)
	if ap.Patient() != "" || !ap.Allows(access.Delete, "Patient") {
		t.Fatalf("admin principal confined or limited")
	}
	// Cookie attributes.
	raw := newBrowser(t)
	login := raw.do("GET", s.URL+"/login", nil)
	hresp, err := raw.c.PostForm(s.URL+"/login", url.Values{"email": {"ann@example.org"}, "password": {"ann's long password"}, "csrf": {csrfOf(t, login)}})
	if err != nil {
		t.Fatal(err)
	}
	hresp.Body.Close()
	found := false
	for _, c := range hresp.Cookies() {
		if c.Name == "phr_session" && c.Value != "" {
			found = true
			if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Secure {
				t.Errorf("session cookie attributes: %+v", c)
			}
		}
	}
	if !found {
		t.Error("no session cookie set")
	}
	// Login without the form's CSRF cookie is refused.
	if p := newBrowser(t).do("POST", s.URL+"/login", url.Values{"email": {"ann@example.org"}, "password": {"ann's long password"}, "csrf": {"x"}}); p.status != http.StatusForbidden {
		t.Errorf("login without CSRF cookie: %d", p.status)
	}
}

// TestAdminLaunchConfidentialApp: an admin launches a confidential app
// (keys registered, private_key_jwt at the token endpoint) and picks the
// patient on the consent page; the token lifetime follows --token-ttl.
func TestAdminLaunchConfidentialApp(t *testing.T) {
	s := servertest.Start(t, "sqlite", servertest.Options{Configure: func(c *server.Config) { c.TokenTTL = 90 * time.Second }})
	pat := create(t, s, "Patient", `{"resourceType":"Patient"}`)
	addUser(t, s, "root@example.org", "admin", "", "the admin's password")
	app := newBackend(t, jose.ES384, "app-1")
	redirect := "https://app.example/cb"
	app.register(t, s, "patient/*.rs launch/patient", map[string]any{"redirect_uris": []string{redirect}})

	verifier := token.NewID() + token.NewID() + "-abc"
	authz := url.Values{"response_type": {"code"}, "client_id": {app.id}, "redirect_uri": {redirect}, "scope": {"launch/patient patient/*.rs"},
		"state": {"s1"}, "aud": {s.FHIR + "/"}, "code_challenge": {pkce.Challenge(verifier)}, "code_challenge_method": {"S256"}}
	b := newBrowser(t)
	login := b.do("GET", s.URL+"/login?next="+url.QueryEscape("/auth/authorize?"+authz.Encode()), nil)
	p := b.do("POST", s.URL+"/login", url.Values{"email": {"root@example.org"}, "password": {"the admin's password"}, "csrf": {csrfOf(t, login)}, "next": {"/auth/authorize?" + authz.Encode()}})
	consent := b.do("GET", s.URL+p.location, nil)
	if !strings.Contains(consent.body, `name="patient"`) {
		t.Fatalf("the admin's consent page has no patient field:\n%s", consent.body)
	}
	f := hiddenFields(consent.body)
	f.Set("decision", "approve")
	f.Set("patient", "no-such-patient")
	if bad := b.do("POST", s.URL+"/auth/authorize", f); bad.status != 400 || !strings.Contains(bad.body, "no patient") {
		t.Fatalf("unknown patient picked: %d", bad.status)
	}
	f.Set("patient", pat)
	p = b.do("POST", s.URL+"/auth/authorize", f)
	cb, _ := url.Parse(p.location)
	tf := url.Values{"grant_type": {"authorization_code"}, "code": {cb.Query().Get("code")}, "redirect_uri": {redirect}, "code_verifier": {verifier}}
	// A confidential client must authenticate: client_id alone is refused.
	tf.Set("client_id", app.id)
	if r := postToken(t, s, tf); r.status != 401 || r.body["error"] != "invalid_client" {
		t.Fatalf("confidential client without assertion: %d %v", r.status, r.body)
	}
	// (The failed attempt did not spend the code: client authentication
	// comes first.)
	tf.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
	tf.Set("client_assertion", app.assertion(t, s.URL+"/auth/token", assertionOpts{}))
	r := postToken(t, s, tf)
	if r.status != 200 || r.body["patient"] != pat || r.body["expires_in"] != float64(90) || r.body["need_patient_banner"] != true {
		t.Fatalf("token: %d %v", r.status, r.body)
	}
	if g := s.Do("GET", "Patient/"+pat, r.body["access_token"].(string), nil); g.Status != 200 {
		t.Fatalf("read: %d", g.Status)
	}
}

// checkIDToken verifies an ID token the way an app does: issuer and
// jwks_uri from /.well-known/openid-configuration, RS256 signature, claims.
func checkIDToken(t *testing.T, s *servertest.Server, raw any, clientID, fhirUser string) {
	t.Helper()
	tok, _ := raw.(string)
	if tok == "" {
		t.Fatal("no id_token with scope openid")
	}
	conf := s.Do("GET", "/.well-known/openid-configuration", "", nil).JSON(t)
	if conf["issuer"] != s.URL {
		t.Fatalf("openid-configuration issuer %v", conf["issuer"])
	}
	keys := s.Do("GET", conf["jwks_uri"].(string), "", nil)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(keys.Body, &set); err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatalf("id_token: %v", err)
	}
	found := set.Key(jws.Signatures[0].Header.KeyID)
	if len(found) != 1 {
		t.Fatalf("id_token kid %q not in the JWKS", jws.Signatures[0].Header.KeyID)
	}
	payload, err := jws.Verify(found[0].Key)
	if err != nil {
		t.Fatalf("id_token signature: %v", err)
	}
	var c map[string]any
	json.Unmarshal(payload, &c)
	if c["iss"] != s.URL || c["aud"] != clientID || c["fhirUser"] != fhirUser || c["sub"] == "" {
		t.Fatalf("id_token claims %v", c)
	}
	if exp, _ := c["exp"].(float64); int64(exp) < time.Now().Unix() {
		t.Fatalf("id_token expired: %v", c["exp"])
	}
}

// TestPortalAccessIsAudited: pages of the patient portal read the record
// through the audited API, so a signed-in patient's page view leaves
// AuditEvents naming them, with their address.
func TestPortalAccessIsAudited(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	ann := create(t, s, "Patient", `{"resourceType":"Patient","name":[{"family":"Ann"}]}`)
	addUser(t, s, "ann@example.org", "patient", ann, "ann's long password")
	b := newBrowser(t)
	login := b.do("GET", s.URL+"/login", nil)
	b.do("POST", s.URL+"/login", url.Values{"email": {"ann@example.org"}, "password": {"ann's long password"}, "csrf": {csrfOf(t, login)}, "next": {"/"}})
	p := b.do("GET", s.URL+"/", nil)
	for i := 0; p.status == http.StatusSeeOther && i < 3; i++ {
		p = b.do("GET", s.URL+p.location, nil)
	}
	if p.status != 200 {
		t.Fatalf("portal overview: %d %s", p.status, p.location)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.App.Audit.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r := s.Do("GET", "AuditEvent?patient="+ann+"&_count=100", s.AdminToken(), nil)
	if r.Status != 200 || !strings.Contains(string(r.Body), `"reference":"Patient/`+ann+`"`) || !strings.Contains(string(r.Body), "127.0.0.1") {
		t.Fatalf("no audit of the portal's reads: %d %.400s", r.Status, r.Body)
	}
}
