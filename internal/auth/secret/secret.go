// Package secret makes the random bearer secrets of the OAuth flows
// (authorization codes, refresh tokens, client secrets, SMART Health Link
// ids) and the hashes they are stored as.
//
// A secret is 256 bits from crypto/rand, base64url-encoded (43
// characters). The store keeps only Hash(secret): a leaked database then
// yields no usable code or token. Because the secret itself is uniformly
// random and long, a plain SHA-256 (no salt, no stretching) is enough, and
// it keeps lookups by hash a single indexed equality.
package secret

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
)

// Size is the number of random bytes in a secret.
const Size = 32

// New returns a fresh secret. crypto/rand does not fail on supported
// platforms (the runtime aborts instead), so there is no error to handle.
func New() string {
	var b [Size]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Hash returns the storage form of a secret: base64url of its SHA-256.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Matches reports, in constant time, whether secret hashes to stored.
// Use it when a row was found by some other key (a client id) and its
// stored hash must be compared.
func Matches(secret, stored string) bool {
	return subtle.ConstantTimeCompare([]byte(Hash(secret)), []byte(stored)) == 1
}
