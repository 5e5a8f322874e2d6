// Package storetest is the conformance suite every store implementation
// passes, and the helpers tests elsewhere use to get a fresh store: a SQLite
// file in a temporary directory, or a new PostgreSQL database when
// PHR_TEST_POSTGRES_URL names a server.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver for creating test databases

	"github.com/phr-project/phr/internal/store/postgres"
	"github.com/phr-project/phr/internal/store/sqldb"
	"github.com/phr-project/phr/internal/store/sqlite"
)

// PostgresEnv names the environment variable that points tests at a
// PostgreSQL server (any database on it; tests create their own).
const PostgresEnv = "PHR_TEST_POSTGRES_URL"

// Dialects returns the dialects to test: always "sqlite", plus "postgres"
// when PHR_TEST_POSTGRES_URL is set.
func Dialects() []string {
	if os.Getenv(PostgresEnv) != "" {
		return []string{"sqlite", "postgres"}
	}
	return []string{"sqlite"}
}

// NewPostgresURL creates an empty database on the server named by
// PHR_TEST_POSTGRES_URL, drops it when the test ends, and returns its URL.
// The test is skipped when the variable is not set.
func NewPostgresURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(PostgresEnv)
	if base == "" {
		t.Skip(PostgresEnv + " not set; skipping PostgreSQL")
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("open %s: %v", PostgresEnv, err)
	}
	defer admin.Close()
	var b [6]byte
	rand.Read(b[:])
	name := "phr_test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		a, err := sql.Open("pgx", base)
		if err != nil {
			return
		}
		defer a.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		a.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse %s: %v", PostgresEnv, err)
	}
	u.Path = "/" + name
	return u.String()
}

// Open returns a fresh, migrated store of the dialect ("sqlite" or
// "postgres"), closed when the test ends.
func Open(t testing.TB, dialect string, extra ...fs.FS) *sqldb.DB {
	t.Helper()
	ctx := context.Background()
	var (
		db  *sqldb.DB
		err error
	)
	switch dialect {
	case "postgres":
		db, err = postgres.Open(ctx, NewPostgresURL(t), extra...)
	default:
		db, err = sqlite.Open(ctx, filepath.Join(t.TempDir(), "phr.db"), extra...)
	}
	if err != nil {
		t.Fatalf("open %s store: %v", dialect, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
