// Package postgres opens the PostgreSQL store (pgx through database/sql).
// Several phr servers may share one database: writers lock the rows they
// update (SELECT ... FOR UPDATE) and retry on unique or serialisation
// failures, and migrations take an advisory lock.
package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/phr-project/phr/internal/store/sqldb"
)

// Open connects to the database at url (postgres://...) and applies the
// migrations (plus those in extra).
func Open(ctx context.Context, url string, extra ...fs.FS) (*sqldb.DB, error) {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(32)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	s := sqldb.New(sqldb.Options{Dialect: sqldb.Postgres, Write: db, Read: db, IsConflict: isConflict,
		// search builds its SQL per request: run it as unnamed statements
		DynamicArg: pgx.QueryExecModeExec})
	if err := s.Migrate(ctx, extra...); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// isConflict reports unique violations, serialisation failures and
// deadlocks, which a retry of the transaction may resolve.
func isConflict(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23505", "40001", "40P01":
			return true
		}
	}
	return false
}
