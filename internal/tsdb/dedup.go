package tsdb

import (
	"encoding/binary"
	"errors"
)

// DefaultDedupWindow is the number of sequence numbers below a device's
// highest one that are remembered for duplicate detection.
const DefaultDedupWindow = 1024

// window is an anti-replay window (as in IPsec): the highest sequence
// number seen (hwm) and a ring bitmap of the size seqs at or below it.
//
//   - seq > hwm: new; the window slides up.
//   - hwm-size < seq ≤ hwm: a duplicate when its bit is set, else new.
//   - seq ≤ hwm-size: below the window. The device's counter restarted
//     (reboot, factory reset): the message is new and the window restarts
//     at seq.
//
// The same transitions are applied at admission and when the WAL is
// replayed, so the state after a restart is exactly the state before it.
type window struct {
	init bool
	hwm  uint64
	bits []uint64
}

func newWindow(size int) window {
	return window{bits: make([]uint64, windowWords(size))}
}

func windowWords(size int) int {
	if size <= 0 {
		size = DefaultDedupWindow
	}
	return (size + 63) / 64
}

func (w *window) size() uint64 { return uint64(len(w.bits)) * 64 }

func (w *window) bit(seq uint64) (int, uint64) {
	i := seq % w.size()
	return int(i / 64), 1 << (i % 64)
}

// seen reports whether seq is a duplicate.
func (w *window) seen(seq uint64) bool {
	if !w.init || seq > w.hwm || w.hwm-seq >= w.size() {
		return false
	}
	i, m := w.bit(seq)
	return w.bits[i]&m != 0
}

// accept records seq, which must not be seen. It reports whether the
// window was reset because seq was below it.
func (w *window) accept(seq uint64) (reset bool) {
	switch {
	case !w.init:
		w.init = true
		clear(w.bits)
		w.hwm = seq
	case seq > w.hwm:
		if gap := seq - w.hwm; gap >= w.size() {
			clear(w.bits)
		} else {
			for s := w.hwm + 1; s < seq; s++ {
				i, m := w.bit(s)
				w.bits[i] &^= m
			}
		}
		w.hwm = seq
	case w.hwm-seq >= w.size():
		clear(w.bits)
		w.hwm = seq
		reset = true
	}
	i, m := w.bit(seq)
	w.bits[i] |= m
	return reset
}

// clone returns an independent copy.
func (w *window) clone() window {
	c := *w
	c.bits = append([]uint64(nil), w.bits...)
	return c
}

// marshal encodes the window: uvarint size in bits, then the bitmap words
// (little endian). The hwm is stored beside it.
func (w *window) marshal() []byte {
	b := binary.AppendUvarint(nil, w.size())
	for _, x := range w.bits {
		b = binary.LittleEndian.AppendUint64(b, x)
	}
	return b
}

var errBadWindow = errors.New("tsdb: bad dedup window encoding")

// unmarshalWindow decodes a stored window into one of size bits. When the
// stored size differs, the seqs in the overlap below hwm are carried over.
func unmarshalWindow(hwm uint64, b []byte, size int) (window, error) {
	w := newWindow(size)
	w.init = true
	w.hwm = hwm
	n, k := binary.Uvarint(b)
	if k <= 0 || n == 0 || n%64 != 0 || uint64(len(b)-k) != n/8 {
		return w, errBadWindow
	}
	old := window{init: true, hwm: hwm, bits: make([]uint64, n/64)}
	for i := range old.bits {
		old.bits[i] = binary.LittleEndian.Uint64(b[k+8*i:])
	}
	if old.size() == w.size() {
		return old, nil
	}
	span := min(old.size(), w.size())
	for d := uint64(0); d < span && d <= hwm; d++ {
		if old.seen(hwm - d) {
			i, m := w.bit(hwm - d)
			w.bits[i] |= m
		}
	}
	return w, nil
}
