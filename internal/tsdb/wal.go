package tsdb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// WAL layout: dir/wal/<16 hex digits>.wal, numbered upwards. A segment is
// a 16-byte header (magic "FHWAL\0\1\0", uint64 LE segment number) and
// records. A record is uint32 LE body length, uint32 LE CRC-32C of the
// length bytes followed by the body, then the body (see record.go). A
// record never spans segments. A new segment is started when the current
// one would pass Options.SegmentSize, and at every checkpoint.
const (
	walMagic       = "FHWAL\x00\x01\x00"
	segHeaderSize  = 16
	recHeaderSize  = 8
	maxRecordSize  = 32 << 20
	walDirName     = "wal"
	corruptDirName = "corrupt"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorruptWAL reports a write-ahead log damaged somewhere other than its
// tail: acknowledged records may follow the damage. Open refuses such a
// log unless Options.SalvageCorruptWAL is set.
var ErrCorruptWAL = errors.New("tsdb: corrupt write-ahead log")

func segName(idx uint64) string { return fmt.Sprintf("%016x.wal", idx) }

func parseSegName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, ".wal")
	if !ok || len(hex) != 16 {
		return 0, false
	}
	idx, err := strconv.ParseUint(hex, 16, 64)
	return idx, err == nil
}

// beginFrame reserves a record header in buf; finishFrame fills it once
// the body has been appended.
func beginFrame(buf []byte) ([]byte, int) {
	return append(buf, 0, 0, 0, 0, 0, 0, 0, 0), len(buf)
}

func finishFrame(buf []byte, start int) {
	body := buf[start+recHeaderSize:]
	binary.LittleEndian.PutUint32(buf[start:], uint32(len(body)))
	crc := crc32.Update(crc32.Checksum(buf[start:start+4], castagnoli), castagnoli, body)
	binary.LittleEndian.PutUint32(buf[start+4:], crc)
}

// parseRecord checks the record at off; it returns the body and the
// offset after it.
func parseRecord(data []byte, off int) ([]byte, int, bool) {
	if off+recHeaderSize > len(data) {
		return nil, 0, false
	}
	n := int(binary.LittleEndian.Uint32(data[off:]))
	if n == 0 || n > maxRecordSize || n > len(data)-off-recHeaderSize {
		return nil, 0, false
	}
	body := data[off+recHeaderSize : off+recHeaderSize+n]
	if body[0] != recMessage && body[0] != recDelete {
		return nil, 0, false
	}
	crc := crc32.Update(crc32.Checksum(data[off:off+4], castagnoli), castagnoli, body)
	if crc != binary.LittleEndian.Uint32(data[off+4:]) {
		return nil, 0, false
	}
	return body, off + recHeaderSize + n, true
}

// span is a damaged byte range [from, to) of a segment.
type span struct{ from, to int }

// scanResult describes one segment's scan.
type scanResult struct {
	validEnd int    // end of the last good record (where a torn tail starts)
	torn     bool   // bytes after validEnd hold no valid record
	corrupt  []span // damaged ranges followed by valid records
}

// scanSegment calls fn for every valid record of a segment in order. A bad
// record followed, somewhere later, by a valid one is damage in the middle:
// it is recorded in corrupt and, when skip is set, scanning resumes at the
// next valid record; without skip the scan stops there. A bad record with
// nothing valid after it is a torn tail.
func scanSegment(data []byte, skip bool, fn func(body []byte) error) (scanResult, error) {
	var res scanResult
	off := segHeaderSize
	for off < len(data) {
		body, next, ok := parseRecord(data, off)
		if ok {
			if err := fn(body); err != nil {
				return res, err
			}
			off = next
			res.validEnd = off
			continue
		}
		found := -1
		for p := off + 1; p+recHeaderSize < len(data); p++ {
			if _, _, ok := parseRecord(data, p); ok {
				found = p
				break
			}
		}
		if found < 0 {
			res.torn = true
			return res, nil
		}
		res.corrupt = append(res.corrupt, span{off, found})
		if !skip {
			return res, nil
		}
		off = found
	}
	return res, nil
}

// segFile is the file a segment is written to (an *os.File; tests inject
// faults through it).
type segFile interface {
	Write(p []byte) (int, error)
	Sync() error
	Close() error
}

// walWriter appends to the current segment. It is used by one goroutine
// at a time (the committer, or the checkpoint while it holds applyMu).
type walWriter struct {
	dir     string
	segSize int64
	idx     uint64
	f       segFile
	size    int64            // bytes in the current segment
	sizes   map[uint64]int64 // bytes of each segment on disk
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// listSegments returns the segment numbers in dir, ascending.
func listSegments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, e := range ents {
		if idx, ok := parseSegName(e.Name()); ok && e.Type().IsRegular() {
			out = append(out, idx)
		}
	}
	slices.Sort(out)
	return out, nil
}

// create starts segment idx and makes it durable (header, file, directory
// entry) before any record is acknowledged in it.
func (w *walWriter) create(idx uint64) error {
	path := filepath.Join(w.dir, segName(idx))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("tsdb: creating wal segment: %w", err)
	}
	var hdr [segHeaderSize]byte
	copy(hdr[:], walMagic)
	binary.LittleEndian.PutUint64(hdr[8:], idx)
	if _, err := f.Write(hdr[:]); err != nil {
		f.Close()
		return fmt.Errorf("tsdb: writing wal segment header: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("tsdb: syncing wal segment: %w", err)
	}
	if err := syncDir(w.dir); err != nil {
		f.Close()
		return fmt.Errorf("tsdb: syncing wal directory: %w", err)
	}
	if w.f != nil {
		if err := w.f.Close(); err != nil {
			f.Close()
			return fmt.Errorf("tsdb: closing wal segment: %w", err)
		}
	}
	w.f, w.idx, w.size = f, idx, segHeaderSize
	w.sizes[idx] = segHeaderSize
	return nil
}

// write appends b (whole records) and syncs. A batch larger than the room
// left starts a new segment first.
func (w *walWriter) write(b []byte) error {
	if w.size > segHeaderSize && w.size+int64(len(b)) > w.segSize {
		if err := w.create(w.idx + 1); err != nil {
			return err
		}
	}
	n, err := w.f.Write(b)
	w.size += int64(n)
	w.sizes[w.idx] = w.size
	if err != nil {
		return fmt.Errorf("tsdb: writing wal: %w", err)
	}
	if err := fdatasync(w.f); err != nil {
		return fmt.Errorf("tsdb: syncing wal: %w", err)
	}
	return nil
}

// removeSegments deletes the given segments of dir and syncs dir.
func removeSegments(dir string, idxs []uint64) error {
	var errs []error
	for _, idx := range idxs {
		if err := os.Remove(filepath.Join(dir, segName(idx))); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := syncDir(dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tsdb: removing wal segments: %w", err)
	}
	return nil
}

// bytes returns the bytes of every segment on disk.
func (w *walWriter) bytes() (int64, int) {
	var n int64
	for _, s := range w.sizes {
		n += s
	}
	return n, len(w.sizes)
}

func (w *walWriter) close() error {
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}
