package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
)

func sharedData(t *testing.T, name string) string {
	t.Helper()
	wd, _ := os.Getwd()
	for d := wd; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "..", "shared", "data", name)
		if _, err := os.Stat(p); err == nil {
			return filepath.Clean(p)
		}
		if filepath.Dir(d) == d {
			t.Skipf("../shared/data/%s not found; skipping", name)
		}
	}
}

func TestImportCLI(t *testing.T) {
	bulk := sharedData(t, "sample-bulk-10")
	data := t.TempDir()
	code, out, errOut := run(t, "import", "--data", data, "--source", "https://ehr.example/fhir", bulk)
	if code != 0 || !strings.Contains(out, "created 7160,") || !strings.Contains(out, "rejected 0") {
		t.Fatalf("import: %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = run(t, "import", "--data", data, "--source", "https://ehr.example/fhir", bulk)
	if code != 0 || !strings.Contains(out, "created 0,") || !strings.Contains(out, "unchanged 7160") {
		t.Fatalf("re-import: %d\n%s\n%s", code, out, errOut)
	}
	// An edited patient file from the same source.
	edit := t.TempDir()
	b, _ := os.ReadFile(filepath.Join(bulk, "Patient.000.ndjson"))
	first, _, _ := bytes.Cut(b, []byte("\n"))
	id := regexp.MustCompile(`"id":"([^"]+)"`).FindSubmatch(first)[1]
	first = bytes.Replace(first, []byte(`"gender":"`), []byte(`"active":false,"gender":"`), 1)
	os.WriteFile(filepath.Join(edit, "Patient.000.ndjson"), append(first, '\n'), 0o600)
	code, out, errOut = run(t, "import", "--data", data, "--source", "https://ehr.example/fhir", edit)
	if code != 0 || !strings.Contains(out, "updated 1,") {
		t.Fatalf("edited: %d\n%s\n%s", code, out, errOut)
	}
	ref := "Patient/" + string(id)
	code, out, errOut = run(t, "diff", ref, "--data", data)
	if code != 0 || !strings.Contains(out, "+ Patient.active: false") {
		t.Fatalf("diff: %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = run(t, "revert", ref, "--to", "1", "--data", data)
	if code != 0 || !strings.Contains(out, "written back as version 3") {
		t.Fatalf("revert: %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = run(t, "diff", ref, "2", "3", "--data", data)
	if code != 0 || !strings.Contains(out, "- Patient.active: false") {
		t.Fatalf("diff 2 3: %d\n%s", code, out)
	}
	// A second source disagrees: a conflict, resolved by keeping ours.
	other := t.TempDir()
	conf := bytes.Replace(first, []byte(`"active":false`), []byte(`"active":true`), 1)
	// A decimal whose digits count (conflicts show prints it as sent).
	conf = bytes.Replace(conf, []byte(`"extension":[`), []byte(`"extension":[{"url":"http://example.org/weight-kg","valueDecimal":70.50},`), 1)
	os.WriteFile(filepath.Join(other, "Patient.ndjson"), append(conf, '\n'), 0o600)
	code, out, errOut = run(t, "import", "--data", data, "--source", "clinic-b", other)
	if code != 0 || !strings.Contains(out, "conflicts 1") || !strings.Contains(errOut, "conflict") {
		t.Fatalf("conflicting import: %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = run(t, "conflicts", "--data", data)
	m := regexp.MustCompile(`conflict (\d+)  open  ` + regexp.QuoteMeta(ref)).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("conflicts: %d\n%s", code, out)
	}
	code, out, _ = run(t, "conflicts", "show", m[1], "--data", data)
	if code != 0 || !strings.Contains(out, "--- incoming (from urn:phr:source:clinic-b)") || !strings.Contains(out, "--- current") {
		t.Fatalf("show: %d\n%s", code, out)
	}
	// What differs comes first: the one extension added, not a change of
	// every extension after it; meta.source, which the header gives, is
	// no difference.
	if !strings.Contains(out, "--- differences (current -> incoming): 2\n") || strings.Contains(out, "Patient.meta") || !strings.Contains(out, `+ Patient.extension[0]: {"url":"http://example.org/weight-kg","valueDecimal":70.50}`) {
		t.Errorf("show does not list the differences first: %.1000s", out)
	}
	_, incoming, _ := strings.Cut(out, "--- incoming")
	_, incoming, _ = strings.Cut(incoming, "\n")
	if !strings.HasPrefix(incoming, "{\n  \"resourceType\": \"Patient\"") || !strings.Contains(incoming, `"valueDecimal": 70.50`) {
		t.Errorf("show does not print the incoming resource as sent (resourceType first, 70.50): %s", out)
	}
	code, out, _ = run(t, "conflicts", "resolve", m[1], "keep", "--data", data)
	if code != 0 || !strings.Contains(out, "version 4") {
		t.Fatalf("resolve: %d\n%s", code, out)
	}
	code, out, _ = run(t, "log", "--data", data)
	if code != 0 || strings.Count(out, "batch ") != 4 {
		t.Fatalf("log: %d\n%s", code, out)
	}
	code, out, _ = run(t, "log", "--batch", "3", "--data", data)
	if code != 0 || !strings.Contains(out, "wrote   "+ref+"/_history/2") {
		t.Fatalf("log --batch: %d\n%s", code, out)
	}
}

// TestImportByteOrderMarks: NDJSON files written by Windows tools (a
// UTF-8 byte order mark, CRLF line ends; UTF-16) import like any other,
// one by one, as a directory (sent as one stream), and named .json.
func TestImportByteOrderMarks(t *testing.T) {
	dir := t.TempDir()
	bom := "\xef\xbb\xbf"
	os.WriteFile(filepath.Join(dir, "a.ndjson"), []byte(bom+`{"resourceType":"Patient","id":"a1"}`+"\r\n"+`{"resourceType":"Patient","id":"a2"}`+"\r\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "b.ndjson"), []byte(bom+`{"resourceType":"Patient","id":"b1"}`+"\r\n"), 0o600)
	// A UTF-16 file (Windows PowerShell 5) in the same directory.
	u16 := []byte{0xff, 0xfe}
	for _, c := range `{"resourceType":"Patient","id":"u1"}` + "\r\n" {
		u16 = append(u16, byte(c), 0)
	}
	os.WriteFile(filepath.Join(dir, "u.ndjson"), u16, 0o600)
	single := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(single, []byte(bom+`{"resourceType":"Patient","id":"c1"}`+"\r\n"+`{"resourceType":"Patient","id":"c2"}`+"\r\n"), 0o600)
	data := t.TempDir()
	code, out, errOut := run(t, "import", "--data", data, "--source", "win", dir)
	if code != 0 || !strings.Contains(out, "created 4,") || !strings.Contains(out, "rejected 0") {
		t.Errorf("directory: %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = run(t, "import", "--data", data, "--source", "win", single)
	if code != 0 || !strings.Contains(out, "created 2,") || !strings.Contains(out, "rejected 0") {
		t.Errorf(".json NDJSON: %d\n%s\n%s", code, out, errOut)
	}
}

// TestImportHealthCardCLI imports a SMART Health Card file into a data
// directory, checked with the issuer's key set given by --shc-keys, and
// refuses those flags with --server, whose own keys check cards.
func TestImportHealthCardCLI(t *testing.T) {
	dir := "../../../shared/data/smart-health-cards"
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("%s not found; skipping", dir)
	}
	card := filepath.Join(dir, "example-00-e-file.smart-health-card")
	data := t.TempDir()
	code, out, errOut := run(t, "import", "--data", data, "--source", "clinic", "--shc-keys", filepath.Join(dir, "issuer/.well-known/jwks.json"), card)
	if code != 0 || !strings.Contains(out, "created 4,") || !strings.Contains(errOut, "its signature is valid") {
		t.Errorf("with keys: %d\n%s\n%s", code, out, errOut)
	}
	// The file on one line, without keys.
	b, err := os.ReadFile(card)
	if err != nil {
		t.Fatal(err)
	}
	var min bytes.Buffer
	if err := json.Compact(&min, b); err != nil {
		t.Fatal(err)
	}
	oneLine := filepath.Join(t.TempDir(), "card.smart-health-card")
	os.WriteFile(oneLine, min.Bytes(), 0o600)
	code, out, errOut = run(t, "import", "--data", t.TempDir(), "--source", "clinic", oneLine)
	if code != 0 || !strings.Contains(out, "created 4,") || !strings.Contains(errOut, "its signature was not checked") {
		t.Errorf("one line, without keys: %d\n%s\n%s", code, out, errOut)
	}
	code, _, errOut = run(t, "import", "--server", "http://127.0.0.1:1", "--token", "x", "--shc-fetch-keys", card)
	if code != 2 || !strings.Contains(errOut, "a server checks cards with its own") {
		t.Errorf("with --server: %d\n%s", code, errOut)
	}
}

// TestImportCompressesUploads: phr import --server sends text gzip-
// compressed (Content-Encoding: gzip), which the server reads as a
// stream; a proxy in front of it sees the compressed bytes.
func TestImportCompressesUploads(t *testing.T) {
	s := seed(t)
	tok := s.AdminToken()
	target, _ := url.Parse(s.URL)
	var enc string
	var got atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/$import") {
			enc = r.Header.Get("Content-Encoding")
			b, _ := io.ReadAll(r.Body)
			got.Add(int64(len(b)))
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	}))
	defer proxy.Close()
	var nd bytes.Buffer
	for i := range 2000 {
		fmt.Fprintf(&nd, `{"resourceType":"Patient","id":"z%d","name":[{"family":"Compressed","given":["Number %d"]}],"gender":"unknown"}`+"\n", i, i)
	}
	file := filepath.Join(t.TempDir(), "many.ndjson")
	os.WriteFile(file, nd.Bytes(), 0o600)
	code, out, errOut := run(t, "import", "--server", proxy.URL, "--token", tok, "--source", "gz", "--quiet", file)
	if code != 0 || !strings.Contains(out, "created 2000,") {
		t.Fatalf("import: %d\n%s\n%s", code, out, errOut)
	}
	if enc != "gzip" || got.Load() == 0 || got.Load() > int64(nd.Len()/4) {
		t.Errorf("upload: Content-Encoding %q, %d bytes for %d of NDJSON", enc, got.Load(), nd.Len())
	}
}

// TestImportDirNamesFiles: the NDJSON files of a directory go as one
// stream, yet each problem is told by its own file and line, whether a
// file ends with a newline or not and whether it is gzip-compressed. A
// file of the directory that is not FHIR is skipped with a note.
func TestImportDirNamesFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "export")
	os.Mkdir(dir, 0o700)
	p := func(id, extra string) string { return `{"resourceType":"Patient","id":"` + id + `"` + extra + `}` }
	os.WriteFile(filepath.Join(dir, "a.ndjson"), []byte(p("a1", "")+"\n"+p("a2", "")+"\n"+p("a3", `,"gender":"bogus"`)), 0o600)
	writeGz(t, filepath.Join(dir, "b.ndjson.gz"), p("b1", "")+"\nnot json\n")
	os.WriteFile(filepath.Join(dir, "c.ndjson"), []byte(p("c1", "")+"\n\n"+p("c2", `,"birthDate":"soon"`)+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "notes.json"), []byte(`{"files":["a.ndjson"]}`+"\n"), 0o600)
	// Pretty-printed, as a SMART Health Link's payload is.
	os.WriteFile(filepath.Join(dir, "link.json"), []byte("{\n  \"url\": \"https://shl.example/m/x\",\n  \"key\": \"rxTgYlOaKJPFtcEd0qcceN8wEU4p94SqAwIWQe6uX7Q\",\n  \"flag\": \"LU\"\n}\n"), 0o600)
	code, out, errOut := run(t, "import", "--data", t.TempDir(), dir)
	if code != 0 || !strings.Contains(out, "created 4,") || !strings.Contains(out, "rejected 3") {
		t.Fatalf("import: %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"a.ndjson line 3: ", "b.ndjson.gz line 2: ", "c.ndjson line 3: ", "skipped " + filepath.Join(dir, "notes.json") + ": JSON without a resourceType",
		"skipped " + filepath.Join(dir, "link.json") + ": JSON without a resourceType"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("no %q in:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, "export line") {
		t.Errorf("a line is named by the stream, not its file:\n%s", errOut)
	}
	// Named on its own, such a file goes to the importer, which rejects it.
	code, out, errOut = run(t, "import", "--data", t.TempDir(), filepath.Join(dir, "notes.json"))
	if code != 0 || !strings.Contains(out, "rejected 1") || !strings.Contains(errOut, "no resourceType") {
		t.Errorf("a file that is not FHIR: %d\n%s\n%s", code, out, errOut)
	}
}

// TestImportRenameHint: resources whose ids another source gave other
// content are stored beside those, and the CLI says how to import data of
// the same system so that it updates them instead.
func TestImportRenameHint(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "hospital-2025.ndjson"), filepath.Join(dir, "hospital-2026.ndjson")
	os.WriteFile(a, []byte(`{"resourceType":"Patient","id":"h1","gender":"female"}`+"\n"+`{"resourceType":"Patient","id":"h2"}`+"\n"), 0o600)
	os.WriteFile(b, []byte(`{"resourceType":"Patient","id":"h1","gender":"female","birthDate":"1970-01-01"}`+"\n"+`{"resourceType":"Patient","id":"h2"}`+"\n"), 0o600)
	data := t.TempDir()
	if code, out, errOut := run(t, "import", "--data", data, a); code != 0 || strings.Contains(errOut, "another source gave") {
		t.Fatalf("first import: %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut := run(t, "import", "--data", data, b)
	if code != 0 || !strings.Contains(out, "created 1, updated 0, unchanged 1") || !strings.Contains(errOut, "phr: 1 resources have ids that another source gave other content") {
		t.Fatalf("second import under its own name: %d\n%s\n%s", code, out, errOut)
	}
	// As the hint says: under the earlier import's source, a change is an update.
	if code, out, errOut := run(t, "import", "--data", data, "--source", "hospital-2025.ndjson", b); code != 0 || !strings.Contains(out, "updated 1,") || strings.Contains(errOut, "another source gave") {
		t.Errorf("under the earlier source: %d\n%s\n%s", code, out, errOut)
	}
}

// TestHealthCardJSON: a directory's one-line SMART Health Card files and
// card payloads are sent as documents, not as NDJSON or skipped, and a
// resource that mentions such a member is still NDJSON.
func TestHealthCardJSON(t *testing.T) {
	for line, want := range map[string]bool{
		`{"verifiableCredential":["a.b.c"]}`: true,
		`{"iss":"https://x.example","vc":{"credentialSubject":{"fhirBundle":{"resourceType":"Bundle","type":"collection"}}}}`: true,
		`{"resourceType":"Basic","id":"b","vc":{"credentialSubject":{"fhirBundle":{}}}}`:                                      false,
		`{"resourceType":"Observation","valueString":"\"fhirBundle\" and \"verifiableCredential\""}`:                          false,
		`{"files":["a.ndjson"]}`: false,
	} {
		if got := healthCardJSON([]byte(line)); got != want {
			t.Errorf("healthCardJSON(%s) = %v", line, got)
		}
	}
	dir := t.TempDir()
	shc := "../../../shared/data/smart-health-cards"
	payload, err := os.ReadFile(filepath.Join(shc, "example-00-c-jws-payload-minified.json"))
	if os.IsNotExist(err) {
		t.Skipf("%s not found; skipping", shc)
	}
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "payload.json"), payload, 0o600)
	code, out, errOut := run(t, "import", "--data", t.TempDir(), "--source", "cards", dir)
	if code != 0 || !strings.Contains(out, "imported payload.json: batch 1: created 4,") || !strings.Contains(errOut, "without its signature") {
		t.Errorf("a card's payload in a directory: %d\n%s\n%s", code, out, errOut)
	}
}

// TestImportLongFirstLine: an NDJSON file whose first line is longer than
// what is sniffed of it (a Synthea Provenance naming every resource of a
// patient) is NDJSON, and a Bundle of one long line is a Bundle; a
// directory imported as "." is named by its own name.
func TestImportLongFirstLine(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hospital-export")
	os.MkdirAll(dir, 0o700)
	var targets []string
	for i := range 3000 {
		targets = append(targets, fmt.Sprintf(`{"reference":"Observation/o-%04d"}`, i))
	}
	prov := `{"resourceType":"Provenance","id":"pv1","target":[` + strings.Join(targets, ",") + `],"recorded":"2026-01-01T00:00:00Z","agent":[{"who":{"display":"EHR"}}]}`
	os.WriteFile(filepath.Join(dir, "Provenance.ndjson"), []byte(prov+"\n"+strings.Replace(prov, `"pv1"`, `"pv2"`, 1)+"\n"), 0o600)
	bundle := `{"resourceType":"Bundle","type":"collection","entry":[{"resource":` + prov + `},{"resource":` + strings.Replace(prov, `"pv1"`, `"pv3"`, 1) + `}]}`
	single := filepath.Join(t.TempDir(), "one-line.json")
	os.WriteFile(single, []byte(bundle), 0o600)
	data := t.TempDir()
	code, out, errOut := run(t, "import", "--data", data, filepath.Join(dir, "Provenance.ndjson"))
	if code != 0 || !strings.Contains(out, "created 2,") || !strings.Contains(out, "rejected 0") {
		t.Errorf("NDJSON with a long first line: %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = run(t, "import", "--data", data, single)
	if code != 0 || !strings.Contains(out, "created 1, updated 0, unchanged 1") {
		t.Errorf("a Bundle on one long line: %d\n%s\n%s", code, out, errOut)
	}
	wd, _ := os.Getwd()
	defer os.Chdir(wd)
	os.Chdir(dir)
	code, out, errOut = run(t, "import", "--data", data, ".")
	if code != 0 || !strings.Contains(out, "imported hospital-export: batch 3:") || !strings.Contains(out, "unchanged 2") {
		t.Errorf("the directory as .: %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = run(t, "log", "--data", data)
	if !strings.Contains(out, "source urn:phr:source:hospital-export ") {
		t.Errorf("the directory as . is not the source's name:\n%s", out)
	}
}
