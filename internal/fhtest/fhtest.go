// Package fhtest holds helpers shared by fieldhub's integration tests:
// building the fieldhub binary once, free loopback ports, and polling for
// a condition with a deadline.
package fhtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/bench"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/fieldhub once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fieldhub-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "fieldhub")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/fieldhub/fieldhub/cmd/fieldhub").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// FreePort returns a loopback address with a port free a moment ago.
func FreePort(t testing.TB) string {
	t.Helper()
	addr, err := bench.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// Eventually polls cond every 20 ms until it holds, failing the test
// after d with what it was waiting for.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
