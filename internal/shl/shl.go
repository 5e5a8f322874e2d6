// Package shl shares part of a patient's record as SMART Health Links: the
// owner's management API (create, list, update, revoke, add and refresh
// files, read the access log) and the recipient protocol of the SMART
// Health Cards and Links IG (manifest POST with passcode and a lifetime
// limit on failed attempts, embedded or location files, application/jose
// downloads, the U flag's direct GET, polling limits and L links that
// follow the record).
//
// Key handling. The 256-bit content key is generated when a link is made
// and travels in the link only. For links without the L flag the server
// forgets it as soon as the files are encrypted. An L link's files must be
// re-encrypted when the record changes, so its key is kept wrapped
// (AES-256-GCM, the link id as associated data) with a key-encryption key
// held in the store's kv table under "shl/kek" (created on first use), or
// given by the operator (Options.KEK or KEKFile, `phr serve
// --shl-key-file`, e.g. from a secret manager) so that a copy of the
// database alone does not open the files. The manifest id
// (the capability in the URL) and location ids are stored only as SHA-256
// hashes; passcodes as argon2id hashes.
package shl

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/auth/password"
	"github.com/phr-project/phr/internal/records"
	"github.com/phr-project/phr/internal/shlink"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// Authenticator turns a request's bearer token into a principal
// (bearer.Authenticator in the server).
type Authenticator interface {
	Authenticate(r *http.Request) (access.Principal, error)
}

// Options configure New. DB, Records and BaseURL are required.
type Options struct {
	DB      *sqldb.DB
	Records *records.Service
	Auth    Authenticator
	// BaseURL is the server's public root (scheme://host[:port][/prefix]);
	// manifest URLs are BaseURL/shl/m/<43 random characters> and must fit
	// in the 128 characters the specification allows.
	BaseURL string
	// KEK, when set, is the 32-byte key that wraps L links' content keys;
	// KEKFile names a file holding it (43 characters of base64url, or 32
	// raw bytes). Otherwise one is created in the store's kv table.
	KEK     []byte
	KEKFile string
	// MaxAttempts is the lifetime limit of wrong passcodes (default 10).
	MaxAttempts int
	// LocationTTL is the lifetime of location URLs (default 15 minutes,
	// at most 1 hour as the specification requires).
	LocationTTL time.Duration
	// MinPoll is the shortest interval between manifest requests of one
	// recipient on an L link; faster polls get 429 (default 10 seconds;
	// negative disables the limit).
	MinPoll time.Duration
	// EmbedDefault caps embedded files when the recipient does not send
	// embeddedLengthMax (default 1 MiB of JWE text).
	EmbedDefault int
	// MaxBody caps management request bodies (default 64 MiB).
	MaxBody int64
	// Passcode sets the argon2id cost of passcode hashes (default
	// PasscodeParams).
	Passcode *password.Params
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Service manages SMART Health Links.
type Service struct {
	o       Options
	db      *sqldb.DB
	records *records.Service
	base    string
	kek     []byte
	clock   atomic.Pointer[func() time.Time]
	// refreshing holds a *sync.Mutex per L link being refreshed.
	refreshing sync.Map
}

// kvKEK is where the key-encryption key is kept when Options.KEK is unset.
const kvKEK = "shl/kek"

// New returns the service, creating the key-encryption key on first use.
func New(ctx context.Context, o Options) (*Service, error) {
	if o.DB == nil || o.Records == nil || o.BaseURL == "" {
		return nil, errors.New("shl: DB, Records and BaseURL are required")
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 10
	}
	if o.LocationTTL <= 0 || o.LocationTTL > time.Hour {
		o.LocationTTL = 15 * time.Minute
	}
	if o.MinPoll == 0 {
		o.MinPoll = 10 * time.Second
	}
	if o.EmbedDefault <= 0 {
		o.EmbedDefault = 1 << 20
	}
	if o.MaxBody <= 0 {
		o.MaxBody = 64 << 20
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Service{o: o, db: o.DB, records: o.Records, base: strings.TrimSuffix(o.BaseURL, "/")}
	if n := len(s.manifestURL(shlink.NewManifestID())); n > shlink.MaxURLLen {
		return nil, fmt.Errorf("shl: manifest URLs under base URL %q would be %d characters; SMART Health Links allow %d: use a shorter --base-url", s.base, n, shlink.MaxURLLen)
	}
	if o.KEK == nil && o.KEKFile != "" {
		b, err := os.ReadFile(o.KEKFile)
		if err != nil {
			return nil, fmt.Errorf("shl: key-encryption key: %w", err)
		}
		if t := strings.TrimSpace(string(b)); len(t) == 43 {
			if k, err := base64.RawURLEncoding.DecodeString(t); err == nil {
				b = k
			}
		}
		o.KEK = b
	}
	if o.KEK != nil {
		if len(o.KEK) != 32 {
			return nil, fmt.Errorf("shl: the key-encryption key is %d bytes, want 32", len(o.KEK))
		}
		s.kek = o.KEK
		return s, nil
	}
	fresh := make([]byte, 32)
	rand.Read(fresh)
	kek, err := s.db.InitKV(ctx, kvKEK, fresh)
	if err != nil {
		return nil, fmt.Errorf("shl: key-encryption key: %w", err)
	}
	if len(kek) != 32 {
		return nil, fmt.Errorf("shl: the stored key-encryption key %q is %d bytes, want 32", kvKEK, len(kek))
	}
	s.kek = kek
	return s, nil
}

// manifestURL is the URL recipients POST to for a manifest id.
func (s *Service) manifestURL(mid string) string { return s.base + "/shl/m/" + mid }

// ViewerURL is the address of the viewer page; links are appended after "#".
func (s *Service) ViewerURL() string { return s.base + "/shl/view" }

func (s *Service) now() time.Time {
	if f := s.clock.Load(); f != nil {
		return (*f)()
	}
	return s.o.Now()
}

// SetClock replaces the service's clock while it runs (tests that move
// time past expiries and polling intervals).
func (s *Service) SetClock(now func() time.Time) { s.clock.Store(&now) }

// hashID is how capability ids (manifest, location) are stored.
func hashID(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

// wrap encrypts an L link's content key for storage.
func (s *Service) wrap(linkID string, key []byte) ([]byte, error) {
	aead, err := s.gcm()
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	return aead.Seal(nonce, nonce, key, []byte("shl-key:"+linkID)), nil
}

// unwrap recovers an L link's content key.
func (s *Service) unwrap(linkID string, wrapped []byte) ([]byte, error) {
	aead, err := s.gcm()
	if err != nil {
		return nil, err
	}
	if len(wrapped) < aead.NonceSize() {
		return nil, fmt.Errorf("shl: wrapped key of link %s is truncated", linkID)
	}
	key, err := aead.Open(nil, wrapped[:aead.NonceSize()], wrapped[aead.NonceSize():], []byte("shl-key:"+linkID))
	if err != nil {
		return nil, fmt.Errorf("shl: unwrap the key of link %s (was the key-encryption key changed?): %w", linkID, err)
	}
	return key, nil
}

func (s *Service) gcm() (cipher.AEAD, error) {
	block, err := aes.NewCipher(s.kek)
	if err != nil {
		return nil, fmt.Errorf("shl: %w", err)
	}
	return cipher.NewGCM(block)
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
