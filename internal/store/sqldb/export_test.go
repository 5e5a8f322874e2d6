package sqldb

import "context"

// MigrateBefore applies the embedded migrations named before stop: tests
// build a store of an older schema with it.
func (db *DB) MigrateBefore(ctx context.Context, stop string) error {
	return db.migrate(ctx, stop)
}
