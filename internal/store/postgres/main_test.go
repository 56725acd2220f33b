package postgres

import (
	"testing"

	"github.com/fieldhub/fieldhub/internal/fhtest"
)

// TestMain stops the PostgreSQL server the tests share (fhtest.Postgres).
func TestMain(m *testing.M) { fhtest.Main(m) }
