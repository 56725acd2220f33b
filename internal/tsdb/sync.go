package tsdb

import (
	"os"

	"github.com/fieldhub/fieldhub/internal/fsutil"
)

// fdatasync flushes a segment's data and size; segments other than real
// files (fault injection in tests) are synced as they can.
func fdatasync(f segFile) error {
	if osf, ok := f.(*os.File); ok {
		return fsutil.Fdatasync(osf)
	}
	return f.Sync()
}

// lockDir locks path so that two processes never open the same store.
func lockDir(path string) (*os.File, error) { return fsutil.Lock(path, 0o644) }
