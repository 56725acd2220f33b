// Package idleconn lets a server hold idle network connections without a
// goroutine each.
//
// A goroutine blocked in Read keeps its stack (8–16 KiB once it has handled
// a packet) for as long as the connection lives; for an MQTT device that
// publishes once a minute that is nearly all of its cost. A Conn wraps an
// accepted TCP connection. Its reader asks for an idle read
// (SetIdleRead); when no byte arrives for the Poller's idle period, Read
// ends with an idle error instead of waiting on, and Park hands the
// connection to the Poller, which watches it with epoll and calls the
// reader's resume function on another goroutine when the connection is
// readable, is closed, or passes its read deadline. The reader's goroutine
// returns in between, so a parked connection costs only its heap. Resumes
// run on worker goroutines that wait a while for the next one, and a
// connection that stayed parked longer than the idle period parks again as
// soon as it has nothing to read.
//
// Conn satisfies the Parker interface of fieldhub's copy of mochi-mqtt
// (third_party/mochi-mqtt-server); TLSConn does the same for a *tls.Conn
// over a Conn: an idle error is temporary, so crypto/tls keeps a partly read
// record and reading resumes where it stopped.
//
// Parking needs epoll: on other systems NewPoller returns ErrUnsupported and
// connections are served as before, one goroutine each.
package idleconn

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrUnsupported is returned by NewPoller where parking is not available.
var ErrUnsupported = errors.New("idleconn: parking idle connections needs epoll (Linux)")

// idleError ends an idle read. It is a temporary timeout, which crypto/tls
// and bufio pass through without discarding what they have buffered.
type idleError struct{}

func (idleError) Error() string   { return "idleconn: connection idle" }
func (idleError) Timeout() bool   { return true }
func (idleError) Temporary() bool { return true }

var errIdle net.Error = idleError{}

// IsIdle reports whether err is the error of an idle read.
func IsIdle(err error) bool { return errors.Is(err, errIdle) }

// Conn is a TCP connection that can park with its Poller while idle.
// Reads, SetIdleRead and Park belong to one reader at a time; Write, Close
// and the deadline setters may be called from any goroutine.
type Conn struct {
	net.Conn
	p   *Poller
	fd  int
	raw syscall.RawConn

	idleRead  bool        // the reader's own
	shortened atomic.Bool // the read deadline is the idle one, not dl

	mu       sync.Mutex
	dl       time.Time // read deadline set by the user
	parked   bool
	parkedAt time.Time
	// sparse: the last park lasted at least the idle period, so the peer
	// sends rarely; its next idle read parks at once when nothing waits
	// instead of holding the reader for the idle period first.
	sparse  bool
	closed  bool
	inEpoll bool   // fd is (or may be) in the epoll set
	resume  func() // set while parked
	timer   *time.Timer
}

// TLSConn is a server-side *tls.Conn over a Conn that parks like one.
type TLSConn struct {
	*tls.Conn
	raw *Conn
}

// NewTLSConn returns tls.Server(c, cfg) able to park.
func NewTLSConn(c *Conn, cfg *tls.Config) *TLSConn {
	return &TLSConn{Conn: tls.Server(c, cfg), raw: c}
}

// SetIdleRead sets whether reads may end with an idle error.
func (t *TLSConn) SetIdleRead(on bool) { t.raw.SetIdleRead(on) }

// Park parks the underlying connection; see Conn.Park. The tls.Conn's
// input buffers are released first when they hold nothing (a record cut
// by the pause stays buffered).
func (t *TLSConn) Park(err error, resume func()) bool {
	if IsIdle(err) {
		releaseTLSBuffers(t.Conn)
	}
	return t.raw.Park(err, resume)
}

// SetIdleRead sets whether reads may end with an idle error once nothing
// has arrived for the poller's idle period (and the read deadline, if any,
// is further away).
func (c *Conn) SetIdleRead(on bool) { c.idleRead = on }

// Read reads from the connection. In idle-read mode a read that waits longer
// than the idle period, and not past the read deadline, ends with an error
// for which IsIdle reports true; if the connection's last park outlasted
// the idle period (a peer that sends rarely), it ends so at once when
// nothing has arrived, rather than keeping its reader for the idle period
// first.
func (c *Conn) Read(b []byte) (int, error) {
	if !c.idleRead {
		if c.shortened.Load() {
			c.restoreDeadline()
		}
		return c.Conn.Read(b)
	}
	c.mu.Lock()
	dl, sparse := c.dl, c.sparse
	c.mu.Unlock()
	now := time.Now()
	if sparse && (dl.IsZero() || now.Before(dl)) {
		if c.shortened.Load() {
			c.restoreDeadline() // a raw read honours the deadline too
		}
		if n, wouldBlock, err := c.readNow(b); !wouldBlock {
			return n, err
		}
		return 0, errIdle
	}
	idleAt := now.Add(c.p.idle)
	if !dl.IsZero() && !idleAt.Before(dl) {
		if c.shortened.Load() {
			c.restoreDeadline()
		}
		return c.Conn.Read(b)
	}
	// The read deadline stays at idleAt after this read: a later normal
	// read restores dl, and the reader's next SetDeadline replaces both.
	_ = c.Conn.SetReadDeadline(idleAt)
	c.shortened.Store(true)
	n, err := c.Conn.Read(b)
	if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) && (dl.IsZero() || time.Now().Before(dl)) {
		return 0, errIdle
	}
	return n, err
}

// restoreDeadline puts back the user's read deadline after idle reads.
func (c *Conn) restoreDeadline() {
	c.mu.Lock()
	dl := c.dl
	c.mu.Unlock()
	_ = c.Conn.SetReadDeadline(dl)
	c.shortened.Store(false)
}

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.setReadDeadline(t)
	return c.Conn.SetDeadline(t)
}

// SetReadDeadline sets the read deadline; a parked connection resumes when
// it passes.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.setReadDeadline(t)
	return c.Conn.SetReadDeadline(t)
}

func (c *Conn) setReadDeadline(t time.Time) {
	c.mu.Lock()
	c.dl = t
	c.shortened.Store(false) // the caller sets the real deadline next
	if c.parked {
		c.armTimerLocked()
	}
	c.mu.Unlock()
}

// Park hands the connection to the poller if err ends an idle read, and
// reports whether it did. resume is then called exactly once, on another
// goroutine, when the connection is readable, closed, or past its read
// deadline; the reader must return without touching the connection.
func (c *Conn) Park(err error, resume func()) bool {
	if !IsIdle(err) {
		return false
	}
	return c.p.park(c, resume)
}

// Close closes the connection. A parked connection resumes, so that its
// reader sees the close and ends the session.
func (c *Conn) Close() error {
	c.mu.Lock()
	c.closed = true
	inEpoll := c.inEpoll
	c.inEpoll = false
	c.mu.Unlock()
	if inEpoll {
		// Out of the epoll set before the descriptor can be reused.
		c.p.forget(c)
	}
	err := c.Conn.Close()
	c.wake(causeClosed)
	return err
}

// armTimerLocked makes the timer fire at the read deadline (or stops it
// when there is none). c.mu is held.
func (c *Conn) armTimerLocked() {
	if c.dl.IsZero() {
		if c.timer != nil {
			c.timer.Stop()
		}
		return
	}
	d := time.Until(c.dl)
	if c.timer == nil {
		c.timer = time.AfterFunc(d, func() { c.wake(causeDeadline) })
		return
	}
	c.timer.Reset(d)
}

// wake resumes the reader of a parked connection; it does nothing when the
// connection is not parked (an event or timer that arrives late).
func (c *Conn) wake(why cause) {
	c.mu.Lock()
	if !c.parked {
		c.mu.Unlock()
		return
	}
	c.parked = false
	c.sparse = why == causeReadable && time.Since(c.parkedAt) >= c.p.idle
	resume := c.resume
	c.resume = nil
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	c.p.unparked(c, why)
	c.p.dispatch(resume)
}

// cause is why a park ended.
type cause int

const (
	causeReadable cause = iota // bytes arrived (or an error or hang-up)
	causeDeadline              // the read deadline passed
	causeClosed                // the connection was closed
	numCauses
)

// sysConn is what a connection needs for its descriptor.
type sysConn interface {
	SyscallConn() (syscall.RawConn, error)
}

// descriptor returns the file descriptor of c, or false when it has none.
func descriptor(c net.Conn) (int, syscall.RawConn, bool) {
	sc, ok := c.(sysConn)
	if !ok {
		return 0, nil, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, nil, false
	}
	fd := -1
	if err := raw.Control(func(f uintptr) { fd = int(f) }); err != nil || fd < 0 {
		return 0, nil, false
	}
	return fd, raw, true
}
