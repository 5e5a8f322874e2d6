// Package fhirjson parses FHIR JSON into an ordered tree that keeps every
// value's exact text.
//
// encoding/json loses the two things a FHIR server must keep: member order
// (cosmetic, but users diff what they sent with what they read back) and the
// exact text of decimals (FHIR decimals carry precision: 1.50 is not 1.5).
// Validation, search indexing, merging and reference rewriting all walk this
// tree; it is parsed once per resource and serialised back with Append.
package fhirjson

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"unicode/utf8"
)

// Kind is the JSON type of a Value.
type Kind uint8

// The JSON value kinds.
const (
	Null Kind = iota
	Bool
	Number
	String
	Array
	Object
)

var kindNames = [...]string{"null", "boolean", "number", "string", "array", "object"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "invalid"
}

// Value is one JSON value. Str holds the decoded text of a string and the
// literal text of a number; Bool the value of a boolean; Items the elements
// of an array; Fields the members of an object in document order.
type Value struct {
	Kind   Kind
	Bool   bool
	Str    string
	Items  []*Value
	Fields []Field
	// Offset is the byte offset of the value in the parsed input (0 for
	// values built in code); used to report line numbers.
	Offset int
}

// Field is one member of an object.
type Field struct {
	Name  string
	Value *Value
}

// Get returns the member called name of an object, or nil.
func (v *Value) Get(name string) *Value {
	if v == nil || v.Kind != Object {
		return nil
	}
	for i := range v.Fields {
		if v.Fields[i].Name == name {
			return v.Fields[i].Value
		}
	}
	return nil
}

// GetString returns the string member called name, or "" when it is absent
// or not a string.
func (v *Value) GetString(name string) string {
	m := v.Get(name)
	if m == nil || m.Kind != String {
		return ""
	}
	return m.Str
}

// Set replaces the member called name or appends it at the end.
func (v *Value) Set(name string, val *Value) {
	for i := range v.Fields {
		if v.Fields[i].Name == name {
			v.Fields[i].Value = val
			return
		}
	}
	v.Fields = append(v.Fields, Field{Name: name, Value: val})
}

// SetAfter replaces the member called name, or inserts it right after the
// first of the members named in after that exists (at the front when none).
// It keeps resourceType/id/meta at the head of a resource, where people
// expect them.
func (v *Value) SetAfter(name string, val *Value, after ...string) {
	for i := range v.Fields {
		if v.Fields[i].Name == name {
			v.Fields[i].Value = val
			return
		}
	}
	pos := 0
	for _, a := range after {
		found := false
		for i := range v.Fields {
			if v.Fields[i].Name == a {
				pos = i + 1
				found = true
				break
			}
		}
		if found {
			break
		}
	}
	v.Fields = append(v.Fields, Field{})
	copy(v.Fields[pos+1:], v.Fields[pos:])
	v.Fields[pos] = Field{Name: name, Value: val}
}

// Delete removes the member called name; it reports whether it was there.
func (v *Value) Delete(name string) bool {
	if v == nil || v.Kind != Object {
		return false
	}
	for i := range v.Fields {
		if v.Fields[i].Name == name {
			v.Fields = append(v.Fields[:i], v.Fields[i+1:]...)
			return true
		}
	}
	return false
}

// NewString returns a string value.
func NewString(s string) *Value { return &Value{Kind: String, Str: s} }

// NewNumber returns a number value with the given literal text.
func NewNumber(lit string) *Value { return &Value{Kind: Number, Str: lit} }

// NewBool returns a boolean value.
func NewBool(b bool) *Value { return &Value{Kind: Bool, Bool: b} }

// NewObject returns an object with the given members.
func NewObject(fields ...Field) *Value { return &Value{Kind: Object, Fields: fields} }

// NewArray returns an array of the given items.
func NewArray(items ...*Value) *Value { return &Value{Kind: Array, Items: items} }

// Clone returns a deep copy of v.
func (v *Value) Clone() *Value {
	if v == nil {
		return nil
	}
	c := *v
	if v.Items != nil {
		c.Items = make([]*Value, len(v.Items))
		for i, it := range v.Items {
			c.Items[i] = it.Clone()
		}
	}
	if v.Fields != nil {
		c.Fields = make([]Field, len(v.Fields))
		for i, f := range v.Fields {
			c.Fields[i] = Field{Name: f.Name, Value: f.Value.Clone()}
		}
	}
	return &c
}

// SyntaxError reports malformed JSON with its byte offset.
type SyntaxError struct {
	Offset int
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at byte %d: %s", e.Offset, e.Msg)
}

// Position turns a byte offset into a 1-based line and column.
func Position(data []byte, offset int) (line, col int) {
	if offset > len(data) {
		offset = len(data)
	}
	line = 1 + bytes.Count(data[:offset], []byte{'\n'})
	col = offset - bytes.LastIndexByte(data[:offset], '\n')
	return line, col
}

// MaxDepth bounds nesting so that hostile input cannot exhaust the stack.
const MaxDepth = 512

// Parse parses one JSON value that must make up all of data (surrounding
// whitespace allowed). Duplicate object keys are an error, as FHIR requires.
func Parse(data []byte) (*Value, error) {
	p := parser{data: data}
	p.skipSpace()
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos != len(p.data) {
		return nil, p.errorf("unexpected %q after the value", p.data[p.pos])
	}
	return v, nil
}

type parser struct {
	data []byte
	pos  int
	slab []Value
}

func (p *parser) alloc() *Value {
	if len(p.slab) == 0 {
		n := len(p.data) / 24
		if n < 16 {
			n = 16
		} else if n > 512 {
			n = 512
		}
		p.slab = make([]Value, n)
	}
	v := &p.slab[0]
	p.slab = p.slab[1:]
	return v
}

func (p *parser) errorf(format string, args ...any) error {
	return &SyntaxError{Offset: p.pos, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) skipSpace() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *parser) value(depth int) (*Value, error) {
	if depth > MaxDepth {
		return nil, p.errorf("nesting deeper than %d", MaxDepth)
	}
	if p.pos >= len(p.data) {
		return nil, p.errorf("unexpected end of input")
	}
	start := p.pos
	switch c := p.data[p.pos]; {
	case c == '{':
		p.pos++
		v := p.alloc()
		*v = Value{Kind: Object, Offset: start}
		p.skipSpace()
		if p.pos < len(p.data) && p.data[p.pos] == '}' {
			p.pos++
			return v, nil
		}
		for {
			p.skipSpace()
			if p.pos >= len(p.data) || p.data[p.pos] != '"' {
				return nil, p.errorf("expected a member name")
			}
			name, err := p.str()
			if err != nil {
				return nil, err
			}
			for i := range v.Fields {
				if v.Fields[i].Name == name {
					return nil, &SyntaxError{Offset: start, Msg: fmt.Sprintf("duplicate member %q", name)}
				}
			}
			p.skipSpace()
			if p.pos >= len(p.data) || p.data[p.pos] != ':' {
				return nil, p.errorf("expected ':' after member name %q", name)
			}
			p.pos++
			p.skipSpace()
			m, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			v.Fields = append(v.Fields, Field{Name: name, Value: m})
			p.skipSpace()
			if p.pos >= len(p.data) {
				return nil, p.errorf("unexpected end of input in object")
			}
			if p.data[p.pos] == ',' {
				p.pos++
				continue
			}
			if p.data[p.pos] == '}' {
				p.pos++
				return v, nil
			}
			return nil, p.errorf("expected ',' or '}' in object")
		}
	case c == '[':
		p.pos++
		v := p.alloc()
		*v = Value{Kind: Array, Offset: start}
		p.skipSpace()
		if p.pos < len(p.data) && p.data[p.pos] == ']' {
			p.pos++
			v.Items = []*Value{}
			return v, nil
		}
		for {
			p.skipSpace()
			it, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			v.Items = append(v.Items, it)
			p.skipSpace()
			if p.pos >= len(p.data) {
				return nil, p.errorf("unexpected end of input in array")
			}
			if p.data[p.pos] == ',' {
				p.pos++
				continue
			}
			if p.data[p.pos] == ']' {
				p.pos++
				return v, nil
			}
			return nil, p.errorf("expected ',' or ']' in array")
		}
	case c == '"':
		s, err := p.str()
		if err != nil {
			return nil, err
		}
		v := p.alloc()
		*v = Value{Kind: String, Str: s, Offset: start}
		return v, nil
	case c == 't':
		if bytes.HasPrefix(p.data[p.pos:], []byte("true")) {
			p.pos += 4
			v := p.alloc()
			*v = Value{Kind: Bool, Bool: true, Offset: start}
			return v, nil
		}
	case c == 'f':
		if bytes.HasPrefix(p.data[p.pos:], []byte("false")) {
			p.pos += 5
			v := p.alloc()
			*v = Value{Kind: Bool, Offset: start}
			return v, nil
		}
	case c == 'n':
		if bytes.HasPrefix(p.data[p.pos:], []byte("null")) {
			p.pos += 4
			v := p.alloc()
			*v = Value{Kind: Null, Offset: start}
			return v, nil
		}
	case c == '-' || (c >= '0' && c <= '9'):
		lit, err := p.number()
		if err != nil {
			return nil, err
		}
		v := p.alloc()
		*v = Value{Kind: Number, Str: lit, Offset: start}
		return v, nil
	}
	return nil, p.errorf("unexpected character %q", p.data[p.pos])
}

func (p *parser) number() (string, error) {
	d := p.data
	start := p.pos
	i := p.pos
	if i < len(d) && d[i] == '-' {
		i++
	}
	if i >= len(d) {
		p.pos = i
		return "", p.errorf("incomplete number")
	}
	if d[i] == '0' {
		i++
	} else if d[i] >= '1' && d[i] <= '9' {
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	} else {
		p.pos = i
		return "", p.errorf("invalid number")
	}
	if i < len(d) && d[i] == '.' {
		i++
		j := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == j {
			p.pos = i
			return "", p.errorf("invalid number: no digits after '.'")
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		j := i
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
		if i == j {
			p.pos = i
			return "", p.errorf("invalid number: no digits in exponent")
		}
	}
	p.pos = i
	return string(d[start:i]), nil
}

// str parses a string starting at the opening quote.
func (p *parser) str() (string, error) {
	d := p.data
	p.pos++ // opening quote
	start := p.pos
	i := start
	for i < len(d) {
		c := d[i]
		if c == '"' {
			s := d[start:i]
			p.pos = i + 1
			if !utf8.Valid(s) {
				p.pos = start
				return "", p.errorf("invalid UTF-8 in string")
			}
			return string(s), nil
		}
		if c == '\\' {
			return p.strSlow(start)
		}
		if c < 0x20 {
			p.pos = i
			return "", p.errorf("control character in string")
		}
		i++
	}
	p.pos = i
	return "", p.errorf("unterminated string")
}

func (p *parser) strSlow(start int) (string, error) {
	d := p.data
	buf := make([]byte, 0, 64)
	i := start
	for i < len(d) {
		c := d[i]
		switch {
		case c == '"':
			p.pos = i + 1
			if !utf8.Valid(buf) {
				p.pos = start
				return "", p.errorf("invalid UTF-8 in string")
			}
			return string(buf), nil
		case c < 0x20:
			p.pos = i
			return "", p.errorf("control character in string")
		case c == '\\':
			if i+1 >= len(d) {
				p.pos = i
				return "", p.errorf("unterminated escape")
			}
			switch e := d[i+1]; e {
			case '"', '\\', '/':
				buf = append(buf, e)
				i += 2
			case 'b':
				buf = append(buf, '\b')
				i += 2
			case 'f':
				buf = append(buf, '\f')
				i += 2
			case 'n':
				buf = append(buf, '\n')
				i += 2
			case 'r':
				buf = append(buf, '\r')
				i += 2
			case 't':
				buf = append(buf, '\t')
				i += 2
			case 'u':
				r, n, ok := hex4(d, i+2)
				if !ok {
					p.pos = i
					return "", p.errorf("invalid \\u escape")
				}
				i += 2 + n
				if r >= 0xD800 && r < 0xDC00 {
					// surrogate pair
					if i+1 < len(d) && d[i] == '\\' && d[i+1] == 'u' {
						r2, n2, ok2 := hex4(d, i+2)
						if ok2 && r2 >= 0xDC00 && r2 < 0xE000 {
							r = (r-0xD800)<<10 + (r2 - 0xDC00) + 0x10000
							i += 2 + n2
						} else {
							r = utf8.RuneError
						}
					} else {
						r = utf8.RuneError
					}
				} else if r >= 0xDC00 && r < 0xE000 {
					r = utf8.RuneError
				}
				buf = utf8.AppendRune(buf, r)
			default:
				p.pos = i
				return "", p.errorf("invalid escape \\%c", e)
			}
		default:
			buf = append(buf, c)
			i++
		}
	}
	p.pos = i
	return "", p.errorf("unterminated string")
}

func hex4(d []byte, i int) (rune, int, bool) {
	if i+4 > len(d) {
		return 0, 0, false
	}
	n, err := strconv.ParseUint(string(d[i:i+4]), 16, 32)
	if err != nil {
		return 0, 0, false
	}
	return rune(n), 4, true
}

// Marshal returns the compact JSON text of v.
func (v *Value) Marshal() []byte { return v.Append(nil) }

// Append appends the compact JSON text of v to buf. Numbers keep their
// literal text; strings are escaped minimally (no HTML escaping).
func (v *Value) Append(buf []byte) []byte {
	switch v.Kind {
	case Null:
		return append(buf, "null"...)
	case Bool:
		if v.Bool {
			return append(buf, "true"...)
		}
		return append(buf, "false"...)
	case Number:
		return append(buf, v.Str...)
	case String:
		return AppendString(buf, v.Str)
	case Array:
		buf = append(buf, '[')
		for i, it := range v.Items {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = it.Append(buf)
		}
		return append(buf, ']')
	case Object:
		buf = append(buf, '{')
		for i, f := range v.Fields {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = AppendString(buf, f.Name)
			buf = append(buf, ':')
			buf = f.Value.Append(buf)
		}
		return append(buf, '}')
	}
	return buf
}

// AppendCanonical appends v with object members sorted by name, so that two
// values equal as JSON (whatever their member order) give the same bytes.
func (v *Value) AppendCanonical(buf []byte) []byte {
	switch v.Kind {
	case Array:
		buf = append(buf, '[')
		for i, it := range v.Items {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = it.AppendCanonical(buf)
		}
		return append(buf, ']')
	case Object:
		idx := make([]int, len(v.Fields))
		for i := range idx {
			idx[i] = i
		}
		sort.Slice(idx, func(a, b int) bool { return v.Fields[idx[a]].Name < v.Fields[idx[b]].Name })
		buf = append(buf, '{')
		for n, i := range idx {
			if n > 0 {
				buf = append(buf, ',')
			}
			buf = AppendString(buf, v.Fields[i].Name)
			buf = append(buf, ':')
			buf = v.Fields[i].Value.AppendCanonical(buf)
		}
		return append(buf, '}')
	}
	return v.Append(buf)
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string literal.
func AppendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		buf = append(buf, s[start:i]...)
		switch c {
		case '"', '\\':
			buf = append(buf, '\\', c)
		case '\n':
			buf = append(buf, '\\', 'n')
		case '\r':
			buf = append(buf, '\\', 'r')
		case '\t':
			buf = append(buf, '\\', 't')
		default:
			buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
		}
		start = i + 1
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

// Equal reports whether a and b are equal as JSON values (member order is
// ignored; numbers compare by their literal text, as FHIR decimals do).
func Equal(a, b *Value) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Kind != b.Kind {
		return false
	}
	switch a.Kind {
	case Null:
		return true
	case Bool:
		return a.Bool == b.Bool
	case Number, String:
		return a.Str == b.Str
	case Array:
		if len(a.Items) != len(b.Items) {
			return false
		}
		for i := range a.Items {
			if !Equal(a.Items[i], b.Items[i]) {
				return false
			}
		}
		return true
	case Object:
		if len(a.Fields) != len(b.Fields) {
			return false
		}
		for _, f := range a.Fields {
			if !Equal(f.Value, b.Get(f.Name)) {
				return false
			}
		}
		return true
	}
	return false
}
