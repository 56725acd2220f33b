package fhtest

import (
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// Serve is `fieldhub serve` in a child process, for tests that kill it.
type Serve struct {
	HTTPAddr string   // its http_addr, polled on /readyz
	Args     []string // after "serve"
	Env      []string // added to this process's environment

	cmd  *exec.Cmd
	out  Buffer
	done chan struct{}
}

// Write collects the process's output (stdout and stderr).
func (p *Serve) Write(b []byte) (int, error) { return p.out.Write(b) }

// Output returns what the process has written so far.
func (p *Serve) Output() string { return p.out.String() }

// Start starts the process (the binary from Binary) without waiting for
// it; it is killed at the end of the test if still running. Start again
// after Kill restarts it with the same arguments.
func (p *Serve) Start(t testing.TB) {
	t.Helper()
	p.cmd = exec.Command(Binary(t), append([]string{"serve"}, p.Args...)...)
	p.cmd.Env = append(os.Environ(), p.Env...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	done := make(chan struct{})
	p.done = done
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd := p.cmd
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(p.Kill)
}

// WaitReady waits up to a minute until /readyz answers 200, failing t if
// the process exits first.
func (p *Serve) WaitReady(t testing.TB) {
	t.Helper()
	done := p.done
	Eventually(t, time.Minute, "fieldhub serve ready on "+p.HTTPAddr, func() bool {
		select {
		case <-done:
			t.Fatalf("fieldhub serve exited: %s", p.Output())
		default:
		}
		resp, err := http.Get("http://" + p.HTTPAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Serve) Kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}
