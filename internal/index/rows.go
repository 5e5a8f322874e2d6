// Package index extracts search index entries from resources at write time.
//
// Each standard search parameter's FHIRPath expression is evaluated over the
// parsed resource and the values found are normalised into the typed entries
// below, which the store keeps in one table per parameter type and the search
// engine queries. Parameters whose entries would be exactly other
// parameters' (Observation's combo-code, most patient parameters: see
// Alias) are not extracted; readers take their sources' entries.
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

	// storage for the values composite parts point at, reused after Reset
	pTokens     []Token
	pStrings    []String
	pDates      []Date
	pRefs       []Ref
	pQuantities []Quantity
	pNumbers    []Number
	pURIs       []URI
	pParts      []CompositePart
}

// Len is the number of entries.
func (e *Entries) Len() int {
	return len(e.Tokens) + len(e.Strings) + len(e.Dates) + len(e.Refs) +
		len(e.Quantities) + len(e.Numbers) + len(e.URIs) + len(e.Composites)
}

// Token is a coded value: Coding, CodeableConcept, Identifier, code,
// boolean, ContactPoint, id...
//
// A CodeableConcept gives one token per coding (Text: its display) and,
// when it has text, one token with only Text. An Identifier gives System
// and Code (its value), and TypeSystem/TypeCode per coding of its type
// with Text its type's text. A ContactPoint gives its system ("phone",
// "email") as System and its value as Code. Booleans are "true"/"false";
// code, id, string and uri values are the Code with no System.
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
// Partial values cover their whole precision and values without a time
// zone are taken as UTC (see DateRange).
type Date struct {
	Param string
	Low   int64
	High  int64
}

// Ref is a reference (or canonical) value.
type Ref struct {
	Param string
	// Type and ID are set for relative references ("Patient/1", and
	// canonicals written that way); Version for versioned references
	// ("Patient/1/_history/2") and for the version of a canonical
	// ("http://x/ValueSet/y|4.0.1").
	Type    string
	ID      string
	Version string
	// URL is the reference as written when it is not relative: absolute
	// URLs and canonicals (without a |version), "urn:uuid:..." and
	// "urn:oid:..." references, contained references ("#id") and
	// conditional references left unresolved ("Patient?identifier=x").
	// Type is then set too when the text or the contained resource names
	// one, for the :Type modifier; ID is not, since an absolute URL may
	// point at another server.
	URL string
	// IdentifierSystem/IdentifierValue are Reference.identifier, for the
	// :identifier modifier.
	IdentifierSystem string
	IdentifierValue  string
}

// Quantity is a Quantity (or Age, Duration, Distance, Count,
// SimpleQuantity, MoneyQuantity, Money, Range) value.
type Quantity struct {
	Param string
	// Value is the numeric value; Low/High the range its precision implies
	// (1.5 covers [1.45, 1.55): Low inclusive, High exclusive). A
	// comparator opens one side ("<5" is (-Inf, 5.5)); a Range covers
	// its low bound's Low to its high bound's High, infinite where a bound
	// is missing, with Value the low value (else the high one) and no Text.
	Value float64
	Low   float64
	High  float64
	// Text is the value's exact decimal text.
	Text string
	// System and Code are the unit's (for Money: urn:iso:std:iso:4217 and
	// the currency, which is also the Unit).
	System string
	Code   string
	Unit   string
}

// Number is a number (decimal or integer) value with its precision range
// ([Low, High) as for Quantity; a Range gives its bounds as there).
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
