package bench

import (
	"sync/atomic"
	"time"
)

// pacer is a token bucket shared by all connections, kept as the time of
// the next free slot (the generic cell rate algorithm): each publish
// reserves the next slot with one compare-and-swap and waits until its
// time. A writer that falls behind may catch up by at most burst, so a
// stall is not followed by an unbounded flood.
type pacer struct {
	interval int64 // nanoseconds between publishes, over all connections
	burst    int64 // nanoseconds of slots a late writer may catch up
	next     atomic.Int64
}

// newPacer returns a pacer for rate messages per second.
func newPacer(rate float64) *pacer {
	iv := int64(float64(time.Second)/rate + 0.5)
	if iv < 1 {
		iv = 1
	}
	return &pacer{interval: iv, burst: int64(5 * time.Millisecond)}
}

// reserve claims the next slot and returns its time; now and the result are
// nanoseconds since the run's start.
func (p *pacer) reserve(now int64) int64 {
	for {
		n := p.next.Load()
		at := max(n, now-p.burst)
		if p.next.CompareAndSwap(n, at+p.interval) {
			return at
		}
	}
}
