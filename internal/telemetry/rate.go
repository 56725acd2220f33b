package telemetry

import (
	"sync"
	"time"
)

// Message rates: each device's count of stored messages over the last
// minute, kept in a ring of small buckets (a sliding-window counter). A
// device costs about 80 bytes; a device silent for a whole window is
// forgotten at the next sweep, so memory follows the devices that are
// sending, never the registry.
const (
	// RateWindow is the span MessageRate counts over.
	RateWindow = time.Minute
	// rateBuckets is the number of buckets of the window (5 s each).
	rateBuckets = 12
	rateBucket  = RateWindow / rateBuckets
	// maxRateDevices bounds the devices counted at once; beyond it new
	// devices are not counted until a sweep makes room.
	maxRateDevices = 1_000_000
)

// rateCounter is one device's window: counts[i] holds the messages of
// bucket number slot-k where i = (slot-k) mod len(counts).
type rateCounter struct {
	slot   int64 // bucket number (time / rateBucket) of the newest bucket
	counts [rateBuckets + 1]uint32
}

// rates counts stored messages per device.
type rates struct {
	mu        sync.Mutex
	m         map[string]*rateCounter
	lastSweep int64 // bucket number of the last sweep
	max       int
}

func newRates() *rates { return &rates{m: map[string]*rateCounter{}, max: maxRateDevices} }

func slotOf(t time.Time) int64 { return t.UnixNano() / int64(rateBucket) }

// advance moves c's newest bucket to slot, zeroing the buckets skipped.
func (c *rateCounter) advance(slot int64) {
	if slot <= c.slot {
		return
	}
	n := int64(len(c.counts))
	if slot-c.slot >= n {
		c.counts = [rateBuckets + 1]uint32{}
	} else {
		for s := c.slot + 1; s <= slot; s++ {
			c.counts[s%n] = 0
		}
	}
	c.slot = slot
}

// observe counts one message of device at t.
func (r *rates) observe(device string, t time.Time) {
	slot := slotOf(t)
	r.mu.Lock()
	defer r.mu.Unlock()
	if slot-r.lastSweep > rateBuckets {
		r.sweepLocked(slot)
	}
	c := r.m[device]
	if c == nil {
		if len(r.m) >= r.max {
			return
		}
		c = &rateCounter{slot: slot}
		r.m[device] = c
	}
	c.advance(slot)
	if slot < c.slot-rateBuckets {
		return // older than the window (a clock step back)
	}
	c.counts[slot%int64(len(c.counts))]++
}

// sweepLocked forgets the devices with nothing in the window ending at slot.
func (r *rates) sweepLocked(slot int64) {
	for id, c := range r.m {
		if slot-c.slot > rateBuckets {
			delete(r.m, id)
		}
	}
	r.lastSweep = slot
}

// perMinute returns the messages of device in the minute before t: the
// full buckets of the window plus the share of the oldest bucket still
// inside it.
func (r *rates) perMinute(device string, t time.Time) float64 {
	slot := slotOf(t)
	frac := float64(t.UnixNano()%int64(rateBucket)) / float64(rateBucket)
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.m[device]
	if c == nil || slot-c.slot > rateBuckets {
		return 0
	}
	n := int64(len(c.counts))
	var sum float64
	for s := slot - rateBuckets + 1; s <= slot; s++ {
		if s <= c.slot && s > c.slot-n {
			sum += float64(c.counts[s%n])
		}
	}
	if s := slot - rateBuckets; s <= c.slot && s > c.slot-n {
		sum += float64(c.counts[s%n]) * (1 - frac)
	}
	return sum * float64(time.Minute) / float64(RateWindow)
}

func (r *rates) forget(device string) {
	r.mu.Lock()
	delete(r.m, device)
	r.mu.Unlock()
}

func (r *rates) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// MessageRate returns the messages of device stored in the last minute
// (RateWindow), gateway batch readings counted for their own device: 0
// for a device that sent nothing in that time.
func (in *Ingester) MessageRate(device string) float64 {
	return in.rates.perMinute(device, in.now())
}

// Forget drops the message rate of a deleted device at once (a device
// silent for a whole window is forgotten anyway).
func (in *Ingester) Forget(device string) { in.rates.forget(device) }
