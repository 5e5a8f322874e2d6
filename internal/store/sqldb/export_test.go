package sqldb

import "context"

// MigrateBefore applies the embedded migrations named before stop: tests
// build a store of an older schema with it.
func (db *DB) MigrateBefore(ctx context.Context, stop string) error {
	return db.migrate(ctx, stop)
}

// Built reports whether PrepareNew built the rows of a SQLite batch.
func (b *NewBatch) Built() bool { return b.lite != nil }
