package device

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// The durable offline buffer (Config.BufferDir) is a journal of segment
// files, each named by the index of the first record it may hold
// (%016x.seg). A record is
//
//	u32 length of body (little endian) | u32 CRC-32C of body | body
//
// and a body is either a message
//
//	0x01 | u64 index | u64 seq | i64 ts (Unix ns) | payload
//
// or a done mark, saying that every message up to an index has been
// acknowledged, refused or dropped
//
//	0x02 | u64 index
//
// Messages are appended with fsync before Publish returns. Done marks are
// written as the front of the queue advances and synced with the next
// message or every syncDoneEvery marks, so that a power cut resends fewer
// acknowledged messages than the hub's dedup window (1,024 seqs per
// device) remembers. On open, every segment is read in order; a record
// cut short or failing its checksum ends its segment (a torn tail of the
// last segment is truncated away). A segment is rotated at segmentSize and
// deleted once all its messages are done.
const (
	maxRecordSize = 16 << 20
	syncDoneEvery = 256
	recMessage    = 0x01
	recDone       = 0x02
	headerSize    = 8
	segSuffix     = ".seg"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// segmentSize is the size at which a segment is rotated (a variable for
// tests).
var segmentSize int64 = 4 << 20

// record is a message replayed from the journal.
type record struct {
	index, seq uint64
	ts         int64
	payload    []byte
}

type segment struct {
	base, last uint64 // first possible index; last message index (0: none)
	path       string
}

// journal is the durable buffer. Its methods are safe for concurrent use.
type journal struct {
	dir string
	log *slog.Logger

	mu       sync.Mutex
	f        *os.File // the last segment, open for appending
	size     int64
	segs     []segment
	next     uint64 // index of the next message
	done     uint64 // messages with index ≤ done are finished
	unsynced int    // done marks written since the last fsync
	buf      []byte
}

// openJournal opens (creating) the journal in dir and returns the messages
// not yet done, in order.
func openJournal(dir string, log *slog.Logger) (*journal, []record, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("buffer dir: %w", err)
	}
	j := &journal{dir: dir, log: log, next: 1}
	names, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("buffer dir: %w", err)
	}
	for _, e := range names {
		hex, ok := strings.CutSuffix(e.Name(), segSuffix)
		if !ok || e.IsDir() {
			continue
		}
		base, err := strconv.ParseUint(hex, 16, 64)
		if err != nil || len(hex) != 16 {
			continue
		}
		j.segs = append(j.segs, segment{base: base, path: filepath.Join(dir, e.Name())})
	}
	slices.SortFunc(j.segs, func(a, b segment) int { return cmpUint(a.base, b.base) })
	var recs []record
	for i := range j.segs {
		s := &j.segs[i]
		j.next = max(j.next, s.base)
		last := i == len(j.segs)-1
		good, err := j.readSegment(s, last, &recs)
		if err != nil {
			return nil, nil, err
		}
		if last {
			j.size = good
		}
	}
	// Keep the messages not yet done.
	pending := recs[:0]
	for _, r := range recs {
		if r.index > j.done {
			pending = append(pending, r)
		}
	}
	if len(j.segs) == 0 {
		if err := j.newSegment(); err != nil {
			return nil, nil, err
		}
	} else {
		s := j.segs[len(j.segs)-1]
		f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("buffer: %w", err)
		}
		j.f = f
	}
	j.mu.Lock()
	err = j.dropDoneSegments()
	j.mu.Unlock()
	if err != nil {
		j.f.Close()
		return nil, nil, err
	}
	return j, slices.Clip(pending), nil
}

// readSegment appends s's messages to recs and records done marks. It
// returns the length of the segment's intact prefix; in the last segment,
// a damaged tail is truncated away.
func (j *journal) readSegment(s *segment, last bool, recs *[]record) (int64, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return 0, fmt.Errorf("buffer: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	var off int64
	var hdr [headerSize]byte
	var damage error
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if err != io.EOF {
				damage = errors.New("record header cut short")
			}
			break
		}
		n := binary.LittleEndian.Uint32(hdr[0:4])
		if n == 0 || n > maxRecordSize {
			damage = fmt.Errorf("bad record length %d", n)
			break
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			damage = errors.New("record cut short")
			break
		}
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(hdr[4:8]) {
			damage = errors.New("record checksum mismatch")
			break
		}
		if err := j.apply(s, body, recs); err != nil {
			damage = err
			break
		}
		off += headerSize + int64(n)
	}
	if damage != nil {
		j.log.Warn("offline buffer: damaged record; the rest of the segment is skipped",
			"segment", s.path, "offset", off, "err", damage, "torn_tail", last)
		if last {
			if err := os.Truncate(s.path, off); err != nil {
				return 0, fmt.Errorf("buffer: truncating torn tail: %w", err)
			}
		}
	}
	return off, nil
}

// apply interprets one intact record body.
func (j *journal) apply(s *segment, body []byte, recs *[]record) error {
	switch {
	case body[0] == recMessage && len(body) >= 25:
		r := record{
			index:   binary.LittleEndian.Uint64(body[1:9]),
			seq:     binary.LittleEndian.Uint64(body[9:17]),
			ts:      int64(binary.LittleEndian.Uint64(body[17:25])),
			payload: body[25:],
		}
		if r.index < j.next {
			return fmt.Errorf("message index %d out of order", r.index)
		}
		*recs = append(*recs, r)
		s.last = r.index
		j.next = r.index + 1
	case body[0] == recDone && len(body) == 9:
		j.done = max(j.done, binary.LittleEndian.Uint64(body[1:9]))
	default:
		return fmt.Errorf("unknown record type %#x", body[0])
	}
	return nil
}

// newSegment starts a segment at index j.next. Called with mu held (or
// before the journal is shared).
func (j *journal) newSegment() error {
	s := segment{base: j.next, path: filepath.Join(j.dir, fmt.Sprintf("%016x%s", j.next, segSuffix))}
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("buffer: %w", err)
	}
	if err := syncDir(j.dir); err != nil {
		f.Close()
		return fmt.Errorf("buffer: %w", err)
	}
	if j.f != nil {
		j.f.Close()
	}
	j.f, j.size = f, 0
	j.segs = append(j.segs, s)
	return nil
}

// append writes a message durably and returns its index.
func (j *journal) append(seq uint64, ts int64, payload []byte) (uint64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return 0, errors.New("buffer closed")
	}
	if j.size >= segmentSize {
		// The done marks so far are synced with the old segment.
		if err := j.f.Sync(); err != nil {
			return 0, fmt.Errorf("buffer: %w", err)
		}
		if err := j.newSegment(); err != nil {
			return 0, err
		}
	}
	idx := j.next
	body := make([]byte, 25, 25+len(payload))
	body[0] = recMessage
	binary.LittleEndian.PutUint64(body[1:9], idx)
	binary.LittleEndian.PutUint64(body[9:17], seq)
	binary.LittleEndian.PutUint64(body[17:25], uint64(ts))
	body = append(body, payload...)
	if err := j.write(body); err != nil {
		return 0, err
	}
	if err := j.f.Sync(); err != nil {
		return 0, fmt.Errorf("buffer: %w", err)
	}
	j.unsynced = 0
	j.next++
	j.segs[len(j.segs)-1].last = idx
	return idx, nil
}

// markDone records that every message up to index is finished.
func (j *journal) markDone(index uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil || index <= j.done {
		return nil
	}
	var body [9]byte
	body[0] = recDone
	binary.LittleEndian.PutUint64(body[1:], index)
	if err := j.write(body[:]); err != nil {
		return err
	}
	j.done = index
	if j.unsynced++; j.unsynced >= syncDoneEvery {
		if err := j.f.Sync(); err != nil {
			return fmt.Errorf("buffer: %w", err)
		}
		j.unsynced = 0
	}
	return j.dropDoneSegments()
}

// write frames and writes one record. Called with mu held.
func (j *journal) write(body []byte) error {
	j.buf = j.buf[:0]
	j.buf = binary.LittleEndian.AppendUint32(j.buf, uint32(len(body)))
	j.buf = binary.LittleEndian.AppendUint32(j.buf, crc32.Checksum(body, castagnoli))
	j.buf = append(j.buf, body...)
	n, err := j.f.Write(j.buf)
	j.size += int64(n)
	if err != nil {
		// A partial record is a torn tail: the next open cuts it off.
		return fmt.Errorf("buffer: %w", err)
	}
	return nil
}

// dropDoneSegments deletes the oldest segments, but never the last, while
// all their messages are done. A done mark covers only messages written
// before it, in its own segment or older ones, so deleting a prefix of
// finished segments never loses a mark that a kept message depends on.
// Called with mu held.
func (j *journal) dropDoneSegments() error {
	n := 0
	for n < len(j.segs)-1 && j.segs[n].last <= j.done {
		if err := os.Remove(j.segs[n].path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("buffer: %w", err)
		}
		n++
	}
	j.segs = slices.Delete(j.segs, 0, n)
	return nil
}

// close syncs and closes the journal.
func (j *journal) close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Sync()
	if cerr := j.f.Close(); err == nil {
		err = cerr
	}
	j.f = nil
	if err != nil {
		return fmt.Errorf("buffer: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
