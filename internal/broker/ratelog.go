package broker

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// maxLimiterKeys bounds the rate limiter's memory: beyond it, new keys are
// not logged until old ones age out (the metrics still count everything).
const maxLimiterKeys = 1 << 16

// rateLimiter lets a log line through at most once per key per interval.
// Keys are "what|reason|who" (device id or remote address).
type rateLimiter struct {
	interval time.Duration
	now      func() time.Time

	mu        sync.Mutex
	last      map[string]time.Time
	lastSweep time.Time
}

func newRateLimiter(interval time.Duration, now func() time.Time) *rateLimiter {
	return &rateLimiter{interval: interval, now: now, last: make(map[string]time.Time)}
}

// allow reports whether a line keyed key may be logged now.
func (r *rateLimiter) allow(key string) bool {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.lastSweep) >= r.interval {
		for k, t := range r.last {
			if now.Sub(t) >= r.interval {
				delete(r.last, k)
			}
		}
		r.lastSweep = now
	}
	if t, ok := r.last[key]; ok && now.Sub(t) < r.interval {
		return false
	}
	if len(r.last) >= maxLimiterKeys {
		return false
	}
	r.last[key] = now
	return true
}

// mochiLogHandler routes mochi's own logs to fieldhub's logger: warnings
// and errors only, each message at most once per client per interval (mochi
// logs a warning for every failed connection and packet error, which would
// flood the log during a reconnect storm).
type mochiLogHandler struct {
	next    slog.Handler
	limiter *rateLimiter
	client  string // a "client" attribute added with WithAttrs
}

func newMochiLogHandler(next slog.Handler, limiter *rateLimiter) *mochiLogHandler {
	return &mochiLogHandler{next: next, limiter: limiter}
}

func (h *mochiLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && h.next.Enabled(ctx, l)
}

func (h *mochiLogHandler) Handle(ctx context.Context, r slog.Record) error {
	client := h.client
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "client" {
			client = a.Value.String()
			return false
		}
		return true
	})
	if !h.limiter.allow("mochi|" + r.Message + "|" + client) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *mochiLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	for _, a := range as {
		if a.Key == "client" {
			c.client = a.Value.String()
		}
	}
	c.next = h.next.WithAttrs(as)
	return &c
}

func (h *mochiLogHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	return &c
}
