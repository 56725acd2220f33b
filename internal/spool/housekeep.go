package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"
)

// The ack file holds the acknowledged position and the next ID in two
// slots, 512 bytes apart so that a torn write damages at most one; the
// valid slot with the higher sequence number wins:
//
//	[0:8]   magic "FHSPACK\x01"
//	[8:16]  slot sequence number
//	[16:24] acknowledged up to this ID
//	[24:32] next ID
//	[32:36] CRC-32C of [0:32]
const (
	ackMagic    = "FHSPACK\x01"
	ackSlotSize = 36
	ackSlotGap  = 512
)

func encodeAckSlot(seq, acked, next uint64) [ackSlotSize]byte {
	var b [ackSlotSize]byte
	copy(b[0:8], ackMagic)
	binary.LittleEndian.PutUint64(b[8:16], seq)
	binary.LittleEndian.PutUint64(b[16:24], acked)
	binary.LittleEndian.PutUint64(b[24:32], next)
	binary.LittleEndian.PutUint32(b[32:36], crc32.Checksum(b[0:32], castagnoli))
	return b
}

func decodeAckSlot(b []byte) (seq, acked, next uint64, ok bool) {
	if len(b) < ackSlotSize || string(b[0:8]) != ackMagic ||
		crc32.Checksum(b[0:32], castagnoli) != binary.LittleEndian.Uint32(b[32:36]) {
		return 0, 0, 0, false
	}
	return binary.LittleEndian.Uint64(b[8:16]), binary.LittleEndian.Uint64(b[16:24]),
		binary.LittleEndian.Uint64(b[24:32]), true
}

// openAckFile opens (or creates) the ack file and returns the persisted
// position and next ID (zero when there is none).
func (s *Spool) openAckFile() (acked, next uint64, err error) {
	path := filepath.Join(s.dir, ackName)
	f, err := s.fs.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return 0, 0, fmt.Errorf("spool: opening ack file: %w", err)
	}
	s.ackFile = f
	var b [ackSlotGap + ackSlotSize]byte
	n, err := f.ReadAt(b[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, 0, fmt.Errorf("spool: reading ack file: %w", err)
	}
	found := false
	for _, off := range [2]int{0, ackSlotGap} {
		if n < off+ackSlotSize {
			continue
		}
		if seq, a, nx, ok := decodeAckSlot(b[off:]); ok && (!found || seq > s.ackSeq) {
			s.ackSeq, acked, next, found = seq, a, nx, true
		}
	}
	if !found && n > 0 {
		s.log.Warn("spool: ack file unreadable; every spooled record will be delivered again", "path", path)
	}
	if n == 0 {
		// New file: make its directory entry durable now.
		if err := s.fs.SyncDir(s.dir); err != nil {
			return 0, 0, fmt.Errorf("spool: syncing directory: %w", err)
		}
	}
	return acked, next, nil
}

// persistAck writes the acknowledged position and the next ID when the
// position moved (or always with force).
func (s *Spool) persistAck(force bool) error {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	if s.ackFile == nil {
		return nil
	}
	s.mu.Lock()
	acked := s.acked
	s.mu.Unlock()
	next := s.nextID.Load()
	if acked == s.ackPersisted && (!force || next == s.nextPersisted) {
		return nil
	}
	seq := s.ackSeq + 1
	b := encodeAckSlot(seq, acked, next)
	off := int64(0)
	if seq%2 == 1 {
		off = ackSlotGap
	}
	err := writeFull(s.ackFile, b[:], off)
	if err == nil {
		err = s.ackFile.Sync()
	}
	if err != nil {
		return fmt.Errorf("spool: writing ack file: %w", err)
	}
	s.ackSeq, s.ackPersisted, s.nextPersisted = seq, acked, next
	return nil
}

// houseLoop persists acknowledgements, deletes acknowledged segments and
// applies MaxAge every AckInterval until Close.
func (s *Spool) houseLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.AckInterval)
	defer t.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-t.C:
			if err := s.housekeep(); err != nil {
				s.log.Error("spool: housekeeping", "err", err)
			}
		}
	}
}

// housekeep runs one round of the housekeeper.
func (s *Spool) housekeep() error {
	var errs []error
	if s.opts.MaxAge > 0 {
		if err := s.enforceAge(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.persistAck(false); err != nil {
		errs = append(errs, err)
	}
	// Segments whose records are all acknowledged (oldest first; acks are
	// in order). The active one stays until it is full. They may hold the
	// highest ID: persist the next ID before they go.
	s.mu.Lock()
	n := 0
	for n < len(s.segs) && s.segs[n] != s.active && s.segs[n].countIn(s.acked, math.MaxUint64) == 0 {
		n++
	}
	s.mu.Unlock()
	if n == 0 {
		return errors.Join(errs...)
	}
	if err := s.persistAck(true); err != nil {
		return errors.Join(append(errs, err)...)
	}
	var names []string
	s.mu.Lock()
	for len(s.segs) > 0 && len(names) < n && s.segs[0] != s.active && s.segs[0].countIn(s.acked, math.MaxUint64) == 0 {
		g := s.segs[0]
		s.dropSegmentLocked(g, "acked")
		names = append(names, g.name)
	}
	s.mu.Unlock()
	s.removeFiles(names)
	return errors.Join(errs...)
}

// enforceAge drops the segments whose newest record is older than
// MaxAge, counting their unacknowledged records (reason "age").
func (s *Spool) enforceAge() error {
	cutoff := s.opts.Now().Add(-s.opts.MaxAge).UnixNano()
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	var (
		names      []string
		dropActive bool
	)
	s.mu.Lock()
	for i := 0; i < len(s.segs); {
		g := s.segs[i]
		if g.count == 0 || g.lastTime >= cutoff {
			i++
			continue
		}
		if g == s.active {
			dropActive = true
		}
		s.dropSegmentLocked(g, "age")
		names = append(names, g.name)
	}
	s.mu.Unlock()
	if len(names) == 0 {
		return nil
	}
	var err error
	if dropActive {
		// The next append starts a new segment; its base ID comes from the
		// ack file if this was the last segment.
		if s.wf != nil {
			s.wf.Close()
		}
		s.wf, s.wseg = nil, nil
		err = s.persistAck(true)
	}
	s.removeFiles(names)
	return err
}
