package bench

import (
	"testing"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<20; v += 1 + v/97 {
		i := bucketOf(v)
		if i < prev {
			t.Fatalf("bucketOf(%d) = %d < bucketOf of a smaller value (%d)", v, i, prev)
		}
		prev = i
		if hi := bucketHigh(i); hi < v || float64(hi-v) > float64(v)/32+1 {
			t.Fatalf("bucketHigh(bucketOf(%d)) = %d; want within 1/32 above", v, hi)
		}
	}
	if i := bucketOf(^uint64(0)); i >= histBuckets {
		t.Fatalf("bucketOf(max) = %d; want < %d", i, histBuckets)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var a, b histogram
	for i := 1; i <= 1000; i++ {
		h := &a
		if i%2 == 0 {
			h = &b
		}
		h.record(int64(i) * int64(time.Microsecond))
	}
	a.merge(&b)
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, time.Millisecond}} {
		got := a.quantile(tc.q)
		if got < tc.want || float64(got-tc.want) > float64(tc.want)/32 {
			t.Errorf("quantile(%v) = %v; want %v (+3%%)", tc.q, got, tc.want)
		}
	}
	if a.max != uint64(time.Millisecond) || a.n != 1000 {
		t.Errorf("max, n = %d, %d; want 1ms, 1000", a.max, a.n)
	}
	if m := a.mean(); m != 500500*time.Nanosecond {
		t.Errorf("mean = %v; want 500.5µs", m)
	}
	var empty histogram
	if empty.quantile(0.99) != 0 || empty.mean() != 0 {
		t.Error("empty histogram: want zero quantile and mean")
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h histogram
	for i := 0; b.Loop(); i++ {
		h.record(int64(i&0xFFFFF) * 37)
	}
}
