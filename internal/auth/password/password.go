// Package password hashes user passwords with argon2id (RFC 9106) and
// stores them as PHC strings:
//
//	$argon2id$v=19$m=65536,t=3,p=2$<salt, base64 without padding>$<hash, same>
//
// DefaultParams are m=64 MiB, t=3, p=2, a 16-byte salt and a 32-byte hash:
// RFC 9106's second recommended setting (64 MiB, 3 passes) with the lanes
// cut from 4 to the 2 cores of the reference machine, and well above the
// OWASP minimum (19 MiB, 2 passes, 1 lane). One hash takes about 90 ms there;
// that is the price of every login and the cost of every guess an attacker
// with the database makes. The parameters live in each PHC string, so they
// can be raised later: NeedsRehash tells when a stored hash is weaker than
// the current parameters, and the login handler re-hashes then.
//
// Each hash holds its memory for its whole run, so at most MaxConcurrent
// hashes run at once (the rest wait, or give up when their context ends):
// a burst of logins cannot exhaust memory.
package password

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Params are argon2id's cost parameters.
type Params struct {
	// Memory is in KiB.
	Memory uint32
	// Time is the number of passes over the memory.
	Time uint32
	// Threads is the number of lanes (and goroutines).
	Threads uint8
	// SaltLen and KeyLen are in bytes.
	SaltLen uint32
	KeyLen  uint32
}

// DefaultParams are the parameters new hashes use; see the package comment.
var DefaultParams = Params{Memory: 64 * 1024, Time: 3, Threads: 2, SaltLen: 16, KeyLen: 32}

// Bounds on parameters read from a stored hash, so a corrupted or planted
// record cannot make one login allocate gigabytes or run for minutes.
const (
	maxMemory   = 1 << 20 // KiB: 1 GiB
	maxTime     = 64
	minSaltLen  = 8
	maxSaltLen  = 64
	minKeyLen   = 16
	maxKeyLen   = 64
	maxPassword = 4096
)

// MaxConcurrent is how many hashes may run at once.
const MaxConcurrent = 2

var slots = make(chan struct{}, MaxConcurrent)

// ErrMalformed is wrapped by errors about unreadable stored hashes.
var ErrMalformed = errors.New("malformed password hash")

func derive(ctx context.Context, password string, salt []byte, p Params) ([]byte, error) {
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("password hash: waiting for a free slot: %w", ctx.Err())
	}
	defer func() { <-slots }()
	return argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, p.KeyLen), nil
}

// Hash returns the PHC string of password under DefaultParams with a fresh
// random salt.
func Hash(ctx context.Context, password string) (string, error) {
	return HashWith(ctx, password, DefaultParams)
}

// HashWith is Hash with explicit parameters (tests, or tuning a deployment).
func HashWith(ctx context.Context, password string, p Params) (string, error) {
	if password == "" {
		return "", errors.New("password hash: the password is empty")
	}
	if len(password) > maxPassword {
		return "", fmt.Errorf("password hash: the password is longer than %d bytes", maxPassword)
	}
	if err := p.check(); err != nil {
		return "", fmt.Errorf("password hash: %w", err)
	}
	salt := make([]byte, p.SaltLen)
	rand.Read(salt)
	key, err := derive(ctx, password, salt, p)
	if err != nil {
		return "", err
	}
	return encode(p, salt, key), nil
}

func (p Params) check() error {
	switch {
	case p.Memory < 8*uint32(p.Threads) || p.Memory > maxMemory:
		return fmt.Errorf("memory m=%d KiB outside 8*p..%d", p.Memory, maxMemory)
	case p.Time < 1 || p.Time > maxTime:
		return fmt.Errorf("time t=%d outside 1..%d", p.Time, maxTime)
	case p.Threads < 1:
		return errors.New("threads p=0")
	case p.SaltLen < minSaltLen || p.SaltLen > maxSaltLen:
		return fmt.Errorf("salt of %d bytes outside %d..%d", p.SaltLen, minSaltLen, maxSaltLen)
	case p.KeyLen < minKeyLen || p.KeyLen > maxKeyLen:
		return fmt.Errorf("hash of %d bytes outside %d..%d", p.KeyLen, minKeyLen, maxKeyLen)
	}
	return nil
}

var b64 = base64.RawStdEncoding

func encode(p Params, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// decode parses a PHC string into its parameters, salt and hash.
func decode(encoded string) (Params, []byte, []byte, error) {
	fail := func(format string, args ...any) (Params, []byte, []byte, error) {
		return Params{}, nil, nil, fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" {
		return fail("want $argon2id$v=19$m=..,t=..,p=..$salt$hash, got %d fields", len(parts)-1)
	}
	if parts[1] != "argon2id" {
		return fail("algorithm %q is not argon2id", parts[1])
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || fmt.Sprintf("v=%d", version) != parts[2] {
		return fail("version field %q", parts[2])
	}
	if version != argon2.Version {
		return fail("version %d is not %d", version, argon2.Version)
	}
	var p Params
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil ||
		fmt.Sprintf("m=%d,t=%d,p=%d", p.Memory, p.Time, p.Threads) != parts[3] {
		return fail("parameter field %q", parts[3])
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return fail("salt is not unpadded base64")
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil {
		return fail("hash is not unpadded base64")
	}
	p.SaltLen, p.KeyLen = uint32(len(salt)), uint32(len(key))
	if err := p.check(); err != nil {
		return fail("%v", err)
	}
	return p, salt, key, nil
}

// Verify reports whether password matches the stored PHC string, comparing
// in constant time. The error is for a malformed stored hash (wrapping
// ErrMalformed) or a context that ended while waiting, never for a wrong
// password.
func Verify(ctx context.Context, password, encoded string) (bool, error) {
	p, salt, want, err := decode(encoded)
	if err != nil {
		return false, err
	}
	if len(password) > maxPassword {
		return false, nil
	}
	got, err := derive(ctx, password, salt, p)
	if err != nil {
		return false, err
	}
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// NeedsRehash reports whether a stored hash was made with parameters weaker
// than p (or is unreadable), so that after a successful login the password
// should be hashed again with p.
func NeedsRehash(encoded string, p Params) bool {
	have, _, _, err := decode(encoded)
	if err != nil {
		return true
	}
	return have.Memory < p.Memory || have.Time < p.Time || have.Threads != p.Threads ||
		have.SaltLen < p.SaltLen || have.KeyLen < p.KeyLen
}
