package sphr

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/zipaes"
)

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

type fixture struct {
	archive []byte
	lines   []string // the resources as given to the writer
	binary  []byte   // Binary/b1 content
	big     []byte   // the large inline attachment
}

func build(t *testing.T, pass string) fixture {
	t.Helper()
	fx := fixture{binary: randBytes(100_000), big: randBytes(80_000)}
	small := base64.StdEncoding.EncodeToString([]byte("a short note"))
	fx.lines = []string{
		`{"resourceType":"Patient","id":"p1","name":[{"family":"Sim","given":["William"]}]}`,
		`{"resourceType":"DocumentReference","id":"d1","status":"current","subject":{"reference":"Patient/p1"},"content":[{"attachment":{"contentType":"text/plain","data":"` + small + `","title":"note"}},{"attachment":{"contentType":"application/pdf","data":"` + base64.StdEncoding.EncodeToString(fx.big) + `","title":"big"}}]}`,
		`{"resourceType":"Media","id":"m1","status":"completed","content":{"contentType":"image/jpeg","url":"Binary/b1"}}`,
		`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"valueAttachment":{"contentType":"image/png","data":"` + base64.StdEncoding.EncodeToString(fx.big[:70000]) + `","_data":{"extension":[{"url":"http://example.org/other","valueString":"kept"}]},"url":"http://example.org/orig.png"}}`,
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, "William Sim", pass, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range fx.lines {
		if err := w.WriteResource([]byte(l)); err != nil {
			t.Fatal(err)
		}
	}
	binJSON := `{"resourceType":"Binary","id":"b1","meta":{"versionId":"1"},"contentType":"image/jpeg"}`
	if err := w.WriteBinary([]byte(binJSON), "b1", "image/jpeg", bytes.NewReader(fx.binary)); err != nil {
		t.Fatal(err)
	}
	fx.lines = append(fx.lines, strings.TrimSuffix(binJSON, "}")+`,"data":"`+base64.StdEncoding.EncodeToString(fx.binary)+`"}`)
	if err := w.WriteLine([]byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"processing","diagnostics":"x"}]}`)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Files != 3 || w.Lines != 6 {
		t.Fatalf("files %d lines %d, want 3 and 6", w.Files, w.Lines)
	}
	fx.archive = buf.Bytes()
	return fx
}

func readAll(t *testing.T, archive []byte, pass string) (*Reader, []*Line) {
	t.Helper()
	r, err := Open(bytes.NewReader(archive), int64(len(archive)), pass)
	if err != nil {
		t.Fatal(err)
	}
	var out []*Line
	for {
		l, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	return r, out
}

func TestRoundTrip(t *testing.T) {
	const pass = "correct horse battery staple"
	fx := build(t, pass)
	r, lines := readAll(t, fx.archive, pass)
	if got := r.Files(); len(got) != 1 || got[0] != "William-Sim/William-Sim.phr" {
		t.Fatalf("files %v", got)
	}
	if len(lines) != 6 {
		t.Fatalf("%d lines, want 6", len(lines))
	}
	// The large data went to files; the small note stayed inline.
	if bytes.Contains(lines[1].JSON, []byte(base64.StdEncoding.EncodeToString(fx.big))) || !bytes.Contains(lines[1].JSON, []byte(`"url":"./DocumentReference-d1-2.pdf"`)) {
		t.Errorf("large attachment not externalized: %.300s", lines[1].JSON)
	}
	if !bytes.Contains(lines[1].JSON, []byte(`"title":"note"`)) || !bytes.Contains(lines[1].JSON, []byte(`"data":"YSBzaG9ydCBub3Rl"`)) {
		t.Errorf("small attachment changed: %.300s", lines[1].JSON)
	}
	if BinaryFile(lines[4]) != "./Binary-b1.jpg" {
		t.Errorf("BinaryFile = %q", BinaryFile(lines[4]))
	}
	for i, want := range fx.lines {
		got, err := r.Restore(lines[i])
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("line %d restored as\n%.400s\nwant\n%.400s", i+1, got, want)
		}
	}
	rc, n, err := r.Attachment(lines[4].File, "./Binary-b1.jpg")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || n != int64(len(fx.binary)) || !bytes.Equal(b, fx.binary) {
		t.Fatalf("Binary file: %d bytes (size %d), err %v", len(b), n, err)
	}
}

func TestWrongPassphrase(t *testing.T) {
	fx := build(t, "right")
	r, err := Open(bytes.NewReader(fx.archive), int64(len(fx.archive)), "wrong")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); !errors.Is(err, zipaes.ErrWrongPassphrase) && !errors.Is(err, zipaes.ErrAuthentication) {
		t.Fatalf("Next with a wrong passphrase: %v", err)
	}
	r, _ = Open(bytes.NewReader(fx.archive), int64(len(fx.archive)), "")
	if _, err := r.Next(); !errors.Is(err, zipaes.ErrPassphraseRequired) {
		t.Fatalf("Next without a passphrase: %v", err)
	}
}

// Test7z opens a written .sphr with 7-Zip: the right passphrase extracts
// the .phr and the files byte for byte, a wrong one fails.
func Test7z(t *testing.T) {
	bin, err := exec.LookPath("7z")
	if err != nil {
		t.Skip("7z not found: skipping (apt-get install -y p7zip-full; .ci/run does)")
	}
	const pass = "k7mp-3xq9-wd4t-hn8e-ua2c-rf6v"
	fx := build(t, pass)
	dir := t.TempDir()
	arc := filepath.Join(dir, "x.sphr")
	if err := os.WriteFile(arc, fx.archive, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(out, p string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		b, err := exec.CommandContext(ctx, bin, "x", "-y", "-p"+p, "-o"+out, arc).CombinedOutput()
		return string(b), err
	}
	if out, err := run(filepath.Join(dir, "bad"), "not-the-passphrase"); err == nil {
		t.Fatalf("7z extracted with a wrong passphrase:\n%s", out)
	} else if !strings.Contains(strings.ToLower(out), "wrong password") {
		t.Logf("7z with a wrong passphrase failed (no 'Wrong password' message):\n%s", out)
	}
	good := filepath.Join(dir, "good")
	if out, err := run(good, pass); err != nil {
		t.Fatalf("7z x: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(good, "William-Sim", "Binary-b1.jpg"))
	if err != nil || !bytes.Equal(got, fx.binary) {
		t.Fatalf("Binary file from 7z: %v (%d bytes)", err, len(got))
	}
	got, err = os.ReadFile(filepath.Join(good, "William-Sim", "DocumentReference-d1-2.pdf"))
	if err != nil || !bytes.Equal(got, fx.big) {
		t.Fatalf("attachment from 7z: %v (%d bytes)", err, len(got))
	}
	phr, err := os.ReadFile(filepath.Join(good, "William-Sim", "William-Sim.phr"))
	if err != nil || bytes.Count(phr, []byte("\n")) != 6 {
		t.Fatalf(".phr from 7z: %v\n%.300s", err, phr)
	}
}

func findIG(t *testing.T) string {
	wd, _ := os.Getwd()
	for d := wd; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "..", "shared", "data", "phr-ig-examples")
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p
		}
		if filepath.Dir(d) == d {
			t.Skip("../shared/data/phr-ig-examples not found; skipping")
		}
	}
}

// TestWilliamSim reads the IG's example .sphr (a plain zip with macOS junk)
// and re-attaches its two images to the Media resources.
func TestWilliamSim(t *testing.T) {
	p := filepath.Join(findIG(t), "WilliamSim.sphr")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	r, lines := readAll(t, data, "")
	if got := r.Files(); len(got) != 1 || got[0] != "WilliamSim/WilliamSim.phr" {
		t.Fatalf("resource files %v (junk must be ignored)", got)
	}
	if len(lines) < 10 {
		t.Fatalf("only %d lines", len(lines))
	}
	zr, err := zip.OpenReader(p)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	want := map[string][]byte{}
	for _, f := range zr.File {
		if strings.HasPrefix(f.Name, "WilliamSim/") && strings.HasSuffix(f.Name, ".jpg") {
			rc, _ := f.Open()
			b, _ := io.ReadAll(rc)
			rc.Close()
			want[strings.TrimPrefix(f.Name, "WilliamSim/")] = b
		}
	}
	found := 0
	for _, l := range lines {
		if !bytes.Contains(l.JSON, []byte(`"Media"`)) {
			continue
		}
		orig, _ := fhirjson.Parse(l.JSON)
		url := orig.Get("content").GetString("url")
		out, err := r.Restore(l)
		if err != nil {
			t.Fatal(err)
		}
		v, err := fhirjson.Parse(out)
		if err != nil {
			t.Fatal(err)
		}
		c := v.Get("content")
		b, err := base64.StdEncoding.DecodeString(c.GetString("data"))
		if err != nil || !bytes.Equal(b, want[strings.TrimPrefix(url, "./")]) || len(b) < 30000 {
			t.Fatalf("%s: re-attached %d bytes, want the %d of %s", url, len(b), len(want[strings.TrimPrefix(url, "./")]), url)
		}
		if c.GetString("contentType") != "image/jpeg" || c.GetString("title") == "" {
			t.Errorf("other attachment elements lost: %.200s", out)
		}
		found++
	}
	if found != 2 {
		t.Fatalf("re-attached %d images, want 2", found)
	}
}

func TestRestoreJSON(t *testing.T) {
	fx := build(t, "")
	z, err := zip.NewReader(bytes.NewReader(fx.archive), int64(len(fx.archive)))
	if err != nil {
		t.Fatal(err)
	}
	open := func(rel string) ([]byte, error) {
		rc, err := z.Open("William-Sim/" + strings.TrimPrefix(rel, "./"))
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
	_, lines := readAll(t, fx.archive, "")
	for i, want := range fx.lines {
		got, _, err := RestoreJSON(lines[i].JSON, open)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("line %d: RestoreJSON gave\n%.300s", i+1, got)
		}
	}
	if _, _, err := RestoreJSON(lines[4].JSON, func(string) ([]byte, error) { return nil, errors.New("gone") }); err == nil {
		t.Error("a missing file was not reported")
	}
	cover := `{"resourceType":"Composition","meta":{"tag":[{"system":"` + CoverTagSystem + `","code":"` + CoverTagCode + `"}]}}`
	if !IsCoverPage([]byte(cover)) || IsCoverPage([]byte(strings.Replace(cover, "Composition", "List", 1))) || IsCoverPage([]byte(lines[0].JSON)) {
		t.Error("IsCoverPage")
	}
}

// TestLongFirstLine: a .phr whose first line is longer than the reader's
// peek (a Provenance naming thousands of resources) is still NDJSON.
func TestLongFirstLine(t *testing.T) {
	long := `{"resourceType":"Provenance","id":"p1","target":[` + strings.Repeat(`{"reference":"Observation/o"},`, 3000) + `{"reference":"Patient/x"}]}`
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create("rec/rec.phr")
	w.Write([]byte(long + "\n" + `{"resourceType":"Patient","id":"x"}` + "\n"))
	zw.Close()
	_, lines := readAll(t, buf.Bytes(), "")
	if len(lines) != 2 || lines[0].Number != 1 || len(lines[0].JSON) != len(long) || string(lines[1].JSON) != `{"resourceType":"Patient","id":"x"}` {
		t.Fatalf("%d lines: %+v", len(lines), lines)
	}
}

func TestBundleCoverSource(t *testing.T) {
	cover := `{"resourceType":"Composition","id":"c","meta":{"tag":[{"system":"` + CoverTagSystem + `","code":"` + CoverTagCode + `"}],"source":"https://phr.example/fhir"},"status":"final"}`
	for in, want := range map[string]string{
		`{"resourceType":"Bundle","id":"b","type":"document","entry":[{"fullUrl":"urn:uuid:1","resource":` + cover + `},{"resource":{"resourceType":"Patient"}}]}`:    "https://phr.example/fhir",
		`{"resourceType":"Bundle","type":"document","entry":[{"fullUrl":"urn:uuid:1","resource":` + cover[:40]:                                                        "",
		`{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient"}}]}`:                                                             "",
		`{"resourceType":"Bundle","entry":[{"resource":` + strings.Replace(cover, "https://phr.example/fhir", "urn:phr:source:x", 1) + `}]}`:                          "",
		`{"resourceType":"Bundle","entry":[{"resource":` + strings.Replace(cover, "https://phr.example/fhir", "https://phr.example/fhir/#r1", 1) + `}]}`:              "https://phr.example/fhir",
		`{"resourceType":"Bundle","entry":[{"resource":` + strings.Replace(cover, "https://phr.example/fhir", "http://127.0.0.1:8080/fhir/#store-2b7e-44", 1) + `}]}`: "http://127.0.0.1:8080/fhir#store-2b7e-44",
		`{"resourceType":"Bundle","entry":[{"resource":` + strings.Replace(cover, "https://phr.example/fhir", "http://127.0.0.1:8080/fhir#store-a/b", 1) + `}]}`:      "http://127.0.0.1:8080/fhir",
		`{"resourceType":"List","entry":[{"item":{"reference":"Patient/x"}}]}`:                                                                                        "",
		`not json`: "",
	} {
		if got := BundleCoverSource([]byte(in)); got != want {
			t.Errorf("BundleCoverSource(%.80s) = %q, want %q", in, got, want)
		}
	}
}
