package spool

import (
	"errors"
	"io"
	"os"
	"slices"
	"syscall"
)

// file is what the spool needs of an open file. *os.File implements it
// except for Sync, which osFile maps to fdatasync; tests wrap it to
// inject faults (see fault_test.go).
type file interface {
	io.ReaderAt
	io.WriterAt
	Truncate(size int64) error
	Sync() error
	Stat() (os.FileInfo, error)
	Close() error
}

// fsys is the file system seam: the real one in production, a
// fault-injecting wrapper in tests (Pebble's vfs/errorfs idea).
type fsys interface {
	OpenFile(name string, flag int, perm os.FileMode) (file, error)
	Remove(name string) error
	// ReadDir returns the names of the regular files in dir, sorted.
	ReadDir(dir string) ([]string, error)
	// SyncDir makes dir's entries (created and removed files) durable.
	SyncDir(dir string) error
	MkdirAll(dir string, perm os.FileMode) error
}

// osFS is the real file system.
type osFS struct{}

type osFile struct{ *os.File }

// Sync flushes the file's data and size (fdatasync where available).
func (f osFile) Sync() error { return fdatasync(f.File) }

func (osFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Remove(name string) error { return os.Remove(name) }

func (osFS) MkdirAll(dir string, perm os.FileMode) error { return os.MkdirAll(dir, perm) }

func (osFS) ReadDir(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.Type().IsRegular() {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out, nil
}

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// isNoSpace reports a full disk or quota.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
