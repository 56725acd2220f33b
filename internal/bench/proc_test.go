package bench

import (
	"os"
	"syscall"
	"testing"
	"time"
)

func TestProcCPUAndRSS(t *testing.T) {
	pid := os.Getpid()
	before, err := ProcCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	// Spin until the kernel has charged 50 ms more, then compare with
	// getrusage, which counts the same user and system time.
	deadline := time.Now().Add(10 * time.Second)
	after := before
	for after-before < 50*time.Millisecond && time.Now().Before(deadline) {
		for end := time.Now().Add(5 * time.Millisecond); time.Now().Before(end); {
		}
		if after, err = ProcCPU(pid); err != nil {
			t.Fatal(err)
		}
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	rusage := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if after-before < 50*time.Millisecond {
		t.Errorf("ProcCPU did not advance 50 ms in 10 s of spinning: %v → %v", before, after)
	}
	if d := rusage - after; d < -20*time.Millisecond || d > 100*time.Millisecond {
		t.Errorf("ProcCPU = %v, getrusage = %v; want within a few ticks", after, rusage)
	}
	rss, err := ProcRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	if rss < 1<<20 || rss > 1<<34 {
		t.Errorf("ProcRSS = %d; want a plausible size", rss)
	}
	if _, err := ProcCPU(1 << 30); err == nil {
		t.Error("ProcCPU(no such pid): want an error")
	}
}
