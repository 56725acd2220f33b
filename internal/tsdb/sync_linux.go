package tsdb

import (
	"os"
	"syscall"
)

// fdatasync flushes a segment's data (and its size) without its mtime.
func fdatasync(f segFile) error {
	if osf, ok := f.(*os.File); ok {
		for {
			err := syscall.Fdatasync(int(osf.Fd()))
			if err != syscall.EINTR {
				return err
			}
		}
	}
	return f.Sync()
}

// lockDir takes an exclusive advisory lock on path so that two processes
// never open the same store.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
