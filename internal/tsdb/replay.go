package tsdb

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// replay applies the WAL segments numbered from walStart on to the head
// and the dedup state, truncates a torn tail, and returns the number of
// the segment to write next. Damage in the middle of the WAL fails the
// open with ErrCorruptWAL unless Options.SalvageCorruptWAL is set.
func (db *DB) replay(walDir string, walStart uint64) (uint64, error) {
	segs, err := listSegments(walDir)
	if err != nil {
		return 0, fmt.Errorf("tsdb: listing wal: %w", err)
	}
	next := walStart
	var live []uint64
	for _, idx := range segs {
		if idx < walStart {
			// Covered by the last checkpoint; left by a crash before
			// their removal.
			if err := os.Remove(filepath.Join(walDir, segName(idx))); err != nil {
				return 0, fmt.Errorf("tsdb: removing old wal segment: %w", err)
			}
			continue
		}
		live = append(live, idx)
	}
	var rec record
	records := 0
	apply := func(body []byte) error {
		if err := decodeRecord(body, &rec); err != nil {
			// The CRC matched, so this is a bug or an incompatible
			// format, not disk damage.
			return fmt.Errorf("%w: %w", ErrCorruptWAL, err)
		}
		records++
		db.replayRecord(&rec)
		return nil
	}
	for i, idx := range live {
		next = idx + 1
		last := i == len(live)-1
		path := filepath.Join(walDir, segName(idx))
		data, err := os.ReadFile(path)
		if err != nil {
			return 0, fmt.Errorf("tsdb: reading wal segment: %w", err)
		}
		if len(data) < segHeaderSize || !bytes.Equal(data[:8], []byte(walMagic)) {
			if last {
				// A crash while creating the segment.
				db.m.walCorrupt.WithLabelValues("torn").Inc()
				db.log.Warn("removing wal segment with a torn header", "segment", segName(idx), "bytes", len(data))
				if err := os.Remove(path); err != nil {
					return 0, fmt.Errorf("tsdb: removing torn wal segment: %w", err)
				}
				continue
			}
			if err := db.damaged(idx, span{0, len(data)}, len(data)); err != nil {
				return 0, err
			}
			continue
		}
		res, err := scanSegment(data, db.opts.SalvageCorruptWAL, apply)
		if err != nil {
			return 0, err
		}
		for _, sp := range res.corrupt {
			if err := db.damaged(idx, sp, len(data)); err != nil {
				return 0, err
			}
		}
		if !res.torn {
			continue
		}
		end := max(res.validEnd, segHeaderSize)
		if !last {
			if err := db.damaged(idx, span{end, len(data)}, len(data)); err != nil {
				return 0, err
			}
			continue
		}
		db.m.walCorrupt.WithLabelValues("torn").Inc()
		db.log.Warn("truncating torn wal tail (an unacknowledged write cut by a crash)",
			"segment", segName(idx), "offset", end, "bytes", len(data)-end)
		if err := truncateSync(path, int64(end)); err != nil {
			return 0, fmt.Errorf("tsdb: truncating torn wal tail: %w", err)
		}
	}
	if records > 0 {
		db.log.Info("replayed wal", "records", records, "segments", len(live))
	}
	return next, nil
}

// damaged reports damage that is not a torn tail: records after it may
// have been acknowledged.
func (db *DB) damaged(idx uint64, sp span, size int) error {
	db.m.walCorrupt.WithLabelValues("corrupt").Inc()
	db.log.Error("CORRUPT WRITE-AHEAD LOG: damaged bytes before valid records; acknowledged messages may be lost",
		"segment", segName(idx), "from", sp.from, "to", sp.to, "segment_bytes", size,
		"salvage", db.opts.SalvageCorruptWAL)
	if !db.opts.SalvageCorruptWAL {
		return fmt.Errorf("%w: segment %s, bytes %d..%d of %d (set SalvageCorruptWAL to open without them)",
			ErrCorruptWAL, segName(idx), sp.from, sp.to, size)
	}
	if n := len(db.corruptSegs); n == 0 || db.corruptSegs[n-1] != idx {
		db.corruptSegs = append(db.corruptSegs, idx)
	}
	return nil
}

// quarantine keeps a copy (hard link) of each damaged segment in
// wal/corrupt/ before the checkpoint that follows a salvage removes it.
func (db *DB) quarantine(walDir string) error {
	qdir := filepath.Join(walDir, corruptDirName)
	if err := os.MkdirAll(qdir, 0o755); err != nil {
		return fmt.Errorf("tsdb: creating %s: %w", qdir, err)
	}
	for _, idx := range db.corruptSegs {
		dst := filepath.Join(qdir, segName(idx))
		if err := os.Link(filepath.Join(walDir, segName(idx)), dst); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("tsdb: keeping damaged wal segment: %w", err)
		}
		db.log.Error("damaged wal segment kept for inspection", "path", dst)
	}
	return syncDir(qdir)
}

func truncateSync(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// replayRecord applies one WAL record at open.
func (db *DB) replayRecord(r *record) {
	m := &r.msg
	switch r.typ {
	case recDelete:
		d := db.devices[m.Device]
		if d == nil {
			return
		}
		delete(db.devices, m.Device)
		var ids []int64
		for _, s := range d.series {
			ids = append(ids, s.id)
		}
		db.seriesCount.Add(-int64(len(d.series)))
		db.applyDelete(d, ids)
	case recMessage:
		d := db.getDevice(m.Device)
		if m.HasSeq && d.durable.seen(m.Seq) {
			db.log.Warn("wal record already covered by the dedup state; skipped", "device", m.Device, "seq", m.Seq)
			return
		}
		ser := make([]*series, 0, len(m.Points))
		kept := m.Points[:0]
		for _, p := range m.Points {
			s := d.series[p.Metric]
			if s == nil {
				s = db.newSeries(d, p.Metric, p.Value.Kind)
			}
			if s.kind != p.Value.Kind {
				// Admission refuses this, so it means a damaged store.
				db.log.Error("wal point of the wrong kind skipped", "device", m.Device, "metric", p.Metric)
				continue
			}
			kept = append(kept, p)
			ser = append(ser, s)
		}
		m.Points = kept
		db.apply(d, ser, m)
		if m.HasSeq {
			d.admit.accept(m.Seq)
		}
	}
}
