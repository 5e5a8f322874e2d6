package search

import (
	"math"
	"strings"

	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/r4"
)

// compositeMatch reports whether the stored parts of one composite entry
// match a composite search value ("code$value"), each component compared
// as its own parameter type would be.
func compositeMatch(c *clause, ps []index.CompositePart, v string, now int64) bool {
	vals := splitEscaped(v, '$')
	if len(vals) != len(ps) || len(vals) != len(c.comps) {
		return false
	}
	for i, val := range vals {
		if !partMatch(c.comps[i], ps[i], val, now) {
			return false
		}
	}
	return true
}

func partMatch(t r4.ParamType, p index.CompositePart, v string, now int64) bool {
	switch t {
	case r4.ParamToken:
		if p.Token == nil {
			return false
		}
		parts := splitEscaped(v, '|')
		switch len(parts) {
		case 1:
			return p.Token.Code == unescape(parts[0])
		case 2:
			sys, code := unescape(parts[0]), unescape(parts[1])
			if code == "" {
				return p.Token.System == sys
			}
			return p.Token.System == sys && p.Token.Code == code
		}
		return false
	case r4.ParamQuantity:
		if p.Quantity == nil {
			return false
		}
		q, err := parseQuantity(v)
		if err != nil {
			return false
		}
		if q.hasSystem && p.Quantity.System != q.system {
			return false
		}
		if q.code != "" && p.Quantity.Code != q.code && (q.hasSystem || p.Quantity.Unit != q.code) {
			return false
		}
		return numberMatch(q.prefix, p.Quantity.Value, p.Quantity.Low, p.Quantity.High, q.value, q.low, q.high)
	case r4.ParamNumber:
		if p.Number == nil {
			return false
		}
		prefix, value, low, high, err := parseNumber(v)
		if err != nil {
			return false
		}
		return numberMatch(prefix, p.Number.Value, p.Number.Low, p.Number.High, value, low, high)
	case r4.ParamDate:
		if p.Date == nil {
			return false
		}
		prefix, sl, sh, err := parseDate(v)
		if err != nil {
			return false
		}
		return dateMatch(prefix, p.Date.Low, p.Date.High, sl, sh, now)
	case r4.ParamString:
		return p.String != nil && strings.HasPrefix(p.String.Norm, index.NormalizeString(unescape(v)))
	case r4.ParamURI:
		return p.URI != nil && p.URI.Value == unescape(v)
	case r4.ParamReference:
		if p.Ref == nil {
			return false
		}
		v = unescape(v)
		if typ, id, ok := strings.Cut(v, "/"); ok && r4.IsResourceType(typ) {
			return p.Ref.Type == typ && p.Ref.ID == id
		}
		return p.Ref.ID == v || p.Ref.URL == v
	}
	return false
}

// numberMatch is numberCond in Go.
func numberMatch(prefix string, v, lo, hi, value, low, high float64) bool {
	switch prefix {
	case "eq":
		return v >= low && v < high
	case "ne":
		return v < low || v >= high
	case "gt":
		return v > value
	case "lt":
		return v < value
	case "ge":
		return v >= value
	case "le":
		return v <= value
	case "sa":
		return lo > value
	case "eb":
		return hi < value
	case "ap":
		d := math.Abs(value) / 10
		return v >= value-d && v <= value+d
	}
	return false
}

// dateMatch is rangeCond in Go.
func dateMatch(prefix string, lo, hi, sl, sh, now int64) bool {
	contained := lo >= sl && hi <= sh
	switch prefix {
	case "eq":
		return contained
	case "ne":
		return !contained
	case "gt":
		return hi > sh
	case "lt":
		return lo < sl
	case "ge":
		return hi > sh || contained
	case "le":
		return lo < sl || contained
	case "sa":
		return lo > sh
	case "eb":
		return hi < sl
	case "ap":
		d := now - sl
		if d < 0 {
			d = -d
		}
		d /= 10
		return hi >= satSub(sl, d) && lo <= satAdd(sh, d)
	}
	return false
}
