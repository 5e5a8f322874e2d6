package api_test

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// genuinelyInvalid are R4 specification examples that break R4 itself
// (the validator's tests prove each reason).
var genuinelyInvalid = map[string]string{
	"devicemetric-example.json": "DeviceMetric.parent points at a DeviceDefinition; R4 allows only DeviceComponent",
	"questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json": "its id has 67 characters; R4 ids have at most 64",
}

// TestSpecExamplesRoundTrip stores every R4 specification example over
// HTTP and reads it back: equal to what was sent apart from meta.
func TestSpecExamplesRoundTrip(t *testing.T) {
	files, _ := filepath.Glob("../../../shared/data/r4-spec-examples/*.json")
	if len(files) == 0 {
		t.Skip("../shared/data/r4-spec-examples not found; skipping")
	}
	sort.Strings(files)
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			s := servertest.Start(t, d)
			tok := s.AdminToken()
			rejected := map[string]string{}
			stored := 0
			for _, f := range files {
				body, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				sent, err := fhirjson.Parse(body)
				if err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				typ, id := sent.GetString("resourceType"), sent.GetString("id")
				var r *servertest.Response
				if id != "" {
					r = s.Do("PUT", typ+"/"+id, tok, body)
				} else {
					r = s.Do("POST", typ, tok, body)
				}
				name := filepath.Base(f)
				if r.Status >= 300 {
					rejected[name] = string(r.Body)
					continue
				}
				if id == "" {
					created, _ := fhirjson.Parse(r.Body)
					id = created.GetString("id")
				}
				back := s.Do("GET", typ+"/"+id, tok, nil, "Accept", "application/fhir+json")
				if back.Status != 200 {
					t.Fatalf("%s: read back %d", name, back.Status)
				}
				got, err := fhirjson.Parse(back.Body)
				if err != nil {
					t.Fatal(err)
				}
				stripMeta(sent)
				stripMeta(got)
				if sent.GetString("id") == "" {
					got.Delete("id")
				}
				if !fhirjson.Equal(sent, got) {
					t.Errorf("%s: read back differs\nsent %s\ngot  %s", name, sent.Marshal(), got.Marshal())
				}
				stored++
			}
			for name, why := range rejected {
				if _, known := genuinelyInvalid[name]; !known {
					t.Errorf("%s rejected: %s", name, why)
				}
			}
			for name := range genuinelyInvalid {
				if _, ok := rejected[name]; !ok {
					t.Errorf("%s was accepted but is listed as invalid", name)
				}
			}
			t.Logf("%d examples stored and read back equal; %d rejected as genuinely invalid", stored, len(rejected))
		})
	}
}

// stripMeta removes what the server sets (versionId, lastUpdated) and
// drops meta when nothing else is left.
func stripMeta(v *fhirjson.Value) {
	m := v.Get("meta")
	if m == nil {
		return
	}
	m.Delete("versionId")
	m.Delete("lastUpdated")
	if len(m.Fields) == 0 {
		v.Delete("meta")
	}
}
