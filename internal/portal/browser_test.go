package portal_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/synthea"
)

// repoRoot walks up to go.mod.
func repoRoot(t testing.TB) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// browserTools returns node and chromium, or skips the test with a notice.
func browserTools(t *testing.T) (node, chromium, dir string) {
	t.Helper()
	dir = filepath.Join(repoRoot(t), "tools", "browser")
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("browser test skipped: node is not installed (install Node.js and run `npm ci --prefix tools/browser`)")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core")); err != nil {
		t.Skip("browser test skipped: tools/browser/node_modules is missing (run `npm ci --prefix tools/browser`)")
	}
	chromium = os.Getenv("PHR_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("browser test skipped: no Chromium at %s (apt-get install chromium, or set PHR_CHROMIUM)", chromium)
	}
	return node, chromium, dir
}

// walkPerson is a patient of the browser walk.
type walkPerson struct {
	Email    string `json:"email,omitempty"`
	Password string `json:"password,omitempty"`
	ID       string `json:"id"`
	Name     string `json:"name"`
	Resource string `json:"resource,omitempty"`
}

// runWalk runs tools/browser/portal.mjs and fails the test with its
// report when a check fails. Screenshots go to a directory it logs.
func runWalk(t *testing.T, cfg map[string]any) {
	node, chromium, dir := browserTools(t)
	shots := os.Getenv("PHR_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join(t.TempDir(), "screenshots")
		if keep := os.Getenv("PHR_KEEP_SCREENSHOTS"); keep != "" {
			shots = keep
		}
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg["chromium"] = chromium
	cfg["shots"] = shots
	cfg["userDataDir"] = t.TempDir()
	in, _ := json.Marshal(cfg)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(dir, "portal.mjs"))
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var rep struct {
		OK    bool `json:"ok"`
		Steps []struct {
			Name string `json:"name"`
			Shot string `json:"shot"`
			MS   int    `json:"ms"`
		} `json:"steps"`
		Error      string `json:"error"`
		FailedShot string `json:"failedShot"`
		URL        string `json:"url"`
	}
	if jerr := json.Unmarshal(stdout.Bytes(), &rep); jerr != nil {
		t.Fatalf("portal.mjs: %v (%v)\nstdout: %s\nstderr: %s", err, jerr, stdout.Bytes(), stderr.Bytes())
	}
	t.Logf("screenshots of the browser walk are in %s", shots)
	for _, s := range rep.Steps {
		t.Logf("  step %-14s %5d ms  %s", s.Name, s.MS, s.Shot)
	}
	var ee *exec.ExitError
	if !rep.OK || (err != nil && !errors.As(err, &ee)) || err != nil {
		t.Fatalf("browser walk failed at %s: %s\nscreenshot: %s\nstderr: %s", rep.URL, rep.Error, rep.FailedShot, stderr.Bytes())
	}
}

// TestBrowserWalk signs a patient in with headless Chromium and walks the
// portal: summary, results, a lab chart, a resource, the timeline, the
// phone layout and keyboard, another patient's pages (refused) and sign-out.
func TestBrowserWalk(t *testing.T) {
	browserTools(t)
	e := start(t, "sqlite")
	me, other, chart := e.walkPeople(t)
	me.Email, me.Password = e.addUser("patient", me.ID), testPassword
	cfg := map[string]any{"base": e.URL, "patient": me, "other": other, "chart": chart}
	{
		dir := t.TempDir()
		files := map[string]string{}
		for name, body := range map[string]string{"a": labA, "b": labB} {
			f := filepath.Join(dir, "lab-"+name+".phr")
			if err := os.WriteFile(f, []byte(strings.ReplaceAll(body, "Patient/alice", "Patient/"+me.ID)), 0o600); err != nil {
				t.Fatal(err)
			}
			files[name] = f
		}
		cfg["files"] = files
	}
	cfg["steps"] = []string{"import", "conflict", "share"}
	runWalk(t, cfg)
}

// walkPeople loads a few Synthea patients (or the small seed when the
// Synthea data is absent) and picks the walking patient (one with a
// cholesterol value) and another patient with one of their resources.
func (e *env) walkPeople(t *testing.T) (me, other walkPerson, chart string) {
	dir := synthea.Find()
	if dir == "" || os.Getenv("PHR_PORTAL_WALK_SEED") != "" {
		t.Logf("../%s not found; walking the small seed instead", synthea.Dir)
		e.seed()
		return walkPerson{ID: "alice", Name: "Alice Anders"}, walkPerson{ID: "bob", Name: "Bob Berg", Resource: "Observation/secret-b"}, "Total cholesterol"
	}
	files, err := synthea.Files(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	ctx := access.With(context.Background(), access.System{Name: "test"})
	if _, err := synthea.Load(ctx, e.App.Records, files); err != nil {
		t.Fatal(err)
	}
	admin := e.AdminToken()
	obs := e.Do(http.MethodGet, "Observation?code="+url.QueryEscape("http://loinc.org|2093-3")+"&_count=1", admin, nil).JSON(t)
	meRef := jsonPath(obs, "entry", 0, "resource", "subject", "reference")
	if meRef == "" {
		t.Fatal("no Synthea patient of the first three has a cholesterol value")
	}
	me.ID = strings.TrimPrefix(meRef, "Patient/")
	pats := e.Do(http.MethodGet, "Patient?_count=10", admin, nil).JSON(t)
	for i := 0; ; i++ {
		id := jsonPath(pats, "entry", i, "resource", "id")
		if id == "" {
			break
		}
		name := jsonPath(pats, "entry", i, "resource", "name", 0, "family")
		if id == me.ID {
			me.Name = name
		} else if other.ID == "" {
			other.ID, other.Name = id, name
		}
	}
	if other.ID == "" {
		t.Fatal("need a second patient")
	}
	enc := e.Do(http.MethodGet, "Encounter?patient="+other.ID+"&_count=1", admin, nil).JSON(t)
	other.Resource = "Encounter/" + jsonPath(enc, "entry", 0, "resource", "id")
	return me, other, "Total cholesterol"
}

// jsonPath digs into decoded JSON by keys and indexes; "" when absent.
func jsonPath(v any, path ...any) string {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return ""
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return ""
			}
			v = l[k]
		}
	}
	s, _ := v.(string)
	return s
}
