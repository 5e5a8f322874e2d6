package shl_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/jwe"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/synthea"
	"github.com/phr-project/phr/internal/validate"
)

// TestSyntheaLinks shares real Synthea records (1 patient; PHR_SHL_PATIENTS=n
// for more): the emergency summary and the whole record are built, the
// summary validates against the R4 definitions, and the timings and sizes
// are logged.
func TestSyntheaLinks(t *testing.T) {
	dir := synthea.Require(t)
	n := 1
	if v, err := strconv.Atoi(os.Getenv("PHR_SHL_PATIENTS")); err == nil && v > 0 {
		n = v
	}
	files, err := synthea.Files(dir, n)
	if err != nil {
		t.Fatal(err)
	}
	s := servertest.Start(t, "sqlite")
	st, err := synthea.Load(t.Context(), s.App.Records, files)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded %d bundles, %d resources", st.Bundles, st.Resources)
	rows, err := s.App.Store.Query(t.Context(), `SELECT id FROM resource WHERE type = 'Patient' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var patients []string
	for rows.Next() {
		var id string
		rows.Scan(&id)
		patients = append(patients, id)
	}
	rows.Close()
	f := &fixture{Server: s, admin: s.AdminToken()}
	for _, pid := range patients {
		for _, kind := range []string{"summary", "record"} {
			start := time.Now()
			l := f.create(t, f.admin, map[string]any{"patient": pid, "content": []map[string]any{{"kind": kind}}})
			took := time.Since(start)
			r, m := f.manifest(t, l, map[string]any{"recipient": "synthea"})
			if r.Status != 200 {
				t.Fatalf("manifest: %d %s", r.Status, r.Body)
			}
			plain, _, err := jwe.Decrypt(m.Files[0].Embedded, l.key)
			if err != nil {
				t.Fatal(err)
			}
			v, err := fhirjson.Parse(plain)
			if err != nil {
				t.Fatal(err)
			}
			entries := len(v.Get("entry").Items)
			t.Logf("Patient/%s %s: %d resources, %d bytes JSON, %d bytes JWE, created in %s", pid, kind, entries, len(plain), len(m.Files[0].Embedded), took.Round(time.Millisecond))
			if kind != "summary" {
				continue
			}
			for _, is := range (validate.Options{}).Resource(v) {
				if is.Severity == validate.Error {
					t.Errorf("summary of Patient/%s: %s", pid, is)
				}
			}
			secs := v.Get("entry").Items[0].Get("resource").Get("section").Items
			if len(secs) != 4 || entries < 3 {
				t.Errorf("summary of Patient/%s: %d sections, %d entries", pid, len(secs), entries)
			}
		}
	}
}
