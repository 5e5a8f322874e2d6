// Package audit records every access to the FHIR API as a FHIR AuditEvent
// resource: who (the token's subject, client and patient), what (the
// interaction, the resources and the patients whose data was touched),
// when, from where (the client address) and the outcome (HTTP status).
//
// Events are written asynchronously, in batches (one FHIR transaction per
// batch), from a bounded queue: a request never waits on the audit write,
// and memory stays bounded. When the queue is full, Record waits briefly
// (back-pressure) before dropping an event; drops are counted and logged.
//
// AuditEvents are ordinary resources in the patient compartment (through
// agent.who and entity.what naming the Patient), so admins read them all
// and a patient reads those about their own record, with the same access
// rules as any other resource.
package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/r4"
	"github.com/phr-project/phr/internal/records"
	"github.com/phr-project/phr/internal/store"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// Event is one access.
type Event struct {
	Time time.Time
	// Method and Path of the request (the path without the query).
	Method, Path string
	// Query is the raw query string (search parameters), kept in the
	// AuditEvent's entity.query.
	Query string
	// Status is the HTTP status of the response.
	Status int
	// Subject names the caller ("" when unauthenticated), Client its
	// OAuth client, Patient the patient it is confined to.
	Subject, Client, Patient string
	// IP is the client address.
	IP string

	// count and first are set when identical events are coalesced: count
	// accesses, the first at first and the last at Time.
	count int
	first time.Time
}

// CountExtension is the URL of the extension that gives how many identical
// accesses (same caller, address, request and outcome) one AuditEvent
// stands for; its period spans the first to the last of them.
const CountExtension = "http://phr-project.github.io/fhir/StructureDefinition/audit-event-count"

// batch gathers the events waiting to be written, merging identical ones
// (same caller, client, patient, address, method, path, query and status)
// into one event with a count as they arrive, in the order of their first
// appearance. A stream of identical reads (a dashboard polling, a load
// test) thus becomes one AuditEvent per batch instead of one per request:
// the audit keeps up with the read rate without dropping anything, and
// since merging happens on arrival, a batch holds BatchSize distinct
// events however many accesses they stand for.
type batch struct {
	events []Event
	at     map[eventKey]int
}

type eventKey struct {
	method, path, query, subject, client, patient, ip string
	status                                            int
}

// add puts e in the batch, merging it into an identical event.
func (b *batch) add(e Event) {
	k := eventKey{e.Method, e.Path, e.Query, e.Subject, e.Client, e.Patient, e.IP, e.Status}
	if i, ok := b.at[k]; ok {
		g := &b.events[i]
		if g.count == 0 {
			g.count, g.first = 1, g.Time
		}
		g.count++
		if e.Time.Before(g.first) {
			g.first = e.Time
		}
		if e.Time.After(g.Time) {
			g.Time = e.Time
		}
		return
	}
	if b.at == nil {
		b.at = make(map[eventKey]int)
	}
	b.at[k] = len(b.events)
	b.events = append(b.events, e)
}

// take returns the batch's events and empties it.
func (b *batch) take() []Event {
	out := b.events
	b.events = nil
	clear(b.at)
	return out
}

// Options configure a Log.
type Options struct {
	// DB stores the events and resolves the patients of resources named
	// by a request.
	DB *sqldb.DB
	// QueueSize bounds the events waiting to be written (default 10000).
	QueueSize int
	// BatchSize is the most events written in one transaction (default 500).
	BatchSize int
	// Interval is the longest an event waits for its batch (default 1 s).
	Interval time.Duration
	// ClientIP finds the client address of a request.
	ClientIP func(*http.Request) string
	// Auth identifies callers of endpoints that authenticate on their own
	// (bulk export files, SMART Health Link management).
	Auth Authenticator
}

// Log writes AuditEvents in the background. Close it to flush.
type Log struct {
	o       Options
	queue   chan Event
	flushes chan chan struct{}
	done    chan struct{}
	closing sync.Once
	dropped atomic.Int64
	written atomic.Int64
}

// New starts a Log.
func New(o Options) *Log {
	if o.QueueSize <= 0 {
		o.QueueSize = 10_000
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 500
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.ClientIP == nil {
		o.ClientIP = func(r *http.Request) string { return r.RemoteAddr }
	}
	l := &Log{o: o, queue: make(chan Event, o.QueueSize), flushes: make(chan chan struct{}), done: make(chan struct{})}
	go l.run()
	return l
}

// Record queues an event. It waits up to 100 ms when the queue is full,
// then drops the event (counted in Dropped).
func (l *Log) Record(e Event) {
	select {
	case l.queue <- e:
		return
	default:
	}
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case l.queue <- e:
	case <-t.C:
		if n := l.dropped.Add(1); n&(n-1) == 0 { // log at 1, 2, 4, 8...
			slog.Error("audit queue full; events dropped", "dropped", n)
		}
	}
}

// Dropped returns how many events were dropped because the queue was full.
func (l *Log) Dropped() int64 { return l.dropped.Load() }

// Written returns how many events have been stored (an AuditEvent that
// stands for several identical accesses counts each of them).
func (l *Log) Written() int64 { return l.written.Load() }

// Flush waits until every event recorded before the call is stored.
func (l *Log) Flush(ctx context.Context) error {
	reply := make(chan struct{})
	select {
	case l.flushes <- reply:
	case <-l.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-reply:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stores the queued events and stops the Log.
func (l *Log) Close() {
	l.closing.Do(func() { close(l.queue) })
	<-l.done
}

// drainPause is how long the writer lets events gather in the queue after
// taking some: under a steady stream of requests it then takes them in
// bulk, instead of being woken (a goroutine switch) by every single one.
// At tens of thousands of requests per second the queue holds a few
// hundred events after a pause, far from its bound.
const drainPause = 5 * time.Millisecond

func (l *Log) run() {
	defer close(l.done)
	tick := time.NewTicker(l.o.Interval)
	defer tick.Stop()
	var b batch
	write := func() {
		events := b.take()
		for len(events) > 0 {
			n := min(len(events), l.o.BatchSize)
			l.write(events[:n])
			events = events[n:]
		}
	}
	// drain takes what is waiting in the queue, writing whenever the
	// batch is full; it reports false when the queue was closed.
	drain := func() bool {
		for {
			select {
			case e, ok := <-l.queue:
				if !ok {
					return false
				}
				b.add(e)
				if len(b.events) >= l.o.BatchSize {
					write()
				}
			default:
				return true
			}
		}
	}
	for {
		select {
		case e, ok := <-l.queue:
			if !ok {
				write()
				return
			}
			b.add(e)
			if !drain() {
				write()
				return
			}
			time.Sleep(drainPause)
		case <-tick.C:
			if !drain() {
				write()
				return
			}
			write()
		case reply := <-l.flushes:
			open := drain()
			write()
			close(reply)
			if !open {
				return
			}
		}
	}
}

// write stores a batch as one transaction; on failure each event is
// logged (without its query, which may hold personal data) so nothing
// disappears silently.
//
// The AuditEvents are built here, so they skip the record service's
// validation (a test validates their shape against R4) and go straight to
// the store with their index entries and compartments: this write runs
// for every API request, and the validation and bundle machinery would
// cost more than the storing.
func (l *Log) write(events []Event) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = access.With(ctx, access.System{Name: "audit"})
	puts := make([]*store.Put, 0, len(events))
	var err error
	for _, e := range events {
		var p *store.Put
		if p, err = l.put(ctx, e); err != nil {
			break
		}
		puts = append(puts, p)
	}
	if err == nil {
		err = l.o.DB.Write(ctx, func(tx store.Tx) error {
			for _, p := range puts {
				if err := tx.Put(ctx, p); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		slog.Error("audit events not stored", "count", len(events), "err", err)
		for _, e := range events {
			slog.Warn("unstored audit event", "time", e.Time, "method", e.Method, "path", e.Path, "status", e.Status, "subject", e.Subject, "ip", e.IP)
		}
		return
	}
	for _, e := range events {
		l.written.Add(int64(max(e.count, 1)))
	}
}

// put builds the stored version of e's AuditEvent.
func (l *Log) put(ctx context.Context, e Event) (*store.Put, error) {
	id := fhir.NewID()
	at := time.Now().UTC().Truncate(time.Microsecond)
	return Put(id, at, l.resource(ctx, e))
}

// Put builds a store.Put of a new AuditEvent (version 1) from its content
// (without resourceType, id and meta), with index entries and patient
// compartments.
func Put(id string, at time.Time, content map[string]any) (*store.Put, error) {
	delete(content, "resourceType")
	rest, err := json.Marshal(content)
	if err != nil {
		return nil, fmt.Errorf("encode AuditEvent: %w", err)
	}
	head, _ := json.Marshal(map[string]any{"versionId": "1", "lastUpdated": fhir.FormatInstant(at)})
	var b bytes.Buffer
	b.WriteString(`{"resourceType":"AuditEvent","id":`)
	idJSON, _ := json.Marshal(id)
	b.Write(idJSON)
	b.WriteString(`,"meta":`)
	b.Write(head)
	if len(rest) > 2 {
		b.WriteByte(',')
		b.Write(rest[1:])
	} else {
		b.WriteByte('}')
	}
	tree, err := fhirjson.Parse(b.Bytes())
	if err != nil {
		return nil, fmt.Errorf("parse AuditEvent: %w", err)
	}
	entries, err := index.Extract("AuditEvent", tree)
	if err != nil {
		return nil, fmt.Errorf("index AuditEvent: %w", err)
	}
	return &store.Put{
		Resource: store.Resource{Type: "AuditEvent", ID: id, Version: 1, LastUpdated: at, Method: "POST", JSON: b.Bytes()},
		Index:    &entries,
		Patients: records.Patients("AuditEvent", id, &entries),
	}, nil
}

// interaction names the FHIR interaction of a request and its AuditEvent
// action code (C R U D E).
func interaction(method string, seg []string) (string, string) {
	op := len(seg) > 0 && strings.HasPrefix(seg[len(seg)-1], "$")
	switch {
	case op:
		return "operation", "E"
	case method == http.MethodGet || method == http.MethodHead:
		switch {
		case len(seg) == 0:
			return "search-system", "E"
		case seg[len(seg)-1] == "_history":
			switch len(seg) {
			case 1:
				return "history-system", "R"
			case 2:
				return "history-type", "R"
			}
			return "history-instance", "R"
		case len(seg) == 1:
			return "search-type", "E"
		case len(seg) == 2:
			return "read", "R"
		case len(seg) == 4 && seg[2] == "_history":
			return "vread", "R"
		}
		return "search-type", "E"
	case method == http.MethodPost:
		switch {
		case len(seg) == 0:
			return "transaction", "E"
		case seg[len(seg)-1] == "_search":
			return "search-type", "E"
		}
		return "create", "C"
	case method == http.MethodPut:
		return "update", "U"
	case method == http.MethodPatch:
		return "patch", "U"
	case method == http.MethodDelete:
		return "delete", "D"
	}
	return "operation", "E"
}

func ref(s string) map[string]any { return map[string]any{"reference": s} }

// resource builds the AuditEvent of e.
func (l *Log) resource(ctx context.Context, e Event) map[string]any {
	seg := strings.FieldsFunc(strings.TrimPrefix(e.Path, "/fhir"), func(r rune) bool { return r == '/' })
	sub, action := interaction(e.Method, seg)
	if e.Path != "/fhir" && !strings.HasPrefix(e.Path, "/fhir/") {
		sub, action = "operation", "E" // SMART Health Links
	}
	outcome := "0"
	switch {
	case e.Status >= 500:
		outcome = "8"
	case e.Status >= 400:
		outcome = "4"
	}
	agent := map[string]any{
		"type":      map[string]any{"coding": []any{map[string]string{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type", "code": "humanuser", "display": "human user"}}},
		"requestor": true,
		"network":   map[string]string{"address": e.IP, "type": "2"},
	}
	switch {
	case strings.HasPrefix(e.Subject, "Patient/"):
		agent["who"] = ref(e.Subject)
	case e.Patient != "":
		// A caller confined to a patient acts for that patient.
		agent["who"] = map[string]any{"reference": "Patient/" + e.Patient, "display": e.Subject}
	case e.Subject != "":
		agent["who"] = map[string]any{"identifier": map[string]string{"system": "urn:phr:subject", "value": e.Subject}, "display": e.Subject}
	default:
		agent["who"] = map[string]any{"display": "unauthenticated"}
	}
	if e.Client != "" {
		agent["altId"] = e.Client
	}
	if e.Patient == "" && e.Client != "" && !strings.HasPrefix(e.Subject, "Patient/") {
		agent["type"] = map[string]any{"coding": []any{map[string]string{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type", "code": "dataprocessor", "display": "data processor"}}}
	}
	var entities []any
	var target string
	if len(seg) >= 2 && r4.IsResourceType(seg[0]) && !strings.HasPrefix(seg[1], "$") && !strings.HasPrefix(seg[1], "_") {
		target = seg[0] + "/" + seg[1]
		entities = append(entities, map[string]any{"what": ref(target), "type": map[string]string{"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"}})
	}
	desc := map[string]any{"description": e.Method + " " + e.Path}
	if e.Query != "" {
		desc["query"] = base64.StdEncoding.EncodeToString([]byte(e.Query))
	}
	entities = append(entities, desc)
	for _, p := range l.patients(ctx, e, seg, target) {
		entities = append(entities, map[string]any{"what": ref("Patient/" + p),
			"type": map[string]string{"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
			"role": map[string]string{"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"}})
	}
	ae := map[string]any{
		"resourceType": "AuditEvent",
		"type":         map[string]string{"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
		"subtype":      []any{map[string]string{"system": "http://hl7.org/fhir/restful-interaction", "code": sub}},
		"action":       action,
		"recorded":     fhir.FormatInstant(e.Time),
		"outcome":      outcome,
		"outcomeDesc":  "HTTP " + http.StatusText(e.Status) + " (" + strconv.Itoa(e.Status) + ")",
		"agent":        []any{agent},
		"source": map[string]any{"observer": map[string]string{"display": "phr FHIR server"},
			"type": []any{map[string]string{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}}},
		"entity": entities,
	}
	if e.count > 1 {
		ae["period"] = map[string]string{"start": fhir.FormatInstant(e.first), "end": fhir.FormatInstant(e.Time)}
		ae["extension"] = []any{map[string]any{"url": CountExtension, "valueInteger": e.count}}
	}
	return ae
}

// patients finds whose data the request touched: the caller's own patient,
// a Patient named in the path or a compartment, patient/subject search
// parameters, and the compartments of a resource named in the path.
func (l *Log) patients(ctx context.Context, e Event, seg []string, target string) []string {
	var out []string
	add := func(p string) {
		p = strings.TrimPrefix(p, "Patient/")
		if p != "" && fhir.ValidID(p) && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	add(e.Patient)
	if len(seg) >= 2 && seg[0] == "Patient" && !strings.HasPrefix(seg[1], "$") && !strings.HasPrefix(seg[1], "_") {
		add(seg[1])
	}
	if q, err := url.ParseQuery(e.Query); err == nil {
		for _, name := range []string{"patient", "subject", "_id"} {
			for _, v := range q[name] {
				if name == "_id" && (len(seg) != 1 || seg[0] != "Patient") {
					continue
				}
				if name == "subject" && !strings.HasPrefix(v, "Patient/") {
					continue
				}
				for p := range strings.SplitSeq(v, ",") {
					add(p)
				}
			}
		}
	}
	if target != "" && !strings.HasPrefix(target, "Patient/") && l.o.DB != nil {
		typ, id, _ := strings.Cut(target, "/")
		rows, err := l.o.DB.Query(ctx, `SELECT c.patient FROM compartment c JOIN resource r ON r.rid = c.rid WHERE r.type = ? AND r.id = ?`, typ, id)
		if err == nil {
			for rows.Next() {
				var p string
				if rows.Scan(&p) == nil {
					add(p)
				}
			}
			rows.Close()
		}
	}
	return out
}
