//go:build !linux

package fsutil

import "os"

// Fdatasync flushes f (fsync where fdatasync is not available).
func Fdatasync(f *os.File) error { return f.Sync() }

// Lock opens the file at path; advisory locking is only implemented on
// Linux.
func Lock(path string, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, perm)
}
