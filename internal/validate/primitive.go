package validate

import "strings"

// The primitive formats are checked by hand-written matchers rather than
// the definitions' regular expressions: regexp costs microseconds per value
// and the server checks millions of them. primitive_test.go proves each
// matcher equal to its R4 regex on generated and real values.

// maxString is the size limit FHIR sets on strings (1 MB).
const maxString = 1 << 20

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isSpace is \s as the R4 regexes mean it (RE2: [\t\n\f\r ]).
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' }

// matchInteger matches -?([0]|([1-9][0-9]*)) and reports whether the
// value fits in 32 bits (FHIR integer range).
func matchInteger(s string) (ok, inRange bool) {
	neg := false
	if strings.HasPrefix(s, "-") {
		neg = true
		s = s[1:]
	}
	if !matchUnsigned(s) {
		return false, false
	}
	limit := "2147483647"
	if neg {
		limit = "2147483648"
	}
	return true, len(s) < len(limit) || (len(s) == len(limit) && s <= limit)
}

// matchUnsigned matches [0]|([1-9][0-9]*).
func matchUnsigned(s string) bool {
	if s == "" {
		return false
	}
	if s[0] == '0' {
		return len(s) == 1
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// fits31 reports whether an unsigned digit string is at most 2^31-1.
func fits31(s string) bool {
	return len(s) < 10 || (len(s) == 10 && s <= "2147483647")
}

// matchDecimal matches -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func matchDecimal(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	if i >= len(s) {
		return false
	}
	if s[i] == '0' {
		i++
	} else if s[i] >= '1' && s[i] <= '9' {
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	} else {
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		j := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		if i == j {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		if i == j {
			return false
		}
	}
	return i == len(s)
}

// matchID matches [A-Za-z0-9\-\.]{1,64}.
func matchID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || isDigit(c) || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// matchCode matches [^\s]+(\s[^\s]+)*: no leading, trailing or doubled
// whitespace.
func matchCode(s string) bool {
	if s == "" || isSpace(s[0]) || isSpace(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if isSpace(s[i]) && isSpace(s[i-1]) {
			return false
		}
	}
	return true
}

// matchURI matches \S* (uri, url, canonical).
func matchURI(s string) bool {
	for i := 0; i < len(s); i++ {
		if isSpace(s[i]) {
			return false
		}
	}
	return true
}

// matchOID matches urn:oid:[0-2](\.(0|[1-9][0-9]*))+.
func matchOID(s string) bool {
	s, ok := strings.CutPrefix(s, "urn:oid:")
	if !ok || len(s) < 3 || s[0] < '0' || s[0] > '2' {
		return false
	}
	s = s[1:]
	for len(s) > 0 {
		if s[0] != '.' {
			return false
		}
		s = s[1:]
		j := 0
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		if j == 0 || (s[0] == '0' && j > 1) {
			return false
		}
		s = s[j:]
	}
	return true
}

// matchUUID matches urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}.
func matchUUID(s string) bool {
	s, ok := strings.CutPrefix(s, "urn:uuid:")
	if !ok || len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
		} else if !(isDigit(c) || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// matchBase64 matches (\s*([0-9a-zA-Z\+/=]){4}\s*)+: groups of four
// alphabet characters, whitespace only between groups.
func matchBase64(s string) bool {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || isDigit(c) || c == '+' || c == '/' || c == '=':
			n++
		case isSpace(c):
			if n%4 != 0 {
				return false
			}
		default:
			return false
		}
	}
	return n > 0 && n%4 == 0
}

// two reads two digits at s[i:].
func two(s string, i int) (int, bool) {
	if i+2 > len(s) || !isDigit(s[i]) || !isDigit(s[i+1]) {
		return 0, false
	}
	return int(s[i]-'0')*10 + int(s[i+1]-'0'), true
}

// matchYear matches ([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000):
// four digits, not 0000.
func matchYear(s string) bool {
	return len(s) >= 4 && isDigit(s[0]) && isDigit(s[1]) && isDigit(s[2]) && isDigit(s[3]) && s[:4] != "0000"
}

// dateParts matches YYYY(-MM(-DD)?)? at the start of s and returns how
// many bytes it used and the parts found (0 when absent).
func dateParts(s string) (n, year, month, day int, ok bool) {
	if !matchYear(s) {
		return 0, 0, 0, 0, false
	}
	year = int(s[0]-'0')*1000 + int(s[1]-'0')*100 + int(s[2]-'0')*10 + int(s[3]-'0')
	n = 4
	if n < len(s) && s[n] == '-' {
		m, ok := two(s, n+1)
		if !ok || m < 1 || m > 12 {
			return 0, 0, 0, 0, false
		}
		month = m
		n += 3
		if n < len(s) && s[n] == '-' {
			d, ok := two(s, n+1)
			if !ok || d < 1 || d > 31 {
				return 0, 0, 0, 0, false
			}
			day = d
			n += 3
		}
	}
	return n, year, month, day, true
}

// timeParts matches ([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?
// at the start of s and returns how many bytes it used.
func timeParts(s string) (int, bool) {
	h, ok := two(s, 0)
	if !ok || h > 23 || len(s) < 8 || s[2] != ':' || s[5] != ':' {
		return 0, false
	}
	m, ok := two(s, 3)
	if !ok || m > 59 {
		return 0, false
	}
	sec, ok := two(s, 6)
	if !ok || sec > 60 {
		return 0, false
	}
	n := 8
	if n < len(s) && s[n] == '.' {
		j := n + 1
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		if j == n+1 {
			return 0, false
		}
		n = j
	}
	return n, true
}

// matchZone matches Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00) as all of s.
func matchZone(s string) bool {
	if s == "Z" {
		return true
	}
	if len(s) != 6 || (s[0] != '+' && s[0] != '-') || s[3] != ':' {
		return false
	}
	if s[1:] == "14:00" {
		return true
	}
	h, ok := two(s, 1)
	if !ok || h > 13 {
		return false
	}
	m, ok := two(s, 4)
	return ok && m <= 59
}

// matchDate matches the R4 date regex; validDay additionally checks the
// day exists in its month (the regex allows 2019-02-31).
func matchDate(s string) (ok, validDay bool) {
	n, y, m, d, ok := dateParts(s)
	if !ok || n != len(s) {
		return false, false
	}
	return true, dayExists(y, m, d)
}

// matchDateTime matches the R4 dateTime regex: a date, or a full date
// with a time and a zone.
func matchDateTime(s string) (ok, validDay bool) {
	n, y, m, d, ok := dateParts(s)
	if !ok {
		return false, false
	}
	if n == len(s) {
		return true, dayExists(y, m, d)
	}
	if d == 0 || s[n] != 'T' {
		return false, false
	}
	tn, ok := timeParts(s[n+1:])
	if !ok || !matchZone(s[n+1+tn:]) {
		return false, false
	}
	return true, dayExists(y, m, d)
}

// matchInstant matches the R4 instant regex: a full dateTime with zone.
func matchInstant(s string) (ok, validDay bool) {
	n, y, m, d, ok := dateParts(s)
	if !ok || d == 0 || n >= len(s) || s[n] != 'T' {
		return false, false
	}
	tn, ok := timeParts(s[n+1:])
	if !ok || !matchZone(s[n+1+tn:]) {
		return false, false
	}
	return true, dayExists(y, m, d)
}

// matchTime matches the R4 time regex.
func matchTime(s string) bool {
	n, ok := timeParts(s)
	return ok && n == len(s)
}

func dayExists(y, m, d int) bool {
	if d <= 28 {
		return true
	}
	switch m {
	case 4, 6, 9, 11:
		return d <= 30
	case 2:
		leap := y%4 == 0 && (y%100 != 0 || y%400 == 0)
		return d <= 28 || (leap && d == 29)
	}
	return true
}

// checkXHTML checks the narrative rules the server can check cheaply: a
// div element in the XHTML namespace.
func checkXHTML(s string) string {
	t := strings.TrimLeft(s, " \t\r\n")
	if !strings.HasPrefix(t, "<div") || len(t) < 5 || (t[4] != ' ' && t[4] != '>' && t[4] != '\t' && t[4] != '\n' && t[4] != '\r' && t[4] != '/') {
		return "narrative div must start with <div"
	}
	end := strings.IndexByte(t, '>')
	if end < 0 {
		return "narrative div start tag is not closed"
	}
	tag := t[:end]
	if !strings.Contains(tag, `xmlns="http://www.w3.org/1999/xhtml"`) && !strings.Contains(tag, `xmlns='http://www.w3.org/1999/xhtml'`) {
		return `narrative div must declare xmlns="http://www.w3.org/1999/xhtml"`
	}
	return ""
}
