package authserver_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/server/servertest"
)

var asyncHeaders = []string{"Accept", "application/fhir+json", "Prefer", "respond-async"}

// exportIDs runs a bulk export kick-off with tok and returns the status
// URL, the output file URLs and "Type/id" of every exported resource;
// kickStatus is the kick-off's status when it is refused (then the rest is
// empty).
func exportIDs(t *testing.T, s *servertest.Server, tok, method, path string, body any) (kickStatus int, status string, files, ids []string) {
	t.Helper()
	r := s.Do(method, path, tok, body, asyncHeaders...)
	if r.Status != http.StatusAccepted {
		t.Logf("%s %s refused: %d", method, path, r.Status)
		return r.Status, "", nil, nil
	}
	status = r.Header.Get("Content-Location")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st := s.Do("GET", status, tok, nil)
		if st.Status == 200 {
			var m struct {
				Output []struct {
					URL string `json:"url"`
				} `json:"output"`
			}
			if err := json.Unmarshal(st.Body, &m); err != nil {
				t.Fatalf("manifest: %v", err)
			}
			for _, o := range m.Output {
				files = append(files, o.URL)
				f := s.Do("GET", o.URL, tok, nil)
				if f.Status != 200 {
					t.Fatalf("download %s: %d", o.URL, f.Status)
				}
				sc := bufio.NewScanner(bytes.NewReader(f.Body))
				sc.Buffer(nil, 1<<20)
				for sc.Scan() {
					var res struct{ ResourceType, ID string }
					json.Unmarshal(sc.Bytes(), &res)
					ids = append(ids, res.ResourceType+"/"+res.ID)
				}
			}
			return 202, status, files, ids
		}
		if st.Status == http.StatusTooManyRequests {
			time.Sleep(time.Second)
			continue
		}
		if st.Status != http.StatusAccepted {
			t.Fatalf("export status: %d %s", st.Status, st.Body)
		}
		if time.Now().After(deadline) {
			t.Fatal("export did not finish in 2 minutes")
		}
		time.Sleep(600 * time.Millisecond)
	}
}

// TestExportConfinement: a patient token exports only its own record;
// another patient's data cannot be exported, nor another caller's export
// status or files read.
func TestExportConfinement(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	ann := create(t, s, "Patient", `{"resourceType":"Patient"}`)
	bob := create(t, s, "Patient", `{"resourceType":"Patient"}`)
	obs := func(p string) string {
		return create(t, s, "Observation", `{"resourceType":"Observation","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/`+p+`"}}`)
	}
	annObs, bobObs := obs(ann), obs(bob)
	group := create(t, s, "Group", `{"resourceType":"Group","type":"person","actual":true,"member":[{"entity":{"reference":"Patient/`+bob+`"}}]}`)
	annTok, bobTok := s.Token("patient/*.rs", ann), s.Token("patient/*.rs", bob)

	noBob := func(what string, ids []string) {
		t.Helper()
		t.Logf("%s: exported %d resources", what, len(ids))
		for _, id := range ids {
			if id == "Patient/"+bob || id == "Observation/"+bobObs {
				t.Errorf("%s: the patient token exported %s", what, id)
			}
		}
	}
	code, status, files, ids := exportIDs(t, s, annTok, "GET", "Patient/$export", nil)
	if code != 202 || !strings.Contains(strings.Join(ids, " "), "Observation/"+annObs) {
		t.Fatalf("own Patient/$export: %d %v", code, ids)
	}
	noBob("Patient/$export", ids)
	// Bob can read neither Ann's export status nor her files.
	if r := s.Do("GET", status, bobTok, nil); r.Status == 200 || r.Status == http.StatusAccepted {
		t.Errorf("another patient read the export status: %d", r.Status)
	}
	for _, f := range files {
		if r := s.Do("GET", f, bobTok, nil); r.Status == 200 {
			t.Errorf("another patient downloaded %s", f)
		}
		if r := s.Do("GET", f, "", nil); r.Status != http.StatusUnauthorized {
			t.Errorf("download without a token: %d", r.Status)
		}
	}
	if code, _, _, ids = exportIDs(t, s, annTok, "GET", "Group/"+group+"/$export", nil); code == 202 {
		noBob("Group/$export", ids)
	}
	param := map[string]any{"resourceType": "Parameters", "parameter": []any{map[string]any{"name": "patient", "valueReference": map[string]any{"reference": "Patient/" + bob}}}}
	if code, _, _, ids = exportIDs(t, s, annTok, "POST", "Patient/$export", param); code == 202 {
		noBob("Patient/$export patient=Bob", ids)
	}
	if code, _, _, ids = exportIDs(t, s, annTok, "GET", "$export", nil); code == 202 {
		noBob("system $export", ids)
	}
	// A token that may read only Patient cannot export Observations.
	if code, _, _, _ = exportIDs(t, s, s.Token("system/Patient.rs", ""), "GET", "$export?_type=Observation", nil); code != http.StatusForbidden {
		t.Errorf("export of a type beyond the token's scopes: %d", code)
	}
	// $phr-export of another patient's record is refused; one's own works.
	if r := s.Do("GET", "Patient/"+bob+"/$phr-export", annTok, nil); r.Status < 400 {
		t.Errorf("$phr-export of another patient: %d", r.Status)
	}
	if r := s.Do("GET", "Patient/"+ann+"/$phr-export", annTok, nil); r.Status != 200 || strings.Contains(string(r.Body), bobObs) {
		t.Errorf("own $phr-export: %d", r.Status)
	}
}
