package index

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// NormalizeString returns s the way string parameters compare it: accents
// removed (canonical decomposition with the combining marks dropped, so
// "Zoë Ångström" becomes "zoe angstrom"), lower-cased, white space trimmed
// and runs of it collapsed to one space. Both the indexer and the query
// side call it, so "Müller" finds "MULLER". Strings that are already
// normal (most ASCII text) are returned without allocating.
func NormalizeString(s string) string {
	clean := true
	space := true // start of string counts as after a space
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= utf8.RuneSelf:
			return normalizeSlow(s)
		case c >= 'A' && c <= 'Z':
			clean = false
		case c == ' ':
			if space {
				clean = false
			}
			space = true
			continue
		case c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f':
			clean = false
		}
		space = false
	}
	if clean && (len(s) == 0 || s[len(s)-1] != ' ') {
		return s
	}
	if v, ok := normCache.Load(s); ok {
		return v.(string)
	}
	// ASCII: lower-case and collapse white space byte by byte
	var b strings.Builder
	b.Grow(len(s))
	pending := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case ' ', '\t', '\n', '\r', '\v', '\f':
			pending = b.Len() > 0
			continue
		}
		if pending {
			b.WriteByte(' ')
			pending = false
		}
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	n := b.String()
	cacheNorm(s, n)
	return n
}

// normCache remembers the normal forms of short strings: indexing sees the
// same displays and texts ("Body Height", "Blood Pressure") on resource
// after resource, and normalising them is most of what string and token
// text indexing costs. It stops growing at normCacheMax entries.
var (
	normCache    sync.Map
	normCacheLen atomic.Int64
)

const normCacheMax = 1 << 16

func cacheNorm(s, n string) {
	if len(s) <= 96 && normCacheLen.Load() < normCacheMax {
		if _, loaded := normCache.LoadOrStore(s, n); !loaded {
			normCacheLen.Add(1)
		}
	}
}

func normalizeSlow(s string) string {
	if v, ok := normCache.Load(s); ok {
		return v.(string)
	}
	orig := s
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			s = norm.NFD.String(s)
			break
		}
	}
	var b strings.Builder
	b.Grow(len(s))
	pending := false
	for _, r := range s {
		switch {
		case unicode.Is(unicode.Mn, r):
			continue
		case unicode.IsSpace(r):
			pending = b.Len() > 0
			continue
		}
		if pending {
			b.WriteByte(' ')
			pending = false
		}
		b.WriteRune(unicode.ToLower(r))
	}
	n := b.String()
	cacheNorm(orig, n)
	return n
}

// DateRange returns the instants a date, dateTime or instant covers, in
// microseconds since the Unix epoch, both ends inclusive. A value covers
// the whole of its precision: "2019" is all of 2019, "2019-05" all of May,
// "2019-05-02T10:00:00" that second, "2019-05-02T10:00:00.5" that tenth of
// a second. Values without a time zone - all dates, and dateTimes written
// without one - are taken as UTC: the server has no better idea of the
// writer's zone, and the same rule is applied to search values so that
// equal texts always match. Times to the minute ("2019-05-02T10:00Z"),
// which search values may use, are accepted too.
func DateRange(s string) (low, high int64, err error) {
	bad := func(why string) (int64, int64, error) {
		return 0, 0, fmt.Errorf("invalid date %q: %s", s, why)
	}
	num := func(i, n int) (int, bool) {
		if i+n > len(s) {
			return 0, false
		}
		v := 0
		for _, c := range []byte(s[i : i+n]) {
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + int(c-'0')
		}
		return v, true
	}
	year, ok := num(0, 4)
	if !ok || year == 0 {
		return bad("expected a year of four digits (0001-9999)")
	}
	month, day, hour, minute, sec, nsec := 1, 1, 0, 0, 0, 0
	// prec is the last component written; step the length of a fraction's
	// last digit
	const (
		pYear = iota
		pMonth
		pDay
		pHour
		pMinute
		pSecond
		pFraction
	)
	prec, step := pYear, time.Duration(0)
	i := 4
	if i < len(s) && s[i] == '-' {
		if month, ok = num(i+1, 2); !ok || month < 1 || month > 12 {
			return bad("expected a month 01-12 after the year")
		}
		i += 3
		prec = pMonth
		if i < len(s) && s[i] == '-' {
			if day, ok = num(i+1, 2); !ok || day < 1 || day > daysIn(year, month) {
				return bad("day out of range for the month")
			}
			i += 3
			prec = pDay
		}
	}
	zone := 0
	if i < len(s) && s[i] == 'T' {
		if prec != pDay {
			return bad("a time needs a full date before it")
		}
		if hour, ok = num(i+1, 2); !ok || hour > 23 {
			return bad("expected an hour 00-23 after 'T'")
		}
		i += 3
		prec = pHour
		if i < len(s) && s[i] == ':' {
			if minute, ok = num(i+1, 2); !ok || minute > 59 {
				return bad("expected minutes 00-59")
			}
			i += 3
			prec = pMinute
			if i < len(s) && s[i] == ':' {
				if sec, ok = num(i+1, 2); !ok || sec > 60 {
					return bad("expected seconds 00-60")
				}
				i += 3
				prec = pSecond
				if i < len(s) && s[i] == '.' {
					j := i + 1
					for j < len(s) && s[j] >= '0' && s[j] <= '9' {
						j++
					}
					digits := j - i - 1
					if digits == 0 {
						return bad("expected digits after the decimal point")
					}
					if digits > 6 {
						digits = 6 // microseconds are as fine as the index goes
					}
					for k := 0; k < 6; k++ {
						d := 0
						if k < digits {
							d = int(s[i+1+k] - '0')
						}
						nsec = nsec*10 + d
					}
					nsec *= 1000
					step = time.Duration(math.Pow10(9 - digits))
					prec = pFraction
					i = j
				}
			}
		}
		if i < len(s) {
			switch s[i] {
			case 'Z':
				i++
			case '+', '-':
				zh, ok1 := num(i+1, 2)
				zm, ok2 := num(i+4, 2)
				if !ok1 || !ok2 || s[i+3] != ':' || zh > 14 || zm > 59 {
					return bad("expected a time zone as Z or ±hh:mm")
				}
				zone = zh*3600 + zm*60
				if s[i] == '-' {
					zone = -zone
				}
				i += 6
			}
		}
	}
	if i != len(s) {
		return bad(fmt.Sprintf("unexpected %q", s[i:]))
	}
	start := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC)
	var end time.Time
	switch prec {
	case pYear:
		end = start.AddDate(1, 0, 0)
	case pMonth:
		end = start.AddDate(0, 1, 0)
	case pDay:
		end = start.AddDate(0, 0, 1)
	case pHour:
		end = start.Add(time.Hour)
	case pMinute:
		end = start.Add(time.Minute)
	case pSecond:
		end = start.Add(time.Second)
	default:
		end = start.Add(step)
	}
	off := int64(zone) * 1e6
	return start.UnixMicro() - off, end.UnixMicro() - 1 - off, nil
}

func daysIn(year, month int) int {
	return time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// DecimalRange parses a decimal's text and returns its value and the
// range its precision implies, half a unit of the last digit written
// either way: "1.5" is [1.45, 1.55), "100" is [99.5, 100.5), "1.50" is
// [1.495, 1.505), "1e2" is [50, 150). The spec's number and quantity
// searches compare against such ranges; low is inclusive, high exclusive.
// The bounds are the float64 nearest to the exact decimal bounds.
func DecimalRange(s string) (value, low, high float64, err error) {
	i := 0
	neg := false
	if i < len(s) && s[i] == '-' {
		neg = true
		i++
	}
	// the digits written, as an integer mantissa m with value m*10^scale
	var m uint64
	digits := 0
	intStart := i
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		m, digits = accumulate(m, digits, s[i])
		i++
	}
	if i == intStart {
		return 0, 0, 0, fmt.Errorf("invalid decimal %q: expected digits", s)
	}
	scale := 0
	if i < len(s) && s[i] == '.' {
		i++
		j := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			m, digits = accumulate(m, digits, s[i])
			i++
		}
		if i == j {
			return 0, 0, 0, fmt.Errorf("invalid decimal %q: expected digits after the decimal point", s)
		}
		scale = j - i
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		e, err := strconv.Atoi(strings.TrimPrefix(s[i+1:], "+"))
		if err != nil || e > 400 || e < -400 {
			return 0, 0, 0, fmt.Errorf("invalid decimal %q: bad exponent", s)
		}
		scale += e
		i = len(s)
	}
	if i != len(s) {
		return 0, 0, 0, fmt.Errorf("invalid decimal %q: unexpected %q", s, s[i:])
	}
	value, err = strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("invalid decimal %q: %w", s, err)
	}
	if digits > 17 {
		// beyond what float64 holds anyway: bound by the value's own precision
		half := 5 * math.Pow10(scale-1)
		return value, value - half, value + half, nil
	}
	var lo, hi float64
	if m == 0 {
		hi = scaled(5, scale-1)
		lo = -hi
	} else {
		lo, hi = scaled(10*m-5, scale-1), scaled(10*m+5, scale-1)
	}
	if neg {
		lo, hi = -hi, -lo
	}
	return value, lo, hi, nil
}

// accumulate adds a digit to a mantissa, counting significant digits
// (leading zeros are not).
func accumulate(m uint64, digits int, c byte) (uint64, int) {
	if digits > 17 {
		return m, digits + 1
	}
	m = m*10 + uint64(c-'0')
	if m != 0 {
		digits++
	}
	return m, digits
}

// scaled returns x*10^k rounded once to the nearest float64.
func scaled(x uint64, k int) float64 {
	switch {
	case k >= 0 && k <= 22 && x < 1<<53:
		return float64(x) * math.Pow10(k)
	case k < 0 && k >= -22 && x < 1<<53:
		return float64(x) / math.Pow10(-k)
	}
	f, _ := strconv.ParseFloat(strconv.FormatUint(x, 10)+"e"+strconv.Itoa(k), 64)
	return f
}
