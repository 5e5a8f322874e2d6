package records

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"sync"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/index"
	"github.com/phr-project/phr/internal/store"
)

// A Bundle's conditional searches (ifNoneExist, conditional update and
// delete, conditional references) run before its write transaction, so
// that its entries can be prepared without holding the store's writer.
// matchLog records them and verify runs them again inside the transaction:
// when a write committed in between changed an answer, the preparation is
// void and the Bundle is processed again (errMatchesChanged).
type matchLog struct {
	mu   sync.Mutex
	recs []matchRecord
}

type matchRecord struct {
	typ   string
	q     url.Values
	limit int
	ids   []string
}

// errMatchesChanged says that a conditional search of a Bundle answers
// differently inside its write transaction than it did before.
var errMatchesChanged = errors.New("a concurrent write changed what the Bundle's conditional searches match")

// match runs a search for a conditional interaction and records it in l
// (when not nil).
func (s *Service) match(ctx context.Context, l *matchLog, typ string, q url.Values, limit int) ([]string, error) {
	ids, err := s.matchVisible(ctx, typ, q, limit)
	if err != nil || l == nil {
		return ids, err
	}
	l.mu.Lock()
	l.recs = append(l.recs, matchRecord{typ: typ, q: q, limit: limit, ids: slices.Sorted(slices.Values(ids))})
	l.mu.Unlock()
	return ids, nil
}

// verify runs the recorded searches again (inside the write transaction)
// and returns errMatchesChanged, as a 409, when one answers differently.
func (s *Service) verify(ctx context.Context, l *matchLog) error {
	if l == nil {
		return nil
	}
	for _, r := range l.recs {
		ids, err := s.matchVisible(ctx, r.typ, r.q, r.limit)
		if err != nil {
			return err
		}
		if !slices.Equal(slices.Sorted(slices.Values(ids)), r.ids) {
			return &fhir.Error{Status: http.StatusConflict, Err: errMatchesChanged,
				Issues: []fhir.Issue{{Severity: "error", Code: "conflict", Diagnostics: "a concurrent write changed what the Bundle's conditional searches (" + r.typ + "?" + r.q.Encode() + ") match; send it again"}}}
		}
	}
	return nil
}

// ConfinedMatches is how many matches of a conditional search are read
// for a patient-confined caller, before those it may not see are dropped
// (here and in the importer).
const ConfinedMatches = 1000

// matchVisible runs a conditional search (If-None-Exist, conditional
// update and delete, conditional references) among what the caller of
// ctx may see: up to limit ids. For a patient-confined caller, another
// patient's resource is no match: a conditional reference resolved to it
// would tell the caller that it exists, and its id (a Patient found by a
// national identifier), and a conditional create would answer with it.
// For other callers, a patient's own copy of reference data (owner.go) is
// no match either: a hospital's resources that pointed at it would point
// at what their patients cannot see.
func (s *Service) matchVisible(ctx context.Context, typ string, q url.Values, limit int) ([]string, error) {
	p := access.From(ctx)
	confined := p != nil && p.Patient() != ""
	if !PatientOwned(typ) || !confined && !index.Ownable(typ) {
		return s.matcher.Match(ctx, typ, q, limit)
	}
	ids, err := s.matcher.Match(ctx, typ, q, ConfinedMatches)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, id := range ids {
		res, err := s.store.Read(ctx, typ, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var ok bool
		if confined {
			ok, err = s.visible(ctx, p, res)
		} else {
			ok, err = s.Unowned(res)
		}
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, id)
			if len(out) == limit {
				break
			}
		}
	}
	return out, nil
}
