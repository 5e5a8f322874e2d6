package records_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/records"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// TestConditionalsChangedBeforeWrite: a transaction's conditional searches
// run before its write transaction; a write committed in between that
// changes their answers must not be overlooked. Over HTTP the Bundle is
// processed again (the conditional create then matches: no duplicate);
// given as a tree it fails with 409 and writes nothing.
func TestConditionalsChangedBeforeWrite(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			tok := s.AdminToken()
			ctx := access.With(context.Background(), access.System{Name: "test"})
			bundle := func(value string) string {
				return `{"resourceType":"Bundle","type":"transaction","entry":[
				 {"fullUrl":"urn:uuid:00000000-0000-0000-0000-00000000000a","resource":{"resourceType":"Organization","identifier":[{"system":"urn:org","value":"` + value + `"}]},"request":{"method":"POST","url":"Organization","ifNoneExist":"identifier=urn:org|` + value + `"}},
				 {"resource":{"resourceType":"Location","managingOrganization":{"reference":"urn:uuid:00000000-0000-0000-0000-00000000000a"}},"request":{"method":"POST","url":"Location"}}
				]}`
			}
			var concurrent string
			fired := false
			records.SetBeforeWrite(func() {
				if fired {
					return
				}
				fired = true
				r, err := s.App.Records.Create(ctx, "Organization", []byte(`{"resourceType":"Organization","identifier":[{"system":"urn:org","value":"X"}]}`), records.WriteOptions{})
				if err != nil {
					t.Error(err)
					return
				}
				concurrent = r.Resource.ID
			})
			t.Cleanup(func() { records.SetBeforeWrite(nil) })

			r := s.Do("POST", "", tok, bundle("X"))
			if r.Status != 200 {
				t.Fatalf("status %d: %s", r.Status, r.Body)
			}
			var resp struct {
				Entry []struct {
					Resource json.RawMessage `json:"resource"`
				} `json:"entry"`
			}
			if err := json.Unmarshal(r.Body, &resp); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(resp.Entry[0].Resource), `"id":"`+concurrent+`"`) ||
				!strings.Contains(string(resp.Entry[1].Resource), `"Organization/`+concurrent+`"`) {
				t.Fatalf("the conditional create did not match the concurrent Organization/%s: %s", concurrent, r.Body)
			}
			if n := len(expectSearch(t, s, tok, "Organization?identifier=urn:org|X")); n != 1 {
				t.Fatalf("%d Organizations with identifier X, want 1", n)
			}

			fired = false
			b, err := fhirjson.Parse([]byte(bundle("Y")))
			if err != nil {
				t.Fatal(err)
			}
			records.SetBeforeWrite(func() {
				if !fired {
					fired = true
					if _, err := s.App.Records.Create(ctx, "Organization", []byte(`{"resourceType":"Organization","identifier":[{"system":"urn:org","value":"Y"}]}`), records.WriteOptions{}); err != nil {
						t.Error(err)
					}
				}
			})
			_, _, err = s.App.Records.ProcessBundleTree(ctx, b, nil)
			if err == nil || !strings.Contains(err.Error(), "concurrent write") {
				t.Fatalf("a parsed Bundle whose conditional create changed: %v", err)
			}
			if n := len(expectSearch(t, s, tok, "Location")); n != 1 {
				t.Fatalf("%d Locations after the failed Bundle, want 1", n)
			}
		})
	}
}

// expectSearch returns the entries of a search.
func expectSearch(t *testing.T, s *servertest.Server, tok, q string) []any {
	t.Helper()
	r := s.Do("GET", q, tok, nil)
	if r.Status != 200 {
		t.Fatalf("%s: %d %s", q, r.Status, r.Body)
	}
	m := r.JSON(t)
	e, _ := m["entry"].([]any)
	return e
}
