package scope

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseOneResourceScopes(t *testing.T) {
	cases := []struct {
		in    string
		ctx   Context
		typ   string
		perms Interaction
		v1    bool
		out   string
	}{
		{"patient/Observation.read", Patient, "Observation", Read | Search, true, "patient/Observation.read"},
		{"user/*.write", User, "*", Create | Update | Delete, true, "user/*.write"},
		{"system/*.*", System, "*", All, true, "system/*.*"},
		{"system/*.rs", System, "*", Read | Search, false, "system/*.rs"},
		{"patient/Patient.r", Patient, "Patient", Read, false, "patient/Patient.r"},
		{"user/Encounter.cruds", User, "Encounter", All, false, "user/Encounter.cruds"},
		{"user/Encounter.cd", User, "Encounter", Create | Delete, false, "user/Encounter.cd"},
	}
	for _, c := range cases {
		sc, ok, err := ParseOne(c.in)
		if err != nil || !ok {
			t.Fatalf("ParseOne(%q) = ok %v, err %v", c.in, ok, err)
		}
		if sc.Kind != Resource || sc.Context != c.ctx || sc.Type != c.typ || sc.Interactions != c.perms || sc.V1 != c.v1 {
			t.Errorf("ParseOne(%q) = %+v", c.in, sc)
		}
		if got := sc.String(); got != c.out {
			t.Errorf("String() of %q = %q, want %q", c.in, got, c.out)
		}
	}
}

func TestParseOneQuery(t *testing.T) {
	in := "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory&status=final"
	sc, ok, err := ParseOne(in)
	if err != nil || !ok {
		t.Fatalf("ParseOne: ok %v err %v", ok, err)
	}
	want := []Param{
		{"category", "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"},
		{"status", "final"},
	}
	if !reflect.DeepEqual(sc.Filter, want) {
		t.Fatalf("Filter = %+v, want %+v", sc.Filter, want)
	}
	if sc.String() != in {
		t.Errorf("String() = %q, want %q", sc.String(), in)
	}
	// '+' means itself: scope queries are not form-encoded.
	sc, _, err = ParseOne("user/Observation.s?date=ge2020-01-01T00:00:00+01:00")
	if err != nil || sc.Filter[0].Value != "ge2020-01-01T00:00:00+01:00" {
		t.Fatalf("plus sign: %+v %v", sc.Filter, err)
	}
	// Percent-encoded values are decoded, and re-encoded only where needed.
	sc, _, err = ParseOne("user/Observation.s?code=a%26b")
	if err != nil || sc.Filter[0].Value != "a&b" || sc.String() != "user/Observation.s?code=a%26b" {
		t.Fatalf("percent-encoding: %+v %q %v", sc.Filter, sc.String(), err)
	}
}

func TestParseOneOtherScopes(t *testing.T) {
	cases := map[string]Scope{
		"launch":           {Kind: Launch},
		"launch/patient":   {Kind: LaunchContext, Name: "patient"},
		"launch/encounter": {Kind: LaunchContext, Name: "encounter"},
		"openid":           {Kind: OpenID},
		"fhirUser":         {Kind: FHIRUser},
		"offline_access":   {Kind: OfflineAccess},
		"online_access":    {Kind: OnlineAccess},
	}
	for in, want := range cases {
		sc, ok, err := ParseOne(in)
		if err != nil || !ok || !reflect.DeepEqual(sc, want) {
			t.Errorf("ParseOne(%q) = %+v, %v, %v", in, sc, ok, err)
		}
		if sc.String() != in {
			t.Errorf("String() = %q, want %q", sc.String(), in)
		}
	}
	for _, in := range []string{"profile", "email", "foo/Bar.read", "https://example.org/scope"} {
		_, ok, err := ParseOne(in)
		if ok || err != nil {
			t.Errorf("ParseOne(%q) = ok %v err %v, want unknown", in, ok, err)
		}
	}
}

func TestParseOneErrors(t *testing.T) {
	cases := map[string]string{
		"patient/Observation":          "missing '.'",
		"patient/observation.read":     "must be * or a FHIR resource type",
		"patient/.read":                "must be * or a FHIR resource type",
		"user/Observation.":            "empty",
		"user/Observation.sr":          "out of order or repeated",
		"user/Observation.rr":          "out of order or repeated",
		"user/Observation.x":           "not one of c, r, u, d, s",
		"user/Observation.readwrite":   "not one of c, r, u, d, s",
		"system/*.read?category=x":     "only allowed with v2",
		"patient/Observation.rs?":      "empty query",
		"patient/Observation.rs?code":  "not name=value",
		"patient/Observation.rs?code=": "not name=value",
		"patient/Observation.rs?c=%zz": "bad percent-encoding",
		"launch/":                      "launch context name",
	}
	for in, want := range cases {
		_, ok, err := ParseOne(in)
		var pe *ParseError
		if ok || !errors.As(err, &pe) {
			t.Errorf("ParseOne(%q) = ok %v err %v, want a ParseError", in, ok, err)
			continue
		}
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), in) {
			t.Errorf("ParseOne(%q) error %q, want it to name the scope and say %q", in, err, want)
		}
	}
}

func TestParseList(t *testing.T) {
	g, err := Parse("launch/patient openid  fhirUser patient/*.rs profile patient/*.rs offline_access")
	if err != nil {
		t.Fatal(err)
	}
	if got := g.String(); got != "launch/patient openid fhirUser patient/*.rs offline_access" {
		t.Errorf("String() = %q", got)
	}
	if u := g.Unknown(); !reflect.DeepEqual(u, []string{"profile"}) {
		t.Errorf("Unknown() = %q", u)
	}
	if !g.Has(OfflineAccess) || g.Has(OnlineAccess) || !g.HasLaunchContext("patient") || g.HasLaunchContext("encounter") {
		t.Error("Has/HasLaunchContext wrong")
	}
	if !g.NeedsPatient() || !g.PatientOnly() {
		t.Error("patient/ scopes not detected")
	}

	_, err = Parse("openid patient/Observation.dr user/x.read system/*.rs")
	if err == nil {
		t.Fatal("no error for malformed scopes")
	}
	msg := err.Error()
	for _, want := range []string{`scope 2 "patient/Observation.dr"`, `scope 3 "user/x.read"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not report %s", msg, want)
		}
	}
}

func TestAccess(t *testing.T) {
	g := MustParse("patient/Observation.rs?category=laboratory patient/Observation.rs?category=vital-signs patient/Patient.r user/Encounter.cruds system/Condition.s")
	cases := []struct {
		i       Interaction
		typ     string
		allowed bool
	}{
		{Read, "Observation", true},
		{Search, "Observation", true},
		{Create, "Observation", false},
		{Read, "Patient", true},
		{Search, "Patient", false},
		{Delete, "Encounter", true},
		{Read, "Condition", false},
		{Search, "Condition", true},
		{Read, "MedicationRequest", false},
		{Read | Search, "Observation", true},
		{Read | Search, "Patient", false},
	}
	for _, c := range cases {
		if got := g.Allows(c.i, c.typ); got != c.allowed {
			t.Errorf("Allows(%s, %s) = %v, want %v", c.i, c.typ, got, c.allowed)
		}
	}

	obs := g.Access(Search, "Observation")
	if !obs.CompartmentOnly() || obs.Unrestricted() || len(obs.Rules) != 2 {
		t.Fatalf("Observation access = %+v", obs)
	}
	params, compartment, ok := obs.Filter()
	if !ok || !compartment || !reflect.DeepEqual(params, []Param{{"category", "laboratory,vital-signs"}}) {
		t.Errorf("Filter() = %+v %v %v", params, compartment, ok)
	}
	if a := g.Access(Delete, "Encounter"); !a.Unrestricted() || a.CompartmentOnly() {
		t.Errorf("Encounter access = %+v", a)
	}
	if a := g.Access(Read, "Patient"); !a.CompartmentOnly() || len(a.Rules) != 1 || len(a.Rules[0].Filter) != 0 {
		t.Errorf("Patient access = %+v", a)
	}
	if g.PatientOnly() {
		t.Error("PatientOnly with user/ and system/ scopes present")
	}
}

func TestAccessDropsSubsumedRules(t *testing.T) {
	// An unfiltered scope makes filtered ones of the same reach redundant;
	// a user/ scope without a query makes everything unrestricted.
	g := MustParse("patient/Observation.rs?category=laboratory patient/Observation.rs")
	a := g.Access(Read, "Observation")
	if len(a.Rules) != 1 || !a.Rules[0].Compartment || len(a.Rules[0].Filter) != 0 {
		t.Errorf("rules = %+v", a.Rules)
	}
	g = MustParse("patient/*.rs user/Observation.rs")
	if a := g.Access(Read, "Observation"); !a.Unrestricted() {
		t.Errorf("rules = %+v", a.Rules)
	}
	// Different parameters cannot be merged into one conjunction.
	g = MustParse("user/Observation.rs?category=laboratory user/Observation.rs?code=1234-5")
	a = g.Access(Search, "Observation")
	if _, _, ok := a.Filter(); ok || len(a.Rules) != 2 || a.CompartmentOnly() {
		t.Errorf("access = %+v", a)
	}
}

func TestNarrow(t *testing.T) {
	cases := []struct {
		requested, allowed, granted string
	}{
		// v1 requests are answered in v1 form.
		{"system/*.read", "system/*.rs", "system/*.read"},
		// No escalation: rs does not give cruds.
		{"system/*.cruds", "system/*.rs", "system/*.rs"},
		{"system/*.*", "system/*.rs", "system/*.read"},
		// patient/ does not give system/ or user/, nor the reverse.
		{"system/*.rs", "patient/*.rs", ""},
		{"user/*.rs", "patient/*.cruds", ""},
		{"patient/*.rs", "system/*.cruds user/*.cruds", ""},
		// A requested * narrows to the allowed types.
		{"patient/*.rs", "patient/Observation.rs patient/Patient.r", "patient/Observation.rs patient/Patient.r"},
		// Queries are ANDed.
		{"patient/Observation.rs?status=final", "patient/Observation.rs?category=laboratory", "patient/Observation.rs?status=final&category=laboratory"},
		{"patient/Observation.rs", "patient/*.r?category=laboratory", "patient/Observation.r?category=laboratory"},
		// Other scopes only when allowed; unknown scopes never.
		{"launch/patient openid fhirUser offline_access profile patient/*.rs", "launch/patient openid patient/*.cruds", "launch/patient openid patient/*.rs"},
		// A redundant narrower grant is dropped.
		{"system/*.rs", "system/*.rs system/Patient.r", "system/*.rs"},
		{"system/Patient.write", "system/*.cruds", "system/Patient.write"},
		{"system/Patient.write", "system/*.cu", "system/Patient.cu"},
	}
	for _, c := range cases {
		got := Narrow(MustParse(c.requested), MustParse(c.allowed))
		if got.String() != c.granted {
			t.Errorf("Narrow(%q, %q) = %q, want %q", c.requested, c.allowed, got.String(), c.granted)
		}
		if (c.granted == "") != got.Empty() {
			t.Errorf("Narrow(%q, %q).Empty() = %v", c.requested, c.allowed, got.Empty())
		}
	}
}

// TestNarrowNeverEscalates checks the property behind Narrow on every pair
// from a pool of scopes: anything the narrowed grant allows, both the request
// and the allowance allow, for every interaction and type.
func TestNarrowNeverEscalates(t *testing.T) {
	pool := []string{
		"patient/*.rs", "patient/*.cruds", "patient/Observation.r", "patient/Observation.rs?category=laboratory",
		"user/*.read", "user/Patient.write", "user/Observation.*", "system/*.rs", "system/*.cruds",
		"system/Patient.s", "system/Observation.cu?status=final", "patient/Patient.*",
	}
	types := []string{"Observation", "Patient", "Encounter"}
	interactions := []Interaction{Create, Read, Update, Delete, Search}
	for _, r := range pool {
		for _, a := range pool {
			for _, r2 := range pool {
				req := MustParse(r + " " + r2)
				allowed := MustParse(a)
				got := Narrow(req, allowed)
				for _, typ := range types {
					for _, i := range interactions {
						ga := got.Access(i, typ)
						if !ga.Allowed {
							continue
						}
						if !req.Allows(i, typ) || !allowed.Allows(i, typ) {
							t.Fatalf("Narrow(%q, %q) = %q allows %s on %s", req, allowed, got, i, typ)
						}
						// Every granted rule must be within some rule of each input.
						for _, rule := range ga.Rules {
							if !withinSome(rule, req.Access(i, typ).Rules) || !withinSome(rule, allowed.Access(i, typ).Rules) {
								t.Fatalf("Narrow(%q, %q) = %q: rule %+v for %s %s escapes an input", req, allowed, got, rule, i, typ)
							}
						}
					}
				}
			}
		}
	}
}

func withinSome(r Rule, rules []Rule) bool {
	for _, o := range rules {
		if ruleCovers(o, r) {
			return true
		}
	}
	return false
}

// FuzzParseOne checks that whatever parses is written back in a form that
// parses to the same scope, so granted scopes survive the trip through a
// token's scope claim. Run longer with go test -fuzz FuzzParseOne.
func FuzzParseOne(f *testing.F) {
	for _, s := range []string{
		"patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
		"user/*.cruds", "system/*.read", "launch/patient", "patient/Observation.s?code=a%26b&x=%25",
		"user/Encounter.cd?a=b&a=b", "openid",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sc, ok, err := ParseOne(s)
		if err != nil || !ok {
			return
		}
		back, ok, err := ParseOne(sc.String())
		if err != nil || !ok {
			t.Fatalf("ParseOne(%q).String() = %q does not parse: %v", s, sc.String(), err)
		}
		if !back.equal(sc) || back.V1 != sc.V1 {
			t.Fatalf("ParseOne(%q) = %+v, but its String() %q parses to %+v", s, sc, sc.String(), back)
		}
	})
}
