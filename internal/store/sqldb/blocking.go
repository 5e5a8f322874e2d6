package sqldb

import (
	"context"
	"fmt"
)

// Transactions that wait for one another in this process, not in the
// database, are invisible to PostgreSQL's deadlock detector: if the one
// waited for waits in the server for a row the waiting one wrote, neither
// ever ends. HoldKey and AwaitKey move such a wait into the server, as an
// advisory lock, where the detector sees it and breaks a cycle by failing
// one transaction (SQLSTATE 40P01, reported as store.ErrConflict).

// HoldKey takes the transaction-level advisory lock key, which the
// transaction keeps until it ends (PostgreSQL; nothing on SQLite, whose
// one writer runs one transaction at a time). Take it before writing.
func (t *Tx) HoldKey(ctx context.Context, key int64) error {
	if t.db.dialect != Postgres {
		return nil
	}
	if _, err := t.tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, key); err != nil {
		return fmt.Errorf("advisory lock: %w", err)
	}
	return nil
}

// AwaitKey waits until no transaction holds the advisory lock key (see
// HoldKey), and does not keep it (PostgreSQL; nothing on SQLite).
func (t *Tx) AwaitKey(ctx context.Context, key int64) error {
	if t.db.dialect != Postgres {
		return nil
	}
	if _, err := t.tx.ExecContext(ctx, `SELECT pg_advisory_lock_shared($1)`, key); err != nil {
		return fmt.Errorf("wait for advisory lock: %w", err)
	}
	if _, err := t.tx.ExecContext(ctx, `SELECT pg_advisory_unlock_shared($1)`, key); err != nil {
		return fmt.Errorf("release advisory lock: %w", err)
	}
	return nil
}
