package api

import (
	"compress/flate"
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/phr-project/phr/internal/fhir"
)

// decodeBody undoes the Content-Encoding of a request body. gzip (and its
// old name x-gzip) is decoded as the handler reads the body, so that a
// compressed upload - an NDJSON file of a Bulk Data export is often kept
// as .ndjson.gz - is still read as a stream, in flat memory; the limits on
// ordinary bodies (readBody) apply to the decoded bytes, so a small
// compressed body cannot expand past them. Any other coding is refused
// with 415 (RFC 9110, section 15.5.16) rather than read as if it were the
// content.
func decodeBody(r *http.Request) error {
	ce := strings.TrimSpace(r.Header.Get("Content-Encoding"))
	if ce == "" || strings.EqualFold(ce, "identity") || r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	if !strings.EqualFold(ce, "gzip") && !strings.EqualFold(ce, "x-gzip") {
		return fhir.Errorf(http.StatusUnsupportedMediaType, "not-supported", "Content-Encoding %q is not supported: send the body as it is, or compressed with gzip", ce)
	}
	r.Body = &gzipBody{src: r.Body}
	// The length the client sent is the compressed one.
	r.ContentLength = -1
	r.Header.Del("Content-Length")
	r.Header.Del("Content-Encoding")
	return nil
}

// gzipBody decodes a gzip request body. The gzip header is read on the
// first Read, not before: the handler decides whether to read the body.
type gzipBody struct {
	src io.ReadCloser
	zr  *gzip.Reader
	err error
}

func (b *gzipBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.zr == nil {
		zr, err := gzip.NewReader(b.src)
		if err != nil {
			b.err = badGzip(err)
			return 0, b.err
		}
		b.zr = zr
	}
	n, err := b.zr.Read(p)
	if err != nil && err != io.EOF {
		b.err = badGzip(err)
		err = b.err
	}
	return n, err
}

func (b *gzipBody) Close() error { return b.src.Close() }

// badGzip reports a body that is not the gzip data its Content-Encoding
// says, as the client's error (400). A failure to read the connection
// itself stays what it is.
func badGzip(err error) error {
	var corrupt flate.CorruptInputError
	if errors.Is(err, gzip.ErrHeader) || errors.Is(err, gzip.ErrChecksum) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &corrupt) {
		return &fhir.Error{Status: http.StatusBadRequest, Err: err, Issues: []fhir.Issue{{Severity: "error", Code: "structure",
			Diagnostics: "the request body is not the gzip data its Content-Encoding says: " + err.Error()}}}
	}
	return err
}
