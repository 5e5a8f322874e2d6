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

// TestSphrRoundTrip exports the record as an encrypted .sphr on the export
// page and uploads it on the import page: without the passphrase it is
// refused saying so, with it every line is read and recognised as the
// record's own: nothing created, updated, in conflict or rejected. The
// cover page Composition of the export is not counted: the importer
// skips it.
func TestSphrRoundTrip(t *testing.T) {
	e := start(t, "sqlite")
	e.seed()
	c := e.login("patient", "alice")
	csrf := e.csrf(c)
	p := e.page(http.MethodPost, "/p/alice/export", c, url.Values{"csrf": {csrf}, "format": {"sphr"}, "passphrase": {"round-trip-passphrase"}})
	if p.Status != 200 {
		t.Fatalf("sphr export: %d", p.Status)
	}
	p = e.upload(c, csrf, "alice.sphr", "application/zip", p.Body, "source", "my backup")
	if p.Status == 200 && strings.Contains(p.Body, `"name":"created","valueInteger":0`) {
		t.Fatalf("import without the passphrase went through:\n%s", clip(p.Body))
	}
	if !strings.Contains(strings.ToLower(p.Body), "passphrase") {
		t.Errorf("import without the passphrase does not say so: %d\n%s", p.Status, clip(p.Body))
	}
	sphr := e.page(http.MethodPost, "/p/alice/export", c, url.Values{"csrf": {csrf}, "format": {"sphr"}, "passphrase": {"round-trip-passphrase"}}).Body
	p = e.uploadWith(c, csrf, "alice.sphr", "application/zip", sphr, http.Header{"X-PHR-Passphrase": {"round-trip-passphrase"}}, "source", "my backup")
	if p.Status != 200 {
		t.Fatalf("sphr import: %d\n%s", p.Status, clip(p.Body))
	}
	last := strings.Split(strings.TrimSpace(p.Body), "\n")
	summary := last[len(last)-1]
	// 6 resources: the export's cover page is reported, not imported.
	for _, want := range []string{`"name":"resources","valueInteger":6`, `"source","valueUri":"urn:phr:source:my%20backup"`,
		`"name":"created","valueInteger":0`, `"name":"updated","valueInteger":0`, `"name":"conflicts","valueInteger":0`, `"name":"rejected","valueInteger":0`, `"name":"unchanged","valueInteger":6`} {
		if !strings.Contains(summary, want) {
			t.Errorf("sphr import summary lacks %s:\n%s", want, p.Body)
		}
	}
	if !strings.Contains(p.Body, "is the cover page of a phr export; it is not stored") {
		t.Errorf("the cover page is not reported:\n%s", clip(p.Body))
	}
}
