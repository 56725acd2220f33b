package device

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
)

// twinOut is the reported state not yet acknowledged: the patches not
// sent yet, oldest first, consecutive ones merged where one merge patch
// can say both, and the one in flight. Guarded by Client.mu.
type twinOut struct {
	pending []pendingPatch
	sent    *pendingPatch
	gen     uint64 // generation of the last ReportState
	waiters []twinWaiter
}

// pendingPatch is a patch and the generation of the newest ReportState
// merged into it.
type pendingPatch struct {
	patch map[string]any
	gen   uint64
}

type twinWaiter struct {
	gen uint64
	ch  chan error
}

// add queues patch p of generation gen.
func (t *twinOut) add(p map[string]any, gen uint64) {
	if n := len(t.pending); n > 0 && composable(t.pending[n-1].patch, p) {
		t.pending[n-1] = pendingPatch{composePatch(t.pending[n-1].patch, p), gen}
		return
	}
	t.pending = append(t.pending, pendingPatch{p, gen})
}

// ReportState sends patch, a JSON merge patch (RFC 7386: a null removes a
// key), to devices/{id}/twin/reported at QoS 1.
//
// Patches not yet sent are merged where one merge patch can say the same,
// so that a device that reports often while offline sends few patches on
// reconnect; they are sent one at a time, in order. Like Publish, it
// returns nil once the hub has acknowledged the patch, or, while
// disconnected (or if the connection drops first), once the patch is held
// for sending after reconnecting; the held patch is kept in memory only.
// Errors: ErrClosed, ErrRefused (the hub refused the patch, e.g. too
// large), an encoding error, or ctx's error (the patch stays pending).
func (c *Client) ReportState(ctx context.Context, patch map[string]any) error {
	b, err := json.Marshal(patch)
	if err != nil {
		return fmt.Errorf("device: encoding reported state: %w", err)
	}
	if len(b) > MaxPayloadBytes {
		return fmt.Errorf("device: reported state patch of %d bytes, at most %d", len(b), MaxPayloadBytes)
	}
	var norm map[string]any
	if err := json.Unmarshal(b, &norm); err != nil || norm == nil {
		return fmt.Errorf("device: reported state must be a JSON object")
	}
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return ErrClosed
	}
	t := &c.twin
	t.gen++
	t.add(norm, t.gen)
	var ch chan error
	if c.conn != nil {
		ch = make(chan error, 1)
		t.waiters = append(t.waiters, twinWaiter{gen: t.gen, ch: ch})
	}
	c.mu.Unlock()
	c.wake()
	if ch == nil {
		return nil
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return fmt.Errorf("device: waiting for the hub to acknowledge reported state (it stays pending): %w", ctx.Err())
	}
}

// takePatch moves the oldest pending patch in flight and returns its
// encoding, or nil when there is none or one is already in flight.
func (c *Client) takePatch() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &c.twin
	if len(t.pending) == 0 || t.sent != nil {
		return nil
	}
	p := t.pending[0]
	t.pending = t.pending[1:]
	b, err := json.Marshal(p.patch)
	if err != nil { // cannot happen: the patch came from JSON
		c.log.Error("encoding reported state", "err", err)
		return nil
	}
	t.sent = &p
	return b
}

// twinIdle reports whether no reported state waits. Called with mu held.
func (c *Client) twinIdle() bool {
	return len(c.twin.pending) == 0 && c.twin.sent == nil
}

// twinAcked ends the patch in flight.
func (c *Client) twinAcked(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &c.twin
	if t.sent == nil {
		return
	}
	if err != nil {
		c.log.Warn("the hub refused a reported state patch", "err", err)
		err = fmt.Errorf("device: reported state: %w", err)
	}
	keep := t.waiters[:0]
	for _, w := range t.waiters {
		if w.gen <= t.sent.gen {
			w.ch <- err
		} else {
			keep = append(keep, w)
		}
	}
	t.waiters = keep
	t.sent = nil
}

// twinDown puts the patch in flight back in front of the pending ones
// and releases the waiters. Called with mu held.
func (c *Client) twinDown() {
	t := &c.twin
	if s := t.sent; s != nil {
		t.sent = nil
		if len(t.pending) > 0 && composable(s.patch, t.pending[0].patch) {
			t.pending[0].patch = composePatch(s.patch, t.pending[0].patch)
		} else {
			t.pending = append([]pendingPatch{*s}, t.pending...)
		}
	}
	c.releaseTwinWaiters(nil)
}

// releaseTwinWaiters ends every waiting ReportState with err. Called with
// mu held.
func (c *Client) releaseTwinWaiters(err error) {
	for _, w := range c.twin.waiters {
		w.ch <- err
	}
	c.twin.waiters = nil
}

// composable reports whether one merge patch can do what a then b do
// (RFC 7386). It cannot when b patches an object into a member that a
// set to a non-object or removed: applying b then replaces the member,
// which a merge patch cannot express.
func composable(a, b map[string]any) bool {
	for k, bv := range b {
		bm, ok := bv.(map[string]any)
		if !ok {
			continue
		}
		av, had := a[k]
		if !had {
			continue
		}
		am, ok := av.(map[string]any)
		if !ok || !composable(am, bm) {
			return false
		}
	}
	return true
}

// composePatch returns one merge patch that does what a then b do; a and
// b must be composable. It may reuse a and b.
func composePatch(a, b map[string]any) map[string]any {
	for k, bv := range b {
		am, aIsObj := a[k].(map[string]any)
		bm, bIsObj := bv.(map[string]any)
		if aIsObj && bIsObj {
			a[k] = composePatch(am, bm)
		} else {
			a[k] = bv
		}
	}
	return a
}

// desiredState is the last desired state received and the callbacks to
// tell.
type desiredState struct {
	mu      sync.Mutex
	has     bool
	version int64
	state   map[string]any
	subs    []*desiredSub
	kick    chan struct{}
}

type desiredSub struct {
	f         func(version int64, state map[string]any)
	delivered bool
	last      int64
}

func (d *desiredState) init() { d.kick = make(chan struct{}, 1) }

func (d *desiredState) wake() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// OnDesired registers f, called with the desired state of
// devices/{id}/twin/desired ({"version": n, "state": {…}}, retained): the
// one the hub holds when the client (re)connects and every change after
// it. Calls are deduplicated by version: f sees each version at most once
// and never a version lower than one it has seen (a redelivery after a
// reconnect is not a change). If a desired state was received before f
// was registered, f is called with it. Callbacks run one at a time on a
// goroutine of the client, in registration order; when they are slow,
// intermediate versions are skipped in favour of the newest.
func (c *Client) OnDesired(f func(version int64, state map[string]any)) {
	d := &c.desired
	d.mu.Lock()
	d.subs = append(d.subs, &desiredSub{f: f})
	has := d.has
	d.mu.Unlock()
	if has {
		d.wake()
	}
}

// Desired returns the last desired state received (a copy), or 0 and nil
// before any.
func (c *Client) Desired() (version int64, state map[string]any) {
	d := &c.desired
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.has {
		return 0, nil
	}
	return d.version, cloneMap(d.state)
}

// receiveDesired takes a message of devices/{id}/twin/desired.
func (c *Client) receiveDesired(body []byte) {
	if len(body) == 0 {
		return // a retained message cleared
	}
	var doc struct {
		Version *int64         `json:"version"`
		State   map[string]any `json:"state"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.Version == nil {
		c.log.Warn("ignoring a malformed desired state", "err", err, "bytes", len(body))
		return
	}
	d := &c.desired
	d.mu.Lock()
	if d.has && *doc.Version <= d.version {
		d.mu.Unlock()
		return
	}
	d.has, d.version, d.state = true, *doc.Version, doc.State
	d.mu.Unlock()
	c.log.Debug("desired state received", "version", *doc.Version)
	d.wake()
}

// deliverDesired calls the OnDesired callbacks until ctx ends.
func (c *Client) deliverDesired(ctx context.Context) {
	d := &c.desired
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		}
		for {
			d.mu.Lock()
			var sub *desiredSub
			for _, s := range d.subs {
				if !s.delivered || s.last < d.version {
					sub = s
					break
				}
			}
			version, state := d.version, cloneMap(d.state)
			if sub != nil {
				sub.delivered, sub.last = true, version
			}
			d.mu.Unlock()
			if sub == nil || ctx.Err() != nil {
				break
			}
			c.callDesired(sub.f, version, state)
		}
	}
}

func (c *Client) callDesired(f func(int64, map[string]any), version int64, state map[string]any) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("OnDesired callback panicked", "version", version, "panic", r)
		}
	}()
	f(version, state)
}

// cloneMap deep-copies a JSON-decoded object.
func cloneMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneValue(v)
	}
	return out
}

func cloneValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return cloneMap(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = cloneValue(e)
		}
		return out
	}
	return v
}
