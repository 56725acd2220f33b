package tsdb

import (
	"math"
	"testing"
)

func TestWindow(t *testing.T) {
	type step struct {
		seq   uint64
		dup   bool // want seen() before accepting
		reset bool // want accept() to reset
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first", []step{{seq: 5}, {seq: 5, dup: true}}},
		{"increasing", []step{{seq: 1}, {seq: 2}, {seq: 3}, {seq: 2, dup: true}, {seq: 1, dup: true}}},
		{"gap then fill", []step{{seq: 10}, {seq: 20}, {seq: 15}, {seq: 15, dup: true}, {seq: 11}, {seq: 20, dup: true}}},
		{"edge of window", []step{{seq: 2000}, {seq: 2000 - 1023}, {seq: 2000 - 1023, dup: true}}},
		{"below window restarts", []step{{seq: 2000}, {seq: 2000 - 1024, reset: true}, {seq: 2000 - 1024, dup: true}, {seq: 2000}, {seq: 2000, dup: true}}},
		{"restart at zero", []step{{seq: 5000}, {seq: 0, reset: true}, {seq: 1}, {seq: 0, dup: true}}},
		{"slide clears old bits", []step{{seq: 1}, {seq: 1 + 1024}, {seq: 1, reset: true}}},
		{"big jump", []step{{seq: 3}, {seq: 1 << 40}, {seq: 3, reset: true}}},
		{"slot reuse after slide", []step{{seq: 100}, {seq: 100 + 512}, {seq: 100 + 1024}, {seq: 100 + 512, dup: true}, {seq: 101 + 512}}},
		{"max", []step{{seq: math.MaxUint64}, {seq: math.MaxUint64, dup: true}, {seq: math.MaxUint64 - 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWindow(1024)
			for i, s := range tt.steps {
				if got := w.seen(s.seq); got != s.dup {
					t.Fatalf("step %d: seen(%d) = %v; want %v", i, s.seq, got, s.dup)
				}
				if s.dup {
					continue
				}
				if got := w.accept(s.seq); got != s.reset {
					t.Fatalf("step %d: accept(%d) reset = %v; want %v", i, s.seq, got, s.reset)
				}
			}
		})
	}
}

func TestWindowMarshal(t *testing.T) {
	w := newWindow(1024)
	for _, s := range []uint64{1, 5, 9, 700, 1000, 1003} {
		w.accept(s)
	}
	for _, size := range []int{1024, 64, 4096} {
		got, err := unmarshalWindow(w.hwm, w.marshal(), size)
		if err != nil {
			t.Fatalf("unmarshalWindow(size %d): %v", size, err)
		}
		for s := uint64(0); s <= 1100; s++ {
			inBoth := w.hwm-s < min(uint64(size), 1024)
			if inBoth && got.seen(s) != w.seen(s) {
				t.Errorf("size %d: seen(%d) = %v; want %v", size, s, got.seen(s), w.seen(s))
			}
		}
	}
	if _, err := unmarshalWindow(1, []byte{3, 1}, 1024); err == nil {
		t.Error("unmarshalWindow(garbage) succeeded")
	}
}
