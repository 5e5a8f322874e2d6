package records

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/store"
)

// inlineBlob puts a Binary's stored content back into doc as base64 data.
func (s *Service) inlineBlob(ctx context.Context, doc *fhirjson.Value, key string) error {
	r, size, err := s.blobs.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read Binary content: %w", err)
	}
	defer r.Close()
	if size > s.MaxBinaryInline {
		return fmt.Errorf("the Binary content (%d bytes) is too large to edit as JSON", size)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read Binary content: %w", err)
	}
	doc.Set("data", fhirjson.NewString(base64.StdEncoding.EncodeToString(b)))
	return nil
}

// WriteJSON writes the FHIR JSON of a stored version to w. A Binary's
// content, kept in the blob store, is streamed in as base64 data.
func (s *Service) WriteJSON(ctx context.Context, w io.Writer, res *store.Resource) error {
	if res.Blob == "" || bytes.Contains(res.JSON, []byte(`"data":`)) {
		_, err := w.Write(res.JSON)
		return err
	}
	body := bytes.TrimRight(res.JSON, " \n")
	if len(body) < 2 || body[len(body)-1] != '}' {
		return fmt.Errorf("stored %s/%s is not a JSON object", res.Type, res.ID)
	}
	r, _, err := s.blobs.Get(ctx, res.Blob)
	if err != nil {
		return fmt.Errorf("read Binary content of %s/%s: %w", res.Type, res.ID, err)
	}
	defer r.Close()
	head := body[:len(body)-1]
	if _, err := w.Write(head); err != nil {
		return err
	}
	sep := `,"data":"`
	if bytes.Equal(bytes.TrimSpace(head), []byte("{")) {
		sep = `"data":"`
	}
	if _, err := io.WriteString(w, sep); err != nil {
		return err
	}
	enc := base64.NewEncoder(base64.StdEncoding, w)
	if _, err := io.Copy(enc, r); err != nil {
		return fmt.Errorf("stream Binary content of %s/%s: %w", res.Type, res.ID, err)
	}
	if err := enc.Close(); err != nil {
		return err
	}
	_, err = io.WriteString(w, `"}`)
	return err
}

// JSON returns the FHIR JSON of a stored version (see WriteJSON).
func (s *Service) JSON(ctx context.Context, res *store.Resource) ([]byte, error) {
	if res.Blob == "" || bytes.Contains(res.JSON, []byte(`"data":`)) {
		return res.JSON, nil
	}
	var buf bytes.Buffer
	if err := s.WriteJSON(ctx, &buf, res); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// OpenBinary opens the raw content of a Binary version and returns its
// contentType.
func (s *Service) OpenBinary(ctx context.Context, res *store.Resource) (io.ReadCloser, int64, string, error) {
	doc, err := fhirjson.Parse(res.JSON)
	if err != nil {
		return nil, 0, "", fmt.Errorf("parse stored %s/%s: %w", res.Type, res.ID, err)
	}
	ct := doc.GetString("contentType")
	if res.Blob == "" {
		return io.NopCloser(bytes.NewReader(nil)), 0, ct, nil
	}
	r, n, err := s.blobs.Get(ctx, res.Blob)
	if err != nil {
		return nil, 0, "", fmt.Errorf("read Binary content of %s/%s: %w", res.Type, res.ID, err)
	}
	return r, n, ct, nil
}
