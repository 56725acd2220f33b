package fsutil

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestLockIsExclusive(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("advisory locks are Linux-only")
	}
	path := filepath.Join(t.TempDir(), "LOCK")
	f, err := Lock(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if g, err := Lock(path, 0o600); err == nil {
		g.Close()
		t.Fatal("second Lock of a held lock succeeded")
	}
	f.Close()
	g, err := Lock(path, 0o600)
	if err != nil {
		t.Fatalf("Lock after release = %v", err)
	}
	g.Close()
}

func TestFdatasync(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("durable")
	if err := Fdatasync(f); err != nil {
		t.Fatal(err)
	}
}
