package shl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/jwe"
	"github.com/phr-project/phr/internal/r4"
	"github.com/phr-project/phr/internal/store"
)

// The kinds of content a file of a link holds.
const (
	// KindRecord is the patient's compartment as a collection Bundle,
	// optionally narrowed to resource types and a date range.
	KindRecord = "record"
	// KindSummary is an IPS-style document Bundle: a Composition with
	// sections for allergies, medications, problems and immunizations.
	KindSummary = "summary"
	// KindFile is an uploaded document (a .phr NDJSON file becomes a
	// collection Bundle; others, such as a .sphr, are shared as they are)
	// or a JWE the holder encrypted with the link's key.
	KindFile = "file"
)

// Selection says what one file of a link holds.
type Selection struct {
	// Kind is record (the default), summary or file.
	Kind string `json:"kind"`
	// Types narrows a record to these resource types (the Patient is
	// always included).
	Types []string `json:"_type,omitempty"`
	// From and To narrow a record to resources with a date (any of their
	// date search parameters) overlapping [From, To]; FHIR dates or
	// dateTimes, either may be empty.
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// Name is an uploaded file's name (e.g. record.phr, record.sphr).
	Name string `json:"name,omitempty"`
	// ContentType is an uploaded file's content type.
	ContentType string `json:"contentType,omitempty"`
	// Data is an uploaded file's content (base64 in JSON); not stored.
	Data []byte `json:"data,omitempty"`
	// JWE is a file already encrypted by the holder; not stored here.
	JWE string `json:"jwe,omitempty"`
}

// stored is the selection as kept with a file (without the content).
func (sel Selection) stored() Selection {
	sel.Data, sel.JWE = nil, ""
	if sel.Kind == "" {
		sel.Kind = KindRecord
	}
	return sel
}

// The sections of the emergency summary (IPS), with the types they list.
var summarySections = []struct {
	title, code, display string
	types                []string
}{
	{"Allergies and Intolerances", "48765-2", "Allergies and adverse reactions Document", []string{"AllergyIntolerance"}},
	{"Medication Summary", "10160-0", "History of Medication use Narrative", []string{"MedicationStatement", "MedicationRequest"}},
	{"Problem List", "11450-4", "Problem list - Reported", []string{"Condition"}},
	{"Immunizations", "11369-6", "History of Immunization Narrative", []string{"Immunization"}},
}

// build produces the plaintext of a selection.
func (s *Service) build(ctx context.Context, patient string, sel Selection, now time.Time) (string, []byte, error) {
	switch sel.Kind {
	case "", KindRecord:
		res, err := s.collect(ctx, patient, sel)
		if err != nil {
			return "", nil, err
		}
		if res, err = s.withReferenced(ctx, res); err != nil {
			return "", nil, err
		}
		b, err := s.bundle(ctx, "collection", res, now, nil)
		return "application/fhir+json", b, err
	case KindSummary:
		if len(sel.Types) > 0 || sel.From != "" || sel.To != "" {
			return "", nil, fhir.BadRequest("the summary has fixed sections; _type, from and to apply to kind record")
		}
		return s.summary(ctx, patient, now)
	case KindFile:
		return upload(sel)
	}
	return "", nil, fhir.BadRequest("kind %q: use record, summary or file", sel.Kind).AtPath("kind")
}

// collect reads the selected resources of the patient's compartment with
// the caller's principal: the Patient first, then by type and id.
// Resources the principal may not read are left out when the selection
// does not name their type, and refuse the request when it does.
func (s *Service) collect(ctx context.Context, patient string, sel Selection) ([]*store.Resource, error) {
	p, err := principalOf(ctx)
	if err != nil {
		return nil, err
	}
	q := `SELECT r.type, r.id FROM compartment c JOIN resource r ON r.rid = c.rid WHERE c.patient = ? AND NOT r.deleted`
	args := []any{patient}
	if len(sel.Types) > 0 {
		for i, t := range sel.Types {
			if !r4.IsResourceType(t) {
				return nil, fhir.BadRequest("%q is not a FHIR R4 resource type", t).AtPath(fmt.Sprintf("_type[%d]", i))
			}
			if t != "Patient" && len(r4.PatientCompartmentParams(t)) == 0 {
				return nil, fhir.BadRequest("%s resources are not in a patient's record (compartment)", t).AtPath(fmt.Sprintf("_type[%d]", i))
			}
			if !p.Allows(access.Read, t) {
				return nil, fhir.Forbidden("the access token does not allow reading %s", t).AtPath(fmt.Sprintf("_type[%d]", i))
			}
		}
		q += ` AND r.type IN (?` + strings.Repeat(`, ?`, len(sel.Types)) + `)`
		args = append(args, "Patient")
		for _, t := range sel.Types {
			args = append(args, t)
		}
	} else {
		// The server's own AuditEvents (who looked at the record) are not
		// part of what a patient shares unless _type names them.
		q += ` AND r.type <> 'AuditEvent'`
	}
	if sel.From != "" || sel.To != "" {
		low, high := int64(-1<<63), int64(1<<63-1)
		if sel.From != "" {
			l, _, err := index.DateRange(sel.From)
			if err != nil {
				return nil, fhir.BadRequest("from %q is not a FHIR date or dateTime: %v", sel.From, err).AtPath("from")
			}
			low = l
		}
		if sel.To != "" {
			_, h, err := index.DateRange(sel.To)
			if err != nil {
				return nil, fhir.BadRequest("to %q is not a FHIR date or dateTime: %v", sel.To, err).AtPath("to")
			}
			high = h
		}
		if low > high {
			return nil, fhir.BadRequest("from %s is after to %s", sel.From, sel.To).AtPath("from")
		}
		q += ` AND (r.type = 'Patient' OR EXISTS (SELECT 1 FROM idx_date d WHERE d.rid = r.rid AND d.high >= ? AND d.low <= ?))`
		args = append(args, low, high)
	}
	q += ` ORDER BY CASE WHEN r.type = 'Patient' THEN 0 ELSE 1 END, r.type, r.id`
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list the record of Patient/%s: %w", patient, err)
	}
	type key struct{ typ, id string }
	var keys []key
	for rows.Next() {
		var k key
		if err := rows.Scan(&k.typ, &k.id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list the record of Patient/%s: %w", patient, err)
		}
		keys = append(keys, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list the record of Patient/%s: %w", patient, err)
	}
	var out []*store.Resource
	for _, k := range keys {
		if !p.Allows(access.Read, k.typ) {
			continue
		}
		res, err := s.records.Read(ctx, k.typ, k.id)
		if err != nil {
			var fe *fhir.Error
			if errors.As(err, &fe) && (fe.Status == http.StatusForbidden || fe.Status == http.StatusNotFound || fe.Status == http.StatusGone) {
				continue // outside the caller's filters, or deleted meanwhile
			}
			return nil, err
		}
		out = append(out, res)
	}
	if len(out) == 0 || out[0].Type != "Patient" {
		return nil, fhir.Forbidden("the access token does not allow reading Patient/%s", patient)
	}
	return out, nil
}

// referenceData are the types outside patient compartments that shared
// records may refer to and that say nothing about other patients.
var referenceData = map[string]bool{"Medication": true, "Practitioner": true, "PractitionerRole": true, "Organization": true,
	"Location": true, "Substance": true, "HealthcareService": true}

// withReferenced appends the reference data (Medication, Practitioner,
// Organization, Location...) that res refer to, so that the shared
// Bundle is complete; those the caller may not read are left out.
func (s *Service) withReferenced(ctx context.Context, res []*store.Resource) ([]*store.Resource, error) {
	seen := map[string]bool{}
	for _, r := range res {
		seen[r.Type+"/"+r.ID] = true
	}
	var refs []fhir.Reference
	var walk func(v *fhirjson.Value)
	walk = func(v *fhirjson.Value) {
		switch v.Kind {
		case fhirjson.Object:
			for _, f := range v.Fields {
				if f.Name == "reference" && f.Value.Kind == fhirjson.String {
					if ref, ok := fhir.ParseReference(f.Value.Str); ok && ref.Base == "" && ref.ID != "" && referenceData[ref.Type] &&
						!seen[ref.Type+"/"+ref.ID] {
						seen[ref.Type+"/"+ref.ID] = true
						refs = append(refs, ref)
					}
					continue
				}
				walk(f.Value)
			}
		case fhirjson.Array:
			for _, it := range v.Items {
				walk(it)
			}
		}
	}
	for _, r := range res {
		if v, err := fhirjson.Parse(r.JSON); err == nil {
			walk(v)
		}
	}
	p, err := principalOf(ctx)
	if err != nil {
		return nil, err
	}
	for _, ref := range refs {
		if !p.Allows(access.Read, ref.Type) {
			continue
		}
		r, err := s.records.Read(ctx, ref.Type, ref.ID)
		if err != nil {
			var fe *fhir.Error
			if errors.As(err, &fe) && fe.Status < 500 {
				continue // dangling, deleted or filtered out
			}
			return nil, err
		}
		res = append(res, r)
	}
	return res, nil
}

// bundle writes a Bundle of type typ holding first (if any) and res.
func (s *Service) bundle(ctx context.Context, typ string, res []*store.Resource, now time.Time, first func(*bytes.Buffer)) ([]byte, error) {
	var b bytes.Buffer
	id := fhir.NewID()
	fmt.Fprintf(&b, `{"resourceType":"Bundle","id":%q,"meta":{"lastUpdated":%q},`, id, fhir.FormatInstant(now))
	if typ == "document" {
		fmt.Fprintf(&b, `"identifier":{"system":"urn:ietf:rfc:3986","value":"urn:uuid:%s"},`, newUUID())
	}
	fmt.Fprintf(&b, `"type":%q,"timestamp":%q,"entry":[`, typ, fhir.FormatInstant(now))
	n := 0
	if first != nil {
		first(&b)
		n++
	}
	fhirBase := s.base + "/fhir/"
	for _, r := range res {
		js, err := s.records.JSON(ctx, r)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			b.WriteByte(',')
		}
		n++
		b.WriteString(`{"fullUrl":`)
		b.Write(fhirjson.AppendString(nil, fhirBase+r.Type+"/"+r.ID))
		b.WriteString(`,"resource":`)
		b.Write(bytes.TrimSpace(js))
		b.WriteByte('}')
	}
	b.WriteString("]}")
	if b.Len() > maxPlaintext {
		return nil, tooLarge(b.Len())
	}
	return b.Bytes(), nil
}

// maxPlaintext bounds a file of a link: what decoders accept by default
// (jwe.DefaultMaxPlaintext), and what the server holds in memory at once.
const maxPlaintext = jwe.DefaultMaxPlaintext

func tooLarge(n int) error {
	return fhir.Errorf(http.StatusRequestEntityTooLarge, "too-costly",
		"the selection is %d MiB of FHIR JSON, more than the %d MiB a shared file may hold; narrow it with _type or from/to", n>>20, maxPlaintext>>20)
}

// summary builds the IPS-style document Bundle.
func (s *Service) summary(ctx context.Context, patient string, now time.Time) (string, []byte, error) {
	p, err := principalOf(ctx)
	if err != nil {
		return "", nil, err
	}
	var types []string
	for _, sec := range summarySections {
		for _, t := range sec.types {
			if p.Allows(access.Read, t) {
				types = append(types, t)
			}
		}
	}
	all, err := s.collect(ctx, patient, Selection{Types: append(types, "Patient")})
	if err != nil {
		return "", nil, err
	}
	res := all[:1]
	for _, r := range all[1:] {
		if v, err := fhirjson.Parse(r.JSON); err == nil && current(r.Type, v) {
			res = append(res, r)
		}
	}
	type ref struct {
		Reference string `json:"reference"`
		Display   string `json:"display,omitempty"`
	}
	type coding struct {
		System  string `json:"system"`
		Code    string `json:"code"`
		Display string `json:"display,omitempty"`
	}
	type concept struct {
		Coding []coding `json:"coding"`
		Text   string   `json:"text,omitempty"`
	}
	type narrative struct {
		Status string `json:"status"`
		Div    string `json:"div"`
	}
	type section struct {
		Title       string    `json:"title"`
		Code        concept   `json:"code"`
		Text        narrative `json:"text"`
		Entry       []ref     `json:"entry,omitempty"`
		EmptyReason *concept  `json:"emptyReason,omitempty"`
	}
	type composition struct {
		ResourceType string    `json:"resourceType"`
		ID           string    `json:"id"`
		Text         narrative `json:"text"`
		Status       string    `json:"status"`
		Type         concept   `json:"type"`
		Subject      ref       `json:"subject"`
		Date         string    `json:"date"`
		Author       []ref     `json:"author"`
		Title        string    `json:"title"`
		Section      []section `json:"section"`
	}
	name := ""
	if v, err := fhirjson.Parse(res[0].JSON); err == nil {
		name = fhir.PatientName(v)
	}
	title := "Patient Summary"
	if name != "" {
		title += " of " + name
	}
	c := composition{ResourceType: "Composition", ID: fhir.NewID(), Status: "final",
		Text:    narrative{"generated", `<div xmlns="http://www.w3.org/1999/xhtml">` + html.EscapeString(title) + ` as of ` + now.UTC().Format("2006-01-02") + `</div>`},
		Type:    concept{Coding: []coding{{"http://loinc.org", "60591-5", "Patient summary Document"}}},
		Subject: ref{Reference: "Patient/" + patient, Display: name}, Date: fhir.FormatInstant(now),
		Author: []ref{{Reference: "Patient/" + patient, Display: name}}, Title: title}
	for _, sec := range summarySections {
		sc := section{Title: sec.title, Code: concept{Coding: []coding{{"http://loinc.org", sec.code, sec.display}}}}
		var items []string
		for _, r := range res {
			if !slices.Contains(sec.types, r.Type) {
				continue
			}
			sc.Entry = append(sc.Entry, ref{Reference: r.Type + "/" + r.ID})
			if v, err := fhirjson.Parse(r.JSON); err == nil {
				items = append(items, "<li>"+html.EscapeString(Describe(r.Type, v))+"</li>")
			}
		}
		if len(sc.Entry) == 0 {
			sc.EmptyReason = &concept{Coding: []coding{{"http://terminology.hl7.org/CodeSystem/list-empty-reason", "unavailable", "Unavailable"}}}
			sc.Text = narrative{"generated", `<div xmlns="http://www.w3.org/1999/xhtml">No information available</div>`}
		} else {
			sc.Text = narrative{"generated", `<div xmlns="http://www.w3.org/1999/xhtml"><ul>` + strings.Join(items, "") + `</ul></div>`}
		}
		c.Section = append(c.Section, sc)
	}
	if res, err = s.withReferenced(ctx, res); err != nil {
		return "", nil, err
	}
	cj, err := json.Marshal(c)
	if err != nil {
		return "", nil, err
	}
	b, err := s.bundle(ctx, "document", res, now, func(b *bytes.Buffer) {
		b.WriteString(`{"fullUrl":`)
		b.Write(fhirjson.AppendString(nil, s.base+"/fhir/Composition/"+c.ID))
		b.WriteString(`,"resource":`)
		b.Write(cj)
		b.WriteByte('}')
	})
	return "application/fhir+json", b, err
}

// current reports whether a resource belongs in an emergency summary:
// active or unresolved problems, allergies and medications, and given
// immunizations; nothing entered in error or refuted.
func current(typ string, v *fhirjson.Value) bool {
	status := v.GetString("status")
	clinical := ""
	if c := v.Get("clinicalStatus"); c != nil && c.Kind == fhirjson.Object {
		if cs := c.Get("coding"); cs != nil && cs.Kind == fhirjson.Array && len(cs.Items) > 0 {
			clinical = cs.Items[0].GetString("code")
		}
	}
	if vs := v.Get("verificationStatus"); vs != nil && vs.Kind == fhirjson.Object {
		if cs := vs.Get("coding"); cs != nil && cs.Kind == fhirjson.Array && len(cs.Items) > 0 {
			if c := cs.Items[0].GetString("code"); c == "entered-in-error" || c == "refuted" {
				return false
			}
		}
	}
	switch typ {
	case "Condition", "AllergyIntolerance":
		return clinical != "inactive" && clinical != "resolved" && clinical != "remission"
	case "MedicationRequest":
		return status == "active" || status == "on-hold" || status == "draft"
	case "MedicationStatement":
		return status == "active" || status == "intended" || status == "on-hold" || status == ""
	case "Immunization":
		return status == "completed"
	}
	return true
}

// upload checks an uploaded file and returns its content type and the
// plaintext to encrypt: a .phr (NDJSON) becomes a collection Bundle so
// that every SHL viewer can show it; other files are shared as they are.
func upload(sel Selection) (string, []byte, error) {
	if len(sel.Data) == 0 {
		return "", nil, fhir.BadRequest("a file needs data (base64) or jwe").AtPath("data")
	}
	ct := strings.TrimSpace(strings.Split(sel.ContentType, ";")[0])
	ext := strings.ToLower(path.Ext(sel.Name))
	switch {
	case ext == ".phr" || ct == "application/fhir+ndjson" || ct == "application/x-ndjson" || ct == "application/ndjson":
		b, err := ndjsonBundle(sel.Data)
		return "application/fhir+json", b, err
	case ct == "application/fhir+json" || ct == "application/json" || ext == ".json":
		v, err := fhirjson.Parse(sel.Data)
		if err != nil {
			return "", nil, fhir.BadRequest("data is not JSON: %v", err).AtPath("data")
		}
		if v.Kind != fhirjson.Object || v.GetString("resourceType") == "" {
			return "", nil, fhir.BadRequest("data is not a FHIR resource (no resourceType)").AtPath("data")
		}
		return "application/fhir+json", sel.Data, nil
	case ct == "" && ext == ".sphr":
		return "application/zip", sel.Data, nil
	case ct == "":
		return "", nil, fhir.BadRequest("contentType is required for a file named %q", sel.Name).AtPath("contentType")
	}
	return ct, sel.Data, nil
}

// ndjsonBundle turns a .phr (one FHIR resource per line) into a
// collection Bundle, naming the line of any resource that is not one.
func ndjsonBundle(data []byte) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"resourceType":"Bundle","id":%q,"type":"collection","entry":[`, fhir.NewID())
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), len(data)+1)
	line, n := 0, 0
	for sc.Scan() {
		line++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		v, err := fhirjson.Parse(text)
		if err != nil {
			return nil, &fhir.Error{Status: http.StatusBadRequest, Issues: []fhir.Issue{{Severity: "error", Code: "structure", Line: line,
				Diagnostics: fmt.Sprintf("line %d of the .phr file is not JSON: %v", line, err)}}}
		}
		if v.Kind != fhirjson.Object || v.GetString("resourceType") == "" {
			return nil, &fhir.Error{Status: http.StatusBadRequest, Issues: []fhir.Issue{{Severity: "error", Code: "structure", Line: line,
				Diagnostics: fmt.Sprintf("line %d of the .phr file is not a FHIR resource (no resourceType)", line)}}}
		}
		if n > 0 {
			b.WriteByte(',')
		}
		n++
		b.WriteString(`{"resource":`)
		b.Write(text)
		b.WriteByte('}')
	}
	if err := sc.Err(); err != nil {
		return nil, fhir.BadRequest("read the .phr file: %v", err)
	}
	if n == 0 {
		return nil, fhir.BadRequest("the .phr file holds no resources").AtPath("data")
	}
	b.WriteString("]}")
	return b.Bytes(), nil
}

// fingerprint identifies the state of a patient's record: it changes
// whenever a resource of the compartment is written or leaves it (AuditEvents,
// which every access writes, do not count).
func (s *Service) fingerprint(ctx context.Context, patient string) (string, error) {
	var n, seq int64
	err := s.db.QueryRow(ctx, `SELECT COUNT(*), COALESCE(MAX(r.seq), 0) FROM compartment c JOIN resource r ON r.rid = c.rid WHERE c.patient = ? AND r.type <> 'AuditEvent'`, patient).Scan(&n, &seq)
	if err != nil {
		return "", fmt.Errorf("state of the record of Patient/%s: %w", patient, err)
	}
	return fmt.Sprintf("%d:%d", n, seq), nil
}

// Describe is a one-line human description of a clinical resource, for
// the summary's narrative.
func Describe(typ string, v *fhirjson.Value) string {
	var what string
	for _, el := range []string{"code", "medicationCodeableConcept", "vaccineCode"} {
		if what = conceptText(v.Get(el)); what != "" {
			break
		}
	}
	if what == "" {
		if r := v.Get("medicationReference"); r != nil {
			what = r.GetString("display")
		}
	}
	if what == "" {
		what = typ + "/" + v.GetString("id")
	}
	for _, el := range []string{"onsetDateTime", "recordedDate", "authoredOn", "effectiveDateTime", "occurrenceDateTime", "dateAsserted"} {
		if d := v.GetString(el); d != "" {
			return what + " (" + d + ")"
		}
	}
	return what
}

func conceptText(c *fhirjson.Value) string {
	if c == nil || c.Kind != fhirjson.Object {
		return ""
	}
	if t := c.GetString("text"); t != "" {
		return t
	}
	if cs := c.Get("coding"); cs != nil && cs.Kind == fhirjson.Array {
		for _, cd := range cs.Items {
			if d := cd.GetString("display"); d != "" {
				return d
			}
		}
		for _, cd := range cs.Items {
			if d := cd.GetString("code"); d != "" {
				return d
			}
		}
	}
	return ""
}
