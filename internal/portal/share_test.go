package portal_test

import (
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/shlink"
)

var shlinkRE = regexp.MustCompile(`data-testid="shlink">([^<]+)</textarea>`)

func TestSharePage(t *testing.T) {
	e := start(t, "sqlite")
	e.seed()
	alice := e.login("patient", "alice")
	csrf := e.csrf(alice)
	p := e.get("/p/alice/share", alice)
	p.mustContain(t, "share page", `id="share-form"`, "No links yet.", `href="/p/alice/share"`)

	// Create a passcode link to the emergency summary: the QR and the
	// link are shown once.
	p = e.page(http.MethodPost, "/p/alice/share", alice, url.Values{"csrf": {csrf}, "what": {"summary"}, "label": {"For the ER"}, "passcode": {"4711"}, "expires": {"7d"}})
	if p.Status != http.StatusCreated {
		t.Fatalf("create: %d\n%s", p.Status, clip(p.Body))
	}
	p.mustContain(t, "created", `<img src="data:image/png;base64,`, `data-testid="qr"`, "For the ER", "passcode required", "emergency summary")
	m := shlinkRE.FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("no link shown:\n%s", clip(p.Body))
	}
	pl, err := shlink.Decode(html.UnescapeString(m[1]))
	if err != nil {
		t.Fatalf("the shown link does not decode: %v", err)
	}
	if pl.Label != "For the ER" || !pl.HasFlag('P') {
		t.Errorf("payload: %+v", pl)
	}
	// A recipient opens it; the access log shows who.
	r := e.Do(http.MethodPost, pl.URL, "", `{"recipient":"Dr. Emergency","passcode":"4711"}`, "Content-Type", "application/json")
	if r.Status != 200 {
		t.Fatalf("manifest: %d %s", r.Status, r.Body)
	}
	p = e.get("/p/alice/share", alice)
	lm := regexp.MustCompile(`href="(/p/alice/share/[^"]+)">For the ER</a>`).FindStringSubmatch(p.Body)
	if lm == nil {
		t.Fatalf("the link is not listed:\n%s", clip(p.Body))
	}
	p = e.get(lm[1], alice)
	p.mustContain(t, "link page", "Dr. Emergency", "manifest", `data-testid="status">active`, "Revoke")
	// Revoke: the link stops working.
	if p := e.page(http.MethodPost, lm[1]+"/revoke", alice, url.Values{"csrf": {"nope"}}); p.Status != 403 {
		t.Errorf("revoke without the CSRF token: %d", p.Status)
	}
	p = e.page(http.MethodPost, lm[1]+"/revoke", alice, url.Values{"csrf": {csrf}})
	if p.Status != http.StatusSeeOther {
		t.Fatalf("revoke: %d\n%s", p.Status, clip(p.Body))
	}
	e.get(lm[1], alice).mustContain(t, "revoked", `data-testid="status">revoked`)
	if r := e.Do(http.MethodPost, pl.URL, "", `{"recipient":"Dr. Emergency","passcode":"4711"}`, "Content-Type", "application/json"); r.Status != 404 {
		t.Errorf("manifest after revoke: %d", r.Status)
	}
	// Bad input; bob neither sees nor revokes alice's link, nor shares her record.
	if p := e.page(http.MethodPost, "/p/alice/share", alice, url.Values{"csrf": {csrf}, "what": {"everything"}}); p.Status != 400 {
		t.Errorf("bad what: %d", p.Status)
	}
	bob := e.login("patient", "bob")
	bcsrf := e.csrf(bob)
	id := strings.TrimPrefix(lm[1], "/p/alice/share/")
	if p := e.get("/p/bob/share/"+id, bob); p.Status != 404 && p.Status != 403 {
		t.Errorf("bob opens alice's link: %d", p.Status)
	}
	e.get("/p/bob/share", bob).mustNotContain(t, "bob's links", "For the ER")
	if p := e.page(http.MethodPost, "/p/alice/share", bob, url.Values{"csrf": {bcsrf}, "what": {"summary"}}); p.Status != 403 {
		t.Errorf("bob shares alice's record: %d", p.Status)
	}
}
