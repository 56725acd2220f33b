// Package live fans stored telemetry out to live subscribers (the
// dashboard's Server-Sent Events stream). Publish never blocks: each
// subscriber has a bounded buffer, and a message that does not fit is
// dropped for that subscriber and counted in fieldhub_live_dropped_total.
package live

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/payload"
)

// Defaults of Options.
const (
	DefaultBuffer    = 256
	DefaultPerDevice = 64
	DefaultTotal     = 1000
)

var (
	// ErrTooMany refuses a subscription beyond Options.PerDevice or
	// Options.Total.
	ErrTooMany = errors.New("live: too many live subscribers")
	// ErrClosed refuses a subscription after Close.
	ErrClosed = errors.New("live: closed")
)

// Options configure a Broadcaster. The zero value works.
type Options struct {
	Buffer     int // messages buffered per subscriber; default 256
	PerDevice  int // subscribers per device; default 64
	Total      int // subscribers in all; default 1,000
	Registerer prometheus.Registerer
}

// Broadcaster hands published messages to the subscribers of their device.
type Broadcaster struct {
	o       Options
	mu      sync.RWMutex
	subs    map[string]map[*sub]struct{}
	total   int
	closed  bool
	dropped prometheus.Counter
	active  prometheus.GaugeFunc
}

type sub struct{ ch chan *payload.Message }

// New returns a Broadcaster.
func New(o Options) *Broadcaster {
	if o.Buffer <= 0 {
		o.Buffer = DefaultBuffer
	}
	if o.PerDevice <= 0 {
		o.PerDevice = DefaultPerDevice
	}
	if o.Total <= 0 {
		o.Total = DefaultTotal
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	b := &Broadcaster{o: o, subs: make(map[string]map[*sub]struct{})}
	b.dropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fieldhub_live_dropped_total",
		Help: "Telemetry messages not handed to a live subscriber because its buffer was full (slow consumer).",
	})
	b.active = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fieldhub_live_subscribers",
		Help: "Open live telemetry subscriptions.",
	}, func() float64 { return float64(b.Subscribers()) })
	o.Registerer.MustRegister(b.dropped, b.active)
	return b
}

// Subscribe returns the messages stored for device from now on. The
// channel is closed by cancel (which must be called, and may be called more
// than once) or by Close. Messages are shared: read them, never change them.
func (b *Broadcaster) Subscribe(device string) (<-chan *payload.Message, func(), error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, nil, ErrClosed
	}
	m := b.subs[device]
	if b.total >= b.o.Total || len(m) >= b.o.PerDevice {
		return nil, nil, ErrTooMany
	}
	if m == nil {
		m = make(map[*sub]struct{})
		b.subs[device] = m
	}
	s := &sub{ch: make(chan *payload.Message, b.o.Buffer)}
	m[s] = struct{}{}
	b.total++
	var once sync.Once
	cancel := func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			m := b.subs[device]
			if _, ok := m[s]; !ok {
				return // closed by Close
			}
			delete(m, s)
			if len(m) == 0 {
				delete(b.subs, device)
			}
			b.total--
			close(s.ch)
		})
	}
	return s.ch, cancel, nil
}

// Publish hands m to the subscribers of m.Device without blocking. It is
// called on the store's committer goroutine.
func (b *Broadcaster) Publish(m *payload.Message) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for s := range b.subs[m.Device] {
		select {
		case s.ch <- m:
		default:
			b.dropped.Inc()
		}
	}
}

// Subscribers returns the number of open subscriptions.
func (b *Broadcaster) Subscribers() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.total
}

// Close ends every subscription (their channels are closed) and refuses new
// ones with ErrClosed. The hub calls it before stopping its HTTP server, so
// that no open stream holds the shutdown up. It is safe to call more than
// once.
func (b *Broadcaster) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	for _, m := range b.subs {
		for s := range m {
			close(s.ch)
		}
	}
	b.subs = make(map[string]map[*sub]struct{})
	b.total = 0
}
