package fhirpath

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// tokKind is the lexical class of a token.
type tokKind uint8

const (
	tokEOF     tokKind = iota
	tokIdent           // name or `delimited name`
	tokString          // 'text'
	tokNumber          // 12, 1.5
	tokDate            // @2019-01-01, @T12:00
	tokEnv             // %resource, %`x`, %'x'
	tokSpecial         // $this, $index, $total
	tokOp              // punctuation and symbolic operators
)

// token is one lexeme with its byte offset in the expression.
type token struct {
	kind tokKind
	text string // decoded text: the name, the string value, the operator
	pos  int    // byte offset of the first character
	// delimited marks a `quoted` identifier, which is never a keyword.
	delimited bool
}

// SyntaxError reports an expression that cannot be compiled, with the
// 1-based character position of the problem so that whoever wrote the
// expression can find it.
type SyntaxError struct {
	Expr string
	// Pos is the 1-based column (in characters) of the problem.
	Pos int
	Msg string
}

// Error says what is wrong, at which column, in which expression.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("fhirpath: %s at column %d of %q", e.Msg, e.Pos, e.Expr)
}

// errAt builds a SyntaxError for the byte offset off of expr.
func errAt(expr string, off int, format string, args ...any) *SyntaxError {
	if off > len(expr) {
		off = len(expr)
	}
	return &SyntaxError{Expr: expr, Pos: utf8.RuneCountInString(expr[:off]) + 1, Msg: fmt.Sprintf(format, args...)}
}

// lex splits expr into tokens, ending with a tokEOF token.
func lex(expr string) ([]token, error) {
	var toks []token
	i := 0
	for {
		// skip white space and comments
		for i < len(expr) {
			c := expr[i]
			if c == ' ' || c == '\t' || c == '\n' || c == '\r' {
				i++
				continue
			}
			if strings.HasPrefix(expr[i:], "//") {
				for i < len(expr) && expr[i] != '\n' {
					i++
				}
				continue
			}
			if strings.HasPrefix(expr[i:], "/*") {
				end := strings.Index(expr[i+2:], "*/")
				if end < 0 {
					return nil, errAt(expr, i, "unterminated comment")
				}
				i += 2 + end + 2
				continue
			}
			break
		}
		if i >= len(expr) {
			toks = append(toks, token{kind: tokEOF, pos: i})
			return toks, nil
		}
		start := i
		c := expr[i]
		switch {
		case isIdentStart(c):
			for i < len(expr) && isIdentPart(expr[i]) {
				i++
			}
			toks = append(toks, token{kind: tokIdent, text: expr[start:i], pos: start})
		case c == '`':
			s, n, err := quoted(expr, i, '`')
			if err != nil {
				return nil, err
			}
			i += n
			toks = append(toks, token{kind: tokIdent, text: s, pos: start, delimited: true})
		case c == '\'':
			s, n, err := quoted(expr, i, '\'')
			if err != nil {
				return nil, err
			}
			i += n
			toks = append(toks, token{kind: tokString, text: s, pos: start})
		case c >= '0' && c <= '9':
			for i < len(expr) && expr[i] >= '0' && expr[i] <= '9' {
				i++
			}
			if i+1 < len(expr) && expr[i] == '.' && expr[i+1] >= '0' && expr[i+1] <= '9' {
				i++
				for i < len(expr) && expr[i] >= '0' && expr[i] <= '9' {
					i++
				}
			}
			toks = append(toks, token{kind: tokNumber, text: expr[start:i], pos: start})
		case c == '@':
			i++
			for i < len(expr) && (isIdentPart(expr[i]) || strings.IndexByte("-:.+", expr[i]) >= 0) {
				i++
			}
			if i == start+1 {
				return nil, errAt(expr, start, "'@' must start a date, dateTime or time literal")
			}
			toks = append(toks, token{kind: tokDate, text: expr[start+1 : i], pos: start})
		case c == '%':
			i++
			switch {
			case i < len(expr) && isIdentStart(expr[i]):
				for i < len(expr) && isIdentPart(expr[i]) {
					i++
				}
				toks = append(toks, token{kind: tokEnv, text: expr[start+1 : i], pos: start})
			case i < len(expr) && (expr[i] == '`' || expr[i] == '\''):
				s, n, err := quoted(expr, i, expr[i])
				if err != nil {
					return nil, err
				}
				i += n
				toks = append(toks, token{kind: tokEnv, text: s, pos: start})
			default:
				return nil, errAt(expr, start, "'%%' must be followed by a variable name")
			}
		case c == '$':
			i++
			for i < len(expr) && isIdentPart(expr[i]) {
				i++
			}
			toks = append(toks, token{kind: tokSpecial, text: expr[start:i], pos: start})
		default:
			op := ""
			for _, o := range [...]string{"<=", ">=", "!=", "!~", "=", "~", "<", ">", "|", "&", "+", "-", "*", "/", ".", ",", "(", ")", "[", "]", "{", "}"} {
				if strings.HasPrefix(expr[i:], o) {
					op = o
					break
				}
			}
			if op == "" {
				r, _ := utf8.DecodeRuneInString(expr[i:])
				return nil, errAt(expr, i, "unexpected character %q", r)
			}
			i += len(op)
			toks = append(toks, token{kind: tokOp, text: op, pos: start})
		}
	}
}

func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
}

func isIdentPart(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }

// quoted decodes a quoted string or identifier starting at expr[i] (the
// opening quote q); it returns the text and the number of bytes consumed.
func quoted(expr string, i int, q byte) (string, int, error) {
	var b strings.Builder
	j := i + 1
	for j < len(expr) {
		c := expr[j]
		switch {
		case c == q:
			return b.String(), j + 1 - i, nil
		case c == '\\':
			if j+1 >= len(expr) {
				return "", 0, errAt(expr, j, "unterminated escape")
			}
			e := expr[j+1]
			switch e {
			case '\'', '"', '`', '\\', '/':
				b.WriteByte(e)
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'u':
				if j+6 > len(expr) {
					return "", 0, errAt(expr, j, "invalid \\u escape")
				}
				var r rune
				for _, h := range expr[j+2 : j+6] {
					var d rune
					switch {
					case h >= '0' && h <= '9':
						d = h - '0'
					case h >= 'a' && h <= 'f':
						d = h - 'a' + 10
					case h >= 'A' && h <= 'F':
						d = h - 'A' + 10
					default:
						return "", 0, errAt(expr, j, "invalid \\u escape")
					}
					r = r<<4 | d
				}
				b.WriteRune(r)
				j += 4
			default:
				return "", 0, errAt(expr, j, "invalid escape \\%c", e)
			}
			j += 2
		default:
			b.WriteByte(c)
			j++
		}
	}
	return "", 0, errAt(expr, i, "unterminated %c-quoted text", q)
}
