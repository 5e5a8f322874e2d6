package importer_test

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/importer"
	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// TestPatientImportsOwnSharedResources: a Synthea patient takes their
// record from a hospital's server (their own $phr-export, with the
// Medications, Practitioners, Organizations and Locations it names) and
// imports it, with their own token, into a server where they have another
// id. Nothing is rejected: the shared resources become theirs (an owner
// extension naming their Patient there), every reference of the record
// finds its target, another patient of that server sees none of them, and
// importing the file again changes nothing.
func TestPatientImportsOwnSharedResources(t *testing.T) {
	dir := findData(t, "synthea-120-bundles")
	var bundles [][]byte
	for _, f := range []string{"0-hospitalInformation1625911868739.json.gz", "0-practitionerInformation1625911868739.json.gz", "53eac4c0-8d6b-72da-2768-a6d08e687f48.json.gz"} {
		b, err := gunzip(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		bundles = append(bundles, b)
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			hospital := servertest.Start(t, d)
			admin := hospital.AdminToken()
			for _, b := range bundles {
				if sum, issues, st := postImport(t, hospital, admin, "synthea", "application/fhir+json", bytes.NewReader(b)); st != 200 || sum["rejected"] != 0 {
					t.Fatalf("the hospital's import: %d %v %v", st, sum, issues)
				}
			}
			var pats struct {
				Entry []struct{ Resource struct{ ID string } }
			}
			if err := json.Unmarshal(hospital.Do("GET", "Patient", admin, nil).Body, &pats); err != nil || len(pats.Entry) != 1 {
				t.Fatalf("the hospital's patients: %v %v", err, pats)
			}
			pid := pats.Entry[0].Resource.ID
			exp := hospital.Do("GET", "Patient/"+pid+"/$phr-export", hospital.Token("patient/*.rs", pid), nil)
			if exp.Status != 200 {
				t.Fatalf("the patient's export: %d %.300s", exp.Status, exp.Body)
			}
			shared := map[string]int{}
			for _, typ := range []string{"Medication", "Practitioner", "Organization", "Location"} {
				shared[typ] = strings.Count(string(exp.Body), `"resourceType":"`+typ+`","id":"`)
			}
			if shared["Medication"] == 0 || shared["Practitioner"] == 0 || shared["Organization"] == 0 {
				t.Fatalf("the export lacks shared resources: %v", shared)
			}

			home := servertest.Start(t, d)
			me, other := home.Token("patient/*.cruds", "me"), home.Token("patient/*.cruds", "other")
			sum, issues, st := postImport(t, home, me, hospital.FHIR, exp.Header.Get("Content-Type"), bytes.NewReader(exp.Body))
			if st != 200 || sum["rejected"] != 0 || sum["created"] == 0 {
				t.Fatalf("her record into her own server: %d %v %v", st, sum, issues)
			}
			for typ, n := range shared {
				r := home.Do("GET", typ+"?_count=500", me, nil)
				if got := strings.Count(string(r.Body), `"resourceType":"`+typ+`","id":"`); got != n {
					t.Errorf("%s: she sees %d of the %d of her record", typ, got, n)
				}
				if !strings.Contains(string(r.Body), `"url":"`+index.OwnerExtension+`","valueReference":{"reference":"Patient/me"}`) && n > 0 {
					t.Errorf("%s: not hers: %.400s", typ, r.Body)
				}
				if r := home.Do("GET", typ, other, nil); strings.Contains(string(r.Body), `"resourceType":"`+typ+`","id":"`) {
					t.Errorf("%s: another patient sees hers: %.300s", typ, r.Body)
				}
			}
			// Every reference of her record finds its target.
			mine := home.Do("GET", "Patient/me/$phr-export", me, nil)
			var doc struct {
				Entry []struct{ Resource map[string]any }
			}
			if err := json.Unmarshal(mine.Body, &doc); err != nil || mine.Status != 200 {
				t.Fatalf("her export at home: %d %v %.300s", mine.Status, err, mine.Body)
			}
			have := map[string]bool{}
			var refs []string
			for _, e := range doc.Entry {
				have[e.Resource["resourceType"].(string)+"/"+e.Resource["id"].(string)] = true
				servertest.References(e.Resource, &refs)
			}
			dangling := 0
			for _, ref := range refs {
				ref, _, _ = strings.Cut(ref, "/_history/")
				if !have[ref] && !strings.Contains(ref, ":") && !strings.Contains(ref, "?") && !strings.HasPrefix(ref, "#") {
					dangling++
					if dangling < 5 {
						t.Errorf("her record points at %s, which it lacks", ref)
					}
				}
			}
			if len(refs) == 0 {
				t.Fatal("no references found in her record")
			}
			sum, issues, st = postImport(t, home, me, hospital.FHIR, exp.Header.Get("Content-Type"), bytes.NewReader(exp.Body))
			if st != 200 || sum["created"]+sum["updated"]+sum["conflicts"]+sum["rejected"] != 0 {
				t.Errorf("her record again: %d %v %v", st, sum, issues)
			}
			// Her export from home, whose shared resources name Patient/me
			// as their owner, into a third server where she is "x": the
			// owner follows her Patient's identity like any reference.
			third := servertest.Start(t, d)
			x := third.Token("patient/*.cruds", "x")
			sum, issues, st = postImport(t, third, x, home.FHIR, mine.Header.Get("Content-Type"), bytes.NewReader(mine.Body))
			if st != 200 || sum["rejected"] != 0 || sum["created"] == 0 {
				t.Fatalf("her record into a third server: %d %v %v", st, sum, issues)
			}
			r := third.Do("GET", "Medication", x, nil)
			if got := strings.Count(string(r.Body), `"valueReference":{"reference":"Patient/x"}`); got != shared["Medication"] || strings.Contains(string(r.Body), "Patient/me") {
				t.Errorf("third server: %d of %d Medications owned by Patient/x: %.400s", got, shared["Medication"], r.Body)
			}
		})
	}
}

// TestHospitalDoesNotMatchPatientCopies: a patient's own copy of a
// Practitioner (owned by them) is not the hospital's. An admin's import
// whose Practitioner carries the same identifier, and whose Encounters
// point at it by that identifier, gets a Practitioner of its own, which
// the hospital's patients can read; the patient's copy stays as it was.
// A patient's conflict over their copy is theirs to resolve, and the copy
// stays theirs. Their lab's Practitioner with the NPI of the store's
// reference data, in other words, becomes a copy of their own rather than
// a rejected line.
func TestHospitalDoesNotMatchPatientCopies(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := aliceAndBob(t, d)
			admin := s.AdminToken()
			dr := func(id, family string) string {
				return `{"resourceType":"Practitioner","id":"` + id + `","identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"1234567893"}],"name":[{"family":"` + family + `"}]}` + "\n"
			}
			alice, bob := s.Token("patient/*.cruds", "alice"), s.Token("patient/*.cruds", "bob")
			sum, issues, st := postImport(t, s, alice, "my-app", "application/x-ndjson", strings.NewReader(dr("dr", "Alice's spelling")+encounterLine("e1", "alice", "Practitioner/dr")))
			if st != 200 || sum["created"] != 2 || sum["rejected"] != 0 {
				t.Fatalf("alice's upload: %d %v %v", st, sum, issues)
			}
			// Her second app spells her Practitioner otherwise: a conflict
			// she resolves with a merged resource, which stays hers.
			sum, issues, st = postImport(t, s, alice, "other-app", "application/x-ndjson", strings.NewReader(dr("x", "Other spelling")))
			if st != 200 || sum["conflicts"] != 1 {
				t.Fatalf("alice's second app: %d %v %v", st, sum, issues)
			}
			var list struct {
				Parameter []struct {
					Part []struct {
						Name         string
						ValueInteger int
					}
				}
			}
			r := s.Do("GET", "$conflicts", alice, nil)
			if err := json.Unmarshal(r.Body, &list); err != nil || len(list.Parameter) != 1 || len(list.Parameter[0].Part) == 0 || list.Parameter[0].Part[0].Name != "id" {
				t.Fatalf("alice's conflicts: %v %.400s", err, r.Body)
			}
			r = s.Do("POST", "$resolve-conflict?id="+strconv.Itoa(list.Parameter[0].Part[0].ValueInteger), alice, dr("dr", "Merged spelling"))
			if r.Status != 200 {
				t.Fatalf("alice resolves with a merged resource: %d %.400s", r.Status, r.Body)
			}
			if r := s.Do("GET", "Practitioner/dr", admin, nil); !strings.Contains(string(r.Body), "Merged spelling") || !strings.Contains(string(r.Body), `"valueReference":{"reference":"Patient/alice"}`) {
				t.Errorf("her resolved Practitioner: %.400s", r.Body)
			}
			if r := s.Do("GET", "Practitioner/dr", bob, nil); r.Status != 404 {
				t.Errorf("bob reads her resolved Practitioner: %d", r.Status)
			}
			hospital := dr("h-dr", "Smith") + encounterLine("e2", "bob", "Practitioner/h-dr") +
				encounterLine("e3", "bob", "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|1234567893")
			sum, issues, st = postImport(t, s, admin, "hospital", "application/x-ndjson", strings.NewReader(hospital))
			if st != 200 || sum["created"] != 3 || sum["rejected"] != 0 {
				t.Fatalf("the hospital's import: %d %v %v", st, sum, issues)
			}
			for _, e := range []string{"e2", "e3"} {
				ref := participant(t, s, bob, e)
				if ref == "Practitioner/dr" {
					t.Errorf("the hospital's Encounter/%s points at alice's own Practitioner", e)
				}
				if r := s.Do("GET", ref, bob, nil); r.Status != 200 || !strings.Contains(string(r.Body), "Smith") {
					t.Errorf("bob reads %s, which Encounter/%s points at: %d %.300s", ref, e, r.Status, r.Body)
				}
			}
			if r := s.Do("GET", "Practitioner/dr", alice, nil); r.Status != 200 || !strings.Contains(string(r.Body), "Merged spelling") {
				t.Errorf("alice's Practitioner after the hospital's import: %d %.300s", r.Status, r.Body)
			}
			// Her lab names a Practitioner of the store's reference data
			// (by its NPI) in other words: not hers to change, so a copy
			// of her own, which her lab's Encounter points at.
			jones := func(id, name string) string {
				return `{"resourceType":"Practitioner","id":"` + id + `","identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"9999999991"}],"name":[{"family":"` + name + `"}]}`
			}
			if r := s.Do("PUT", "Practitioner/jones", admin, jones("jones", "Jones")); r.Status != 201 {
				t.Fatalf("PUT Practitioner/jones: %d %s", r.Status, r.Body)
			}
			sum, issues, st = postImport(t, s, alice, "lab", "application/x-ndjson", strings.NewReader(jones("lab-dr", "Jones, MD")+"\n"+encounterLine("e4", "alice", "Practitioner/lab-dr")))
			if st != 200 || sum["created"] != 2 || sum["rejected"]+sum["conflicts"] != 0 {
				t.Fatalf("alice's lab: %d %v %v", st, sum, issues)
			}
			ref := participant(t, s, alice, "e4")
			typ, id, _ := strings.Cut(ref, "/")
			if r := s.Do("GET", ref, alice, nil); r.Status != 200 || !strings.Contains(string(r.Body), "Jones, MD") || s.Owner(typ, id) != "Patient/alice" {
				t.Errorf("her lab's Encounter points at %s: %d %.300s", ref, r.Status, r.Body)
			}
			if r := s.Do("GET", "Practitioner/jones", bob, nil); r.Status != 200 || strings.Contains(string(r.Body), "Jones, MD") {
				t.Errorf("the reference data after alice's lab: %d %.300s", r.Status, r.Body)
			}
		})
	}
}

// TestFamilyTakesRecordsFromOneHospital: two patients of one store take
// their records from the same hospital, which names the same Practitioner
// under the same id in both, and then the admin imports the hospital's
// data too. Each patient's Practitioner is their own copy, each
// Encounter points at one its patient can read, the admin's is reference
// data of its own, and importing any of the three again changes nothing.
// So with a leaflet (a Binary) the hospital gives every patient.
func TestFamilyTakesRecordsFromOneHospital(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := aliceAndBob(t, d)
			admin := s.AdminToken()
			const hospital = "http://hospital.example/fhir"
			dr := `{"resourceType":"Practitioner","id":"dr","name":[{"family":"Smith"}]}` + "\n"
			file := func(enc, patient string) string {
				return dr + encounterLine(enc, patient, "Practitioner/dr") +
					`{"resourceType":"Binary","id":"leaflet","contentType":"text/plain","data":"TEVBRkxFVA=="}` + "\n" +
					`{"resourceType":"DocumentReference","id":"doc-` + enc + `","status":"current","subject":{"reference":"Patient/` + patient + `"},"content":[{"attachment":{"contentType":"text/plain","url":"Binary/leaflet"}}]}` + "\n"
			}
			alice, bob := s.Token("patient/*.cruds", "alice"), s.Token("patient/*.cruds", "bob")
			runs := []struct {
				who, tok, enc, patient, owner string
			}{
				{"alice", alice, "e1", "alice", "Patient/alice"},
				{"bob", bob, "e2", "bob", "Patient/bob"},
				{"the admin", admin, "e3", "bob", ""},
			}
			drs := map[string]string{}
			for _, c := range runs {
				sum, issues, st := postImport(t, s, c.tok, hospital, "application/x-ndjson", strings.NewReader(file(c.enc, c.patient)))
				if st != 200 || sum["created"] != 4 || sum["rejected"] != 0 {
					t.Fatalf("%s's import: %d %v %v", c.who, st, sum, issues)
				}
				if c.who != "alice" {
					// Alice's copies hold the ids: Bob's are his own copies,
					// from the same source, and the admin's the store's
					// reference data. No other source holds them.
					msg := importer.RenamedCopy
					if c.owner == "" {
						msg = importer.RenamedOwned
					}
					for _, res := range []string{"Practitioner/dr ", "Binary/leaflet "} {
						if !slices.ContainsFunc(issues, func(is string) bool { return strings.Contains(is, res+msg) }) {
							t.Errorf("%s's import does not say %q of %s: %q", c.who, msg, res, issues)
						}
					}
					if slices.ContainsFunc(issues, func(is string) bool { return strings.Contains(is, importer.Renamed) }) {
						t.Errorf("%s's import says another source has the ids: %q", c.who, issues)
					}
				}
				tok := s.Token("patient/*.cruds", c.patient)
				if got := binaryData(t, s, tok, attachmentURL(t, s, tok, "doc-"+c.enc)); got != "LEAFLET" {
					t.Errorf("%s's import: the leaflet holds %q", c.who, got)
				}
				ref := participant(t, s, s.Token("patient/*.cruds", c.patient), c.enc)
				drs[c.who] = ref
				if r := s.Do("GET", ref, s.Token("patient/*.cruds", c.patient), nil); r.Status != 200 {
					t.Errorf("%s's import: %s reads %s, which Encounter/%s points at: %d", c.who, c.patient, ref, c.enc, r.Status)
				}
				typ, id, _ := strings.Cut(ref, "/")
				if o := s.Owner(typ, id); o != c.owner {
					t.Errorf("%s's import: %s is owned by %q, want %q", c.who, ref, o, c.owner)
				}
			}
			if drs["alice"] == drs["bob"] || drs["bob"] == drs["the admin"] || drs["alice"] == drs["the admin"] {
				t.Errorf("the Practitioners: %v", drs)
			}
			for _, c := range runs {
				sum, issues, st := postImport(t, s, c.tok, hospital, "application/x-ndjson", strings.NewReader(file(c.enc, c.patient)))
				if st != 200 || sum["created"]+sum["updated"]+sum["conflicts"]+sum["rejected"] != 0 {
					t.Errorf("%s's import again: %d %v %v", c.who, st, sum, issues)
				}
			}
		})
	}
}

// aliceAndBob starts a server with Patient/alice and Patient/bob.
func aliceAndBob(t *testing.T, d string) *servertest.Server {
	t.Helper()
	s := servertest.Start(t, d)
	for _, p := range []string{"alice", "bob"} {
		if r := s.Do("PUT", "Patient/"+p, s.AdminToken(), `{"resourceType":"Patient","id":"`+p+`"}`); r.Status >= 300 {
			t.Fatalf("PUT Patient/%s: %d %s", p, r.Status, r.Body)
		}
	}
	return s
}

// participant reads Encounter/id with tok and returns the reference of its
// one participant.
func participant(t *testing.T, s *servertest.Server, tok, id string) string {
	t.Helper()
	r := s.Do("GET", "Encounter/"+id, tok, nil)
	var enc struct {
		Participant []struct{ Individual struct{ Reference string } }
	}
	if err := json.Unmarshal(r.Body, &enc); err != nil || r.Status != 200 || len(enc.Participant) != 1 {
		t.Fatalf("read Encounter/%s: %d %v %.300s", id, r.Status, err, r.Body)
	}
	return enc.Participant[0].Individual.Reference
}

// TestPatientForksChangedReferenceData: the admin imported a hospital's
// data, and then a patient took their record from the same hospital: its
// Practitioner is the store's reference data, found by its id. When the
// hospital's newer version of that Practitioner comes in the patient's
// next pull, it is not the patient's to change: it becomes their own copy,
// which their new Encounter points at, and the reference data stays as it
// was. Nothing is rejected.
func TestPatientForksChangedReferenceData(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := aliceAndBob(t, d)
			admin := s.AdminToken()
			const hospital = "http://hospital.example/fhir"
			dr := func(family string) string {
				return `{"resourceType":"Practitioner","id":"dr2","name":[{"family":"` + family + `"}]}` + "\n"
			}
			enc := func(id, patient string) string { return encounterLine(id, patient, "Practitioner/dr2") }
			alice := s.Token("patient/*.cruds", "alice")
			for _, c := range []struct {
				who, tok, body     string
				created, unchanged float64
			}{
				{"the admin", admin, dr("Old") + enc("b1", "bob"), 2, 0},
				{"alice", alice, dr("Old") + enc("a1", "alice"), 1, 1},
				{"alice's pull", alice, dr("New") + enc("a2", "alice"), 2, 0},
				{"alice's pull again", alice, dr("New") + enc("a2", "alice"), 0, 2},
			} {
				sum, issues, st := postImport(t, s, c.tok, hospital, "application/x-ndjson", strings.NewReader(c.body))
				if st != 200 || sum["created"] != c.created || sum["unchanged"] != c.unchanged || sum["rejected"]+sum["conflicts"]+sum["updated"] != 0 {
					t.Fatalf("%s: %d %v %v", c.who, st, sum, issues)
				}
			}
			if ref := participant(t, s, alice, "a1"); ref != "Practitioner/dr2" {
				t.Errorf("her first Encounter points at %s", ref)
			}
			ref := participant(t, s, alice, "a2")
			typ, id, _ := strings.Cut(ref, "/")
			if r := s.Do("GET", ref, alice, nil); ref == "Practitioner/dr2" || r.Status != 200 || !strings.Contains(string(r.Body), "New") || s.Owner(typ, id) != "Patient/alice" {
				t.Errorf("her pulled Encounter points at %s: %d %.300s", ref, r.Status, r.Body)
			}
			if r := s.Do("GET", "Practitioner/dr2", admin, nil); !strings.Contains(string(r.Body), "Old") || s.Owner("Practitioner", "dr2") != "" {
				t.Errorf("the reference data: %.300s", r.Body)
			}
		})
	}
}

// encounterLine is an NDJSON line of an Encounter of patient whose one
// participant is ref.
func encounterLine(id, patient, ref string) string {
	return `{"resourceType":"Encounter","id":"` + id + `","status":"finished","class":{"code":"AMB"},"subject":{"reference":"Patient/` + patient + `"},"participant":[{"individual":{"reference":"` + ref + `"}}]}` + "\n"
}
