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
// what is empty, and each part's Param (the composite's own code, which
// the row's pid names and no reader of the parts uses): a Synthea row
// takes about 240 bytes instead of 485, and rows written either way
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
	System     string `json:",omitempty"`
	Code       string `json:",omitempty"`
	Text       string `json:",omitempty"`
	TypeSystem string `json:",omitempty"`
	TypeCode   string `json:",omitempty"`
}

type compactString struct {
	Norm  string `json:",omitempty"`
	Exact string `json:",omitempty"`
}

type compactDate struct {
	Low  int64 `json:",omitempty"`
	High int64 `json:",omitempty"`
}

type compactRef struct {
	Type             string `json:",omitempty"`
	ID               string `json:",omitempty"`
	Version          string `json:",omitempty"`
	URL              string `json:",omitempty"`
	IdentifierSystem string `json:",omitempty"`
	IdentifierValue  string `json:",omitempty"`
}

type compactQuantity struct {
	Value  float64 `json:",omitempty"`
	Low    float64 `json:",omitempty"`
	High   float64 `json:",omitempty"`
	Text   string  `json:",omitempty"`
	System string  `json:",omitempty"`
	Code   string  `json:",omitempty"`
	Unit   string  `json:",omitempty"`
}

type compactNumber struct {
	Value float64 `json:",omitempty"`
	Low   float64 `json:",omitempty"`
	High  float64 `json:",omitempty"`
	Text  string  `json:",omitempty"`
}

type compactURI struct {
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
// empty members and the parts' Param left out.
func CompositeParts(parts []index.CompositePart) (string, error) {
	out := make([]compactPart, len(parts))
	for i, p := range parts {
		c := &out[i]
		if x := p.Token; x != nil {
			c.Token = &compactToken{x.System, x.Code, x.Text, x.TypeSystem, x.TypeCode}
		}
		if x := p.String; x != nil {
			c.String = &compactString{x.Norm, x.Exact}
		}
		if x := p.Date; x != nil {
			c.Date = &compactDate{x.Low, x.High}
		}
		if x := p.Ref; x != nil {
			c.Ref = &compactRef{x.Type, x.ID, x.Version, x.URL, x.IdentifierSystem, x.IdentifierValue}
		}
		if x := p.Quantity; x != nil {
			c.Quantity = &compactQuantity{finite(x.Value), finite(x.Low), finite(x.High), x.Text, x.System, x.Code, x.Unit}
		}
		if x := p.Number; x != nil {
			c.Number = &compactNumber{finite(x.Value), finite(x.Low), finite(x.High), x.Text}
		}
		if x := p.URI; x != nil {
			c.URI = &compactURI{x.Value}
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "", err
	}
	return string(b), nil
}
