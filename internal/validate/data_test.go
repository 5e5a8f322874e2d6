package validate

import (
	"bufio"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/fhirjson"
)

const dataDir = "../../../shared/data"

// sharedData returns the path of a folder of the shared test data, or skips
// the test when the data is not there (it is never copied into the repo).
func sharedData(tb testing.TB, name string) string {
	tb.Helper()
	dir := filepath.Join(dataDir, name)
	if _, err := os.Stat(dir); err != nil {
		tb.Skipf("shared test data %s not present (%v); it lives beside the repository in ../shared/data", dir, err)
	}
	return dir
}

func parseFile(tb testing.TB, path string) *fhirjson.Value {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	v, err := fhirjson.Parse(data)
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return v
}

func readGzip(tb testing.TB, path string) []byte {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return data
}

// knownInvalidExamples are specification examples that are not valid R4,
// each with the issue that proves it (path and message fragment).
var knownInvalidExamples = map[string][]string{
	// R4 DeviceMetric.parent is Reference(Device); the example points at
	// a DeviceDefinition (an erratum of the 4.0.1 examples).
	"devicemetric-example.json": {`DeviceMetric.parent.reference: reference to DeviceDefinition is not allowed here: expected Device`},
	// The id has 67 characters; R4 ids have at most 64.
	"questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json": {`SearchParameter.id: invalid id "questionnaireresponse-extensions-QuestionnaireResponse-item-subject"`},
}

func TestSpecExamples(t *testing.T) {
	dir := sharedData(t, "r4-spec-examples")
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples in %s: %v", dir, err)
	}
	bad := 0
	for _, path := range files {
		name := filepath.Base(path)
		issues := Resource(parseFile(t, path))
		var errs []string
		for _, is := range issues {
			if is.Severity == Error {
				errs = append(errs, is.String())
			}
		}
		want, known := knownInvalidExamples[name]
		if !known {
			if len(errs) > 0 {
				bad++
				t.Errorf("%s: %s", name, strings.Join(errs, "\n\t"))
			}
			continue
		}
		got := strings.Join(errs, "\n")
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: known invalid for %q, but issues were:\n%s", name, w, got)
			}
		}
	}
	t.Logf("%d examples, %d with unexpected errors", len(files), bad)
}

// synthea returns the paths of the Synthea transaction bundles.
func synthea(tb testing.TB) []string {
	dir := sharedData(tb, "synthea-120-bundles")
	files, err := filepath.Glob(filepath.Join(dir, "*.json.gz"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no bundles in %s: %v", dir, err)
	}
	return files
}

func TestSynthea(t *testing.T) {
	files := synthea(t)
	if testing.Short() {
		files = files[:5]
	}
	opts := Options{AllowConditionalReferences: true}
	resources := 0
	for _, path := range files {
		v, err := fhirjson.Parse(readGzip(t, path))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if entries := v.Get("entry"); entries != nil {
			resources += len(entries.Items)
		}
		for _, is := range opts.Resource(v) {
			t.Errorf("%s: %s", filepath.Base(path), is)
		}
	}
	t.Logf("%d bundles, %d resources", len(files), resources)
	// Without the option the conditional references are rejected.
	v, err := fhirjson.Parse(readGzip(t, files[len(files)-1]))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, is := range Resource(v) {
		if strings.Contains(is.Message, "only allowed in a transaction") {
			found = true
		}
	}
	if !found {
		t.Errorf("conditional references in %s accepted without AllowConditionalReferences", files[len(files)-1])
	}
}

// The FHIR Bundles shipped with the SMART Health Cards and Links examples
// (fullUrls like "resource:0") must validate.
func TestSmartHealthBundles(t *testing.T) {
	var files []string
	for _, dir := range []string{"smart-health-links", "smart-health-cards"} {
		d := sharedData(t, dir)
		m, _ := filepath.Glob(filepath.Join(d, "*.json"))
		m2, _ := filepath.Glob(filepath.Join(d, "*", "*.json"))
		files = append(append(files, m...), m2...)
	}
	checked := 0
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		v, err := fhirjson.Parse(data)
		if err != nil || v.GetString("resourceType") == "" {
			continue // manifests, keys and other non-FHIR JSON
		}
		checked++
		for _, is := range Resource(v) {
			t.Errorf("%s: %s", path, is)
		}
	}
	if checked == 0 {
		t.Fatal("no FHIR resources found among the SMART examples")
	}
	t.Logf("%d FHIR files", checked)
}

// The NDJSON exports (one resource per line) validate; sample-bulk-10
// keeps conditional references, so they are allowed here.
func TestNDJSONExports(t *testing.T) {
	opts := Options{AllowConditionalReferences: true}
	n := 0
	for _, dir := range []string{"sample-bulk-10", "derived-ndjson-blaze-10"} {
		files, _ := filepath.Glob(filepath.Join(sharedData(t, dir), "*.ndjson"))
		for _, path := range files {
			if filepath.Base(path) == "log.ndjson" {
				continue // an export log, not FHIR
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(f)
			sc.Buffer(nil, 64<<20)
			for line := 1; sc.Scan(); line++ {
				v, err := fhirjson.Parse(sc.Bytes())
				if err != nil {
					t.Fatalf("%s:%d: %v", path, line, err)
				}
				n++
				for _, is := range opts.Resource(v) {
					t.Errorf("%s:%d: %s", path, line, is)
				}
			}
			f.Close()
			if err := sc.Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("%d resources", n)
}
