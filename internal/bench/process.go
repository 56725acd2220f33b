package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a broker (fieldhub serve, a baseline broker, Mosquitto)
// running as a child process, so that its CPU time and memory can be read
// apart from the load generator's.
type Process struct {
	// Addr is the host:port the broker listens on.
	Addr string
	// PID is the broker's process id, for IngestConfig.ServerPID.
	PID int

	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	waitErr error         // set before done is closed
	stdout  *os.File      // read end of the stdout pipe
	readers sync.WaitGroup
	output  *tail
	cleanup func()
	stop    sync.Once
	stopErr error
}

// ProcessConfig describes a broker to start with StartProcess.
type ProcessConfig struct {
	// Path and Args are the command.
	Path string
	Args []string
	// Env is added to this process's environment.
	Env []string
	// Addr, when set, is where the process will listen: StartProcess
	// waits until it accepts TCP connections there. When empty, the
	// process must print the address it listens on as the first line of
	// its standard output (as RunBaselineBroker does).
	Addr string
	// StartTimeout bounds the wait for the address; default 10 s.
	StartTimeout time.Duration
	// Logger receives the process's start and stop; nil discards.
	Logger *slog.Logger
}

// StartProcess starts a broker process and waits until it listens. The
// process gets SIGTERM when ctx ends or Stop is called, and SIGKILL 5 s
// later if it has not exited.
func StartProcess(ctx context.Context, pc ProcessConfig) (*Process, error) {
	return startProcess(ctx, pc, nil)
}

func startProcess(ctx context.Context, pc ProcessConfig, cleanup func()) (*Process, error) {
	if pc.StartTimeout <= 0 {
		pc.StartTimeout = 10 * time.Second
	}
	if pc.Logger == nil {
		pc.Logger = slog.New(slog.DiscardHandler)
	}
	if cleanup == nil {
		cleanup = func() {}
	}
	cmd := exec.CommandContext(ctx, pc.Path, pc.Args...)
	cmd.Env = append(os.Environ(), pc.Env...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	p := &Process{cmd: cmd, done: make(chan struct{}), output: &tail{max: 4 << 10}, cleanup: cleanup}
	cmd.Stderr = p.output
	var lines chan string
	if pc.Addr == "" {
		r, w, err := os.Pipe()
		if err != nil {
			cleanup()
			return nil, fmt.Errorf("starting %s: %w", pc.Path, err)
		}
		cmd.Stdout = w
		p.stdout = r
		lines = make(chan string, 1)
		defer w.Close() // the child holds its own copy
	} else {
		cmd.Stdout = p.output
	}
	if err := cmd.Start(); err != nil {
		if p.stdout != nil {
			_ = p.stdout.Close()
		}
		cleanup()
		return nil, fmt.Errorf("starting %s: %w", pc.Path, err)
	}
	p.PID = cmd.Process.Pid
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	if lines != nil {
		// The first line is the address; the rest goes to the tail.
		p.readers.Add(1)
		go func() {
			defer p.readers.Done()
			sc := bufio.NewScanner(p.stdout)
			first := true
			for sc.Scan() {
				if first {
					lines <- strings.TrimSpace(sc.Text())
					first = false
					continue
				}
				_, _ = p.output.Write(append(sc.Bytes(), '\n'))
			}
		}()
	}

	fail := func(err error) (*Process, error) {
		_ = p.Stop()
		if out := strings.TrimSpace(p.output.String()); out != "" {
			err = fmt.Errorf("%w; its output ends with: %s", err, out)
		}
		return nil, err
	}
	deadline := time.NewTimer(pc.StartTimeout)
	defer deadline.Stop()
	if lines != nil {
		select {
		case p.Addr = <-lines:
		case <-p.done:
			return fail(fmt.Errorf("%s exited before printing its address: %v", pc.Path, p.waitErr))
		case <-deadline.C:
			return fail(fmt.Errorf("%s printed no address within %s", pc.Path, pc.StartTimeout))
		case <-ctx.Done():
			return fail(ctx.Err())
		}
		if _, _, err := net.SplitHostPort(p.Addr); err != nil {
			return fail(fmt.Errorf("%s printed %q, not an address: %w", pc.Path, p.Addr, err))
		}
	} else {
		p.Addr = pc.Addr
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err == nil {
			_ = c.Close()
			break
		}
		select {
		case <-tick.C:
		case <-p.done:
			return fail(fmt.Errorf("%s exited: %v", pc.Path, p.waitErr))
		case <-deadline.C:
			return fail(fmt.Errorf("%s not listening on %s within %s: %w", pc.Path, p.Addr, pc.StartTimeout, err))
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
	pc.Logger.Info("broker process started", "path", pc.Path, "pid", p.PID, "addr", p.Addr)
	return p, nil
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM, waits up to 5 s, then kills the process, and removes
// its temporary files. It returns nil when the process exited on its own
// or because of the signal. It is safe to call more than once.
func (p *Process) Stop() error {
	p.stop.Do(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			t := time.NewTimer(5 * time.Second)
			select {
			case <-p.done:
			case <-t.C:
				_ = p.cmd.Process.Kill()
				<-p.done
			}
			t.Stop()
		}
		if p.stdout != nil {
			_ = p.stdout.Close()
		}
		p.readers.Wait()
		p.cleanup()
		var ee *exec.ExitError
		if errors.As(p.waitErr, &ee) && !ee.Exited() {
			return // killed by a signal: what Stop asked for
		}
		p.stopErr = p.waitErr
	})
	return p.stopErr
}

// Output returns the last few KiB the process wrote (stderr, and stdout
// after the address line).
func (p *Process) Output() string { return p.output.String() }

// MosquittoConfig describes a Mosquitto broker for StartMosquitto.
type MosquittoConfig struct {
	// Bin is the mosquitto executable; default "mosquitto" from PATH.
	Bin string
	// Devices, when any has a password, are written to a password file
	// (hashed with mosquitto_passwd) with anonymous access off and an ACL
	// letting each device write under devices/{its id}/; otherwise the
	// broker is anonymous.
	Devices []Device
	// NoDelay sets set_tcp_nodelay (Nagle's algorithm off, as the Go
	// brokers have it).
	NoDelay bool
	// Conf is appended to the configuration file (e.g. queue limits).
	Conf string
	// ACL is appended to the ACL file (e.g. a user block for a hub).
	ACL string
	// Logger receives the process's start and stop; nil discards.
	Logger *slog.Logger
}

// ErrMosquittoNotFound is returned by StartMosquitto when the mosquitto
// executable is missing (apt-get install mosquitto).
var ErrMosquittoNotFound = errors.New("mosquitto not found")

// StartMosquitto starts Mosquitto, in memory (no persistence), on a free
// loopback port with a temporary configuration, for use as a baseline
// with IngestConfig.ServerPID = p.PID. Stop removes the configuration.
func StartMosquitto(ctx context.Context, mc MosquittoConfig) (*Process, error) {
	bin := mc.Bin
	if bin == "" {
		bin = "mosquitto"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMosquittoNotFound, err)
	}
	dir, err := os.MkdirTemp("", "fieldhub-mosquitto-")
	if err != nil {
		return nil, fmt.Errorf("mosquitto: %w", err)
	}
	cleanup := func() { _ = os.RemoveAll(dir) }
	var auth strings.Builder
	if hasPasswords(mc.Devices) {
		if err := writeMosquittoAuth(ctx, dir, path, mc.Devices, mc.ACL); err != nil {
			cleanup()
			return nil, err
		}
		fmt.Fprintf(&auth, "allow_anonymous false\npassword_file %s\nacl_file %s\n",
			filepath.Join(dir, "passwd"), filepath.Join(dir, "acl"))
	} else {
		auth.WriteString("allow_anonymous true\n")
	}
	// The port is found free and then given to mosquitto; another process
	// may take it in between, so a start that fails is retried.
	var lastErr error
	for range 3 {
		addr, err := FreePort()
		if err != nil {
			cleanup()
			return nil, err
		}
		_, port, _ := net.SplitHostPort(addr)
		var conf strings.Builder
		fmt.Fprintf(&conf, "listener %s 127.0.0.1\n", port)
		conf.WriteString(auth.String())
		conf.WriteString("persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n")
		if mc.NoDelay {
			conf.WriteString("set_tcp_nodelay true\n")
		}
		conf.WriteString(mc.Conf)
		if mc.Conf != "" && !strings.HasSuffix(mc.Conf, "\n") {
			conf.WriteString("\n")
		}
		if os.Geteuid() == 0 {
			// As root, mosquitto would switch to the mosquitto user, who
			// cannot read this temporary folder.
			conf.WriteString("user root\n")
		}
		file := filepath.Join(dir, "mosquitto.conf")
		if err := os.WriteFile(file, []byte(conf.String()), 0o600); err != nil {
			cleanup()
			return nil, fmt.Errorf("mosquitto: %w", err)
		}
		p, err := startProcess(ctx, ProcessConfig{Path: path, Args: []string{"-c", file}, Addr: addr, Logger: mc.Logger}, nil)
		if err == nil {
			p.cleanup = cleanup
			return p, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	cleanup()
	return nil, fmt.Errorf("mosquitto: %w", lastErr)
}

func hasPasswords(devs []Device) bool {
	for _, d := range devs {
		if d.Password != "" {
			return true
		}
	}
	return false
}

// writeMosquittoAuth writes dir/passwd (hashed in place by
// mosquitto_passwd -U, found beside the mosquitto binary or on PATH) and
// dir/acl.
func writeMosquittoAuth(ctx context.Context, dir, mosquittoPath string, devs []Device, extraACL string) error {
	var pw, acl strings.Builder
	byUser := true
	for _, d := range devs {
		if d.Username == "" || d.Password == "" {
			continue
		}
		if strings.ContainsAny(d.Username, ":\n") || strings.Contains(d.Password, "\n") {
			return fmt.Errorf("mosquitto: device %s: user name or password unusable in a password file", d.ID)
		}
		fmt.Fprintf(&pw, "%s:%s\n", d.Username, d.Password)
		byUser = byUser && d.Username == d.ID
	}
	if byUser {
		acl.WriteString("pattern write devices/%u/#\npattern read devices/%u/#\n")
	} else {
		acl.WriteString("pattern write devices/%c/#\npattern read devices/%c/#\n")
	}
	acl.WriteString(extraACL)
	pwFile := filepath.Join(dir, "passwd")
	if err := os.WriteFile(pwFile, []byte(pw.String()), 0o600); err != nil {
		return fmt.Errorf("mosquitto: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "acl"), []byte(acl.String()), 0o600); err != nil {
		return fmt.Errorf("mosquitto: %w", err)
	}
	tool := filepath.Join(filepath.Dir(mosquittoPath), "mosquitto_passwd")
	if _, err := os.Stat(tool); err != nil {
		if tool, err = exec.LookPath("mosquitto_passwd"); err != nil {
			return fmt.Errorf("mosquitto: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, tool, "-U", pwFile).CombinedOutput(); err != nil {
		return fmt.Errorf("mosquitto: hashing passwords: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// FreePort returns a loopback address with a port that was free a moment
// ago, for a server process that needs a concrete port. The port is taken
// below the kernel's ephemeral range when there is room: a port from that
// range can be given to an outgoing connection as its source port before
// the server binds it ("address already in use"). Ports handed out are not
// handed out again by this process.
func FreePort() (string, error) {
	freePorts.Lock()
	defer freePorts.Unlock()
	if lo := ephemeralLow(); lo > 11000 {
		for range 200 {
			port := 10000 + rand.IntN(lo-10000)
			if freePorts.given[port] {
				continue
			}
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				continue
			}
			addr := ln.Addr().String()
			if err := ln.Close(); err != nil {
				return "", fmt.Errorf("finding a free port: %w", err)
			}
			freePorts.given[port] = true
			return addr, nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	return addr, nil
}

var freePorts = struct {
	sync.Mutex
	given map[int]bool
}{given: map[int]bool{}}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux),
// or 0 when unknown.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	lo, _ := strconv.Atoi(f[0])
	return lo
}

// tail is an io.Writer that keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
