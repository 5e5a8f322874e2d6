package phrexport_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/phrexport"
	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/sphr"
	"github.com/phr-project/phr/internal/store/storetest"
)

type fixture struct {
	srv    *servertest.Server
	admin  string
	binary []byte // content of Binary/b1
	bigPDF []byte // inline attachment of DocumentReference/d2
}

func put(t *testing.T, s *servertest.Server, tok, typ, id, body string) {
	t.Helper()
	r := s.Do("PUT", typ+"/"+id, tok, `{"resourceType":"`+typ+`","id":"`+id+`",`+body+`}`)
	if r.Status != 200 && r.Status != 201 {
		t.Fatalf("PUT %s/%s: %d %s", typ, id, r.Status, r.Body)
	}
}

func setup(t *testing.T, dialect string) *fixture {
	t.Helper()
	s := servertest.Start(t, dialect)
	fx := &fixture{srv: s, admin: s.AdminToken(), binary: make([]byte, 100_000), bigPDF: make([]byte, 70_000)}
	rand.Read(fx.binary)
	rand.Read(fx.bigPDF)
	a := fx.admin
	put(t, s, a, "Organization", "o1", `"name":"General Hospital"`)
	put(t, s, a, "Organization", "o2", `"name":"Unrelated Clinic"`)
	put(t, s, a, "Practitioner", "pr1", `"name":[{"family":"House"}]`)
	put(t, s, a, "Patient", "p1", `"name":[{"family":"Sim","given":["William"]}],"managingOrganization":{"reference":"Organization/o1"}`)
	put(t, s, a, "Patient", "p2", `"name":[{"family":"Other","given":["Olga"]}]`)
	put(t, s, a, "Encounter", "e1", `"status":"finished","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},"subject":{"reference":"Patient/p1"},"period":{"start":"2015-03-01","end":"2015-03-02"},"participant":[{"individual":{"reference":"Practitioner/pr1"}}]`)
	obs := func(id, pat, date string) {
		eff := ""
		if date != "" {
			eff = `,"effectiveDateTime":"` + date + `"`
		}
		if id == "obs-2012" { // the one laboratory result (scope filter tests)
			eff += `,"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}]`
		}
		put(t, s, a, "Observation", id, `"status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/`+pat+`"}`+eff+`,"valueQuantity":{"value":72.50,"unit":"kg"}`)
	}
	obs("obs-2009", "p1", "2009-05-01")
	obs("obs-2012", "p1", "2012-06-15")
	obs("obs-nodate", "p1", "")
	put(t, s, a, "Condition", "c1", `"subject":{"reference":"Patient/p1"},"onsetDateTime":"2019-02-01","code":{"text":"asthma"}`)
	put(t, s, a, "Binary", "b1", `"contentType":"image/jpeg","data":"`+base64.StdEncoding.EncodeToString(fx.binary)+`"`)
	put(t, s, a, "DocumentReference", "d1", `"status":"current","subject":{"reference":"Patient/p1"},"date":"2018-01-01T10:00:00Z","content":[{"attachment":{"contentType":"image/jpeg","url":"Binary/b1","title":"XR chest"}}]`)
	put(t, s, a, "DocumentReference", "d2", `"status":"current","subject":{"reference":"Patient/p1"},"date":"2018-02-01T10:00:00Z","content":[{"attachment":{"contentType":"application/pdf","data":"`+base64.StdEncoding.EncodeToString(fx.bigPDF)+`","title":"letter"}}]`)
	obs("obs-2021", "p1", "2021-01-10")
	obs("obs-p2", "p2", "2020-01-01")
	put(t, s, a, "AuditEvent", "ae1", `"type":{"code":"rest"},"recorded":"2021-01-01T00:00:00Z","agent":[{"who":{"reference":"Patient/p1"},"requestor":true}],"source":{"observer":{"display":"x"}}`)
	return fx
}

type resp struct {
	status  int
	header  http.Header
	trailer http.Header
	body    []byte
	chunked bool
}

func (fx *fixture) get(t *testing.T, method, path, tok string, body io.Reader, headers ...string) *resp {
	t.Helper()
	req, err := http.NewRequest(method, fx.srv.FHIR+"/"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := fx.srv.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return &resp{status: res.StatusCode, header: res.Header, trailer: res.Trailer, body: b, chunked: slices.Contains(res.TransferEncoding, "chunked")}
}

type line struct {
	ResourceType string          `json:"resourceType"`
	ID           string          `json:"id"`
	Raw          json.RawMessage `json:"-"`
}

func lines(t *testing.T, body []byte) []line {
	t.Helper()
	var out []line
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%.200s", len(out)+1, err, sc.Bytes())
		}
		l.Raw = append(json.RawMessage(nil), sc.Bytes()...)
		out = append(out, l)
	}
	return out
}

func keys(ls []line) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.ResourceType+"/"+l.ID)
	}
	return out
}

func checkCover(t *testing.T, raw []byte, patient string) {
	t.Helper()
	var c struct {
		ResourceType string
		Type         struct {
			Coding []struct{ System, Code string }
		}
		Subject struct{ Reference string }
	}
	json.Unmarshal(raw, &c)
	if c.ResourceType != "Composition" || len(c.Type.Coding) == 0 || c.Type.Coding[0].Code != "11503-0" || c.Type.Coding[0].System != "http://loinc.org" || c.Subject.Reference != "Patient/"+patient {
		t.Fatalf("not the cover page of Patient/%s: %s", patient, raw)
	}
}

func has(ks []string, k string) bool { return slices.Contains(ks, k) }

func TestExport(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			fx := setup(t, d)
			t.Run("ndjson", fx.testNDJSON)
			t.Run("phr", fx.testPHR)
			t.Run("access", fx.testAccess)
			t.Run("dates", fx.testDates)
			t.Run("types", fx.testTypes)
			t.Run("since", fx.testSince)
			t.Run("bundle", fx.testBundle)
			t.Run("sphr", fx.testSPHR)
			t.Run("sign", fx.testSign)
			t.Run("errors", fx.testBadRequests)
			t.Run("system", fx.testSystem)
			t.Run("inline-errors", fx.testInlineErrors) // last: damages data
		})
	}
}

func (fx *fixture) testNDJSON(t *testing.T) {
	r := fx.get(t, "GET", "Bundle/$phr-export?outputFormat=ndjson&patient=Patient/p1", fx.admin, nil)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("Content-Type %q", ct)
	}
	if r.header.Get("X-PHR-Version") != "1.0" || !r.chunked {
		t.Errorf("X-PHR-Version %q, chunked %v", r.header.Get("X-PHR-Version"), r.chunked)
	}
	ls := lines(t, r.body)
	ks := keys(ls)
	checkCover(t, ls[0].Raw, "p1")
	if ks[1] != "Patient/p1" {
		t.Fatalf("second line %s, want Patient/p1", ks[1])
	}
	for _, want := range []string{"Encounter/e1", "Observation/obs-2009", "Observation/obs-2012", "Observation/obs-2021", "Observation/obs-nodate", "Condition/c1", "DocumentReference/d1", "DocumentReference/d2", "Practitioner/pr1", "Organization/o1", "Binary/b1"} {
		if !has(ks, want) {
			t.Errorf("missing %s in %v", want, ks)
		}
	}
	for _, not := range []string{"Patient/p2", "Observation/obs-p2", "Organization/o2", "AuditEvent/ae1"} {
		if has(ks, not) {
			t.Errorf("%s must not be in Patient/p1's export", not)
		}
	}
	// Compartment before shared resources; decimals kept as written.
	if slices.Index(ks, "Practitioner/pr1") < slices.Index(ks, "Observation/obs-2021") {
		t.Errorf("shared resources must follow the compartment: %v", ks)
	}
	if !bytes.Contains(r.body, []byte(`"value":72.50`)) {
		t.Error("decimal 72.50 not kept as written")
	}
	for _, l := range ls {
		if l.ResourceType == "Binary" {
			var b struct{ Data string }
			json.Unmarshal(l.Raw, &b)
			if got, _ := base64.StdEncoding.DecodeString(b.Data); !bytes.Equal(got, fx.binary) {
				t.Error("Binary content differs")
			}
		}
	}
	// application/fhir+ndjson when asked for.
	r = fx.get(t, "GET", "Patient/p1/$phr-export", fx.admin, nil, "Accept", "application/fhir+ndjson")
	if r.status != 200 || r.header.Get("Content-Type") != "application/fhir+ndjson" || len(lines(t, r.body)) != len(ls) {
		t.Errorf("Accept fhir+ndjson: %d %q", r.status, r.header.Get("Content-Type"))
	}
}

func (fx *fixture) testPHR(t *testing.T) {
	r := fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=phr", fx.admin, nil)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	cd := r.header.Get("Content-Disposition")
	if !strings.HasPrefix(cd, "attachment;") || !strings.Contains(cd, `William-Sim-`) || !strings.HasSuffix(cd, `.phr"`) && !strings.HasSuffix(cd, ".phr") {
		t.Errorf("Content-Disposition %q", cd)
	}
	if r.header.Get("Content-Type") != "application/x-ndjson" || r.header.Get("X-PHR-Version") != "1.0" {
		t.Errorf("headers %v", r.header)
	}
	checkCover(t, lines(t, r.body)[0].Raw, "p1")
}

func (fx *fixture) testAccess(t *testing.T) {
	p1 := fx.srv.Token("patient/*.rs", "p1")
	r := fx.get(t, "GET", "Bundle/$phr-export?outputFormat=ndjson", p1, nil)
	if r.status != 200 {
		t.Fatalf("patient token exporting itself: %d %s", r.status, r.body)
	}
	ks := keys(lines(t, r.body))
	if ks[1] != "Patient/p1" || has(ks, "Patient/p2") || has(ks, "Observation/obs-p2") || !has(ks, "Observation/obs-2021") {
		t.Fatalf("patient export: %v", ks)
	}
	for _, path := range []string{"Bundle/$phr-export?patient=Patient/p2", "Patient/p2/$phr-export", "Bundle/$phr-export?patient=p2&outputFormat=sphr"} {
		r := fx.get(t, "GET", path, p1, nil)
		if r.status != 403 || bytes.Contains(r.body, []byte("Olga")) {
			t.Errorf("%s with Patient/p1's token: %d %s", path, r.status, r.body)
		}
	}
	if r := fx.get(t, "GET", "Patient/p1/$phr-export", "", nil); r.status != 401 {
		t.Errorf("without a token: %d", r.status)
	}
	// Scopes narrow the types: only Observations, v2 and v1 scopes. With no
	// Patient read there is no Patient, and no cover page in NDJSON.
	p1Obs := []string{"Observation/obs-2009", "Observation/obs-2012", "Observation/obs-2021", "Observation/obs-nodate"}
	obsOnly := fx.srv.Token("patient/Observation.rs", "p1")
	for _, tok := range []string{obsOnly, fx.srv.Token("patient/Observation.read", "p1")} {
		for _, f := range []string{"ndjson", "phr", "bundle"} {
			r = fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat="+f, tok, nil)
			if r.status != 200 {
				t.Fatalf("%s with Observation-only scope: %d %s", f, r.status, r.body)
			}
			var ks []string
			if f == "bundle" {
				b := bundleOf(t, r.body)
				checkCover(t, b[0].Raw, "p1")
				ks = keys(b[1:])
			} else {
				ks = keys(lines(t, r.body))
			}
			slices.Sort(ks)
			if !slices.Equal(ks, p1Obs) {
				t.Errorf("%s with Observation-only scope exported %v, want %v", f, ks, p1Obs)
			}
			// The cover page and the file name carry no Patient data.
			if bytes.Contains(r.body, []byte("William")) || strings.Contains(r.header.Get("Content-Disposition"), "William") {
				t.Errorf("%s with Observation-only scope shows the patient's name: %s", f, r.header.Get("Content-Disposition"))
			}
		}
	}
	r = fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=sphr", obsOnly, nil, "X-PHR-Passphrase", "pass phrase")
	rd, err := sphr.Open(bytes.NewReader(r.body), int64(len(r.body)), "pass phrase")
	if err != nil {
		t.Fatalf("sphr with Observation-only scope: %d %v", r.status, err)
	}
	var sk []string
	for {
		l, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var k line
		json.Unmarshal(l.JSON, &k)
		sk = append(sk, k.ResourceType+"/"+k.ID)
	}
	slices.Sort(sk)
	if !slices.Equal(sk, p1Obs) || len(rd.Files()) != 1 {
		t.Errorf("sphr with Observation-only scope: %v, files %v", sk, rd.Files())
	}
	// SMART v2 scope filters apply inside the export: only the laboratory
	// Observation, in every format.
	filtered := fx.srv.Token("patient/Patient.rs patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory", "p1")
	r = fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=ndjson", filtered, nil)
	ks = keys(lines(t, r.body))
	if r.status != 200 || !slices.Equal(ks[1:], []string{"Patient/p1", "Observation/obs-2012"}) || bytes.Contains(r.body, []byte("OperationOutcome")) {
		t.Errorf("filtered scope: %d %v", r.status, ks)
	}
	r = fx.get(t, "GET", "Bundle/$phr-export?outputFormat=bundle", filtered, nil)
	if ks := keys(bundleOf(t, r.body)); r.status != 200 || !slices.Equal(ks[1:], []string{"Patient/p1", "Observation/obs-2012"}) || !bytes.Contains(r.body, []byte("William")) {
		t.Errorf("filtered scope, bundle: %d %v", r.status, ks)
	}
	// A filter on the Patient itself hides the Patient (and its name) when
	// it does not match.
	r = fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=bundle", fx.srv.Token("patient/Patient.rs?gender=female patient/Condition.rs", "p1"), nil)
	if ks := keys(bundleOf(t, r.body)); r.status != 200 || !slices.Equal(ks[1:], []string{"Condition/c1"}) || bytes.Contains(r.body, []byte("William")) {
		t.Errorf("Patient filter: %d %v", r.status, ks)
	}
	// A filter the search cannot run is known before the output starts:
	// a type _type names is refused; otherwise the type is left out with a
	// warning (a wildcard scope with a filter only some types have).
	bad := fx.srv.Token("patient/Patient.rs patient/Observation.rs?nonsense=1", "p1")
	if r := fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=ndjson&_type=Observation", bad, nil); r.status != 403 || !bytes.Contains(r.body, []byte("nonsense")) {
		t.Errorf("unusable scope filter, _type=Observation: %d %s", r.status, r.body)
	}
	r = fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=ndjson", bad, nil)
	if ks := keys(lines(t, r.body)); r.status != 200 || !slices.Equal(ks[1:], []string{"Patient/p1", "OperationOutcome/"}) || !strings.HasPrefix(ks[0], "Composition/") || !bytes.Contains(r.body, []byte("Observation resources were left out: the access token's scope filter Observation?nonsense=1 cannot be applied")) {
		t.Errorf("unusable scope filter: %d %v %s", r.status, ks, r.body)
	}
	wild := fx.srv.Token("patient/*.rs?category=laboratory", "p1")
	r = fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=ndjson", wild, nil)
	if ks := keys(lines(t, r.body)); r.status != 200 || !slices.Equal(ks, []string{"Observation/obs-2012", "OperationOutcome/"}) || !bytes.Contains(r.body, []byte("Encounter resources were left out")) {
		t.Errorf("wildcard scope with a filter: %d %v", r.status, ks)
	}
	// A system token with a filter, whole-system export: only what matches.
	r = fx.get(t, "GET", "Bundle/$phr-export?outputFormat=ndjson", fx.srv.Token("system/Observation.rs?category=laboratory", ""), nil)
	if ks := keys(lines(t, r.body)); r.status != 200 || !slices.Equal(ks, []string{"Observation/obs-2012"}) {
		t.Errorf("system filter: %d %v", r.status, ks)
	}
	if r := fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=ndjson&_type=Condition", obsOnly, nil); r.status != 403 {
		t.Errorf("_type=Condition with patient/Observation.rs: %d", r.status)
	}
}

func (fx *fixture) testDates(t *testing.T) {
	r := fx.get(t, "GET", "Bundle/$phr-export?outputFormat=ndjson&patient=Patient/p1&start=2010&end=2020-06", fx.admin, nil)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	ks := keys(lines(t, r.body))
	for _, want := range []string{"Patient/p1", "Observation/obs-2012", "Observation/obs-nodate", "Condition/c1", "Encounter/e1", "DocumentReference/d1", "Practitioner/pr1", "Organization/o1", "Binary/b1"} {
		if !has(ks, want) {
			t.Errorf("start=2010&end=2020-06: missing %s in %v", want, ks)
		}
	}
	for _, not := range []string{"Observation/obs-2009", "Observation/obs-2021"} {
		if has(ks, not) {
			t.Errorf("start=2010&end=2020-06: %s is out of range", not)
		}
	}
	// Partial end date covers its whole month; start alone is open-ended.
	ks = keys(lines(t, fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=ndjson&start=2021-01", fx.admin, nil).body))
	if !has(ks, "Observation/obs-2021") || has(ks, "Observation/obs-2012") || has(ks, "Encounter/e1") {
		t.Errorf("start=2021-01: %v", ks)
	}
	ks = keys(lines(t, fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=ndjson&end=2015-03-01", fx.admin, nil).body))
	if !has(ks, "Encounter/e1") || !has(ks, "Observation/obs-2012") || has(ks, "Condition/c1") {
		t.Errorf("end=2015-03-01 (overlapping the encounter): %v", ks)
	}
}

func (fx *fixture) testTypes(t *testing.T) {
	ks := keys(lines(t, fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=ndjson&_type=Observation,Practitioner", fx.admin, nil).body))
	if ks[1] != "Patient/p1" {
		t.Fatalf("_type: %v", ks)
	}
	for _, k := range ks[2:] {
		if !strings.HasPrefix(k, "Observation/") && k != "Practitioner/pr1" {
			t.Errorf("_type=Observation,Practitioner exported %s", k)
		}
	}
	if !has(ks, "Practitioner/pr1") || !has(ks, "Observation/obs-2009") {
		t.Errorf("_type: %v", ks)
	}
	ks = keys(lines(t, fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=ndjson&_type=AuditEvent", fx.admin, nil).body))
	if !has(ks, "AuditEvent/ae1") {
		t.Errorf("_type=AuditEvent: %v", ks)
	}
}

func (fx *fixture) testSince(t *testing.T) {
	time.Sleep(5 * time.Millisecond)
	since := time.Now().UTC()
	time.Sleep(5 * time.Millisecond)
	put(t, fx.srv, fx.admin, "Observation", "obs-2009", `"status":"amended","code":{"text":"weight"},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2009-05-01"`)
	r := fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=ndjson&_since="+since.Format(time.RFC3339Nano), fx.admin, nil)
	ks := keys(lines(t, r.body))
	if r.status != 200 || !slices.Equal(ks[1:], []string{"Patient/p1", "Observation/obs-2009"}) {
		t.Errorf("_since: %d %v", r.status, ks)
	}
	ks = keys(lines(t, fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=ndjson&_until="+since.Format(time.RFC3339Nano), fx.admin, nil).body))
	if has(ks, "Observation/obs-2009") || !has(ks, "Observation/obs-2012") {
		t.Errorf("_until: %v", ks)
	}
}

func (fx *fixture) testBundle(t *testing.T) {
	r := fx.get(t, "GET", "Bundle/$phr-export?patient=Patient/p1", fx.admin, nil)
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/fhir+json") {
		t.Fatalf("%d %v", r.status, r.header)
	}
	var b struct {
		ResourceType, Type, Timestamp string
		Meta                          struct{ Profile []string }
		Identifier                    struct{ System, Value string }
		Entry                         []struct {
			FullURL  string          `json:"fullUrl"`
			Resource json.RawMessage `json:"resource"`
		}
	}
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("not JSON: %v\n%.300s", err, r.body)
	}
	if b.ResourceType != "Bundle" || b.Type != "document" || b.Timestamp == "" || b.Identifier.System == "" || b.Identifier.Value == "" || len(b.Meta.Profile) != 1 {
		t.Fatalf("bundle header: %+v", b)
	}
	checkCover(t, b.Entry[0].Resource, "p1")
	var ks []string
	for _, e := range b.Entry {
		var l line
		json.Unmarshal(e.Resource, &l)
		ks = append(ks, l.ResourceType+"/"+l.ID)
		if !strings.HasSuffix(e.FullURL, "/"+l.ResourceType+"/"+l.ID) {
			t.Errorf("fullUrl %s for %s/%s", e.FullURL, l.ResourceType, l.ID)
		}
	}
	if ks[1] != "Patient/p1" || !has(ks, "Binary/b1") || has(ks, "Patient/p2") {
		t.Errorf("bundle entries: %v", ks)
	}
}

func (fx *fixture) testSPHR(t *testing.T) {
	// A passphrase chosen by the client.
	r := fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=sphr", fx.admin, nil, "X-PHR-Passphrase", "my secret phrase")
	if r.status != 200 || r.header.Get("Content-Type") != "application/zip" || r.header.Get("X-PHR-Passphrase") != "" {
		t.Fatalf("%d %v %.200s", r.status, r.header, r.body)
	}
	if !strings.Contains(r.header.Get("Content-Disposition"), ".sphr") {
		t.Errorf("Content-Disposition %q", r.header.Get("Content-Disposition"))
	}
	fx.checkArchive(t, r.body, "my secret phrase")
	// A generated passphrase, returned once in the response header; POST
	// Parameters body.
	body := `{"resourceType":"Parameters","parameter":[{"name":"outputFormat","valueString":"sphr"},{"name":"patient","valueString":"Patient/p1"}]}`
	r = fx.get(t, "POST", "Bundle/$phr-export", fx.admin, strings.NewReader(body))
	pass := r.header.Get("X-PHR-Passphrase")
	if r.status != 200 || len(pass) < 24 {
		t.Fatalf("generated passphrase: %d %q %.200s", r.status, pass, r.body)
	}
	fx.checkArchive(t, r.body, pass)
	if _, err := sphr.Open(bytes.NewReader(r.body), int64(len(r.body)), "wrong"); err == nil {
		rd, _ := sphr.Open(bytes.NewReader(r.body), int64(len(r.body)), "wrong")
		if _, err := rd.Next(); err == nil {
			t.Fatal("read with a wrong passphrase")
		}
	}
	// Passphrase in a POST Parameters body.
	body = `{"resourceType":"Parameters","parameter":[{"name":"outputFormat","valueCode":"sphr"},{"name":"passphrase","valueString":"body phrase"}]}`
	r = fx.get(t, "POST", "Patient/p1/$phr-export", fx.admin, strings.NewReader(body))
	if r.status != 200 || r.header.Get("X-PHR-Passphrase") != "" {
		t.Fatalf("POST passphrase: %d %v", r.status, r.header)
	}
	fx.checkArchive(t, r.body, "body phrase")
	fx.check7z(t, r.body, "body phrase")
}

// checkArchive reads a .sphr and checks the layout and that Restore gives
// back the Binary and the large inline attachment byte for byte.
func (fx *fixture) checkArchive(t *testing.T, archive []byte, pass string) {
	t.Helper()
	rd, err := sphr.Open(bytes.NewReader(archive), int64(len(archive)), pass)
	if err != nil {
		t.Fatal(err)
	}
	if f := rd.Files(); len(f) != 1 || f[0] != "William-Sim/William-Sim.phr" {
		t.Fatalf("files %v", f)
	}
	if !rd.Has("William-Sim/Binary-b1.jpg") || !rd.Has("William-Sim/DocumentReference-d2-1.pdf") {
		t.Fatal("attachment files missing")
	}
	n := 0
	for {
		l, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n == 1 {
			checkCover(t, l.JSON, "p1")
		}
		out, err := rd.Restore(l)
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			ResourceType, ID, Data string
			Content                []struct{ Attachment struct{ Data, URL string } }
		}
		json.Unmarshal(out, &v)
		switch v.ResourceType + "/" + v.ID {
		case "Binary/b1":
			if got, _ := base64.StdEncoding.DecodeString(v.Data); !bytes.Equal(got, fx.binary) {
				t.Error("Binary/b1 not restored byte for byte")
			}
		case "DocumentReference/d2":
			got, _ := base64.StdEncoding.DecodeString(v.Content[0].Attachment.Data)
			if !bytes.Equal(got, fx.bigPDF) || v.Content[0].Attachment.URL != "" {
				t.Error("DocumentReference/d2 attachment not restored")
			}
		}
	}
	if n < 12 {
		t.Errorf("only %d resources in the archive", n)
	}
}

func (fx *fixture) check7z(t *testing.T, archive []byte, pass string) {
	bin, err := exec.LookPath("7z")
	if err != nil {
		t.Skip("7z not found: skipping (apt-get install -y p7zip-full; .ci/run does)")
	}
	dir := t.TempDir()
	arc := filepath.Join(dir, "export.sphr")
	os.WriteFile(arc, archive, 0o600)
	if out, err := exec.Command(bin, "x", "-y", "-pwrong-passphrase", "-o"+filepath.Join(dir, "bad"), arc).CombinedOutput(); err == nil {
		t.Fatalf("7z extracted with a wrong passphrase:\n%s", out)
	}
	if out, err := exec.Command(bin, "x", "-y", "-p"+pass, "-o"+filepath.Join(dir, "good"), arc).CombinedOutput(); err != nil {
		t.Fatalf("7z x: %v\n%s", err, out)
	}
	got, err := os.ReadFile(filepath.Join(dir, "good", "William-Sim", "Binary-b1.jpg"))
	if err != nil || !bytes.Equal(got, fx.binary) {
		t.Fatalf("7z-extracted Binary: %v", err)
	}
	phr, _ := os.ReadFile(filepath.Join(dir, "good", "William-Sim", "William-Sim.phr"))
	if ls := lines(t, phr); len(ls) < 12 || ls[1].ResourceType != "Patient" {
		t.Fatalf("7z-extracted .phr: %d lines", len(ls))
	}
}

func (fx *fixture) testSign(t *testing.T) {
	r := fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=sphr&sign=true", fx.admin, nil, "X-PHR-Passphrase", "pass phrase")
	sig := r.trailer.Get("X-PHR-Signature")
	if r.status != 200 || sig == "" {
		t.Fatalf("signature trailer: %d %v", r.status, r.trailer)
	}
	sum := sha256.Sum256(r.body)
	if _, err := fx.srv.App.Tokens.VerifyDetached(sig, sum[:]); err != nil {
		t.Fatalf("verify: %v", err)
	}
	r.body[len(r.body)/2] ^= 1
	sum = sha256.Sum256(r.body)
	if _, err := fx.srv.App.Tokens.VerifyDetached(sig, sum[:]); err == nil {
		t.Fatal("a modified archive verified")
	}
}

func (fx *fixture) testBadRequests(t *testing.T) {
	for path, where := range map[string]string{
		"Bundle/$phr-export?outputFormat=xml":               "outputFormat",
		"Bundle/$phr-export?start=20x0":                     "start",
		"Bundle/$phr-export?start=2020&end=2010":            "start",
		"Bundle/$phr-export?_type=Observaton":               "_type",
		"Bundle/$phr-export?patient=Patient/a b":            "patient",
		"Bundle/$phr-export?outputformat=ndjson":            "outputformat",
		"Bundle/$phr-export?outputFormat=sphr&passphrase=x": "passphrase",
		"Bundle/$phr-export?_since=yesterday":               "_since",
		"Bundle/$phr-export?outputFormat=ndjson&sign=maybe": "sign",
	} {
		r := fx.get(t, "GET", strings.ReplaceAll(path, " ", "%20"), fx.admin, nil)
		if r.status != 400 || !bytes.Contains(r.body, []byte(`"expression":["`+where+`"]`)) {
			t.Errorf("%s: %d %s", path, r.status, r.body)
		}
	}
	if r := fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=sphr", fx.admin, nil, "X-PHR-Passphrase", "short"); r.status != 400 || !bytes.Contains(r.body, []byte("at least 8")) {
		t.Errorf("short passphrase: %d %s", r.status, r.body)
	}
	if r := fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=ndjson", fx.admin, nil, "X-PHR-Passphrase", "a long passphrase"); r.status != 400 {
		t.Errorf("passphrase with ndjson: %d", r.status)
	}
	if r := fx.get(t, "GET", "Patient/nobody/$phr-export", fx.admin, nil); r.status != 404 {
		t.Errorf("unknown patient: %d", r.status)
	}
	if r := fx.get(t, "DELETE", "Patient/p1/$phr-export", fx.admin, nil); r.status != 405 {
		t.Errorf("DELETE: %d", r.status)
	}
	// The operation is listed and its definition served.
	r := fx.get(t, "GET", "metadata", "", nil)
	if !bytes.Contains(r.body, []byte(`{"name":"phr-export","definition":"`+phrexport.Canonical+`"}`)) {
		t.Errorf("CapabilityStatement does not list phr-export")
	}
	r = fx.get(t, "GET", "OperationDefinition/phr-export", "", nil)
	if r.status != 200 || !bytes.Contains(r.body, []byte(phrexport.Canonical)) {
		t.Errorf("OperationDefinition: %d", r.status)
	}
}

func (fx *fixture) testSystem(t *testing.T) {
	// Everything: every patient's group, then the shared resources, each
	// resource once.
	r := fx.get(t, "GET", "Bundle/$phr-export?outputFormat=ndjson", fx.admin, nil)
	ls := lines(t, r.body)
	ks := keys(ls)
	seen := map[string]bool{}
	covers := 0
	for _, k := range ks {
		if strings.HasPrefix(k, "Composition/") {
			covers++
			continue
		}
		if seen[k] {
			t.Errorf("%s exported twice", k)
		}
		seen[k] = true
	}
	if covers != 2 || !has(ks, "Organization/o2") || !has(ks, "Observation/obs-p2") || has(ks, "AuditEvent/ae1") {
		t.Errorf("system export: %d covers, %v", covers, ks)
	}
	if slices.Index(ks, "Patient/p2") < slices.Index(ks, "Observation/obs-2021") || slices.Index(ks, "Organization/o2") < slices.Index(ks, "Observation/obs-p2") {
		t.Errorf("system export order: %v", ks)
	}
	// The same at the system level ([base]/$phr-export) and Patient type level.
	for _, path := range []string{"$phr-export?outputFormat=ndjson", "Patient/$phr-export?outputFormat=ndjson"} {
		if r := fx.get(t, "GET", path, fx.admin, nil); r.status != 200 || len(lines(t, r.body)) != len(ls) {
			t.Errorf("%s: %d, %d lines", path, r.status, len(lines(t, r.body)))
		}
	}
	if r := fx.get(t, "GET", "Bundle/b1/$phr-export", fx.admin, nil); r.status != 404 {
		t.Errorf("Bundle instance: %d", r.status)
	}
	// A multi-patient Bundle: one cover page without subject, valid JSON.
	r = fx.get(t, "GET", "Bundle/$phr-export", fx.admin, nil)
	if !json.Valid(r.body) || bytes.Count(r.body, []byte(`"11503-0"`)) != 1 {
		t.Errorf("multi-patient Bundle")
	}
}

func (fx *fixture) testInlineErrors(t *testing.T) {
	db := fx.srv.App.Store
	ctx := t.Context()
	// Damage one stored resource in the middle of the record, and lose the
	// Binary's content.
	if _, err := db.Exec(ctx, `UPDATE resource_version SET json = ? WHERE seq = (SELECT seq FROM resource WHERE type = 'Observation' AND id = 'obs-2012')`, []byte("{\"resourceType\":\"Observation\",\n broken")); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Join(fx.srv.App.Config.DataDir, "blobs", "binary"))
	for _, e := range entries {
		os.Remove(filepath.Join(fx.srv.App.Config.DataDir, "blobs", "binary", e.Name()))
	}
	for _, format := range []string{"ndjson", "phr"} {
		r := fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat="+format, fx.admin, nil)
		if r.status != 200 {
			t.Fatalf("%d", r.status)
		}
		ls := lines(t, r.body)
		ks := keys(ls)
		bad := -1
		for i, l := range ls {
			if l.ResourceType == "OperationOutcome" && bytes.Contains(l.Raw, []byte("Observation/obs-2012")) {
				bad = i
			}
		}
		if bad < 0 || has(ks, "Observation/obs-2012") {
			t.Fatalf("no inline OperationOutcome for the damaged resource: %v", ks)
		}
		if idx := slices.Index(ks, "Observation/obs-2021"); idx < bad {
			t.Errorf("the stream did not go on after the error: %v", ks)
		}
		if has(ks, "Binary/b1") || !bytes.Contains(r.body, []byte(`Binary/b1 could not be exported`)) {
			t.Errorf("missing Binary content not reported inline")
		}
	}
	// The Bundle carries the outcome as an entry and stays valid JSON.
	r := fx.get(t, "GET", "Patient/p1/$phr-export", fx.admin, nil)
	if !json.Valid(r.body) || !bytes.Contains(r.body, []byte(`"OperationOutcome"`)) {
		t.Errorf("bundle with errors: valid %v", json.Valid(r.body))
	}
	// The .sphr holds the outcome line in its .phr.
	r = fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=sphr", fx.admin, nil, "X-PHR-Passphrase", "pass phrase")
	rd, err := sphr.Open(bytes.NewReader(r.body), int64(len(r.body)), "pass phrase")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for {
		l, err := rd.Next()
		if err != nil {
			break
		}
		if bytes.Contains(l.JSON, []byte("OperationOutcome")) && bytes.Contains(l.JSON, []byte("obs-2012")) {
			found = true
		}
	}
	if !found {
		t.Error(".sphr without the inline OperationOutcome")
	}
}

// TestRoundTrip exports Patient/p1 as .sphr, puts every restored resource
// into an empty server (through the FHIR API: the importer's own test does
// the same through $import), exports again and compares: the same
// resources (meta aside), the same attachment bytes.
func TestRoundTrip(t *testing.T) {
	fx := setup(t, "sqlite")
	r := fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=sphr", fx.admin, nil, "X-PHR-Passphrase", "pass phrase")
	if r.status != 200 {
		t.Fatalf("%d", r.status)
	}
	rd, err := sphr.Open(bytes.NewReader(r.body), int64(len(r.body)), "pass phrase")
	if err != nil {
		t.Fatal(err)
	}
	dst := servertest.Start(t, "sqlite")
	admin := dst.AdminToken()
	for {
		l, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(l.JSON, []byte(sphr.CoverTagSystem)) {
			continue // the cover page is made by each export
		}
		res, err := rd.Restore(l)
		if err != nil {
			t.Fatal(err)
		}
		var k line
		json.Unmarshal(res, &k)
		if pr := dst.Do("PUT", k.ResourceType+"/"+k.ID, admin, res); pr.Status >= 300 {
			t.Fatalf("PUT %s/%s: %d %s", k.ResourceType, k.ID, pr.Status, pr.Body)
		}
	}
	first := exportedResources(t, fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=ndjson", fx.admin, nil).body)
	fx2 := &fixture{srv: dst}
	second := exportedResources(t, fx2.get(t, "GET", "Patient/p1/$phr-export?outputFormat=ndjson", admin, nil).body)
	if len(first) != len(second) || len(first) < 12 {
		t.Fatalf("%d resources exported, %d after the round trip", len(first), len(second))
	}
	for k, v := range first {
		if second[k] != v {
			t.Errorf("%s differs after the round trip:\n%.300s\n%.300s", k, v, second[k])
		}
	}
}

// exportedResources maps Type/id to the resource JSON without meta
// (versionId and lastUpdated belong to the server that stores it) of an
// NDJSON export, cover page left out.
func exportedResources(t *testing.T, body []byte) map[string]string {
	out := map[string]string{}
	for _, l := range lines(t, body) {
		if l.ResourceType == "Composition" && bytes.Contains(l.Raw, []byte(sphr.CoverTagSystem)) {
			continue
		}
		var m map[string]json.RawMessage
		json.Unmarshal(l.Raw, &m)
		delete(m, "meta")
		b, _ := json.Marshal(m)
		out[l.ResourceType+"/"+l.ID] = string(b)
	}
	return out
}

// TestRoundTripImport: export Patient/p1 as .sphr, .phr and a Bundle,
// import each with $import into an empty server, export again: the same
// resources (meta aside) and the same attachment bytes (Binary/b1's data,
// d2's inline PDF). The export's cover page is not stored by the import
// (no stray Composition, no rejected line), and importing the file again
// writes nothing.
func TestRoundTripImport(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			fx := setup(t, d)
			first := exportedResources(t, fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=ndjson", fx.admin, nil).body)
			if len(first) < 12 {
				t.Fatalf("only %d resources exported", len(first))
			}
			for _, c := range []struct{ format, contentType string }{
				{"sphr", "application/zip"},
				{"phr", "application/x-ndjson"},
				{"bundle", "application/fhir+json"},
			} {
				t.Run(c.format, func(t *testing.T) {
					var pass []string
					if c.format == "sphr" {
						pass = []string{"X-PHR-Passphrase", "pass phrase"}
					}
					r := fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat="+c.format, fx.admin, nil, pass...)
					if r.status != 200 {
						t.Fatalf("%d %s", r.status, r.body)
					}
					dst := servertest.Start(t, d)
					admin := dst.AdminToken()
					fx2 := &fixture{srv: dst}
					imp := func() map[string]any {
						ir := fx2.get(t, "POST", "Bundle/$import?source=roundtrip", admin, bytes.NewReader(r.body), append([]string{"Content-Type", c.contentType}, pass...)...)
						if ir.status >= 300 {
							t.Fatalf("$import: %d %s", ir.status, ir.body)
						}
						return importSummary(t, ir.body)
					}
					sum := imp()
					if sum["rejected"] != 0.0 || sum["created"] != float64(len(first)) || !strings.Contains(fmt.Sprint(sum["outcome"]), "is the cover page of a phr export; it is not stored") {
						t.Errorf("$import of the .%s: %v (want created %d, rejected 0, the cover page reported)", c.format, sum, len(first))
					}
					if n := dst.Do("GET", "Composition?_summary=count", admin, nil).JSON(t)["total"]; n != 0.0 {
						t.Errorf("the import stored %v Compositions (the cover page)", n)
					}
					second := exportedResources(t, fx2.get(t, "GET", "Patient/p1/$phr-export?outputFormat=ndjson", admin, nil).body)
					for k, v := range first {
						if second[k] != v {
							t.Errorf("%s differs after export -> import -> export:\n%.400s\n%.400s", k, v, second[k])
						}
					}
					for k := range second {
						// The import records where the data came from:
						// Provenance is the only thing it may add.
						if _, ok := first[k]; !ok && !strings.HasPrefix(k, "Provenance/") {
							t.Errorf("%s appeared after export -> import -> export: %.300s", k, second[k])
						}
					}
					// The same file again: nothing new.
					if sum := imp(); sum["created"] != 0.0 || sum["updated"] != 0.0 || sum["rejected"] != 0.0 || sum["unchanged"] != float64(len(first)) {
						t.Errorf("second $import of the .%s: %v", c.format, sum)
					}
				})
			}
		})
	}
}

// importSummary flattens an $import Parameters answer: counts as numbers,
// the outcome's diagnostics as text.
func importSummary(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var p struct {
		Parameter []map[string]json.RawMessage
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("$import answer: %v\n%.300s", err, body)
	}
	out := map[string]any{}
	for _, x := range p.Parameter {
		var name string
		json.Unmarshal(x["name"], &name)
		for k, v := range x {
			switch {
			case k == "valueInteger" || k == "valueDecimal" || k == "valueUnsignedInt":
				var f float64
				json.Unmarshal(v, &f)
				out[name] = f
			case k == "resource":
				out[name] = string(v)
			}
		}
	}
	return out
}

// TestAudited: an export is recorded as an AuditEvent naming the caller.
func TestAudited(t *testing.T) {
	fx := setup(t, "sqlite")
	tok := fx.srv.Token("patient/*.rs", "p1")
	if r := fx.get(t, "GET", "Patient/p1/$phr-export?outputFormat=ndjson", tok, nil); r.status != 200 {
		t.Fatal(r.status)
	}
	if err := fx.srv.App.Audit.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	rows, err := fx.srv.App.Store.Query(t.Context(), `SELECT v.json FROM resource_version v WHERE v.type = 'AuditEvent'`)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var b []byte
		rows.Scan(&b)
		if bytes.Contains(b, []byte("GET /fhir/Patient/p1/$phr-export")) && bytes.Contains(b, []byte(`"reference":"Patient/p1"`)) {
			n++
		}
	}
	rows.Close()
	if n != 1 {
		t.Fatalf("%d AuditEvents for the export, want 1", n)
	}
}

// TestPaging: tiny pages (two rows, or one when the JSON budget is hit)
// give exactly the output of the default ones, in every mode.
func TestPaging(t *testing.T) {
	fx := setup(t, "sqlite")
	app := fx.srv.App
	ctx := access.With(t.Context(), access.System{Name: "test"})
	now := func() time.Time { return time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC) }
	def := phrexport.New(phrexport.Options{DB: app.Store, Records: app.Records, BaseURL: "http://x/fhir", Now: now})
	tiny := phrexport.New(phrexport.Options{DB: app.Store, Records: app.Records, BaseURL: "http://x/fhir", Now: now, PageSize: 2, PageBytes: 1})
	for _, patient := range []string{"", "p1"} {
		var outs [2]string
		for i, svc := range []*phrexport.Service{def, tiny} {
			p := &phrexport.Params{Format: "ndjson", Patient: patient}
			if err := svc.Prepare(ctx, p); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if _, err := svc.Export(ctx, p, &buf, nil); err != nil {
				t.Fatal(err)
			}
			// Cover pages have random ids.
			outs[i] = regexp.MustCompile(`"Composition","id":"[^"]+"`).ReplaceAllString(buf.String(), "")
		}
		if outs[0] != outs[1] || strings.Count(outs[0], "\n") < 12 {
			t.Errorf("patient %q: paged output differs (%d and %d lines)", patient, strings.Count(outs[0], "\n"), strings.Count(outs[1], "\n"))
		}
	}
}

// bundleOf returns the entries of a Bundle export as lines.
func bundleOf(t *testing.T, body []byte) []line {
	t.Helper()
	var b struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		}
	}
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatalf("not a Bundle: %v\n%.300s", err, body)
	}
	out := make([]line, len(b.Entry))
	for i, e := range b.Entry {
		json.Unmarshal(e.Resource, &out[i])
		out[i].Raw = e.Resource
	}
	return out
}

// TestCoverSourceNamesStore: on a FHIR base that names a server, the
// cover page's meta.source is that base; on a loopback base (phr serve's
// default, the same on every machine) the store's id follows as the
// fragment, the same in every export of the store and another in another
// store's.
func TestCoverSourceNamesStore(t *testing.T) {
	ctx := access.With(t.Context(), access.System{Name: "test"})
	sourceOf := func(app *server.App, base string) string {
		t.Helper()
		svc := phrexport.New(phrexport.Options{DB: app.Store, Records: app.Records, BaseURL: base})
		p := &phrexport.Params{Format: "ndjson", Patient: "p1"}
		if err := svc.Prepare(ctx, p); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if _, err := svc.Export(ctx, p, &buf, nil); err != nil {
			t.Fatal(err)
		}
		first, _, _ := bytes.Cut(buf.Bytes(), []byte("\n"))
		return sphr.CoverSource(first)
	}
	one, other := setup(t, "sqlite").srv.App, setup(t, "sqlite").srv.App
	if got := sourceOf(one, "https://phr.example/fhir"); got != "https://phr.example/fhir" {
		t.Errorf("a named server's export: %q", got)
	}
	a := sourceOf(one, "http://127.0.0.1:8080/fhir")
	if !regexp.MustCompile(`^http://127\.0\.0\.1:8080/fhir#store-[0-9a-f-]{36}$`).MatchString(a) {
		t.Errorf("a loopback server's export: %q", a)
	}
	if again := sourceOf(one, "http://localhost:8080/fhir"); again != "http://localhost:8080/fhir"+a[strings.Index(a, "#"):] {
		t.Errorf("the store's next export: %q, then %q", a, again)
	}
	if b := sourceOf(other, "http://127.0.0.1:8080/fhir"); b == a || !strings.HasPrefix(b, "http://127.0.0.1:8080/fhir#store-") {
		t.Errorf("two stores' exports: %q and %q", a, b)
	}
}
