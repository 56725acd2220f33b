//go:build unix

package cli

import (
	"fmt"
	"syscall"
)

// checkDescriptors refuses a fleet bigger than the process's descriptor
// limit allows: every device holds a connection.
func checkDescriptors(devices int) error {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return nil // not knowable here; the dials will say
	}
	const reserve = 64 // the API client, logs, the runtime
	if uint64(devices)+reserve > rl.Cur {
		return usageError{fmt.Errorf("--devices %d: every device holds a connection, and this process may open %d descriptors (ulimit -n); "+
			"run several sim processes with --first to split the fleet, or raise the limit", devices, rl.Cur)}
	}
	return nil
}
