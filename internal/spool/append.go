package spool

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// entry is one queued append.
type entry struct {
	off, n int // plain body in the queue's slab
	cost   int64
	w      *waiter
	done   func(uint64, error)
	id     uint64
	err    error
}

type result struct {
	id  uint64
	err error
}

// waiter is how a synchronous Append waits for its entry. Each spool has
// its own pool of them (Spool.waiters).
type waiter struct{ ch chan result }

func newWaiter() any { return &waiter{ch: make(chan result, 1)} }

// queue is the committer's input.
type queue struct {
	mu      sync.Mutex
	pending []entry
	slab    []byte        // plain bodies of pending entries
	space   chan struct{} // closed when reserved bytes are released
	closed  bool
	kick    chan struct{}
}

func (q *queue) wake() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// maxKeptBuffer bounds the buffers kept between commits.
const maxKeptBuffer = 8 << 20

// Append spools a record and returns its ID once it is durable: written
// and synced, with concurrent appends sharing one sync. Under RefuseNew
// at MaxBytes, and when the disk is full, it fails with ErrFull. A failed
// append was not spooled. If ctx ends while the record is queued, Append
// returns ctx's error and the record may still be spooled.
func (s *Spool) Append(ctx context.Context, key string, data []byte) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("spool: append: %w", err)
	}
	w := s.waiters.Get().(*waiter)
	if err := s.enqueue(ctx, key, data, w, nil); err != nil {
		s.waiters.Put(w)
		return 0, err
	}
	select {
	case r := <-w.ch:
		s.waiters.Put(w)
		return r.id, r.err
	case <-ctx.Done():
		return 0, fmt.Errorf("spool: append: %w", ctx.Err()) // w is abandoned
	}
}

// AppendAsync spools a record and calls done (if not nil) once it is
// durable or has failed, as Append would return. Calls to done come from
// the committer goroutine in append order, so done must be quick and must
// not call Append. key and data are copied before AppendAsync returns. It
// blocks while MaxPendingBytes are queued. An append refused before it is
// queued (ErrTooLarge, or ErrClosed after Close) calls done before
// AppendAsync returns, in the caller's goroutine.
func (s *Spool) AppendAsync(key string, data []byte, done func(id uint64, err error)) {
	if err := s.enqueue(context.Background(), key, data, nil, done); err != nil && done != nil {
		done(0, err)
	}
}

func (s *Spool) enqueue(ctx context.Context, key string, data []byte, w *waiter, done func(uint64, error)) error {
	n := plainBodySize(key, data)
	if n > s.maxPlain {
		return fmt.Errorf("spool: append: %w: %d bytes, at most %d", ErrTooLarge, n, s.maxPlain)
	}
	cost := int64(n + 64)
	if err := s.reserve(ctx, cost); err != nil {
		return err
	}
	t := s.opts.Now().UnixNano()
	q := &s.q
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		s.release(cost)
		return fmt.Errorf("spool: append: %w", ErrClosed)
	}
	off := len(q.slab)
	q.slab = appendPlainBody(q.slab, t, key, data)
	q.pending = append(q.pending, entry{off: off, n: n, cost: cost, w: w, done: done})
	first := len(q.pending) == 1
	q.mu.Unlock()
	if first {
		q.wake()
	}
	return nil
}

// reserve takes cost bytes of MaxPendingBytes, waiting for room.
func (s *Spool) reserve(ctx context.Context, cost int64) error {
	limit := s.opts.MaxPendingBytes
	for {
		if v := s.inflight.Add(cost); v <= limit || v == cost {
			return nil
		}
		s.inflight.Add(-cost)
		s.q.mu.Lock()
		if s.q.closed {
			s.q.mu.Unlock()
			return fmt.Errorf("spool: append: %w", ErrClosed)
		}
		ch := s.q.space
		if ch == nil {
			ch = make(chan struct{})
			s.q.space = ch
		}
		s.waiting.Store(true)
		s.q.mu.Unlock()
		if v := s.inflight.Load(); v+cost <= limit || v == 0 {
			continue
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("spool: append: %w", ctx.Err())
		case <-s.closing:
			return fmt.Errorf("spool: append: %w", ErrClosed)
		}
	}
}

func (s *Spool) release(cost int64) {
	s.inflight.Add(-cost)
	if s.waiting.Load() {
		s.q.mu.Lock()
		if s.q.space != nil {
			close(s.q.space)
			s.q.space = nil
		}
		s.waiting.Store(false)
		s.q.mu.Unlock()
	}
}

// commitLoop is the committer: it takes everything queued, writes it
// with one write and one sync per segment touched, and completes the
// appends in order. It drains the queue before it stops.
func (s *Spool) commitLoop() {
	defer s.wg.Done()
	q := &s.q
	var linger *time.Timer
	for {
		q.mu.Lock()
		for len(q.pending) == 0 {
			if q.closed {
				q.mu.Unlock()
				return
			}
			q.mu.Unlock()
			<-q.kick
			q.mu.Lock()
		}
		q.mu.Unlock()
		if d := s.opts.SyncInterval; d > 0 {
			if linger == nil {
				linger = time.NewTimer(d)
			} else {
				linger.Reset(d)
			}
			select {
			case <-linger.C:
			case <-s.closing:
				linger.Stop()
			}
		}
		q.mu.Lock()
		batch, slab := q.pending, q.slab
		q.pending, q.slab = s.spare, s.spareSlab
		q.mu.Unlock()

		s.commit(batch, slab)

		clear(batch)
		s.spare = batch[:0]
		if cap(slab) <= maxKeptBuffer {
			s.spareSlab = slab[:0]
		} else {
			s.spareSlab = nil
		}
	}
}

// recSize is the size on disk of a record with a plain body of n bytes.
func (s *Spool) recSize(n int) int {
	if s.sealer != nil {
		n += encOverhead
	}
	return recHeaderSize + n
}

// failKind says how a failed append is counted.
type failKind uint8

const (
	failRefused failKind = iota + 1
	failNoSpace
	failIO
)

// commit makes a batch durable and completes it.
func (s *Spool) commit(batch []entry, slab []byte) {
	s.commitMu.Lock()
	var (
		failErr error
		kind    failKind
	)
	i := 0
	for i < len(batch) {
		rs := int64(s.recSize(batch[i].n))
		if s.wf == nil || s.wseg.sealed || (s.wseg.count > 0 && s.wseg.size+rs > s.opts.SegmentBytes) {
			if err := s.rotate(rs); err != nil {
				if isNoSpace(err) && s.dropOldestForSpace() {
					continue
				}
				failErr, kind = s.classify(err)
				break
			}
		}
		// The records that fit in the active segment.
		room := s.opts.SegmentBytes - s.wseg.size
		j, n := i, int64(0)
		for j < len(batch) {
			r := int64(s.recSize(batch[j].n))
			if j > i && n+r > room {
				break
			}
			n += r
			j++
		}
		if avail := s.makeRoom(n); n > avail {
			j, n = i, 0
			for j < len(batch) {
				r := int64(s.recSize(batch[j].n))
				if n+r > avail {
					break
				}
				n += r
				j++
			}
			if j == i {
				failErr, kind = fmt.Errorf("spool: append: %w", ErrFull), failRefused
				break
			}
		}
		if err := s.writeChunk(batch[i:j], slab, int(n)); err != nil {
			if isNoSpace(err) && s.dropOldestForSpace() {
				continue
			}
			failErr, kind = s.classify(err)
			break
		}
		i = j
	}
	if failErr != nil {
		for k := i; k < len(batch); k++ {
			batch[k].id, batch[k].err = 0, failErr
		}
		s.countFailed(kind, len(batch)-i, failErr)
	}
	s.commitMu.Unlock()

	var cost int64
	for k := range batch {
		e := &batch[k]
		cost += e.cost
		if e.w != nil {
			e.w.ch <- result{e.id, e.err}
		} else if e.done != nil {
			e.done(e.id, e.err)
		}
	}
	s.release(cost)
}

// classify wraps a write error for the caller and says how to count it.
func (s *Spool) classify(err error) (error, failKind) {
	if isNoSpace(err) {
		return fmt.Errorf("spool: append: %w: %w", ErrFull, err), failNoSpace
	}
	return fmt.Errorf("spool: append: %w", err), failIO
}

func (s *Spool) countFailed(kind failKind, n int, err error) {
	s.mu.Lock()
	switch kind {
	case failRefused:
		s.st.Drops.Refused += uint64(n)
	case failNoSpace:
		s.st.Drops.NoSpace += uint64(n)
	case failIO:
		s.st.WriteErrors += uint64(n)
	}
	s.mu.Unlock()
	switch kind {
	case failRefused:
		s.m.dropRefused.Add(float64(n))
		s.log.Warn("spool: full, records refused", "records", n, "max_bytes", s.opts.MaxBytes)
	case failNoSpace:
		s.m.dropNoSpace.Add(float64(n))
		s.log.Error("spool: disk full, records refused", "records", n, "err", err)
	case failIO:
		s.m.writeErrors.Add(float64(n))
		s.log.Error("spool: write failed, records not spooled", "records", n, "err", err)
	}
}

// rotate starts a new active segment with room for a record of rs bytes.
func (s *Spool) rotate(rs int64) error {
	if avail := s.makeRoom(segHeaderSize + rs); avail < segHeaderSize+rs {
		return fmt.Errorf("%w: no room for a new segment", ErrFull)
	}
	seq := s.nextSeq
	s.nextSeq++
	name := filepath.Join(s.dir, segName(seq))
	f, err := s.fs.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("creating segment: %w", err)
	}
	now := s.opts.Now().UnixNano()
	h := segHeader{seq: seq, base: s.nextID.Load(), created: now}
	if s.sealer != nil {
		h.flags = flagEncrypted
		h.kcv = s.sealer.kcv
	}
	hdr := h.encode()
	if err = writeFull(f, hdr[:], 0); err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = s.fs.SyncDir(s.dir)
	}
	if err != nil {
		f.Close()
		if rerr := s.fs.Remove(name); rerr == nil {
			s.fs.SyncDir(s.dir)
		}
		return fmt.Errorf("creating segment: %w", err)
	}
	if s.wf != nil {
		if err := s.wf.Close(); err != nil {
			s.log.Warn("spool: closing segment", "segment", s.wseg.name, "err", err)
		}
	}
	g := &segment{seq: seq, name: name, base: h.base, start: segHeaderSize, size: segHeaderSize,
		firstTime: now, lastTime: now, encrypted: s.sealer != nil}
	s.mu.Lock()
	s.segs = append(s.segs, g)
	s.active = g
	s.bytes += segHeaderSize
	s.mu.Unlock()
	s.wf, s.wseg = f, g
	return nil
}

// writeFull writes all of b at off; a short write is an error.
func writeFull(f file, b []byte, off int64) error {
	n, err := f.WriteAt(b, off)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	return err
}

// writeChunk encodes entries (n bytes on disk) into the active segment,
// syncs it, and publishes the records. IDs of a failed write are not
// reused in this process.
func (s *Spool) writeChunk(es []entry, slab []byte, n int) error {
	if cap(s.wbuf) < n {
		s.wbuf = make([]byte, 0, n)
	}
	buf := s.wbuf[:0]
	var nonces []byte
	var flags byte
	if s.sealer != nil {
		flags = flagEncrypted
		if k := nonceSize * len(es); cap(s.nonces) < k {
			s.nonces = make([]byte, k)
		}
		nonces = s.nonces[:nonceSize*len(es)]
		if _, err := rand.Read(nonces); err != nil {
			return fmt.Errorf("reading random nonces: %w", err)
		}
	}
	first := s.nextID.Load()
	id := first
	for k := range es {
		e := &es[k]
		start := len(buf)
		buf = buf[:start+recHeaderSize]
		plain := slab[e.off : e.off+e.n]
		if s.sealer != nil {
			buf = s.sealer.seal(buf, id, nonces[k*nonceSize:(k+1)*nonceSize], plain)
		} else {
			buf = append(buf, plain...)
		}
		putRecordHeader(buf[start:], id, flags)
		e.id = id
		id++
	}
	s.nextID.Store(id)
	if cap(buf) <= maxKeptBuffer {
		s.wbuf = buf[:0]
	} else {
		s.wbuf = nil
	}
	g := s.wseg
	off := g.size
	t0 := time.Now()
	err := writeFull(s.wf, buf, off)
	if err == nil {
		err = s.wf.Sync()
		s.m.fsyncs.Inc()
	}
	if err != nil {
		for k := range es {
			es[k].id = 0
		}
		// Cut the segment back so that no record of a failed write is
		// ever read. After a failed sync the file's state is unknown:
		// seal it and go on in a new segment.
		if terr := s.wf.Truncate(off); terr != nil || !isNoSpace(err) {
			g.sealed = true
			if terr != nil {
				s.log.Error("spool: cutting back a failed write", "segment", g.name, "err", terr)
			}
		}
		return fmt.Errorf("writing segment: %w", err)
	}
	s.m.commitSecs.Observe(time.Since(t0).Seconds())
	s.m.commitRecs.Observe(float64(len(es)))
	s.m.appended.Add(float64(len(es)))
	s.m.appendBytes.Add(float64(len(buf)))

	tFirst := int64(binary.LittleEndian.Uint64(slab[es[0].off:]))
	tLast := int64(binary.LittleEndian.Uint64(slab[es[len(es)-1].off:]))
	s.mu.Lock()
	if g.count == 0 {
		g.firstTime = tFirst
	}
	g.lastTime = tLast
	g.addRange(first, id-1)
	g.size += int64(len(buf))
	s.bytes += int64(len(buf))
	s.records += int64(len(es))
	s.st.Appended += uint64(len(es))
	s.st.Syncs++
	if s.dataCh != nil {
		close(s.dataCh)
		s.dataCh = nil
	}
	s.mu.Unlock()
	return nil
}

// makeRoom applies the overflow policy so that need more bytes fit under
// MaxBytes, and returns the room left. Fully acknowledged segments are
// always deleted; DropOldest also deletes segments with unacknowledged
// records, counting them. The active segment is never deleted here.
// commitMu is held.
func (s *Spool) makeRoom(need int64) int64 {
	var names []string
	s.mu.Lock()
	for s.bytes+need > s.opts.MaxBytes && len(s.segs) > 0 && s.segs[0] != s.active {
		g := s.segs[0]
		if s.opts.Overflow == RefuseNew && g.countIn(s.acked, math.MaxUint64) > 0 {
			break
		}
		s.dropSegmentLocked(g, "overflow")
		names = append(names, g.name)
	}
	avail := s.opts.MaxBytes - s.bytes
	noActive := s.active == nil
	s.mu.Unlock()
	s.removeSegments(names, noActive)
	return avail
}

// removeSegments deletes segment files already taken out of the spool.
// Without an active segment the deleted ones may hold the highest ID, so
// the next ID is persisted first.
func (s *Spool) removeSegments(names []string, noActive bool) {
	if len(names) == 0 {
		return
	}
	if noActive {
		if err := s.persistAck(true); err != nil {
			s.log.Error("spool: persisting the next ID", "err", err)
		}
	}
	s.removeFiles(names)
}

// dropOldestForSpace deletes the oldest segment after the disk filled up,
// under DropOldest. It reports whether one was deleted. commitMu is held.
func (s *Spool) dropOldestForSpace() bool {
	if s.opts.Overflow != DropOldest {
		return false
	}
	s.mu.Lock()
	if len(s.segs) == 0 || s.segs[0] == s.active {
		s.mu.Unlock()
		return false
	}
	g := s.segs[0]
	s.dropSegmentLocked(g, "overflow")
	noActive := s.active == nil
	s.mu.Unlock()
	s.removeSegments([]string{g.name}, noActive)
	return true
}

// dropSegmentLocked takes g out of the spool, counting its unacknowledged
// records under reason: at once those never delivered, and those
// delivered but unacknowledged when Rewind or Close finds them still
// unacknowledged. The caller removes the file. mu is held.
func (s *Spool) dropSegmentLocked(g *segment, reason string) {
	i := 0
	for i < len(s.segs) && s.segs[i] != g {
		i++
	}
	if i == len(s.segs) {
		return
	}
	s.segs = append(s.segs[:i], s.segs[i+1:]...)
	s.bytes -= g.size
	if g == s.active {
		s.active = nil
	}
	delivered := max(s.acked, s.lastDelivered)
	lost := g.countIn(delivered, math.MaxUint64)
	var pending int64
	for _, r := range g.runs {
		if c, ok := clipRun(r, s.acked, delivered); ok {
			s.pendingDrops = append(s.pendingDrops, pendingDrop{c, reason})
			pending += c.len()
		}
	}
	s.records -= lost + pending
	s.countDropLocked(reason, uint64(lost))
	// Forget delivery times of dropped records.
	last := g.lastID()
	k := 0
	for k < len(s.marks) && s.marks[k].last <= last {
		k++
	}
	s.marks = s.marks[k:]
	if lost+pending > 0 {
		s.log.Warn("spool: segment dropped with unacknowledged records", "reason", reason,
			"segment", g.name, "records", lost, "in_flight", pending)
	}
}

func (s *Spool) countDropLocked(reason string, n uint64) {
	if n == 0 {
		return
	}
	switch reason {
	case "overflow":
		s.st.Drops.Overflow += n
		s.m.dropOverflow.Add(float64(n))
	case "age":
		s.st.Drops.Age += n
		s.m.dropAge.Add(float64(n))
	}
}

// countPendingDropsLocked counts the delivered records of dropped
// segments that were never acknowledged. mu is held.
func (s *Spool) countPendingDropsLocked() {
	for _, p := range s.pendingDrops {
		s.countDropLocked(p.reason, uint64(p.run.len()))
	}
	s.pendingDrops = nil
}

// removeFiles deletes segment files and syncs the directory.
func (s *Spool) removeFiles(names []string) {
	if len(names) == 0 {
		return
	}
	var errs []error
	for _, n := range names {
		if err := s.fs.Remove(n); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := s.fs.SyncDir(s.dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		s.log.Error("spool: removing segments", "err", err)
	}
}
