package spool

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/bits"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// BenchResult is the outcome of RunBench.
type BenchResult struct {
	Records     int // records appended and replayed
	RecordBytes int // data bytes per record
	Concurrency int // concurrent appenders

	AppendPerSec float64       // durable appends per second
	ReplayPerSec float64       // records read and acknowledged per second
	AppendP50    time.Duration // latency of one durable Append
	AppendP99    time.Duration
	AppendTime   time.Duration
	ReplayTime   time.Duration
	BytesOnDisk  int64  // segment bytes after the appends
	Syncs        uint64 // group commits (segment syncs)
}

// RunBench measures the spool on the disk under dir: concurrency
// goroutines append n records of size random bytes with Append (each
// returns once durable), then one reader reads them back in batches of
// up to 1,000 and acknowledges each batch. It works in a new directory
// under dir and removes it afterwards.
func RunBench(ctx context.Context, dir string, n int, size int, concurrency int) (BenchResult, error) {
	if n < 1 || size < 0 || concurrency < 1 {
		return BenchResult{}, fmt.Errorf("%w: bench wants n >= 1, size >= 0, concurrency >= 1", ErrInvalidOptions)
	}
	res := BenchResult{Records: n, RecordBytes: size, Concurrency: concurrency}
	work, err := os.MkdirTemp(dir, "spool-bench-")
	if err != nil {
		return res, fmt.Errorf("spool: bench: %w", err)
	}
	defer os.RemoveAll(work)
	need := int64(n) * int64(recHeaderSize+size+32)
	sp, err := Open(work, Options{MaxBytes: max(DefaultMaxBytes, 2*need+4*DefaultSegmentBytes)})
	if err != nil {
		return res, err
	}
	defer sp.Close()

	data := make([]byte, size)
	rand.Read(data)
	var (
		next  atomic.Int64
		hist  latHist
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
	)
	start := time.Now()
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := "sensor-" + strconv.Itoa(w)
			var h latHist
			for next.Add(1) <= int64(n) {
				t0 := time.Now()
				if _, err := sp.Append(ctx, key, data); err != nil {
					errMu.Lock()
					first = cmpOr(first, err)
					errMu.Unlock()
					return
				}
				h.add(time.Since(t0))
			}
			errMu.Lock()
			hist.merge(&h)
			errMu.Unlock()
		}()
	}
	wg.Wait()
	res.AppendTime = time.Since(start)
	if first != nil {
		return res, first
	}
	st := sp.Stats()
	res.BytesOnDisk, res.Syncs = st.Bytes, st.Syncs
	res.AppendPerSec = float64(n) / res.AppendTime.Seconds()
	res.AppendP50, res.AppendP99 = hist.quantile(0.5), hist.quantile(0.99)

	start = time.Now()
	for got := 0; got < n; {
		recs, err := sp.Read(ctx, 1000, 1<<20)
		if err != nil {
			return res, err
		}
		got += len(recs)
		if err := sp.Ack(recs[len(recs)-1].ID); err != nil {
			return res, err
		}
	}
	res.ReplayTime = time.Since(start)
	res.ReplayPerSec = float64(n) / res.ReplayTime.Seconds()
	return res, sp.Close()
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// latHist is a log-linear latency histogram: 16 buckets per power of two
// of nanoseconds (about 4 % resolution).
type latHist struct {
	n       uint64
	buckets [64 * 16]uint64
}

func latBucket(d time.Duration) int {
	v := uint64(max(d, 1))
	e := bits.Len64(v) - 1 // v in [2^e, 2^(e+1))
	if e < 4 {
		return int(v)
	}
	m := (v >> (e - 4)) & 15
	return e*16 + int(m)
}

func latValue(b int) time.Duration {
	if b < 16 {
		return time.Duration(b)
	}
	e, m := b/16, uint64(b%16)
	return time.Duration((16 + m) << (e - 4))
}

func (h *latHist) add(d time.Duration) {
	h.buckets[latBucket(d)]++
	h.n++
}

func (h *latHist) merge(o *latHist) {
	for i, c := range o.buckets {
		h.buckets[i] += c
	}
	h.n += o.n
}

// quantile returns the lower bound of the bucket holding quantile q.
func (h *latHist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q * float64(h.n-1))
	var seen uint64
	for i, c := range h.buckets {
		seen += c
		if seen > rank {
			return latValue(i)
		}
	}
	return 0
}
