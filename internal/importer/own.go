package importer

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"

	"github.com/phr-project/phr/internal/fhir"
	"github.com/phr-project/phr/internal/store"
	"github.com/phr-project/phr/internal/store/sqldb"
)

// recogniseOwn finds, among items no identity map resolves, the versions
// of this very record read back: the record's own export imported again,
// under whatever source. Such an item has the id of a local resource and
// a meta.versionId and meta.lastUpdated that one of its versions has; it
// is that resource, not a newcomer to match by identifier or to rename (a
// rename would also take it out of its patient's compartment). ownSame
// is set when the content is that version's too. Items resolved already
// are checked only when an earlier version of theirs was recognised in
// this run (Run.own) and they kept its id: the later versions of a
// history Bundle of this record.
func (r *Run) recogniseOwn(ctx context.Context, items []*item) error {
	candidate := func(it *item) bool {
		if it.sid == "" || it.srcVer == "" || it.srcUpd == "" || it.del {
			return false
		}
		return it.localID == "" || it.localID == it.sid && r.own[it.key()]
	}
	byType := map[string][]string{}
	for _, it := range items {
		if candidate(it) {
			byType[it.typ] = append(byType[it.typ], it.sid)
		}
	}
	if len(byType) == 0 {
		return nil
	}
	versions := map[string]*store.Resource{} // "Type/id/version"
	for typ, ids := range byType {
		err := r.imp.forChunks(ctx, ids, versionsLookup.with(typ), func(rows *sql.Rows) error {
			res := &store.Resource{Type: typ}
			var lu int64
			var blob sql.NullString
			if err := rows.Scan(&res.ID, &res.Version, &lu, &res.Deleted, &res.JSON, &blob); err != nil {
				return err
			}
			res.LastUpdated = sqldb.FromMicros(lu)
			res.Blob = blob.String
			versions[typ+"/"+res.ID+"/"+strconv.FormatInt(res.Version, 10)] = res
			return nil
		})
		if err != nil {
			return fmt.Errorf("read versions: %w", err)
		}
	}
	for _, it := range items {
		if !candidate(it) {
			continue
		}
		v, ok := versions[it.key()+"/"+it.srcVer]
		if !ok || v.Deleted {
			continue
		}
		at, err := fhir.ParseInstant(it.srcUpd)
		if err != nil || !at.Equal(v.LastUpdated) {
			continue
		}
		// A patient-scoped run recognises only what its token may read:
		// another record's resource is not this record's own, and the
		// answer must not tell that its version exists. (Other runs
		// recognise everything: a patient's own copy of reference data
		// that comes back is theirs still, which mayMatch would refuse.)
		if r.confined() {
			if ok, err := r.mayMatch(ctx, it.typ, it.sid); err != nil {
				return err
			} else if !ok {
				continue
			}
		}
		it.localID = it.sid
		it.ownVersion = v.Version
		it.ownSame = sameContent(it.tree, v)
		r.own[it.key()] = true
	}
	return nil
}

// versionsLookup reads every version of resources of a type: OFFSET 0
// keeps the PostgreSQL subquery lateral (see lookup).
var versionsLookup = lookup{
	sqlite: `SELECT r.id, v.version, v.last_updated, v.deleted, v.json, v.blob
		FROM resource r JOIN resource_version v ON v.rid = r.rid WHERE r.type = ? AND r.id %s`,
	postgres: `SELECT c.* FROM unnest(?::text[]) AS q(id)
		CROSS JOIN LATERAL (SELECT r.id, v.version, v.last_updated, v.deleted, v.json, v.blob
			FROM resource r JOIN resource_version v ON v.rid = r.rid WHERE r.type = ? AND r.id = q.id OFFSET 0) c`,
}
