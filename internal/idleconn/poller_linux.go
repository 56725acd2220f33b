package idleconn

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Poller watches parked connections with one epoll instance and one
// goroutine, and runs their resumes on worker goroutines that exit after
// workerIdle without work. Close stops the loop and idle workers.
type Poller struct {
	idle     time.Duration
	epfd     int
	wakeR    int // read end of the pipe that stops the loop
	wakeW    int
	resumes  [numCauses]atomic.Uint64
	failures atomic.Uint64 // parks refused: the reader ended its connection

	mu     sync.Mutex
	byFD   map[int]*Conn // parked connections by descriptor
	closed bool

	tasks chan func()   // resumes handed to an idle worker
	quit  chan struct{} // closed by Close: idle workers exit
	done  chan struct{} // closed when the loop has returned
}

// workerIdle is how long a worker goroutine waits for another resume
// before it exits. Reusing workers saves creating a goroutine and growing
// its stack again for every wake-up.
const workerIdle = 2 * time.Second

// NewPoller starts a poller that parks connections idle for longer than
// idle. The caller stops it with Close.
func NewPoller(idle time.Duration) (*Poller, error) {
	if idle <= 0 {
		return nil, fmt.Errorf("idleconn: idle period %v must be positive", idle)
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("idleconn: epoll_create1: %w", err)
	}
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("idleconn: pipe2: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(pipe[0])}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, pipe[0], &ev); err != nil {
		unix.Close(epfd)
		unix.Close(pipe[0])
		unix.Close(pipe[1])
		return nil, fmt.Errorf("idleconn: epoll_ctl: %w", err)
	}
	p := &Poller{
		idle:  idle,
		epfd:  epfd,
		wakeR: pipe[0],
		wakeW: pipe[1],
		byFD:  make(map[int]*Conn),
		tasks: make(chan func()),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go p.loop()
	return p, nil
}

// Wrap returns c as a Conn that can park with p, or c itself when it has
// no descriptor to watch (for example a WebSocket stream).
func (p *Poller) Wrap(c net.Conn) net.Conn {
	if p == nil {
		return c
	}
	fd, raw, ok := descriptor(c)
	if !ok {
		return c
	}
	return &Conn{Conn: c, p: p, fd: fd, raw: raw}
}

// Parked returns the number of connections parked now.
func (p *Poller) Parked() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return int64(len(p.byFD))
}

// Resumes returns how many parks ended because the connection became
// readable, passed its read deadline, or was closed.
func (p *Poller) Resumes() (readable, deadline, closed uint64) {
	return p.resumes[causeReadable].Load(), p.resumes[causeDeadline].Load(), p.resumes[causeClosed].Load()
}

// Failures returns how many parks were refused (the poller was closed or
// epoll_ctl failed); the reader then ends its connection.
func (p *Poller) Failures() uint64 { return p.failures.Load() }

// Close stops the loop. Connections still parked stay parked until they
// are closed (which resumes them); new parks are refused, so their readers
// end with the idle error. Close the connections first.
func (p *Poller) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	close(p.quit)
	_, _ = unix.Write(p.wakeW, []byte{0})
	<-p.done
	unix.Close(p.wakeR)
	unix.Close(p.wakeW)
	return unix.Close(p.epfd)
}

// park registers c, idle, for readability (one shot) and for its read
// deadline.
func (p *Poller) park(c *Conn, resume func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		// Closed between the idle read and now: let the reader see it.
		p.resumes[causeClosed].Add(1)
		p.dispatch(resume)
		return true
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.failures.Add(1)
		return false
	}
	p.byFD[c.fd] = c
	p.mu.Unlock()

	// Level-triggered, one shot: bytes that arrived since the idle read
	// fire at once; after firing the descriptor stays disarmed until the
	// next park re-arms it.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(c.fd)}
	op := unix.EPOLL_CTL_MOD
	if !c.inEpoll {
		op = unix.EPOLL_CTL_ADD
	}
	err := unix.EpollCtl(p.epfd, op, c.fd, &ev)
	if errors.Is(err, unix.ENOENT) && op == unix.EPOLL_CTL_MOD {
		err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev)
	} else if errors.Is(err, unix.EEXIST) && op == unix.EPOLL_CTL_ADD {
		err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev)
	}
	if err != nil {
		p.mu.Lock()
		if p.byFD[c.fd] == c {
			delete(p.byFD, c.fd)
		}
		p.mu.Unlock()
		p.failures.Add(1)
		return false // the reader ends the connection with the idle error
	}
	c.inEpoll = true
	c.parked, c.resume, c.parkedAt = true, resume, time.Now()
	c.armTimerLocked()
	return true
}

// unparked removes c from the parked set after its park ended.
func (p *Poller) unparked(c *Conn, why cause) {
	p.mu.Lock()
	if p.byFD[c.fd] == c {
		delete(p.byFD, c.fd)
	}
	p.mu.Unlock()
	p.resumes[why].Add(1)
}

// forget takes c's descriptor out of the epoll set (before it is closed).
func (p *Poller) forget(c *Conn) {
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
}

func (p *Poller) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			// Only a broken epoll descriptor gets here; parked connections
			// still resume when closed or at their deadline.
			return
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == p.wakeR {
				return
			}
			p.mu.Lock()
			c := p.byFD[fd]
			p.mu.Unlock()
			if c != nil {
				// A late event for a closed descriptor whose number was
				// reused only resumes the new owner early: it reads, finds
				// nothing, and parks again.
				c.wake(causeReadable)
			}
		}
	}
}

// dispatch runs resume on an idle worker, or on a new one when none waits.
func (p *Poller) dispatch(resume func()) {
	select {
	case p.tasks <- resume:
	default:
		go p.worker(resume)
	}
}

// worker runs resumes until none comes for workerIdle or the poller closes.
func (p *Poller) worker(resume func()) {
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		resume()
		t.Reset(workerIdle)
		select {
		case resume = <-p.tasks:
		case <-t.C:
			return
		case <-p.quit:
			return
		}
	}
}

// readNow reads what has arrived without waiting; wouldBlock reports that
// nothing had.
func (c *Conn) readNow(b []byte) (n int, wouldBlock bool, err error) {
	rerr := c.raw.Read(func(fd uintptr) bool {
		for {
			n, err = unix.Read(int(fd), b)
			if err != unix.EINTR {
				return true
			}
		}
	})
	switch {
	case rerr != nil:
		return 0, false, rerr
	case err == unix.EAGAIN:
		return 0, true, nil
	case err != nil:
		return 0, false, os.NewSyscallError("read", err)
	case n == 0 && len(b) > 0:
		return 0, false, io.EOF
	}
	return n, false, nil
}
