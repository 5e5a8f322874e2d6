package fhir

import (
	"strconv"
	"strings"
	"testing"
)

// parseReferenceSplit is ParseReference as first written (with
// strings.Split), kept to prove the allocation-free one equal to it.
func parseReferenceSplit(ref string) (r Reference, ok bool) {
	if ref == "" || strings.HasPrefix(ref, "#") || strings.HasPrefix(ref, "urn:") || strings.ContainsAny(ref, "?") {
		return r, false
	}
	parts := strings.Split(ref, "/")
	n := len(parts)
	if n >= 4 && parts[n-2] == "_history" {
		r.Version = parts[n-1]
		parts = parts[:n-2]
		n -= 2
	}
	if n < 2 {
		return Reference{}, false
	}
	r.Type, r.ID = parts[n-2], parts[n-1]
	if !isTypeName(r.Type) || !ValidID(r.ID) {
		return Reference{}, false
	}
	if n > 2 {
		r.Base = strings.Join(parts[:n-2], "/")
		if !strings.Contains(r.Base, "://") {
			return Reference{}, false
		}
	}
	if r.Version != "" {
		if _, err := strconv.ParseUint(r.Version, 10, 64); err != nil && !ValidID(r.Version) {
			return Reference{}, false
		}
	}
	return r, true
}

func TestParseReference(t *testing.T) {
	want := map[string]Reference{
		"Patient/1":                                   {Type: "Patient", ID: "1"},
		"Patient/1/_history/2":                        {Type: "Patient", ID: "1", Version: "2"},
		"http://x.org/fhir/Patient/a-b.c":             {Base: "http://x.org/fhir", Type: "Patient", ID: "a-b.c"},
		"https://x.org/fhir/Observation/o/_history/7": {Base: "https://x.org/fhir", Type: "Observation", ID: "o", Version: "7"},
	}
	for in, w := range want {
		if got, ok := ParseReference(in); !ok || got != w {
			t.Errorf("ParseReference(%q) = %+v, %v; want %+v", in, got, ok, w)
		}
	}
	for _, in := range []string{"", "#c1", "urn:uuid:0a", "Patient?identifier=a|b", "Patient", "/Patient/1", "x/Patient/1", "patient/1", "Patient/", "a/_history/1"} {
		if got, ok := ParseReference(in); ok {
			t.Errorf("ParseReference(%q) = %+v, want not ok", in, got)
		}
	}
}

// TestParseReferenceSameAsSplit compares ParseReference with the Split
// version on every combination of a set of segments.
func TestParseReferenceSameAsSplit(t *testing.T) {
	segs := []string{"", "Patient", "1", "_history", "2", "http:", "x.org", "fhir", "a b", "v.1", "urn:x", "Obs3rvation", "ab#c",
		strings.Repeat("a", 64), strings.Repeat("a", 65)}
	var refs []string
	var gen func(prefix string, depth int)
	gen = func(prefix string, depth int) {
		refs = append(refs, prefix)
		if depth == 0 {
			return
		}
		for _, s := range segs {
			if prefix == "" {
				gen(s, depth-1)
			} else {
				gen(prefix+"/"+s, depth-1)
			}
		}
	}
	gen("", 5)
	refs = append(refs, "http://x.org/fhir/Patient/1/_history/2", "http://x.org//Patient/1", "#", "/", "//", "///_history/1")
	for _, in := range refs {
		got, ok := ParseReference(in)
		want, wantOK := parseReferenceSplit(in)
		if got != want || ok != wantOK {
			t.Fatalf("ParseReference(%q) = %+v, %v; the Split version gives %+v, %v", in, got, ok, want, wantOK)
		}
	}
	t.Logf("%d references compared", len(refs))
}

func BenchmarkParseReference(b *testing.B) {
	refs := []string{"Patient/0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d", "Practitioner/123/_history/4", "https://example.org/fhir/Organization/x", "urn:uuid:0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		ParseReference(refs[n%len(refs)])
		n++
	}
}
