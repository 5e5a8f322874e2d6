package bulk_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/validate"
)

// inferno finds the Inferno reference server data (the US Core patients
// and Group 1a that the ONC Inferno bulk data test kit exports).
func inferno(t *testing.T) string {
	t.Helper()
	dir, _ := os.Getwd()
	for {
		p := filepath.Join(dir, "..", "shared", "data", "inferno-reference-server-data")
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("../shared/data/inferno-reference-server-data not found; skipping the Inferno checks")
		}
		dir = parent
	}
}

// TestInfernoBulkDataChecks runs, against phr, the checks of the ONC
// Inferno bulk-data test kit's v2.0.0 suite (Group, Patient and system
// export, and their NDJSON validation), on the data of the Inferno
// reference server: US Core patients 85 and 355 and Group 1a.
func TestInfernoBulkDataChecks(t *testing.T) {
	data := inferno(t)
	e := start(t, "sqlite", nil)
	for _, f := range []string{"uscore_bundle_patient_85.json", "uscore_bundle_patient_355.json"} {
		b, err := os.ReadFile(filepath.Join(data, f))
		if err != nil {
			t.Fatal(err)
		}
		loadSkippingInvalid(t, e, f, b)
	}
	g, err := os.ReadFile(filepath.Join(data, "uscore_group_1a.json"))
	if err != nil {
		t.Fatal(err)
	}
	if r := e.s.Do("PUT", "Group/1a", e.admin, g); r.Status >= 300 {
		t.Fatalf("load Group 1a: %d %s", r.Status, r.Body)
	}
	// Inferno's bulk data client asks for system/*.read (SMART v1).
	tok := e.s.Token("system/*.read", "")

	t.Run("CapabilityStatement declares the export operations", func(t *testing.T) {
		r := e.s.Do("GET", "metadata", "", nil)
		cs := r.JSON(t)
		if !strings.Contains(string(r.Body), "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data") {
			t.Fatal("instantiates lacks the bulk-data CapabilityStatement")
		}
		rest := cs["rest"].([]any)[0].(map[string]any)
		if !hasOp(rest["operation"], "export", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export") {
			t.Fatalf("system operations %v", rest["operation"])
		}
		for _, res := range rest["resource"].([]any) {
			rm := res.(map[string]any)
			switch rm["type"] {
			case "Patient":
				if !hasOp(rm["operation"], "export", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export") {
					t.Fatalf("Patient operations %v", rm["operation"])
				}
			case "Group":
				if !hasOp(rm["operation"], "export", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export") {
					t.Fatalf("Group operations %v", rm["operation"])
				}
				if !strings.Contains(mustJSON(rm["interaction"]), `"read"`) || !strings.Contains(mustJSON(rm["interaction"]), `"search-type"`) {
					t.Fatalf("Group interactions %v", rm["interaction"])
				}
			}
		}
	})

	for _, level := range []struct{ name, path string }{
		{"Group", "Group/1a/$export"},
		{"Patient", "Patient/$export"},
		{"System", "$export"},
	} {
		t.Run(level.name, func(t *testing.T) {
			t.Run("rejects $export request without authorization", func(t *testing.T) {
				wantError(t, e.s.Do("GET", level.path, "", nil, kickHeaders...), http.StatusUnauthorized, "")
			})
			t.Run("rejects $export with an invalid Accept header", func(t *testing.T) {
				wantError(t, e.s.Do("GET", level.path, tok, nil, "Accept", "application/fhir+xml", "Prefer", "respond-async"), 400, "")
			})
			t.Run("rejects $export with an invalid Prefer header", func(t *testing.T) {
				wantError(t, e.s.Do("GET", level.path, tok, nil, "Accept", "application/fhir+json", "Prefer", "return=representation"), 400, "")
			})
			var m *manifest
			t.Run("returns 202 Accepted and Content-Location, then 202/200 on status, and a complete manifest", func(t *testing.T) {
				status := e.kick(tok, level.path)
				r := e.s.Do("GET", status, tok, nil)
				if r.Status != 202 && r.Status != 200 {
					t.Fatalf("status %d", r.Status)
				}
				time.Sleep(120 * time.Millisecond)
				m = e.wait(tok, status)
				if len(m.Output) == 0 {
					t.Fatal("no output")
				}
				t.Logf("%s export: %v", level.name, counts(m))
				for _, it := range m.Output {
					if it.Type == "" || !strings.HasPrefix(it.URL, "http") {
						t.Fatalf("output item without type or absolute url: %+v", it)
					}
				}
				if m.TransactionTime == "" || !strings.HasPrefix(m.Request, "http") {
					t.Fatalf("transactionTime %q request %q", m.TransactionTime, m.Request)
				}
			})
			if m == nil {
				return
			}
			t.Run("NDJSON download requires an access token", func(t *testing.T) {
				r := e.s.Do("GET", m.Output[0].URL, "", nil)
				if r.Status != http.StatusUnauthorized {
					t.Fatalf("download without token: %d", r.Status)
				}
			})
			patients := map[string]bool{}
			t.Run("NDJSON files have the right Content-Type, resourceType and valid R4 resources", func(t *testing.T) {
				for _, it := range m.Output {
					r := e.s.Do("GET", it.URL, tok, nil)
					if r.Status != 200 || r.Header.Get("Content-Type") != "application/fhir+ndjson" {
						t.Fatalf("%s: %d %s", it.URL, r.Status, r.Header.Get("Content-Type"))
					}
					sc := bufio.NewScanner(bytes.NewReader(r.Body))
					sc.Buffer(nil, 32<<20)
					n := 0
					for sc.Scan() {
						n++
						v, err := fhirjson.Parse(sc.Bytes())
						if err != nil {
							t.Fatalf("%s line %d: %v", it.Type, n, err)
						}
						if got := v.GetString("resourceType"); got != it.Type {
							t.Fatalf("%s line %d has resourceType %s", it.Type, n, got)
						}
						for _, is := range (validate.Options{}).Resource(v) {
							if is.Severity == validate.Error {
								t.Errorf("%s/%s (line %d) is not valid R4: %s at %s", it.Type, v.GetString("id"), n, is.Message, is.Path)
							}
						}
						if it.Type == "Patient" {
							patients[v.GetString("id")] = true
						}
					}
					if n == 0 || n != it.Count {
						t.Fatalf("%s: %d lines, count %d", it.URL, n, it.Count)
					}
				}
			})
			t.Run("export has at least two patients", func(t *testing.T) {
				if len(patients) < 2 || !patients["85"] || !patients["355"] {
					t.Fatalf("patients %v", patients)
				}
			})
			for _, f := range []string{"application/fhir+ndjson", "application/ndjson", "ndjson"} {
				t.Run("accepts _outputFormat="+f, func(t *testing.T) {
					e.wait(tok, e.kick(tok, level.path+"?_type=Patient&_outputFormat="+url.QueryEscape(f)))
				})
			}
			t.Run("accepts _since and exports only later changes", func(t *testing.T) {
				since := time.Now().UTC()
				time.Sleep(10 * time.Millisecond)
				r := e.s.Do("GET", "Patient/85", e.admin, nil)
				p := r.JSON(t)
				p["gender"] = "female"
				if r := e.s.Do("PUT", "Patient/85", e.admin, p); r.Status != 200 {
					t.Fatalf("update: %d %s", r.Status, r.Body)
				}
				// Inferno sends _since form-encoded, the + of an offset as %2B.
				s := since.Add(-time.Millisecond).In(time.FixedZone("", 3600)).Format("2006-01-02T15:04:05.000-07:00")
				m := e.wait(tok, e.kick(tok, level.path+"?_since="+url.QueryEscape(s)))
				if ids := e.ids(tok, m); strings.Join(ids, ",") != "Patient/85" {
					t.Fatalf("_since %s exported %v", s, ids)
				}
			})
			t.Run("cancel: DELETE returns 202, then status is 404 with an OperationOutcome", func(t *testing.T) {
				status := e.kick(tok, level.path)
				if r := e.s.Do("DELETE", status, tok, nil); r.Status != http.StatusAccepted {
					t.Fatalf("DELETE: %d", r.Status)
				}
				wantError(t, e.s.Do("GET", status, tok, nil), http.StatusNotFound, "")
			})
		})
	}
}

func hasOp(ops any, name, def string) bool {
	list, _ := ops.([]any)
	for _, o := range list {
		m := o.(map[string]any)
		if m["name"] == name && m["definition"] == def {
			return true
		}
	}
	return false
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// loadSkippingInvalid posts a transaction Bundle; entries the server
// rejects as invalid R4 (the reference data has a few, e.g. a Period with
// "stop") are dropped and reported in the test log.
func loadSkippingInvalid(t *testing.T, e *env, name string, data []byte) {
	t.Helper()
	var b map[string]any
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatal(err)
	}
	for try := 0; try < 20; try++ {
		r := e.s.Do("POST", e.s.FHIR, e.admin, b)
		if r.Status == 200 {
			return
		}
		var oo struct {
			Issue []struct {
				Diagnostics string   `json:"diagnostics"`
				Expression  []string `json:"expression"`
			} `json:"issue"`
		}
		json.Unmarshal(r.Body, &oo)
		idx := -1
		for _, is := range oo.Issue {
			for _, x := range is.Expression {
				if n, ok := strings.CutPrefix(x, "Bundle.entry["); ok {
					fmt.Sscanf(n, "%d]", &idx)
				}
			}
		}
		if r.Status != 400 || idx < 0 {
			t.Fatalf("load %s: %d %.500s", name, r.Status, r.Body)
		}
		entries := b["entry"].([]any)
		t.Logf("%s: entry %d left out, the server rejects it: %s", name, idx, oo.Issue[0].Diagnostics)
		b["entry"] = append(entries[:idx:idx], entries[idx+1:]...)
	}
	t.Fatalf("load %s: too many invalid entries", name)
}
