package records

import (
	"context"
	"time"

	"github.com/phr-project/phr/internal/access"
	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/store"
)

// HistoryPage is one page of a history.
type HistoryPage struct {
	Versions []*store.Resource
	// Total counts all versions the query selects (before access
	// filtering of patient-confined callers, who get no total).
	Total int64
	// NextSeq is the cursor of the next page (0 when this is the last).
	NextSeq int64
}

// History lists versions newest first: of one resource (typ and id), of a
// type (typ), or of the system (neither). Patient-confined callers see
// only versions in their compartment.
func (s *Service) History(ctx context.Context, typ, id string, since time.Time, beforeSeq int64, count int) (*HistoryPage, error) {
	p, err := principal(ctx)
	if err != nil {
		return nil, err
	}
	if typ != "" {
		if err := checkType(typ); err != nil {
			return nil, err
		}
		if err := allow(p, access.Read, typ); err != nil {
			return nil, err
		}
	} else if !allowsAll(p) && p.Patient() == "" {
		return nil, fhir.Forbidden("system history needs read access to every resource type")
	}
	if count <= 0 {
		count = 50
	}
	q := store.HistoryQuery{Type: typ, ID: id, Since: since, BeforeSeq: beforeSeq, Limit: count}
	page := &HistoryPage{}
	confined := p.Patient() != "" || typ == ""
	if !confined {
		if page.Total, err = s.store.CountHistory(ctx, q); err != nil {
			return nil, err
		}
	}
	if id != "" && p.Patient() != "" {
		// One resource: known to the caller when its latest live version
		// is theirs. Its versions are still filtered one by one below:
		// the resource may have been in another compartment before.
		cur, err := s.store.Read(ctx, typ, id)
		if err != nil {
			return nil, fhir.NotFound("%s/%s is not known", typ, id)
		}
		if ok, err := s.visibleLive(ctx, p, cur); err != nil || !ok {
			return nil, fhir.NotFound("%s/%s is not known", typ, id)
		}
	}
	// Walk pages of the store until count visible versions are found.
	for len(page.Versions) < count {
		vs, err := s.store.History(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			ok := true
			if confined {
				ok = p.Allows(access.Read, v.Type)
				if ok && !v.Deleted {
					ok, err = s.visible(ctx, p, v)
					if err != nil {
						return nil, err
					}
				} else if ok && v.Deleted && p.Patient() != "" && PatientOwned(v.Type) {
					prev, perr := s.store.ReadVersion(ctx, v.Type, v.ID, v.Version-1)
					ok = perr == nil
					if ok {
						ok, err = s.visible(ctx, p, prev)
						if err != nil {
							return nil, err
						}
					}
				}
			}
			if ok {
				page.Versions = append(page.Versions, v)
				if len(page.Versions) == count {
					break
				}
			}
		}
		if len(vs) < q.Limit || len(page.Versions) == count {
			break
		}
		q.BeforeSeq = vs[len(vs)-1].Seq
	}
	if len(page.Versions) == count {
		page.NextSeq = page.Versions[len(page.Versions)-1].Seq
	}
	return page, nil
}

// allowsAll reports whether p may read every resource type.
func allowsAll(p access.Principal) bool {
	return p.Allows(access.Read, "*")
}
