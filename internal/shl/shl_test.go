package shl_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/jwe"
	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/shlink"
	"github.com/phr-project/phr/internal/store/storetest"
)

// fixture is a running server with two patients' records.
type fixture struct {
	*servertest.Server
	admin      string
	tokA, tokB string // patient tokens of pa and pb
}

func resources(pid, name string) []string {
	return []string{
		`{"resourceType":"Patient","id":"` + pid + `","name":[{"family":"` + name + `","given":["Ann"]}],"gender":"female","birthDate":"1980-04-02"}`,
		`{"resourceType":"AllergyIntolerance","id":"` + pid + `-alg","patient":{"reference":"Patient/` + pid + `"},"code":{"text":"Penicillin ` + name + `"},"criticality":"high","recordedDate":"2020-03-01"}`,
		`{"resourceType":"Condition","id":"` + pid + `-cond","subject":{"reference":"Patient/` + pid + `"},"code":{"text":"Asthma"},"onsetDateTime":"2015-06-01"}`,
		`{"resourceType":"Immunization","id":"` + pid + `-imm","status":"completed","patient":{"reference":"Patient/` + pid + `"},"vaccineCode":{"text":"Tetanus"},"occurrenceDateTime":"2022-09-10"}`,
		`{"resourceType":"MedicationRequest","id":"` + pid + `-med","status":"active","intent":"order","subject":{"reference":"Patient/` + pid + `"},"medicationCodeableConcept":{"text":"Salbutamol inhaler"},"authoredOn":"2023-01-05"}`,
		`{"resourceType":"Observation","id":"` + pid + `-obs","status":"final","subject":{"reference":"Patient/` + pid + `"},"code":{"text":"Hemoglobin"},"effectiveDateTime":"2024-02-03","valueQuantity":{"value":13.2,"unit":"g/dL"}}`,
	}
}

func start(t *testing.T, dialect string) *fixture {
	t.Helper()
	s := servertest.Start(t, dialect)
	f := &fixture{Server: s, admin: s.AdminToken()}
	for _, p := range [][2]string{{"pa", "Alpha"}, {"pb", "Beta"}} {
		for _, r := range resources(p[0], p[1]) {
			var m map[string]any
			json.Unmarshal([]byte(r), &m)
			resp := s.Do("PUT", fmt.Sprintf("%s/%s", m["resourceType"], m["id"]), f.admin, r)
			if resp.Status != 201 && resp.Status != 200 {
				t.Fatalf("PUT %s: %d %s", m["id"], resp.Status, resp.Body)
			}
		}
	}
	f.tokA = s.Token("patient/*.rs", "pa")
	f.tokB = s.Token("patient/*.rs", "pb")
	return f
}

// createdLink is the answer to POST /shl.
type createdLink struct {
	ID                string `json:"id"`
	Patient           string `json:"patient"`
	Link              string `json:"link"`
	ViewerLink        string `json:"viewerLink"`
	URL               string `json:"url"`
	Flag              string `json:"flag"`
	Status            string `json:"status"`
	RemainingAttempts *int   `json:"remainingAttempts"`
	Files             []struct {
		ContentType string `json:"contentType"`
		LastUpdated string `json:"lastUpdated"`
		Status      string `json:"status"`
	} `json:"files"`
	QR struct {
		PNG string `json:"png"`
		SVG string `json:"svg"`
	} `json:"qr"`
	payload shlink.Payload
	key     []byte
}

func (f *fixture) create(t *testing.T, tok string, body any) *createdLink {
	t.Helper()
	resp := f.Do("POST", "/shl", tok, body)
	if resp.Status != http.StatusCreated {
		t.Fatalf("POST /shl: %d %s", resp.Status, resp.Body)
	}
	var l createdLink
	if err := json.Unmarshal(resp.Body, &l); err != nil {
		t.Fatal(err)
	}
	p, err := shlink.Decode(l.Link)
	if err != nil {
		t.Fatalf("decode link %s: %v", l.Link, err)
	}
	l.payload = p
	if l.key, err = p.KeyBytes(); err != nil {
		t.Fatal(err)
	}
	return &l
}

type manifest struct {
	Files []struct {
		ContentType string `json:"contentType"`
		Embedded    string `json:"embedded"`
		Location    string `json:"location"`
		LastUpdated string `json:"lastUpdated"`
		Status      string `json:"status"`
		FHIRVersion string `json:"fhirVersion"`
	} `json:"files"`
	RemainingAttempts *int `json:"remainingAttempts"`
}

func (f *fixture) manifest(t *testing.T, l *createdLink, body any) (*servertest.Response, *manifest) {
	t.Helper()
	resp := f.Do("POST", l.payload.URL, "", body, "Content-Type", "application/json")
	var m manifest
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(resp.Body, &m); err != nil {
			t.Fatalf("manifest body: %v\n%s", err, resp.Body)
		}
	}
	return resp, &m
}

// decrypt opens a JWE with the link's key and returns the Bundle's
// resource types and ids.
func decrypt(t *testing.T, l *createdLink, compact string) (jwe.Header, map[string]any, []string) {
	t.Helper()
	plain, h, err := jwe.Decrypt(compact, l.key)
	if err != nil {
		t.Fatalf("decrypt: %v", err)
	}
	var doc map[string]any
	if err := json.Unmarshal(plain, &doc); err != nil {
		t.Fatalf("plaintext is not JSON: %v", err)
	}
	var ids []string
	entries, _ := doc["entry"].([]any)
	for _, e := range entries {
		r := e.(map[string]any)["resource"].(map[string]any)
		ids = append(ids, fmt.Sprint(r["resourceType"], "/", r["id"]))
	}
	return h, doc, ids
}

func TestProtocol(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			f := start(t, d)
			// A patient cannot share another patient's record.
			if r := f.Do("POST", "/shl", f.tokA, map[string]any{"patient": "pb", "label": "x"}); r.Status != 403 {
				t.Fatalf("patient A sharing B's record: %d %s", r.Status, r.Body)
			}
			if r := f.Do("POST", "/shl", "", map[string]any{"label": "x"}); r.Status != 401 {
				t.Fatalf("no token: %d", r.Status)
			}
			if r := f.Do("POST", "/shl", f.tokA, map[string]any{"flag": "PU", "passcode": "1234"}); r.Status != 400 || !strings.Contains(string(r.Body), "flag") {
				t.Fatalf("U with P: %d %s", r.Status, r.Body)
			}
			if r := f.Do("POST", "/shl", f.tokA, map[string]any{"labl": "typo"}); r.Status != 400 || !strings.Contains(string(r.Body), "labl") {
				t.Fatalf("unknown field: %d %s", r.Status, r.Body)
			}
			if r := f.Do("POST", "/shl", f.tokA, map[string]any{"label": strings.Repeat("x", 81)}); r.Status != 400 {
				t.Fatalf("long label: %d %s", r.Status, r.Body)
			}
			if r := f.Do("POST", "/shl", f.admin, map[string]any{"label": "x"}); r.Status != 400 || !strings.Contains(string(r.Body), "patient") {
				t.Fatalf("admin without patient: %d %s", r.Status, r.Body)
			}

			l := f.create(t, f.tokA, map[string]any{"label": "ER visit", "passcode": "secret-1", "expires": "7d",
				"content": []map[string]any{{"kind": "record", "_type": []string{"AllergyIntolerance", "Condition"}}, {"kind": "summary"}}})
			if l.Flag != "P" || l.payload.Flag != "P" || l.payload.Label != "ER visit" || l.payload.Exp == 0 || len(l.payload.URL) > 128 {
				t.Fatalf("link payload %+v (flag %q)", l.payload, l.Flag)
			}
			if exp := time.Unix(l.payload.Exp, 0); time.Until(exp) < 6*24*time.Hour || time.Until(exp) > 8*24*time.Hour {
				t.Fatalf("exp %v is not 7 days from now", exp)
			}
			if !strings.HasPrefix(l.QR.PNG, "data:image/png;base64,") || !strings.HasPrefix(l.QR.SVG, "<svg") {
				t.Fatalf("QR codes missing: %.40s / %.40s", l.QR.PNG, l.QR.SVG)
			}
			if !strings.HasSuffix(l.ViewerLink, "/shl/view#"+l.Link) {
				t.Fatalf("viewer link %s", l.ViewerLink)
			}

			// Management: B cannot see A's link; lists are per patient.
			if r := f.Do("GET", "/shl/links/"+l.ID, f.tokB, nil); r.Status != 404 {
				t.Fatalf("B reading A's link: %d", r.Status)
			}
			if r := f.Do("DELETE", "/shl/links/"+l.ID, f.tokB, nil); r.Status != 404 {
				t.Fatalf("B revoking A's link: %d", r.Status)
			}
			f.create(t, f.tokB, map[string]any{"label": "B's"})
			var list struct {
				Links []createdLink `json:"links"`
			}
			json.Unmarshal(f.Do("GET", "/shl", f.tokA, nil).Body, &list)
			if len(list.Links) != 1 || list.Links[0].ID != l.ID || list.Links[0].Link != "" {
				t.Fatalf("A's list: %+v", list.Links)
			}
			json.Unmarshal(f.Do("GET", "/shl", f.admin, nil).Body, &list)
			if len(list.Links) != 2 {
				t.Fatalf("admin's list has %d links", len(list.Links))
			}

			// Recipient protocol.
			if r, _ := f.manifest(t, l, map[string]any{"passcode": "secret-1", "futureMember": true}); r.Status != 400 || !strings.Contains(string(r.Body), "recipient") {
				t.Fatalf("no recipient: %d %s", r.Status, r.Body)
			}
			r, m := f.manifest(t, l, map[string]any{"recipient": "ER", "passcode": "wrong"})
			if r.Status != 401 || m.RemainingAttempts == nil || *m.RemainingAttempts != 9 {
				t.Fatalf("wrong passcode: %d %s", r.Status, r.Body)
			}
			r, m = f.manifest(t, l, map[string]any{"recipient": "ER"})
			if r.Status != 401 || *m.RemainingAttempts != 8 {
				t.Fatalf("missing passcode: %d %s", r.Status, r.Body)
			}
			r, m = f.manifest(t, l, map[string]any{"recipient": "ER", "passcode": "secret-1"})
			if r.Status != 200 || len(m.Files) != 2 {
				t.Fatalf("manifest: %d %s", r.Status, r.Body)
			}
			for _, mf := range m.Files {
				if mf.Embedded == "" || mf.Location != "" || mf.ContentType != "application/fhir+json" || mf.FHIRVersion != "4.0.1" || mf.Status != "finalized" || mf.LastUpdated == "" {
					t.Fatalf("file %+v", mf)
				}
			}
			h, _, ids := decrypt(t, l, m.Files[0].Embedded)
			if h.Cty != "application/fhir+json" || h.Zip != "DEF" {
				t.Fatalf("header %+v", h)
			}
			if want := []string{"Patient/pa", "AllergyIntolerance/pa-alg", "Condition/pa-cond"}; !slices.Equal(ids, want) {
				t.Fatalf("record file holds %v, want %v", ids, want)
			}
			_, doc, ids := decrypt(t, l, m.Files[1].Embedded)
			if doc["type"] != "document" || !strings.HasPrefix(ids[0], "Composition/") || !slices.Contains(ids, "Immunization/pa-imm") ||
				!slices.Contains(ids, "MedicationRequest/pa-med") || slices.Contains(ids, "Observation/pa-obs") || slices.ContainsFunc(ids, func(s string) bool { return strings.Contains(s, "pb") }) {
				t.Fatalf("summary holds %v", ids)
			}

			// Location instead of embedded when the recipient asks for it.
			r, m = f.manifest(t, l, map[string]any{"recipient": "ER", "passcode": "secret-1", "embeddedLengthMax": 10})
			if r.Status != 200 || m.Files[0].Location == "" || m.Files[0].Embedded != "" {
				t.Fatalf("location manifest: %d %s", r.Status, r.Body)
			}
			loc := f.Do("GET", m.Files[0].Location, "", nil)
			if loc.Status != 200 || loc.Header.Get("Content-Type") != "application/jose" {
				t.Fatalf("location: %d %s", loc.Status, loc.Header)
			}
			decrypt(t, l, string(loc.Body))
			if r := f.Do("GET", m.Files[0].Location+"x", "", nil); r.Status != 404 {
				t.Fatalf("unknown location: %d", r.Status)
			}
			// Locations expire within the hour.
			f.App.SHL.SetClock(func() time.Time { return time.Now().Add(61 * time.Minute) })
			if r := f.Do("GET", m.Files[0].Location, "", nil); r.Status != 404 {
				t.Fatalf("location after an hour: %d", r.Status)
			}
			f.App.SHL.SetClock(time.Now)

			// Update resets the attempts; the old passcode stops working.
			r, _ = f.manifest(t, l, map[string]any{"recipient": "ER", "passcode": "wrong"})
			up := f.Do("PATCH", "/shl/links/"+l.ID, f.tokA, map[string]any{"passcode": "secret-2"})
			var upd createdLink
			json.Unmarshal(up.Body, &upd)
			if up.Status != 200 || upd.RemainingAttempts == nil || *upd.RemainingAttempts != 10 {
				t.Fatalf("update: %d %s", up.Status, up.Body)
			}
			if r, _ := f.manifest(t, l, map[string]any{"recipient": "ER", "passcode": "secret-1"}); r.Status != 401 {
				t.Fatalf("old passcode: %d", r.Status)
			}
			if r, _ := f.manifest(t, l, map[string]any{"recipient": "ER", "passcode": "secret-2"}); r.Status != 200 {
				t.Fatalf("new passcode: %d %s", r.Status, r.Body)
			}

			// Expiry is enforced by the server.
			f.App.SHL.SetClock(func() time.Time { return time.Now().Add(8 * 24 * time.Hour) })
			if r, _ := f.manifest(t, l, map[string]any{"recipient": "ER", "passcode": "secret-2"}); r.Status != 404 {
				t.Fatalf("expired: %d", r.Status)
			}
			f.App.SHL.SetClock(time.Now)

			// The access log tells the owner who came.
			var log struct {
				Access []struct {
					Recipient string `json:"recipient"`
					Action    string `json:"action"`
					Status    int    `json:"status"`
				} `json:"access"`
			}
			lr := f.Do("GET", "/shl/links/"+l.ID+"/log", f.tokA, nil)
			json.Unmarshal(lr.Body, &log)
			statuses := map[int]int{}
			for _, a := range log.Access {
				statuses[a.Status]++
			}
			if lr.Status != 200 || statuses[200] < 4 || statuses[401] < 3 || statuses[404] < 1 || log.Access[len(log.Access)-1].Recipient != "" {
				t.Fatalf("access log: %d %s", lr.Status, lr.Body)
			}
			if r := f.Do("GET", "/shl/links/"+l.ID+"/log", f.tokB, nil); r.Status != 404 {
				t.Fatalf("B reading A's log: %d", r.Status)
			}

			// Revocation: 404 for manifest and locations.
			_, m = f.manifest(t, l, map[string]any{"recipient": "ER2", "passcode": "secret-2", "embeddedLengthMax": 0})
			if r := f.Do("DELETE", "/shl/links/"+l.ID, f.tokA, nil); r.Status != 204 {
				t.Fatalf("revoke: %d %s", r.Status, r.Body)
			}
			if r, _ := f.manifest(t, l, map[string]any{"recipient": "ER", "passcode": "secret-2"}); r.Status != 404 {
				t.Fatalf("revoked manifest: %d", r.Status)
			}
			if r := f.Do("GET", m.Files[0].Location, "", nil); r.Status != 404 {
				t.Fatalf("revoked location: %d", r.Status)
			}
			if r := f.Do("POST", "/shl/m/"+strings.Repeat("A", 43), "", map[string]any{"recipient": "x"}); r.Status != 404 {
				t.Fatalf("unknown manifest: %d", r.Status)
			}
			var got createdLink
			json.Unmarshal(f.Do("GET", "/shl/links/"+l.ID, f.tokA, nil).Body, &got)
			if got.Status != "revoked" {
				t.Fatalf("status after revoke %q", got.Status)
			}
		})
	}
}

// TestParallelWrongPasscodes: the lifetime limit holds when many wrong
// passcodes arrive at once - exactly the limit are answered 401 (each
// with a different remaining count), the rest 404, and the link is dead.
func TestParallelWrongPasscodes(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			f := start(t, d)
			l := f.create(t, f.tokA, map[string]any{"passcode": "right"})
			const n = 25
			var wg sync.WaitGroup
			results := make([]*servertest.Response, n)
			for i := range n {
				wg.Go(func() {
					results[i] = f.Do("POST", l.payload.URL, "", map[string]any{"recipient": fmt.Sprint("guesser ", i), "passcode": fmt.Sprint("guess-", i)})
				})
			}
			wg.Wait()
			var remaining []int
			notFound := 0
			for _, r := range results {
				switch r.Status {
				case 401:
					var m manifest
					json.Unmarshal(r.Body, &m)
					remaining = append(remaining, *m.RemainingAttempts)
				case 404:
					notFound++
				default:
					t.Fatalf("status %d: %s", r.Status, r.Body)
				}
			}
			slices.Sort(remaining)
			if want := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}; !slices.Equal(remaining, want) || notFound != n-10 {
				t.Fatalf("401 remaining %v and %d 404s; want %v and %d", remaining, notFound, want, n-10)
			}
			if r, _ := f.manifest(t, l, map[string]any{"recipient": "owner", "passcode": "right"}); r.Status != 404 {
				t.Fatalf("exhausted link with the right passcode: %d", r.Status)
			}
			var got createdLink
			json.Unmarshal(f.Do("GET", "/shl/links/"+l.ID, f.tokA, nil).Body, &got)
			if got.Status != "exhausted" {
				t.Fatalf("status %q", got.Status)
			}
			// The owner's update revives it.
			f.Do("PUT", "/shl/links/"+l.ID, f.tokA, map[string]any{"passcode": "new-one"})
			if r, _ := f.manifest(t, l, map[string]any{"recipient": "owner", "passcode": "new-one"}); r.Status != 200 {
				t.Fatalf("after update: %d %s", r.Status, r.Body)
			}
		})
	}
}

// TestDirectAndLongTerm covers the U flag's GET and L links: polling
// limits and files that follow the record (same key, new IV).
func TestDirectAndLongTerm(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			f := start(t, d)
			u := f.create(t, f.tokA, map[string]any{"flag": "U", "content": []map[string]any{{"kind": "summary"}}})
			if r := f.Do("GET", u.payload.URL, "", nil); r.Status != 400 {
				t.Fatalf("U without recipient: %d %s", r.Status, r.Body)
			}
			r := f.Do("GET", u.payload.URL+"?recipient=Pharmacy", "", nil)
			if r.Status != 200 || r.Header.Get("Content-Type") != "application/jose" {
				t.Fatalf("U GET: %d %s", r.Status, r.Body)
			}
			if _, doc, _ := decrypt(t, u, string(r.Body)); doc["type"] != "document" {
				t.Fatalf("U file is a %v Bundle", doc["type"])
			}
			// U with L: the same polling limit applies to the direct GET.
			ul := f.create(t, f.tokA, map[string]any{"flag": "LU"})
			if r := f.Do("GET", ul.payload.URL+"?recipient=Pharmacy", "", nil); r.Status != 200 {
				t.Fatalf("LU GET: %d %s", r.Status, r.Body)
			}
			if r := f.Do("GET", ul.payload.URL+"?recipient=Pharmacy", "", nil); r.Status != 429 || r.Header.Get("Retry-After") == "" {
				t.Fatalf("LU GET too soon: %d %v", r.Status, r.Header)
			}
			p := f.create(t, f.tokA, map[string]any{"passcode": "x"})
			if r := f.Do("GET", p.payload.URL+"?recipient=x", "", nil); r.Status != 405 {
				t.Fatalf("GET on a P link: %d", r.Status)
			}

			l := f.create(t, f.tokA, map[string]any{"flag": "L", "label": "ongoing", "content": []map[string]any{{"_type": []string{"Observation"}}}})
			r1, m1 := f.manifest(t, l, map[string]any{"recipient": "GP"})
			if r1.Status != 200 || m1.Files[0].Status != "can-change" {
				t.Fatalf("L manifest: %d %s", r1.Status, r1.Body)
			}
			r2 := f.Do("POST", l.payload.URL, "", map[string]any{"recipient": "GP"})
			if r2.Status != 429 || r2.Header.Get("Retry-After") == "" {
				t.Fatalf("fast poll: %d %v", r2.Status, r2.Header)
			}
			if ra := r2.Header.Get("Retry-After"); ra != "10" && ra != "9" {
				t.Fatalf("Retry-After %q", ra)
			}
			// Another recipient is not held back by the first one's polls.
			if r, _ := f.manifest(t, l, map[string]any{"recipient": "Specialist"}); r.Status != 200 {
				t.Fatalf("other recipient: %d", r.Status)
			}
			// Unchanged record: the same file.
			f.App.SHL.SetClock(func() time.Time { return time.Now().Add(11 * time.Second) })
			_, m2 := f.manifest(t, l, map[string]any{"recipient": "GP"})
			if m2.Files[0].Embedded != m1.Files[0].Embedded {
				t.Fatalf("file changed without a change to the record")
			}
			// A new result: the file follows, with the same key and a new IV.
			obs := `{"resourceType":"Observation","id":"pa-obs2","status":"final","subject":{"reference":"Patient/pa"},"code":{"text":"Glucose"},"effectiveDateTime":"2025-01-01","valueQuantity":{"value":5.4,"unit":"mmol/L"}}`
			if r := f.Do("PUT", "Observation/pa-obs2", f.admin, obs); r.Status != 201 {
				t.Fatalf("add observation: %d %s", r.Status, r.Body)
			}
			f.App.SHL.SetClock(func() time.Time { return time.Now().Add(22 * time.Second) })
			_, m3 := f.manifest(t, l, map[string]any{"recipient": "GP"})
			_, _, ids := decrypt(t, l, m3.Files[0].Embedded)
			if !slices.Contains(ids, "Observation/pa-obs2") {
				t.Fatalf("refreshed file holds %v", ids)
			}
			if iv1, iv3 := strings.Split(m1.Files[0].Embedded, ".")[2], strings.Split(m3.Files[0].Embedded, ".")[2]; iv1 == iv3 {
				t.Fatal("the refreshed file reuses the IV")
			}
			if m3.Files[0].LastUpdated <= m1.Files[0].LastUpdated {
				t.Fatalf("lastUpdated %s did not move past %s", m3.Files[0].LastUpdated, m1.Files[0].LastUpdated)
			}
			// Recipients arriving together after a change share one refresh.
			obs3 := strings.ReplaceAll(strings.ReplaceAll(obs, "pa-obs2", "pa-obs3"), "Glucose", "Ferritin")
			if r := f.Do("PUT", "Observation/pa-obs3", f.admin, obs3); r.Status != 201 {
				t.Fatalf("add observation: %d %s", r.Status, r.Body)
			}
			var wg sync.WaitGroup
			got := make([]string, 6)
			for i := range got {
				wg.Go(func() {
					r := f.Do("POST", l.payload.URL, "", map[string]any{"recipient": fmt.Sprint("clinic ", i)})
					var m manifest
					json.Unmarshal(r.Body, &m)
					if r.Status == 200 && len(m.Files) > 0 {
						got[i] = m.Files[0].Embedded
					}
				})
			}
			wg.Wait()
			for i, g := range got {
				if g == "" || g != got[0] {
					t.Fatalf("recipient %d got a different file (or none) after one change", i)
				}
			}
			if _, _, ids := decrypt(t, l, got[0]); !slices.Contains(ids, "Observation/pa-obs3") {
				t.Fatalf("refreshed file holds %v", ids)
			}

			// Files can be added to L links and refreshed by the owner.
			add := f.Do("POST", "/shl/links/"+l.ID+"/files", f.tokA, map[string]any{"kind": "summary"})
			if add.Status != 200 || !strings.Contains(string(add.Body), `"n":1`) {
				t.Fatalf("add file: %d %s", add.Status, add.Body)
			}
			if r := f.Do("POST", "/shl/links/"+l.ID+"/refresh", f.tokA, nil); r.Status != 200 {
				t.Fatalf("refresh: %d %s", r.Status, r.Body)
			}
			if r := f.Do("POST", "/shl/links/"+p.ID+"/files", f.tokA, map[string]any{"kind": "summary"}); r.Status != 409 {
				t.Fatalf("add a server-encrypted file to a non-L link: %d %s", r.Status, r.Body)
			}
			// ... while the holder may add a file it encrypted itself.
			own, err := jwe.Encrypt(p.key, []byte(`{"resourceType":"Patient","id":"note"}`), jwe.Options{ContentType: "application/fhir+json"})
			if err != nil {
				t.Fatal(err)
			}
			if r := f.Do("POST", "/shl/links/"+p.ID+"/files", f.tokA, map[string]any{"kind": "file", "jwe": own}); r.Status != 200 {
				t.Fatalf("add a holder-encrypted file: %d %s", r.Status, r.Body)
			}
			if r := f.Do("POST", "/shl/links/"+l.ID+"/files", f.tokB, map[string]any{"kind": "summary"}); r.Status != 404 {
				t.Fatalf("B adding to A's link: %d", r.Status)
			}
		})
	}
}

// TestKeyFile: with --shl-key-file the key-encryption key stays outside
// the database, and L links still refresh.
func TestKeyFile(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "shl.key")
	os.WriteFile(keyFile, []byte(shlink.NewKey()+"\n"), 0o600)
	s := servertest.Start(t, "sqlite", servertest.Options{Configure: func(c *server.Config) { c.SHLKeyFile = keyFile }})
	admin := s.AdminToken()
	s.Do("PUT", "Patient/k1", admin, `{"resourceType":"Patient","id":"k1"}`)
	f := &fixture{Server: s, admin: admin}
	l := f.create(t, admin, map[string]any{"patient": "k1", "flag": "L"})
	if _, err := s.App.Store.GetKV(t.Context(), "shl/kek"); err == nil {
		t.Fatal("a key-encryption key was stored in the database despite --shl-key-file")
	}
	s.Do("PUT", "Observation/k1-o", admin, `{"resourceType":"Observation","id":"k1-o","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/k1"}}`)
	_, m := f.manifest(t, l, map[string]any{"recipient": "r"})
	if _, _, ids := decrypt(t, l, m.Files[0].Embedded); !slices.Contains(ids, "Observation/k1-o") {
		t.Fatalf("refreshed file holds %v", ids)
	}
	bad := filepath.Join(t.TempDir(), "short.key")
	os.WriteFile(bad, []byte("tooshort"), 0o600)
	if _, err := server.Open(t.Context(), server.Config{DataDir: t.TempDir(), SHLKeyFile: bad}); err == nil || !strings.Contains(err.Error(), "32") {
		t.Fatalf("short key file: %v", err)
	}
}

// TestAuditTrailNotShared: the server's AuditEvents are in the patient's
// compartment, but a whole-record link must not carry them (nor refresh
// because of them) unless _type names AuditEvent.
func TestAuditTrailNotShared(t *testing.T) {
	f := start(t, "sqlite")
	ae := `{"resourceType":"AuditEvent","id":"ae1","type":{"system":"http://terminology.hl7.org/CodeSystem/audit-event-type","code":"rest"},"recorded":"2024-01-01T00:00:00Z","agent":[{"who":{"reference":"Patient/pa"},"requestor":true}],"source":{"observer":{"display":"phr"}},"entity":[{"what":{"reference":"Patient/pa"}}]}`
	if r := f.Do("PUT", "AuditEvent/ae1", f.admin, ae); r.Status != 201 {
		t.Fatalf("PUT AuditEvent: %d %s", r.Status, r.Body)
	}
	l := f.create(t, f.tokA, map[string]any{"label": "all", "content": []any{map[string]any{"kind": "record"}}})
	resp, m := f.manifest(t, l, map[string]any{"recipient": "test", "embeddedLengthMax": 1 << 20})
	if resp.Status != 200 || len(m.Files) != 1 {
		t.Fatalf("manifest: %d %s", resp.Status, resp.Body)
	}
	_, _, ids := decrypt(t, l, m.Files[0].Embedded)
	for _, id := range ids {
		if strings.HasPrefix(id, "AuditEvent/") {
			t.Fatalf("whole-record link carries %s: %v", id, ids)
		}
	}
	if len(ids) < 6 {
		t.Fatalf("record incomplete: %v", ids)
	}
}
