package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/sphr"
	"github.com/phr-project/phr/internal/store/storetest"
)

func seed(t *testing.T) *servertest.Server { return seedOn(t, "sqlite") }

func seedOn(t *testing.T, dialect string) *servertest.Server {
	s := servertest.Start(t, dialect)
	tok := s.AdminToken()
	for _, r := range []struct{ path, body string }{
		{"Patient/p1", `{"resourceType":"Patient","id":"p1","name":[{"family":"Sim","given":["William"]}]}`},
		{"Patient/p2", `{"resourceType":"Patient","id":"p2"}`},
		{"Observation/o1", `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2012-01-01"}`},
		{"Observation/o2", `{"resourceType":"Observation","id":"o2","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2022-01-01"}`},
		{"Observation/o3", `{"resourceType":"Observation","id":"o3","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p2"}}`},
	} {
		if res := s.Do("PUT", r.path, tok, r.body); res.Status >= 300 {
			t.Fatalf("PUT %s: %d %s", r.path, res.Status, res.Body)
		}
	}
	return s
}

func TestExportLocalAndVerify(t *testing.T) {
	s := seed(t)
	data := s.App.Config.DataDir
	dir := t.TempDir()
	phr := filepath.Join(dir, "p1.phr")
	code, _, errOut := run(t, "export", "--data", data, "--patient", "p1", "--end", "2015", "--out", phr)
	if code != 0 {
		t.Fatalf("export: %d %s", code, errOut)
	}
	b, _ := os.ReadFile(phr)
	ls := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(ls) != 3 || !strings.Contains(ls[0], `"11503-0"`) || !strings.Contains(ls[1], `"id":"p1"`) || !strings.Contains(ls[2], `"id":"o1"`) {
		t.Fatalf("export --end 2015:\n%s", b)
	}
	if !strings.Contains(errOut, "exported 3 resources") || !strings.Contains(errOut, "wrote "+phr) {
		t.Errorf("progress: %q", errOut)
	}
	// .sphr with a generated passphrase and a signature.
	arc := filepath.Join(dir, "p1.sphr")
	code, _, errOut = run(t, "export", "--data", data, "--patient", "p1", "--format", "sphr", "--sign", "--out", arc)
	if code != 0 {
		t.Fatalf("export sphr: %d %s", code, errOut)
	}
	m := regexp.MustCompile(`passphrase \(shown only now, keep it safe\): (\S+)`).FindStringSubmatch(errOut)
	if m == nil {
		t.Fatalf("no passphrase shown: %s", errOut)
	}
	a, _ := os.ReadFile(arc)
	rd, err := sphr.Open(bytes.NewReader(a), int64(len(a)), m[1])
	if err != nil {
		t.Fatal(err)
	}
	if l, err := rd.Next(); err != nil || !bytes.Contains(l.JSON, []byte("11503-0")) {
		t.Fatalf("first line of the .sphr: %v", err)
	}
	code, out, errOut := run(t, "verify", arc, "--sig", arc+".jws", "--data", data)
	if code != 0 || !strings.Contains(out, "signature valid") {
		t.Fatalf("verify: %d %s %s", code, out, errOut)
	}
	a[len(a)/2] ^= 0x55
	os.WriteFile(arc, a, 0o600)
	if code, _, errOut := run(t, "verify", arc, "--data", data); code != 1 || !strings.Contains(errOut, "NOT valid") {
		t.Fatalf("verify of a modified file: %d %s", code, errOut)
	}
	if code, _, _ := run(t, "export", "--data", data, "--format", "xml"); code != 2 {
		t.Errorf("--format xml: exit %d, want 2", code)
	}
}

func TestExportRemote(t *testing.T) {
	s := seed(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "all.ndjson")
	code, _, errOut := run(t, "export", "--server", s.URL, "--token", s.AdminToken(), "--format", "ndjson", "--out", out, "--sign")
	if code != 0 {
		t.Fatalf("remote export: %d %s", code, errOut)
	}
	b, _ := os.ReadFile(out)
	if n := bytes.Count(b, []byte("\n")); n != 7 { // 2 covers, 2 patients, 3 observations
		t.Fatalf("remote export: %d lines\n%s", n, b)
	}
	if !strings.Contains(errOut, "exported 7 resources") || strings.Contains(errOut, "\r") {
		t.Errorf("remote progress (not a terminal: plain lines): %q", errOut)
	}
	if code, vout, verr := run(t, "verify", out, "--data", s.App.Config.DataDir); code != 0 {
		t.Fatalf("verify remote signature: %d %s %s", code, vout, verr)
	}
	// With the keys the server publishes (jwks_uri).
	for _, srv := range []string{s.URL, s.FHIR} {
		if code, vout, verr := run(t, "verify", out, "--server", srv); code != 0 || !strings.Contains(vout, "signature valid") {
			t.Fatalf("verify --server %s: %d %s %s", srv, code, vout, verr)
		}
	}
	// A patient token cannot export another patient.
	code, _, errOut = run(t, "export", "--server", s.URL, "--token", s.Token("patient/*.rs", "p1"), "--patient", "p2", "--out", filepath.Join(dir, "x"))
	if code != 1 || !strings.Contains(errOut, "403") || !strings.Contains(errOut, "may export only Patient/p1") {
		t.Fatalf("patient token exporting p2: %d %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Error("a failed export left a file")
	}
	// Its own record works, with the file name the server suggests.
	wd, _ := os.Getwd()
	os.Chdir(dir)
	defer os.Chdir(wd)
	code, _, errOut = run(t, "export", "--server", s.URL+"/fhir", "--token", s.Token("patient/*.rs", "p1"), "--format", "sphr", "--passphrase", "pass phrase")
	if code != 0 || !strings.Contains(errOut, "wrote William-Sim-") {
		t.Fatalf("patient export: %d %s", code, errOut)
	}
}

// TestExportLocalStores: phr export on the local store, SQLite (--data)
// and PostgreSQL (--db), to a file and to standard output.
func TestExportLocalStores(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := seedOn(t, d)
			args := []string{"export", "--data", s.App.Config.DataDir, "--db", s.App.Config.DB}
			out := filepath.Join(t.TempDir(), "all.json")
			code, _, errOut := run(t, append(args, "--format", "bundle", "--out", out)...)
			if code != 0 {
				t.Fatalf("export: %d %s", code, errOut)
			}
			b, _ := os.ReadFile(out)
			var bundle struct {
				Type  string
				Entry []struct {
					Resource struct{ ResourceType, ID string }
				}
			}
			if err := json.Unmarshal(b, &bundle); err != nil || bundle.Type != "document" || len(bundle.Entry) != 6 || bundle.Entry[0].Resource.ResourceType != "Composition" {
				t.Fatalf("bundle of the whole store (cover, 2 patients, 3 observations): %v\n%s", err, b)
			}
			if !strings.Contains(errOut, "exported 6 resources") || !strings.Contains(errOut, "wrote "+out) {
				t.Errorf("progress: %q", errOut)
			}
			code, stdout, errOut := run(t, append(args, "--patient", "p2", "--format", "ndjson", "--out", "-", "--quiet")...)
			if code != 0 || strings.Count(stdout, "\n") != 3 || !strings.Contains(stdout, `"id":"o3"`) || errOut != "" {
				t.Fatalf("export to stdout: %d %q %q", code, stdout, errOut)
			}
			if code, _, errOut := run(t, append(args, "--patient", "nobody")...); code != 1 || !strings.Contains(errOut, "Patient/nobody is not known") {
				t.Fatalf("unknown patient: %d %s", code, errOut)
			}
		})
	}
}

func TestProgressLines(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b, false)
	p.every = 0
	p.update(10, 2_000_000)
	p.update(-1, 3_000_000) // bytes only: the resource count stays
	p.done()
	got := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(got) != 3 || !strings.HasPrefix(got[0], "exported 10 resources, 2.0 MB in ") || !strings.HasPrefix(got[1], "exported 10 resources, 3.0 MB") || !strings.Contains(got[2], "resources/s)") || strings.Contains(b.String(), "\r") {
		t.Fatalf("progress lines: %q", b.String())
	}
	b.Reset()
	q := newProgress(&b, true)
	q.every = 0
	q.update(1, 1)
	q.done()
	if b.Len() != 0 {
		t.Fatalf("--quiet printed %q", b.String())
	}
}

// TestExportImportRoundTrip: phr export of a local store, phr import of
// the file into an empty server, phr export again: the same resources,
// and no cover page stored.
func TestExportImportRoundTrip(t *testing.T) {
	src := seed(t)
	dir := t.TempDir()
	for _, c := range []struct{ format, pass string }{{"phr", ""}, {"sphr", "a long passphrase"}, {"bundle", ""}} {
		t.Run(c.format, func(t *testing.T) {
			file := filepath.Join(dir, "p1."+c.format)
			args := []string{"export", "--data", src.App.Config.DataDir, "--patient", "p1", "--format", c.format, "--out", file, "--quiet"}
			if c.pass != "" {
				args = append(args, "--passphrase", c.pass)
			}
			if code, _, errOut := run(t, args...); code != 0 {
				t.Fatalf("export: %d %s", code, errOut)
			}
			dst := servertest.Start(t, "sqlite")
			tok := dst.AdminToken()
			args = []string{"import", "--server", dst.URL, "--token", tok, "--source", "roundtrip", file}
			if c.pass != "" {
				args = append(args, "--passphrase", c.pass)
			}
			code, out, errOut := run(t, args...)
			if code != 0 || !strings.Contains(out, "created 3,") || !strings.Contains(out, "rejected 0") || !strings.Contains(errOut, "cover page of a phr export") {
				t.Fatalf("import: %d %s %s", code, out, errOut)
			}
			if n := dst.Do("GET", "Composition?_summary=count", tok, nil).JSON(t)["total"]; n != 0.0 {
				t.Errorf("the cover page was stored (%v Compositions)", n)
			}
			again := filepath.Join(dir, "again-"+c.format+".ndjson")
			if code, _, errOut := run(t, "export", "--server", dst.FHIR, "--token", tok, "--patient", "p1", "--format", "ndjson", "--out", again, "--quiet"); code != 0 {
				t.Fatalf("export again: %d %s", code, errOut)
			}
			b, _ := os.ReadFile(again)
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				var r struct{ ResourceType, ID string }
				json.Unmarshal([]byte(l), &r)
				if r.ResourceType != "Composition" && r.ResourceType != "Provenance" {
					got = append(got, r.ResourceType+"/"+r.ID)
				}
			}
			if strings.Join(got, " ") != "Patient/p1 Observation/o1 Observation/o2" {
				t.Errorf("export after the round trip: %v\n%s", got, b)
			}
		})
	}
}
