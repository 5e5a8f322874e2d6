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
	"hash/maphash"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
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

// Clone returns a deep copy of v. The copy's values, members and items are
// allocated in one block each.
func (v *Value) Clone() *Value {
	if v == nil {
		return nil
	}
	var c cloner
	nv, nf, ni := v.count()
	c.vals = make([]Value, nv)
	if nf > 0 {
		c.fields = make([]Field, nf)
	}
	if ni > 0 {
		c.items = make([]*Value, ni)
	}
	return c.clone(v)
}

// count returns the number of values, object members and array items in v
// (nil counts none, as Clone keeps it nil).
func (v *Value) count() (vals, fields, items int) {
	if v == nil {
		return 0, 0, 0
	}
	vals = 1
	for _, it := range v.Items {
		a, b, c := it.count()
		vals, fields, items = vals+a, fields+b, items+c
	}
	items += len(v.Items)
	for i := range v.Fields {
		a, b, c := v.Fields[i].Value.count()
		vals, fields, items = vals+a, fields+b, items+c
	}
	fields += len(v.Fields)
	return vals, fields, items
}

// cloner carves a copy from blocks sized by count.
type cloner struct {
	vals   []Value
	fields []Field
	items  []*Value
}

func (c *cloner) clone(v *Value) *Value {
	if v == nil {
		return nil
	}
	out := &c.vals[0]
	c.vals = c.vals[1:]
	*out = *v
	if v.Items != nil {
		n := len(v.Items)
		out.Items = []*Value{} // an empty array stays non-nil
		if n > 0 {
			out.Items = c.items[:n:n]
		}
		c.items = c.items[n:]
		for i, it := range v.Items {
			out.Items[i] = c.clone(it)
		}
	}
	if v.Fields != nil {
		n := len(v.Fields)
		out.Fields = []Field{}
		if n > 0 {
			out.Fields = c.fields[:n:n]
		}
		c.fields = c.fields[n:]
		for i, f := range v.Fields {
			out.Fields[i] = Field{Name: f.Name, Value: c.clone(f.Value)}
		}
	}
	return out
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
//
// The tree is built with few allocations: values, object members and
// array items are carved from blocks shared by the whole tree (appending
// to a parsed Fields or Items slice copies it, as its capacity is its
// length), and member names are interned.
func Parse(data []byte) (*Value, error) {
	p := parserPool.Get().(*parser)
	p.data, p.pos = data, 0
	p.skipSpace()
	v, err := p.value(0)
	if err == nil {
		p.skipSpace()
		if p.pos != len(p.data) {
			v, err = nil, p.errorf("unexpected %q after the value", p.data[p.pos])
		}
	}
	p.release()
	return v, err
}

// parserPool keeps parsers for their scratch stacks; the blocks a tree is
// carved from belong to the tree and are never reused.
var parserPool = sync.Pool{New: func() any { return new(parser) }}

type parser struct {
	data []byte
	pos  int
	// vals, fields and items are the rest of the current blocks that
	// values, object members and array items are carved from.
	vals   []Value
	fields []Field
	items  []*Value
	// fstack and istack collect the members and items of the objects and
	// arrays being parsed (nested ones above their parents'), to be copied
	// into blocks of their exact size when each one ends.
	fstack []Field
	istack []*Value
}

// release forgets the parse (the tree keeps its blocks) and returns the
// parser to the pool. Scratch stacks grown by a hostile input are dropped.
func (p *parser) release() {
	p.data = nil
	p.vals, p.fields, p.items = nil, nil, nil
	// After an error the stacks hold what was parsed; above their length
	// they are clear already.
	clear(p.fstack)
	clear(p.istack)
	p.fstack, p.istack = p.fstack[:0], p.istack[:0]
	if cap(p.fstack) > 1<<12 || cap(p.istack) > 1<<12 {
		return
	}
	parserPool.Put(p)
}

// blockSize returns the size of a new block: about what the rest of the
// input needs (one value per per bytes of JSON text), within [lo, hi].
func (p *parser) blockSize(per, lo, hi int) int {
	n := (len(p.data) - p.pos) / per
	return min(max(n, lo), hi)
}

func (p *parser) alloc() *Value {
	if len(p.vals) == 0 {
		// Synthea resources average 28 bytes of JSON per value.
		p.vals = make([]Value, p.blockSize(24, 16, 512))
	}
	v := &p.vals[0]
	p.vals = p.vals[1:]
	return v
}

// takeFields moves the members collected since base into a slice of their
// own (its capacity its length).
func (p *parser) takeFields(base int) []Field {
	n := len(p.fstack) - base
	if len(p.fields) < n {
		// about 34 bytes of JSON per member
		p.fields = make([]Field, max(n, p.blockSize(30, 16, 512)))
	}
	out := p.fields[:n:n]
	p.fields = p.fields[n:]
	copy(out, p.fstack[base:])
	clear(p.fstack[base:])
	p.fstack = p.fstack[:base]
	return out
}

// takeItems is takeFields for array items.
func (p *parser) takeItems(base int) []*Value {
	n := len(p.istack) - base
	if len(p.items) < n {
		// about 160 bytes of JSON per array item
		p.items = make([]*Value, max(n, p.blockSize(128, 8, 512)))
	}
	out := p.items[:n:n]
	p.items = p.items[n:]
	copy(out, p.istack[base:])
	clear(p.istack[base:])
	p.istack = p.istack[:base]
	return out
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
		base := len(p.fstack)
		for {
			p.skipSpace()
			if p.pos >= len(p.data) || p.data[p.pos] != '"' {
				return nil, p.errorf("expected a member name")
			}
			name, err := p.name()
			if err != nil {
				return nil, err
			}
			for i := base; i < len(p.fstack); i++ {
				if p.fstack[i].Name == name {
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
			p.fstack = append(p.fstack, Field{Name: name, Value: m})
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
				v.Fields = p.takeFields(base)
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
		base := len(p.istack)
		for {
			p.skipSpace()
			it, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			p.istack = append(p.istack, it)
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
				v.Items = p.takeItems(base)
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

// strStop marks the bytes that end the fast scan of a string: the closing
// quote, a backslash, control characters (invalid) and non-ASCII bytes
// (whose UTF-8 is checked).
var strStop = func() (t [256]bool) {
	for c := 0; c < 0x20; c++ {
		t[c] = true
	}
	for c := 0x80; c < 0x100; c++ {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// scanStr scans a string starting after its opening quote. It returns the
// end of its text (the closing quote) when the string has no escapes;
// -1 when the slow path must decode it (escapes) or report an error.
func (p *parser) scanStr(start int) int {
	d := p.data
	ascii := true
	for i := start; i < len(d); i++ {
		c := d[i]
		if !strStop[c] {
			continue
		}
		switch {
		case c == '"':
			if !ascii && !utf8.Valid(d[start:i]) {
				return -1
			}
			return i
		case c >= 0x80:
			ascii = false
		default:
			return -1
		}
	}
	return -1
}

// str parses a string starting at the opening quote.
func (p *parser) str() (string, error) {
	p.pos++ // opening quote
	start := p.pos
	end := p.scanStr(start)
	if end < 0 {
		return p.strSlow(start)
	}
	p.pos = end + 1
	return string(p.data[start:end]), nil
}

// name parses a member name starting at the opening quote. Names repeat
// across resources (a few hundred FHIR element names make up nearly all),
// so they are interned rather than allocated each time.
func (p *parser) name() (string, error) {
	p.pos++ // opening quote
	start := p.pos
	end := p.scanStr(start)
	if end < 0 {
		return p.strSlow(start)
	}
	p.pos = end + 1
	return intern(p.data[start:end]), nil
}

// internSlots is the size of the intern cache (a power of two).
const internSlots = 1 << 12

// internCache maps a hash of a member name to the last string made for a
// name with that hash: a direct-mapped cache, safe for concurrent use,
// that needs no lock and stays small whatever the input.
var (
	internCache [internSlots]atomic.Pointer[string]
	internSeed  = maphash.MakeSeed()
)

// intern returns b as a string, shared with earlier calls for the same
// bytes while the cache remembers them. Long names (rare, and unlikely to
// repeat) are not cached.
func intern(b []byte) string {
	if len(b) > 48 {
		return string(b)
	}
	slot := &internCache[maphash.Bytes(internSeed, b)&(internSlots-1)]
	if s := slot.Load(); s != nil && *s == string(b) {
		return *s
	}
	s := string(b)
	slot.Store(&s)
	return s
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
			// a run of plain bytes, up to the next quote, backslash or
			// control character
			j := i + 1
			for j < len(d) && d[j] >= 0x20 && d[j] != '"' && d[j] != '\\' {
				j++
			}
			buf = append(buf, d[i:j]...)
			i = j
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
func (v *Value) Marshal() []byte {
	// Sizing the buffer first costs a walk of the tree but saves growing
	// it (a copy and a clear each time) while appending.
	n := v.sizeHint()
	return v.Append(make([]byte, 0, n+n/32+16))
}

// sizeHint returns the length of v's compact JSON text when its strings
// need no escapes (a lower bound otherwise).
func (v *Value) sizeHint() int {
	switch v.Kind {
	case Null:
		return 4
	case Bool:
		return 5
	case Number:
		return len(v.Str)
	case String:
		return len(v.Str) + 2
	case Array:
		n := 1 + len(v.Items)
		for _, it := range v.Items {
			n += it.sizeHint()
		}
		return n
	case Object:
		n := 1 + len(v.Fields)
		for i := range v.Fields {
			n += len(v.Fields[i].Name) + 3 + v.Fields[i].Value.sizeHint()
		}
		return n
	}
	return 0
}

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
		fs := v.Fields
		buf = append(buf, '{')
		if sortedFields(fs) {
			for i := range fs {
				if i > 0 {
					buf = append(buf, ',')
				}
				buf = AppendString(buf, fs[i].Name)
				buf = append(buf, ':')
				buf = fs[i].Value.AppendCanonical(buf)
			}
			return append(buf, '}')
		}
		// Sort indexes to the members, on the stack for the usual small
		// objects.
		var idx []int32
		var small [32]int32
		if len(fs) <= len(small) {
			idx = small[:len(fs)]
			for i := range idx {
				idx[i] = int32(i)
			}
			for i := 1; i < len(idx); i++ {
				for j := i; j > 0 && fs[idx[j]].Name < fs[idx[j-1]].Name; j-- {
					idx[j], idx[j-1] = idx[j-1], idx[j]
				}
			}
		} else {
			idx = sortedIndex(fs)
		}
		for n, i := range idx {
			if n > 0 {
				buf = append(buf, ',')
			}
			buf = AppendString(buf, fs[i].Name)
			buf = append(buf, ':')
			buf = fs[i].Value.AppendCanonical(buf)
		}
		return append(buf, '}')
	}
	return v.Append(buf)
}

// sortedIndex returns the indexes of fs in member name order.
func sortedIndex(fs []Field) []int32 {
	idx := make([]int32, len(fs))
	for i := range idx {
		idx[i] = int32(i)
	}
	sort.Slice(idx, func(a, b int) bool { return fs[idx[a]].Name < fs[idx[b]].Name })
	return idx
}

// sortedFields reports whether the members are in name order already.
func sortedFields(fs []Field) bool {
	for i := 1; i < len(fs); i++ {
		if fs[i].Name < fs[i-1].Name {
			return false
		}
	}
	return true
}

const hexDigits = "0123456789abcdef"

// mustEscape marks the bytes a JSON string cannot hold as they are.
var mustEscape = func() (t [256]bool) {
	for c := 0; c < 0x20; c++ {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// AppendString appends s as a JSON string literal.
func AppendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !mustEscape[c] {
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
