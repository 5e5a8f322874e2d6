package portal

import (
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/r4"
)

// home sends a patient to their record and shows an administrator the
// patient picker.
func (p *Portal) home(q *req) error {
	if !q.sess.Admin() {
		if q.sess.Patient == "" {
			return fhir.Forbidden("this account is not linked to a patient record")
		}
		http.Redirect(q.w, q.r, "/p/"+url.PathEscape(q.sess.Patient)+"/", http.StatusSeeOther)
		return nil
	}
	return p.patients(q)
}

// patients lists patients for an administrator, by name.
func (p *Portal) patients(q *req) error {
	name := strings.TrimSpace(q.r.URL.Query().Get("name"))
	sq := url.Values{"_count": {"50"}, "_sort": {"family"}}
	if name != "" {
		sq.Set("name", name)
	}
	if c := q.r.URL.Query().Get("_cursor"); c != "" {
		sq.Set("_cursor", c)
	}
	pats, b, err := q.api.search("Patient", sq)
	data := map[string]any{"Title": "Patients", "Name": name}
	if err != nil {
		data["Error"] = fhir.AsError(err).Error()
	}
	type row struct{ ID, Name, Birth, Gender string }
	var rows []row
	for _, pt := range pats {
		rows = append(rows, row{pt.str("id"), humanName(pt.get("name")), pt.str("birthDate"), pt.str("gender")})
	}
	data["Rows"] = rows
	data["Next"] = nextPage(b, "/")
	return p.render(q, http.StatusOK, "patients", data)
}

// nextPage turns a Bundle's next link into a portal link with the same
// query (the API's paging parameters carried over).
func nextPage(b obj, path string) string {
	for _, l := range b.list("link") {
		if l.str("relation") != "next" {
			continue
		}
		u, err := url.Parse(l.str("url"))
		if err != nil {
			return ""
		}
		return path + "?" + u.RawQuery
	}
	return ""
}

// item is one line of a list: a resource with its date and text.
type item struct {
	Type, ID string
	Title    string
	Detail   string
	Date     string
	When     time.Time
	Link     string
	Status   string
}

// section is a block of the overview.
type section struct {
	Title, Anchor string
	Items         []item
	Err           string
	More          string
}

// overview is the summary page.
func (p *Portal) overview(q *req) error {
	pid := q.pid
	type spec struct {
		title, anchor, typ string
		params             url.Values
		more               string
	}
	specs := []spec{
		{"Active problems", "problems", "Condition", url.Values{"clinical-status": {"active"}, "_sort": {"-onset-date"}, "_count": {"50"}}, "Condition"},
		{"Current medications", "medications", "MedicationRequest", url.Values{"status": {"active"}, "_sort": {"-authoredon"}, "_count": {"50"}, "_include": {"MedicationRequest:medication"}}, "MedicationRequest"},
		{"Allergies", "allergies", "AllergyIntolerance", url.Values{"_count": {"50"}}, "AllergyIntolerance"},
		{"Immunizations", "immunizations", "Immunization", url.Values{"_sort": {"-date"}, "_count": {"10"}}, "Immunization"},
		{"Recent encounters", "encounters", "Encounter", url.Values{"_sort": {"-date"}, "_count": {"10"}}, "Encounter"},
	}
	secs := make([]section, len(specs))
	var wg sync.WaitGroup
	for i, s := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.params.Set("patient", pid)
			sec := section{Title: s.title, Anchor: s.anchor, More: "/p/" + url.PathEscape(pid) + "/timeline?type=" + s.more}
			res, b, err := q.api.search(s.typ, s.params)
			if err != nil {
				sec.Err = fhir.AsError(err).Error()
			}
			inc := included(b)
			for _, r := range res {
				it := describe(pid, r)
				if m := inc[r.str("medicationReference", "reference")]; m != nil && it.Title == it.Type {
					it.Title = codeText(m.get("code"))
				}
				sec.Items = append(sec.Items, it)
			}
			secs[i] = sec
		}()
	}
	wg.Wait()
	pt := q.patient
	demo := []([2]string){
		{"Name", humanName(pt.get("name"))},
		{"Born", pt.str("birthDate")},
		{"Gender", pt.str("gender")},
	}
	if d := pt.str("deceasedDateTime"); d != "" {
		demo = append(demo, [2]string{"Died", fmtDate(d)})
	}
	if a := pt.list("address"); len(a) > 0 {
		var sb strings.Builder
		writeValue(&sb, pid, "address", map[string]any(a[0]))
		demo = append(demo, [2]string{"Address", sb.String()})
	}
	for _, t := range pt.list("telecom") {
		demo = append(demo, [2]string{label(t.str("system")), t.str("value")})
	}
	if l := pt.list("communication"); len(l) > 0 {
		demo = append(demo, [2]string{"Language", codeText(l[0].get("language"))})
	}
	for _, id := range pt.list("identifier") {
		if t := codeText(id.get("type")); t != "" {
			demo = append(demo, [2]string{t, id.str("value")})
		}
	}
	return p.render(q, http.StatusOK, "overview", map[string]any{
		"Title": "Overview", "Demographics": demo, "Sections": secs,
		"PatientLink": resourceLink(pid, "Patient/"+pid),
	})
}

// timelineType says how a resource type sits on the timeline: the search
// parameter of its clinical date and where that date is in the resource.
type timelineType struct {
	Type  string
	Param string
	Paths [][]any
	// Elements are what a timeline line shows (_elements), which spares
	// serializing and parsing whole resources.
	Elements string
}

var timelineTypes = []timelineType{
	{"Encounter", "date", [][]any{{"period", "start"}, {"period", "end"}}, "period,type,reasonCode,serviceProvider,status"},
	{"Condition", "onset-date", [][]any{{"onsetDateTime"}, {"onsetPeriod", "start"}, {"recordedDate"}}, "onsetDateTime,onsetPeriod,recordedDate,code,clinicalStatus"},
	{"Observation", "date", [][]any{{"effectiveDateTime"}, {"effectivePeriod", "start"}, {"effectiveInstant"}, {"issued"}}, "effectiveDateTime,effectivePeriod,effectiveInstant,issued,code,valueQuantity,valueCodeableConcept,valueString,valueBoolean,valueInteger,valueDateTime,component"},
	{"Procedure", "date", [][]any{{"performedDateTime"}, {"performedPeriod", "start"}}, "performedDateTime,performedPeriod,code,status"},
	{"MedicationRequest", "authoredon", [][]any{{"authoredOn"}}, "authoredOn,medicationCodeableConcept,medicationReference,status,dosageInstruction"},
	{"Immunization", "date", [][]any{{"occurrenceDateTime"}}, "occurrenceDateTime,vaccineCode,status"},
	{"DiagnosticReport", "date", [][]any{{"effectiveDateTime"}, {"effectivePeriod", "start"}, {"issued"}}, "effectiveDateTime,effectivePeriod,issued,code,status"},
	{"AllergyIntolerance", "date", [][]any{{"recordedDate"}, {"onsetDateTime"}}, "recordedDate,onsetDateTime,code,clinicalStatus,criticality"},
	{"CarePlan", "date", [][]any{{"period", "start"}}, "period,category,status"},
	{"CareTeam", "date", [][]any{{"period", "start"}}, "period,category,name,status"},
	{"ImagingStudy", "started", [][]any{{"started"}}, "started,procedureCode,modality"},
	{"DocumentReference", "date", [][]any{{"date"}}, "date,type"},
	{"MedicationAdministration", "effective-time", [][]any{{"effectiveDateTime"}, {"effectivePeriod", "start"}}, "effectiveDateTime,effectivePeriod,medicationCodeableConcept,medicationReference,status"},
	{"Claim", "created", [][]any{{"created"}}, "created,type,total"},
	{"ExplanationOfBenefit", "created", [][]any{{"created"}}, "created,type,total"},
}

func timelineTypeOf(t string) *timelineType {
	for i := range timelineTypes {
		if timelineTypes[i].Type == t {
			return &timelineTypes[i]
		}
	}
	return nil
}

// describe makes a list item of a resource.
func describe(pid string, r obj) item {
	typ := r.str("resourceType")
	it := item{Type: typ, ID: r.str("id"), Link: resourceLink(pid, typ+"/"+r.str("id"))}
	if tt := timelineTypeOf(typ); tt != nil {
		for _, path := range tt.Paths {
			if s := r.str(path...); s != "" {
				it.Date = s
				it.When, _ = parseFHIRTime(s)
				break
			}
		}
	}
	switch typ {
	case "Encounter":
		it.Title = codeText(r.get("type"))
		it.Detail = codeText(r.get("reasonCode"))
		if sp := r.str("serviceProvider", "display"); sp != "" {
			it.Detail = strings.TrimPrefix(it.Detail+" · "+sp, " · ")
		}
	case "Condition":
		it.Title = codeText(r.get("code"))
		it.Status = codeText(r.get("clinicalStatus"))
	case "Observation":
		it.Title = codeText(r.get("code"))
		it.Detail = observationValue(r)
	case "Procedure", "DiagnosticReport", "AllergyIntolerance":
		it.Title = codeText(r.get("code"))
		it.Status = r.str("status")
		if typ == "AllergyIntolerance" {
			it.Status = codeText(r.get("clinicalStatus"))
			it.Detail = r.str("criticality")
		}
	case "MedicationRequest", "MedicationAdministration":
		it.Title = codeText(r.get("medicationCodeableConcept"))
		if it.Title == "" {
			it.Title = r.str("medicationReference", "display")
		}
		it.Status = r.str("status")
		it.Detail = r.str("dosageInstruction", 0, "text")
	case "Immunization":
		it.Title = codeText(r.get("vaccineCode"))
		it.Status = r.str("status")
	case "CarePlan", "CareTeam":
		it.Title = codeText(r.get("category"))
		if it.Title == "" {
			it.Title = r.str("name")
		}
		it.Status = r.str("status")
	case "ImagingStudy":
		it.Title = codeText(r.get("procedureCode"))
		if it.Title == "" {
			it.Title = r.str("modality", 0, "display")
		}
	case "DocumentReference":
		it.Title = codeText(r.get("type"))
	case "Claim", "ExplanationOfBenefit":
		it.Title = codeText(r.get("type"))
		it.Detail = quantity(r.get("total"))
		if it.Detail == "" {
			it.Detail = quantity(r.get("total", 0, "amount"))
		}
	default:
		it.Title = codeText(r.get("code"))
	}
	if it.Title == "" {
		it.Title = typ
	}
	return it
}

// observationValue formats an Observation's value or components.
func observationValue(r obj) string {
	if v := quantity(r.get("valueQuantity")); v != "" {
		return v
	}
	if v := codeText(r.get("valueCodeableConcept")); v != "" {
		return v
	}
	for _, k := range []string{"valueString", "valueBoolean", "valueInteger", "valueDateTime"} {
		if v := r.str(k); v != "" {
			return v
		}
	}
	var parts []string
	for _, c := range r.list("component") {
		if v := quantity(c.get("valueQuantity")); v != "" {
			parts = append(parts, codeText(c.get("code"))+": "+v)
		}
	}
	return strings.Join(parts, "; ")
}

// timelinePageSize is how many items a timeline page shows.
const timelinePageSize = 50

// timeline lists the record newest first, merging one date-sorted search
// per resource type; paging walks back with a cursor (the date and key of
// the last item shown).
func (p *Portal) timeline(q *req) error {
	pid := q.pid
	qs := q.r.URL.Query()
	var types []string
	for _, t := range qs["type"] {
		for _, x := range strings.Split(t, ",") {
			if x = strings.TrimSpace(x); x == "" {
				continue
			}
			if timelineTypeOf(x) == nil {
				return fhir.BadRequest("type: %q is not one of the timeline's types", x)
			}
			types = append(types, x)
		}
	}
	selected := types
	if len(types) == 0 {
		// Everything but the billing records (a Claim and an
		// ExplanationOfBenefit per encounter and prescription), which
		// are there when asked for.
		for _, t := range timelineTypes {
			if t.Type != "Claim" && t.Type != "ExplanationOfBenefit" {
				types = append(types, t.Type)
			}
		}
	}
	from, to := strings.TrimSpace(qs.Get("from")), strings.TrimSpace(qs.Get("to"))
	for _, f := range []struct{ name, v string }{{"from", from}, {"to", to}} {
		if f.v == "" {
			continue
		}
		if _, err := time.Parse("2006-01-02", f.v); err != nil {
			return fhir.BadRequest("%s: %q is not a date (YYYY-MM-DD)", f.name, f.v)
		}
	}
	// The cursor: the date of the last item shown and the keys of the
	// items with that same date already shown.
	var cur time.Time
	var curDate string
	var skip []string
	if c := qs.Get("before"); c != "" {
		d, keys, _ := strings.Cut(c, "~")
		t, ok := parseFHIRTime(d)
		if !ok {
			return fhir.BadRequest("before: %q is not a valid cursor", c)
		}
		cur, curDate = t, d
		if keys != "" {
			skip = strings.Split(keys, "~")
		}
	}
	count := timelinePageSize + len(skip) + 1
	results := make([][]item, len(types))
	errs := make([]error, len(types))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i, t := range types {
		tt := timelineTypeOf(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			sq := url.Values{"patient": {pid}, "_sort": {"-" + tt.Param}, "_count": {strconv.Itoa(count)}, "_elements": {tt.Elements}}
			if from != "" {
				sq.Add(tt.Param, "ge"+from)
			}
			if to != "" {
				sq.Add(tt.Param, "le"+to)
			}
			if curDate != "" {
				sq.Add(tt.Param, "le"+curDate)
			}
			res, _, err := q.api.search(t, sq)
			if err != nil {
				errs[i] = err
				return
			}
			for _, r := range res {
				results[i] = append(results[i], describe(pid, r))
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	// Undated entries cannot be paged by date: the first page lists them
	// apart (later pages' date-bounded searches do not return them).
	var all, undated []item
	for _, l := range results {
		for _, it := range l {
			if it.When.IsZero() {
				undated = append(undated, it)
			} else {
				all = append(all, it)
			}
		}
	}
	sort.SliceStable(all, func(i, j int) bool {
		a, b := all[i], all[j]
		if !a.When.Equal(b.When) {
			return a.When.After(b.When)
		}
		if a.Type != b.Type {
			return a.Type < b.Type
		}
		return a.ID < b.ID
	})
	var page []item
	for _, it := range all {
		if !cur.IsZero() {
			if it.When.After(cur) {
				continue
			}
			if it.When.Equal(cur) && slices.Contains(skip, it.Type+"/"+it.ID) {
				continue
			}
		}
		page = append(page, it)
		if len(page) == timelinePageSize+1 {
			break
		}
	}
	next := ""
	if len(page) > timelinePageSize {
		page = page[:timelinePageSize]
		last := page[len(page)-1]
		keys := []string{}
		if last.When.Equal(cur) {
			keys = append(keys, skip...)
		}
		for _, it := range page {
			if it.When.Equal(last.When) {
				keys = append(keys, it.Type+"/"+it.ID)
			}
		}
		nq := url.Values{}
		for _, t := range selected {
			nq.Add("type", t)
		}
		if from != "" {
			nq.Set("from", from)
		}
		if to != "" {
			nq.Set("to", to)
		}
		nq.Set("before", last.Date+"~"+strings.Join(keys, "~"))
		next = "?" + nq.Encode()
	}
	// Group by day for reading.
	type day struct {
		Day   string
		Items []item
	}
	var days []day
	for _, it := range page {
		d := it.Date
		if len(d) > 10 {
			d = d[:10]
		}
		if len(days) == 0 || days[len(days)-1].Day != d {
			days = append(days, day{Day: d})
		}
		days[len(days)-1].Items = append(days[len(days)-1].Items, it)
	}
	var allTypes []string
	for _, t := range timelineTypes {
		allTypes = append(allTypes, t.Type)
	}
	return p.render(q, http.StatusOK, "timeline", map[string]any{
		"Title": "Timeline", "Days": days, "Next": next, "Types": allTypes, "Selected": selected,
		"From": from, "To": to, "Paged": curDate != "", "Undated": undated,
	})
}

// detail shows one resource: readable, raw JSON, history, a diff between
// versions and its provenance.
func (p *Portal) detail(q *req) error {
	pid, typ, id := q.pid, q.r.PathValue("type"), q.r.PathValue("id")
	if !r4.IsResourceType(typ) {
		return fhir.NotFound("%q is not a resource type", typ)
	}
	if !fhir.ValidID(id) {
		return fhir.NotFound("%q is not a resource id", id)
	}
	qs := q.r.URL.Query()
	path := typ + "/" + url.PathEscape(id)
	if v := qs.Get("v"); v != "" {
		if n, err := strconv.Atoi(v); err != nil || n < 1 {
			return fhir.BadRequest("v: %q is not a version number", v)
		}
		path += "/_history/" + v
	}
	res, raw, err := q.api.get(path)
	if err != nil {
		return err
	}
	// History (newest first).
	type version struct {
		Version, Updated, Method, Source string
		Deleted, Current                 bool
	}
	var versions []version
	hb, _, herr := q.api.get(typ + "/" + url.PathEscape(id) + "/_history?_count=100")
	histErr := ""
	if herr != nil {
		histErr = fhir.AsError(herr).Error()
	}
	byVersion := map[string]obj{}
	for i, e := range hb.list("entry") {
		r := e.obj("resource")
		v := version{Method: e.str("request", "method"), Current: i == 0}
		if r != nil {
			v.Version, v.Updated, v.Source = r.str("meta", "versionId"), r.str("meta", "lastUpdated"), r.str("meta", "source")
			byVersion[v.Version] = r
		} else {
			v.Deleted = true
			etag := e.str("response", "etag")
			v.Version = strings.Trim(strings.TrimPrefix(etag, "W/"), `"`)
			v.Updated = e.str("response", "lastModified")
		}
		versions = append(versions, v)
	}
	// Diff: between ?from=&to=, or the shown version and the one before.
	var diff []change
	diffFrom, diffTo := qs.Get("from"), qs.Get("to")
	if diffFrom == "" && diffTo == "" {
		diffTo = res.str("meta", "versionId")
		if n, err := strconv.Atoi(diffTo); err == nil && n > 1 {
			diffFrom = strconv.Itoa(n - 1)
		}
	}
	if diffFrom != "" && diffTo != "" {
		a, b := byVersion[diffFrom], byVersion[diffTo]
		for _, v := range []struct {
			name string
			o    *obj
		}{{diffFrom, &a}, {diffTo, &b}} {
			if *v.o == nil {
				if _, err := strconv.Atoi(v.name); err != nil {
					return fhir.BadRequest("from/to: %q is not a version number", v.name)
				}
				o, _, err := q.api.get(typ + "/" + url.PathEscape(id) + "/_history/" + v.name)
				if err != nil {
					o = obj{}
				}
				*v.o = o
			}
		}
		diff = diffJSON(a, b)
	}
	// Provenance naming this resource (any version).
	var provs []map[string]any
	provErr := ""
	pres, _, perr := q.api.search("Provenance", url.Values{"target": {typ + "/" + id}, "_count": {"20"}})
	if perr != nil {
		provErr = fhir.AsError(perr).Error()
	}
	for _, pr := range pres {
		var agents []string
		for _, a := range pr.list("agent") {
			s := a.str("who", "display")
			if s == "" {
				s = a.str("who", "reference")
			}
			if t := codeText(a.get("type")); t != "" {
				s = t + ": " + s
			}
			agents = append(agents, s)
		}
		var entities []string
		batch := ""
		for _, e := range pr.list("entity") {
			if e.str("what", "identifier", "system") == "urn:phr:import-batch" {
				batch = e.str("what", "identifier", "value")
			}
			s := e.str("what", "display")
			if s == "" {
				s = e.str("what", "reference")
			}
			if s == "" {
				s = e.str("what", "identifier", "value")
			}
			entities = append(entities, e.str("role")+" "+s)
		}
		provs = append(provs, map[string]any{
			"ID": pr.str("id"), "Recorded": fmtDate(pr.str("recorded")), "Activity": codeText(pr.get("activity")),
			"Agents": strings.Join(agents, "; "), "Entities": strings.Join(entities, "; "),
			"Link":  resourceLink(pid, "Provenance/"+pr.str("id")),
			"Batch": batch,
		})
	}
	var tags []string
	for _, t := range res.list("meta", "tag") {
		tags = append(tags, strings.TrimSpace(t.str("display")+" "+t.str("code")))
	}
	it := describe(pid, res)
	title := typ + " " + id
	if it.Title != typ {
		title = it.Title
	}
	return p.render(q, http.StatusOK, "detail", map[string]any{
		"Title": title, "Type": typ, "ID": id, "Item": it,
		"Version": res.str("meta", "versionId"), "Updated": res.str("meta", "lastUpdated"), "Source": res.str("meta", "source"), "Tags": tags,
		"Readable": readable(pid, res), "Raw": pretty(raw),
		"Versions": versions, "HistoryError": histErr, "DiffFrom": diffFrom, "DiffTo": diffTo, "Diff": diff,
		"Provenance": provs, "ProvenanceError": provErr,
		"Base":     "/p/" + url.PathEscape(pid) + "/r/" + url.PathEscape(typ) + "/" + url.PathEscape(id),
		"Resolved": qs.Get("resolved"),
	})
}
