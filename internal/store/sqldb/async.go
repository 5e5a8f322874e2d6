package sqldb

import (
	"context"
	"fmt"
)

// AsyncCommit makes the transaction's commit return without waiting for
// its write-ahead log to reach disk (PostgreSQL's synchronous_commit = off,
// for this transaction only; SQLite, which syncs its WAL at checkpoints
// only, is left as it is). Call it before the transaction writes.
//
// The transaction stays atomic and consistent, and the rows it wrote are
// visible to others as soon as it commits; what a crash of the database
// server or its machine (not of phr) can lose is the transactions that
// committed in the last moments before it - up to three times
// wal_writer_delay, 600 ms by default. The next synchronous commit on the
// server makes every earlier one durable too. Use it only for work that
// is redone when lost: the importer's chunks, whose batch is marked
// finished by an ordinary commit, and which a re-run re-imports without
// duplicates.
func (t *Tx) AsyncCommit(ctx context.Context) error {
	if t.db.dialect != Postgres {
		return nil
	}
	if _, err := t.tx.ExecContext(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
		return fmt.Errorf("asynchronous commit: %w", err)
	}
	return nil
}
