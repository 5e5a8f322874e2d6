package validate

import (
	"strings"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/r4"
)

// reference checks Reference.reference: one of the forms FHIR allows and,
// where the form names the resource type, a type the element may point at
// (targets; nil means any).
func (st *state) reference(v *fhirjson.Value, targets []string) {
	r := v.Get("reference")
	if r == nil || r.Kind != fhirjson.String || r.Str == "" {
		return // structure errors are reported by the element walk
	}
	mark := st.push("reference")
	typ := st.referenceType(r)
	if typ != "" && targets != nil && !contains(targets, typ) {
		st.errorf(CodeInvalid, r.Offset, "reference to %s is not allowed here: expected %s", typ, strings.Join(targets, ", "))
	}
	st.pop(mark)
}

// referenceType checks the form of a reference and returns the resource
// type it names, "" when the form does not say.
func (st *state) referenceType(r *fhirjson.Value) string {
	s := r.Str
	switch {
	case s[0] == '#':
		if s == "#" {
			return "" // the containing resource
		}
		id := s[1:]
		if st.contained != nil && st.contained.Kind == fhirjson.Array {
			for _, c := range st.contained.Items {
				if c.GetString("id") == id {
					return c.GetString("resourceType")
				}
			}
		}
		st.errorf(CodeInvalid, r.Offset, "reference %q: no contained resource has id %q", s, id)
		return ""
	case strings.HasPrefix(s, "urn:uuid:"):
		if !matchUUID(s) {
			st.errorf(CodeInvalid, r.Offset, "invalid urn:uuid reference %q", s)
		}
		return ""
	case strings.HasPrefix(s, "urn:oid:"):
		if !matchOID(s) {
			st.errorf(CodeInvalid, r.Offset, "invalid urn:oid reference %q", s)
		}
		return ""
	}
	if !matchURI(s) {
		st.errorf(CodeInvalid, r.Offset, "invalid reference %q: must not contain whitespace", s)
		return ""
	}
	if before, _, ok := strings.Cut(s, "?"); ok && !strings.Contains(before, "/") {
		if !r4.IsResourceType(before) {
			st.errorf(CodeInvalid, r.Offset, "conditional reference %q: %q is not a resource type", s, before)
			return ""
		}
		if !st.opts.AllowConditionalReferences {
			st.errorf(CodeInvalid, r.Offset, "conditional reference %q is only allowed in a transaction, which resolves it", s)
		}
		return before
	}
	if !hasScheme(s) {
		return st.relativeType(r)
	}
	// Absolute: any URI scheme, as Bundle fullUrls may use their own
	// ("resource:0" in SMART Health Cards). The type is known when an
	// http(s)-style URL ends in Type/id or Type/id/_history/vid.
	if i := strings.Index(s, "://"); i > 0 {
		segs := strings.Split(s[i+3:], "/")
		n := len(segs)
		if n >= 5 && segs[n-2] == "_history" && r4.IsResourceType(segs[n-4]) {
			return segs[n-4]
		}
		if n >= 3 && r4.IsResourceType(segs[n-2]) {
			return segs[n-2]
		}
		return ""
	}
	return ""
}

// hasScheme reports whether s starts with a URI scheme
// (ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":").
func hasScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		case i > 0 && c == ':':
			return true
		default:
			return false
		}
	}
	return false
}

// relativeType checks a relative reference: Type/id or
// Type/id/_history/vid.
func (st *state) relativeType(r *fhirjson.Value) string {
	s := r.Str
	typ, rest, _ := strings.Cut(s, "/")
	id, hist, versioned := strings.Cut(rest, "/")
	if !r4.IsResourceType(typ) {
		st.errorf(CodeInvalid, r.Offset, "invalid reference %q: expected Type/id, Type/id/_history/version, an absolute URL, urn:uuid:, urn:oid: or #id; %q is not a resource type", s, typ)
		return ""
	}
	if !matchID(id) {
		st.errorf(CodeInvalid, r.Offset, "invalid reference %q: %q is not a valid id", s, id)
		return typ
	}
	if versioned {
		vid, ok := strings.CutPrefix(hist, "_history/")
		if !ok || !matchID(vid) {
			st.errorf(CodeInvalid, r.Offset, "invalid reference %q: expected Type/id/_history/version", s)
		}
	}
	return typ
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
