package zipaes

import (
	"crypto/rand"
	"fmt"
	"strings"
)

// passphraseAlphabet is lower-case letters and digits without the characters people
// confuse when reading or typing them: 0/o, 1/l/i. 31 symbols, 4.95 bits each.
const passphraseAlphabet = "23456789abcdefghjkmnpqrstuvwxyz"

// Passphrase shape: 6 groups of 4 symbols, 24 symbols in all.
const (
	passphraseGroups    = 6
	passphraseGroupSize = 4
)

// PassphraseBits is the entropy of a GeneratePassphrase result: 24 symbols drawn
// uniformly from 31, log2(31^24) ≈ 118.9 bits. Against PBKDF2 with 1000 iterations
// that is far beyond any offline guessing.
const PassphraseBits = 118

// GeneratePassphrase returns a new random passphrase for an encrypted export, shown
// to the user once: 24 characters from crypto/rand in six groups of four joined by
// hyphens, such as "k7mp-3xq9-wd4t-hn8e-ua2c-rf6v" (29 characters to type). It uses
// only lower-case letters and digits, never 0, o, 1, l or i, so it survives being
// read aloud, written down or typed on a phone, and 7-Zip and other tools take it as
// it is. The hyphens are part of the passphrase.
func GeneratePassphrase() (string, error) {
	const n = passphraseGroups * passphraseGroupSize
	// Rejection sampling keeps every symbol equally likely: bytes at or above the
	// largest multiple of 31 that fits in a byte (248) are drawn again.
	limit := byte(256 - 256%len(passphraseAlphabet))
	syms := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(syms) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("zipaes: generate passphrase: %w", err)
		}
		for _, b := range buf {
			if b < limit && len(syms) < n {
				syms = append(syms, passphraseAlphabet[int(b)%len(passphraseAlphabet)])
			}
		}
	}
	var sb strings.Builder
	for g := range passphraseGroups {
		if g > 0 {
			sb.WriteByte('-')
		}
		sb.Write(syms[g*passphraseGroupSize : (g+1)*passphraseGroupSize])
	}
	return sb.String(), nil
}
