package cli

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/phrexport"
)

func TestExportBase(t *testing.T) {
	for in, want := range map[string]string{
		"https://ehr.example/fhir/$export":                             "https://ehr.example/fhir",
		"https://ehr.example/fhir/Patient/$export?_type=Patient":       "https://ehr.example/fhir",
		"https://ehr.example/fhir/Group/g-1/$export?_since=2026-01-01": "https://ehr.example/fhir",
		"https://ehr.example/api/FHIR/R4/Patient/$export/":             "https://ehr.example/api/FHIR/R4",
		"https://user:secret@ehr.example:8443/fhir/$export#x":          "https://ehr.example:8443/fhir",
		"http://127.0.0.1:8080/Patient/$export":                        "http://127.0.0.1:8080",
		"https://ehr.example/fhir/Patient":                             "",
		"ftp://ehr.example/fhir/$export":                               "",
		"/fhir/$export":                                                "",
		"":                                                             "",
	} {
		if got := exportBase(in); got != want {
			t.Errorf("exportBase(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSourceOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"https://lab.example/fhir#req-1": "https://lab.example/fhir",
		"https://lab.example/fhir/":      "https://lab.example/fhir",
		"urn:phr:source:synthea":         "urn:phr:source:synthea",
		"urn:oid:1.2.3.4":                "urn:oid:1.2.3.4",
		"#Mx3IWZWq6VdYp0Wd":              "",
		"lab":                            "",
		"":                               "",
	} {
		if got := sourceOrigin(in); got != want {
			t.Errorf("sourceOrigin(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestImportSourceFromContent: without --source, an import is labelled by
// where its content says it came from, so that two exports of one system
// under different file names are one source and a change updates.
func TestImportSourceFromContent(t *testing.T) {
	write := func(fp, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(fp), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(fp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	root := t.TempDir()
	data := t.TempDir()

	// Two Bulk Data exports of one server, downloaded a year apart.
	manifest := func(request string) string {
		return `{"transactionTime":"2026-01-01T00:00:00Z","request":"` + request + `","requiresAccessToken":true,` +
			`"output":[{"type":"Patient","url":"https://ehr.example/files/Patient.ndjson"}],"error":[]}`
	}
	y1, y2 := filepath.Join(root, "hospital-2025"), filepath.Join(root, "hospital-2026")
	write(filepath.Join(y1, "manifest.json"), manifest("https://ehr.example/fhir/Patient/$export?_type=Patient"))
	write(filepath.Join(y1, "Patient.ndjson"), `{"resourceType":"Patient","id":"h1","gender":"female"}`+"\n"+`{"resourceType":"Patient","id":"h2"}`+"\n")
	write(filepath.Join(y2, "manifest.json"), manifest("https://ehr.example/fhir/Group/all/$export"))
	write(filepath.Join(y2, "Patient.ndjson"), `{"resourceType":"Patient","id":"h1","gender":"female","birthDate":"1970-01-01"}`+"\n"+`{"resourceType":"Patient","id":"h2"}`+"\n")
	code, out, errOut := run(t, "import", "--data", data, y1)
	if code != 0 || !strings.Contains(out, "created 2,") || !strings.Contains(errOut, "phr: source https://ehr.example/fhir, the FHIR server the export's manifest names") {
		t.Fatalf("first export: %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = run(t, "import", "--data", data, y2)
	if code != 0 || !strings.Contains(out, "created 0, updated 1, unchanged 1") || strings.Contains(errOut, "another source gave") {
		t.Fatalf("second export of the same server: %d\n%s\n%s", code, out, errOut)
	}
	// The manifest named on its own says the same.
	code, out, errOut = run(t, "import", "--data", data, filepath.Join(y2, "manifest.json"))
	if code != 0 || !strings.Contains(out, "unchanged 2") || !strings.Contains(errOut, "phr: source https://ehr.example/fhir,") {
		t.Fatalf("the manifest: %d\n%s\n%s", code, out, errOut)
	}

	// Two exports of a record on another phr server, downloaded under two
	// names: the cover page names the server.
	cover := string(phrexport.CoverPage("c1", "ann", "Ann", time.Now(), "", "", "https://phr.example/fhir").Marshal()) + "\n"
	e1, e2 := filepath.Join(root, "Ann-2026-12-06.phr"), filepath.Join(root, "Ann-2026-12-07.phr")
	write(e1, cover+`{"resourceType":"Patient","id":"ann","meta":{"versionId":"1","lastUpdated":"2026-12-06T10:00:00Z","source":"urn:phr:source:clinic"},"gender":"female"}`+"\n")
	write(e2, cover+`{"resourceType":"Patient","id":"ann","meta":{"versionId":"2","lastUpdated":"2026-12-07T10:00:00Z","source":"urn:phr:source:clinic"},"gender":"female","birthDate":"1970-01-01"}`+"\n")
	code, out, errOut = run(t, "import", "--data", data, e1)
	if code != 0 || !strings.Contains(out, "created 1,") || !strings.Contains(errOut, "phr: source https://phr.example/fhir, the server whose export it is, as its cover page says") {
		t.Fatalf("first phr export: %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = run(t, "import", "--data", data, e2)
	if code != 0 || !strings.Contains(out, "created 0, updated 1,") {
		t.Fatalf("second phr export: %d\n%s\n%s", code, out, errOut)
	}
	e3 := filepath.Join(root, "Ann.json") // the document Bundle form
	write(e3, `{"resourceType":"Bundle","type":"document","entry":[{"fullUrl":"urn:uuid:c1","resource":`+strings.TrimSpace(cover)+`},`+
		`{"fullUrl":"urn:uuid:p","resource":{"resourceType":"Patient","id":"ann","meta":{"versionId":"2","lastUpdated":"2026-12-07T10:00:00Z","source":"urn:phr:source:clinic"},"gender":"female","birthDate":"1970-01-01"}}]}`)
	code, out, errOut = run(t, "import", "--data", data, e3)
	if code != 0 || !strings.Contains(out, "created 0, updated 0, unchanged 1") || !strings.Contains(errOut, "phr: source https://phr.example/fhir, the server whose export it is") {
		t.Fatalf("Bundle phr export: %d\n%s\n%s", code, out, errOut)
	}

	// NDJSON whose resources all name one system in meta.source.
	lab := func(id, ver, extra string) string {
		return `{"resourceType":"Observation","id":"` + id + `","meta":{"source":"https://lab.example/fhir#` + ver + `"},"status":"final","code":{"text":"Hb"}` + extra + `}` + "\n"
	}
	a, b := filepath.Join(root, "lab-march.ndjson"), filepath.Join(root, "lab-april.ndjson.gz")
	write(a, lab("o1", "r1", "")+lab("o2", "r2", ""))
	writeGz(t, b, lab("o1", "r7", `,"valueString":"13.1"`)+lab("o2", "r2", ""))
	code, out, errOut = run(t, "import", "--data", data, a)
	if code != 0 || !strings.Contains(out, "created 2,") || !strings.Contains(errOut, "phr: source https://lab.example/fhir, the origin every resource names in meta.source") {
		t.Fatalf("lab, first file: %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = run(t, "import", "--data", data, b)
	if code != 0 || !strings.Contains(out, "created 0, updated 1, unchanged 1") {
		t.Fatalf("lab, second file: %d\n%s\n%s", code, out, errOut)
	}

	// No single origin: the file name, as before. A bare fragment (a
	// server's request id) and a second origin say nothing of one system.
	for name, body := range map[string]string{
		"one-without.ndjson": lab("m1", "r1", "") + `{"resourceType":"Observation","id":"m2","status":"final","code":{"text":"Hb"}}` + "\n",
		"two-labs.ndjson":    lab("m3", "r1", "") + strings.Replace(lab("m4", "r1", ""), "lab.example", "other-lab.example", 1),
		"fragment.ndjson":    `{"resourceType":"Observation","id":"m5","meta":{"source":"#Mx3IWZWq6VdYp0Wd"},"status":"final","code":{"text":"Hb"}}` + "\n",
		// Agreement at the head is not enough: the whole file is read.
		"late-other.ndjson": strings.Repeat(lab("m6", "r1", ""), 2000) + strings.Replace(lab("m7", "r1", ""), "lab.example", "other-lab.example", 1),
	} {
		fp := filepath.Join(root, name)
		write(fp, body)
		code, out, errOut = run(t, "import", "--data", data, fp)
		if code != 0 || strings.Contains(errOut, "phr: source ") {
			t.Errorf("%s: %d\n%s\n%s", name, code, out, errOut)
		}
	}
	// --source wins, without a note.
	code, out, errOut = run(t, "import", "--data", data, "--source", "my-label", y1)
	if code != 0 || strings.Contains(errOut, "phr: source ") {
		t.Errorf("--source: %d\n%s\n%s", code, out, errOut)
	}

	code, out, errOut = run(t, "log", "--data", data)
	if code != 0 {
		t.Fatalf("log: %d\n%s", code, errOut)
	}
	for _, want := range []string{"source https://ehr.example/fhir ", "source https://phr.example/fhir ", "source https://lab.example/fhir ", "source urn:phr:source:one-without.ndjson ",
		"source urn:phr:source:two-labs.ndjson ", "source urn:phr:source:fragment.ndjson ", "source urn:phr:source:late-other.ndjson ", "source urn:phr:source:my-label "} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the log:\n%s", want, out)
		}
	}
}

// writeGz writes s gzipped to fp.
func writeGz(t *testing.T, fp, s string) {
	t.Helper()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(s))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fp, gz.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestImportSphrSourceFromCover: an encrypted .sphr export is labelled by
// the cover page of the .phr inside, read with the passphrase, so a second
// export of the changed record updates it. The exports of two stores with
// the default base (http://127.0.0.1:8080/fhir, the same on every machine)
// are two sources: the cover page names the store too.
func TestImportSphrSourceFromCover(t *testing.T) {
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
	nd := filepath.Join(dir, "in.ndjson")
	record := func(weight string) string {
		return `{"resourceType":"Patient","id":"p1","gender":"female"}` + "\n" + `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"w"},"subject":{"reference":"Patient/p1"},"valueString":"` + weight + `"}` + "\n"
	}
	os.WriteFile(nd, []byte(record("70 kg")), 0o600)
	if code, out, errOut := run(t, "import", "--data", a, "--source", "clinic", nd); code != 0 {
		t.Fatalf("import: %d %s %s", code, out, errOut)
	}
	exportOf := func(data, name string) string {
		t.Helper()
		fp := filepath.Join(dir, name)
		if code, _, errOut := run(t, "export", "--data", data, "--patient", "p1", "--format", "sphr", "--passphrase", "correct horse", "--out", fp); code != 0 {
			t.Fatalf("export: %d %s", code, errOut)
		}
		return fp
	}
	export := func(name string) string { return exportOf(a, name) }
	first := export("p1-2026-12-06.sphr")
	code, out, errOut := run(t, "import", "--data", b, "--passphrase", "correct horse", first)
	// (The Patient, the Observation and the Provenance of their import.)
	label := regexp.MustCompile(`phr: source (http://127\.0\.0\.1:8080/fhir#store-[0-9a-f-]{36}), the server whose export it is, as its cover page says`).FindStringSubmatch(errOut)
	if code != 0 || !strings.Contains(out, "created 3,") || label == nil {
		t.Fatalf("first .sphr: %d\n%s\n%s", code, out, errOut)
	}
	os.WriteFile(nd, []byte(`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"w"},"subject":{"reference":"Patient/p1"},"valueString":"71 kg"}`+"\n"), 0o600)
	if code, out, errOut := run(t, "import", "--data", a, "--source", "clinic", nd); code != 0 || !strings.Contains(out, "updated 1,") {
		t.Fatalf("change: %d %s %s", code, out, errOut)
	}
	second := export("p1-2026-12-07.sphr")
	code, out, errOut = run(t, "import", "--data", b, "--passphrase", "correct horse", second)
	// (The new Provenance of the change is created.)
	if code != 0 || !strings.Contains(out, "created 1, updated 1, unchanged 2, conflicts 0") {
		t.Fatalf("second .sphr: %d\n%s\n%s", code, out, errOut)
	}
	// Another store, the same ids, another weight: another source, whose
	// Observation is another resource (merge rule 1), not a newer version.
	os.WriteFile(nd, []byte(record("75 kg")), 0o600)
	if code, out, errOut := run(t, "import", "--data", c, "--source", "clinic", nd); code != 0 {
		t.Fatalf("import into the other store: %d %s %s", code, out, errOut)
	}
	code, out, errOut = run(t, "import", "--data", b, "--passphrase", "correct horse", exportOf(c, "p1-other.sphr"))
	if code != 0 || !strings.Contains(out, "updated 0,") || strings.Contains(errOut, label[1]) || !strings.Contains(errOut, "phr: source http://127.0.0.1:8080/fhir#store-") {
		t.Errorf("the other store's .sphr: %d\n%s\n%s", code, out, errOut)
	}
	// Without the passphrase the archive cannot be read: no label from it.
	if code, _, errOut := run(t, "import", "--data", t.TempDir(), second); code == 0 || strings.Contains(errOut, "phr: source ") {
		t.Errorf("without the passphrase: %d %s", code, errOut)
	}
}
