package records_test

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/phr-project/phr/internal/procs"
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

// TestBatchGroupFallback: the write entries of a batch share a store
// transaction; when that transaction fails (not an entry on its own), the
// entries run again one by one, with the same outcome as if they had
// never been grouped and nothing of the failed attempt kept. An entry that
// fails on its own inside a group does not stop the others, and a GET
// entry reads what the entries before it wrote.
func TestBatchGroupFallback(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d)
			tok := s.AdminToken()
			ctx := access.With(context.Background(), access.System{Name: "test"})
			bundle := func(value string) *fhirjson.Value {
				b, err := fhirjson.Parse([]byte(`{"resourceType":"Bundle","type":"batch","entry":[
				 {"resource":{"resourceType":"Organization","identifier":[{"system":"urn:org","value":"` + value + `"}]},"request":{"method":"POST","url":"Organization","ifNoneExist":"identifier=urn:org|` + value + `"}},
				 {"resource":{"resourceType":"Organization","identifier":[{"system":"urn:org","value":"` + value + `"}]},"request":{"method":"POST","url":"Organization","ifNoneExist":"identifier=urn:org|` + value + `"}},
				 {"resource":{"resourceType":"Patient","birthDate":"nope"},"request":{"method":"POST","url":"Patient"}},
				 {"resource":{"resourceType":"Location","managingOrganization":{"reference":"Organization?identifier=urn:org|` + value + `"}},"request":{"method":"POST","url":"Location"}},
				 {"request":{"method":"GET","url":"Organization?identifier=urn:org|` + value + `"}},
				 {"resource":{"resourceType":"Location","id":"loc-` + value + `","managingOrganization":{"reference":"Organization?identifier=urn:org|` + value + `"}},"request":{"method":"PUT","url":"Location/loc-` + value + `"}}
				]}`))
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			get := func(ctx context.Context, rel string) (int, []byte, error) {
				r := s.Do("GET", rel, tok, nil)
				return r.Status, r.Body, nil
			}
			// failures counts the group transactions still to fail.
			failures := 0
			check := func(value string) {
				t.Helper()
				_, out, err := s.App.Records.ProcessBundleTree(ctx, bundle(value), get)
				if err != nil {
					t.Fatal(err)
				}
				want := []int{201, 200, 400, 201, 200, 201}
				for i, w := range want {
					if out[i].Status != w {
						t.Fatalf("%s: entry %d: status %d, want %d (%v)", value, i, out[i].Status, w, out[i].Outcome)
					}
				}
				org := out[0].Resource.ID
				if out[1].Resource.ID != org {
					t.Fatalf("%s: the second conditional create matched %s, not %s", value, out[1].Resource.ID, org)
				}
				for _, i := range []int{3, 5} {
					if !strings.Contains(string(out[i].Resource.JSON), `"Organization/`+org+`"`) {
						t.Fatalf("%s: entry %d does not reference Organization/%s: %s", value, i, org, out[i].Resource.JSON)
					}
				}
				if !strings.Contains(string(out[4].Body), `"id":"`+org+`"`) {
					t.Fatalf("%s: the GET entry did not find Organization/%s: %s", value, org, out[4].Body)
				}
				if n := len(expectSearch(t, s, tok, "Organization?identifier=urn:org|"+value)); n != 1 {
					t.Fatalf("%s: %d Organizations, want 1", value, n)
				}
				if n := len(expectSearch(t, s, tok, "Location?organization=Organization/"+org)); n != 2 {
					t.Fatalf("%s: %d Locations, want 2", value, n)
				}
				if failures != 0 {
					t.Fatalf("%s: the group failed %d times fewer than planned", value, failures)
				}
			}
			check("A")
			// The first group fails after its third entry: its writes are
			// rolled back and its entries run one by one.
			failures = 1
			records.SetAfterGroupEntry(func(k int) error {
				if k == 2 && failures > 0 {
					failures--
					return errors.New("injected failure of the group's transaction")
				}
				return nil
			})
			t.Cleanup(func() { records.SetAfterGroupEntry(nil) })
			check("B")
		})
	}
}

// TestLargeBundleIsBulkWork: a Bundle of BulkBundleBytes or more is
// processed as bulk work (all CPUs, package procs), a small one is not.
func TestLargeBundleIsBulkWork(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	tok := s.AdminToken()
	ctx := access.With(context.Background(), access.System{Name: "test"})
	before := procs.Active()
	var during []int
	get := func(ctx context.Context, rel string) (int, []byte, error) {
		during = append(during, procs.Active())
		r := s.Do("GET", rel, tok, nil)
		return r.Status, r.Body, nil
	}
	body := func(pad int) []byte {
		return []byte(`{"resourceType":"Bundle","type":"batch","entry":[
		 {"resource":{"resourceType":"Basic","code":{"text":"` + strings.Repeat("x", pad) + `"}},"request":{"method":"POST","url":"Basic"}},
		 {"request":{"method":"GET","url":"Basic?_count=1"}}]}`)
	}
	for _, c := range []struct {
		pad  int
		want int
	}{{10, before}, {records.BulkBundleBytes, before + 1}} {
		during = nil
		if _, out, err := s.App.Records.ProcessBundle(ctx, body(c.pad), get); err != nil || out[0].Status != 201 {
			t.Fatalf("bundle of %d bytes: %v %+v", c.pad, err, out)
		}
		if len(during) != 1 || during[0] != c.want {
			t.Fatalf("bundle with %d bytes of text: bulk work during it %v, want [%d]", c.pad, during, c.want)
		}
		if got := procs.Active(); got != before {
			t.Fatalf("bulk work after the bundle: %d, want %d", got, before)
		}
	}
}
