package importer_test

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/importer"
	"github.com/phr-project/phr/internal/shc/shctest"
)

// TestZipOfAnExport: a zip as an app exports it (Apple Health's has its
// clinical records as JSON files beside an export.xml) imports its FHIR
// JSON and its SMART Health Cards, and names the files it does not import.
func TestZipOfAnExport(t *testing.T) {
	issuer := shctest.NewIssuer(t)
	card := shctest.File(issuer.Card(t, "https://pharmacy.example", `{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"resource:0","resource":{"resourceType":"Patient","name":[{"family":"Zip"}],"birthDate":"1970-01-01"}}]}`))
	sum, issues, err := importZip(t, "export.zip", map[string]string{
		"apple_health_export/export.xml":                          `<?xml version="1.0"?><HealthData/>`,
		"apple_health_export/export_cda.xml":                      `<?xml version="1.0"?><ClinicalDocument/>`,
		"apple_health_export/clinical-records/Patient-1.json":     `{"resourceType":"Patient","id":"zp1"}`,
		"apple_health_export/clinical-records/Observation-1.json": `{"resourceType":"Observation","id":"zo1","status":"final","code":{"text":"w"},"subject":{"reference":"Patient/zp1"}}`,
		"apple_health_export/vaccine.smart-health-card":           card,
		"__MACOSX/._export.xml":                                   "resource fork",
	})
	if err != nil || sum.Created != 3 || sum.Rejected != 0 {
		t.Errorf("zip: %+v %v %v", sum, err, issues)
	}
	var named bool
	for _, is := range issues {
		if strings.Contains(is.Diagnostics, "not imported") {
			named = strings.Contains(is.Diagnostics, "apple_health_export/export.xml, apple_health_export/export_cda.xml") && !strings.Contains(is.Diagnostics, "MACOSX")
		}
	}
	if !named {
		t.Errorf("the files not imported are not named (or __MACOSX is): %v", issues)
	}
}

// TestZipLongFirstLine: a .phr or .json member whose first line is longer
// than what is peeked of it (a Synthea Provenance naming every resource of
// a patient) is NDJSON, and a one-line Bundle that long is a Bundle.
func TestZipLongFirstLine(t *testing.T) {
	var targets []string
	for i := range 3000 {
		targets = append(targets, fmt.Sprintf(`{"reference":"Observation/o-%04d"}`, i))
	}
	prov := func(id string) string {
		return `{"resourceType":"Provenance","id":"` + id + `","target":[` + strings.Join(targets, ",") + `],"recorded":"2026-01-01T00:00:00Z","agent":[{"who":{"display":"EHR"}}]}`
	}
	sum, issues, err := importZip(t, "record.zip", map[string]string{
		"record/record.phr":  prov("pa") + "\n" + prov("pb") + "\n",
		"record/bundle.json": `{"resourceType":"Bundle","type":"collection","entry":[{"resource":` + prov("pc") + `},{"resource":` + prov("pd") + `}]}`,
	})
	if err != nil || sum.Created != 4 || sum.Rejected != 0 {
		t.Errorf("zip: %+v %v %v", sum, err, issues)
	}
}

// importZip imports a zip of files (name: content) into a new SQLite
// store, as source name, and returns the summary and the issues.
func importZip(t *testing.T, name string, files map[string]string) (importer.Summary, []fhir.Issue, error) {
	t.Helper()
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	for n, body := range files {
		w, err := zw.Create(n)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(body))
	}
	zw.Close()
	app := openApp(t, "sqlite")
	imp := importer.New(app.Store, app.Records)
	ctx := access.With(context.Background(), access.System{Name: "test"})
	var issues []fhir.Issue
	run, err := imp.Begin(ctx, importer.Options{Source: name, Report: func(is fhir.Issue) { issues = append(issues, is) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Zip(bytes.NewReader(zb.Bytes()), int64(zb.Len()), name, ""); err != nil {
		t.Fatal(err)
	}
	sum, err := run.Finish("done")
	return sum, issues, err
}
