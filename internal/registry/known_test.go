package registry_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/fieldhub/fieldhub/internal/pki"
	"github.com/fieldhub/fieldhub/internal/registry"
	"github.com/fieldhub/fieldhub/internal/store/sqlite"
)

// TestKnown: an id is known once created through the service and unknown
// again once deleted, without waiting for the cache.
func TestKnown(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ca, err := pki.Open(ctx, db, make([]byte, pki.SealKeySize), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := registry.New(db, ca, registry.Options{})
	if s.Known(ctx, "k-1") {
		t.Fatal("k-1 known before it was created")
	}
	if _, _, err := s.Create(ctx, registry.CreateRequest{ID: "k-1", Auth: "password"}); err != nil {
		t.Fatal(err)
	}
	if !s.Known(ctx, "k-1") {
		t.Fatal("k-1 unknown after it was created (a stale negative answer)")
	}
	if err := s.Delete(ctx, "k-1"); err != nil {
		t.Fatal(err)
	}
	if s.Known(ctx, "k-1") {
		t.Fatal("k-1 known after it was deleted (a stale positive answer)")
	}
}
