// Package index extracts search index entries from resources at write time.
//
// Each standard search parameter's FHIRPath expression is evaluated over the
// parsed resource and the values found are normalised into the typed entries
// below, which the store keeps in one table per parameter type and the search
// engine queries.
package index

// Entries are the index entries of one resource version.
type Entries struct {
	Tokens     []Token
	Strings    []String
	Dates      []Date
	Refs       []Ref
	Quantities []Quantity
	Numbers    []Number
	URIs       []URI
	// Composites hold one entry per composite-parameter match, its
	// components flattened into their own typed values.
	Composites []Composite
}

// Len is the number of entries.
func (e *Entries) Len() int {
	return len(e.Tokens) + len(e.Strings) + len(e.Dates) + len(e.Refs) +
		len(e.Quantities) + len(e.Numbers) + len(e.URIs) + len(e.Composites)
}

// Token is a coded value: Coding, CodeableConcept, Identifier, code,
// boolean, ContactPoint, id...
type Token struct {
	Param  string
	System string
	Code   string
	// Text is the display/text for the :text modifier (Coding.display,
	// CodeableConcept.text, Identifier.type.text), normalised like strings.
	Text string
	// TypeSystem and TypeCode are an Identifier's type coding, for :of-type.
	TypeSystem string
	TypeCode   string
}

// String is a string value.
type String struct {
	Param string
	// Norm is the value lower-cased with accents removed and whitespace
	// collapsed: what default and :contains searches compare.
	Norm string
	// Exact is the value as written, for :exact.
	Exact string
}

// Date is a date, dateTime, instant or Period (or Timing bounds) as the
// range of instants it covers, in microseconds since the Unix epoch (UTC).
// Low/High are inclusive; open ends are math.MinInt64 / math.MaxInt64.
type Date struct {
	Param string
	Low   int64
	High  int64
}

// Ref is a reference (or canonical) value.
type Ref struct {
	Param string
	// Type and ID are set for relative ("Patient/1") and resolvable absolute
	// references; Version for versioned references ("Patient/1/_history/2").
	Type    string
	ID      string
	Version string
	// URL is the reference text as written when it is absolute or canonical
	// (and not a reference to this server).
	URL string
	// IdentifierSystem/IdentifierValue are Reference.identifier, for the
	// :identifier modifier.
	IdentifierSystem string
	IdentifierValue  string
}

// Quantity is a Quantity (or Money, Age, Duration...) value.
type Quantity struct {
	Param string
	// Value is the numeric value; Low/High the range its precision implies
	// (1.5 covers [1.45, 1.55)).
	Value float64
	Low   float64
	High  float64
	// Text is the value's exact decimal text.
	Text   string
	System string
	Code   string
	Unit   string
}

// Number is a number (decimal or integer) value with its precision range.
type Number struct {
	Param string
	Value float64
	Low   float64
	High  float64
	Text  string
}

// URI is a uri, url or canonical value.
type URI struct {
	Param string
	Value string
}

// Composite is one match of a composite parameter; Parts holds one
// sub-entry per component in the definition's order (exactly one of the
// pointer fields set per part).
type Composite struct {
	Param string
	Parts []CompositePart
}

// CompositePart is one component value of a composite entry.
type CompositePart struct {
	Token    *Token
	String   *String
	Date     *Date
	Ref      *Ref
	Quantity *Quantity
	Number   *Number
	URI      *URI
}
