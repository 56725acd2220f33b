package hub

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/store"
)

// presence tracks when each device was last seen (connect, disconnect,
// stored message) and writes the times to the registry now and then.
type presence struct {
	online func(id string) bool
	st     store.Registry
	log    *slog.Logger

	mu    sync.Mutex
	seen  map[string]time.Time
	dirty map[string]time.Time

	connects, disconnects prometheus.Counter
}

func newPresence(st store.Registry, log *slog.Logger, reg prometheus.Registerer) *presence {
	p := &presence{
		st: st, log: log,
		seen:  make(map[string]time.Time),
		dirty: make(map[string]time.Time),
		connects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_devices_connected_total", Help: "Device sessions established.",
		}),
		disconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_devices_disconnected_total", Help: "Device sessions ended.",
		}),
	}
	reg.MustRegister(p.connects, p.disconnects)
	return p
}

// Connected implements broker.Presence.
func (p *presence) Connected(id string, at time.Time) {
	p.connects.Inc()
	p.Seen(id, at)
}

// Disconnected implements broker.Presence.
func (p *presence) Disconnected(id string, at time.Time) {
	p.disconnects.Inc()
	p.Seen(id, at)
}

// Seen records activity of id at time at.
func (p *presence) Seen(id string, at time.Time) {
	p.mu.Lock()
	if at.After(p.seen[id]) {
		p.seen[id] = at
		p.dirty[id] = at
	}
	p.mu.Unlock()
}

// Online reports whether id has a live session.
func (p *presence) Online(id string) bool { return p.online != nil && p.online(id) }

// LastSeen returns the last activity of id known to this process.
func (p *presence) LastSeen(id string) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen[id]
}

// Forget drops a deleted device.
func (p *presence) Forget(id string) {
	p.mu.Lock()
	delete(p.seen, id)
	delete(p.dirty, id)
	p.mu.Unlock()
}

// flush writes the dirty last-seen times to the registry.
func (p *presence) flush(ctx context.Context) {
	p.mu.Lock()
	d := p.dirty
	p.dirty = make(map[string]time.Time)
	p.mu.Unlock()
	if len(d) == 0 {
		return
	}
	if err := p.st.SetLastSeen(ctx, d); err != nil {
		p.log.Warn("saving last-seen times failed", "devices", len(d), "err", err)
	}
}

// run flushes every interval until ctx ends, then once more.
func (p *presence) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			p.flush(fctx)
			cancel()
			return
		case <-t.C:
			p.flush(ctx)
		}
	}
}
