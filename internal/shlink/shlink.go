// Package shlink encodes and decodes the SMART Health Link itself: the
// "shlink:/" URI whose base64url payload tells a recipient where the manifest
// is and which key decrypts the files. The key travels only in the link (or
// the QR code made of it), never to the server.
//
// Encode is strict, because a link we hand out must work in every viewer;
// Decode is lenient where the specification tells receivers to be (unknown
// fields and flags are ignored), and precise about what is wrong otherwise.
package shlink

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/phr-project/phr/internal/fhirjson"
)

// Prefix starts every SMART Health Link; in a viewer URL it follows the "#".
const Prefix = "shlink:/"

// Limits set by the specification for links we create.
const (
	MaxURLLen   = 128 // characters of the manifest URL
	MaxLabelLen = 80  // characters of the label
	KeyLen      = 43  // base64url characters of a 32-byte key
)

// Payload is the JSON object inside a link.
type Payload struct {
	// URL is the manifest URL (POSTed to), or with flag U the single
	// encrypted file (fetched with GET).
	URL string
	// Key is the base64url (no padding) of the 32-byte AES key that decrypts
	// every file of the link.
	Key string
	// Exp is an expiry hint for the recipient in epoch seconds, 0 if none.
	// The server enforces expiry on its own records, not from this field.
	Exp int64
	// Flag holds single-letter flags in alphabetical order: L (long-term,
	// poll for changes), P (passcode required), U (direct single file).
	Flag string
	// Label is a short description shown to the recipient.
	Label string
	// V is the protocol version; 0 means absent, which is version 1.
	V int
}

// HasFlag reports whether p carries flag f (e.g. 'P').
func (p Payload) HasFlag(f byte) bool {
	return strings.IndexByte(p.Flag, f) >= 0
}

// KeyBytes decodes the key, checking that it is 32 bytes of base64url.
func (p Payload) KeyBytes() ([]byte, error) {
	if len(p.Key) != KeyLen {
		return nil, fmt.Errorf("shlink: key is %d characters, want %d (32 bytes base64url)", len(p.Key), KeyLen)
	}
	k, err := base64.RawURLEncoding.Strict().DecodeString(p.Key)
	if err != nil {
		return nil, fmt.Errorf("shlink: key is not base64url: %w", err)
	}
	return k, nil
}

// Validate checks p against the rules for links we create: an absolute
// http(s) URL of at most 128 characters, a 32-byte key, known flags in
// alphabetical order and never U with P, a label of at most 80 characters,
// and version 1.
func (p Payload) Validate() error {
	if p.URL == "" {
		return errors.New("shlink: url is required")
	}
	if n := utf8.RuneCountInString(p.URL); n > MaxURLLen {
		return fmt.Errorf("shlink: url is %d characters, at most %d allowed", n, MaxURLLen)
	}
	u, err := url.Parse(p.URL)
	if err != nil {
		return fmt.Errorf("shlink: url: %w", err)
	}
	if u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("shlink: url %q must be an absolute https URL", p.URL)
	}
	if u.Fragment != "" || strings.Contains(p.URL, "#") {
		return fmt.Errorf("shlink: url %q must not have a fragment", p.URL)
	}
	if _, err := p.KeyBytes(); err != nil {
		return err
	}
	if p.Exp < 0 {
		return fmt.Errorf("shlink: exp %d is negative; it is epoch seconds", p.Exp)
	}
	for i := 0; i < len(p.Flag); i++ {
		c := p.Flag[i]
		if c != 'L' && c != 'P' && c != 'U' {
			return fmt.Errorf("shlink: flag %q: unknown flag %q (known: L, P, U)", p.Flag, c)
		}
		if i > 0 && c <= p.Flag[i-1] {
			return fmt.Errorf("shlink: flag %q: flags must be single letters in alphabetical order", p.Flag)
		}
	}
	if p.HasFlag('U') && p.HasFlag('P') {
		return fmt.Errorf("shlink: flag %q: U (direct file) cannot be combined with P (passcode)", p.Flag)
	}
	if !utf8.ValidString(p.Label) {
		return errors.New("shlink: label is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(p.Label); n > MaxLabelLen {
		return fmt.Errorf("shlink: label is %d characters, at most %d allowed", n, MaxLabelLen)
	}
	if p.V != 0 && p.V != 1 {
		return fmt.Errorf("shlink: version %d; only version 1 is implemented", p.V)
	}
	return nil
}

// Encode validates p and returns the bare link "shlink:/<base64url>". The
// JSON is minified with members in the order of the specification's
// examples (url, flag, key, exp, v, label), empty optional members
// omitted, so a payload encodes byte for byte as other implementations do.
func Encode(p Payload) (string, error) {
	if err := p.Validate(); err != nil {
		return "", err
	}
	j := make([]byte, 0, 256)
	j = append(j, `{"url":`...)
	j = fhirjson.AppendString(j, p.URL)
	if p.Flag != "" {
		j = append(j, `,"flag":`...)
		j = fhirjson.AppendString(j, p.Flag)
	}
	j = append(j, `,"key":`...)
	j = fhirjson.AppendString(j, p.Key)
	if p.Exp != 0 {
		j = append(j, `,"exp":`...)
		j = strconv.AppendInt(j, p.Exp, 10)
	}
	if p.V != 0 {
		j = append(j, `,"v":`...)
		j = strconv.AppendInt(j, int64(p.V), 10)
	}
	if p.Label != "" {
		j = append(j, `,"label":`...)
		j = fhirjson.AppendString(j, p.Label)
	}
	j = append(j, '}')
	return Prefix + base64.RawURLEncoding.EncodeToString(j), nil
}

// EncodeViewer returns the link behind a viewer page,
// "<viewer>#shlink:/...": a phone that scans it opens the viewer, and the
// fragment, which holds the key, never reaches any server.
func EncodeViewer(viewer string, p Payload) (string, error) {
	u, err := url.Parse(viewer)
	if err != nil {
		return "", fmt.Errorf("shlink: viewer URL: %w", err)
	}
	if u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
		return "", fmt.Errorf("shlink: viewer URL %q must be an absolute https URL", viewer)
	}
	if strings.Contains(viewer, "#") {
		return "", fmt.Errorf("shlink: viewer URL %q must not have a fragment; the link goes there", viewer)
	}
	link, err := Encode(p)
	if err != nil {
		return "", err
	}
	return viewer + "#" + link, nil
}

// Decode reads a link, bare ("shlink:/...") or behind a viewer
// ("https://viewer.example/#shlink:/..."). It requires url and a 32-byte
// key, checks the types of the known members, rejects U with P (such a link
// cannot be followed), and ignores unknown members and flags. Producer-only
// limits (URL and label length, flag order) are not enforced.
func Decode(s string) (Payload, error) {
	var p Payload
	s = strings.TrimSpace(s)
	enc, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		i := strings.Index(s, "#"+Prefix)
		if i < 0 {
			return p, fmt.Errorf("shlink: %q is not a SMART Health Link: no %q at the start or after a viewer URL's #", abbrev(s), Prefix)
		}
		enc = s[i+1+len(Prefix):]
	}
	// Padding is not part of the format, but costs nothing to forgive.
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(enc, "="))
	if err != nil {
		return p, fmt.Errorf("shlink: payload is not base64url: %w", err)
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var m map[string]json.RawMessage
	if err := d.Decode(&m); err != nil {
		return p, fmt.Errorf("shlink: payload is not a JSON object: %w", err)
	}
	if d.More() {
		return p, errors.New("shlink: payload has data after the JSON object")
	}
	if err := str(m, "url", &p.URL, true); err != nil {
		return p, err
	}
	if err := str(m, "key", &p.Key, true); err != nil {
		return p, err
	}
	if err := str(m, "flag", &p.Flag, false); err != nil {
		return p, err
	}
	if err := str(m, "label", &p.Label, false); err != nil {
		return p, err
	}
	if v, ok := m["exp"]; ok {
		if p.Exp, err = strconv.ParseInt(string(v), 10, 64); err != nil || p.Exp < 0 {
			return p, fmt.Errorf("shlink: payload member \"exp\" must be a whole number of epoch seconds, got %s", v)
		}
	}
	if v, ok := m["v"]; ok {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 1 {
			return p, fmt.Errorf("shlink: payload member \"v\" must be a positive integer, got %s", v)
		}
		p.V = n
	}
	if _, err := p.KeyBytes(); err != nil {
		return p, err
	}
	if p.HasFlag('U') && p.HasFlag('P') {
		return p, fmt.Errorf("shlink: flag %q combines U (direct file, no passcode) with P (passcode)", p.Flag)
	}
	return p, nil
}

func str(m map[string]json.RawMessage, name string, dst *string, required bool) error {
	v, ok := m[name]
	if !ok || string(v) == "null" {
		if required {
			return fmt.Errorf("shlink: payload has no %q", name)
		}
		return nil
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return fmt.Errorf("shlink: payload member %q must be a string, got %s", name, abbrev(string(v)))
	}
	if required && *dst == "" {
		return fmt.Errorf("shlink: payload member %q is empty", name)
	}
	return nil
}

func abbrev(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}

// NewKey returns a fresh 256-bit key in base64url (43 characters), the
// form the link and KeyBytes use.
func NewKey() string {
	return random32()
}

// NewManifestID returns 43 base64url characters carrying 256 random bits,
// for the manifest URL's path: the URL is all a recipient needs to reach
// the (encrypted) files, so it must not be guessable.
func NewManifestID() string {
	return random32()
}

func random32() string {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand crashes the program instead)
	return base64.RawURLEncoding.EncodeToString(b[:])
}
