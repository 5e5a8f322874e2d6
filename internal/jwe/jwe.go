// Package jwe encrypts and decrypts compact JWEs of the one shape SMART Health
// Links use: direct key agreement ("alg":"dir") with AES-256-GCM
// ("enc":"A256GCM"), an optional raw-DEFLATE compression ("zip":"DEF"), an
// empty encrypted-key segment, a fresh random 96-bit IV per encryption and the
// base64url protected header as additional authenticated data (RFC 7516).
//
// It is built on crypto/aes, crypto/cipher and compress/flate rather than a
// general JOSE library because SHL needs exactly one algorithm pair, and
// because a general library's fixed decompression cap (go-jose v4 refuses
// more than 250 kB or ten times the input) would reject the patient records
// this server itself encrypts: FHIR JSON often deflates more than tenfold.
// Here the cap on inflated size is the caller's choice (DecryptLimit).
package jwe

import (
	"bytes"
	"compress/flate"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
)

// Sizes fixed by A256GCM.
const (
	KeySize = 32 // bytes of key for A256GCM
	IVSize  = 12 // bytes of initialization vector
	TagSize = 16 // bytes of authentication tag
)

// DefaultMaxPlaintext bounds the plaintext Decrypt returns, so that a small
// compressed JWE cannot inflate into gigabytes (a "zip bomb"). It is far above
// a large patient record (a Synthea lifetime record is a few megabytes) and
// far below what would exhaust a server.
const DefaultMaxPlaintext = 128 << 20

// Errors returned (wrapped, with details) by Decrypt; test with errors.Is.
var (
	// ErrMalformed means the input is not a well-formed compact JWE.
	ErrMalformed = errors.New("jwe: malformed")
	// ErrUnsupported means a well-formed JWE uses an algorithm or header
	// parameter this package does not implement.
	ErrUnsupported = errors.New("jwe: unsupported")
	// ErrAuth means the authentication tag did not verify: the key is wrong
	// or the JWE was altered. Nothing is decrypted in that case.
	ErrAuth = errors.New("jwe: authentication failed (wrong key or altered data)")
	// ErrTooLarge means the plaintext would exceed the caller's limit.
	ErrTooLarge = errors.New("jwe: plaintext too large")
)

// Header is the protected header of a JWE. Kid is read but never required:
// published SHL examples carry a key thumbprint there and omit cty.
type Header struct {
	Alg string `json:"alg"`
	Enc string `json:"enc"`
	Cty string `json:"cty,omitempty"`
	Zip string `json:"zip,omitempty"`
	Kid string `json:"kid,omitempty"`
}

// Options choose what goes into the protected header of a new JWE.
type Options struct {
	// ContentType is the cty header, e.g. "application/fhir+json". SHL
	// receivers use it to interpret the plaintext, so it is required.
	ContentType string
	// Compress deflates the plaintext (zip "DEF") before encryption; FHIR
	// JSON typically shrinks five- to twentyfold, which matters for files
	// embedded in a manifest.
	Compress bool
}

var b64 = base64.RawURLEncoding

// Encrypt returns the compact JWE of plaintext under key (32 bytes).
// Each call draws a fresh random IV, so encrypting the same file again with
// the same key (an SHL file updated later) is safe.
func Encrypt(key, plaintext []byte, opts Options) (string, error) {
	if err := checkArgs(key, opts); err != nil {
		return "", err
	}
	var sb strings.Builder
	sb.Grow(128 + b64.EncodedLen(len(plaintext)+TagSize))
	var err error
	if opts.Compress {
		var buf bytes.Buffer
		buf.Grow(len(plaintext)/4 + TagSize)
		if err := deflate(&buf, bytes.NewReader(plaintext)); err != nil {
			return "", err
		}
		err = seal(&sb, key, buf.Bytes(), opts, true)
	} else {
		// Seal in place would overwrite the caller's slice; copy once with
		// room for the tag.
		data := make([]byte, len(plaintext), len(plaintext)+TagSize)
		copy(data, plaintext)
		err = seal(&sb, key, data, opts, false)
	}
	if err != nil {
		return "", err
	}
	return sb.String(), nil
}

// EncryptTo reads the plaintext from r and writes its compact JWE to w,
// returning the number of bytes written. It is the variant for large files:
// with Compress, only the compressed bytes are ever held in memory, the
// ciphertext is produced in place over them, and the base64url text is
// streamed to w rather than built as one string. On error, part of the JWE
// may already have been written.
func EncryptTo(w io.Writer, key []byte, r io.Reader, opts Options) (int64, error) {
	if err := checkArgs(key, opts); err != nil {
		return 0, err
	}
	var buf bytes.Buffer
	if opts.Compress {
		if err := deflate(&buf, r); err != nil {
			return 0, err
		}
	} else if _, err := buf.ReadFrom(r); err != nil {
		return 0, fmt.Errorf("jwe: read plaintext: %w", err)
	}
	cw := &countWriter{w: w}
	err := seal(cw, key, buf.Bytes(), opts, opts.Compress)
	return cw.n, err
}

func checkArgs(key []byte, opts Options) error {
	if len(key) != KeySize {
		return fmt.Errorf("jwe: key is %d bytes, A256GCM needs %d", len(key), KeySize)
	}
	if opts.ContentType == "" {
		return errors.New("jwe: content type (cty) is required")
	}
	return nil
}

// flateWriters reuses compressors: each holds about 600 kB of state that
// would otherwise be allocated for every file a busy server encrypts.
var flateWriters = sync.Pool{New: func() any {
	fw, _ := flate.NewWriter(nil, flate.DefaultCompression) // fails only for a bad level
	return fw
}}

func deflate(dst *bytes.Buffer, r io.Reader) error {
	fw := flateWriters.Get().(*flate.Writer)
	defer flateWriters.Put(fw)
	fw.Reset(dst)
	if _, err := io.Copy(fw, r); err != nil {
		return fmt.Errorf("jwe: deflate plaintext: %w", err)
	}
	if err := fw.Close(); err != nil {
		return fmt.Errorf("jwe: deflate plaintext: %w", err)
	}
	return nil
}

// seal encrypts data in place (it must have TagSize spare capacity or it is
// reallocated) and writes the five compact segments to w.
func seal(w io.Writer, key, data []byte, opts Options, zipped bool) error {
	h := Header{Alg: "dir", Enc: "A256GCM", Cty: opts.ContentType}
	if zipped {
		h.Zip = "DEF"
	}
	hj, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("jwe: encode header: %w", err)
	}
	protected := b64.EncodeToString(hj)
	aead, err := newGCM(key)
	if err != nil {
		return err
	}
	iv := make([]byte, IVSize)
	rand.Read(iv) // never fails (crypto/rand crashes the program instead)
	sealed := aead.Seal(data[:0], iv, data, []byte(protected))
	ct, tag := sealed[:len(sealed)-TagSize], sealed[len(sealed)-TagSize:]

	bw := &errWriter{w: w}
	bw.writeString(protected)
	bw.writeString("..")
	bw.writeString(b64.EncodeToString(iv))
	bw.writeString(".")
	enc := base64.NewEncoder(b64, bw)
	enc.Write(ct) // errors are kept in bw.err
	enc.Close()
	bw.writeString(".")
	bw.writeString(b64.EncodeToString(tag))
	if bw.err != nil {
		return fmt.Errorf("jwe: write: %w", bw.err)
	}
	return nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("jwe: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("jwe: %w", err)
	}
	return aead, nil
}

// Decrypt verifies and decrypts a compact JWE with key (32 bytes), inflating
// a "zip":"DEF" payload, and returns the plaintext and the protected header.
// The plaintext is limited to DefaultMaxPlaintext bytes.
func Decrypt(compact string, key []byte) ([]byte, Header, error) {
	return DecryptLimit(compact, key, DefaultMaxPlaintext)
}

var segmentNames = [5]string{"protected header", "encrypted key", "initialization vector", "ciphertext", "authentication tag"}

// DecryptLimit is Decrypt with the caller's bound on plaintext size (after
// inflation); a larger plaintext fails with ErrTooLarge before it is held in
// memory in full.
func DecryptLimit(compact string, key []byte, maxPlaintext int64) ([]byte, Header, error) {
	var h Header
	// Files and HTTP bodies often end in a newline; nothing else is trimmed.
	lead := len(compact) - len(strings.TrimLeft(compact, " \t\r\n"))
	compact = strings.TrimRight(compact[lead:], " \t\r\n")
	parts := strings.Split(compact, ".")
	switch {
	case len(parts) == 3:
		return nil, h, fmt.Errorf("%w: 3 dot-separated segments: this is a JWS (signed, not encrypted); a compact JWE has 5", ErrMalformed)
	case len(parts) != 5:
		return nil, h, fmt.Errorf("%w: %d dot-separated segments, a compact JWE has 5", ErrMalformed, len(parts))
	}
	var offsets [5]int // of each segment in the input, for error messages
	for i, off := 0, lead; i < len(parts); i++ {
		offsets[i] = off
		off += len(parts[i]) + 1
	}
	decodeSegment := func(seg int) ([]byte, error) {
		b, err := b64.Strict().DecodeString(parts[seg])
		if err != nil || hasNewline(parts[seg]) {
			return nil, segmentError(parts[seg], seg, offsets[seg], err)
		}
		return b, nil
	}

	hj, err := decodeSegment(0)
	if err != nil {
		return nil, h, err
	}
	h, err = parseHeader(hj)
	if err != nil {
		return nil, h, err
	}
	if parts[1] != "" {
		return nil, h, fmt.Errorf("%w: encrypted key (segment 2) must be empty with \"alg\":\"dir\", has %d characters", ErrMalformed, len(parts[1]))
	}
	iv, err := decodeSegment(2)
	if err != nil {
		return nil, h, err
	}
	if len(iv) != IVSize {
		return nil, h, fmt.Errorf("%w: initialization vector (segment 3) is %d bytes, A256GCM uses %d", ErrMalformed, len(iv), IVSize)
	}
	tag, err := decodeSegment(4)
	if err != nil {
		return nil, h, err
	}
	if len(tag) != TagSize {
		return nil, h, fmt.Errorf("%w: authentication tag (segment 5) is %d bytes, A256GCM uses %d", ErrMalformed, len(tag), TagSize)
	}
	ctLen := b64.DecodedLen(len(parts[3]))
	// Deflate grows incompressible data by 5 bytes per 64 kB stored block.
	if maxCT := maxPlaintext + maxPlaintext/1000 + 64; h.Zip == "" && int64(ctLen) > maxPlaintext || int64(ctLen) > maxCT {
		return nil, h, fmt.Errorf("%w: ciphertext of %d bytes exceeds the plaintext limit of %d", ErrTooLarge, ctLen, maxPlaintext)
	}
	if len(key) != KeySize {
		return nil, h, fmt.Errorf("jwe: key is %d bytes, A256GCM needs %d", len(key), KeySize)
	}
	// GCM wants ciphertext||tag in one slice; decode straight into it.
	buf := make([]byte, ctLen+TagSize)
	n, err := b64.Strict().Decode(buf, []byte(parts[3]))
	if err != nil || hasNewline(parts[3]) {
		return nil, h, segmentError(parts[3], 3, offsets[3], err)
	}
	buf = append(buf[:n], tag...)
	aead, err := newGCM(key)
	if err != nil {
		return nil, h, err
	}
	plain, err := aead.Open(buf[:0], iv, buf, []byte(parts[0]))
	if err != nil {
		return nil, h, ErrAuth
	}
	if h.Zip == "" {
		return plain, h, nil
	}
	out, err := inflate(plain, maxPlaintext)
	if err != nil {
		return nil, h, err
	}
	return out, h, nil
}

// inflate undoes raw DEFLATE, stopping as soon as the output passes limit.
func inflate(data []byte, limit int64) ([]byte, error) {
	fr := flate.NewReader(bytes.NewReader(data))
	defer fr.Close()
	var out bytes.Buffer
	// Most FHIR JSON inflates four- to twentyfold; start near that.
	out.Grow(int(min(int64(len(data))*8, limit, 64<<20)))
	n, err := out.ReadFrom(io.LimitReader(fr, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%w: \"zip\":\"DEF\" payload does not inflate: %v", ErrMalformed, err)
	}
	if n > limit {
		return nil, fmt.Errorf("%w: \"zip\":\"DEF\" payload inflates past the limit of %d bytes (compressed size %d)", ErrTooLarge, limit, len(data))
	}
	return out.Bytes(), nil
}

// segmentError explains why a segment is not base64url (RFC 4648 section 5,
// without padding): the first offending character with its position in the
// whole input, or else the decoder's complaint (a bad length or stray bits).
func segmentError(s string, seg, off int, decodeErr error) error {
	for i := 0; i < len(s); i++ {
		if !isB64URL[s[i]] {
			return fmt.Errorf("%w: %s (segment %d): character %q at offset %d is not base64url", ErrMalformed, segmentNames[seg], seg+1, s[i], off+i)
		}
	}
	return fmt.Errorf("%w: %s (segment %d): %v", ErrMalformed, segmentNames[seg], seg+1, decodeErr)
}

// hasNewline catches what the base64 decoder silently skips.
func hasNewline(s string) bool {
	return strings.IndexByte(s, '\n') >= 0 || strings.IndexByte(s, '\r') >= 0
}

var isB64URL = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") {
		t[c] = true
	}
	return t
}()

// parseHeader decodes the protected header and checks that it asks for
// exactly what this package implements.
func parseHeader(data []byte) (Header, error) {
	var h Header
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return h, fmt.Errorf("%w: protected header is not a JSON object: %v", ErrMalformed, err)
	}
	str := func(name string, dst *string, required bool) error {
		v, ok := raw[name]
		if !ok {
			if required {
				return fmt.Errorf("%w: protected header has no %q", ErrMalformed, name)
			}
			return nil
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return fmt.Errorf("%w: protected header %q must be a string, got %s", ErrMalformed, name, v)
		}
		return nil
	}
	for _, f := range []struct {
		name     string
		dst      *string
		required bool
	}{{"alg", &h.Alg, true}, {"enc", &h.Enc, true}, {"cty", &h.Cty, false}, {"zip", &h.Zip, false}, {"kid", &h.Kid, false}} {
		if err := str(f.name, f.dst, f.required); err != nil {
			return h, err
		}
	}
	if h.Alg != "dir" {
		return h, fmt.Errorf("%w: \"alg\":%q; only \"dir\" (direct symmetric key) is supported", ErrUnsupported, h.Alg)
	}
	if h.Enc != "A256GCM" {
		return h, fmt.Errorf("%w: \"enc\":%q; only \"A256GCM\" is supported", ErrUnsupported, h.Enc)
	}
	if _, ok := raw["zip"]; ok && h.Zip != "DEF" {
		return h, fmt.Errorf("%w: \"zip\":%q; only \"DEF\" is supported", ErrUnsupported, h.Zip)
	}
	// RFC 7516 4.1.13: a recipient must reject extensions it does not know.
	if c, ok := raw["crit"]; ok {
		return h, fmt.Errorf("%w: critical header extensions %s", ErrUnsupported, c)
	}
	return h, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// errWriter remembers the first write error so seal can write its segments
// without checking each one.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) writeString(s string) {
	if e.err == nil {
		_, e.err = io.WriteString(e.w, s)
	}
}
