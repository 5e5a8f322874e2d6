package importer_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/importer"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// attachmentURL returns the url of the first attachment of a stored
// DocumentReference.
func attachmentURL(t testing.TB, s *servertest.Server, tok, id string) string {
	t.Helper()
	r := s.Do("GET", "DocumentReference/"+id, tok, nil)
	var doc struct {
		Content []struct {
			Attachment struct{ URL string }
		}
	}
	if err := json.Unmarshal(r.Body, &doc); err != nil || r.Status != 200 || len(doc.Content) == 0 {
		t.Fatalf("read DocumentReference/%s: %d %v %.300s", id, r.Status, err, r.Body)
	}
	return doc.Content[0].Attachment.URL
}

// binaryData returns the decoded data of a stored Binary.
func binaryData(t testing.TB, s *servertest.Server, tok, ref string) string {
	t.Helper()
	r := s.Do("GET", ref, tok, nil, "Accept", "application/fhir+json")
	var b struct{ Data string }
	if err := json.Unmarshal(r.Body, &b); err != nil || r.Status != 200 {
		t.Fatalf("read %s: %d %v %.300s", ref, r.Status, err, r.Body)
	}
	raw, err := base64.StdEncoding.DecodeString(b.Data)
	if err != nil {
		t.Fatalf("%s: data %q: %v", ref, b.Data, err)
	}
	return string(raw)
}

// TestAttachmentURLsFollowIdentities: an attachment's url that points at a
// Binary of the source (Binary/[id], [source]/Binary/[id], or a Bundle
// entry's urn:uuid:) is rewritten through the identity map like a
// reference. When a second source's Binary has an id the store already
// uses for another Binary, it is stored under a new id, and the
// documents of that source must point at it, not at the other source's
// content. A document listed before its Binary waits for it.
func TestAttachmentURLsFollowIdentities(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	doc := func(id, url string) string {
		return `{"resourceType":"DocumentReference","id":"` + id + `","status":"current","subject":{"reference":"Patient/p1"},"content":[{"attachment":{"contentType":"text/plain","url":"` + url + `"}}]}` + "\n"
	}
	bin := func(id, data string) string {
		return `{"resourceType":"Binary","id":"` + id + `","contentType":"text/plain","data":"` + b64(data) + `"}` + "\n"
	}
	patient := `{"resourceType":"Patient","id":"p1","gender":"female"}` + "\n"
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			admin := s.AdminToken()
			sum, issues, st := postImport(t, s, admin, "http://hospital.example/fhir", "application/x-ndjson", strings.NewReader(patient+bin("b1", "hospital letter")+doc("d1", "Binary/b1")))
			if st != 200 || sum["created"] != 3 {
				t.Fatalf("the hospital's import: %d %v %v", st, sum, issues)
			}
			// The lab's document comes before its Binary, whose id is
			// the hospital's Binary's; its url is absolute, under the
			// lab's base.
			lab := patient + doc("d2", "http://lab.example/fhir/Binary/b1") + bin("b1", "lab result")
			sum, issues, st = postImport(t, s, admin, "http://lab.example/fhir", "application/x-ndjson", strings.NewReader(lab))
			if st != 200 || sum["created"] != 2 || sum["rejected"] != 0 {
				t.Fatalf("the lab's import: %d %v %v", st, sum, issues)
			}
			u := attachmentURL(t, s, admin, "d2")
			if u == "Binary/b1" || !strings.HasPrefix(u, "Binary/") {
				t.Fatalf("the lab's document points at %q, want its own Binary under a new id", u)
			}
			if got := binaryData(t, s, admin, u); got != "lab result" {
				t.Errorf("the lab's document's Binary holds %q", got)
			}
			if u := attachmentURL(t, s, admin, "d1"); u != "Binary/b1" || binaryData(t, s, admin, u) != "hospital letter" {
				t.Errorf("the hospital's document now points at %q", u)
			}
			// Imported again: nothing new.
			sum, issues, st = postImport(t, s, admin, "http://lab.example/fhir", "application/x-ndjson", strings.NewReader(lab))
			if st != 200 || sum["created"]+sum["updated"]+sum["conflicts"] != 0 || sum["unchanged"] != 3 {
				t.Errorf("the lab's import again: %d %v %v", st, sum, issues)
			}
			// A Bundle whose attachment names its Binary entry by
			// urn:uuid:, the Binary's id again taken.
			bundle := `{"resourceType":"Bundle","type":"collection","entry":[
				{"fullUrl":"urn:uuid:7b2e0c1a-0000-4000-8000-000000000001","resource":{"resourceType":"DocumentReference","id":"d3","status":"current","subject":{"reference":"Patient/p1"},"content":[{"attachment":{"contentType":"text/plain","url":"urn:uuid:7b2e0c1a-0000-4000-8000-000000000002"}}]}},
				{"fullUrl":"urn:uuid:7b2e0c1a-0000-4000-8000-000000000002","resource":{"resourceType":"Binary","id":"b1","contentType":"text/plain","data":"` + b64("clinic note") + `"}},
				{"fullUrl":"urn:uuid:7b2e0c1a-0000-4000-8000-000000000009","resource":{"resourceType":"ValueSet","id":"vs1","url":"urn:uuid:7b2e0c1a-0000-4000-8000-000000000009","status":"active"}}]}`
			sum, issues, st = postImport(t, s, admin, "clinic", "application/fhir+json", strings.NewReader(bundle))
			if st != 200 || sum["created"] != 3 || sum["rejected"] != 0 {
				t.Fatalf("the clinic's Bundle: %d %v %v", st, sum, issues)
			}
			// A resource's own canonical URL is not a link to rewrite.
			if r := s.Do("GET", "ValueSet/vs1", admin, nil); !strings.Contains(string(r.Body), `"url":"urn:uuid:7b2e0c1a-0000-4000-8000-000000000009"`) {
				t.Errorf("the ValueSet's canonical URL: %.300s", r.Body)
			}
			u = attachmentURL(t, s, admin, "d3")
			if !strings.HasPrefix(u, "Binary/") || u == "Binary/b1" {
				t.Fatalf("the clinic's document points at %q", u)
			}
			if got := binaryData(t, s, admin, u); got != "clinic note" {
				t.Errorf("the clinic's document's Binary holds %q", got)
			}
			// A transaction: the server assigns the Binary's id, and the
			// attachment that names its entry follows (FHIR's transaction
			// rules replace matching links in url elements too).
			tx := `{"resourceType":"Bundle","type":"transaction","entry":[
				{"fullUrl":"urn:uuid:7b2e0c1a-0000-4000-8000-000000000003","resource":{"resourceType":"Binary","contentType":"text/plain","data":"` + b64("scan") + `"},"request":{"method":"POST","url":"Binary"}},
				{"resource":{"resourceType":"DocumentReference","status":"current","subject":{"reference":"Patient/p1"},"content":[{"attachment":{"contentType":"text/plain","url":"urn:uuid:7b2e0c1a-0000-4000-8000-000000000003"}}]},"request":{"method":"POST","url":"DocumentReference"}}]}`
			r := s.Do("POST", "", admin, strings.NewReader(tx), "Content-Type", "application/fhir+json")
			var resp struct {
				Entry []struct{ Response struct{ Location string } }
			}
			if err := json.Unmarshal(r.Body, &resp); err != nil || r.Status != 200 || len(resp.Entry) != 2 {
				t.Fatalf("transaction: %d %v %.500s", r.Status, err, r.Body)
			}
			binID := strings.Split(resp.Entry[0].Response.Location, "/")[1]
			docID := strings.Split(resp.Entry[1].Response.Location, "/")[1]
			if u := attachmentURL(t, s, admin, docID); u != "Binary/"+binID {
				t.Errorf("the transaction's document points at %q, want Binary/%s", u, binID)
			}
			tx = `{"resourceType":"Bundle","type":"transaction","entry":[
				{"fullUrl":"urn:uuid:7b2e0c1a-0000-4000-8000-000000000008","resource":{"resourceType":"ValueSet","url":"urn:uuid:7b2e0c1a-0000-4000-8000-000000000008","status":"active"},"request":{"method":"POST","url":"ValueSet"}}]}`
			r = s.Do("POST", "", admin, strings.NewReader(tx), "Content-Type", "application/fhir+json")
			if err := json.Unmarshal(r.Body, &resp); err != nil || r.Status != 200 || len(resp.Entry) != 1 {
				t.Fatalf("transaction of a ValueSet: %d %v %.500s", r.Status, err, r.Body)
			}
			if r := s.Do("GET", resp.Entry[0].Response.Location, admin, nil); !strings.Contains(string(r.Body), `"url":"urn:uuid:7b2e0c1a-0000-4000-8000-000000000008"`) {
				t.Errorf("the transaction's ValueSet's canonical URL: %.300s", r.Body)
			}
		})
	}
}

// TestPatientImportsBinaries: a patient's import brings their documents
// with the Binaries they point at: a document may come before its Binary,
// and a Binary's securityContext may name a document of the same import.
// A Binary without a securityContext gets one naming their record (and
// the same file again changes nothing); one naming another record is
// refused, with the documents that point at it. A patient's export of
// their record, imported by them into another server, arrives whole.
func TestPatientImportsBinaries(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	doc := func(id, patient, url string) string {
		return `{"resourceType":"DocumentReference","id":"` + id + `","status":"current","subject":{"reference":"Patient/` + patient + `"},"content":[{"attachment":{"contentType":"text/plain","url":"` + url + `"}}]}` + "\n"
	}
	bin := func(id, extra, data string) string {
		return `{"resourceType":"Binary","id":"` + id + `","contentType":"text/plain",` + extra + `"data":"` + b64(data) + `"}` + "\n"
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			admin := s.AdminToken()
			sum, issues, st := postImport(t, s, admin, "hospital", "application/x-ndjson", strings.NewReader(`{"resourceType":"Patient","id":"alice"}`+"\n"+`{"resourceType":"Patient","id":"bob"}`+"\n"+bin("of-bob", `"securityContext":{"reference":"Patient/bob"},`, "bob's letter")))
			if st != 200 || sum["created"] != 3 {
				t.Fatalf("the hospital's import: %d %v %v", st, sum, issues)
			}
			alice := s.Token("patient/*.cruds", "alice")
			upload := doc("d1", "alice", "Binary/b1") + bin("b1", "", "my letter") +
				bin("b2", `"securityContext":{"reference":"DocumentReference/d2"},`, "my scan") + doc("d2", "alice", "Binary/b2")
			sum, issues, st = postImport(t, s, alice, "my-app", "application/x-ndjson", strings.NewReader(upload))
			if st != 200 || sum["created"] != 4 || sum["rejected"] != 0 {
				t.Fatalf("alice's upload: %d %v %v", st, sum, issues)
			}
			for id, want := range map[string]string{"d1": "my letter", "d2": "my scan"} {
				u := attachmentURL(t, s, alice, id)
				if got := binaryData(t, s, alice, u); got != want {
					t.Errorf("%s's Binary (%s) holds %q", id, u, got)
				}
			}
			r := s.Do("GET", "Binary/b1", admin, nil, "Accept", "application/fhir+json")
			if !strings.Contains(string(r.Body), `"securityContext":{"reference":"Patient/alice"}`) {
				t.Errorf("her Binary without a securityContext: %.300s", r.Body)
			}
			sum, issues, st = postImport(t, s, alice, "my-app", "application/x-ndjson", strings.NewReader(upload))
			if st != 200 || sum["unchanged"] != 4 || sum["created"]+sum["updated"]+sum["conflicts"]+sum["rejected"] != 0 {
				t.Errorf("alice's upload again: %d %v %v", st, sum, issues)
			}
			// A Binary of bob's context, and her document pointing at it.
			sum, issues, st = postImport(t, s, alice, "my-app", "application/x-ndjson", strings.NewReader(doc("d3", "alice", "Binary/b3")+bin("b3", `"securityContext":{"reference":"Patient/bob"},`, "planted")))
			if st != 200 || sum["rejected"] != 2 || sum["created"] != 0 {
				t.Errorf("alice imports a Binary of bob's context: %d %v %v", st, sum, issues)
			}
			// Her export, imported by her into another server that knows
			// her Patient.
			exp := s.Do("GET", "Patient/alice/$phr-export", alice, nil)
			if exp.Status != 200 || !strings.Contains(string(exp.Body), `"id":"b1"`) {
				t.Fatalf("alice's export: %d %.300s", exp.Status, exp.Body)
			}
			s2 := servertest.Start(t, d)
			if r := s2.Do("PUT", "Patient/alice", s2.AdminToken(), `{"resourceType":"Patient","id":"alice"}`); r.Status >= 300 {
				t.Fatalf("Patient/alice on the second server: %d %s", r.Status, r.Body)
			}
			alice2 := s2.Token("patient/*.cruds", "alice")
			sum, issues, st = postImport(t, s2, alice2, s.FHIR, exp.Header.Get("Content-Type"), strings.NewReader(string(exp.Body)))
			if st != 200 || sum["rejected"] != 0 || sum["created"] < 4 {
				t.Fatalf("her export into the second server: %d %v %v", st, sum, issues)
			}
			for id, want := range map[string]string{"d1": "my letter", "d2": "my scan"} {
				u := attachmentURL(t, s2, alice2, id)
				if got := binaryData(t, s2, alice2, u); got != want {
					t.Errorf("second server: %s's Binary (%s) holds %q", id, u, got)
				}
			}
		})
	}
}

// onePatient is a principal confined to one patient with every scope.
type onePatient string

func (onePatient) Allows(access.Interaction, string) bool { return true }
func (p onePatient) Patient() string                      { return string(p) }
func (onePatient) Filters(string) []url.Values            { return nil }
func (p onePatient) Subject() string                      { return "patient " + string(p) }

// TestPatientBinariesAcrossChunks: with one resource per chunk, a
// patient's documents still arrive with their Binaries in every order: a
// document before its Binary (it waits), a Binary whose securityContext
// names a document that waits, a Binary before its document. A document
// pointing at a Binary whose securityContext names another patient is
// refused however the two fall.
func TestPatientBinariesAcrossChunks(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	doc := func(id, url string) string {
		return `{"resourceType":"DocumentReference","id":"` + id + `","status":"current","subject":{"reference":"Patient/alice"},"content":[{"attachment":{"contentType":"text/plain","url":"` + url + `"}}]}` + "\n"
	}
	bin := func(id, ctx, data string) string {
		sc := ""
		if ctx != "" {
			sc = `"securityContext":{"reference":"` + ctx + `"},`
		}
		return `{"resourceType":"Binary","id":"` + id + `","contentType":"text/plain",` + sc + `"data":"` + b64(data) + `"}` + "\n"
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			app := openApp(t, d)
			admin := importer.New(app.Store, app.Records)
			if sum, issues := importReader(t, admin, "hospital", "ndjson", strings.NewReader(`{"resourceType":"Patient","id":"alice"}`+"\n"+`{"resourceType":"Patient","id":"bob"}`+"\n")); sum.Created != 2 {
				t.Fatalf("patients: %+v %v", sum, issues)
			}
			imp := importer.New(app.Store, app.Records)
			imp.ChunkSize = 1
			ctx := access.With(context.Background(), onePatient("alice"))
			var issues []fhir.Issue
			run, err := imp.Begin(ctx, importer.Options{Source: "my-app", Filename: "upload", Report: func(is fhir.Issue) { issues = append(issues, is) }})
			if err != nil {
				t.Fatal(err)
			}
			in := doc("d1", "Binary/b1") + bin("b1", "", "one") +
				doc("d2", "Binary/b2") + bin("b2", "DocumentReference/d2", "two") +
				bin("b3", "DocumentReference/d3", "three") + doc("d3", "Binary/b3") +
				doc("d4", "Binary/b4") + bin("b4", "Patient/bob", "planted") +
				bin("b5", "Patient/bob", "planted") + doc("d5", "Binary/b5")
			if err := run.NDJSON(strings.NewReader(in), "upload.ndjson"); err != nil {
				t.Fatal(err)
			}
			sum, err := run.Finish("done")
			if err != nil {
				t.Fatal(err)
			}
			if sum.Created != 6 || sum.Rejected != 4 {
				t.Errorf("alice's upload in chunks of one: %+v", sum)
				for _, is := range issues {
					t.Log(is.Severity, is.Diagnostics)
				}
			}
			rctx := access.With(context.Background(), onePatient("alice"))
			for id, want := range map[string]string{"b1": "one", "b2": "two", "b3": "three"} {
				if res, err := app.Records.Read(rctx, "Binary", id); err != nil || res.Deleted {
					t.Errorf("alice reads Binary/%s (%s): %v", id, want, err)
				}
			}
			for _, id := range []string{"d4", "d5"} {
				if _, err := app.Records.Read(rctx, "DocumentReference", id); err == nil {
					t.Errorf("DocumentReference/%s, pointing at a Binary of bob's context, was stored", id)
				}
			}
		})
	}
}

// TestBinaryConflictShowsBothContents: a conflict over a Binary shows
// what both sides hold. The current version's content is in the blob
// store, not in its stored JSON; the conflict's current side carries it,
// as a read does, and a diff of two versions names the change.
func TestBinaryConflictShowsBothContents(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	bin := func(version, data string) string {
		return `{"resourceType":"Binary","id":"b1","meta":{"versionId":"` + version + `"},"contentType":"text/plain","data":"` + b64(data) + `"}` + "\n"
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			admin := s.AdminToken()
			if sum, issues, st := postImport(t, s, admin, "hospital", "application/x-ndjson", strings.NewReader(bin("3", "first"))); st != 200 || sum["created"] != 1 {
				t.Fatalf("first: %d %v %v", st, sum, issues)
			}
			// An older version from the same source: a conflict.
			if sum, issues, st := postImport(t, s, admin, "hospital", "application/x-ndjson", strings.NewReader(bin("2", "second"))); st != 200 || sum["conflicts"] != 1 {
				t.Fatalf("second: %d %v %v", st, sum, issues)
			}
			r := s.Do("GET", "$conflicts?id=1", admin, nil)
			var out struct {
				Parameter []struct {
					Part []struct {
						Name     string
						Resource *struct{ Data string }
					}
				}
			}
			if err := json.Unmarshal(r.Body, &out); err != nil || r.Status != 200 || len(out.Parameter) != 1 {
				t.Fatalf("conflict: %d %v %.500s", r.Status, err, r.Body)
			}
			sides := map[string]string{}
			for _, p := range out.Parameter[0].Part {
				if p.Resource != nil {
					sides[p.Name] = p.Resource.Data
				}
			}
			if sides["current"] != b64("first") || sides["incoming"] != b64("second") {
				t.Errorf("the conflict's sides: %v", sides)
			}
			// Taken, the new version's content differs: $diff says so,
			// by the contents' SHA-256.
			if r := s.Do("POST", "$resolve-conflict?id=1&action=take", admin, nil); r.Status != 200 {
				t.Fatalf("take: %d %s", r.Status, r.Body)
			}
			sum := func(s string) string { h := sha256.Sum256([]byte(s)); return "sha256:" + hex.EncodeToString(h[:]) }
			r = s.Do("GET", "Binary/b1/$diff", admin, nil)
			if !strings.Contains(string(r.Body), `"valueString":"Binary.data"`) || !strings.Contains(string(r.Body), sum("first")) || !strings.Contains(string(r.Body), sum("second")) {
				t.Errorf("the diff of the two versions: %d %s", r.Status, r.Body)
			}
		})
	}
}
