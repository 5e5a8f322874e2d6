package sqldb

import (
	"encoding/json"
	"math"

	"github.com/phr-project/phr/internal/index"
)

// The parts of a composite index entry are stored as JSON that decodes
// into []index.CompositePart. Written with encoding/json's defaults, every
// part carried all seven part kinds (six as null) and every field of the
// one set, empty or not: about 560 bytes a row, most of the idx_composite
// table. The mirror types below give the same member names but leave out
// what is empty, so a row is a fifth of that and rows written either way
// decode alike (a missing member decodes as the zero value, as an empty
// one did).

type compactPart struct {
	Token    *compactToken    `json:",omitempty"`
	String   *compactString   `json:",omitempty"`
	Date     *compactDate     `json:",omitempty"`
	Ref      *compactRef      `json:",omitempty"`
	Quantity *compactQuantity `json:",omitempty"`
	Number   *compactNumber   `json:",omitempty"`
	URI      *compactURI      `json:",omitempty"`
}

type compactToken struct {
	Param      string `json:",omitempty"`
	System     string `json:",omitempty"`
	Code       string `json:",omitempty"`
	Text       string `json:",omitempty"`
	TypeSystem string `json:",omitempty"`
	TypeCode   string `json:",omitempty"`
}

type compactString struct {
	Param string `json:",omitempty"`
	Norm  string `json:",omitempty"`
	Exact string `json:",omitempty"`
}

type compactDate struct {
	Param string `json:",omitempty"`
	Low   int64  `json:",omitempty"`
	High  int64  `json:",omitempty"`
}

type compactRef struct {
	Param            string `json:",omitempty"`
	Type             string `json:",omitempty"`
	ID               string `json:",omitempty"`
	Version          string `json:",omitempty"`
	URL              string `json:",omitempty"`
	IdentifierSystem string `json:",omitempty"`
	IdentifierValue  string `json:",omitempty"`
}

type compactQuantity struct {
	Param  string  `json:",omitempty"`
	Value  float64 `json:",omitempty"`
	Low    float64 `json:",omitempty"`
	High   float64 `json:",omitempty"`
	Text   string  `json:",omitempty"`
	System string  `json:",omitempty"`
	Code   string  `json:",omitempty"`
	Unit   string  `json:",omitempty"`
}

type compactNumber struct {
	Param string  `json:",omitempty"`
	Value float64 `json:",omitempty"`
	Low   float64 `json:",omitempty"`
	High  float64 `json:",omitempty"`
	Text  string  `json:",omitempty"`
}

type compactURI struct {
	Param string `json:",omitempty"`
	Value string `json:",omitempty"`
}

// finite maps the open ends of a range (±Inf, which JSON cannot carry) to
// the largest finite values, which compare the same with any stored value.
func finite(f float64) float64 {
	switch {
	case math.IsInf(f, 1):
		return math.MaxFloat64
	case math.IsInf(f, -1):
		return -math.MaxFloat64
	}
	return f
}

// CompositeParts encodes the parts of a composite index entry as stored in
// idx_composite.parts: JSON that decodes into []index.CompositePart, with
// empty members left out.
func CompositeParts(parts []index.CompositePart) (string, error) {
	out := make([]compactPart, len(parts))
	for i, p := range parts {
		c := &out[i]
		if x := p.Token; x != nil {
			c.Token = &compactToken{x.Param, x.System, x.Code, x.Text, x.TypeSystem, x.TypeCode}
		}
		if x := p.String; x != nil {
			c.String = &compactString{x.Param, x.Norm, x.Exact}
		}
		if x := p.Date; x != nil {
			c.Date = &compactDate{x.Param, x.Low, x.High}
		}
		if x := p.Ref; x != nil {
			c.Ref = &compactRef{x.Param, x.Type, x.ID, x.Version, x.URL, x.IdentifierSystem, x.IdentifierValue}
		}
		if x := p.Quantity; x != nil {
			c.Quantity = &compactQuantity{x.Param, finite(x.Value), finite(x.Low), finite(x.High), x.Text, x.System, x.Code, x.Unit}
		}
		if x := p.Number; x != nil {
			c.Number = &compactNumber{x.Param, finite(x.Value), finite(x.Low), finite(x.High), x.Text}
		}
		if x := p.URI; x != nil {
			c.URI = &compactURI{x.Param, x.Value}
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "", err
	}
	return string(b), nil
}
