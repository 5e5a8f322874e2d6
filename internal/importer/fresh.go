package importer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// A source imported for the first time has no identity map entries and no
// digests but those its run writes. Such a run keeps the digests it
// records in memory (the identities it resolves are in Run.ids already)
// and looks neither up in the database: for the 92,000 resources of the
// Synthea test data those were two index probes per resource on the
// server, and two round trips per chunk in the preparation of the next.
//
// The run stops relying on it, for good, when another import of the same
// source may have written since it began (one running, or begun after it:
// checked before every chunk), or when its memory would grow past
// maxFresh.

// maxFresh bounds the digests a fresh run keeps (as Run.ids is bounded).
const maxFresh = 200000

// freshState is what a run knows about its source being new.
type freshState struct {
	// on says the database holds no identity map entries or digests of
	// the source but those of this run, all in Run.ids and digests.
	on bool
	// digests are those this run recorded (chunks handed to startWrite),
	// as bytes: a map without pointers, which the garbage collector,
	// running often during an import, need not scan.
	digests map[digestKey]bool
}

// digestKey is a content digest (item.hash, hexadecimal SHA-256) as bytes.
type digestKey [sha256.Size]byte

// keyOf returns the digest key of a hexadecimal digest.
func keyOf(h string) digestKey {
	var k digestKey
	hex.Decode(k[:], []byte(h))
	return k
}

// beginFresh sets r.fresh when nothing of the source is recorded yet.
func (r *Run) beginFresh(ctx context.Context) error {
	var recorded bool
	// (what a patient's runs recorded of their own shared resources is
	// under a key of its own: ownsource.go)
	own := r.patientSource()
	if own == "" {
		own = r.source
	}
	err := r.imp.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM import_identity WHERE source = ? OR source = ?) OR EXISTS (SELECT 1 FROM import_seen WHERE source = ? OR source = ?)`,
		r.source, own, r.source, own).Scan(&recorded)
	if err != nil {
		return fmt.Errorf("check import source: %w", err)
	}
	r.fresh = freshState{on: !recorded, digests: map[digestKey]bool{}}
	return nil
}

// checkFresh ends r.fresh when another batch of the source is running or
// began after this one. Every chunk checks before its lookups: a batch
// that writes identities or digests is visible as running before it does.
func (r *Run) checkFresh(ctx context.Context) error {
	if !r.fresh.on {
		return nil
	}
	var other bool
	err := r.imp.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM import_batch WHERE source = ? AND id <> ? AND (status = 'running' OR id > ?))`,
		r.source, r.sum.Batch, r.sum.Batch).Scan(&other)
	if err != nil {
		return fmt.Errorf("check import source: %w", err)
	}
	if other || len(r.fresh.digests) > maxFresh {
		r.fresh = freshState{}
	}
	return nil
}

// recordedFresh notes the digests a chunk records (its seenRows).
func (r *Run) recordedFresh(seenRows [][]any) {
	if !r.fresh.on {
		return
	}
	for _, row := range seenRows {
		r.fresh.digests[keyOf(row[1].(string))] = true
	}
}
