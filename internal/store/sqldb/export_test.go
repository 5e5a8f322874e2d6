package sqldb

import "context"

// MigrateBefore applies the embedded migrations named before stop: tests
// build a store of an older schema with it.
func (db *DB) MigrateBefore(ctx context.Context, stop string) error {
	return db.migrate(ctx, stop)
}

// HasRows reports whether PrepareNew built the batch's rows (SQLite).
func (b *NewBatch) HasRows() bool { return b.rows != nil }
