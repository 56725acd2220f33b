package fhtest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/bench"
)

// ErrNotInstalled is returned when a server program the tests need is
// missing from the machine.
var ErrNotInstalled = bench.ErrNotInstalled

var (
	pgOnce   sync.Once
	pgServer *bench.PostgresServer
	pgErr    error
	pgDBs    atomic.Int64
	stopMu   sync.Mutex
	stoppers []func()
)

// Postgres returns the URL of a new, empty database on a PostgreSQL
// server shared by the test process (started on first use; the package's
// TestMain must call Main so that it is stopped). Without PostgreSQL
// installed the test is skipped, or fails when the CI variable is set.
func Postgres(t testing.TB) string {
	t.Helper()
	pgOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		pgServer, pgErr = bench.StartPostgres(ctx)
		if pgErr == nil {
			AtExit(func() { pgServer.Stop() })
		}
	})
	if pgErr != nil {
		Unavailable(t, pgErr)
	}
	name := fmt.Sprintf("t%d_%d", os.Getpid(), pgDBs.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url, err := pgServer.CreateDatabase(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return url
}

// Unavailable skips t because a server it needs cannot be had, or fails
// it when the CI environment variable is set (CI must run every test).
func Unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set and a server the test needs is unavailable: %v", err)
	}
	t.Skipf("skipped: %v", err)
}

// AtExit registers f to run when Main returns (servers shared by a test
// process are stopped this way).
func AtExit(f func()) {
	stopMu.Lock()
	defer stopMu.Unlock()
	stoppers = append(stoppers, f)
}

// Main runs the tests and then stops the servers started for them. Call
// it from TestMain in packages that use Postgres or other shared servers.
func Main(m *testing.M) {
	code := m.Run()
	stopMu.Lock()
	fs := stoppers
	stoppers = nil
	stopMu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
	os.Exit(code)
}
