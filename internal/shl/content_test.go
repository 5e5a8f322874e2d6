package shl_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/jwe"
	"github.com/phr-project/phr/internal/store/storetest"
)

// TestContent covers the content selections: date ranges, types limited
// by the token's scopes, and uploaded .phr / .sphr files.
func TestContent(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			f := start(t, d)
			open := func(l *createdLink) [][]string {
				t.Helper()
				r, m := f.manifest(t, l, map[string]any{"recipient": "test"})
				if r.Status != 200 {
					t.Fatalf("manifest: %d %s", r.Status, r.Body)
				}
				var out [][]string
				for _, mf := range m.Files {
					_, _, ids := decrypt(t, l, mf.Embedded)
					out = append(out, ids)
				}
				return out
			}
			l := f.create(t, f.tokA, map[string]any{"content": []map[string]any{{"from": "2021", "to": "2023-06-30"}}})
			if got, want := open(l)[0], []string{"Patient/pa", "Immunization/pa-imm", "MedicationRequest/pa-med"}; !slices.Equal(got, want) {
				t.Fatalf("2021..2023-06-30 holds %v, want %v", got, want)
			}
			if r := f.Do("POST", "/shl", f.tokA, map[string]any{"content": []map[string]any{{"from": "2024", "to": "2020"}}}); r.Status != 400 || !strings.Contains(string(r.Body), "content[0]") {
				t.Fatalf("reversed range: %d %s", r.Status, r.Body)
			}
			if r := f.Do("POST", "/shl", f.tokA, map[string]any{"content": []map[string]any{{"from": "yesterday"}}}); r.Status != 400 || !strings.Contains(string(r.Body), "yesterday") {
				t.Fatalf("bad date: %d %s", r.Status, r.Body)
			}
			if r := f.Do("POST", "/shl", f.tokA, map[string]any{"content": []map[string]any{{"_type": []string{"Practitioner"}}}}); r.Status != 400 {
				t.Fatalf("type outside the compartment: %d %s", r.Status, r.Body)
			}

			// A token limited to allergies shares only those, and cannot ask for more.
			narrow := f.Token("patient/Patient.rs patient/AllergyIntolerance.rs", "pa")
			l = f.create(t, narrow, map[string]any{})
			if got, want := open(l)[0], []string{"Patient/pa", "AllergyIntolerance/pa-alg"}; !slices.Equal(got, want) {
				t.Fatalf("narrow token's record %v, want %v", got, want)
			}
			if r := f.Do("POST", "/shl", narrow, map[string]any{"content": []map[string]any{{"_type": []string{"Condition"}}}}); r.Status != 403 {
				t.Fatalf("narrow token asking for conditions: %d %s", r.Status, r.Body)
			}
			if r := f.Do("POST", "/shl", f.Token("patient/Observation.rs", "pa"), map[string]any{}); r.Status != 403 {
				t.Fatalf("token without Patient read: %d %s", r.Status, r.Body)
			}

			// Referenced reference data comes along; other patients never.
			for path, body := range map[string]string{
				"Medication/m1":           `{"resourceType":"Medication","id":"m1","code":{"text":"Amoxicillin 500 mg"}}`,
				"Group/g1":                `{"resourceType":"Group","id":"g1","type":"person","actual":true,"member":[{"entity":{"reference":"Patient/pb"}}]}`,
				"MedicationRequest/pa-m2": `{"resourceType":"MedicationRequest","id":"pa-m2","status":"active","intent":"order","subject":{"reference":"Patient/pa"},"medicationReference":{"reference":"Medication/m1"},"note":[{"text":"see Group/g1"}],"supportingInformation":[{"reference":"Group/g1"},{"reference":"Patient/pb"}]}`,
			} {
				if r := f.Do("PUT", path, f.admin, body); r.Status != 201 {
					t.Fatalf("PUT %s: %d %s", path, r.Status, r.Body)
				}
			}
			l = f.create(t, f.tokA, map[string]any{"content": []map[string]any{{"kind": "summary"}, {"_type": []string{"MedicationRequest"}}}})
			for i, ids := range open(l) {
				if !slices.Contains(ids, "Medication/m1") || slices.Contains(ids, "Group/g1") || slices.Contains(ids, "Patient/pb") {
					t.Fatalf("file %d holds %v", i, ids)
				}
			}

			// Uploaded files.
			phr := shlData(t, "../phr-ig-examples/JohnDoe.phr")
			l = f.create(t, f.tokA, map[string]any{"content": []map[string]any{{"kind": "file", "name": "JohnDoe.phr", "data": phr}}})
			lines := 0 // resources: the non-blank lines
			for _, line := range bytes.Split(phr, []byte("\n")) {
				if len(bytes.TrimSpace(line)) > 0 {
					lines++
				}
			}
			if got := open(l)[0]; len(got) != lines || !strings.HasPrefix(got[0], "Composition/") {
				t.Fatalf(".phr bundle holds %d resources (%v), the file %d lines", len(got), got[:min(3, len(got))], lines)
			}
			sphr := shlData(t, "../phr-ig-examples/WilliamSim.sphr")
			l = f.create(t, f.tokA, map[string]any{"content": []map[string]any{{"kind": "file", "name": "WilliamSim.sphr", "data": sphr}}})
			_, m := f.manifest(t, l, map[string]any{"recipient": "test"})
			plain, h, err := jwe.Decrypt(m.Files[0].Embedded, l.key)
			if err != nil || !bytes.Equal(plain, sphr) || h.Cty != "application/zip" || m.Files[0].ContentType != "application/zip" || m.Files[0].FHIRVersion != "" {
				t.Fatalf(".sphr: %v, %d bytes, header %+v, file %+v", err, len(plain), h, m.Files[0])
			}
			bad := []byte("{\"resourceType\":\"Patient\"}\nnot json\n")
			r := f.Do("POST", "/shl", f.tokA, map[string]any{"content": []map[string]any{{"kind": "file", "name": "x.phr", "data": base64.StdEncoding.EncodeToString(bad)}}})
			var oo struct {
				Issue []struct {
					Diagnostics string   `json:"diagnostics"`
					Expression  []string `json:"expression"`
				} `json:"issue"`
			}
			json.Unmarshal(r.Body, &oo)
			if r.Status != 400 || len(oo.Issue) != 1 || !strings.Contains(oo.Issue[0].Diagnostics, "line 2") || !slices.Contains(oo.Issue[0].Expression, "content[0]") {
				t.Fatalf("bad .phr: %d %s", r.Status, r.Body)
			}
		})
	}
}
