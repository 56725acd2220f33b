package spool

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	lockName = "LOCK"
	ackName  = "ack"
)

// Spool is a durable, bounded, store-and-forward queue in a directory.
// All methods are safe for concurrent use.
type Spool struct {
	dir      string
	opts     Options
	fs       fsys
	log      *slog.Logger
	sealer   *sealer // nil without a key
	m        *metrics
	lockFile *os.File
	maxPlain int // largest plain body that fits a segment

	// Append queue.
	q        queue
	waiters  sync.Pool    // of *waiter
	inflight atomic.Int64 // reserved bytes of queued appends
	waiting  atomic.Bool  // an appender waits for room
	nextID   atomic.Uint64

	// Committer state (commitMu; the committer goroutine holds it for a
	// batch, the housekeeper to drop the active segment).
	commitMu  sync.Mutex
	wf        file     // active segment, open for writing
	wseg      *segment // active segment
	nextSeq   uint64
	wbuf      []byte
	nonces    []byte
	spare     []entry
	spareSlab []byte

	// Everything else (mu).
	mu            sync.Mutex
	segs          []*segment // ascending seq
	active        *segment   // == wseg; nil when the next append starts a segment
	bytes         int64
	records       int64 // unacknowledged records in segs
	acked         uint64
	cur           cursor
	curTime       int64 // time of the record at the cursor (approximate)
	lastDelivered uint64
	maxDelivered  uint64
	rewindGen     uint64
	marks         []mark
	pendingDrops  []pendingDrop
	dataCh        chan struct{} // closed when records are committed; nil when nobody waits
	closed        bool
	st            Stats // counters (the other fields are filled by Stats)

	// Reader (readMu: one Read at a time).
	readMu sync.Mutex
	rf     file
	rfSeq  uint64
	rbuf   []byte
	keys   map[string]string

	// Ack file (ackMu).
	ackMu         sync.Mutex
	ackFile       file
	ackSeq        uint64
	ackPersisted  uint64
	nextPersisted uint64

	closing   chan struct{}
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

// cursor is the reader's position: the next record to deliver is at or
// after off in segment seq.
type cursor struct {
	seq uint64
	off int64
}

// mark remembers the time of delivered, unacknowledged records (for
// OldestAge).
type mark struct {
	first, last uint64
	time        int64
}

// pendingDrop is a range of delivered, unacknowledged records whose
// segment was dropped: an Ack covering them means they reached the hub;
// otherwise Rewind (or Close) counts them.
type pendingDrop struct {
	run    idRun
	reason string
}

// Open opens or creates the spool in dir. It scans every segment, skips
// and reports damaged records, truncates torn tails, and refuses a spool
// written with another key (ErrWrongKey).
func Open(dir string, o Options) (*Spool, error) {
	if err := o.ensureDefaults(); err != nil {
		return nil, err
	}
	s := &Spool{
		dir:     dir,
		opts:    o,
		fs:      o.fs,
		log:     o.Logger,
		closing: make(chan struct{}),
		keys:    make(map[string]string),
	}
	s.q.kick = make(chan struct{}, 1)
	s.waiters.New = newWaiter
	s.maxPlain = int(min(int64(maxBodyLimit), o.SegmentBytes-segHeaderSize-recHeaderSize) - encOverhead)
	if o.Key != nil {
		sl, err := newSealer(o.Key)
		if err != nil {
			return nil, err
		}
		s.sealer = sl
	}
	if err := s.fs.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: creating %s: %w", dir, err)
	}
	lf, err := lockDir(filepath.Join(dir, lockName))
	if err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("spool: locking %s: %w", dir, err)
	}
	s.lockFile = lf
	s.m = newMetrics(s)
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, err
	}
	if err := s.m.register(o.Registerer); err != nil {
		s.closeFiles()
		return nil, err
	}
	s.wg.Add(2)
	go s.commitLoop()
	go s.houseLoop()
	return s, nil
}

// recover loads the ack file and scans the segments.
func (s *Spool) recover() error {
	acked, next, err := s.openAckFile()
	if err != nil {
		return err
	}
	names, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("spool: listing %s: %w", s.dir, err)
	}
	var (
		buf       []byte
		prevLast  uint64 // last record ID of the segments so far
		maxBase   uint64
		haveFirst bool // the first unacknowledged record was found
	)
	for _, name := range names {
		seq, ok := parseSegName(name)
		if !ok {
			continue
		}
		s.nextSeq = max(s.nextSeq, seq+1)
		path := filepath.Join(s.dir, name)
		data, err := s.readWhole(path, buf)
		if err != nil {
			return err
		}
		buf = data[:0]
		g := &segment{seq: seq, name: path, start: segHeaderSize}
		h, hok := decodeSegHeader(data)
		start := segHeaderSize
		if hok {
			if h.flags&flagEncrypted != 0 {
				if s.sealer == nil {
					return fmt.Errorf("%w: segment %s is encrypted and no key was given", ErrWrongKey, name)
				}
				if !s.sealer.checkKCV(h.kcv) {
					return fmt.Errorf("%w: segment %s was written with another key", ErrWrongKey, name)
				}
				g.encrypted = true
			}
			g.base = h.base
			g.firstTime, g.lastTime = h.created, h.created
			g.sealed = h.seq != seq
			maxBase = max(maxBase, h.base)
		} else {
			start = 0
			g.sealed = true
		}
		prev := prevLast
		if g.base > 0 {
			prev = max(prev, g.base-1)
		}
		firstOff, lastOff, firstUnacked := -1, -1, -1
		res := scanRecords(data, start, prev, func(off int, r rawRecord) {
			if firstOff < 0 {
				firstOff = off
			}
			lastOff = off
			if firstUnacked < 0 && r.id > acked {
				firstUnacked = off
			}
			g.addRange(r.id, r.id)
		})
		if !hok && g.count == 0 {
			// A segment whose creation was cut short (or that is
			// unreadable and holds nothing): nothing to keep.
			if len(data) > 0 {
				s.reportDamage(path, span{0, len(data), damageTorn})
			}
			if err := s.fs.Remove(path); err != nil {
				return fmt.Errorf("spool: removing empty segment: %w", err)
			}
			continue
		}
		if firstOff >= 0 {
			g.start = int64(firstOff)
		}
		if !hok {
			s.log.Warn("spool: segment header damaged", "segment", path)
		}
		for _, d := range res.damaged {
			if !hok && d.from == 0 && d.kind == damageCorrupt && d.to <= segHeaderSize {
				continue // the header itself, reported above
			}
			s.reportDamage(path, d)
			if d.kind == damageCorrupt {
				g.damaged = append(g.damaged, d)
			}
		}
		g.size = max(int64(res.end), g.start)
		if g.size < int64(len(data)) {
			if err := s.truncate(path, g.size); err != nil {
				s.log.Error("spool: truncating torn tail", "segment", path, "err", err)
				g.sealed = true // never append after bytes we could not cut
			}
		}
		// Times of the first and last record. A CRC-valid record that does
		// not authenticate means a wrong key when no header vouched for it.
		for _, off := range [2]int{firstOff, lastOff} {
			if off < 0 {
				continue
			}
			r, _, _ := decodeRecord(data[off:])
			t, err := s.recordTime(r)
			if err != nil {
				if errors.Is(err, ErrWrongKey) || (r.flags&flagEncrypted != 0 && !hok) {
					return fmt.Errorf("%w: segment %s: records do not authenticate with this key", ErrWrongKey, name)
				}
				continue // counted as corrupt when read
			}
			if off == firstOff {
				g.firstTime = t
			}
			if off == lastOff {
				g.lastTime = t
			}
		}
		if !haveFirst && firstUnacked >= 0 {
			haveFirst = true
			s.cur = cursor{seq, int64(firstUnacked)}
			s.curTime = g.firstTime
			r, _, _ := decodeRecord(data[firstUnacked:])
			if t, err := s.recordTime(r); err == nil {
				s.curTime = t
			}
		}
		prevLast = max(prevLast, res.lastID)
		s.segs = append(s.segs, g)
		s.bytes += g.size
	}
	// Acks only name IDs that were handed out: acked+1 is a floor too.
	next = max(next, prevLast+1, maxBase, acked+1, 1)
	s.nextID.Store(next)
	s.acked, s.lastDelivered, s.maxDelivered = acked, acked, acked
	s.ackPersisted, s.nextPersisted = acked, next
	for _, g := range s.segs {
		s.records += g.countIn(acked, math.MaxUint64)
	}
	if !haveFirst && len(s.segs) > 0 {
		g := s.segs[len(s.segs)-1]
		s.cur = cursor{g.seq, g.size}
	}
	// Append to the last segment when it is sound, of the current key
	// mode and not full.
	if n := len(s.segs); n > 0 {
		g := s.segs[n-1]
		if !g.sealed && g.encrypted == (s.sealer != nil) &&
			g.size+recHeaderSize+minPlainBody+encOverhead <= s.opts.SegmentBytes {
			f, err := s.fs.OpenFile(g.name, os.O_RDWR, 0o600)
			if err != nil {
				return fmt.Errorf("spool: opening segment: %w", err)
			}
			s.wf, s.wseg, s.active = f, g, g
		}
	}
	return nil
}

// readWhole reads a file into buf (grown as needed).
func (s *Spool) readWhole(path string, buf []byte) ([]byte, error) {
	f, err := s.fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("spool: opening segment: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("spool: stat segment: %w", err)
	}
	n := fi.Size()
	if int64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := f.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("spool: reading segment: %w", err)
	}
	return buf, nil
}

func (s *Spool) truncate(path string, size int64) error {
	f, err := s.fs.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// recordTime returns a record's time, decrypting it if needed.
func (s *Spool) recordTime(r rawRecord) (int64, error) {
	body := r.body
	if r.flags&flagEncrypted != 0 {
		if s.sealer == nil {
			return 0, fmt.Errorf("%w: encrypted record and no key", ErrWrongKey)
		}
		var err error
		body, err = s.sealer.open(nil, r.id, r.body)
		if err != nil {
			return 0, err
		}
	}
	t, _, _, ok := parsePlainBody(body)
	if !ok {
		return 0, errAuth
	}
	return t, nil
}

// reportDamage counts and logs a damaged range.
func (s *Spool) reportDamage(path string, d span) {
	s.mu.Lock()
	s.reportDamageLocked(path, d)
	s.mu.Unlock()
}

// reportDamageLocked counts and logs a damaged range. mu is held.
func (s *Spool) reportDamageLocked(path string, d span) {
	if d.kind == damageTorn {
		s.st.Damage.Torn++
	} else {
		s.st.Damage.Corrupt++
	}
	if d.kind == damageTorn {
		s.m.damageTorn.Inc()
	} else {
		s.m.damageCorrupt.Inc()
	}
	s.log.Warn("spool: damaged records skipped", "segment", path, "kind", d.kind.String(),
		"offset", d.from, "bytes", d.to-d.from)
}

// Stats returns a snapshot of the spool's state and counters.
func (s *Spool) Stats() Stats {
	now := s.opts.Now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Records = s.records
	st.Bytes = s.bytes
	st.Segments = len(s.segs)
	st.NextID = s.nextID.Load()
	st.AckedID = s.acked
	if s.records > 0 {
		st.OldestAge = max(0, time.Duration(now-s.oldestTimeLocked()))
	}
	return st
}

// oldestTimeLocked returns the time of the oldest unacknowledged record:
// exact for undelivered records, to within one Read batch for delivered
// ones. mu is held.
func (s *Spool) oldestTimeLocked() int64 {
	if len(s.marks) > 0 {
		return s.marks[0].time
	}
	for _, g := range s.segs {
		switch {
		case g.seq < s.cur.seq:
		case g.seq == s.cur.seq && s.cur.off > g.start:
			if s.cur.off < g.size {
				return s.curTime
			}
		case g.count > 0:
			return g.firstTime
		}
	}
	return s.curTime
}

// Close commits what is queued, persists the acknowledged position and
// closes the files. It is safe to call more than once; later calls
// return the first call's result.
func (s *Spool) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Spool) close() error {
	close(s.closing)
	s.q.mu.Lock()
	s.q.closed = true
	s.q.mu.Unlock()
	s.q.wake()
	s.wg.Wait()

	s.mu.Lock()
	s.closed = true
	s.countPendingDropsLocked()
	if s.dataCh != nil {
		close(s.dataCh)
		s.dataCh = nil
	}
	s.mu.Unlock()

	var errs []error
	if err := s.persistAck(true); err != nil {
		errs = append(errs, err)
	}
	s.m.unregister(s.opts.Registerer)
	if err := s.closeFiles(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// closeFiles closes every file the spool holds.
func (s *Spool) closeFiles() error {
	var errs []error
	s.readMu.Lock()
	if s.rf != nil {
		s.rf.Close()
		s.rf = nil
	}
	s.readMu.Unlock()
	s.commitMu.Lock()
	if s.wf != nil {
		if err := s.wf.Close(); err != nil {
			errs = append(errs, fmt.Errorf("spool: closing segment: %w", err))
		}
		s.wf = nil
	}
	s.commitMu.Unlock()
	s.ackMu.Lock()
	if s.ackFile != nil {
		if err := s.ackFile.Close(); err != nil {
			errs = append(errs, fmt.Errorf("spool: closing ack file: %w", err))
		}
		s.ackFile = nil
	}
	s.ackMu.Unlock()
	if s.lockFile != nil {
		s.lockFile.Close()
		s.lockFile = nil
	}
	return errors.Join(errs...)
}
