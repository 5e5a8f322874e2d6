package fhir

import (
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ValidID reports whether s is a valid resource id (R4 id type: 1-64 of
// [A-Za-z0-9\-\.]).
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// NewID returns a new server-assigned id: a random UUID (version 4), which
// is unguessable and never collides across replicas or imported records.
func NewID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// FormatInstant renders t as a FHIR instant in UTC with microseconds, the
// precision the store keeps.
func FormatInstant(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000Z07:00")
}

// ParseInstant parses a FHIR instant or dateTime with a time zone; partial
// dates ("2024", "2024-05", "2024-05-06") are taken as their first instant
// in UTC, as _since and similar parameters allow.
func ParseInstant(s string) (time.Time, error) {
	layouts := []string{time.RFC3339Nano, "2006-01-02T15:04:05Z07:00", "2006-01-02T15:04Z07:00", "2006-01-02", "2006-01", "2006"}
	for _, l := range layouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a FHIR instant (e.g. 2024-05-06T07:08:09Z)", s)
}

// Reference is a parsed reference string.
type Reference struct {
	// Base is the service base URL of an absolute reference ("" if relative).
	Base    string
	Type    string
	ID      string
	Version string
}

// ParseReference splits "Type/id", "Type/id/_history/v" and absolute
// "http://base/Type/id[/_history/v]" references. ok is false for other
// forms (urn:uuid:, #contained, conditional references, canonical URLs
// that do not end in Type/id).
func ParseReference(ref string) (r Reference, ok bool) {
	if ref == "" || ref[0] == '#' || strings.HasPrefix(ref, "urn:") || strings.IndexByte(ref, '?') >= 0 {
		return r, false
	}
	// Split from the end, without allocating: [base/]Type/id[/_history/v].
	end := ref
	if i := strings.LastIndexByte(ref, '/'); i >= 0 {
		if j := strings.LastIndexByte(ref[:i], '/'); j >= 0 && ref[j+1:i] == "_history" && strings.IndexByte(ref[:j], '/') >= 0 {
			r.Version = ref[i+1:]
			end = ref[:j]
		}
	}
	i := strings.LastIndexByte(end, '/')
	if i < 0 {
		return Reference{}, false
	}
	r.ID = end[i+1:]
	head := end[:i]
	j := strings.LastIndexByte(head, '/')
	r.Type = head[j+1:]
	if !isTypeName(r.Type) || !ValidID(r.ID) {
		return Reference{}, false
	}
	if j >= 0 {
		r.Base = head[:j]
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

func isTypeName(s string) bool {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
