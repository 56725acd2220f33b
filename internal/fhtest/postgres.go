package fhtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ErrNotInstalled is returned when a server program the tests need is
// missing from the machine.
var ErrNotInstalled = errors.New("not installed")

// PostgresServer is a PostgreSQL cluster started from Debian's binaries
// in a temporary folder, listening on a loopback port.
type PostgresServer struct {
	Dir  string // data and socket folder
	Port int
	bin  string // folder of initdb, pg_ctl, postgres
	asPG bool   // run the binaries as the postgres user (we are root)
}

// URL returns a connection string for database db as the superuser
// "postgres" over TCP.
func (s *PostgresServer) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

func postgresBin() (string, error) {
	if p, err := exec.LookPath("pg_config"); err == nil {
		if out, err := exec.Command(p, "--bindir").Output(); err == nil {
			dir := strings.TrimSpace(string(out))
			if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
				return dir, nil
			}
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(matches) == 0 {
		return "", fmt.Errorf("postgresql: %w (apt-get install postgresql)", ErrNotInstalled)
	}
	return filepath.Dir(matches[len(matches)-1]), nil
}

// StartPostgres creates a cluster with initdb and starts it on a free
// loopback port with settings for tests (fsync stays on: durability is
// what the tests check). Stop it with Stop.
func StartPostgres(ctx context.Context) (*PostgresServer, error) {
	bin, err := postgresBin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "fieldhub-pg-")
	if err != nil {
		return nil, err
	}
	s := &PostgresServer{Dir: dir, bin: bin, asPG: os.Geteuid() == 0}
	if s.asPG {
		// initdb refuses to run as root: the cluster belongs to postgres.
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("postgresql: running as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := s.run(ctx, "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	var lastErr error
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s.Port = l.Addr().(*net.TCPAddr).Port
		l.Close()
		opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -c port=%d -c unix_socket_directories=%s -c max_connections=200 -c shared_buffers=128MB -c synchronous_commit=on -c full_page_writes=off -c max_wal_size=1GB -c log_min_messages=warning", s.Port, dir)
		out, err := s.run(ctx, "pg_ctl", "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "start")
		if err == nil {
			return s, nil
		}
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		lastErr = fmt.Errorf("pg_ctl start: %w\n%s\n%s", err, out, log)
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

func (s *PostgresServer) run(ctx context.Context, prog string, args ...string) ([]byte, error) {
	path := filepath.Join(s.bin, prog)
	var cmd *exec.Cmd
	if s.asPG {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = s.Dir
	return cmd.CombinedOutput()
}

// Stop stops the server at once and removes its folder.
func (s *PostgresServer) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := s.run(ctx, "pg_ctl", "-D", filepath.Join(s.Dir, "data"), "-m", "immediate", "-w", "stop")
	os.RemoveAll(s.Dir)
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %w\n%s", err, out)
	}
	return nil
}

var (
	pgOnce   sync.Once
	pgServer *PostgresServer
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
		pgServer, pgErr = StartPostgres(ctx)
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
	psql := filepath.Join(pgServer.bin, "psql")
	if _, err := os.Stat(psql); err != nil {
		psql = "psql"
	}
	out, err := exec.CommandContext(ctx, psql, "-h", "127.0.0.1", "-p", strconv.Itoa(pgServer.Port), "-U", "postgres",
		"-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", "CREATE DATABASE "+name).CombinedOutput()
	if err != nil {
		t.Fatalf("creating database %s: %v\n%s", name, err, out)
	}
	return pgServer.URL(name)
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
