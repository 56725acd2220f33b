package registry

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
)

// Gateways (DESIGN §3: "a gateway may also act for the devices registered
// behind it"). A device is a child of gateway G when its Gateway is G; a
// device is a gateway when at least one device is its child.
//
// The broker asks on every publish a gateway makes for a child and on
// every delivery to it, and the ingest path for every device of every
// batch, so the answers are cached in memory: for GatewayCacheTTL at most,
// and dropped at once when this service creates or deletes a device (the
// only operations that change gateway relations). The TTL bounds staleness
// only for changes made behind the service's back (another process writing
// the same registry file). Lookup errors are not cached and answer false:
// a gateway is denied rather than trusted while the registry is failing.

// GatewayCacheTTL is how long an IsChild or IsGateway answer is reused.
const GatewayCacheTTL = 5 * time.Second

// maxGatewayCache bounds the cache; when full it is cleared.
const maxGatewayCache = 100_000

// childCounter is implemented by stores that can tell whether a gateway
// has children without a scan (the embedded store, with an index).
type childCounter interface {
	HasChildren(ctx context.Context, gateway string) (bool, error)
}

// gwCache caches device → gateway and gateway → has children.
type gwCache struct {
	mu      sync.Mutex
	gen     uint64 // bumped by every invalidation
	parent  map[string]gwEntry
	gateway map[string]gwEntry
}

type gwEntry struct {
	v   string // parent: the gateway id ("" none); gateway: "1" or ""
	exp time.Time
}

func (c *gwCache) get(m map[string]gwEntry, id string, now time.Time) (string, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := m[id]
	if ok && now.Before(e.exp) {
		return e.v, c.gen, true
	}
	return "", c.gen, false
}

// put stores an answer looked up since generation gen, unless the cache
// was invalidated in between (the answer may be stale then).
func (c *gwCache) put(m map[string]gwEntry, id, v string, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if len(m) >= maxGatewayCache {
		clear(m)
	}
	m[id] = gwEntry{v: v, exp: now.Add(GatewayCacheTTL)}
}

func (c *gwCache) invalidate() {
	c.mu.Lock()
	c.gen++
	clear(c.parent)
	clear(c.gateway)
	c.mu.Unlock()
}

// IsChild reports whether device is registered behind gateway. It is
// false for unknown devices, for gateway == device, and when the registry
// cannot be read (logged).
func (s *Service) IsChild(ctx context.Context, gateway, device string) bool {
	if gateway == "" || device == "" || gateway == device {
		return false
	}
	c := &s.gw
	now := s.now()
	p, gen, ok := c.get(c.parent, device, now)
	if ok {
		return p == gateway
	}
	d, err := s.st.GetDevice(ctx, device)
	switch {
	case errors.Is(err, store.ErrNotFound):
		d = store.Device{}
	case err != nil:
		s.log.Warn("gateway check failed", "gateway", gateway, "device", device, "err", err)
		return false
	}
	c.put(c.parent, device, d.Gateway, gen, now)
	return d.Gateway == gateway
}

// IsGateway reports whether any device is registered behind id. It is
// false when the registry cannot be read (logged).
func (s *Service) IsGateway(ctx context.Context, id string) bool {
	if id == "" {
		return false
	}
	c := &s.gw
	now := s.now()
	v, gen, ok := c.get(c.gateway, id, now)
	if ok {
		return v != ""
	}
	has, err := s.hasChildren(ctx, id)
	if err != nil {
		s.log.Warn("gateway check failed", "gateway", id, "err", err)
		return false
	}
	if has {
		v = "1"
	}
	c.put(c.gateway, id, v, gen, now)
	return has
}

// hasChildren asks the store, through its index when it has one, else by
// paging through the registry.
func (s *Service) hasChildren(ctx context.Context, id string) (bool, error) {
	if cc, ok := s.st.(childCounter); ok {
		return cc.HasChildren(ctx, id)
	}
	const page = 1000
	o := store.ListOptions{Limit: page}
	for {
		ds, err := s.st.ListDevices(ctx, o)
		if err != nil {
			return false, err
		}
		for _, d := range ds {
			if d.Gateway == id {
				return true, nil
			}
		}
		if len(ds) < page {
			return false, nil
		}
		o.After = ds[len(ds)-1].ID
	}
}
