package importer

import (
	"bufio"
	"bytes"
	"io"

	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"
)

// FromUTF16 returns the text of br as UTF-8 when it starts with a UTF-16
// byte order mark (Windows PowerShell 5 writes files that way), with the
// encoding's name; else br itself and "". JSON is UTF-8 (RFC 8259), but
// the intent of such a file is plain.
func FromUTF16(br *bufio.Reader) (io.Reader, string) {
	head, _ := br.Peek(2)
	var name string
	switch {
	case bytes.Equal(head, []byte{0xff, 0xfe}):
		name = "UTF-16 (little-endian)"
	case bytes.Equal(head, []byte{0xfe, 0xff}):
		name = "UTF-16 (big-endian)"
	default:
		return br, ""
	}
	// The byte order mark chooses the byte order, and is dropped.
	return transform.NewReader(br, unicode.UTF16(unicode.LittleEndian, unicode.ExpectBOM).NewDecoder()), name
}

// fromUTF16 is FromUTF16 for the run's input, with a warning; the reader
// it returns buffers size bytes.
func (r *Run) fromUTF16(br *bufio.Reader, name string, size int) *bufio.Reader {
	rd, enc := FromUTF16(br)
	if enc == "" {
		return br
	}
	r.report(issue("warning", "structure", "", "%s line 1: the file is %s, not the UTF-8 of JSON; read as %s", name, enc, enc))
	return bufio.NewReaderSize(rd, size)
}
