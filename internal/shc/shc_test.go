package shc_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/phr-project/phr/internal/auth/jwks"
	"github.com/phr-project/phr/internal/shc"
	"github.com/phr-project/phr/internal/shc/shctest"
)

const examples = "../../../shared/data/smart-health-cards"

func need(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(examples); err != nil {
		t.Skipf("%s not found; skipping", examples)
	}
}

// sameJSON reports whether a and b are the same JSON value.
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}

// TestExamples reads the specification's example cards in each of their
// forms (file, JWS, QR texts, chunked for the big one) and checks each
// against the FHIR Bundle the examples give, and its signature against
// the example issuer's published key set: signed by the reference
// implementation, so an independent check of Verify.
func TestExamples(t *testing.T) {
	need(t)
	set, err := shc.LoadKeys(filepath.Join(examples, "issuer/.well-known/jwks.json"))
	if err != nil {
		t.Fatal(err)
	}
	issuers := &shc.Issuers{Trusted: set}
	for _, n := range []string{"00", "01", "02", "03"} {
		t.Run(n, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(examples, "example-"+n+"-a-fhirBundle.json"))
			if err != nil {
				t.Fatal(err)
			}
			file, _ := os.ReadFile(filepath.Join(examples, "example-"+n+"-e-file.smart-health-card"))
			jws, _ := os.ReadFile(filepath.Join(examples, "example-"+n+"-d-jws.txt"))
			qrs, _ := filepath.Glob(filepath.Join(examples, "example-"+n+"-f-qr-code-numeric-value-*.txt"))
			var qr []byte
			for i := len(qrs) - 1; i >= 0; i-- { // chunks in reverse: order does not matter
				b, _ := os.ReadFile(qrs[i])
				qr = append(qr, b...) // run together, as cat joins files without a final newline
			}
			for form, data := range map[string][]byte{"file": file, "jws": jws, "qr": qr} {
				cards, ok, err := shc.Find(data)
				if !ok || err != nil || len(cards) != 1 {
					t.Fatalf("%s: Find: %d cards, %v, %v", form, len(cards), ok, err)
				}
				if cards[0] != strings.TrimSpace(string(jws)) {
					t.Errorf("%s: the JWS differs from example-%s-d-jws.txt", form, n)
				}
				c, err := shc.Parse(cards[0])
				if err != nil {
					t.Fatalf("%s: %v", form, err)
				}
				if c.Issuer != "https://spec.smarthealth.cards/examples/issuer" || c.FHIRVersion != "4.0.1" || c.NotBefore.Year() < 2021 || len(c.Types) == 0 {
					t.Errorf("%s: card %+v", form, c)
				}
				if !sameJSON(t, c.Bundle, want) {
					t.Errorf("%s: the card's Bundle is not example-%s-a-fhirBundle.json", form, n)
				}
				keys, err := issuers.Key(context.Background(), c.Issuer, c.KeyID)
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Verify(keys[0]); err != nil {
					t.Errorf("%s: %v", form, err)
				}
			}
		})
	}
}

// TestVerify checks that a card altered after signing, or signed by
// another key, does not verify, and that keys are fetched from the issuer
// only when allowed.
func TestVerify(t *testing.T) {
	issuer, other := shctest.NewIssuer(t), shctest.NewIssuer(t)
	jwk := issuer.JWK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/iss/.well-known/jwks.json" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}})
	}))
	defer srv.Close()
	payload := `{"iss":"` + srv.URL + `/iss","nbf":1700000000,"vc":{"type":["https://smarthealth.cards#health-card"],"credentialSubject":{"fhirVersion":"4.0.1","fhirBundle":{"resourceType":"Bundle","type":"collection","entry":[]}}}}`
	good := issuer.Sign(t, "", []byte(payload))
	c, err := shc.Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	if !c.NotBefore.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("nbf %v", c.NotBefore)
	}
	ctx := context.Background()
	if _, err := (&shc.Issuers{}).Key(ctx, c.Issuer, c.KeyID); !errors.Is(err, shc.ErrNoKey) {
		t.Errorf("no trusted keys and no fetching: %v, want ErrNoKey", err)
	}
	keys, err := (&shc.Issuers{Fetch: &jwks.Cache{}}).Key(ctx, c.Issuer, c.KeyID)
	if err != nil || len(keys) != 1 {
		t.Fatalf("fetched keys: %v, %v", keys, err)
	}
	if err := c.Verify(keys[0]); err != nil {
		t.Errorf("good card: %v", err)
	}
	// Another key signed it (same kid claimed).
	forged, _ := shc.Parse(other.Sign(t, jwk.KeyID, []byte(payload)))
	if err := forged.Verify(keys[0]); !errors.Is(err, shc.ErrSignature) {
		t.Errorf("forged card: %v, want ErrSignature", err)
	}
	// Its payload replaced after signing.
	parts := strings.Split(good, ".")
	evil := other.Sign(t, jwk.KeyID, []byte(strings.Replace(payload, `"entry":[]`, `"entry":[{"resource":{"resourceType":"Patient"}}]`, 1)))
	altered, err := shc.Parse(parts[0] + "." + strings.Split(evil, ".")[1] + "." + parts[2])
	if err != nil {
		t.Fatal(err)
	}
	if err := altered.Verify(keys[0]); !errors.Is(err, shc.ErrSignature) {
		t.Errorf("altered card: %v, want ErrSignature", err)
	}
}

// TestFind checks what is and is not taken for a card, and the errors of
// broken ones.
func TestFind(t *testing.T) {
	for _, tc := range []struct {
		in      string
		ok      bool
		wantErr string
	}{
		{`{"resourceType":"Bundle","type":"collection"}`, false, ""},
		{`{"resourceType":"Patient","verifiableCredential":["x"]}`, false, ""},
		{`{"verifiableCredential":[1]}`, true, "not a string"},
		{`{"verifiableCredential":[]}`, true, "holds no card"},
		{"shc:/2/3/5676", true, "only [2] are here"},
		{"shc:/567", true, "odd number"},
		{"shc:/99", true, "past the base64url alphabet"},
		{"not a card", false, ""},
		{"eyJhbGciOiJFUzI1NiJ9.e30.c2ln", true, ""},
	} {
		_, ok, err := shc.Find([]byte(tc.in))
		if ok != tc.ok || (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("Find(%q) = %v, %v; want %v, error with %q", tc.in, ok, err, tc.ok, tc.wantErr)
		}
	}
	if _, err := shc.Parse("eyJhbGciOiJFUzI1NiIsInppcCI6IkRFRiJ9.bm90IGRlZmxhdGU.c2ln"); err == nil || !strings.Contains(err.Error(), "DEFLATE") {
		t.Errorf("a payload that does not inflate: %v", err)
	}
}
