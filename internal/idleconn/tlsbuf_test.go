//go:build linux

package idleconn

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/fhtest"
)

// TestTLSFieldsFound fails when a Go release renames or retypes the
// tls.Conn fields this package empties: idle TLS connections would
// silently keep them again.
func TestTLSFieldsFound(t *testing.T) {
	if len(tlsBuffers) != 2 || len(tlsPeerCerts) != 1 || len(tlsChains) != 1 {
		t.Fatalf("crypto/tls.Conn fields not found (buffers %v, peer certificates %v, chains %v): update tlsbuf.go for this Go release",
			tlsBuffers, tlsPeerCerts, tlsChains)
	}
}

// bufCaps returns the capacities of c's input buffers.
func bufCaps(c *tls.Conn) []int {
	var caps []int
	for _, off := range tlsBuffers {
		caps = append(caps, field[bytes.Buffer](c, off).Cap())
	}
	return caps
}

// parkedCaps returns the capacities of c's input buffers if c is parked,
// else nil. c.mu orders the read between the park and the resume.
func parkedCaps(c *TLSConn) []int {
	c.raw.mu.Lock()
	defer c.raw.mu.Unlock()
	if !c.raw.parked {
		return nil
	}
	return bufCaps(c.Conn)
}

// A parked TLS connection holds no input buffers, keeps a record cut by
// the pause, and reads on after each park.
func TestTLSParkReleasesBuffers(t *testing.T) {
	p := newPoller(t)
	cli, c := pair(t, p)
	_, ca := fhtest.CA(t)
	cert, err := ca.ServerCertificate(context.Background(), []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	tc := NewTLSConn(c, &tls.Config{Certificates: []tls.Certificate{cert}})
	split := &splitConn{Conn: cli}
	tcli := tls.Client(split, &tls.Config{InsecureSkipVerify: true})
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	hs := make(chan error, 1)
	go func() { hs <- tcli.Handshake() }()
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-hs; err != nil {
		t.Fatal(err)
	}
	if caps := bufCaps(tc.Conn); caps[0] == 0 {
		t.Fatalf("buffer capacities after the handshake %v: the test no longer sees what it releases", caps)
	}
	_ = tc.SetDeadline(time.Time{})
	serveLines(tc)
	r := bufio.NewReader(tcli)
	for i := range 3 {
		var caps []int
		fhtest.Eventually(t, 5*time.Second, "parked", func() bool { caps = parkedCaps(tc); return caps != nil })
		if caps[0] != 0 || caps[1] != 0 {
			t.Fatalf("parked with buffer capacities %v; want none", caps)
		}
		echo(t, tcli, r, fmt.Sprint("line ", i))
	}
	// One record whose second half arrives after the server parked.
	fhtest.Eventually(t, 5*time.Second, "parked", func() bool { return p.Parked() == 1 })
	split.pause.Store(int64(10 * idle))
	echo(t, tcli, r, "a record cut in two by a park")
	if readable, _, _ := p.Resumes(); readable < 5 {
		t.Errorf("readable resumes %d; want ≥ 5 (each line after a park, the cut record twice)", readable)
	}
}

// splitConn writes one Write in two halves, pause apart, when pause is set.
type splitConn struct {
	net.Conn
	pause atomic.Int64 // nanoseconds
}

func (s *splitConn) Write(b []byte) (int, error) {
	d := time.Duration(s.pause.Swap(0))
	if d == 0 || len(b) < 2 {
		return s.Conn.Write(b)
	}
	n, err := s.Conn.Write(b[:len(b)/2])
	if err != nil {
		return n, err
	}
	time.Sleep(d)
	m, err := s.Conn.Write(b[len(b)/2:])
	return n + m, err
}
