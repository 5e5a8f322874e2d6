// Package store declares the persistence interface of phr: versioned FHIR
// resources with their search index entries and patient-compartment
// membership. Implementations live in the sqlite and postgres packages and
// share their SQL in sqldb; storetest is the conformance suite both pass.
//
// Every write is a new version row; nothing is ever updated in place, so
// history, vread and _since read from the same table the current version
// comes from.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/phr-project/phr/internal/index"
)

// Errors callers test with errors.Is.
var (
	// ErrNotFound: no such resource, version or record.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a concurrent writer changed the same resource first (the
	// caller may retry the whole transaction).
	ErrConflict = errors.New("conflicting concurrent write")
)

// Resource is one version of a resource as stored.
type Resource struct {
	Type    string
	ID      string
	Version int64
	// LastUpdated is the version's meta.lastUpdated (microsecond precision).
	LastUpdated time.Time
	// Deleted marks a tombstone version (JSON is nil).
	Deleted bool
	// Method is the interaction that wrote the version: POST, PUT, PATCH or DELETE.
	Method string
	// JSON is the full resource text including meta.versionId and
	// meta.lastUpdated, exactly as served.
	JSON []byte
	// Blob is the blob-store key of a Binary's content (empty otherwise).
	Blob string
	// Seq is the global, monotonically increasing sequence number of the
	// version, used for history order and stable paging.
	Seq int64
}

// Put is one version to write.
type Put struct {
	Resource
	// Index holds the search index entries of the version (nil for deletes).
	Index *index.Entries
	// Patients are the ids of the patients whose compartment the version
	// belongs to.
	Patients []string
	// Batch is the import batch that wrote the version (0 if none).
	Batch int64
}

// HistoryQuery selects versions for the _history interactions.
type HistoryQuery struct {
	// Type and ID narrow the history to a type or an instance; both empty
	// means the whole system.
	Type string
	ID   string
	// Since keeps versions with LastUpdated >= Since (zero: no bound).
	Since time.Time
	// BeforeSeq keeps versions with Seq < BeforeSeq (0: no bound); paging
	// walks backwards from the newest version.
	BeforeSeq int64
	// Limit caps the number of versions returned.
	Limit int
}

// Store is the persistence layer.
type Store interface {
	// Dialect names the implementation ("sqlite" or "postgres").
	Dialect() string
	// Read returns the current version of a resource (a Deleted tombstone
	// if its latest version is a delete) or ErrNotFound.
	Read(ctx context.Context, typ, id string) (*Resource, error)
	// ReadVersion returns one version or ErrNotFound.
	ReadVersion(ctx context.Context, typ, id string, version int64) (*Resource, error)
	// History lists versions newest first.
	History(ctx context.Context, q HistoryQuery) ([]*Resource, error)
	// CountHistory counts the versions q selects (ignoring BeforeSeq/Limit).
	CountHistory(ctx context.Context, q HistoryQuery) (int64, error)
	// ScanCompartment calls fn with the current version of each live
	// resource of the given types in patient's compartment, until fn
	// returns false.
	ScanCompartment(ctx context.Context, patient string, types []string, fn func(*Resource) bool) error
	// ScanType calls fn with the current version of each live resource of
	// type typ, in id order, until fn returns false. (For types without a
	// search parameter to select by, such as Binary, whose rows are
	// small: its content is in the blob store.)
	ScanType(ctx context.Context, typ string, fn func(*Resource) bool) error
	// ScanReferences calls fn with the id of each live resource of type
	// typ and each reference that its reference index parameter param
	// holds ("Type/id" for a relative one, else the reference as
	// written), in the order the resources were first stored, until fn
	// returns false. No statement stays open while fn runs.
	ScanReferences(ctx context.Context, typ, param string, fn func(id, ref string) bool) error
	// Compartments returns the patients whose compartment holds the
	// current version of typ/id (none for a deleted or unknown resource).
	Compartments(ctx context.Context, typ, id string) ([]string, error)
	// Write runs fn in one write transaction and commits when fn returns nil.
	// When a concurrent writer gets in the way (ErrConflict) fn is run again
	// on a fresh transaction, a few times, so fn must not keep state that a
	// retry would double.
	Write(ctx context.Context, fn func(Tx) error) error
	// GetKV / PutKV keep small server settings such as signing keys.
	GetKV(ctx context.Context, key string) ([]byte, error)
	PutKV(ctx context.Context, key string, value []byte) error
	// InitKV stores value under key unless the key exists, and returns
	// what is stored: the first of several racing writers wins.
	InitKV(ctx context.Context, key string, value []byte) ([]byte, error)
	// Close releases the database.
	Close() error
}

type txKey struct{}

// WithTx returns a context carrying tx. Reads that the store answers with
// such a context - Read, ReadVersion, and the queries of the services built
// on it, among them the search that conditional interactions run - happen
// inside the transaction, on its own connection: they see what it wrote so
// far, and they never wait for a second connection while the transaction
// holds one (with every connection held by a transaction waiting for
// another, the pool would be deadlocked). Code that reads while a
// transaction is open passes this context.
func WithTx(ctx context.Context, tx Tx) context.Context {
	return context.WithValue(ctx, txKey{}, tx)
}

// TxFrom returns the transaction ctx carries (nil when none).
func TxFrom(ctx context.Context) Tx {
	tx, _ := ctx.Value(txKey{}).(Tx)
	return tx
}

// Tx is a write transaction.
type Tx interface {
	// Current returns the latest version of a resource for an update,
	// holding it against concurrent writers until the transaction ends
	// (ErrNotFound if it never existed).
	Current(ctx context.Context, typ, id string) (*Resource, error)
	// Put writes a new version. Its Version must be one more than the
	// current version (1 for a new resource); otherwise ErrConflict.
	// Put sets Seq on p.
	Put(ctx context.Context, p *Put) error
	// PutKV writes a setting inside the transaction.
	PutKV(ctx context.Context, key string, value []byte) error
}

// Reindexer is implemented by transactions that can rewrite the rows
// derived from a resource's current version without writing a version:
// for index parameters added after the version was stored.
type Reindexer interface {
	// Reindex replaces the index and compartment rows of cur, the current
	// version that Current returned in this transaction, with e and
	// patients.
	Reindex(ctx context.Context, cur *Resource, e *index.Entries, patients []string) error
}

// BulkTx is implemented by transactions that can read and write many
// resources per statement. Writers of many resources at once (transaction
// Bundles, imports) use it when the Tx offers it, and Current and Put
// otherwise; the rows written are the same either way.
type BulkTx interface {
	Tx
	// Currents returns the latest versions (tombstones included) of the
	// resources of type typ with the given ids, keyed by id, holding them
	// like Current does; ids that never existed are absent from the map.
	Currents(ctx context.Context, typ string, ids []string) (map[string]*Resource, error)
	// PutNew writes the first versions (Version 1) of resources that do
	// not exist yet, setting Seq on each; one that exists already (or was
	// written earlier in the transaction) fails the call with ErrConflict.
	PutNew(ctx context.Context, puts []*Put) error
}
