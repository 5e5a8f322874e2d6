package portal_test

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

func TestAdminPages(t *testing.T) {
	e := start(t, "sqlite")
	e.seed()
	admin := e.login("admin", "")
	csrf := e.csrf(admin)

	// Pick any patient.
	p := e.get("/", admin)
	p.mustContain(t, "patient picker", `<a href="/p/alice/">Alice Anders</a>`, `<a href="/p/bob/">Bob Berg</a>`, `href="/manage/users"`, `href="/manage/clients"`)
	e.get("/?name=berg", admin).mustNotContain(t, "picker by name", "Alice Anders")
	e.get("/p/bob/", admin).mustContain(t, "admin on bob", "Bob Berg", `href="/manage/users"`)

	// Users: add a patient user for bob, who can then sign in; bad input is named.
	p = e.page(http.MethodPost, "/manage/users", admin, url.Values{"csrf": {csrf}, "email": {"bob@example.org"}, "role": {"patient"}, "patient": {"bob"}, "password": {"bob's long password"}})
	if p.Status != http.StatusCreated {
		t.Fatalf("add user: %d\n%s", p.Status, clip(p.Body))
	}
	p.mustContain(t, "users", "Added bob@example.org.", `<a href="/p/bob/">bob</a>`)
	bob := e.signIn("bob@example.org", "bob's long password")
	if p := e.get("/", bob); p.Header.Get("Location") != "/p/bob/" {
		t.Errorf("the new user lands on %q", p.Header.Get("Location"))
	}
	p = e.page(http.MethodPost, "/manage/users", admin, url.Values{"csrf": {csrf}, "email": {"bob@example.org"}, "role": {"patient"}, "patient": {"bob"}, "password": {"another long password"}})
	if p.Status != http.StatusBadRequest && p.Status != http.StatusConflict || !strings.Contains(p.Body, "already exists") {
		t.Errorf("duplicate user: %d\n%s", p.Status, clip(p.Body))
	}
	p = e.page(http.MethodPost, "/manage/users", admin, url.Values{"csrf": {csrf}, "email": {"x@example.org"}, "role": {"patient"}, "patient": {"bob"}, "password": {"short"}})
	if p.Status != http.StatusBadRequest || !strings.Contains(p.Body, "at least 10 characters") {
		t.Errorf("short password: %d", p.Status)
	}
	m := regexp.MustCompile(`action="(/manage/users/[^"]+/remove)" data-confirm="Remove bob@example.org\?"`).FindStringSubmatch(e.get("/manage/users", admin).Body)
	if m == nil {
		t.Fatal("no remove form for bob@example.org")
	}
	if p := e.page(http.MethodPost, m[1], admin, url.Values{"csrf": {csrf}}); p.Status != http.StatusSeeOther {
		t.Fatalf("remove user: %d", p.Status)
	}
	e.get("/manage/users", admin).mustNotContain(t, "after removal", "bob@example.org")

	// Clients.
	p = e.page(http.MethodPost, "/manage/clients", admin, url.Values{"csrf": {csrf}, "name": {"Lab uploader"}, "scope": {"system/*.rs"}, "jwks_url": {"https://lab.example.org/jwks.json"}})
	if p.Status != http.StatusCreated {
		t.Fatalf("add client: %d\n%s", p.Status, clip(p.Body))
	}
	p.mustContain(t, "clients", "Registered Lab uploader", "https://lab.example.org/jwks.json", "system/*.rs")
	if p := e.page(http.MethodPost, "/manage/clients", admin, url.Values{"csrf": {csrf}, "name": {"Bad"}, "scope": {"system/*.rs"}, "jwks": {"{nope"}}); p.Status != http.StatusBadRequest || !strings.Contains(p.Body, "jwks: the key set is not valid JSON") {
		t.Errorf("bad jwks: %d", p.Status)
	}
	cm := regexp.MustCompile(`action="(/manage/clients/[^"]+/remove)"`).FindStringSubmatch(e.get("/manage/clients", admin).Body)
	if cm == nil {
		t.Fatal("no remove form for the client")
	}
	if p := e.page(http.MethodPost, cm[1], admin, url.Values{"csrf": {csrf}}); p.Status != http.StatusSeeOther {
		t.Fatalf("remove client: %d", p.Status)
	}
	e.get("/manage/clients", admin).mustContain(t, "after removal", "No clients registered.")

	// Patients may not.
	alice := e.login("patient", "alice")
	for _, path := range []string{"/manage/users", "/manage/clients"} {
		if p := e.get(path, alice); p.Status != http.StatusForbidden {
			t.Errorf("alice GET %s: %d", path, p.Status)
		}
	}
	if p := e.page(http.MethodPost, "/manage/users", alice, url.Values{"csrf": {e.csrf(alice)}, "email": {"evil@example.org"}, "role": {"admin"}, "password": {"0123456789ab"}}); p.Status != http.StatusForbidden {
		t.Errorf("alice adds an admin: %d", p.Status)
	}
	e.get("/p/alice/", alice).mustNotContain(t, "alice's nav", `href="/manage/users"`)
}
