package bench

import (
	"math/bits"
	"time"
)

// histogram is a log-linear latency histogram in the manner of HDR
// histograms: each power of two is split into 32 equal buckets, so a
// recorded value is reported within 1/32 (about 3%) of its true value. It
// covers every non-negative int64 of nanoseconds in 1,920 counters
// (15 KiB), recording is a few
// arithmetic operations with no allocation, and two histograms merge by
// adding their counters. It is not safe for concurrent use: each reader
// goroutine keeps its own and they are merged at the end.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
	sum    uint64 // nanoseconds
	max    uint64 // nanoseconds, exact
}

const (
	histSubBits = 5
	histSub     = 1 << histSubBits // buckets per power of two
	histBuckets = (64 - histSubBits + 1) * histSub
)

// bucketOf returns the bucket index of v nanoseconds.
func bucketOf(v uint64) int {
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1
	return (shift+1)*histSub + int(v>>shift) - histSub
}

// bucketHigh returns the largest value that falls into bucket i.
func bucketHigh(i int) uint64 {
	if i < histSub {
		return uint64(i)
	}
	shift := i/histSub - 1
	m := uint64(i%histSub + histSub)
	return (m+1)<<shift - 1
}

// record adds one latency of v nanoseconds.
func (h *histogram) record(v int64) {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	h.counts[bucketOf(u)]++
	h.n++
	h.sum += u
	if u > h.max {
		h.max = u
	}
}

// merge adds o's counts to h.
func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile (0 < q ≤ 1) as the upper bound of the
// bucket holding it, capped at the exact maximum; 0 when empty.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(bucketHigh(i), h.max))
		}
	}
	return time.Duration(h.max)
}

// mean returns the average latency; 0 when empty.
func (h *histogram) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / h.n)
}
