// Package pkce checks Proof Key for Code Exchange (RFC 7636) with the S256
// method, the only one SMART App Launch 2 allows ("plain" would let anyone
// who sees the authorization request redeem the code).
package pkce

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
)

// MethodS256 is the only code_challenge_method accepted.
const MethodS256 = "S256"

// Challenge returns the S256 code_challenge for a code_verifier:
// base64url(SHA-256(verifier)) without padding.
func Challenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// CheckVerifier reports whether v is a well-formed code_verifier: 43 to 128
// characters from A-Z a-z 0-9 - . _ ~ (RFC 7636 section 4.1).
func CheckVerifier(v string) error {
	if len(v) < 43 || len(v) > 128 {
		return fmt.Errorf("code_verifier is %d characters long; it must have 43 to 128", len(v))
	}
	for i := 0; i < len(v); i++ {
		if !unreserved(v[i]) {
			return fmt.Errorf("code_verifier character %d (%q) is not one of A-Z a-z 0-9 - . _ ~", i+1, v[i])
		}
	}
	return nil
}

func unreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// CheckChallenge validates the code_challenge and code_challenge_method of
// an authorization request: the method must be S256 and the challenge a
// base64url SHA-256 digest (43 characters).
func CheckChallenge(challenge, method string) error {
	if method != MethodS256 {
		if method == "" {
			return fmt.Errorf("code_challenge_method is missing; it must be %s", MethodS256)
		}
		return fmt.Errorf("code_challenge_method %q is not supported; it must be %s", method, MethodS256)
	}
	b, err := base64.RawURLEncoding.DecodeString(challenge)
	if err != nil || len(b) != sha256.Size {
		return fmt.Errorf("code_challenge must be 43 base64url characters (an S256 digest), got %d characters", len(challenge))
	}
	return nil
}

// Verify checks a token request's code_verifier against the challenge
// stored with the authorization code, in constant time. An error says what
// was wrong; the token endpoint answers it with invalid_grant.
func Verify(verifier, challenge string) error {
	if err := CheckVerifier(verifier); err != nil {
		return err
	}
	if subtle.ConstantTimeCompare([]byte(Challenge(verifier)), []byte(challenge)) != 1 {
		return fmt.Errorf("code_verifier does not match the code_challenge")
	}
	return nil
}
