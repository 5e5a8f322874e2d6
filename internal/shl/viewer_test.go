package shl_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/shlink"
)

// browserScript finds tools/browser/<name> above the package directory
// and skips the test when Node, playwright-core or Chromium is missing.
func browserScript(t *testing.T, name string) (node, script, chromium string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed; skipping the browser test (apt-get install nodejs, then npm ci --prefix tools/browser)")
	}
	chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Skip("/usr/bin/chromium is missing; skipping the browser test (apt-get install chromium)")
	}
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		if filepath.Dir(dir) == dir {
			t.Fatal("no go.mod above the package")
		}
		dir = filepath.Dir(dir)
	}
	tools := filepath.Join(dir, "tools", "browser")
	if _, err := os.Stat(filepath.Join(tools, "node_modules", "playwright-core")); err != nil {
		t.Skip("tools/browser/node_modules is missing; run `npm ci --prefix tools/browser` for the browser test")
	}
	return node, filepath.Join(tools, name), chromium
}

// TestViewerInBrowser opens two links in the viewer page with headless
// Chromium. A passcode-protected phr link: a wrong passcode is refused
// with the attempts left, the right one shows the patient's allergies,
// all decrypted in the page, which talks to no other host. And the
// specification's published IPS example (a U link with kid and no cty),
// served by a plain file server elsewhere. The screenshots' paths are
// logged; run with `-artifacts -outputdir DIR` to keep them.
func TestViewerInBrowser(t *testing.T) {
	node, script, chromium := browserScript(t, "shl-viewer.mjs")
	f := start(t, "sqlite")
	l := f.create(t, f.tokA, map[string]any{"label": "Allergies for the ER", "passcode": "4711",
		"content": []map[string]any{{"kind": "summary"}, {"_type": []string{"Observation"}}}})

	// The IPS example on another origin, with CORS as a static host would.
	enc := shlData(t, "IPS_IG-bundle-01-enc.txt")
	other := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Content-Type", "application/jose")
		w.Write(enc)
	}))
	ips, err := shlink.Encode(shlink.Payload{URL: other + "/ips-enc.txt", Flag: "LU", Key: specKey, Label: "Demo SHL for IPS_IG-bundle-01"})
	if err != nil {
		t.Fatal(err)
	}

	shots := []string{filepath.Join(t.ArtifactDir(), "shl-viewer-passcode.png"), filepath.Join(t.ArtifactDir(), "shl-viewer-ips.png")}
	in, _ := json.Marshal(map[string]any{"chromium": chromium, "pages": []map[string]any{
		{"url": l.ViewerLink, "passcode": "4711", "wrongPasscode": "0000", "screenshot": shots[0]},
		{"url": f.URL + "/shl/view#" + ips, "screenshot": shots[1]},
	}})
	cmd := exec.CommandContext(t.Context(), node, script)
	cmd.Dir = filepath.Dir(script)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, stderr.Bytes())
	}
	type page struct {
		OK                   bool                  `json:"ok"`
		Error                string                `json:"error"`
		Title                string                `json:"title"`
		Status               string                `json:"status"`
		Patient              string                `json:"patient"`
		Sections             map[string][][]string `json:"sections"`
		Requests             []string              `json:"requests"`
		Console              []string              `json:"console"`
		WrongPasscodeMessage string                `json:"wrongPasscodeMessage"`
	}
	var res struct {
		Pages []page `json:"pages"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("script output: %v\n%s", err, out)
	}
	t.Logf("viewer screenshots: %s", strings.Join(shots, ", "))
	if res.Error != "" || len(res.Pages) != 2 {
		t.Fatalf("browser: %s (%d pages)", res.Error, len(res.Pages))
	}
	for i, p := range res.Pages {
		if !p.OK {
			t.Fatalf("page %d: %s (status %q, console %v)", i, p.Error, p.Status, p.Console)
		}
	}

	p := res.Pages[0]
	if p.Title != "Allergies for the ER" || !strings.Contains(p.Patient, "Ann Alpha") || !strings.Contains(p.Status, "2 file(s) decrypted") {
		t.Fatalf("page: title %q, patient %q, status %q", p.Title, p.Patient, p.Status)
	}
	if !strings.Contains(p.WrongPasscodeMessage, "9 attempts left") {
		t.Fatalf("wrong passcode message %q", p.WrongPasscodeMessage)
	}
	if a := p.Sections["allergies"]; len(a) != 1 || a[0][0] != "Penicillin Alpha" || a[0][1] != "high" {
		t.Fatalf("allergies shown: %v", a)
	}
	for _, sec := range []string{"medications", "conditions", "immunizations", "results"} {
		if len(p.Sections[sec]) == 0 {
			t.Errorf("section %s is empty: %v", sec, p.Sections)
		}
	}
	if !slices.ContainsFunc(p.Sections["results"], func(r []string) bool { return r[0] == "Hemoglobin" && r[1] == "13.2 g/dL" }) {
		t.Errorf("results: %v", p.Sections["results"])
	}
	for _, r := range p.Requests {
		if !strings.Contains(r, f.URL+"/shl/") {
			t.Errorf("the viewer requested %s, outside the link's server", r)
		}
	}

	p = res.Pages[1]
	if p.Title != "Demo SHL for IPS_IG-bundle-01" || !strings.Contains(p.Patient, "Martha DeLarosa") || len(p.Sections["allergies"]) != 2 ||
		!strings.Contains(p.Sections["allergies"][0][0], "penicillin") || len(p.Sections["medications"]) != 2 || len(p.Sections["results"]) != 7 {
		t.Fatalf("IPS example: title %q, patient %q, sections %v", p.Title, p.Patient, p.Sections)
	}
	for _, shot := range shots {
		if st, err := os.Stat(shot); err != nil || st.Size() < 1000 {
			t.Errorf("screenshot %s: %v", shot, err)
		}
	}
}
