//go:build !linux

package spool

import "os"

// fdatasync flushes a file (fsync where fdatasync is not available).
func fdatasync(f *os.File) error { return f.Sync() }

// lockDir opens the lock file; advisory locking is only implemented on
// Linux.
func lockDir(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}
