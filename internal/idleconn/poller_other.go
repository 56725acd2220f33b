//go:build !linux

package idleconn

import (
	"net"
	"time"
)

// Poller is not available on this system; see ErrUnsupported.
type Poller struct{ idle time.Duration }

// NewPoller returns ErrUnsupported outside Linux.
func NewPoller(time.Duration) (*Poller, error) { return nil, ErrUnsupported }

// Wrap returns c unchanged.
func (p *Poller) Wrap(c net.Conn) net.Conn { return c }

// Parked returns 0.
func (p *Poller) Parked() int64 { return 0 }

// Resumes returns zeros.
func (p *Poller) Resumes() (readable, deadline, closed uint64) { return 0, 0, 0 }

// Failures returns 0.
func (p *Poller) Failures() uint64 { return 0 }

// Close does nothing.
func (p *Poller) Close() error { return nil }

func (p *Poller) park(*Conn, func()) bool { return false }
func (p *Poller) unparked(*Conn, cause)   {}
func (p *Poller) forget(*Conn)            {}
func (p *Poller) dispatch(f func())       { go f() }

// readNow is never reached: without a Poller no Conn exists.
func (c *Conn) readNow([]byte) (int, bool, error) { return 0, true, nil }
