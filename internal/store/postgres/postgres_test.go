package postgres_test

import (
	"testing"

	"github.com/phr-project/phr/internal/store/sqldb"
	"github.com/phr-project/phr/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) *sqldb.DB { return storetest.Open(t, "postgres") })
}
