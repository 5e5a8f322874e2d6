package search_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/records"
	"github.com/phr-project/phr/internal/search"
	"github.com/phr-project/phr/internal/server"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store"
	"github.com/phr-project/phr/internal/store/sqldb"
	"github.com/phr-project/phr/internal/store/storetest"
)

// TestSearchInsideTransaction holds the store's only read connection and
// runs, inside a write transaction, the searches of conditional
// interactions and a read: with the transaction in the context
// (store.WithTx) they run on the transaction's own connection, see what it
// wrote, and never wait for the held one. Had they waited, the test would
// fail on its deadline; with every connection held by such a transaction
// the pool would deadlock.
func TestSearchInsideTransaction(t *testing.T) {
	for _, d := range storetest.Dialects() {
		t.Run(d, func(t *testing.T) {
			s := servertest.Start(t, d, servertest.Options{Configure: func(c *server.Config) { c.DBMaxConns = 1 }})
			tok := s.AdminToken()
			if r := s.Do("PUT", "Practitioner/dr", tok, `{"resourceType":"Practitioner","id":"dr","identifier":[{"system":"urn:npi","value":"42"}]}`); r.Status != 201 {
				t.Fatalf("setup: %d %s", r.Status, r.Body)
			}
			eng := search.New(s.App.Store, s.App.Records, s.FHIR)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			// An open result set keeps the only read connection.
			held, err := s.App.Store.Query(ctx, `SELECT 1`)
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			err = s.App.Store.WriteTx(ctx, func(tx *sqldb.Tx) error {
				ctx := store.WithTx(ctx, tx)
				ids, err := eng.Match(ctx, "Practitioner", url.Values{"identifier": {"urn:npi|42"}}, 2)
				if err != nil || len(ids) != 1 || ids[0] != "dr" {
					return fmt.Errorf("match in the transaction: %v %v", ids, err)
				}
				// a resource written in the transaction is found by it
				js := `{"resourceType":"Practitioner","id":"nurse","identifier":[{"system":"urn:npi","value":"43"}]}`
				prep, err := s.App.Records.PrepareVersion(mustParse(t, js), "Practitioner", "nurse", 1, time.Now(), "POST", records.WriteOptions{})
				if err != nil {
					return err
				}
				if err := tx.Put(ctx, prep.Put); err != nil {
					return err
				}
				ids, err = eng.Match(ctx, "Practitioner", url.Values{"identifier": {"urn:npi|43"}}, 2)
				if err != nil || len(ids) != 1 || ids[0] != "nurse" {
					return fmt.Errorf("match of a resource written in the transaction: %v %v", ids, err)
				}
				res, err := s.App.Store.Read(ctx, "Practitioner", "nurse")
				if err != nil || res.Version != 1 {
					return fmt.Errorf("read in the transaction: %v %v", res, err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestTransactionsOnSmallPool runs transaction Bundles with conditional
// creates, a conditional update and conditional references, several at a
// time, on a store with one read connection (and, on PostgreSQL, two for
// writes): none may wait forever for a connection another one holds.
func TestTransactionsOnSmallPool(t *testing.T) {
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
			s.Client.Timeout = 30 * time.Second
			var wg sync.WaitGroup
			for n := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					checkBundle(t, s, tok, n)
				}()
			}
			wg.Wait()
		})
	}
}

// checkBundle posts a transaction with conditional interactions and
// references (distinct for each n) and checks how they were resolved.
func checkBundle(t *testing.T, s *servertest.Server, tok string, n int) {
	bundle := fmt.Sprintf(`{"resourceType":"Bundle","type":"transaction","entry":[
	  {"fullUrl":"urn:uuid:1b6b2bb4-0d3c-4c55-9a43-3a2d1f9f1a0%[1]d","resource":{"resourceType":"Patient","identifier":[{"system":"urn:mrn","value":"NEW%[1]d"}]},
	   "request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=urn:mrn|NEW%[1]d"}},
	  {"resource":{"resourceType":"Patient","identifier":[{"system":"urn:mrn","value":"K"}]},
	   "request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=urn:mrn|K"}},
	  {"resource":{"resourceType":"Organization","identifier":[{"system":"urn:org","value":"O%[1]d"}],"name":"Clinic"},
	   "request":{"method":"PUT","url":"Organization?identifier=urn:org|O%[1]d"}},
	  {"resource":{"resourceType":"Encounter","status":"finished","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},
	     "subject":{"reference":"urn:uuid:1b6b2bb4-0d3c-4c55-9a43-3a2d1f9f1a0%[1]d"},
	     "participant":[{"individual":{"reference":"Practitioner?identifier=urn:npi|42"}}],
	     "serviceProvider":{"reference":"Organization?identifier=urn:org|O%[1]d"}},
	   "request":{"method":"POST","url":"Encounter"}}]}`, n)
	r := s.Do("POST", s.FHIR, tok, bundle)
	if r.Status != 200 {
		t.Errorf("transaction %d: %d %s", n, r.Status, r.Body)
		return
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
		t.Errorf("response %d: %v %s", n, err, r.Body)
		return
	}
	if st := resp.Entry[1].Response.Status; !strings.HasPrefix(st, "200") {
		t.Errorf("the conditional create of an existing patient: %s, want 200", st)
	}
	if st := resp.Entry[2].Response.Status; !strings.HasPrefix(st, "201") {
		t.Errorf("the conditional update without a match: %s, want 201", st)
	}
	enc := s.Do("GET", strings.Split(resp.Entry[3].Response.Location, "/_history")[0], tok, nil)
	if enc.Status != 200 {
		t.Errorf("read the encounter: %d %s", enc.Status, enc.Body)
		return
	}
	pat := strings.Split(resp.Entry[0].Response.Location, "/_history")[0]
	org := strings.Split(resp.Entry[2].Response.Location, "/_history")[0]
	for _, want := range []string{`"reference":"` + pat + `"`, `"reference":"Practitioner/dr"`, `"reference":"` + org + `"`} {
		if !strings.Contains(string(enc.Body), want) {
			t.Errorf("the encounter lacks %s: %s", want, enc.Body)
		}
	}
}

func mustParse(t *testing.T, js string) *fhirjson.Value {
	t.Helper()
	v, err := fhirjson.Parse([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return v
}
