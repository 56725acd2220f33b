package fhtest

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"testing"

	"github.com/fieldhub/fieldhub/internal/pki"
	"github.com/fieldhub/fieldhub/internal/store/sqlite"
)

// CA opens an embedded (SQLite) store in a temporary folder, closed when
// the test ends, and the certificate authority kept in it under a random
// seal key: what a registry.Service needs.
func CA(t testing.TB) (*sqlite.DB, *pki.CA) {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key := make([]byte, pki.SealKeySize)
	rand.Read(key)
	ca, err := pki.Open(context.Background(), db, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return db, ca
}
