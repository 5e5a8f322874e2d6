package validate

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"github.com/phr-project/phr/internal/r4"
)

// matchers are the hand-written format checks, by R4 type name, reduced to
// "does the regex match" so they can be compared with the definitions.
var matchers = map[string]func(string) bool{
	"integer":      func(s string) bool { ok, _ := matchInteger(s); return ok },
	"unsignedInt":  matchUnsigned,
	"positiveInt":  func(s string) bool { return matchUnsigned(s) && s != "0" },
	"decimal":      matchDecimal,
	"id":           matchID,
	"code":         matchCode,
	"uri":          matchURI,
	"url":          matchURI,
	"canonical":    matchURI,
	"oid":          matchOID,
	"uuid":         matchUUID,
	"base64Binary": matchBase64,
	"date":         func(s string) bool { ok, _ := matchDate(s); return ok },
	"dateTime":     func(s string) bool { ok, _ := matchDateTime(s); return ok },
	"instant":      func(s string) bool { ok, _ := matchInstant(s); return ok },
	"time":         matchTime,
}

var seeds = []string{
	"", "0", "-0", "1", "-1", "01", "123", "2147483647", "-2147483648", "1.5", "1.50", "-0.0", "1e10", "1E-5", "1.", ".5",
	"abc", "a-b.c", "A B", "a  b", " a", "a ", "a\tb", "http://x.org/a?b=c", "http://x y",
	"urn:oid:1.2.3", "urn:oid:0.0", "urn:oid:3.1", "urn:oid:1.02", "urn:oid:1", "urn:oid:1.2.",
	"urn:uuid:0b7e4b5c-1a35-4f4c-9b5b-6a0c2d3e4f5a", "urn:uuid:0B7E4B5C-1a35-4f4c-9b5b-6a0c2d3e4f5a",
	"YWJj", "YWJjZA==", "YW Jj", " YWJj ", "YWJ", "YW=j",
	"2020", "0000", "0001", "2020-01", "2020-1", "2020-13", "2020-01-31", "2020-02-30", "2020-01-00", "2020-01-32",
	"2020-01-01T10:00:00Z", "2020-01-01T10:00:00+01:00", "2020-01-01T10:00:00.123-14:00", "2020-01-01T10:00:00+14:00",
	"2020-01-01T10:00:00+14:01", "2020-01-01T24:00:00Z", "2020-01-01T23:59:60Z", "2020-01-01T10:00Z", "2020-01-01T10:00:00",
	"2020-01T10:00:00Z", "10:00:00", "23:59:60.5", "24:00:00", "10:00", "10:00:00.", "10:60:00",
}

const alphabet = "0123456789-+.:TZeEabcfxyzABF/= \t\nurn:oid:uuid"

func mutate(r *rand.Rand, s string) string {
	b := []byte(s)
	for n := r.IntN(3) + 1; n > 0; n-- {
		c := alphabet[r.IntN(len(alphabet))]
		switch op := r.IntN(3); {
		case op == 0 || len(b) == 0:
			i := r.IntN(len(b) + 1)
			b = append(b[:i], append([]byte{c}, b[i:]...)...)
		case op == 1:
			b[r.IntN(len(b))] = c
		default:
			i := r.IntN(len(b))
			b = append(b[:i], b[i+1:]...)
		}
	}
	return string(b)
}

// TestMatchersEqualRegex proves each hand-written matcher accepts exactly
// what the type's regex from the R4 definitions accepts, over the seeds and
// many random mutations of them.
func TestMatchersEqualRegex(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	corpus := append([]string(nil), seeds...)
	for range 40000 {
		corpus = append(corpus, mutate(r, seeds[r.IntN(len(seeds))]))
	}
	for name, match := range matchers {
		ty := r4.LookupType(name)
		if ty == nil || ty.Regex == "" {
			t.Fatalf("%s has no regex in the R4 tables", name)
		}
		re := regexp.MustCompile(ty.Regex)
		accepted := 0
		for _, s := range corpus {
			want := re.MatchString(s)
			if got := match(s); got != want {
				t.Errorf("%s %q: matcher says %v, regex %s says %v", name, s, got, ty.Regex, want)
			}
			if want {
				accepted++
			}
		}
		if accepted == 0 {
			t.Errorf("%s: the corpus has no valid value, so the comparison proves nothing", name)
		}
	}
}

func FuzzMatchers(f *testing.F) {
	for _, s := range seeds {
		f.Add(s)
	}
	res := map[string]*regexp.Regexp{}
	for name := range matchers {
		res[name] = regexp.MustCompile(r4.LookupType(name).Regex)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for name, match := range matchers {
			if got, want := match(s), res[name].MatchString(s); got != want {
				t.Errorf("%s %q: matcher %v, regex %v", name, s, got, want)
			}
		}
	})
}

func TestRanges(t *testing.T) {
	for s, want := range map[string]bool{"2147483647": true, "2147483648": false, "-2147483648": true, "-2147483649": false, "99999999999": false, "0": true} {
		if _, in := matchInteger(s); in != want {
			t.Errorf("integer %s in range = %v", s, in)
		}
	}
	for s, want := range map[string]bool{"2147483647": true, "2147483648": false, "1": true} {
		if fits31(s) != want {
			t.Errorf("fits31(%s) = %v", s, !want)
		}
	}
	for s, want := range map[string]bool{"2019-02-29": false, "2020-02-29": true, "1900-02-29": false, "2000-02-29": true, "2020-04-31": false, "2020-12-31": true, "2020": true} {
		if _, day := matchDate(s); day != want {
			t.Errorf("date %s day valid = %v", s, day)
		}
	}
}

// TestControlChar compares controlChar with a byte-by-byte scan on strings
// with a control character (or tab, CR, LF, or a byte just above 0x1f or
// with the high bit set) at every position of every length up to 40.
func TestControlChar(t *testing.T) {
	naive := func(s string) int {
		for i := 0; i < len(s); i++ {
			if c := s[i]; c < 0x20 && c != '\t' && c != '\r' && c != '\n' {
				return i
			}
		}
		return -1
	}
	for n := 0; n <= 40; n++ {
		for pos := 0; pos < max(n, 1); pos++ {
			for _, c := range []byte{0x00, 0x01, 0x1f, 0x20, '\t', '\n', '\r', 0x7f, 0x80, 0x9f, 0xff, 'a'} {
				b := []byte(strings.Repeat("x", n))
				if n > 0 {
					b[pos] = c
				}
				if pos+1 < n {
					b[pos+1] = 0x1f // a second one after it
				}
				s := string(b)
				if got, want := controlChar(s), naive(s); got != want {
					t.Fatalf("controlChar(%q) = %d, want %d", s, got, want)
				}
			}
		}
	}
}
