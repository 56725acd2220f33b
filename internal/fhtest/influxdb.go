package fhtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/bench"
)

// InfluxServer is an InfluxDB 1.x server (Debian's influxd) started in a
// temporary folder, its HTTP API on a loopback port. Only the HTTP API
// runs; the RPC service binds another loopback port, and reporting, UDP,
// Graphite, collectd, OpenTSDB, monitoring and continuous queries are off.
type InfluxServer struct {
	Dir  string // config, meta, data, wal and log
	Addr string // host:port of the HTTP API

	bin  string
	conf string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// URL returns the base URL of the HTTP API, e.g. http://127.0.0.1:40123.
func (s *InfluxServer) URL() string { return "http://" + s.Addr }

const influxConf = `reporting-disabled = true
bind-address = %q

[meta]
  dir = %q
  retention-autocreate = true
  logging-enabled = false

[data]
  dir = %q
  wal-dir = %q
  index-version = "inmem"
  query-log-enabled = false
  trace-logging-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[http]
  enabled = true
  bind-address = %q
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false
  unix-socket-enabled = false

[logging]
  level = "warn"
  suppress-logo = true
`

// StartInfluxDB starts influxd on free loopback ports with a fresh data
// folder and waits until /ping answers. Stop it with Stop. Without
// influxd installed the error wraps ErrNotInstalled.
func StartInfluxDB(ctx context.Context) (*InfluxServer, error) {
	bin, err := exec.LookPath("influxd")
	if err != nil {
		return nil, fmt.Errorf("influxd: %w (apt-get install influxdb)", ErrNotInstalled)
	}
	dir, err := os.MkdirTemp("", "fieldhub-influxdb-")
	if err != nil {
		return nil, err
	}
	s := &InfluxServer{Dir: dir, bin: bin, conf: filepath.Join(dir, "influxdb.conf")}
	var lastErr error
	for range 3 {
		httpAddr, err1 := bench.FreePort()
		rpcAddr, err2 := bench.FreePort()
		if err := errors.Join(err1, err2); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		conf := fmt.Sprintf(influxConf, rpcAddr, filepath.Join(dir, "meta"),
			filepath.Join(dir, "data"), filepath.Join(dir, "wal"), httpAddr)
		if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s.Addr = httpAddr
		if lastErr = s.Resume(ctx); lastErr == nil {
			return s, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

// Resume starts the server process again after Halt, on the same ports
// and with the same data, and waits for /ping. StartInfluxDB uses it for
// the first start.
func (s *InfluxServer) Resume(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("influxd: already running")
	}
	logf, err := os.OpenFile(filepath.Join(s.Dir, "influxd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(s.bin, "-config", s.conf)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting influxd: %w", err)
	}
	done := make(chan struct{})
	go func() { // owned by s: ends when the process does, which Halt waits for
		cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	if err := waitPing(ctx, s.URL(), done); err != nil {
		s.haltLocked()
		log, _ := os.ReadFile(filepath.Join(s.Dir, "influxd.log"))
		return fmt.Errorf("influxd on %s: %w\n%s", s.Addr, err, log)
	}
	return nil
}

// waitPing polls url/ping until it answers 204, the process exits or ctx
// ends.
func waitPing(ctx context.Context, base string, exited <-chan struct{}) error {
	c := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/ping", nil)
		if err != nil {
			return err
		}
		if resp, err := c.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("exited before answering /ping")
		case <-ctx.Done():
			return fmt.Errorf("waiting for /ping: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// Halt stops the server process (SIGTERM, then SIGKILL after 10 s) and
// waits for it, keeping its folder and ports for Resume. Halting a halted
// server does nothing.
func (s *InfluxServer) Halt() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.haltLocked()
}

func (s *InfluxServer) haltLocked() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd, s.done = nil, nil
}

// Stop halts the server and removes its folder.
func (s *InfluxServer) Stop() error {
	s.Halt()
	return os.RemoveAll(s.Dir)
}

// Query runs an InfluxQL statement through GET (or POST for statements
// that change something) /query against database db and returns the JSON
// response body, with times as nanoseconds since the epoch. A status
// other than 200 is an error carrying the body.
func (s *InfluxServer) Query(ctx context.Context, db, q string) ([]byte, error) {
	v := url.Values{"q": {q}, "epoch": {"ns"}}
	if db != "" {
		v.Set("db", db)
	}
	method := http.MethodGet
	upper := strings.ToUpper(strings.TrimSpace(q))
	if !strings.HasPrefix(upper, "SELECT") && !strings.HasPrefix(upper, "SHOW") {
		method = http.MethodPost
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL()+"/query?"+v.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("influxdb query: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("influxdb query: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("influxdb query: %s: %s", resp.Status, body)
	}
	return body, nil
}

var (
	influxOnce   sync.Once
	influxServer *InfluxServer
	influxErr    error
)

// InfluxDB returns an InfluxDB 1.x server shared by the test process
// (started on first use; the package's TestMain must call Main so that it
// is stopped). Tests share it: each should use its own database. Without
// influxd installed the test is skipped, or fails when the CI variable is
// set.
func InfluxDB(t testing.TB) *InfluxServer {
	t.Helper()
	influxOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		influxServer, influxErr = StartInfluxDB(ctx)
		if influxErr == nil {
			AtExit(func() { influxServer.Stop() })
		}
	})
	if influxErr != nil {
		Unavailable(t, influxErr)
	}
	return influxServer
}
