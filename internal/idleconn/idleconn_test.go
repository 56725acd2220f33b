//go:build linux

package idleconn

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/fhtest"
)

const idle = 20 * time.Millisecond

// lineServer serves one connection the way mochi's reader does: peek in
// idle mode, park on the idle error, resume on a new goroutine; it echoes
// each line and reports the error that ended the connection.
type lineServer struct {
	c     parker
	r     *bufio.Reader
	ended chan error
}

// parker is what mochi's reader needs of a connection; Conn and TLSConn
// have it.
type parker interface {
	net.Conn
	SetIdleRead(on bool)
	Park(err error, resume func()) bool
}

func serveLines(c parker) *lineServer {
	s := &lineServer{c: c, r: bufio.NewReader(c), ended: make(chan error, 1)}
	go s.run()
	return s
}

func (s *lineServer) run() {
	for {
		s.c.SetIdleRead(true)
		_, err := s.r.Peek(1)
		s.c.SetIdleRead(false)
		if err != nil {
			if s.c.Park(err, s.run) {
				return
			}
			s.ended <- err
			return
		}
		line, err := s.r.ReadString('\n')
		if err != nil {
			s.ended <- err
			return
		}
		if _, err := io.WriteString(s.c, line); err != nil {
			s.ended <- err
			return
		}
	}
}

// wantEnd waits for the server to end with want after what happened.
func (s *lineServer) wantEnd(t *testing.T, want error, what string) {
	t.Helper()
	select {
	case err := <-s.ended:
		if !errors.Is(err, want) {
			t.Errorf("after %s: ended with %v; want %v", what, err, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not resume the parked reader", what)
	}
}

func newPoller(t *testing.T) *Poller {
	t.Helper()
	p, err := NewPoller(idle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// pair returns a client connection and the server side wrapped by p.
func pair(t *testing.T, p *Poller) (net.Conn, *Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cli, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close(); srv.Close() })
	c, ok := p.Wrap(srv).(*Conn)
	if !ok {
		t.Fatalf("Wrap(%T) did not wrap", srv)
	}
	return cli, c
}

func echo(t *testing.T, cli net.Conn, r *bufio.Reader, msg string) {
	t.Helper()
	_ = cli.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(cli, msg+"\n"); err != nil {
		t.Fatal(err)
	}
	got, err := r.ReadString('\n')
	if err != nil || got != msg+"\n" {
		t.Fatalf("echo of %q: %q, %v", msg, got, err)
	}
}

func TestParkResume(t *testing.T) {
	p := newPoller(t)
	cli, c := pair(t, p)
	serveLines(c)
	r := bufio.NewReader(cli)
	for i := range 5 {
		fhtest.Eventually(t, 5*time.Second, "parked", func() bool { return p.Parked() == 1 })
		echo(t, cli, r, fmt.Sprint("line ", i))
	}
	// A line split across a park.
	fhtest.Eventually(t, 5*time.Second, "parked", func() bool { return p.Parked() == 1 })
	io.WriteString(cli, "first half, ")
	time.Sleep(5 * idle)
	io.WriteString(cli, "second half\n")
	if got, err := r.ReadString('\n'); got != "first half, second half\n" || err != nil {
		t.Fatalf("split line: %q, %v", got, err)
	}
	if readable, deadline, closed := p.Resumes(); readable < 6 || deadline != 0 || closed != 0 {
		t.Errorf("resumes readable %d deadline %d closed %d; want ≥ 6, 0, 0", readable, deadline, closed)
	}
}

func TestParkedDeadline(t *testing.T) {
	p := newPoller(t)
	_, c := pair(t, p)
	c.SetDeadline(time.Now().Add(10 * idle))
	s := serveLines(c)
	start := time.Now()
	select {
	case err := <-s.ended:
		if !isTimeout(err) {
			t.Fatalf("ended with %v; want a timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("deadline did not end the parked connection")
	}
	if d := time.Since(start); d < 10*idle {
		t.Errorf("ended after %v; the deadline was %v", d, 10*idle)
	}
	if _, deadline, _ := p.Resumes(); deadline != 1 {
		t.Errorf("resumes{deadline} = %d; want 1", deadline)
	}
	if p.Parked() != 0 {
		t.Errorf("parked = %d after the deadline", p.Parked())
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && !IsIdle(err)
}

func TestParkedClose(t *testing.T) {
	p := newPoller(t)
	// Closed by the server while parked.
	_, c := pair(t, p)
	s := serveLines(c)
	fhtest.Eventually(t, 5*time.Second, "parked", func() bool { return p.Parked() == 1 })
	c.Close()
	s.wantEnd(t, net.ErrClosed, "close")
	// Closed by the client while parked.
	cli, c2 := pair(t, p)
	s2 := serveLines(c2)
	fhtest.Eventually(t, 5*time.Second, "parked", func() bool { return p.Parked() == 1 })
	cli.Close()
	s2.wantEnd(t, io.EOF, "peer close")
	if p.Parked() != 0 {
		t.Errorf("parked = %d", p.Parked())
	}
}

// TestParkChurn parks, wakes and closes many connections at random from
// several goroutines (run it with -race): descriptors are reused while
// others are parked, and every connection must echo every line and end
// exactly once.
func TestParkChurn(t *testing.T) {
	p := newPoller(t)
	var wg sync.WaitGroup
	for w := range 8 {
		ln, err := net.Listen("tcp", "127.0.0.1:0") // one each: Accept must return this worker's Dial
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range 15 {
				cli, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Error(err)
					return
				}
				srv, err := ln.Accept()
				if err != nil {
					t.Error(err)
					return
				}
				c := p.Wrap(srv).(*Conn)
				s := serveLines(c)
				r := bufio.NewReader(cli)
				for j := range rng.IntN(4) {
					time.Sleep(time.Duration(rng.IntN(3)) * idle)
					msg := fmt.Sprintf("w%d c%d l%d\n", w, i, j)
					cli.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err := io.WriteString(cli, msg); err != nil {
						t.Error(err)
						return
					}
					if got, err := r.ReadString('\n'); got != msg || err != nil {
						var serr error
						select {
						case serr = <-s.ended:
						case <-time.After(time.Second):
						}
						t.Errorf("echo %q: %q, %v (server: %v)", msg, got, err, serr)
						return
					}
				}
				if rng.IntN(2) == 0 {
					c.Close()
				} else {
					cli.Close()
				}
				select {
				case <-s.ended:
				case <-time.After(5 * time.Second):
					t.Errorf("w%d c%d never ended", w, i)
					return
				}
				c.Close()
				cli.Close()
			}
		}()
	}
	wg.Wait()
	if p.Parked() != 0 {
		t.Errorf("parked = %d after every connection ended", p.Parked())
	}
}

// TestParkRefused: a poller that is closed refuses to park; the reader
// ends its connection with the idle error, and the refusal is counted.
func TestParkRefused(t *testing.T) {
	p := newPoller(t)
	_, c := pair(t, p)
	p.Close()
	s := serveLines(c)
	s.wantEnd(t, errIdle, "a park refused")
	if f := p.Failures(); f != 1 {
		t.Errorf("Failures() = %d; want 1", f)
	}
	if p.Parked() != 0 {
		t.Errorf("parked = %d", p.Parked())
	}
}
