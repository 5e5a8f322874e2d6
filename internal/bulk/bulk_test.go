package bulk_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/cid"
	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// env is a running server with helpers for the export flow.
type env struct {
	t     *testing.T
	s     *servertest.Server
	admin string
}

func start(t *testing.T, dialect string, configure func(*server.Config)) *env {
	s := servertest.Start(t, dialect, servertest.Options{Configure: func(c *server.Config) {
		c.ExportRate = 100 * time.Millisecond
		c.JobLease = 3 * time.Second
		if configure != nil {
			configure(c)
		}
	}})
	return &env{t: t, s: s, admin: s.AdminToken()}
}

func (e *env) put(typ, id string, body map[string]any) {
	e.t.Helper()
	body["resourceType"], body["id"] = typ, id
	r := e.s.Do("PUT", typ+"/"+id, e.admin, body)
	if r.Status != 200 && r.Status != 201 {
		e.t.Fatalf("PUT %s/%s: %d %s", typ, id, r.Status, r.Body)
	}
}

// deletedSince runs a Patient-level export with _since and returns the
// "Type/id" its deleted[] files list, sorted.
func (e *env) deletedSince(tok string, since time.Time) []string {
	e.t.Helper()
	q := url.Values{"_since": {since.Format(time.RFC3339Nano)}}
	m := e.wait(tok, e.kick(tok, "Patient/$export?"+q.Encode()))
	var out []string
	for _, it := range m.Deleted {
		for _, b := range e.download(tok, it) {
			out = append(out, b["entry"].([]any)[0].(map[string]any)["request"].(map[string]any)["url"].(string))
		}
	}
	slices.Sort(out)
	return out
}

func (e *env) del(typ, id string) {
	e.t.Helper()
	if r := e.s.Do("DELETE", typ+"/"+id, e.admin, nil); r.Status >= 300 {
		e.t.Fatalf("DELETE %s/%s: %d %s", typ, id, r.Status, r.Body)
	}
}

// seed stores three patients with observations, an encounter referencing
// an organization, an unreferenced practitioner and a group of p1 and p2.
func (e *env) seed() {
	for _, p := range []string{"p1", "p2", "p3"} {
		e.put("Patient", p, map[string]any{"name": []any{map[string]any{"family": "Test-" + p}}, "gender": "female"})
		for i := 1; i <= 3; i++ {
			e.put("Observation", fmt.Sprintf("%s-o%d", p, i), map[string]any{"status": "final",
				"code":          map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "8302-2"}}, "text": "height"},
				"subject":       map[string]any{"reference": "Patient/" + p},
				"category":      []any{map[string]any{"coding": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}}}},
				"valueQuantity": map[string]any{"value": 170.5 + float64(i), "unit": "cm"}})
		}
	}
	e.put("Organization", "org1", map[string]any{"name": "Clinic"})
	e.put("Practitioner", "pr1", map[string]any{"name": []any{map[string]any{"family": "Unreferenced"}}})
	e.put("Encounter", "e1", map[string]any{"status": "finished", "class": map[string]any{"code": "AMB"},
		"subject": map[string]any{"reference": "Patient/p1"}, "serviceProvider": map[string]any{"reference": "Organization/org1"}})
	e.put("Group", "g1", map[string]any{"type": "person", "actual": true, "identifier": []any{map[string]any{"system": "urn:test", "value": "cohort-1"}},
		"member": []any{map[string]any{"entity": map[string]any{"reference": "Patient/p1"}}, map[string]any{"entity": map[string]any{"reference": "Patient/p2"}}}})
}

var kickHeaders = []string{"Accept", "application/fhir+json", "Prefer", "respond-async"}

// kick starts an export and returns the status URL.
func (e *env) kick(tok, path string, headers ...string) string {
	e.t.Helper()
	if headers == nil {
		headers = kickHeaders
	}
	r := e.s.Do("GET", path, tok, nil, headers...)
	if r.Status != http.StatusAccepted {
		e.t.Fatalf("kick-off %s: %d %s", path, r.Status, r.Body)
	}
	loc := r.Header.Get("Content-Location")
	if !strings.HasPrefix(loc, e.s.FHIR+"/") {
		e.t.Fatalf("Content-Location %q is not an absolute URL under %s", loc, e.s.FHIR)
	}
	return loc
}

type manifest struct {
	TransactionTime     string `json:"transactionTime"`
	Request             string `json:"request"`
	RequiresAccessToken *bool  `json:"requiresAccessToken"`
	Output              []item `json:"output"`
	Deleted             []item `json:"deleted"`
	Error               []item `json:"error"`
}

type item struct {
	Type      string         `json:"type"`
	URL       string         `json:"url"`
	Count     int            `json:"count"`
	Extension map[string]any `json:"extension"`
}

// wait polls the status URL until the export completes.
func (e *env) wait(tok, status string) *manifest {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := e.s.Do("GET", status, tok, nil, "Accept", "application/json")
		switch r.Status {
		case http.StatusAccepted:
			ra, err := strconv.Atoi(r.Header.Get("Retry-After"))
			if err != nil || ra < 1 || ra > 5 {
				e.t.Fatalf("Retry-After %q is not an integer of 1-5 seconds", r.Header.Get("Retry-After"))
			}
			if r.Header.Get("X-Progress") == "" {
				e.t.Fatal("202 without X-Progress")
			}
			body := r.JSON(e.t)
			if body["status"] != "in_progress" {
				e.t.Fatalf("202 body %s", r.Body)
			}
			if time.Now().After(deadline) {
				e.t.Fatal("export did not finish")
			}
			time.Sleep(120 * time.Millisecond)
			continue
		case http.StatusOK:
		default:
			e.t.Fatalf("status: %d %s", r.Status, r.Body)
		}
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			e.t.Fatalf("manifest Content-Type %q", ct)
		}
		if _, err := http.ParseTime(r.Header.Get("Expires")); err != nil {
			e.t.Fatalf("manifest Expires %q: %v", r.Header.Get("Expires"), err)
		}
		var m manifest
		if err := json.Unmarshal(r.Body, &m); err != nil {
			e.t.Fatal(err)
		}
		var raw map[string]any
		json.Unmarshal(r.Body, &raw)
		for _, k := range []string{"transactionTime", "request", "requiresAccessToken", "output", "error"} {
			if _, ok := raw[k]; !ok {
				e.t.Fatalf("manifest lacks %s: %s", k, r.Body)
			}
		}
		if m.RequiresAccessToken == nil || !*m.RequiresAccessToken {
			e.t.Fatalf("requiresAccessToken must be true: %s", r.Body)
		}
		return &m
	}
}

// download fetches a file and checks its form; it returns the resources.
func (e *env) download(tok string, it item) []map[string]any {
	e.t.Helper()
	r := e.s.Do("GET", it.URL, tok, nil)
	if r.Status != 200 {
		e.t.Fatalf("GET %s: %d %s", it.URL, r.Status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/fhir+ndjson" {
		e.t.Fatalf("file Content-Type %q", ct)
	}
	if len(r.Body) == 0 {
		e.t.Fatalf("empty file %s", it.URL)
	}
	sum := sha256.Sum256(r.Body)
	if want := cid.FromDigest(sum[:]); it.Extension["cid"] != want {
		e.t.Fatalf("cid extension %v, content has %s", it.Extension["cid"], want)
	}
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(r.Body))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			e.t.Fatalf("blank line in %s", it.URL)
		}
		var res map[string]any
		if err := json.Unmarshal(sc.Bytes(), &res); err != nil {
			e.t.Fatalf("line of %s is not JSON: %v", it.URL, err)
		}
		if res["resourceType"] != it.Type {
			e.t.Fatalf("%s line has resourceType %v", it.Type, res["resourceType"])
		}
		out = append(out, res)
	}
	if len(out) != it.Count {
		e.t.Fatalf("%s: %d lines, manifest count %d", it.URL, len(out), it.Count)
	}
	return out
}

// ids downloads all output files and returns "Type/id" sorted.
func (e *env) ids(tok string, m *manifest) []string {
	e.t.Helper()
	var out []string
	for _, it := range m.Output {
		for _, res := range e.download(tok, it) {
			out = append(out, fmt.Sprintf("%s/%s", res["resourceType"], res["id"]))
		}
	}
	sort.Strings(out)
	return out
}

func counts(m *manifest) map[string]int {
	c := map[string]int{}
	for _, it := range m.Output {
		c[it.Type] += it.Count
	}
	return c
}

func wantError(t *testing.T, r *servertest.Response, status int, contains string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	var oo map[string]any
	if err := json.Unmarshal(r.Body, &oo); err != nil || oo["resourceType"] != "OperationOutcome" {
		t.Fatalf("error body is not an OperationOutcome: %s", r.Body)
	}
	issues, _ := oo["issue"].([]any)
	if len(issues) == 0 {
		t.Fatalf("OperationOutcome without issues: %s", r.Body)
	}
	for _, is := range issues {
		m := is.(map[string]any)
		if m["severity"] == nil || m["code"] == nil {
			t.Fatalf("issue without severity or code: %s", r.Body)
		}
	}
	if contains != "" && !strings.Contains(string(r.Body), contains) {
		t.Fatalf("error does not mention %q: %s", contains, r.Body)
	}
}

func TestExportFlow(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			e := start(t, d, nil)
			e.seed()
			reader := e.s.Token("system/*.read", "")

			t.Run("system", func(t *testing.T) {
				m := e.wait(reader, e.kick(reader, "$export"))
				if !strings.HasSuffix(m.Request, "/fhir/$export") {
					t.Fatalf("request %q", m.Request)
				}
				want := map[string]int{"Patient": 3, "Observation": 9, "Organization": 1, "Practitioner": 1, "Encounter": 1, "Group": 1}
				if got := counts(m); !mapsEqual(got, want) {
					t.Fatalf("counts %v, want %v", got, want)
				}
				ids := e.ids(reader, m)
				if len(ids) != 16 {
					t.Fatalf("ids %v", ids)
				}
				// AuditEvents (the audit log's, one per access) only when _type names them.
				if err := e.s.App.Audit.Flush(context.Background()); err != nil {
					t.Fatal(err)
				}
				if got := counts(e.wait(reader, e.kick(reader, "$export?_type=AuditEvent,Patient"))); got["AuditEvent"] == 0 || got["Patient"] != 3 {
					t.Fatalf("_type=AuditEvent,Patient: %v", got)
				}
				// Without a token: 401.
				if r := e.s.Do("GET", m.Output[0].URL, "", nil); r.Status != http.StatusUnauthorized {
					t.Fatalf("file without token: %d", r.Status)
				}
				// By content address, and gzip-compressed when accepted.
				it := m.Output[0]
				gw, _ := it.Extension["gateway"].(string)
				if !strings.HasPrefix(gw, e.s.URL+"/ipfs/") || it.Extension["ipfs"] != "ipfs://"+it.Extension["cid"].(string) {
					t.Fatalf("extension %v", it.Extension)
				}
				plain := e.s.Do("GET", it.URL, reader, nil)
				byCID := e.s.Do("GET", gw, reader, nil)
				if byCID.Status != 200 || !bytes.Equal(byCID.Body, plain.Body) {
					t.Fatalf("by CID: %d", byCID.Status)
				}
				if r := e.s.Do("GET", gw, "", nil); r.Status != http.StatusUnauthorized {
					t.Fatalf("by CID without token: %d", r.Status)
				}
				req, _ := http.NewRequest("GET", it.URL, nil)
				req.Header.Set("Authorization", "Bearer "+reader)
				req.Header.Set("Accept-Encoding", "gzip")
				resp, err := (&http.Client{Transport: &http.Transport{DisableCompression: true}}).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.Header.Get("Content-Encoding") != "gzip" {
					t.Fatalf("Content-Encoding %q", resp.Header.Get("Content-Encoding"))
				}
				zr, err := gzip.NewReader(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				unz, err := io.ReadAll(zr)
				if err != nil || !bytes.Equal(unz, plain.Body) {
					t.Fatalf("gzip body differs: %v", err)
				}
			})

			t.Run("patient level", func(t *testing.T) {
				m := e.wait(reader, e.kick(reader, "Patient/$export"))
				want := map[string]int{"Patient": 3, "Observation": 9, "Organization": 1, "Encounter": 1, "Group": 1}
				if got := counts(m); !mapsEqual(got, want) {
					t.Fatalf("counts %v, want %v (the unreferenced Practitioner must not be there)", got, want)
				}
			})

			t.Run("group", func(t *testing.T) {
				m := e.wait(reader, e.kick(reader, "Group/g1/$export?_type=Patient,Observation"))
				ids := e.ids(reader, m)
				for _, id := range ids {
					if strings.Contains(id, "p3") {
						t.Fatalf("Group export has %s of a non-member: %v", id, ids)
					}
				}
				if got := counts(m); !mapsEqual(got, map[string]int{"Patient": 2, "Observation": 6}) {
					t.Fatalf("counts %v", got)
				}
				wantError(t, e.s.Do("GET", "Group/nope/$export", reader, nil, kickHeaders...), 404, "")
				// Groups are found by identifier like any resource.
				if r := e.s.Do("GET", "Group?identifier="+url.QueryEscape("urn:test|cohort-1"), reader, nil); r.Status != 200 || !strings.Contains(string(r.Body), `"id":"g1"`) {
					t.Fatalf("Group search: %d %s", r.Status, r.Body)
				}
			})

			t.Run("patient parameter", func(t *testing.T) {
				body := map[string]any{"resourceType": "Parameters", "parameter": []any{
					map[string]any{"name": "patient", "valueReference": map[string]any{"reference": "Patient/p3"}},
					map[string]any{"name": "_type", "valueString": "Observation"},
				}}
				r := e.s.Do("POST", "Patient/$export", reader, body, kickHeaders...)
				if r.Status != 202 {
					t.Fatalf("POST kick-off: %d %s", r.Status, r.Body)
				}
				ids := e.ids(reader, e.wait(reader, r.Header.Get("Content-Location")))
				if !slices.Equal(ids, []string{"Observation/p3-o1", "Observation/p3-o2", "Observation/p3-o3"}) {
					t.Fatalf("ids %v", ids)
				}
				r = e.s.Do("POST", "$export", reader, body, kickHeaders...)
				wantError(t, r, 400, "patient")
			})

			t.Run("patient token", func(t *testing.T) {
				pt := e.s.Token("patient/*.read", "p2")
				m := e.wait(pt, e.kick(pt, "Patient/$export"))
				ids := e.ids(pt, m)
				for _, id := range ids {
					if strings.Contains(id, "p1") || strings.Contains(id, "p3") || id == "Organization/org1" {
						t.Fatalf("patient p2's export has %s: %v", id, ids)
					}
				}
				if !slices.Contains(ids, "Patient/p2") || !slices.Contains(ids, "Observation/p2-o1") {
					t.Fatalf("ids %v", ids)
				}
				// The system level is confined the same way.
				if got := e.ids(pt, e.wait(pt, e.kick(pt, "$export?_type=Patient"))); !slices.Equal(got, []string{"Patient/p2"}) {
					t.Fatalf("system export with a patient token: %v", got)
				}
				// Someone else's export is not visible to the patient.
				other := e.kick(reader, "$export?_type=Patient")
				om := e.wait(reader, other)
				wantError(t, e.s.Do("GET", other, pt, nil), 404, "")
				wantError(t, e.s.Do("GET", om.Output[0].URL, pt, nil), 404, "")
				wantError(t, e.s.Do("GET", om.Output[0].Extension["gateway"].(string), pt, nil), 404, "")
				// Nor can the patient export another patient.
				body := map[string]any{"resourceType": "Parameters", "parameter": []any{map[string]any{"name": "patient", "valueReference": map[string]any{"reference": "Patient/p1"}}}}
				wantError(t, e.s.Do("POST", "Patient/$export", pt, body, kickHeaders...), 403, "")
			})

			t.Run("scope", func(t *testing.T) {
				narrow := e.s.Token("system/Patient.read", "")
				wantError(t, e.s.Do("GET", "$export?_type=Observation", narrow, nil, kickHeaders...), 403, "Observation")
				m := e.wait(narrow, e.kick(narrow, "$export"))
				if got := counts(m); !mapsEqual(got, map[string]int{"Patient": 3}) {
					t.Fatalf("export with system/Patient.read: %v", got)
				}
				wantError(t, e.s.Do("GET", "$export", e.s.Token("system/Patient.write", ""), nil, kickHeaders...), 403, "")
				// A SMART v2 scope with a filter exports only what it selects.
				filtered := e.s.Token("system/Observation.rs?subject=Patient/p2 system/Patient.rs", "")
				ids := e.ids(filtered, e.wait(filtered, e.kick(filtered, "$export")))
				if !slices.Equal(ids, []string{"Observation/p2-o1", "Observation/p2-o2", "Observation/p2-o3", "Patient/p1", "Patient/p2", "Patient/p3"}) {
					t.Fatalf("export with a filtered scope: %v", ids)
				}
				wantError(t, e.s.Do("GET", "$export", "", nil, kickHeaders...), 401, "")
				wantError(t, e.s.Do("GET", "$export", "not-a-token", nil, kickHeaders...), 401, "")
			})

			t.Run("since with deletions", func(t *testing.T) {
				time.Sleep(5 * time.Millisecond)
				since := time.Now().UTC()
				time.Sleep(5 * time.Millisecond)
				e.del("Observation", "p1-o1")
				e.put("Patient", "p2", map[string]any{"name": []any{map[string]any{"family": "Renamed"}}, "gender": "female"})
				q := url.Values{"_since": {since.Format(time.RFC3339Nano)}}
				m := e.wait(reader, e.kick(reader, "$export?"+q.Encode()))
				if ids := e.ids(reader, m); !slices.Equal(ids, []string{"Patient/p2"}) {
					t.Fatalf("_since output %v", ids)
				}
				if len(m.Deleted) != 1 || m.Deleted[0].Type != "Bundle" {
					t.Fatalf("deleted %+v", m.Deleted)
				}
				bundles := e.download(reader, m.Deleted[0])
				entry := bundles[0]["entry"].([]any)[0].(map[string]any)["request"].(map[string]any)
				if entry["method"] != "DELETE" || entry["url"] != "Observation/p1-o1" {
					t.Fatalf("deleted entry %v", entry)
				}
				// A patient-level export of another patient does not see it.
				m = e.wait(reader, e.kick(reader, "Group/g1/$export?_type=Observation&"+q.Encode()))
				if len(m.Deleted) != 1 {
					t.Fatalf("group _since deleted %+v", m.Deleted)
				}
				pt := e.s.Token("patient/*.read", "p2")
				m = e.wait(pt, e.kick(pt, "Patient/$export?"+q.Encode()))
				if len(m.Deleted) != 0 {
					t.Fatalf("p2 sees p1's deletion: %+v", m.Deleted)
				}
			})

			t.Run("cancel", func(t *testing.T) {
				status := e.kick(reader, "$export")
				r := e.s.Do("DELETE", status, reader, nil)
				if r.Status != http.StatusAccepted {
					t.Fatalf("DELETE: %d %s", r.Status, r.Body)
				}
				wantError(t, e.s.Do("GET", status, reader, nil), 404, "cancelled")
				wantError(t, e.s.Do("DELETE", status, reader, nil), 404, "")
				// Cancelling a finished export removes its files.
				status = e.kick(reader, "$export?_type=Patient")
				m := e.wait(reader, status)
				if r := e.s.Do("DELETE", status, reader, nil); r.Status != 202 {
					t.Fatalf("DELETE finished: %d", r.Status)
				}
				wantError(t, e.s.Do("GET", m.Output[0].URL, reader, nil), 404, "")
			})

			t.Run("expired", func(t *testing.T) {
				status := e.kick(reader, "$export?_type=Patient")
				m := e.wait(reader, status)
				id := status[strings.LastIndex(status, "/")+1:]
				var key string
				if err := e.s.App.Store.QueryRow(context.Background(), `SELECT blob_key FROM bulk_file WHERE job = ?`, id).Scan(&key); err != nil {
					t.Fatal(err)
				}
				// Age the export past its expiry, as 24 hours would.
				if _, err := e.s.App.Store.Exec(context.Background(), `UPDATE job SET expires = 1000 WHERE id = ?`, id); err != nil {
					t.Fatal(err)
				}
				wantError(t, e.s.Do("GET", status, reader, nil), 404, "expired")
				wantError(t, e.s.Do("GET", m.Output[0].URL, reader, nil), 404, "")
				if err := e.s.App.Bulk.Sweep(context.Background()); err != nil {
					t.Fatal(err)
				}
				if _, _, err := e.s.App.Blobs.Get(context.Background(), key); err == nil {
					t.Fatal("the expired export's file is still stored after the sweep")
				}
				wantError(t, e.s.Do("GET", status, reader, nil), 404, "")
			})

			t.Run("kick-off errors", func(t *testing.T) {
				for _, c := range []struct {
					path    string
					headers []string
					status  int
					want    string
				}{
					{"$export", []string{"Accept", "application/fhir+json"}, 400, "Prefer"},
					{"$export", []string{"Accept", "application/fhir+xml", "Prefer", "respond-async"}, 400, "Accept"},
					{"$export", []string{"Prefer", "respond-async"}, 400, "Accept"},
					{"$export?_outputFormat=text/csv", nil, 400, "_outputFormat"},
					{"$export?_type=Observation,Nonsense", nil, 400, "Nonsense"},
					{"$export?_since=2999-01-01T00:00:00Z", nil, 400, "future"},
					{"$export?_since=yesterday", nil, 400, "_since"},
					{"$export?foo=bar", nil, 400, "foo"},
					{"$export?_elements=Patient.nonsense", nil, 400, "nonsense"},
					{"$export?includeAssociatedData=_bogus", nil, 400, "includeAssociatedData"},
					{"Patient/p1/$export", nil, 404, ""},
				} {
					if c.headers == nil {
						c.headers = kickHeaders
					}
					wantError(t, e.s.Do("GET", c.path, reader, nil, c.headers...), c.status, c.want)
				}
			})

			t.Run("output formats and lenient", func(t *testing.T) {
				for _, f := range []string{"application/fhir+ndjson", "application/ndjson", "ndjson"} {
					e.wait(reader, e.kick(reader, "$export?_type=Patient&_outputFormat="+url.QueryEscape(f)))
				}
				m := e.wait(reader, e.kick(reader, "$export?_type=Patient&foo=bar", "Accept", "application/fhir+json", "Prefer", "respond-async, handling=lenient"))
				if len(m.Error) != 1 || m.Error[0].Type != "OperationOutcome" {
					t.Fatalf("lenient: error %+v", m.Error)
				}
				oo := e.download(reader, m.Error[0])
				if !strings.Contains(fmt.Sprint(oo), "foo") {
					t.Fatalf("error file %v", oo)
				}
			})

			t.Run("elements", func(t *testing.T) {
				m := e.wait(reader, e.kick(reader, "$export?_type=Observation&_elements=Observation.subject"))
				for _, res := range e.download(reader, m.Output[0]) {
					if res["valueQuantity"] != nil || res["subject"] == nil || res["status"] == nil || res["code"] == nil {
						t.Fatalf("_elements kept the wrong elements: %v", res)
					}
					if !strings.Contains(fmt.Sprint(res["meta"]), "SUBSETTED") {
						t.Fatalf("no SUBSETTED tag: %v", res["meta"])
					}
				}
			})

			t.Run("typeFilter", func(t *testing.T) {
				// Two alternatives for Observation (OR); Patient unfiltered.
				q := url.Values{"_type": {"Observation,Patient"}, "_typeFilter": {"Observation?subject=Patient/p1", "Observation?_id=p3-o2"}}
				m := e.wait(reader, e.kick(reader, "$export?"+q.Encode()))
				ids := e.ids(reader, m)
				want := []string{"Observation/p1-o2", "Observation/p1-o3", "Observation/p3-o2", "Patient/p1", "Patient/p2", "Patient/p3"}
				if !slices.Equal(ids, want) {
					t.Fatalf("_typeFilter: %v, want %v", ids, want)
				}
				wantError(t, e.s.Do("GET", "$export?_typeFilter="+url.QueryEscape("Observation?nonsense-param=1"), reader, nil, kickHeaders...), 400, "_typeFilter")
				wantError(t, e.s.Do("GET", "$export?_typeFilter="+url.QueryEscape("Nonsense?x=1"), reader, nil, kickHeaders...), 400, "_typeFilter")
				// Without a search engine the filter is refused, never ignored.
				m0 := e.s.App.Bulk.Matcher()
				e.s.App.Bulk.SetMatcher(nil)
				defer e.s.App.Bulk.SetMatcher(m0)
				wantError(t, e.s.Do("GET", "$export?_typeFilter="+url.QueryEscape("Observation?code=8302-2"), reader, nil, kickHeaders...), 400, "_typeFilter")
			})

			t.Run("too many active exports", func(t *testing.T) {
				e.s.App.Bulk.SetMaxActive(1)
				defer e.s.App.Bulk.SetMaxActive(8)
				// Stopped workers keep the first export queued.
				e.s.App.Jobs.Stop()
				defer e.s.App.Jobs.Start()
				other := e.s.Token("system/*.read", "")
				status := e.kick(other, "$export?_type=Patient")
				r := e.s.Do("GET", "$export?_type=Patient", other, nil, kickHeaders...)
				wantError(t, r, http.StatusTooManyRequests, "already")
				if r.Header.Get("Retry-After") == "" {
					t.Fatal("429 without Retry-After")
				}
				if r := e.s.Do("DELETE", status, other, nil); r.Status != 202 {
					t.Fatalf("cancel: %d", r.Status)
				}
				e.kick(other, "$export?_type=Patient")
			})

			t.Run("polling too fast", func(t *testing.T) {
				status := e.kick(reader, "$export?_type=Patient")
				e.wait(reader, status)
				time.Sleep(150 * time.Millisecond)
				r1 := e.s.Do("GET", status, reader, nil)
				r2 := e.s.Do("GET", status, reader, nil)
				if r1.Status != 200 || r2.Status != http.StatusTooManyRequests || r2.Header.Get("Retry-After") == "" {
					t.Fatalf("fast polls: %d then %d (Retry-After %q)", r1.Status, r2.Status, r2.Header.Get("Retry-After"))
				}
			})
		})
	}
}

func TestSplitFiles(t *testing.T) {
	e := start(t, "sqlite", nil)
	e.s.App.Bulk.SetMaxFileResources(4)
	e.seed()
	reader := e.s.Token("system/*.read", "")
	m := e.wait(reader, e.kick(reader, "$export?_type=Observation"))
	if len(m.Output) != 3 || m.Output[0].Count != 4 || m.Output[1].Count != 4 || m.Output[2].Count != 1 {
		t.Fatalf("9 Observations split at 4: %+v", m.Output)
	}
	if got := e.ids(reader, m); len(got) != 9 {
		t.Fatalf("ids %v", got)
	}
	// The same split in the one-pass system export.
	m = e.wait(reader, e.kick(reader, "$export"))
	var obs []item
	for _, it := range m.Output {
		if it.Type == "Observation" {
			obs = append(obs, it)
		}
	}
	if len(obs) != 3 || obs[0].Count != 4 || obs[2].Count != 1 || !strings.HasSuffix(obs[2].URL, "/Observation-3.ndjson") {
		t.Fatalf("one-pass export split: %+v", obs)
	}
	if got := e.ids(reader, m); len(got) != 16 {
		t.Fatalf("ids %v", got)
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestPatientExportBinary: a patient's own export leaves out a Binary
// that a resource of their record references (any resource may reference
// any other), where an admin's export of the patients brings it.
func TestPatientExportBinary(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			e := start(t, d, nil)
			e.put("Patient", "alice", map[string]any{"gender": "female"})
			e.put("Patient", "bob", map[string]any{"gender": "male"})
			e.put("Binary", "of-bob", map[string]any{"contentType": "text/plain", "securityContext": map[string]any{"reference": "Patient/bob"}, "data": "Qk9C"})
			alice := e.s.Token("patient/*.cruds", "alice")
			obs := `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/alice"},"focus":[{"reference":"Binary/of-bob"}]}`
			if r := e.s.Do("POST", "Observation", alice, obs); r.Status != 201 {
				t.Fatalf("alice's Observation: %d %s", r.Status, r.Body)
			}
			got := e.ids(alice, e.wait(alice, e.kick(alice, "Patient/$export")))
			if slices.Contains(got, "Binary/of-bob") || !slices.Contains(got, "Patient/alice") {
				t.Errorf("alice's export: %v", got)
			}
			got = e.ids(e.admin, e.wait(e.admin, e.kick(e.admin, "Patient/$export")))
			if !slices.Contains(got, "Binary/of-bob") {
				t.Errorf("the admin's export of the patients: %v", got)
			}
		})
	}
}

// TestPatientExportBinaries: a Patient-level export brings the Binaries
// of the patients' records that no reference names: those their
// attachments point at, and those whose securityContext names them (an
// upload no document describes yet). A patient's own export brings
// theirs and no other's; an export of some patients, theirs only.
func TestPatientExportBinaries(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			e := start(t, d, nil)
			e.put("Patient", "alice", map[string]any{"gender": "female"})
			e.put("Patient", "bob", map[string]any{"gender": "male"})
			e.put("Binary", "letter", map[string]any{"contentType": "text/plain", "data": "TEVUVEVS"})
			e.put("DocumentReference", "d1", map[string]any{"status": "current", "subject": map[string]any{"reference": "Patient/alice"},
				"content": []any{map[string]any{"attachment": map[string]any{"contentType": "text/plain", "url": e.s.FHIR + "/Binary/letter"}}}})
			e.put("Binary", "alice-upload", map[string]any{"contentType": "text/plain", "securityContext": map[string]any{"reference": "Patient/alice"}, "data": "U0NBTg=="})
			e.put("Binary", "bob-upload", map[string]any{"contentType": "text/plain", "securityContext": map[string]any{"reference": "Patient/bob"}, "data": "Qk9C"})
			e.put("Binary", "unrelated", map[string]any{"contentType": "text/plain", "data": "Tk8="})
			binaries := func(got []string) []string {
				var out []string
				for _, id := range got {
					if strings.HasPrefix(id, "Binary/") {
						out = append(out, id)
					}
				}
				slices.Sort(out)
				return out
			}
			check := func(who, tok, path string, want ...string) {
				t.Helper()
				got := binaries(e.ids(tok, e.wait(tok, e.kick(tok, path))))
				if !slices.Equal(got, want) {
					t.Errorf("%s %s: Binaries %v, want %v", who, path, got, want)
				}
			}
			check("the admin", e.admin, "Patient/$export", "Binary/alice-upload", "Binary/bob-upload", "Binary/letter")
			e.put("Group", "g1", map[string]any{"type": "person", "actual": true, "member": []any{map[string]any{"entity": map[string]any{"reference": "Patient/alice"}}}})
			check("the admin", e.admin, "Group/g1/$export", "Binary/alice-upload", "Binary/letter")
			check("alice", e.s.Token("patient/*.cruds", "alice"), "Patient/$export", "Binary/alice-upload", "Binary/letter")
			check("bob", e.s.Token("patient/*.cruds", "bob"), "Patient/$export", "Binary/bob-upload")
			check("the admin", e.admin, "$export?_type=Binary", "Binary/alice-upload", "Binary/bob-upload", "Binary/letter", "Binary/unrelated")
			// Deletions since: a patient's export lists their Binaries',
			// not another's.
			time.Sleep(5 * time.Millisecond)
			since := time.Now().UTC()
			time.Sleep(5 * time.Millisecond)
			e.del("Binary", "alice-upload")
			e.del("Binary", "bob-upload")
			e.del("Binary", "unrelated")
			if got := e.deletedSince(e.s.Token("patient/*.read", "alice"), since); !slices.Equal(got, []string{"Binary/alice-upload"}) {
				t.Errorf("alice's deletions since: %v", got)
			}
			if got := e.deletedSince(e.admin, since); !slices.Contains(got, "Binary/bob-upload") || !slices.Contains(got, "Binary/alice-upload") {
				t.Errorf("the admin's deletions since: %v", got)
			}
		})
	}
}

// TestIncrementalExportBringsTargets: an incremental patient-level
// export (_since, what phr pull asks for) brings the shared resources and
// Binaries that the resources changed since point at, even when those did
// not change: else a pulled document would point at content the clone
// never received.
func TestIncrementalExportBringsTargets(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			e := start(t, d, nil)
			e.put("Patient", "alice", map[string]any{"gender": "female"})
			e.put("Practitioner", "dr-old", map[string]any{"name": []any{map[string]any{"family": "Old"}}})
			e.put("Practitioner", "dr-other", map[string]any{"name": []any{map[string]any{"family": "Other"}}})
			e.put("Binary", "old-letter", map[string]any{"contentType": "text/plain", "data": "T0xE"})
			e.put("Binary", "other-letter", map[string]any{"contentType": "text/plain", "data": "T1RIRVI="})
			e.put("Observation", "o-other", map[string]any{"status": "final", "code": map[string]any{"text": "x"}, "subject": map[string]any{"reference": "Patient/alice"},
				"performer": []any{map[string]any{"reference": "Practitioner/dr-other"}}})
			e.put("DocumentReference", "d-other", map[string]any{"status": "current", "subject": map[string]any{"reference": "Patient/alice"},
				"content": []any{map[string]any{"attachment": map[string]any{"contentType": "text/plain", "url": "Binary/other-letter"}}}})
			time.Sleep(5 * time.Millisecond)
			since := time.Now().UTC()
			time.Sleep(5 * time.Millisecond)
			e.put("Observation", "o-new", map[string]any{"status": "final", "code": map[string]any{"text": "x"}, "subject": map[string]any{"reference": "Patient/alice"},
				"performer": []any{map[string]any{"reference": "Practitioner/dr-old"}}})
			e.put("DocumentReference", "d-new", map[string]any{"status": "current", "subject": map[string]any{"reference": "Patient/alice"},
				"content": []any{map[string]any{"attachment": map[string]any{"contentType": "text/plain", "url": "Binary/old-letter"}}}})
			q := url.Values{"_since": {since.Format(time.RFC3339Nano)}}
			want := []string{"Binary/old-letter", "DocumentReference/d-new", "Observation/o-new", "Practitioner/dr-old"}
			check := func() {
				t.Helper()
				for who, tok := range map[string]string{"the admin": e.admin, "alice": e.s.Token("patient/*.read", "alice")} {
					var got []string
					for _, id := range e.ids(tok, e.wait(tok, e.kick(tok, "Patient/$export?"+q.Encode()))) {
						if !strings.HasPrefix(id, "AuditEvent/") && !strings.HasPrefix(id, "Provenance/") {
							got = append(got, id)
						}
					}
					slices.Sort(got)
					if !slices.Equal(got, want) {
						t.Errorf("%s's export since: %v, want %v", who, got, want)
					}
				}
			}
			check()
			// A Binary that changed itself, which an unchanged document
			// points at, comes too.
			e.put("Binary", "other-letter", map[string]any{"contentType": "text/plain", "data": "TkVX"})
			want = []string{"Binary/old-letter", "Binary/other-letter", "DocumentReference/d-new", "Observation/o-new", "Practitioner/dr-old"}
			check()
		})
	}
}
