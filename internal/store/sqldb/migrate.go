package sqldb

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strings"
)

//go:embed migrations
var migrations embed.FS

// Migrate applies the embedded schema migrations not yet applied, in file
// name order, each in its own transaction. Extensions may pass extra file
// systems laid out like migrations/<dialect>/NNNN_name.sql; migration names
// must be unique across all of them.
func (db *DB) Migrate(ctx context.Context, extra ...fs.FS) error {
	return db.migrate(ctx, "", extra...)
}

// migrate applies the migrations named before stop ("": all of them, then
// loads the search parameter registry).
func (db *DB) migrate(ctx context.Context, stop string, extra ...fs.FS) error {
	if _, err := db.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migration (name TEXT PRIMARY KEY)`); err != nil {
		return fmt.Errorf("create migration table: %w", err)
	}
	type mig struct {
		name string
		fsys fs.FS
		file string
	}
	var all []mig
	for _, fsys := range append([]fs.FS{migrations}, extra...) {
		dir := path.Join("migrations", db.dialect.String())
		entries, err := fs.ReadDir(fsys, dir)
		if err != nil {
			return fmt.Errorf("read migrations: %w", err)
		}
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".sql") {
				all = append(all, mig{strings.TrimSuffix(e.Name(), ".sql"), fsys, path.Join(dir, e.Name())})
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].name < all[j].name })
	if db.dialect == SQLite {
		db.wmu.Lock()
		defer db.wmu.Unlock()
	}
	for _, m := range all {
		if stop != "" && m.name >= stop {
			return nil
		}
		if err := db.applyMigration(ctx, m.name, m.fsys, m.file); err != nil {
			return err
		}
	}
	return db.loadParams(ctx)
}

func (db *DB) applyMigration(ctx context.Context, name string, fsys fs.FS, file string) error {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migration %s: %w", name, err)
	}
	defer tx.Rollback()
	if db.dialect == Postgres {
		// Replicas starting together must not apply the same migration twice.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(727274)`); err != nil {
			return fmt.Errorf("migration lock: %w", err)
		}
	}
	var n int
	if err := tx.QueryRowContext(ctx, db.Rebind(`SELECT COUNT(*) FROM schema_migration WHERE name = ?`), name).Scan(&n); err != nil {
		return fmt.Errorf("migration %s: %w", name, err)
	}
	if n > 0 {
		return nil
	}
	sqlText, err := fs.ReadFile(fsys, file)
	if err != nil {
		return fmt.Errorf("migration %s: %w", name, err)
	}
	if _, err := tx.ExecContext(ctx, string(sqlText)); err != nil {
		return fmt.Errorf("migration %s: %w", name, err)
	}
	if _, err := tx.ExecContext(ctx, db.Rebind(`INSERT INTO schema_migration (name) VALUES (?)`), name); err != nil {
		return fmt.Errorf("migration %s: %w", name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migration %s: %w", name, err)
	}
	slog.Debug("applied migration", "name", name, "dialect", db.dialect.String())
	return nil
}
