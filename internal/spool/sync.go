package spool

import (
	"os"

	"github.com/fieldhub/fieldhub/internal/fsutil"
)

func fdatasync(f *os.File) error { return fsutil.Fdatasync(f) }

// lockDir locks path so that two processes never open the same spool.
func lockDir(path string) (*os.File, error) { return fsutil.Lock(path, 0o600) }
