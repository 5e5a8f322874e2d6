package shc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/phr-project/phr/internal/auth/jwks"
)

// Revocation (https://spec.smarthealth.cards/#revocation): an issuer that
// can revoke cards gives the signing key's JWK a crlVersion, and publishes
// for that key a revocation list at iss/.well-known/crl/<kid>.json:
// {"kid", "method": "rid", "ctr", "rids": [...]}. A card carries its
// revocation id in vc.rid; the list revokes it when it holds that id, or
// "id.T" and the card was issued (nbf) before T, in seconds since 1970.
// ctr grows with every change of the list, and crlVersion names the
// newest.

// CRL is a revocation list.
type CRL struct {
	Kid    string   `json:"kid"`
	Method string   `json:"method"`
	Ctr    int      `json:"ctr"`
	Rids   []string `json:"rids"`
}

// ErrRevoked is returned (wrapped) by CheckRevocation for a revoked card.
var ErrRevoked = errors.New("revoked by its issuer")

// ErrNotChecked is returned (wrapped) by CheckRevocation when the card's
// key has a revocation list that could not be read.
var ErrNotChecked = errors.New("revocation not checked")

// Revokes reports whether the list revokes card.
func (l *CRL) Revokes(card *Card) bool {
	if card.RevocationID == "" {
		return false
	}
	for _, r := range l.Rids {
		id, ts, timed := strings.Cut(r, ".")
		if id != card.RevocationID {
			continue
		}
		if !timed {
			return true
		}
		t, err := strconv.ParseInt(ts, 10, 64)
		if err != nil || card.NotBefore.IsZero() || card.NotBefore.Before(time.Unix(t, 0)) {
			// (An entry whose time cannot be read revokes every card of
			// the id, as one without a time does.)
			return true
		}
	}
	return false
}

// parseCRL reads a revocation list of key kid.
func parseCRL(b []byte, kid string) (*CRL, error) {
	var l CRL
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("not a revocation list: %w", err)
	}
	if l.Kid != kid {
		return nil, fmt.Errorf("the revocation list is of key %q, not %q", l.Kid, kid)
	}
	if l.Method != "" && l.Method != "rid" {
		return nil, fmt.Errorf("the revocation list's method is %q, not rid", l.Method)
	}
	return &l, nil
}

// KeyLists says where a trusted key's revocation lists are.
type KeyLists struct {
	// Version is the key's crlVersion: the ctr of its newest list.
	Version int
	// File is where its list is expected beside the key set:
	// crl/<kid>.json in the key set's directory, as an issuer's
	// .well-known directory holds it.
	File string
}

// LoadRevocation reads, from key set files (JWKS), which keys declare
// revocation lists (crlVersion), for Issuers.TrustedLists.
func LoadRevocation(paths ...string) (map[string]KeyLists, error) {
	out := map[string]KeyLists{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("health card keys: %w", err)
		}
		var set struct {
			Keys []struct {
				Kid        string `json:"kid"`
				CRLVersion *int   `json:"crlVersion"`
			} `json:"keys"`
		}
		if err := json.Unmarshal(b, &set); err != nil {
			return nil, fmt.Errorf("health card keys %s: %w", p, err)
		}
		for _, k := range set.Keys {
			if k.CRLVersion != nil && k.Kid != "" && !strings.ContainsAny(k.Kid, `/\`) {
				out[k.Kid] = KeyLists{Version: *k.CRLVersion, File: filepath.Join(filepath.Dir(p), "crl", k.Kid+".json")}
			}
		}
	}
	return out, nil
}

// fetchedList is an issuer's list as fetched, until when it may be used.
type fetchedList struct {
	crl   *CRL // nil: the issuer publishes none
	until time.Time
}

// CheckRevocation checks card, whose signature its key (card.KeyID)
// verified, against the issuer's revocation list for that key: nil when the list does not
// revoke it, or when the key has no list; ErrRevoked (wrapped, with the
// list's counter) when it does; ErrNotChecked (wrapped) when a list that
// the key declares could not be read. A trusted key's list is read from
// beside its key set, else fetched (with Fetch) from the issuer, as is a
// fetched key's, if the issuer publishes one.
func (is *Issuers) CheckRevocation(ctx context.Context, card *Card) error {
	if card.RevocationID == "" {
		return nil
	}
	kid := card.KeyID
	revoked := func(l *CRL) error {
		return fmt.Errorf("%w (revocation list %d of key %s)", ErrRevoked, l.Ctr, kid)
	}
	kl, declared := is.TrustedLists[kid]
	if !declared {
		if is.Fetch == nil || is.trusted(kid) {
			return nil // a trusted key without lists
		}
		l, err := is.fetchList(ctx, card.Issuer, kid)
		if err != nil {
			return err
		}
		if l != nil && l.Revokes(card) {
			return revoked(l)
		}
		return nil
	}
	// The list beside the key set. Lists only grow, so one that revokes
	// the card settles it even when the key names a newer one.
	var why error
	b, err := os.ReadFile(kl.File)
	if err == nil {
		l, err := parseCRL(b, kid)
		switch {
		case err != nil:
			why = fmt.Errorf("%s: %v", kl.File, err)
		case l.Revokes(card):
			return revoked(l)
		case l.Ctr >= kl.Version:
			return nil
		default:
			why = fmt.Errorf("the list at %s is number %d, and the key says %d is out", kl.File, l.Ctr, kl.Version)
		}
	} else {
		why = fmt.Errorf("the key declares revocation lists (crlVersion %d), and none is at %s (put the issuer's crl/%s.json there, or let phr fetch it with --shc-fetch-keys)", kl.Version, kl.File, kid)
	}
	if is.Fetch == nil {
		return fmt.Errorf("%w: %v", ErrNotChecked, why)
	}
	l, err := is.fetchList(ctx, card.Issuer, kid)
	switch {
	case err != nil:
		return err
	case l == nil:
		return fmt.Errorf("%w: %v, and %s publishes none", ErrNotChecked, why, card.Issuer)
	case l.Revokes(card):
		return revoked(l)
	}
	return nil
}

// trusted reports whether a trusted key has kid.
func (is *Issuers) trusted(kid string) bool {
	for _, k := range is.Trusted {
		if k.KeyID == kid {
			return true
		}
	}
	return false
}

// listTTL bounds how long a fetched list (or its absence) is used.
const listTTL = time.Hour

// fetchList fetches the issuer's revocation list of key kid; nil when the
// issuer publishes none (HTTP 404).
func (is *Issuers) fetchList(ctx context.Context, issuer, kid string) (*CRL, error) {
	if issuer == "" || strings.ContainsAny(kid, "/?#") {
		return nil, fmt.Errorf("%w: no issuer URL or an unusable kid", ErrNotChecked)
	}
	u := strings.TrimSuffix(issuer, "/") + "/.well-known/crl/" + kid + ".json"
	is.mu.Lock()
	f, ok := is.lists[u]
	is.mu.Unlock()
	if ok && time.Now().Before(f.until) {
		return f.crl, nil
	}
	b, until, err := is.Fetch.FetchJSON(ctx, u)
	if err != nil {
		var se *jwks.StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound {
			is.keep(u, fetchedList{until: time.Now().Add(listTTL)})
			return nil, nil
		}
		return nil, fmt.Errorf("%w: %v", ErrNotChecked, err)
	}
	l, err := parseCRL(b, kid)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotChecked, u, err)
	}
	if latest := time.Now().Add(listTTL); until.After(latest) {
		until = latest
	}
	is.keep(u, fetchedList{crl: l, until: until})
	return l, nil
}

func (is *Issuers) keep(u string, f fetchedList) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.lists == nil {
		is.lists = map[string]fetchedList{}
	}
	if len(is.lists) > 1000 {
		clear(is.lists)
	}
	is.lists[u] = f
}
