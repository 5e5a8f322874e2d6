// Package cid names content the way IPFS does: a CIDv1 with the raw codec
// (0x55) over a sha2-256 multihash, written in multibase base32 (lower
// case, no padding, prefix 'b'), e.g. "bafkrei...". The same bytes give
// the same CID on any IPFS node (as a single raw block, as `ipfs add
// --raw-leaves --cid-version=1` names files up to the chunk size), so bulk
// export files can be published to IPFS and checked by name.
package cid

import (
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"hash"
	"io"
	"strings"
)

var enc = base32.StdEncoding.WithPadding(base32.NoPadding)

// prefix is the CIDv1 header: version 1, raw codec, sha2-256, 32 bytes.
var prefix = []byte{0x01, 0x55, 0x12, 0x20}

// FromDigest returns the CID of content whose sha2-256 digest is d.
func FromDigest(d []byte) string {
	b := append(append([]byte{}, prefix...), d...)
	return "b" + strings.ToLower(enc.EncodeToString(b))
}

// Of returns the CID of data.
func Of(data []byte) string {
	d := sha256.Sum256(data)
	return FromDigest(d[:])
}

// Hasher computes a CID of what is written to it.
type Hasher struct{ h hash.Hash }

// NewHasher returns a Hasher.
func NewHasher() *Hasher { return &Hasher{sha256.New()} }

// Write implements io.Writer.
func (h *Hasher) Write(p []byte) (int, error) { return h.h.Write(p) }

// CID returns the CID of the bytes written so far.
func (h *Hasher) CID() string { return FromDigest(h.h.Sum(nil)) }

var _ io.Writer = (*Hasher)(nil)

// Digest returns the sha2-256 digest a CID of this package's form names,
// or an error when s is not such a CID.
func Digest(s string) ([]byte, error) {
	if len(s) < 2 || s[0] != 'b' {
		return nil, errors.New("not a base32 CIDv1 (must start with 'b')")
	}
	b, err := enc.DecodeString(strings.ToUpper(s[1:]))
	if err != nil {
		return nil, errors.New("not a base32 CIDv1: " + err.Error())
	}
	if len(b) != len(prefix)+sha256.Size || string(b[:len(prefix)]) != string(prefix) {
		return nil, errors.New("not a CIDv1 raw sha2-256")
	}
	return b[len(prefix):], nil
}

// Valid reports whether s is a CIDv1 raw sha2-256 in base32.
func Valid(s string) bool { _, err := Digest(s); return err == nil }
