package audit_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phr-project/phr/internal/audit"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/server/servertest"
	"github.com/phr-project/phr/internal/store/storetest"
	"github.com/phr-project/phr/internal/validate"
)

type auditEvent struct {
	ID      string `json:"id"`
	Action  string `json:"action"`
	Outcome string `json:"outcome"`
	Subtype []struct {
		Code string `json:"code"`
	} `json:"subtype"`
	Agent []struct {
		Who struct {
			Reference string `json:"reference"`
			Display   string `json:"display"`
		} `json:"who"`
		AltID   string `json:"altId"`
		Network struct {
			Address string `json:"address"`
		} `json:"network"`
	} `json:"agent"`
	Entity []struct {
		What struct {
			Reference string `json:"reference"`
		} `json:"what"`
		Description string `json:"description"`
	} `json:"entity"`
}

func (e auditEvent) about(ref string) bool {
	for _, en := range e.Entity {
		if en.What.Reference == ref {
			return true
		}
	}
	return false
}

func (e auditEvent) desc() string {
	for _, en := range e.Entity {
		if en.Description != "" {
			return en.Description
		}
	}
	return ""
}

// events lists the AuditEvents visible to tok.
func events(t *testing.T, s *servertest.Server, tok string) []auditEvent {
	t.Helper()
	r := s.Do("GET", "AuditEvent/_history?_count=500", tok, nil)
	if r.Status != 200 {
		t.Fatalf("AuditEvent history: %d %s", r.Status, r.Body)
	}
	var b struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	json.Unmarshal(r.Body, &b)
	var out []auditEvent
	for _, e := range b.Entry {
		// Every stored AuditEvent is valid R4 (they skip the write-time
		// validation, so check here).
		tree, err := fhirjson.Parse(e.Resource)
		if err != nil {
			t.Fatalf("stored AuditEvent is not JSON: %v", err)
		}
		for _, is := range (validate.Options{}).Resource(tree) {
			if is.Severity == validate.Error {
				t.Errorf("stored AuditEvent invalid at %s: %s\n%s", is.Path, is.Message, e.Resource)
			}
		}
		var ev auditEvent
		json.Unmarshal(e.Resource, &ev)
		out = append(out, ev)
	}
	return out
}

func find(evs []auditEvent, desc string) *auditEvent {
	for i := range evs {
		if evs[i].desc() == desc {
			return &evs[i]
		}
	}
	return nil
}

func TestAuditEvents(t *testing.T) {
	for _, dialect := range storetest.Dialects() {
		t.Run(dialect, func(t *testing.T) { testAuditEvents(t, dialect) })
	}
}

func testAuditEvents(t *testing.T, dialect string) {
	s := servertest.Start(t, dialect)
	admin := s.AdminToken()
	mk := func(body string) string {
		r := s.Do("POST", strings.SplitN(strings.Split(body, `"resourceType":"`)[1], `"`, 2)[0], admin, body)
		if r.Status != 201 {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		return r.JSON(t)["id"].(string)
	}
	ann := mk(`{"resourceType":"Patient"}`)
	bob := mk(`{"resourceType":"Patient"}`)
	annObs := mk(`{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/` + ann + `"}}`)
	bobObs := mk(`{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/` + bob + `"}}`)
	annTok := s.Token("patient/*.rs", ann)
	bobTok := s.Token("patient/*.rs", bob)

	if r := s.Do("GET", "Observation/"+annObs, annTok, nil); r.Status != 200 {
		t.Fatalf("own read: %d", r.Status)
	}
	if r := s.Do("GET", "Observation/"+bobObs, annTok, nil); r.Status == 200 {
		t.Fatalf("read of another patient's data allowed")
	}
	if r := s.Do("GET", "Patient/"+bob, admin, nil); r.Status != 200 {
		t.Fatalf("admin read: %d", r.Status)
	}
	if r := s.Do("GET", "Patient/"+bob, "not-a-token", nil); r.Status != 401 {
		t.Fatalf("bad token: %d", r.Status)
	}
	// Endpoints outside the FHIR router are audited too, with the caller
	// identified from its token.
	shl := s.Do("GET", "/shl/links", annTok, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.App.Audit.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	all := events(t, s, admin)
	own := find(all, "GET /fhir/Observation/"+annObs)
	if own == nil {
		t.Fatalf("no event for the patient's own read among %d", len(all))
	}
	if own.Action != "R" || own.Outcome != "0" || own.Subtype[0].Code != "read" || own.Agent[0].Who.Reference != "Patient/"+ann ||
		own.Agent[0].Network.Address != "127.0.0.1" || !own.about("Patient/"+ann) || !own.about("Observation/"+annObs) {
		t.Errorf("own read event: %+v", own)
	}
	refused := find(all, "GET /fhir/Observation/"+bobObs)
	if refused == nil || refused.Outcome != "4" || !refused.about("Patient/"+bob) || refused.Agent[0].Who.Reference != "Patient/"+ann {
		t.Errorf("refused read event: %+v", refused)
	}
	adminRead := find(all, "GET /fhir/Patient/"+bob)
	if adminRead == nil || adminRead.Agent[0].Who.Display == "" {
		t.Fatalf("admin read event: %+v", adminRead)
	}
	created := find(all, "POST /fhir/Observation")
	if created == nil || created.Action != "C" {
		t.Errorf("create event: %+v", created)
	}
	var unauth int
	for _, e := range all {
		if e.Agent[0].Who.Display == "unauthenticated" && e.Outcome == "4" {
			unauth++
		}
	}
	if unauth == 0 {
		t.Error("no event for the request with a bad token")
	}

	// Ann sees the events about her record, not the admin's read of Bob.
	annEvents := events(t, s, annTok)
	if find(annEvents, "GET /fhir/Observation/"+annObs) == nil {
		t.Error("the patient cannot read the audit of her own access")
	}
	for _, e := range annEvents {
		if e.desc() == "GET /fhir/Patient/"+bob {
			t.Error("a patient sees an audit event about another patient")
		}
		if !e.about("Patient/"+ann) && e.Agent[0].Who.Reference != "Patient/"+ann {
			t.Errorf("a patient sees an unrelated audit event: %+v", e)
		}
	}
	// Bob sees that the admin read his record, and that Ann tried to.
	bobEvents := events(t, s, bobTok)
	if find(bobEvents, "GET /fhir/Patient/"+bob) == nil || find(bobEvents, "GET /fhir/Observation/"+bobObs) == nil {
		t.Errorf("the patient does not see accesses to his record (%d events)", len(bobEvents))
	}
	if e := find(all, "GET /shl/links"); e == nil || e.Agent[0].Who.Reference != "Patient/"+ann {
		t.Errorf("SMART Health Link listing (status %d) not audited with its caller: %+v", shl.Status, e)
	}
	// Search by patient finds the accesses to a record.
	r := s.Do("GET", "AuditEvent?patient="+bob+"&_count=200", admin, nil)
	if r.Status != 200 || !strings.Contains(string(r.Body), "GET /fhir/Patient/"+bob) || strings.Contains(string(r.Body), "GET /fhir/Observation/"+annObs) {
		t.Errorf("AuditEvent?patient=%s: %d %.300s", bob, r.Status, r.Body)
	}
	if r := s.Do("POST", "AuditEvent", annTok, `{"resourceType":"AuditEvent"}`); r.Status != http.StatusForbidden {
		t.Errorf("a read-only patient token wrote an AuditEvent: %d", r.Status)
	}
	if s.App.Audit.Dropped() != 0 {
		t.Errorf("%d events dropped", s.App.Audit.Dropped())
	}
}

// TestBurstOfIdenticalReadsCoalesced: thousands of identical reads in a
// burst are all recorded (nothing dropped) in a few AuditEvents carrying
// their count and period, so auditing keeps up with the read rate; a
// different access stays its own event.
func TestBurstOfIdenticalReadsCoalesced(t *testing.T) {
	s := servertest.Start(t, "sqlite")
	admin := s.AdminToken()
	r := s.Do("PUT", "Patient/burst", admin, `{"resourceType":"Patient","id":"burst"}`)
	if r.Status != 201 {
		t.Fatalf("PUT: %d %s", r.Status, r.Body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.App.Audit.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	before := s.App.Audit.Written()
	const n = 5000
	tok := s.Token("patient/*.rs", "burst")
	h := s.App.Handler()
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n/8; i++ {
				req := httptest.NewRequest("GET", "/fhir/Patient/burst", nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				req.RemoteAddr = "127.0.0.1:1234"
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != 200 {
					t.Errorf("read: %d", rec.Code)
					return
				}
			}
		}()
	}
	wg.Wait()
	if r := s.Do("GET", "Patient/burst?_pretty=true", admin, nil); r.Status != 200 {
		t.Fatalf("admin read: %d", r.Status)
	}
	if err := s.App.Audit.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if d := s.App.Audit.Dropped(); d != 0 {
		t.Fatalf("%d audit events dropped", d)
	}
	if got := s.App.Audit.Written() - before; got != n+1 {
		t.Fatalf("%d accesses recorded, want %d", got, n+1)
	}
	res := s.Do("GET", "AuditEvent?entity=Patient/burst&_count=1000", admin, nil)
	if res.Status != 200 {
		t.Fatalf("search: %d %s", res.Status, res.Body)
	}
	var b struct {
		Entry []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	json.Unmarshal(res.Body, &b)
	total, events, single := 0, 0, 0
	for _, e := range b.Entry {
		var ev struct {
			Agent []struct {
				Who struct{ Reference string } `json:"who"`
			} `json:"agent"`
			Period    *struct{ Start, End string } `json:"period"`
			Extension []struct {
				URL          string `json:"url"`
				ValueInteger int    `json:"valueInteger"`
			} `json:"extension"`
		}
		json.Unmarshal(e.Resource, &ev)
		if len(ev.Agent) == 0 || ev.Agent[0].Who.Reference != "Patient/burst" {
			single++ // the admin's read and the PUT: their own events
			continue
		}
		tree, _ := fhirjson.Parse(e.Resource)
		for _, is := range (validate.Options{}).Resource(tree) {
			if is.Severity == validate.Error {
				t.Errorf("coalesced AuditEvent invalid at %s: %s", is.Path, is.Message)
			}
		}
		events++
		c := 1
		for _, x := range ev.Extension {
			if x.URL == audit.CountExtension {
				c = x.ValueInteger
				if ev.Period == nil || ev.Period.Start == "" || ev.Period.End < ev.Period.Start {
					t.Errorf("coalesced event without a proper period: %s", e.Resource)
				}
			}
		}
		total += c
	}
	if total != n {
		t.Fatalf("the patient's AuditEvents count %d reads, want %d", total, n)
	}
	if events > n/50 {
		t.Fatalf("%d AuditEvents for %d identical reads: not coalesced", events, n)
	}
	if single < 1 {
		t.Fatalf("the admin's distinct read has no event of its own")
	}
	t.Logf("%d identical reads -> %d AuditEvents", n, events)
}
