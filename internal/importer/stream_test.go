package importer_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/importer"
)

// writeBundle writes a transaction Bundle of n Observations of about 8 KB
// each (narrative included) for one patient, the Patient entry last, so
// every Observation points forward at it by urn:uuid.
func writeBundle(w io.Writer, prefix string, n int) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	div := `<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>` + strings.Repeat("Body weight measured at the clinic. ", 220) + `</p></div>`
	bw.WriteString(`{"resourceType":"Bundle","type":"transaction","entry":[` + "\n")
	for i := range n {
		fmt.Fprintf(bw, `{"fullUrl":"urn:uuid:%s-%d","resource":{"resourceType":"Observation","id":"%s-o%d","text":{"status":"generated","div":"%s"},"status":"final","code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},"subject":{"reference":"urn:uuid:%s-patient"},"effectiveDateTime":"2020-01-01T00:00:00Z","valueQuantity":{"value":%d.5,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"}},"request":{"method":"POST","url":"Observation"}},`+"\n", prefix, i, prefix, i, div, prefix, 50+i%50)
	}
	fmt.Fprintf(bw, `{"fullUrl":"urn:uuid:%s-patient","resource":{"resourceType":"Patient","id":"%s-p","name":[{"family":"Stream"}]},"request":{"method":"POST","url":"Patient"}}]}`+"\n", prefix, prefix)
	return bw.Flush()
}

// importStreamed imports a generated Bundle of n entries through a pipe
// (the importer never sees more than what it reads) and returns the live
// Go heap before and its peak meanwhile, and the bytes read. The live
// heap is what the last garbage collection found reachable: unlike
// HeapInuse it does not count garbage not yet collected, so the figure
// does not depend on how far the collector lags behind on a busy machine,
// while a Bundle held whole would be reachable and counted.
func importStreamed(t *testing.T, imp *importer.Importer, prefix string, n int) (base, peak uint64, sum importer.Summary) {
	t.Helper()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeBundle(pw, prefix, n)) }()
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	runtime.GC()
	metrics.Read(live)
	base = live[0].Value.Uint64()
	var top atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > top.Load() {
				top.Store(v)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	sum, issues := importReader(t, imp, "stream-"+prefix, "bundle", pr)
	close(stop)
	<-sampled
	for _, is := range issues {
		if is.Severity == "error" || strings.Contains(is.Diagnostics, "names no entry") {
			t.Errorf("%s: %s", prefix, is.Diagnostics)
			break
		}
	}
	if sum.Created != n+1 {
		t.Fatalf("%s: %+v", prefix, sum)
	}
	return base, top.Load(), sum
}

// TestBundleStreamMemory: a Bundle is read as a stream. Importing one 4
// times as large (about 64 MB against 16 MB) raises the peak Go heap by
// far less than the difference in size, and the import's heap stays under
// a bound that does not depend on the size; read whole, the Bundle would
// need several times its size.
func TestBundleStreamMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("imports 10,000 resources")
	}
	app := openApp(t, "sqlite")
	imp := importer.New(app.Store, app.Records)
	// Chunks of 2 MiB of input (New gives SQLite 4 MiB): the small
	// Bundle then spans eight chunks, enough for its peak to be the
	// steady state of two chunks in flight, as the large one's is.
	imp.ChunkSize, imp.ChunkBytes = 1000, 2<<20
	_, small, s1 := importStreamed(t, imp, "small", 2000)
	base, large, s2 := importStreamed(t, imp, "large", 8000)
	mib := func(n uint64) float64 { return float64(n) / (1 << 20) }
	t.Logf("peak live heap: %.1f MiB for %.1f MiB of Bundle, %.1f MiB for %.1f MiB (%.1f MiB before it)", mib(small), mib(uint64(s1.Bytes)), mib(large), mib(uint64(s2.Bytes)), mib(base))
	if s2.Bytes < 60<<20 {
		t.Fatalf("the large Bundle has only %d bytes", s2.Bytes)
	}
	if grow := int64(large) - int64(small); grow > 24<<20 {
		t.Errorf("the peak heap grew by %.1f MiB for %.1f MiB more input: not streamed", mib(uint64(grow)), mib(uint64(s2.Bytes-s1.Bytes)))
	}
	// The bound is the chunks in flight (two of at most 2 MiB of input, each
	// entry as text, tree and prepared version).
	if large-base > 128<<20 {
		t.Errorf("the import took %.1f MiB of heap for a %.1f MiB Bundle", mib(large-base), mib(uint64(s2.Bytes)))
	}
}

// TestStreamedBundleErrors: a broken entry of a streamed Bundle is
// rejected with its line and the rest imported; a Bundle cut short keeps
// what came before the cut and reports where it broke.
func TestStreamedBundleErrors(t *testing.T) {
	app := openApp(t, "sqlite")
	imp := importer.New(app.Store, app.Records)
	pat := func(id string) string {
		return `{"fullUrl":"urn:uuid:` + id + `","resource":{"resourceType":"Patient","id":"` + id + `","name":[{"family":"X"}]}}`
	}
	broken := "{\"resourceType\":\"Bundle\",\"type\":\"collection\",\n\"entry\":[\n" + pat("s1") + ",\n" +
		`{"resource":{"resourceType":"Patient","id":"s2",}}` + ",\n" + pat("s3") + "\n]}\n"
	sum, issues := importReader(t, imp, "s", "bundle", strings.NewReader(broken))
	if sum.Created != 2 || sum.Rejected != 1 {
		t.Errorf("broken entry: %+v %v", sum, issues)
	}
	if len(issues) == 0 || !strings.Contains(issues[0].Diagnostics, "line 4") || !strings.Contains(issues[0].Diagnostics, "Bundle.entry[1]") && !strings.Contains(strings.Join(issues[0].Expression, ""), "Bundle.entry[1]") {
		t.Errorf("the broken entry is not reported at line 4: %+v", issues)
	}
	cut := "{\"resourceType\":\"Bundle\",\"type\":\"collection\",\n\"entry\":[\n" + pat("c1") + ",\n" + pat("c2") + ",\n" + `{"resource":{"resourceType":"Pat`
	sum, issues = importReader(t, imp, "s", "bundle", strings.NewReader(cut))
	if sum.Created != 2 || sum.Rejected != 1 {
		t.Errorf("cut Bundle: %+v %v", sum, issues)
	}
	if len(issues) == 0 || !strings.Contains(issues[len(issues)-1].Diagnostics, "does not end") {
		t.Errorf("the cut is not reported: %+v", issues)
	}
}

// TestBundleEntryInReports checks that a problem of a Bundle entry names
// the entry as well as the line: a Bundle sent on one line, as servers
// send them, has every entry on line 1. An entry that waits for a later
// one (its reference points forward) keeps its index, and so does an
// entry of a Bundle on one line of an NDJSON file.
func TestBundleEntryInReports(t *testing.T) {
	app := openApp(t, "sqlite")
	imp := importer.New(app.Store, app.Records)
	// Chunks of two entries: entry 2 names entry 4, of a later chunk, and
	// waits for the end of the Bundle.
	imp.ChunkSize = 2
	entries := `{"fullUrl":"urn:uuid:e0","resource":{"resourceType":"Patient","id":"e0"}},` +
		`{"fullUrl":"urn:uuid:e1","resource":{"resourceType":"Patient","id":"e1","gender":"bogus"}},` +
		`{"fullUrl":"urn:uuid:e2","resource":{"resourceType":"Observation","id":"e2","status":"final","code":{"text":"x"},"subject":{"reference":"urn:uuid:e4"},"valueQuantity":{"value":"high"}}},` +
		`"not an entry",` +
		`{"fullUrl":"urn:uuid:e4","resource":{"resourceType":"Patient","id":"e4"}}`
	bundle := `{"resourceType":"Bundle","type":"collection","entry":[` + entries + `]}`
	want := map[string]string{
		"Patient.gender": "line 1, Bundle.entry[1]: ",
		"Observation.value.ofType(Quantity).value": "line 1, Bundle.entry[2]: ",
		"Bundle.entry[3]":                          "line 1, Bundle.entry[3]: ",
	}
	check := func(name string, issues []fhir.Issue, line string) {
		t.Helper()
		found := map[string]bool{}
		for _, is := range issues {
			for _, ex := range is.Expression {
				if w, ok := want[ex]; ok {
					found[ex] = true
					if w = strings.Replace(w, "line 1", line, 1); !strings.Contains(is.Diagnostics, w) {
						t.Errorf("%s: the issue at %s says %q, want it to name %q", name, ex, is.Diagnostics, w)
					}
				}
			}
		}
		for ex := range want {
			if !found[ex] {
				t.Errorf("%s: no issue at %s: %+v", name, ex, issues)
			}
		}
	}
	sum, issues := importReader(t, imp, "one-line", "bundle", strings.NewReader(bundle))
	if sum.Created != 2 || sum.Rejected != 3 {
		t.Errorf("one-line Bundle: %+v %+v", sum, issues)
	}
	check("one-line Bundle", issues, "line 1")
	ndjson := `{"resourceType":"Patient","id":"n0"}` + "\n" + bundle + "\n"
	sum, issues = importReader(t, imp, "ndjson", "ndjson", strings.NewReader(ndjson))
	// (The Bundle's two good entries are what the other source stored
	// under their ids: the same resources.)
	if sum.Created != 1 || sum.Unchanged != 2 || sum.Rejected != 3 {
		t.Errorf("Bundle in NDJSON: %+v %+v", sum, issues)
	}
	check("Bundle in NDJSON", issues, "line 2")
	for _, is := range issues {
		if strings.Contains(is.Diagnostics, "line 1") {
			t.Errorf("an issue of the NDJSON line 1, which is no Bundle: %+v", is)
		}
	}
}

// TestByteOrderMarks: NDJSON written by Windows tools starts with a UTF-8
// byte order mark and ends lines with CRLF; files joined into one stream
// (phr import sends a directory that way) bring a mark in the middle. A
// Bundle may start with one too.
func TestByteOrderMarks(t *testing.T) {
	app := openApp(t, "sqlite")
	imp := importer.New(app.Store, app.Records)
	bom := "\xef\xbb\xbf"
	ndjson := bom + `{"resourceType":"Patient","id":"b1"}` + "\r\n" + `{"resourceType":"Patient","id":"b2"}` + "\r\n" +
		bom + `{"resourceType":"Patient","id":"b3"}` + "\r\n"
	sum, issues := importReader(t, imp, "bom", "ndjson", strings.NewReader(ndjson))
	if sum.Created != 3 || sum.Rejected != 0 {
		t.Errorf("NDJSON with byte order marks: %+v %v", sum, issues)
	}
	// A file named .json whose first line is a resource: NDJSON.
	ctx := access.With(context.Background(), access.System{Name: "test"})
	run, err := imp.Begin(ctx, importer.Options{Source: "bom"})
	if err != nil {
		t.Fatal(err)
	}
	if err := run.File(strings.NewReader(bom+`{"resourceType":"Patient","id":"b5"}`+"\r\n"+`{"resourceType":"Patient","id":"b6"}`+"\r\n"), "c.json", -1, ""); err != nil {
		t.Fatal(err)
	}
	if sum, err := run.Finish("done"); err != nil || sum.Created != 2 || sum.Rejected != 0 {
		t.Errorf(".json NDJSON with a byte order mark: %+v %v", sum, err)
	}
	bundle := bom + `{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","id":"b4"}}]}`
	sum, issues = importReader(t, imp, "bom", "bundle", strings.NewReader(bundle))
	if sum.Created != 1 || sum.Rejected != 0 {
		t.Errorf("Bundle with a byte order mark: %+v %v", sum, issues)
	}
}

// TestUTF16 imports files that Windows PowerShell 5 writes: UTF-16 with
// a byte order mark (little-endian, or big-endian), as NDJSON, as a
// Bundle and as a .json file of NDJSON lines, with a warning.
func TestUTF16(t *testing.T) {
	app := openApp(t, "sqlite")
	imp := importer.New(app.Store, app.Records)
	enc := func(s string, big bool) string {
		var b []byte
		if big {
			b = []byte{0xfe, 0xff}
		} else {
			b = []byte{0xff, 0xfe}
		}
		for _, u := range utf16.Encode([]rune(s)) {
			if big {
				b = append(b, byte(u>>8), byte(u))
			} else {
				b = append(b, byte(u), byte(u>>8))
			}
		}
		return string(b)
	}
	ndjson := `{"resourceType":"Patient","id":"w1","name":[{"family":"Müller 😀"}]}` + "\r\n" + `{"resourceType":"Patient","id":"w2"}` + "\r\n"
	sum, issues := importReader(t, imp, "win", "ndjson", strings.NewReader(enc(ndjson, false)))
	if sum.Created != 2 || sum.Rejected != 0 || len(issues) != 1 || !strings.Contains(issues[0].Diagnostics, "the file is UTF-16 (little-endian)") {
		t.Errorf("UTF-16 NDJSON: %+v %v", sum, issues)
	}
	ctx := access.With(context.Background(), access.System{Name: "test"})
	res, err := app.Records.Read(ctx, "Patient", "w1")
	if err != nil || !strings.Contains(string(res.JSON), `"Müller 😀"`) {
		t.Errorf("the name is not read back as written: %v %s", err, res.JSON)
	}
	bundle := `{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Patient","id":"w3"}}]}`
	sum, issues = importReader(t, imp, "win", "bundle", strings.NewReader(enc(bundle, true)))
	if sum.Created != 1 || sum.Rejected != 0 || len(issues) != 1 || !strings.Contains(issues[0].Diagnostics, "big-endian") {
		t.Errorf("UTF-16 Bundle: %+v %v", sum, issues)
	}
	run, err := imp.Begin(ctx, importer.Options{Source: "win"})
	if err != nil {
		t.Fatal(err)
	}
	if err := run.File(strings.NewReader(enc(strings.ReplaceAll(ndjson, "w", "x"), false)), "c.json", -1, ""); err != nil {
		t.Fatal(err)
	}
	if sum, err := run.Finish("done"); err != nil || sum.Created != 2 || sum.Rejected != 0 {
		t.Errorf(".json NDJSON in UTF-16: %+v %v", sum, err)
	}
}

// TestJSONArrayOfResources: a JSON array of resources is not FHIR, but
// some tools write one; its elements are imported as the entries of a
// collection Bundle, with a warning, and a bad one is named by line and
// index.
func TestJSONArrayOfResources(t *testing.T) {
	app := openApp(t, "sqlite")
	imp := importer.New(app.Store, app.Records)
	array := "[\n" + `{"resourceType":"Patient","id":"ar1"},` + "\n" + `{"resourceType":"Patient","id":"ar2"},` + "\n" + `{"resourceType":"Patient","id":"ar3","gender":"bogus"}` + "\n]\n"
	sum, issues := importReader(t, imp, "arr", "bundle", strings.NewReader(array))
	if sum.Created != 2 || sum.Rejected != 1 {
		t.Errorf("array: %+v %v", sum, issues)
	}
	var warned, named bool
	for _, is := range issues {
		warned = warned || strings.Contains(is.Diagnostics, "a JSON array, not a Bundle")
		named = named || strings.Contains(is.Diagnostics, "line 4, Bundle.entry[2]: ") && strings.Join(is.Expression, "") == "Patient.gender"
	}
	if !warned || !named {
		t.Errorf("issues (warned %v, bad element named %v): %v", warned, named, issues)
	}
	// The same array on line 2 of NDJSON.
	ndjson := `{"resourceType":"Patient","id":"nd1"}` + "\n" + strings.ReplaceAll(strings.ReplaceAll(array, "ar", "na"), "\n", "") + "\n"
	sum, issues = importReader(t, imp, "arr-nd", "ndjson", strings.NewReader(ndjson))
	if sum.Created != 3 || sum.Rejected != 1 {
		t.Errorf("array in NDJSON: %+v %v", sum, issues)
	}
	named = false
	for _, is := range issues {
		named = named || strings.Contains(is.Diagnostics, "line 2, Bundle.entry[2]: ")
	}
	if !named {
		t.Errorf("array in NDJSON: the bad element is not named: %v", issues)
	}
	// A Bundle's entry array alone (as the SMART Health Link examples of
	// insurance cards have it): its elements are the entries, and their
	// fullUrls resolve the references.
	entries := `[{"fullUrl":"resource:0","resource":{"resourceType":"Patient","name":[{"family":"Entry"}]}},` +
		`{"fullUrl":"resource:1","resource":{"resourceType":"Coverage","status":"active","beneficiary":{"reference":"resource:0"},"payor":[{"reference":"resource:0"}]}}]`
	sum, issues = importReader(t, imp, "arr-entries", "bundle", strings.NewReader(entries))
	if sum.Created != 2 || sum.Rejected != 0 {
		t.Fatalf("entry array: %+v %v", sum, issues)
	}
	var resolved int
	if err := app.Store.QueryRow(context.Background(), `SELECT COUNT(*) FROM idx_ref x JOIN resource s ON s.rid = x.rid
		JOIN resource r ON r.type = x.target_type AND r.id = x.target_id WHERE s.type = 'Coverage' AND r.type = 'Patient'`).Scan(&resolved); err != nil || resolved == 0 {
		t.Errorf("the Coverage's references do not name the stored Patient: %d %v", resolved, err)
	}
}

// TestNotJSON: an empty JSON file imports nothing, with a warning that
// says so (not a rejected line); an XML file is rejected with a message
// that names XML, and so are the link and the encrypted file a SMART
// Health Link gives, each with the way to open it.
func TestNotJSON(t *testing.T) {
	app := openApp(t, "sqlite")
	imp := importer.New(app.Store, app.Records)
	sum, issues := importReader(t, imp, "x", "bundle", strings.NewReader(" \r\n"))
	if sum.Resources != 0 || sum.Rejected != 0 || len(issues) != 1 || !strings.Contains(issues[0].Diagnostics, "the file is empty") {
		t.Errorf("empty file: %+v %v", sum, issues)
	}
	sum, issues = importReader(t, imp, "x", "bundle", strings.NewReader(`<?xml version="1.0"?><Patient xmlns="http://hl7.org/fhir"><id value="x"/></Patient>`))
	if sum.Rejected != 1 || len(issues) != 1 || !strings.Contains(issues[0].Diagnostics, "looks like XML; FHIR XML is not read") {
		t.Errorf("XML file: %+v %v", sum, issues)
	}
	// What a SMART Health Link gives: the link (here inside a viewer's
	// URL) and its encrypted files. Each is named, with the way to open it.
	jwe := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"dir","enc":"A256GCM","kid":"k"}`)) + "..aXY.Y2lwaGVydGV4dA.dGFn"
	for _, c := range []struct{ in, want string }{
		{"https://viewer.example/shlink.html#shlink:/eyJ1cmwiOiJodHRwczovL2V4YW1wbGUifQ\n", "holds a SMART Health Link; open it with phr shl fetch"},
		{jwe + "\n", "the file is encrypted (a JWE"},
	} {
		sum, issues = importReader(t, imp, "x", "bundle", strings.NewReader(c.in))
		if sum.Rejected != 1 || len(issues) != 1 || !strings.Contains(issues[0].Diagnostics, c.want) {
			t.Errorf("%.30s: %+v %v", c.in, sum, issues)
		}
	}
}
