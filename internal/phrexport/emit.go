package phrexport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"

	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/sphr"
	"github.com/phr-project/phr/internal/store"
)

// emitter writes resources in one output format.
type emitter interface {
	// resource writes one resource; a *resourceError means only this one
	// failed (and nothing of it was written).
	resource(r *row) error
	// outcome writes an OperationOutcome (inline error).
	outcome(oo []byte) error
	// flush pushes buffered output to the underlying writer.
	flush() error
	finish() error
	abort()
}

func (s *Service) newEmitter(ctx context.Context, p *Params, w io.Writer) (emitter, error) {
	switch p.Format {
	case FormatSPHR:
		name := "phr-export"
		if p.Patient != "" {
			name = sphr.SafeName(p.patientName, "patient-"+p.Patient)
		}
		sw, err := sphr.NewWriter(w, name, p.Passphrase, s.tmpDir)
		if err != nil {
			return nil, err
		}
		if err := sw.SetLevel(s.level); err != nil {
			sw.Abort()
			return nil, err
		}
		return &sphrEmitter{s: s, ctx: ctx, w: sw}, nil
	case FormatBundle:
		b := &bundleEmitter{lineEmitter: lineEmitter{s: s, ctx: ctx, bw: bufio.NewWriterSize(w, 64<<10)}}
		if err := b.start(); err != nil {
			return nil, err
		}
		return b, nil
	}
	return &lineEmitter{s: s, ctx: ctx, bw: bufio.NewWriterSize(w, 64<<10)}, nil
}

// DefaultSPHRLevel is the DEFLATE level of .sphr archives: level 2 runs
// about twice as fast as zipaes' default 5 for a slightly larger archive
// (9.7 % of the NDJSON instead of 8.5 %, measured by zipaes), which keeps
// encrypted exports near the speed of plain NDJSON.
const DefaultSPHRLevel = 2

// lineEmitter writes NDJSON (.phr and ndjson).
type lineEmitter struct {
	s   *Service
	ctx context.Context
	bw  *bufio.Writer
}

func (l *lineEmitter) write(r *row) error {
	if r.blob == "" || bytes.Contains(r.json, []byte(`"data":`)) {
		_, err := l.bw.Write(r.json)
		return err
	}
	// A Binary whose content is in the blob store: check the blob is
	// there first, so that a missing one fails before anything is written.
	rc, _, err := l.s.rec.Blobs().Get(l.ctx, r.blob)
	if err != nil {
		return &resourceError{fmt.Errorf("its content is unreadable: %w", err)}
	}
	rc.Close()
	return l.s.rec.WriteJSON(l.ctx, l.bw, &store.Resource{Type: r.typ, ID: r.id, JSON: r.json, Blob: r.blob})
}

func (l *lineEmitter) resource(r *row) error {
	if err := l.write(r); err != nil {
		return err
	}
	return l.bw.WriteByte('\n')
}

func (l *lineEmitter) outcome(oo []byte) error {
	l.bw.Write(oo)
	return l.bw.WriteByte('\n')
}

func (l *lineEmitter) flush() error  { return l.bw.Flush() }
func (l *lineEmitter) finish() error { return l.bw.Flush() }
func (l *lineEmitter) abort()        { l.bw.Flush() }

// bundleEmitter writes a document Bundle (the IG's PhrBundle), streaming
// its entries.
type bundleEmitter struct {
	lineEmitter
	n int
}

// PhrBundleProfile is the PHR IG's Bundle profile.
const PhrBundleProfile = "http://hl7.org/fhir/uv/phr/StructureDefinition/PhrBundle"

func (b *bundleEmitter) start() error {
	now := b.s.now()
	head := fhirjson.NewObject(
		fhirjson.Field{Name: "resourceType", Value: fhirjson.NewString("Bundle")},
		fhirjson.Field{Name: "id", Value: fhirjson.NewString(fhir.NewID())},
		fhirjson.Field{Name: "meta", Value: fhirjson.NewObject(
			fhirjson.Field{Name: "lastUpdated", Value: fhirjson.NewString(fhir.FormatInstant(now))},
			fhirjson.Field{Name: "profile", Value: fhirjson.NewArray(fhirjson.NewString(PhrBundleProfile))},
		)},
		fhirjson.Field{Name: "identifier", Value: fhirjson.NewObject(
			fhirjson.Field{Name: "system", Value: fhirjson.NewString("urn:ietf:rfc:3986")},
			fhirjson.Field{Name: "value", Value: fhirjson.NewString("urn:uuid:" + uuid())},
		)},
		fhirjson.Field{Name: "type", Value: fhirjson.NewString("document")},
		fhirjson.Field{Name: "timestamp", Value: fhirjson.NewString(fhir.FormatInstant(now))},
	)
	h := head.Marshal()
	b.bw.Write(h[:len(h)-1])
	_, err := b.bw.WriteString(`,"entry":[`)
	return err
}

func (b *bundleEmitter) sep() {
	if b.n > 0 {
		b.bw.WriteByte(',')
	}
	b.n++
}

func (b *bundleEmitter) resource(r *row) error {
	if r.blob != "" {
		if rc, _, err := b.s.rec.Blobs().Get(b.ctx, r.blob); err != nil {
			return &resourceError{fmt.Errorf("its content is unreadable: %w", err)}
		} else {
			rc.Close()
		}
	}
	b.sep()
	b.bw.WriteString(`{"fullUrl":`)
	b.bw.Write(fhirjson.AppendString(nil, b.s.base+"/"+r.typ+"/"+r.id))
	b.bw.WriteString(`,"resource":`)
	if err := b.write(r); err != nil {
		return err
	}
	return b.bw.WriteByte('}')
}

func (b *bundleEmitter) outcome(oo []byte) error {
	b.sep()
	b.bw.WriteString(`{"fullUrl":"urn:uuid:` + uuid() + `","resource":`)
	b.bw.Write(oo)
	return b.bw.WriteByte('}')
}

func (b *bundleEmitter) finish() error {
	b.bw.WriteString("]}")
	return b.bw.Flush()
}

// sphrEmitter writes a .sphr archive.
type sphrEmitter struct {
	s   *Service
	ctx context.Context
	w   *sphr.Writer
}

func (e *sphrEmitter) resource(r *row) error {
	if r.blob == "" || bytes.Contains(r.json, []byte(`"data":`)) {
		return e.w.WriteResource(r.json)
	}
	rc, _, err := e.s.rec.Blobs().Get(e.ctx, r.blob)
	if err != nil {
		return &resourceError{fmt.Errorf("its content is unreadable: %w", err)}
	}
	defer rc.Close()
	ct := ""
	if v, err := fhirjson.Parse(r.json); err == nil {
		ct = v.GetString("contentType")
	}
	return e.w.WriteBinary(r.json, r.id, ct, rc)
}

func (e *sphrEmitter) outcome(oo []byte) error { return e.w.WriteLine(oo) }
func (e *sphrEmitter) flush() error            { return nil }
func (e *sphrEmitter) finish() error           { return e.w.Close() }
func (e *sphrEmitter) abort()                  { e.w.Abort() }

// hashWriter passes writes through and hashes them (for signatures).
type hashWriter struct {
	w io.Writer
	h hash.Hash
}

func newHashWriter(w io.Writer) *hashWriter { return &hashWriter{w: w, h: sha256.New()} }

func (h *hashWriter) Write(p []byte) (int, error) {
	n, err := h.w.Write(p)
	h.h.Write(p[:n])
	return n, err
}

func (h *hashWriter) sum() []byte { return h.h.Sum(nil) }

// uuid returns a random (version 4) UUID.
func uuid() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hx = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hx[c>>4], hx[c&0xf])
	}
	return string(out)
}
