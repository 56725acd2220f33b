package spool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

// Read defaults and bounds.
const (
	defaultReadMax      = 1000
	defaultReadMaxBytes = 4 << 20
	minReadChunk        = 256 << 10
	maxMarks            = 4096
	maxInternedKeys     = 4096
)

// Read returns the next unacknowledged records after the read cursor, in
// ID order: at most maxRecords records (default 1000) and about maxBytes of keys
// and data (default 4 MiB; at least one record is returned however large).
// It blocks until at least one record is available, ctx ends or the spool
// is closed (ErrClosed). The records and their data belong to the caller.
// After Rewind, reading starts again at the oldest unacknowledged record.
func (s *Spool) Read(ctx context.Context, maxRecords int, maxBytes int) ([]Record, error) {
	if maxRecords <= 0 {
		maxRecords = defaultReadMax
	}
	if maxBytes <= 0 {
		maxBytes = defaultReadMaxBytes
	}
	for {
		recs, wait, err := s.readOnce(maxRecords, maxBytes)
		if err != nil || len(recs) > 0 {
			return recs, err
		}
		if wait == nil {
			continue
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("spool: read: %w", ctx.Err())
		case <-s.closing:
			return nil, fmt.Errorf("spool: read: %w", ErrClosed)
		}
	}
}

// readOnce tries to read from the cursor. With nothing to read it returns
// a channel closed when records are committed; with neither records nor a
// channel the caller tries again.
func (s *Spool) readOnce(maxRecords, maxBytes int) ([]Record, <-chan struct{}, error) {
	s.readMu.Lock()
	defer s.readMu.Unlock()

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, nil, fmt.Errorf("spool: read: %w", ErrClosed)
	}
	g := s.cursorSegmentLocked()
	if g == nil {
		if s.dataCh == nil {
			s.dataCh = make(chan struct{})
		}
		ch := s.dataCh
		s.mu.Unlock()
		return nil, ch, nil
	}
	cur, limit, gen, acked := s.cur, g.size, s.rewindGen, s.acked
	known := g.damaged // append-only: safe to read after unlocking
	avgRec := int64(256)
	if g.count > 0 {
		avgRec = (g.size-g.start)/g.count + 1
	}
	s.mu.Unlock()

	if s.rf == nil || s.rfSeq != g.seq {
		if s.rf != nil {
			s.rf.Close()
			s.rf = nil
		}
		f, err := s.fs.OpenFile(g.name, os.O_RDONLY, 0)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, nil, nil // dropped meanwhile; the cursor moves on
			}
			return nil, nil, fmt.Errorf("spool: read: %w", err)
		}
		s.rf, s.rfSeq = f, g.seq
	}
	want := min(limit-cur.off, max(minReadChunk,
		min(int64(maxRecords)*avgRec*5/4, int64(maxBytes+maxRecords*(recHeaderSize+encOverhead+32)))))
	buf, err := s.readAt(cur.off, int(want))
	if err != nil {
		return nil, nil, err
	}

	var (
		recs      []Record
		slab      []byte
		total     int
		p         int
		nextTime  = int64(-1)
		damaged   []span
		lastTimes int64
	)
	for p < len(buf) {
		if d, ok := spanAt(known, cur.off+int64(p)); ok {
			p = d.to - int(cur.off) // counted when found
			continue
		}
		r, n, st := decodeRecord(buf[p:])
		if st == stShort && p == 0 && len(buf) >= 8 && len(buf) < int(limit-cur.off) {
			// One record larger than the chunk: read all of it.
			need := recHeaderSize + int(le32(buf[4:8]))
			if need <= int(limit-cur.off) && need > len(buf) {
				if buf, err = s.readAt(cur.off, need); err != nil {
					return nil, nil, err
				}
				continue
			}
		}
		if st == stShort && p > 0 && len(buf) < int(limit-cur.off) {
			break // the rest next time
		}
		if st != stOK {
			// Damage inside durable bytes (after Open): find the next
			// valid record in the rest of the segment.
			rest, err := s.readAt(cur.off+int64(p), int(limit-cur.off-int64(p)))
			if err != nil {
				return nil, nil, err
			}
			next := findNext(rest, 1, 0)
			if next < 0 {
				damaged = append(damaged, span{int(cur.off) + p, int(limit), damageTorn})
				p = int(limit - cur.off)
			} else {
				damaged = append(damaged, span{int(cur.off) + p, int(cur.off) + p + next, damageCorrupt})
				p += next
			}
			break
		}
		if r.id <= acked {
			p += n
			continue
		}
		if len(recs) >= maxRecords || (total >= maxBytes && len(recs) > 0) {
			if t, err := s.recordTime(r); err == nil {
				nextTime = t
			}
			break
		}
		if slab == nil {
			slab = make([]byte, 0, min(len(buf), maxBytes+maxRecords*16))
		}
		rec, ns, ok := s.decodeInto(r, slab)
		if !ok {
			damaged = append(damaged, span{int(cur.off) + p, int(cur.off) + p + n, damageCorrupt})
			p += n
			continue
		}
		slab = ns
		recs = append(recs, rec)
		total += len(rec.Key) + len(rec.Data)
		lastTimes = rec.Time.UnixNano()
		p += n
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, fmt.Errorf("spool: read: %w", ErrClosed)
	}
	if s.segmentLocked(g.seq) != nil {
		// Damage found after Open: count it once, skip it from now on.
		for _, d := range damaged {
			if _, ok := g.damageAt(int64(d.from)); !ok {
				s.reportDamageLocked(g.name, d)
				g.damaged = append(g.damaged, d)
			}
		}
	}
	if gen != s.rewindGen || s.cur != cur || s.segmentLocked(g.seq) == nil {
		return nil, nil, nil // rewound or dropped meanwhile: read again
	}
	s.cur.off = cur.off + int64(p)
	if len(recs) == 0 {
		return nil, nil, nil
	}
	last := recs[len(recs)-1].ID
	s.lastDelivered = last
	s.maxDelivered = max(s.maxDelivered, last)
	s.st.Replayed += uint64(len(recs))
	s.m.replayed.Add(float64(len(recs)))
	if nextTime >= 0 {
		s.curTime = nextTime
	} else {
		s.curTime = lastTimes
	}
	// Remember when the newly delivered records were appended.
	firstNew := 0
	if n := len(s.marks); n > 0 {
		for firstNew < len(recs) && recs[firstNew].ID <= s.marks[n-1].last {
			firstNew++
		}
	}
	if firstNew < len(recs) {
		s.marks = append(s.marks, mark{recs[firstNew].ID, last, recs[firstNew].Time.UnixNano()})
		if len(s.marks) > maxMarks {
			// Merge the two newest: the time stays an upper bound on age.
			n := len(s.marks)
			s.marks[n-2].last = s.marks[n-1].last
			s.marks = s.marks[:n-1]
		}
	}
	return recs, nil, nil
}

// spanAt returns the damaged range of spans starting at off.
func spanAt(spans []span, off int64) (span, bool) {
	for _, d := range spans {
		if int64(d.from) == off {
			return d, true
		}
	}
	return span{}, false
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// readAt reads n bytes at off of the reader's segment into its buffer.
// readMu is held.
func (s *Spool) readAt(off int64, n int) ([]byte, error) {
	if cap(s.rbuf) < n {
		s.rbuf = make([]byte, n)
	}
	buf := s.rbuf[:n]
	if _, err := s.rf.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("spool: read: %w", err)
	}
	if cap(s.rbuf) > maxKeptBuffer {
		s.rbuf = nil
	}
	return buf, nil
}

// decodeInto decodes a record, copying (or decrypting) its data into
// slab. readMu is held.
func (s *Spool) decodeInto(r rawRecord, slab []byte) (Record, []byte, bool) {
	start := len(slab)
	if r.flags&flagEncrypted != 0 {
		if s.sealer == nil {
			return Record{}, slab, false
		}
		out, err := s.sealer.open(slab, r.id, r.body)
		if err != nil {
			return Record{}, slab, false
		}
		slab = out
	} else {
		slab = append(slab, r.body...)
	}
	t, key, data, ok := parsePlainBody(slab[start:])
	if !ok {
		return Record{}, slab[:start], false
	}
	k, hit := s.keys[string(key)]
	if !hit {
		if len(s.keys) >= maxInternedKeys {
			clear(s.keys)
		}
		k = string(key)
		s.keys[k] = k
	}
	return Record{ID: r.id, Key: k, Time: time.Unix(0, t), Data: data[:len(data):len(data)]}, slab, true
}

// cursorSegmentLocked moves the cursor past finished and deleted
// segments and returns the segment with records to read, or nil. mu is
// held.
func (s *Spool) cursorSegmentLocked() *segment {
	for i, g := range s.segs {
		if g.seq < s.cur.seq {
			continue
		}
		if g.seq > s.cur.seq {
			// The cursor's segment is gone (or the cursor is new).
			s.cur = cursor{g.seq, g.start}
			s.curTime = g.firstTime
		}
		if s.cur.off < g.start {
			s.cur.off = g.start // a new spool's cursor, or a new segment
			s.curTime = g.firstTime
		}
		if s.cur.off < g.size {
			return g
		}
		if i == len(s.segs)-1 {
			return nil
		}
		// Finished: the next segment starts at its first record.
		n := s.segs[i+1]
		s.cur = cursor{n.seq, n.start}
		s.curTime = n.firstTime
	}
	return nil
}

func (s *Spool) segmentLocked(seq uint64) *segment {
	for _, g := range s.segs {
		if g.seq == seq {
			return g
		}
	}
	return nil
}

// Rewind makes Read deliver again every record not yet acknowledged,
// from the oldest: call it when the uplink reconnects. Records of dropped
// segments that were delivered but never acknowledged are counted as
// dropped now.
func (s *Spool) Rewind() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rewindGen++
	s.countPendingDropsLocked()
	s.lastDelivered = s.acked
	for _, g := range s.segs {
		if g.lastID() > s.acked {
			s.cur = cursor{g.seq, g.start}
			return
		}
	}
	if n := len(s.segs); n > 0 {
		g := s.segs[n-1]
		s.cur = cursor{g.seq, g.size}
	}
}

// Ack acknowledges every record with an ID up to upTo: the hub has them.
// Acknowledgements arrive in order; an older one is ignored. An ID above
// every ID Read has returned fails with ErrBadAck. The position is
// persisted every AckInterval and at Close, so after a crash a few
// acknowledged records may be delivered again, never fewer.
func (s *Spool) Ack(upTo uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("spool: ack: %w", ErrClosed)
	}
	if upTo <= s.acked {
		return nil
	}
	if upTo > s.maxDelivered {
		return fmt.Errorf("%w: %d, last delivered %d", ErrBadAck, upTo, s.maxDelivered)
	}
	var n int64
	for _, g := range s.segs {
		if g.lastID() <= s.acked {
			continue
		}
		if g.firstID() > upTo {
			break
		}
		n += g.countIn(s.acked, upTo)
	}
	s.records -= n
	// Delivered records of dropped segments that the hub confirms.
	var resolved int64
	kept := s.pendingDrops[:0]
	for _, p := range s.pendingDrops {
		if c, ok := clipRun(p.run, 0, upTo); ok {
			resolved += c.len()
		}
		if p.run.last > upTo {
			p.run.first = max(p.run.first, upTo+1)
			kept = append(kept, p)
		}
	}
	s.pendingDrops = kept
	s.acked = upTo
	s.lastDelivered = max(s.lastDelivered, upTo)
	k := 0
	for k < len(s.marks) && s.marks[k].last <= upTo {
		k++
	}
	s.marks = s.marks[k:]
	s.st.Acked += uint64(n + resolved)
	s.m.acked.Add(float64(n + resolved))
	return nil
}
