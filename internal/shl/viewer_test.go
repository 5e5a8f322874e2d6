package shl_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
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

// TestViewerInBrowser opens a passcode-protected link in the viewer page
// with headless Chromium: a wrong passcode is refused with the attempts
// left, the right one shows the patient's allergies, all decrypted in the
// page, which talks to no other host. The screenshot's path is logged;
// run with `-artifacts -outputdir DIR` to keep it.
func TestViewerInBrowser(t *testing.T) {
	node, script, chromium := browserScript(t, "shl-viewer.mjs")
	f := start(t, "sqlite")
	l := f.create(t, f.tokA, map[string]any{"label": "Allergies for the ER", "passcode": "4711",
		"content": []map[string]any{{"kind": "summary"}, {"_type": []string{"Observation"}}}})

	// Kept with `go test -artifacts -outputdir DIR` (a temp dir otherwise).
	shot := filepath.Join(t.ArtifactDir(), "shl-viewer.png")
	in, _ := json.Marshal(map[string]any{"url": l.ViewerLink, "passcode": "4711", "wrongPasscode": "0000", "screenshot": shot, "chromium": chromium})
	cmd := exec.CommandContext(t.Context(), node, script)
	cmd.Dir = filepath.Dir(script)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, stderr.Bytes())
	}
	var res struct {
		OK                   bool                  `json:"ok"`
		Error                string                `json:"error"`
		Title                string                `json:"title"`
		Status               string                `json:"status"`
		Patient              string                `json:"patient"`
		Allergies            [][]string            `json:"allergies"`
		Sections             map[string][][]string `json:"sections"`
		Requests             []string              `json:"requests"`
		Console              []string              `json:"console"`
		WrongPasscodeMessage string                `json:"wrongPasscodeMessage"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("script output: %v\n%s", err, out)
	}
	t.Logf("viewer screenshot: %s", shot)
	if !res.OK {
		t.Fatalf("viewer: %s (status %q, console %v)", res.Error, res.Status, res.Console)
	}
	if res.Title != "Allergies for the ER" || !strings.Contains(res.Patient, "Ann Alpha") || !strings.Contains(res.Status, "2 file(s) decrypted") {
		t.Fatalf("page: title %q, patient %q, status %q", res.Title, res.Patient, res.Status)
	}
	if !strings.Contains(res.WrongPasscodeMessage, "9 attempts left") {
		t.Fatalf("wrong passcode message %q", res.WrongPasscodeMessage)
	}
	if len(res.Allergies) != 1 || res.Allergies[0][0] != "Penicillin Alpha" || res.Allergies[0][1] != "high" {
		t.Fatalf("allergies shown: %v", res.Allergies)
	}
	for _, sec := range []string{"medications", "conditions", "immunizations", "results"} {
		if len(res.Sections[sec]) == 0 {
			t.Errorf("section %s is empty: %v", sec, res.Sections)
		}
	}
	if !slices.ContainsFunc(res.Sections["results"], func(r []string) bool { return r[0] == "Hemoglobin" && r[1] == "13.2 g/dL" }) {
		t.Errorf("results: %v", res.Sections["results"])
	}
	for _, r := range res.Requests {
		if !strings.Contains(r, f.URL+"/shl/") {
			t.Errorf("the viewer requested %s, outside the link's server", r)
		}
	}
	if st, err := os.Stat(shot); err != nil || st.Size() < 1000 {
		t.Errorf("screenshot %s: %v", shot, err)
	}
}
