package importer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// scanner reads the outer structure of a JSON document from a stream: the
// members of the top object and the items of one array, each item's text
// taken whole (up to a limit) for fhirjson to parse. It counts lines, so
// problems are reported where they are in the file.
type scanner struct {
	br   *bufio.Reader
	line int // the line the next byte is on (1-based)
	buf  []byte
	// name is the input's, for errors; rerr is the first error reading it
	// other than its end (a connection that broke, an upload that is not
	// the gzip data it says). The input ends there, but not because it is
	// cut short: syntax reports rerr instead of a syntax error.
	name string
	rerr error
}

// errSyntax is a JSON syntax error at a line of the stream.
type errSyntax struct {
	line int
	msg  string
}

func (e *errSyntax) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

func (s *scanner) syntax(format string, args ...any) error {
	if s.rerr != nil {
		return readError(fmt.Sprintf("%s line %d", s.name, s.line), s.rerr)
	}
	return &errSyntax{line: s.line, msg: fmt.Sprintf(format, args...)}
}

// noteErr notes an error reading the input other than its end (see
// rerr). The callers call it where a read failed, not on every byte.
func (s *scanner) noteErr(err error) {
	if !errors.Is(err, io.EOF) && s.rerr == nil {
		s.rerr = err
	}
}

// peek skips white space and returns the next byte without consuming it.
func (s *scanner) peek() (byte, error) {
	for {
		c, err := s.br.ReadByte()
		if err != nil {
			s.noteErr(err)
			return 0, err
		}
		switch c {
		case '\n':
			s.line++
		case ' ', '\t', '\r':
		default:
			s.br.UnreadByte()
			return c, nil
		}
	}
}

// expect consumes the next non-space byte, which must be c.
func (s *scanner) expect(c byte) error {
	got, err := s.peek()
	if err != nil {
		return s.syntax("expected %q, found the end of the input", c)
	}
	if got != c {
		return s.syntax("expected %q, found %q", c, got)
	}
	s.br.ReadByte()
	return nil
}

// value reads the text of the next JSON value (of at most max bytes) and
// returns it with the line it starts on. Its content is checked only as
// far as finding its end needs; the caller parses it.
func (s *scanner) value(max int) ([]byte, int, error) {
	c, err := s.peek()
	if err != nil {
		return nil, s.line, s.syntax("expected a value, found the end of the input")
	}
	start := s.line
	s.buf = s.buf[:0]
	depth := 0
	inStr, esc := false, false
	for {
		c, err = s.br.ReadByte()
		if err != nil {
			s.noteErr(err)
			if depth == 0 && !inStr && len(s.buf) > 0 && s.rerr == nil {
				return s.buf, start, nil // a literal at the end of the input
			}
			return nil, start, s.syntax("the value starting on line %d does not end", start)
		}
		if len(s.buf) >= max {
			return nil, start, &errTooLarge{line: start, max: max}
		}
		if c == '\n' {
			s.line++
		}
		if inStr {
			s.buf = append(s.buf, c)
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
				if depth == 0 {
					return s.buf, start, nil
				}
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				s.br.UnreadByte()
				return s.buf, start, nil // the end of a literal
			}
			depth--
			if depth == 0 {
				return append(s.buf, c), start, nil
			}
		case ',', ' ', '\t', '\r', '\n':
			if depth == 0 {
				s.br.UnreadByte()
				if c == '\n' {
					s.line--
				}
				return s.buf, start, nil
			}
		}
		s.buf = append(s.buf, c)
	}
}

// errTooLarge is a value longer than the limit.
type errTooLarge struct {
	line, max int
}

func (e *errTooLarge) Error() string {
	return fmt.Sprintf("line %d: a value longer than %d bytes", e.line, e.max)
}

// key reads a member name and its colon.
func (s *scanner) key() (string, error) {
	c, err := s.peek()
	if err != nil || c != '"' {
		return "", s.syntax("expected a member name")
	}
	raw, _, err := s.value(1 << 16)
	if err != nil {
		return "", err
	}
	var k string
	if err := json.Unmarshal(raw, &k); err != nil {
		return "", s.syntax("member name %s: %v", raw, err)
	}
	return k, s.expect(':')
}

// next consumes the separator after a member or item: it reports whether
// another follows (a comma) or the container ends (close).
func (s *scanner) next(close byte) (bool, error) {
	c, err := s.peek()
	if err != nil {
		return false, s.syntax("expected ',' or %q, found the end of the input", close)
	}
	s.br.ReadByte()
	switch c {
	case ',':
		return true, nil
	case close:
		return false, nil
	}
	return false, s.syntax("expected ',' or %q, found %q", close, c)
}

// streamsAsBundle reports whether the document in br is an object whose
// first member is "resourceType": "Bundle", so that its entries can be
// read one by one (others are read whole).
func streamsAsBundle(br *bufio.Reader) bool {
	head, _ := br.Peek(4096)
	head = bytes.TrimLeft(head, " \t\r\n\ufeff")
	if len(head) == 0 || head[0] != '{' {
		return false
	}
	head = bytes.TrimLeft(head[1:], " \t\r\n")
	if !bytes.HasPrefix(head, []byte(`"resourceType"`)) {
		return false
	}
	head = bytes.TrimLeft(head[len(`"resourceType"`):], " \t\r\n")
	if len(head) == 0 || head[0] != ':' {
		return false
	}
	head = bytes.TrimLeft(head[1:], " \t\r\n")
	return bytes.HasPrefix(head, []byte(`"Bundle"`))
}

// isSyntax reports whether err is a problem of the input's JSON.
func isSyntax(err error) bool {
	var se *errSyntax
	var tl *errTooLarge
	return errors.As(err, &se) || errors.As(err, &tl)
}
