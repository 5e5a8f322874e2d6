package importer_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/shc/shctest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// keysServer starts a server that checks cards with the key set file keys.
func keysServer(t *testing.T, dialect, keys string) *servertest.Server {
	return servertest.Start(t, dialect, servertest.Options{Configure: func(c *server.Config) { c.CardKeys = []string{keys} }})
}

// hasIssue reports whether one of the issues contains s.
func hasIssue(issues []string, s string) bool {
	for _, is := range issues {
		if strings.Contains(is, s) {
			return true
		}
	}
	return false
}

// TestHTTPImportHealthCards imports SMART Health Cards over HTTP on both
// stores: the specification's example card as a .smart-health-card file,
// checked with the example issuer's key set given to the server (the card
// was signed by the reference implementation), and as QR text; a card
// altered after signing, which is rejected whole and kept in quarantine;
// and a card of an issuer whose key set the server fetches (an issuer on
// 127.0.0.1).
func TestHTTPImportHealthCards(t *testing.T) {
	dir := findData(t, "smart-health-cards")
	file, err := os.ReadFile(filepath.Join(dir, "example-00-e-file.smart-health-card"))
	if err != nil {
		t.Fatal(err)
	}
	qr, err := os.ReadFile(filepath.Join(dir, "example-00-f-qr-code-numeric-value-0.txt"))
	if err != nil {
		t.Fatal(err)
	}
	// The fetched issuer.
	issuer := shctest.NewIssuer(t)
	jwk := issuer.JWK
	fetches := 0
	iss := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/pharmacy/.well-known/jwks.json" {
			http.NotFound(w, r)
			return
		}
		fetches++
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}})
	}))
	defer iss.Close()
	flu := `{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"resource:0","resource":{"resourceType":"Patient","name":[{"family":"Cardholder","given":["Ada"]}],"birthDate":"1970-03-04"}},{"fullUrl":"resource:1","resource":{"resourceType":"Immunization","status":"completed","vaccineCode":{"coding":[{"system":"http://hl7.org/fhir/sid/cvx","code":"141"}]},"patient":{"reference":"resource:0"},"occurrenceDateTime":"2025-10-01"}}]}`
	fetched := issuer.Card(t, iss.URL+"/pharmacy", flu)

	// The example card with its payload replaced: the signature is the
	// original's.
	var f struct{ VerifiableCredential []string }
	if err := json.Unmarshal(file, &f); err != nil {
		t.Fatal(err)
	}
	orig := strings.Split(f.VerifiableCredential[0], ".")
	forged := strings.Split(issuer.Card(t, "https://spec.smarthealth.cards/examples/issuer", flu), ".")
	altered := orig[0] + "." + forged[1] + "." + orig[2]

	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d, servertest.Options{Configure: func(c *server.Config) {
				c.CardKeys = []string{filepath.Join(dir, "issuer/.well-known/jwks.json")}
				c.CardFetch = true
			}})
			tok := s.AdminToken()
			sum, issues, st := postImport(t, s, tok, "vaccines", "application/smart-health-card", bytes.NewReader(file))
			if st != 200 {
				t.Fatalf("card file: %d %v", st, issues)
			}
			want(t, "card file", sum, "created", 4)
			if !hasIssue(issues, "a SMART Health Card of https://spec.smarthealth.cards/examples/issuer, issued 2023-06-22: its signature is valid") {
				t.Errorf("card file: the check is not reported: %q", issues)
			}
			// The same card as the text of its QR code: nothing new.
			sum, issues, _ = postImport(t, s, tok, "vaccines", "", bytes.NewReader(qr))
			want(t, "QR text", sum, "unchanged", 4)
			want(t, "QR text", sum, "created", 0)
			if !hasIssue(issues, "its signature is valid") {
				t.Errorf("QR text: %q", issues)
			}
			// Altered: rejected whole, kept verbatim in the quarantine.
			body := `{"verifiableCredential":[` + fmt.Sprintf("%q", altered) + `]}`
			sum, issues, _ = postImport(t, s, tok, "vaccines", "application/smart-health-card", strings.NewReader(body))
			want(t, "altered card", sum, "rejected", 1)
			want(t, "altered card", sum, "created", 0)
			if !hasIssue(issues, "the signature does not verify") {
				t.Errorf("altered card: %q", issues)
			}
			resp := s.Do("GET", fmt.Sprintf("$import-quarantine?batch=%v", sum["batch"]), tok, nil, "Accept", "application/x-ndjson")
			if !bytes.Contains(resp.Body, []byte(altered)) {
				t.Errorf("the altered card is not in the quarantine: %.500s", resp.Body)
			}
			if r := s.Do("GET", "Patient?family=Cardholder", tok, nil); bytes.Contains(r.Body, []byte(`"Cardholder"`)) {
				t.Errorf("the altered card's patient was stored")
			}
			// A card whose issuer's keys the server fetches.
			sum, issues, _ = postImport(t, s, tok, "pharmacy", "", strings.NewReader(fetched))
			want(t, "fetched issuer's card", sum, "created", 2)
			if !hasIssue(issues, "its signature is valid (key "+jwk.KeyID+")") {
				t.Errorf("fetched issuer's card: %q", issues)
			}
			r := s.Do("GET", "Immunization?patient.family=Cardholder", tok, nil)
			if !bytes.Contains(r.Body, []byte(`"code":"141"`)) {
				t.Errorf("the card's Immunization does not point at its Patient: %.1000s", r.Body)
			}
		})
	}
	if fetches == 0 {
		t.Error("the issuer's key set was never fetched")
	}
}

// TestHTTPImportRevokedCard imports the specification's example card 03,
// which the example issuer's revocation list (beside its key set) revokes:
// the card is rejected whole and kept in the quarantine, while example 00,
// which the list does not name, imports. Without the list, example 03
// imports with a warning that revocation was not checked.
func TestHTTPImportRevokedCard(t *testing.T) {
	dir := findData(t, "smart-health-cards")
	revoked, err := os.ReadFile(filepath.Join(dir, "example-03-e-file.smart-health-card"))
	if err != nil {
		t.Fatal(err)
	}
	valid, err := os.ReadFile(filepath.Join(dir, "example-00-e-file.smart-health-card"))
	if err != nil {
		t.Fatal(err)
	}
	// The key set alone, without its crl directory.
	alone := filepath.Join(t.TempDir(), "jwks.json")
	ks, _ := os.ReadFile(filepath.Join(dir, "issuer/.well-known/jwks.json"))
	os.WriteFile(alone, ks, 0o600)
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := keysServer(t, d, filepath.Join(dir, "issuer/.well-known/jwks.json"))
			tok := s.AdminToken()
			sum, issues, st := postImport(t, s, tok, "vaccines", "application/smart-health-card", bytes.NewReader(revoked))
			if st != 200 {
				t.Fatalf("revoked card: %d %v", st, issues)
			}
			want(t, "revoked card", sum, "rejected", 1)
			want(t, "revoked card", sum, "created", 0)
			if !hasIssue(issues, "a SMART Health Card of https://spec.smarthealth.cards/examples/issuer, issued 2023-06-22: revoked by its issuer (revocation list 1 of key 3Kfdg-XwP-7gXyywtUfUADwBumDOPKMQx-iELL11W9s); nothing of it was imported") {
				t.Errorf("revoked card: %q", issues)
			}
			resp := s.Do("GET", fmt.Sprintf("$import-quarantine?batch=%v", sum["batch"]), tok, nil, "Accept", "application/x-ndjson")
			var f struct{ VerifiableCredential []string }
			json.Unmarshal(revoked, &f)
			if len(f.VerifiableCredential) != 1 || !bytes.Contains(resp.Body, []byte(f.VerifiableCredential[0])) {
				t.Errorf("the revoked card is not in the quarantine: %.300s", resp.Body)
			}
			sum, issues, _ = postImport(t, s, tok, "vaccines", "application/smart-health-card", bytes.NewReader(valid))
			want(t, "valid card", sum, "created", 4)
			if !hasIssue(issues, "its signature is valid") || hasIssue(issues, "revoked") {
				t.Errorf("valid card: %q", issues)
			}

			s2 := keysServer(t, d, alone)
			sum, issues, _ = postImport(t, s2, s2.AdminToken(), "vaccines", "application/smart-health-card", bytes.NewReader(revoked))
			want(t, "no list", sum, "created", 3)
			if !hasIssue(issues, "its signature is valid") || !hasIssue(issues, "whether its issuer revoked it was not checked: revocation not checked: the key declares revocation lists (crlVersion 1)") {
				t.Errorf("no list: %q", issues)
			}
		})
	}
}

// TestHTTPImportCardPayload imports the payload of the specification's
// example card, the JSON its JWS signs, as a decoder of cards shows it
// (expanded over several lines) and minified: its Bundle is imported with
// a warning that nothing vouches for it, and the signed card of the same
// content then adds nothing but the check of its signature.
func TestHTTPImportCardPayload(t *testing.T) {
	dir := findData(t, "smart-health-cards")
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	expanded, minified, card := read("example-00-b-jws-payload-expanded.json"), read("example-00-c-jws-payload-minified.json"), read("example-00-e-file.smart-health-card")
	const unsigned = "the payload of a SMART Health Card of https://spec.smarthealth.cards/examples/issuer without its signature: its Bundle is imported, but nothing shows that the issuer issued it"
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := keysServer(t, d, filepath.Join(dir, "issuer/.well-known/jwks.json"))
			tok := s.AdminToken()
			sum, issues, st := postImport(t, s, tok, "vaccines", "application/fhir+json", bytes.NewReader(expanded))
			if st != 200 {
				t.Fatalf("expanded payload: %d %v", st, issues)
			}
			want(t, "expanded payload", sum, "created", 4)
			want(t, "expanded payload", sum, "rejected", 0)
			if !hasIssue(issues, unsigned) || len(issues) != 1 {
				t.Errorf("expanded payload: no warning that it is unverified: %q", issues)
			}
			sum, issues, _ = postImport(t, s, tok, "vaccines", "application/json", bytes.NewReader(minified))
			want(t, "minified payload", sum, "unchanged", 4)
			if !hasIssue(issues, unsigned) {
				t.Errorf("minified payload: %q", issues)
			}
			sum, issues, _ = postImport(t, s, tok, "vaccines", "application/smart-health-card", bytes.NewReader(card))
			want(t, "signed card", sum, "unchanged", 4)
			if !hasIssue(issues, "its signature is valid") || hasIssue(issues, "without its signature") {
				t.Errorf("signed card: %q", issues)
			}
			r := s.Do("GET", "Immunization?patient.family=Anyperson", tok, nil)
			if n := bytes.Count(r.Body, []byte(`"resourceType":"Immunization"`)); n != 3 {
				t.Errorf("%d Immunizations of the payload's Patient, want 3: %.800s", n, r.Body)
			}
		})
	}
}

// TestHTTPImportHealthCardPatientScoped imports a person's own vaccination
// card with their patient-scoped token (as the portal does): the card's
// Patient, a name and a birth date without an identifier, is taken as the
// token's own Patient, which already holds all it says, and the
// Immunization lands in that record. Someone else's card is rejected
// whole, saying why.
func TestHTTPImportHealthCardPatientScoped(t *testing.T) {
	issuer := shctest.NewIssuer(t)
	keys := filepath.Join(t.TempDir(), "jwks.json")
	b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{issuer.JWK}})
	os.WriteFile(keys, b, 0o600)
	card := func(family, given, born string) string {
		bundle := fmt.Sprintf(`{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"resource:0","resource":{"resourceType":"Patient","name":[{"family":%q,"given":[%q]}],"birthDate":%q}},{"fullUrl":"resource:1","resource":{"resourceType":"Immunization","status":"completed","vaccineCode":{"coding":[{"system":"http://hl7.org/fhir/sid/cvx","code":"208"}]},"patient":{"reference":"resource:0"},"occurrenceDateTime":"2025-09-15"}}]}`, family, given, born)
		return shctest.File(issuer.Card(t, "https://pharmacy.example", bundle))
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d, servertest.Options{Configure: func(c *server.Config) { c.CardKeys = []string{keys} }})
			admin := s.AdminToken()
			if r := s.Do("PUT", "Patient/alice", admin, `{"resourceType":"Patient","id":"alice","name":[{"use":"official","family":"Example","given":["Alice","Mary"]}],"gender":"female","birthDate":"1980-02-03"}`); r.Status >= 300 {
				t.Fatalf("Patient/alice: %d %s", r.Status, r.Body)
			}
			tok := s.Token("patient/*.cruds", "alice")
			sum, issues, st := postImport(t, s, tok, "pharmacy", "application/smart-health-card", strings.NewReader(card("Example", "Alice", "1980-02-03")))
			if st != 200 {
				t.Fatalf("own card: %d %v", st, issues)
			}
			want(t, "own card", sum, "created", 1)
			want(t, "own card", sum, "unchanged", 1)
			want(t, "own card", sum, "rejected", 0)
			want(t, "own card", sum, "conflicts", 0)
			r := s.Do("GET", "Immunization?patient=alice", tok, nil)
			if !strings.Contains(string(r.Body), `"code":"208"`) {
				t.Errorf("alice's immunizations: %.800s", r.Body)
			}
			if r := s.Do("GET", "Patient/alice", admin, nil); !strings.Contains(string(r.Body), `"versionId":"1"`) {
				t.Errorf("Patient/alice changed: %.500s", r.Body)
			}
			// Again: nothing new.
			sum, _, _ = postImport(t, s, tok, "pharmacy", "application/smart-health-card", strings.NewReader(card("Example", "Alice", "1980-02-03")))
			want(t, "own card again", sum, "created", 0)
			want(t, "own card again", sum, "unchanged", 2)
			// Someone else's card: rejected, with the reason.
			sum, issues, _ = postImport(t, s, tok, "pharmacy", "application/smart-health-card", strings.NewReader(card("Other", "Bob", "1990-01-01")))
			want(t, "other's card", sum, "created", 0)
			want(t, "other's card", sum, "rejected", 2)
			if j := strings.Join(issues, "\n"); !strings.Contains(j, "not the record's patient (Patient/alice): born 1990-01-01, not 1980-02-03") {
				t.Errorf("other's card: the reason is not given: %s", j)
			}
		})
	}
}

// TestHealthCardsOfAFamily imports, under one source, the cards of two
// people vaccinated at the same pharmacy on the same day (the same
// Immunization text, pointing at "resource:0") and then a later card of
// the first person that repeats that dose and adds one: each person keeps
// their own Immunization, and the repeated dose is found again, not
// copied.
func TestHealthCardsOfAFamily(t *testing.T) {
	issuer := shctest.NewIssuer(t)
	dose := func(date string, i int) string {
		return fmt.Sprintf(`{"fullUrl":"resource:%d","resource":{"resourceType":"Immunization","status":"completed","vaccineCode":{"coding":[{"system":"http://hl7.org/fhir/sid/cvx","code":"208"}]},"patient":{"reference":"resource:0"},"occurrenceDateTime":%q}}`, i, date)
	}
	card := func(family, born string, dates ...string) string {
		entries := []string{fmt.Sprintf(`{"fullUrl":"resource:0","resource":{"resourceType":"Patient","name":[{"family":%q}],"birthDate":%q}}`, family, born)}
		for i, d := range dates {
			entries = append(entries, dose(d, i+1))
		}
		return shctest.File(issuer.Card(t, "https://pharmacy.example", `{"resourceType":"Bundle","type":"collection","entry":[`+strings.Join(entries, ",")+`]}`))
	}
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			tok := s.AdminToken()
			for _, c := range []struct {
				name, body string
				created    float64
			}{
				{"first person", card("Parent", "1980-01-01", "2025-09-15"), 2},
				{"second person", card("Child", "2015-01-01", "2025-09-15"), 2},
				{"first person, later card", card("Parent", "1980-01-01", "2025-09-15", "2026-03-15"), 1},
			} {
				sum, issues, st := postImport(t, s, tok, "pharmacy", "application/smart-health-card", strings.NewReader(c.body))
				if st != 200 {
					t.Fatalf("%s: %d %v", c.name, st, issues)
				}
				want(t, c.name, sum, "created", c.created)
				want(t, c.name, sum, "conflicts", 0)
			}
			count := func(q string) int {
				r := s.Do("GET", q, tok, nil)
				var b struct{ Total int }
				json.Unmarshal(r.Body, &b)
				return b.Total
			}
			if n := count("Immunization?patient.family=Parent&_summary=count"); n != 2 {
				t.Errorf("the first person has %d immunizations, want 2", n)
			}
			if n := count("Immunization?patient.family=Child&_summary=count"); n != 1 {
				t.Errorf("the second person has %d immunizations, want 1", n)
			}
		})
	}
}
