package records

import (
	"context"
	"github.com/phr-project/phr/internal/access"
	"time"

	"github.com/phr-project/phr/internal/fhirjson"
	"github.com/phr-project/phr/internal/store"
)

// Prepared is a validated version ready to write with store.Tx.Put, for
// services (the importer) that write many versions in their own
// transactions but must store them exactly as the record service does.
type Prepared struct {
	// Put is the version to write (with index entries and compartments).
	Put *store.Put
	p   *prepared
}

// PrepareVersion validates res (of type typ, id already set in the tree)
// and builds version number version written at at: meta.versionId,
// meta.lastUpdated and (when o.Source is set) meta.source are set, search
// index entries and patient compartments computed, and a Binary's data
// moved to the blob store key. Conditional references (Type?query) are
// allowed, as an importer keeps those it cannot resolve. Validation errors
// come back as a *fhir.Error with the issues.
func (s *Service) PrepareVersion(res *fhirjson.Value, typ, id string, version int64, at time.Time, method string, o WriteOptions) (*Prepared, error) {
	p, err := s.prepare(res, typ, id, version, at, method, o, true)
	if err != nil {
		return nil, err
	}
	return &Prepared{Put: p.put, p: p}, nil
}

// StoreBlob writes a prepared Binary's content to the blob store (nothing
// for other types); call it before the version is committed.
func (s *Service) StoreBlob(ctx context.Context, p *Prepared) error { return s.storeBlob(ctx, p.p) }

// CheckWrite checks that principal p may do i with the prepared version
// over old (the stored current version, nil for a new resource): the
// checks of the REST writes (scopes; for a patient-confined principal
// its compartment, the Binaries its attachments point at, a Binary's
// securityContext, and whose old is), for writers outside the service
// (the importer). pending names what the writer is storing for p in
// writes not committed yet.
func (s *Service) CheckWrite(ctx context.Context, p access.Principal, i access.Interaction, prep *Prepared, old *store.Resource, pending Pending) error {
	return s.checkWrite(ctx, p, i, prep.p, old, pending)
}

// Now returns the service clock's current time.
func (s *Service) Now() time.Time { return s.now() }
