package index

import (
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/fhirjson"
)

// syntheaPatient is the Synthea bundle the hand-checked tests use.
const syntheaPatient = "synthea-120-bundles/057aa36e-b892-9964-75b9-ffb46b097e34.json.gz"

func TestSyntheaBloodPressure(t *testing.T) {
	rs := readBundle(t, sharedData(t, syntheaPatient))
	e := mustExtract(t, find(t, rs, "d0b333f1-1daf-03ed-494a-a7231a113a78"))
	const mmHg70 = "70 [69.5, 70.5) http://unitsofmeasure.org|mm[Hg] unit=mm[Hg] text=70"
	const mmHg104 = "104 [103.5, 104.5) http://unitsofmeasure.org|mm[Hg] unit=mm[Hg] text=104"
	const dia = "http://loinc.org|8462-4 text=diastolic blood pressure"
	const sys = "http://loinc.org|8480-6 text=systolic blood pressure"
	const patient = "Patient/057aa36e-b892-9964-75b9-ffb46b097e34"
	expect(t, e, map[string][]string{
		"_profile": {"http://hl7.org/fhir/StructureDefinition/bp", "http://hl7.org/fhir/StructureDefinition/vitalsigns"},
		"category": {"http://terminology.hl7.org/CodeSystem/observation-category|vital-signs text=vital-signs"},
		"code":     {"http://loinc.org|85354-9 text=blood pressure"},
		"status":   {"|final"},
		// effectiveDateTime 2010-09-16T12:21:06+02:00, to the second
		"date":      {"2010-09-16T10:21:06Z .. 2010-09-16T10:21:06.999999Z"},
		"encounter": {"Encounter/81cae753-0a21-1b89-cadb-e82844f952e8"},
		"patient":   {patient},
		"subject":   {patient},
		// the codes and values of the observation and its components
		"combo-code":               {"http://loinc.org|85354-9 text=blood pressure", dia, sys},
		"component-code":           {dia, sys},
		"combo-value-quantity":     {mmHg70, mmHg104},
		"component-value-quantity": {mmHg70, mmHg104},
		// each component's code goes with its own value only
		"component-code-value-quantity": {dia + " $ " + mmHg70, sys + " $ " + mmHg104},
		"combo-code-value-quantity":     {dia + " $ " + mmHg70, sys + " $ " + mmHg104},
	})
}

func TestSyntheaBodyHeight(t *testing.T) {
	rs := readBundle(t, sharedData(t, syntheaPatient))
	e := mustExtract(t, find(t, rs, "dd7cd724-a033-5d70-bcec-421b65b3072a"))
	const cm = "167.7 [167.65, 167.75) http://unitsofmeasure.org|cm unit=cm text=167.7"
	const code = "http://loinc.org|8302-2 text=body height"
	expectSome(t, e, map[string][]string{
		"code":                          {code},
		"value-quantity":                {cm},
		"combo-value-quantity":          {cm},
		"code-value-quantity":           {code + " $ " + cm},
		"combo-code-value-quantity":     {code + " $ " + cm},
		"component-code-value-quantity": nil,
		"value-concept":                 nil,
	})
}

func TestPatientNamesAddressesIdentifiers(t *testing.T) {
	e := mustExtract(t, readResource(t, "r4-spec-examples/patient-example.json"))
	names := []string{
		"chalmers / Chalmers", "peter / Peter", "james / James", "peter james chalmers / Peter James Chalmers",
		"jim / Jim", "windsor / Windsor", "peter james windsor / Peter James Windsor",
	}
	phones := []string{"phone|(03) 5555 6473", "phone|(03) 3410 5613", "phone|(03) 5555 8834"}
	expect(t, e, map[string][]string{
		"_tag":     {"http://terminology.hl7.org/CodeSystem/v3-ActReason|HTEST text=test health data"},
		"active":   {"|true"},
		"deceased": {"|false"}, // deceasedBoolean false: "exists() and != false" is false
		"gender":   {"|male"},
		"identifier": {
			"urn:oid:1.2.36.146.595.217.0.1|12345 type=http://terminology.hl7.org/CodeSystem/v2-0203|MR",
		},
		"phone":    phones,
		"telecom":  phones,
		"family":   {"chalmers / Chalmers", "windsor / Windsor"},
		"given":    {"peter / Peter", "james / James", "jim / Jim"},
		"name":     names,
		"phonetic": names, // R4 defines phonetic as Patient.name too
		"address": {
			"534 erewhon st / 534 Erewhon St", "pleasantville / PleasantVille", "rainbow / Rainbow",
			"vic / Vic", "3999 / 3999",
			"534 erewhon st peasantville, rainbow, vic 3999 / 534 Erewhon St PeasantVille, Rainbow, Vic  3999",
		},
		"address-city":       {"pleasantville / PleasantVille"},
		"address-postalcode": {"3999 / 3999"},
		"address-state":      {"vic / Vic"},
		"address-use":        {"|home"},
		"birthdate":          {"1974-12-25T00:00:00Z .. 1974-12-25T23:59:59.999999Z"},
		"organization":       {"Organization/1"},
	})
}

func TestPatientAccentsAndSynthea(t *testing.T) {
	// The spec's example patient's contact is "Bénédicte du Marché"; as a
	// patient's own name it must be found without accents.
	r := readResource(t, "r4-spec-examples/patient-example.json")
	contact := r.Get("contact").Items[0]
	r.Set("name", fhirjson.NewArray(contact.Get("name")))
	e := mustExtract(t, r)
	expectSome(t, e, map[string][]string{
		"family": {"du marche / du Marché"},
		"given":  {"benedicte / Bénédicte"},
		"name":   {"du marche / du Marché", "benedicte / Bénédicte", "benedicte du marche / Bénédicte du Marché"},
	})

	rs := readBundle(t, sharedData(t, syntheaPatient))
	e = mustExtract(t, find(t, rs, "057aa36e-b892-9964-75b9-ffb46b097e34"))
	expectSome(t, e, map[string][]string{
		"birthdate": {"1929-03-21T00:00:00Z .. 1929-03-21T23:59:59.999999Z"},
		// deceasedDateTime 2020-03-25T17:39:15+01:00
		"death-date": {"2020-03-25T16:39:15Z .. 2020-03-25T16:39:15.999999Z"},
		"deceased":   {"|true"},
		"gender":     {"|female"},
		"name": {
			"cormier289 / Cormier289", "chi716 / Chi716", "mrs. / Mrs.", "mrs. chi716 cormier289 / Mrs. Chi716 Cormier289",
			"kiehn525 / Kiehn525", "mrs. chi716 kiehn525 / Mrs. Chi716 Kiehn525",
		},
		"address":            {"310 daugherty path / 310 Daugherty Path", "east douglas / East Douglas", "ma / MA", "01516 / 01516", "us / US"},
		"address-city":       {"east douglas / East Douglas"},
		"address-postalcode": {"01516 / 01516"},
		"identifier": {
			"https://github.com/synthetichealth/synthea|057aa36e-b892-9964-75b9-ffb46b097e34",
			"http://hospital.smarthealthit.org|057aa36e-b892-9964-75b9-ffb46b097e34 text=medical record number type=http://terminology.hl7.org/CodeSystem/v2-0203|MR",
			"http://hl7.org/fhir/sid/us-ssn|999-82-5655 text=social security number type=http://terminology.hl7.org/CodeSystem/v2-0203|SS",
			"urn:oid:2.16.840.1.113883.4.3.25|S99934475 text=driver's license type=http://terminology.hl7.org/CodeSystem/v2-0203|DL",
			"http://standardhealthrecord.org/fhir/StructureDefinition/passportNumber|X31362978X text=passport number type=http://terminology.hl7.org/CodeSystem/v2-0203|PPN",
		},
		"phone":   {"phone|555-942-8848"},
		"telecom": {"phone|555-942-8848"},
	})
}

func TestConditionDates(t *testing.T) {
	// onset and abatement dateTimes (written as dates)
	e := mustExtract(t, readResource(t, "r4-spec-examples/condition-example-f204-renal.json"))
	expectSome(t, e, map[string][]string{
		"onset-date":     {"2013-03-11T00:00:00Z .. 2013-03-11T23:59:59.999999Z"},
		"abatement-date": {"2013-03-20T00:00:00Z .. 2013-03-20T23:59:59.999999Z"},
		"recorded-date":  {"2013-03-11T00:00:00Z .. 2013-03-11T23:59:59.999999Z"},
		"onset-age":      nil,
		"patient":        {"Patient/f201"},
	})
	// ages
	e = mustExtract(t, readResource(t, "r4-spec-examples/condition-example-f202-malignancy.json"))
	expectSome(t, e, map[string][]string{
		"onset-age":     {"52 [51.5, 52.5) http://unitsofmeasure.org|a unit=years text=52"},
		"abatement-age": {"54 [53.5, 54.5) http://unitsofmeasure.org|a unit=years text=54"},
		"onset-date":    nil,
	})
	// free text
	e = mustExtract(t, readResource(t, "r4-spec-examples/condition-example-f201-fever.json"))
	expectSome(t, e, map[string][]string{
		"abatement-string": {"around april 9, 2013 / around April 9, 2013"},
		"abatement-date":   nil,
	})
	// Periods: no example in the data has one, so the renal condition is
	// given an open onset period and a closed abatement period.
	r := readResource(t, "r4-spec-examples/condition-example-f204-renal.json")
	r.Delete("onsetDateTime")
	r.Delete("abatementDateTime")
	r.Set("onsetPeriod", fhirjson.NewObject(fhirjson.Field{Name: "start", Value: fhirjson.NewString("2013-03")}))
	r.Set("abatementPeriod", fhirjson.NewObject(
		fhirjson.Field{Name: "start", Value: fhirjson.NewString("2013-03-20T08:00:00+01:00")},
		fhirjson.Field{Name: "end", Value: fhirjson.NewString("2013-04")}))
	e = mustExtract(t, r)
	expectSome(t, e, map[string][]string{
		"onset-date":     {"2013-03-01T00:00:00Z .. +inf"},
		"abatement-date": {"2013-03-20T07:00:00Z .. 2013-04-30T23:59:59.999999Z"},
	})
}

func TestSyntheaEncounterMedicationImmunization(t *testing.T) {
	rs := readBundle(t, sharedData(t, syntheaPatient))
	const patient = "Patient/057aa36e-b892-9964-75b9-ffb46b097e34"
	const npi = "Practitioner/ url=Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999999619"
	e := mustExtract(t, find(t, rs, "120de2e7-0af1-cbce-3199-6dbaaf9b60ca"))
	expect(t, e, map[string][]string{
		"_profile":         {"http://hl7.org/fhir/us/core/StructureDefinition/us-core-encounter"},
		"class":            {"http://terminology.hl7.org/CodeSystem/v3-ActCode|AMB"},
		"identifier":       {"https://github.com/synthetichealth/synthea|120de2e7-0af1-cbce-3199-6dbaaf9b60ca"},
		"participant-type": {"http://terminology.hl7.org/CodeSystem/v3-ParticipationType|PPRF text=primary performer"},
		"reason-code":      {"http://snomed.info/sct|72892002 text=normal pregnancy"},
		"status":           {"|finished"},
		"type":             {"http://snomed.info/sct|424441002 text=prenatal initial visit"},
		// period 11:21:06+01:00 to 11:36:06+01:00
		"date": {"1959-07-30T10:21:06Z .. 1959-07-30T10:36:06.999999Z"},
		// conditional references, as Synthea writes them, keep their text
		// and the type they name
		"location":         {"Location/ url=Location?identifier=https://github.com/synthetichealth/synthea|e7defd99-1c69-307b-9e99-5bb405c3bd7d"},
		"participant":      {npi},
		"practitioner":     {npi},
		"service-provider": {"Organization/ url=Organization?identifier=https://github.com/synthetichealth/synthea|24cb4eab-6166-3530-bddc-a5a8a14a4fc1"},
		"patient":          {patient},
		"subject":          {patient},
	})

	e = mustExtract(t, find(t, rs, "3d682ffd-7eff-4a5b-600e-a31541a283ec"))
	expect(t, e, map[string][]string{
		"_profile":   {"http://hl7.org/fhir/us/core/StructureDefinition/us-core-medicationrequest"},
		"code":       {"http://www.nlm.nih.gov/research/umls/rxnorm|1803932 text=leucovorin 100 mg injection"},
		"intent":     {"|order"},
		"status":     {"|active"},
		"authoredon": {"1980-04-28T00:21:19Z .. 1980-04-28T00:21:19.999999Z"},
		"encounter":  {"Encounter/0c169c80-6a56-8835-d4a2-5cc7b55886b7"},
		"patient":    {patient},
		"subject":    {patient},
		"requester":  {npi},
	})

	e = mustExtract(t, find(t, rs, "1e9b16ff-7dbd-1d0d-56e5-ac61e85d624c"))
	expect(t, e, map[string][]string{
		"_profile":     {"http://hl7.org/fhir/us/core/StructureDefinition/us-core-immunization"},
		"status":       {"|completed"},
		"vaccine-code": {"http://hl7.org/fhir/sid/cvx|140 text=influenza, seasonal, injectable, preservative free"},
		"date":         {"2010-09-16T10:21:06Z .. 2010-09-16T10:21:06.999999Z"},
		"location":     {"Location/ url=Location?identifier=https://github.com/synthetichealth/synthea|1b8190d0-e34e-3726-aa7f-d5141880de78"},
		"patient":      {patient},
	})
}

func TestReferenceForms(t *testing.T) {
	// versioned, and Reference.identifier without a reference
	e := mustExtract(t, readResource(t, "r4-spec-examples/audit-event-example-vread.json"))
	expectSome(t, e, map[string][]string{
		"entity":  {"Patient/example v=1"},
		"patient": {"Patient/example v=1"},
		"agent":   {"identifier=|95", "identifier=urn:oid:2.16.840.1.113883.4.2|2.16.840.1.113883.4.2"},
		"source":  {"identifier=|hl7connect.healthintersections.com.au"},
	})
	// contained, typed by the contained resource
	e = mustExtract(t, readResource(t, "r4-spec-examples/auditevent-example-error.json"))
	expectSome(t, e, map[string][]string{"entity": {"OperationOutcome/ url=#o1"}})
	// absolute, and identifier with a system
	e = mustExtract(t, readResource(t, "r4-spec-examples/claimresponse-example.json"))
	expectSome(t, e, map[string][]string{
		"request": {"Claim/ url=http://www.BenefitsInc.com/fhir/Claim/15476332402"},
		"insurer": {"identifier=http://www.jurisdiction.org/insurers|555123"},
		"patient": {"Patient/1"},
	})
	// canonicals: written relative, and absolute with a version
	e = mustExtract(t, readResource(t, "r4-spec-examples/activitydefinition-administer-zika-virus-exposure-assessment.json"))
	expectSome(t, e, map[string][]string{
		"depends-on": {
			"Questionnaire/zika-virus-exposure-assessment url=Questionnaire/zika-virus-exposure-assessment",
			"Library/zika-virus-intervention-logic url=Library/zika-virus-intervention-logic",
		},
	})
	r := readResource(t, "r4-spec-examples/activitydefinition-administer-zika-virus-exposure-assessment.json")
	r.Set("library", fhirjson.NewArray(fhirjson.NewString("http://example.org/fhir/Library/zika|1.2")))
	e = mustExtract(t, r)
	expectSome(t, e, map[string][]string{
		"depends-on": {
			"Questionnaire/zika-virus-exposure-assessment url=Questionnaire/zika-virus-exposure-assessment",
			"Library/ v=1.2 url=http://example.org/fhir/Library/zika",
		},
	})
	// urn:uuid as a Synthea bundle writes it before the transaction
	// resolves it: kept as a URL; resolve() cannot tell its type, so the
	// patient parameter has no entry.
	rs := readBundle(t, sharedData(t, syntheaPatient))
	obs := find(t, rs, "dd7cd724-a033-5d70-bcec-421b65b3072a")
	obs.Get("subject").Set("reference", fhirjson.NewString("urn:uuid:057aa36e-b892-9964-75b9-ffb46b097e34"))
	e = mustExtract(t, obs)
	expectSome(t, e, map[string][]string{
		"subject": {"url=urn:uuid:057aa36e-b892-9964-75b9-ffb46b097e34"},
		"patient": nil,
	})
	// a document Bundle's composition is its first entry's resource
	e = mustExtract(t, readResource(t, "r4-spec-examples/document-example-dischargesummary.json"))
	expectSome(t, e, map[string][]string{"composition": {"Composition/180f219f-97a8-486d-99d9-ed631fe4fc57"}})
}

func TestBadValuesAreReported(t *testing.T) {
	r := readResource(t, "r4-spec-examples/patient-example.json")
	r.Set("birthDate", fhirjson.NewString("1974-13-25"))
	r.Get("name").Items[0].Set("family", fhirjson.NewNumber("7"))
	e, err := Extract("Patient", r)
	if err == nil {
		t.Fatal("no error for an invalid birthDate")
	}
	for _, want := range []string{"Patient/example", "birthdate", `"1974-13-25"`, "month"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// everything else is still indexed
	expectSome(t, &e, map[string][]string{"gender": {"|male"}, "birthdate": nil})
	if _, err := Extract("Observation", r); err == nil || !strings.Contains(err.Error(), "Patient resource given to the Observation extractor") {
		t.Errorf("type mismatch: %v", err)
	}
	if _, err := Extract("Nonsense", r); err == nil {
		t.Error("unknown type: no error")
	}
}

// TestUnsupported fixes the list of what extraction leaves out, so that
// nothing is left out silently. _text, _content and _query, which no
// standard parameter defines an expression for, apply to every type.
func TestUnsupported(t *testing.T) {
	var got []string
	for _, g := range Unsupported() {
		got = append(got, g.String())
	}
	want := []string{
		"http://hl7.org/fhir/SearchParameter/CarePlan-activity-date (string): ages, ranges of ages and free text are not points in time",
		"http://hl7.org/fhir/SearchParameter/DomainResource-text: no expression: searches the narrative, which needs full-text search",
		"http://hl7.org/fhir/SearchParameter/Group-characteristic-value (Quantity, Range, Reference): no token value can be made from Quantity, Range, Reference",
		"http://hl7.org/fhir/SearchParameter/Location-near: special parameters have search logic of their own",
		"http://hl7.org/fhir/SearchParameter/Observation-combo-value-quantity (SampledData): sampled data is a series of values, not one quantity",
		"http://hl7.org/fhir/SearchParameter/Observation-component-value-quantity (SampledData): sampled data is a series of values, not one quantity",
		"http://hl7.org/fhir/SearchParameter/Observation-value-quantity (SampledData): sampled data is a series of values, not one quantity",
		"http://hl7.org/fhir/SearchParameter/Resource-content: no expression: searches the whole resource text, which needs full-text search",
		"http://hl7.org/fhir/SearchParameter/Resource-query: no expression: names a custom named query, not a value",
		"http://hl7.org/fhir/SearchParameter/clinical-date (Age, Range, string): ages, ranges of ages and free text are not points in time",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Unsupported():\n\t%s\nwant:\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

func TestSupported(t *testing.T) {
	sp := Supported("Observation")
	codes := map[string]bool{}
	for _, p := range sp {
		codes[p.Code] = true
	}
	for _, c := range []string{"_id", "_lastUpdated", "code", "value-quantity", "component-code-value-quantity", "patient", "date"} {
		if !codes[c] {
			t.Errorf("Observation %s is not supported", c)
		}
	}
	for _, c := range []string{"_text", "_content", "_query"} {
		if codes[c] {
			t.Errorf("Observation %s is listed as supported", c)
		}
	}
	if len(sp) < 40 {
		t.Errorf("only %d Observation parameters", len(sp))
	}
	if Supported("Nonsense") != nil {
		t.Error("Supported of an unknown type is not nil")
	}
	if p := Supported("Location"); len(p) == 0 {
		t.Error("no Location parameters")
	} else {
		for _, x := range p {
			if x.Code == "near" {
				t.Error("Location near is listed as supported")
			}
		}
	}
}

// TestAllSpecExamples extracts every specification example: none may
// fail, and skipping the parameters whose elements a resource lacks must
// give exactly the entries that evaluating every parameter gives.
func TestAllSpecExamples(t *testing.T) {
	dir := sharedData(t, "r4-spec-examples")
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples in %s: %v", dir, err)
	}
	full := map[string]*Extractor{}
	total, masked := 0, 0
	for _, f := range files {
		name := filepath.Base(f)
		r := readResource(t, filepath.Join("r4-spec-examples", name))
		rt := r.GetString("resourceType")
		x, err := For(rt)
		if err != nil {
			t.Fatal(err)
		}
		var e Entries
		if err := x.Append(&e, r); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		total += e.Len()
		all := full[rt]
		if all == nil {
			all = newExtractor(rt)
			for i := range all.params {
				if all.params[i].mask != 0 {
					masked++
				}
				all.params[i].mask = 0
			}
			full[rt] = all
		}
		var e2 Entries
		if err := all.Append(&e2, r); err != nil {
			t.Errorf("%s without skipping: %v", name, err)
		}
		if dump(&e) != dump(&e2) {
			t.Errorf("%s: skipping changes the entries:\n%s\nversus\n%s", name, dump(&e), dump(&e2))
		}
	}
	if masked == 0 {
		t.Error("no parameter has a presence mask")
	}
	t.Logf("%d examples, %d entries", len(files), total)
}

func TestComposites(t *testing.T) {
	// R4 gives DocumentReference-relationship's component definitions in
	// the wrong order; the code stays a token and the target a reference.
	e := mustExtract(t, readResource(t, "r4-spec-examples/documentreference-example.json"))
	expectSome(t, e, map[string][]string{
		"relationship": {"|appends $ DocumentReference/example"},
		"relation":     {"|appends"},
		"relatesto":    {"DocumentReference/example"},
	})
	// a usage context with a Range {low: 12 a}: open above
	e = mustExtract(t, readResource(t, "r4-spec-examples/activitydefinition-administer-zika-virus-exposure-assessment.json"))
	expectSome(t, e, map[string][]string{
		"context-type":          {"http://terminology.hl7.org/CodeSystem/usage-context-type|age"},
		"context-quantity":      {"12 [11.5, +Inf) | unit=a text="},
		"context-type-quantity": {"http://terminology.hl7.org/CodeSystem/usage-context-type|age $ 12 [11.5, +Inf) | unit=a text="},
		"context-type-value":    nil,
	})
	// characteristics coded by text only give no composite: composite
	// values are matched by code
	e = mustExtract(t, readResource(t, "r4-spec-examples/group-example.json"))
	expectSome(t, e, map[string][]string{
		"characteristic":       {"| text=gender", "| text=owner"},
		"value":                {"| text=mixed", "| text=john smith"},
		"characteristic-value": nil,
	})
}

// TestResourceRowParamsNotExtracted: _id and _lastUpdated are answered
// from the resource row, so extraction must not add entries for them.
func TestResourceRowParamsNotExtracted(t *testing.T) {
	res, err := fhirjson.Parse([]byte(`{"resourceType":"Patient","id":"p1","meta":{"lastUpdated":"2020-01-01T00:00:00Z"},"gender":"male"}`))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Extract("Patient", res)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range e.Tokens {
		if FromResourceRow(tk.Param) {
			t.Errorf("token entry for %s", tk.Param)
		}
	}
	for _, d := range e.Dates {
		if FromResourceRow(d.Param) {
			t.Errorf("date entry for %s", d.Param)
		}
	}
	if len(e.Tokens) == 0 {
		t.Fatal("no token entries at all (gender expected)")
	}
}

// A Provenance is in the compartment of the patients it targets and of
// those it names with ProvenancePatientExtension, and of no others.
func TestProvenancePatientExtension(t *testing.T) {
	v, err := fhirjson.Parse([]byte(`{"resourceType":"Provenance","id":"p",
		"extension":[{"url":"` + ProvenancePatientExtension + `","valueReference":{"reference":"Patient/a"}},
			{"url":"http://example.org/other","valueReference":{"reference":"Patient/c"}}],
		"target":[{"reference":"Observation/o/_history/1"},{"reference":"Patient/b/_history/2"}],
		"recorded":"2020-01-01T00:00:00Z","agent":[{"who":{"display":"x"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Extract("Provenance", v)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range e.Refs {
		if r.Param == "patient" {
			got = append(got, r.Type+"/"+r.ID)
		}
	}
	sort.Strings(got)
	if strings.Join(got, " ") != "Patient/a Patient/b" {
		t.Errorf("patient refs = %v, want Patient/a Patient/b", got)
	}
}
