package registry

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
)

// Known answers are cached: a registered device for KnownTTL, an unknown
// id for UnknownTTL (a device just created through another hub instance
// is accepted at most that much later).
const (
	KnownTTL   = 5 * time.Minute
	UnknownTTL = 5 * time.Second
	// maxKnownCache bounds the cache; when full it is cleared.
	maxKnownCache = 1_000_000
)

type knownCache struct {
	mu  sync.Mutex
	gen uint64
	m   map[string]knownEntry
}

type knownEntry struct {
	known bool
	exp   time.Time
}

// Known reports whether id is a registered device. Hubs behind an external
// broker ask it for every message before storing it, so that nothing is
// stored for an id the registry does not have, whatever the broker let
// through. It is false when the registry cannot be read (logged). Creating
// and deleting devices through this service updates the answer at once.
func (s *Service) Known(ctx context.Context, id string) bool {
	now := s.now()
	c := &s.known
	c.mu.Lock()
	e, ok := c.m[id]
	gen := c.gen
	c.mu.Unlock()
	if ok && now.Before(e.exp) {
		return e.known
	}
	_, err := s.st.GetDevice(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		s.log.Warn("device lookup failed", "device", id, "err", err)
		return false
	}
	known := err == nil
	ttl := UnknownTTL
	if known {
		ttl = KnownTTL
	}
	c.mu.Lock()
	if gen == c.gen {
		if c.m == nil || len(c.m) >= maxKnownCache {
			c.m = make(map[string]knownEntry)
		}
		c.m[id] = knownEntry{known: known, exp: now.Add(ttl)}
	}
	c.mu.Unlock()
	return known
}

// forgetKnown drops the cached answer for id (created or deleted here).
func (s *Service) forgetKnown(id string) {
	c := &s.known
	c.mu.Lock()
	c.gen++
	delete(c.m, id)
	c.mu.Unlock()
}
