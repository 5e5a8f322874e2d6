package search_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
)

// TestTransactionOnOneReadConnection runs a transaction Bundle with
// conditional creates, a conditional update and conditional references
// while the store's only read connection is held by someone else: the
// searches that resolve them must run on the transaction's own connection.
// Had the transaction waited for a second connection while holding its
// own, a pool of busy transactions would deadlock; here it would hang until
// the held connection is given back, and the test fails on its deadline.
func TestTransactionOnOneReadConnection(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d, servertest.Options{Configure: func(c *server.Config) { c.DBMaxConns = 1 }})
			tok := s.AdminToken()
			for _, r := range []*servertest.Response{
				s.Do("PUT", "Practitioner/dr", tok, `{"resourceType":"Practitioner","id":"dr","identifier":[{"system":"urn:npi","value":"42"}]}`),
				s.Do("PUT", "Patient/known", tok, `{"resourceType":"Patient","id":"known","identifier":[{"system":"urn:mrn","value":"K"}]}`),
			} {
				if r.Status != 201 {
					t.Fatalf("setup: %d %s", r.Status, r.Body)
				}
			}
			// Hold the only read connection: an open result set keeps it.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			rows, err := s.App.Store.Query(ctx, `SELECT 1`)
			if err != nil {
				t.Fatal(err)
			}
			released := false
			release := func() {
				if !released {
					released = true
					rows.Close()
				}
			}
			defer release()
			s.Client.Timeout = 15 * time.Second
			bundle := `{"resourceType":"Bundle","type":"transaction","entry":[
			  {"fullUrl":"urn:uuid:1b6b2bb4-0d3c-4c55-9a43-3a2d1f9f1a01","resource":{"resourceType":"Patient","identifier":[{"system":"urn:mrn","value":"NEW"}]},
			   "request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=urn:mrn|NEW"}},
			  {"resource":{"resourceType":"Patient","identifier":[{"system":"urn:mrn","value":"K"}]},
			   "request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=urn:mrn|K"}},
			  {"resource":{"resourceType":"Organization","identifier":[{"system":"urn:org","value":"O"}],"name":"Clinic"},
			   "request":{"method":"PUT","url":"Organization?identifier=urn:org|O"}},
			  {"resource":{"resourceType":"Encounter","status":"finished","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},
			     "subject":{"reference":"urn:uuid:1b6b2bb4-0d3c-4c55-9a43-3a2d1f9f1a01"},
			     "participant":[{"individual":{"reference":"Practitioner?identifier=urn:npi|42"}}],
			     "serviceProvider":{"reference":"Organization?identifier=urn:org|O"}},
			   "request":{"method":"POST","url":"Encounter"}}]}`
			r := s.Do("POST", s.FHIR, tok, bundle)
			if r.Status != 200 {
				t.Fatalf("transaction with the read connection held: %d %s", r.Status, r.Body)
			}
			var resp struct {
				Entry []struct {
					Response struct {
						Status   string `json:"status"`
						Location string `json:"location"`
					} `json:"response"`
				} `json:"entry"`
			}
			if err := json.Unmarshal(r.Body, &resp); err != nil || len(resp.Entry) != 4 {
				t.Fatalf("response: %v %s", err, r.Body)
			}
			if st := resp.Entry[1].Response.Status; !strings.HasPrefix(st, "200") {
				t.Errorf("the conditional create of an existing patient: %s, want 200", st)
			}
			if st := resp.Entry[2].Response.Status; !strings.HasPrefix(st, "201") {
				t.Errorf("the conditional update without a match: %s, want 201", st)
			}
			release()
			enc := s.Do("GET", strings.Split(resp.Entry[3].Response.Location, "/_history")[0], tok, nil)
			if enc.Status != 200 {
				t.Fatalf("read the encounter: %d %s", enc.Status, enc.Body)
			}
			pat := strings.Split(resp.Entry[0].Response.Location, "/_history")[0]
			org := strings.Split(resp.Entry[2].Response.Location, "/_history")[0]
			for _, want := range []string{`"reference":"` + pat + `"`, `"reference":"Practitioner/dr"`, `"reference":"` + org + `"`} {
				if !strings.Contains(string(enc.Body), want) {
					t.Errorf("the encounter lacks %s: %s", want, enc.Body)
				}
			}
		})
	}
}
