package portal

import (
	"net/url"
	"testing"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/auth/bearer"
	"github.com/phr-project/phr/internal/auth/token"
)

// fakePrincipal is a principal that is not a bearer token's.
type fakePrincipal struct {
	allow   string // interaction letters allowed on every type
	patient string
	filter  bool
}

func (f fakePrincipal) Allows(i access.Interaction, typ string) bool {
	for _, c := range f.allow {
		if byte(c) == byte(i) {
			return true
		}
	}
	return false
}
func (f fakePrincipal) Patient() string { return f.patient }
func (f fakePrincipal) Filters(typ string) []url.Values {
	if f.filter && typ == "Observation" {
		return []url.Values{{"category": {"laboratory"}}}
	}
	return nil
}
func (f fakePrincipal) Subject() string { return "fake" }

// TestClaimsFor checks the in-process token says no more than the
// session's principal: a bearer principal keeps its claims exactly;
// another is described by what it allows on every type, and refused when
// that cannot be said exactly.
func TestClaimsFor(t *testing.T) {
	bp, err := bearer.NewPrincipal(token.Claims{Subject: "user/1", Scope: "patient/Observation.rs?category=laboratory", Patient: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := claimsFor(bp)
	if err != nil || c.Scope != "patient/Observation.rs?category=laboratory" || c.Patient != "p1" {
		t.Errorf("bearer principal: %+v %v", c, err)
	}
	c, err = claimsFor(fakePrincipal{allow: "rs", patient: "p2"})
	if err != nil || c.Scope != "patient/*.rs" || c.Patient != "p2" {
		t.Errorf("read-only patient: %+v %v", c, err)
	}
	c, err = claimsFor(fakePrincipal{allow: "cruds"})
	if err != nil || c.Scope != "system/*.cruds" || c.Patient != "" {
		t.Errorf("unconfined: %+v %v", c, err)
	}
	if _, err := claimsFor(fakePrincipal{allow: ""}); err == nil {
		t.Error("a principal allowed nothing got a token")
	}
	if _, err := claimsFor(fakePrincipal{allow: "rs", patient: "p3", filter: true}); err == nil {
		t.Error("a principal with search filters got an unfiltered token")
	}
}

func TestDiffJSON(t *testing.T) {
	a, _ := decode([]byte(`{"resourceType":"Observation","status":"preliminary","valueQuantity":{"value":70.0},"note":[{"text":"a"},{"text":"b"}]}`))
	b, _ := decode([]byte(`{"resourceType":"Observation","status":"final","valueQuantity":{"value":70.00},"note":[{"text":"a"}],"issued":"2020-01-01T00:00:00Z"}`))
	got := map[string]change{}
	for _, c := range diffJSON(a, b) {
		got[c.Path] = c
	}
	want := map[string]change{
		"status":              {Path: "status", Old: "preliminary", New: "final", Kind: "changed"},
		"valueQuantity.value": {Path: "valueQuantity.value", Old: "70.0", New: "70.00", Kind: "changed"},
		"note[1].text":        {Path: "note[1].text", Old: "b", Kind: "removed"},
		"issued":              {Path: "issued", New: "2020-01-01T00:00:00Z", Kind: "added"},
	}
	if len(got) != len(want) {
		t.Errorf("diff: %+v", got)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %+v, want %+v", k, got[k], w)
		}
	}
}
