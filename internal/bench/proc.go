package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat. The kernel
// exports them in USER_HZ, which is 100 on every architecture Go supports on
// Linux (it is fixed for the user ABI, unlike the kernel's CONFIG_HZ), so
// it is a constant here rather than a call to sysconf(_SC_CLK_TCK) or
// getconf CLK_TCK. Readings therefore have a 10 ms resolution: measure
// windows of seconds.
const userHZ = 100

// ProcCPU returns the CPU time (user + system) that process pid has used
// so far, from /proc/<pid>/stat. It works on Linux only.
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("reading cpu time of pid %d: %w", pid, err)
	}
	// The command name (field 2) is in parentheses and may hold spaces or
	// parentheses itself: fields are counted after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("reading cpu time of pid %d: unexpected /proc stat format", pid)
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("reading cpu time of pid %d: short /proc stat line", pid)
	}
	utime, err := strconv.ParseInt(string(f[11]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("reading cpu time of pid %d: utime: %w", pid, err)
	}
	stime, err := strconv.ParseInt(string(f[12]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("reading cpu time of pid %d: stime: %w", pid, err)
	}
	return time.Duration(utime+stime) * (time.Second / userHZ), nil
}

// ProcRSS returns the resident set size of process pid in bytes, from the
// VmRSS line of /proc/<pid>/status. It works on Linux only.
func ProcRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("reading rss of pid %d: %w", pid, err)
	}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest) // "12345", "kB"
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("reading rss of pid %d: unexpected VmRSS line %q", pid, line)
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("reading rss of pid %d: %w", pid, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("reading rss of pid %d: no VmRSS line (a kernel thread or zombie?)", pid)
}
