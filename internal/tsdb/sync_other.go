//go:build !linux

package tsdb

import "os"

// fdatasync flushes a segment (fsync where fdatasync is not available).
func fdatasync(f segFile) error { return f.Sync() }

// lockDir opens the lock file; advisory locking is only implemented on
// Linux.
func lockDir(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
}
