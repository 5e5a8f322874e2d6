package portal_test

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/zipaes"
)

// hasOperation reports whether the CapabilityStatement lists the operation.
func (e *env) hasOperation(name string) bool {
	cs := e.Do(http.MethodGet, "metadata", "", nil)
	return strings.Contains(string(cs.Body), `"name":"`+name+`"`)
}

func TestExportPage(t *testing.T) {
	e := start(t, "sqlite")
	e.seed()
	c := e.login("patient", "alice")
	csrf := e.csrf(c)
	p := e.get("/p/alice/export", c)
	p.mustContain(t, "export form", `name="format" value="sphr"`, `name="passphrase"`, `href="/p/alice/export"`)
	// NDJSON of alice's record, her data only.
	p = e.page(http.MethodPost, "/p/alice/export", c, url.Values{"csrf": {csrf}, "format": {"ndjson"}})
	if p.Status != 200 {
		t.Fatalf("ndjson export: %d %s", p.Status, clip(p.Body))
	}
	p.mustContain(t, "ndjson export", `"id":"alice"`, `"id":"chol-a"`)
	p.mustNotContain(t, "ndjson export", "bob-only-value")
	// Types and dates narrow it.
	p = e.page(http.MethodPost, "/p/alice/export", c, url.Values{"csrf": {csrf}, "format": {"ndjson"}, "type": {"Condition"}})
	p.mustContain(t, "typed export", `"id":"cond-a"`)
	p.mustNotContain(t, "typed export", `"id":"chol-a"`)
	// .sphr with the passphrase from the form: an encrypted zip that opens
	// with it and not without.
	p = e.page(http.MethodPost, "/p/alice/export", c, url.Values{"csrf": {csrf}, "format": {"sphr"}, "passphrase": {"correct-horse-battery"}})
	if p.Status != 200 || !strings.Contains(p.Header.Get("Content-Disposition"), ".sphr") {
		t.Fatalf("sphr export: %d %q %s", p.Status, p.Header.Get("Content-Disposition"), clip(p.Body))
	}
	zr, err := zipaes.NewReader(bytes.NewReader([]byte(p.Body)), int64(len(p.Body)), "correct-horse-battery")
	if err != nil {
		t.Fatalf("open the .sphr: %v", err)
	}
	found := false
	for _, f := range zr.File {
		if strings.HasSuffix(f.Name, ".phr") {
			rc, err := f.Open()
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatalf("read %s: %v", f.Name, err)
			}
			found = bytes.Contains(b, []byte(`"id":"alice"`))
		}
	}
	if !found {
		t.Error("the .sphr holds no .phr with alice")
	}
	// Bad input and other patients.
	if p := e.page(http.MethodPost, "/p/alice/export", c, url.Values{"csrf": {csrf}, "format": {"sphr"}, "passphrase": {"short"}}); p.Status != 400 || !strings.Contains(p.Body, "passphrase") {
		t.Errorf("short passphrase: %d", p.Status)
	}
	if p := e.page(http.MethodPost, "/p/alice/export", c, url.Values{"csrf": {csrf}, "format": {"exe"}}); p.Status != 400 {
		t.Errorf("bad format: %d", p.Status)
	}
	if p := e.page(http.MethodPost, "/p/alice/export", c, url.Values{"csrf": {"nope"}, "format": {"ndjson"}}); p.Status != 403 {
		t.Errorf("bad CSRF: %d", p.Status)
	}
	if p := e.page(http.MethodPost, "/p/bob/export", c, url.Values{"csrf": {csrf}, "format": {"ndjson"}}); p.Status != 403 || strings.Contains(p.Body, "bob-only-value") {
		t.Errorf("alice exporting bob: %d", p.Status)
	}
}
