package hub

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/topic"
)

// maxStatusLen bounds the status text kept per device.
const maxStatusLen = 64

// presence tracks when each device was last seen (connect, disconnect,
// stored message) and writes the times to the registry now and then. It
// implements broker.Presence and broker.SubscribeWatcher, passing
// connects and subscriptions on to the command service, and keeps the
// last status each device (or its will) published on devices/{id}/status.
type presence struct {
	online func(id string) bool
	count  func() int
	// devices is told of connects and subscriptions (the command
	// service); set before the broker starts.
	devices deviceWatcher
	st      store.Registry
	log     *slog.Logger

	mu     sync.Mutex
	seen   map[string]time.Time
	dirty  map[string]time.Time
	status map[string]string

	connects, disconnects prometheus.Counter
}

// deviceWatcher is told when a device connects and what clients subscribe to.
type deviceWatcher interface {
	Connected(device string)
	Subscribed(clientID string, filters []string)
}

func newPresence(st store.Registry, log *slog.Logger, reg prometheus.Registerer) *presence {
	p := &presence{
		st: st, log: log,
		seen:   make(map[string]time.Time),
		dirty:  make(map[string]time.Time),
		status: make(map[string]string),
		connects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_devices_connected_total", Help: "Device sessions established.",
		}),
		disconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_devices_disconnected_total", Help: "Device sessions ended.",
		}),
	}
	online := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fieldhub_devices_online", Help: "Devices with a live MQTT session.",
	}, func() float64 {
		if p.count == nil {
			return 0
		}
		return float64(p.count())
	})
	reg.MustRegister(p.connects, p.disconnects, online)
	return p
}

// Connected implements broker.Presence.
func (p *presence) Connected(id string, at time.Time) {
	p.connects.Inc()
	p.Seen(id, at)
	if p.devices != nil {
		p.devices.Connected(id)
	}
}

// Disconnected implements broker.Presence.
func (p *presence) Disconnected(id string, at time.Time) {
	p.disconnects.Inc()
	p.Seen(id, at)
}

// Subscribed implements broker.SubscribeWatcher.
func (p *presence) Subscribed(clientID string, filters []string) {
	if p.devices != nil {
		p.devices.Subscribed(clientID, filters)
	}
}

// statusPublished records a message on devices/{id}/status: the device's
// own "online", or its will's "offline".
func (p *presence) statusPublished(name string, payload []byte) {
	t, err := topic.Parse(name)
	if err != nil || t.Kind != topic.KindStatus {
		return
	}
	s := string(payload)
	if len(s) > maxStatusLen {
		s = s[:maxStatusLen]
	}
	p.mu.Lock()
	if s == "" {
		delete(p.status, t.Device) // a cleared retained status
	} else {
		p.status[t.Device] = s
	}
	p.mu.Unlock()
}

// Status returns the last status id published on devices/{id}/status
// since the hub started ("" when none).
func (p *presence) Status(id string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status[id]
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
	delete(p.status, id)
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

// externalStatus records a status message read from an external broker
// (every hub instance reads them all). Without the broker's own connect
// and disconnect events, a device is online while its retained status is
// "online": the change to online counts as a connect (what is queued for
// it is sent), the change away from it as a disconnect.
func (p *presence) externalStatus(device string, payload []byte) {
	was := p.statusOnline(device)
	p.statusPublished(topic.Status(device), payload)
	now := p.statusOnline(device)
	switch {
	case now && !was:
		p.Connected(device, time.Now())
	case was && !now:
		p.Disconnected(device, time.Now())
	}
}

// statusOnline reports whether id's last status is "online".
func (p *presence) statusOnline(id string) bool { return p.Status(id) == "online" }

// onlineCount counts the devices whose last status is "online".
func (p *presence) onlineCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, s := range p.status {
		if s == "online" {
			n++
		}
	}
	return n
}
