package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/payload"
)

// MaxPayloadBytes bounds an encoded telemetry message. Larger ones are
// refused by Publish: the hub closes the connection on a packet above its
// limit (256 KiB by default), so such a message would be resent forever.
// (The hub refuses payloads above 64 KiB by default, with a reason.)
const MaxPayloadBytes = 256<<10 - 1024

// Entry states.
const (
	stateQueued = iota // waiting to be sent on the current connection
	stateSent          // sent, not yet acknowledged
	stateDone          // acknowledged, refused or dropped
)

// entry is one telemetry message in the buffer.
type entry struct {
	idx     uint64 // position in the journal (or a counter in memory mode)
	seq     uint64
	payload []byte
	state   int
	done    chan error // the waiting Publish; nil when none waits
}

// complete tells the waiting Publish, if any, how it ended. Called with
// Client.mu held.
func (e *entry) complete(err error) {
	if e.done != nil {
		e.done <- err
		e.done = nil
	}
}

// Publish sends one telemetry message, {"ts", "seq", "data"}, on
// devices/{id}/telemetry at QoS 1, stamped with the current time and the
// next seq. See PublishAt.
func (c *Client) Publish(ctx context.Context, data map[string]any) error {
	return c.PublishAt(ctx, time.Now(), data)
}

// PublishAt is Publish with the reading's time ts.
//
// data maps metric names to numbers (any Go integer or float type, or a
// json.Number), booleans or strings; nested maps flatten to "a.b".
//
// The message is put in the buffer (and, with Config.BufferDir, written
// to disk with fsync) and sent in order with the others. While connected,
// PublishAt returns nil once the hub has acknowledged it, which means it
// is durably stored (DESIGN §2.1). While disconnected, or if the
// connection drops before the acknowledgement, it returns nil as soon as
// the message is buffered: the client resends it, with the same seq and
// ts, after reconnecting (the hub ignores a seq it already has). Errors:
// ErrInvalidData, ErrClosed, ErrRefused (the hub refused the payload; it
// is not resent), ErrDropped (dropped from a full buffer), or ctx's error
// when ctx ends first — the message then stays buffered and will still be
// sent.
func (c *Client) PublishAt(ctx context.Context, ts time.Time, data map[string]any) error {
	m, err := message(ts, data)
	if err != nil {
		return err
	}
	c.appendMu.Lock()
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		c.appendMu.Unlock()
		return ErrClosed
	}
	m.Seq, m.HasSeq = c.seq, true
	e := &entry{seq: m.Seq, payload: payload.AppendTelemetry(nil, m, true)}
	if len(e.payload) > MaxPayloadBytes {
		c.mu.Unlock()
		c.appendMu.Unlock()
		return fmt.Errorf("%w: %d bytes encoded, at most %d", ErrInvalidData, len(e.payload), MaxPayloadBytes)
	}
	c.seq++
	c.mu.Unlock()
	if c.journal != nil {
		idx, err := c.journal.append(e.seq, ts.UnixNano(), e.payload)
		if err != nil {
			c.appendMu.Unlock()
			return fmt.Errorf("device: buffering telemetry: %w", err)
		}
		e.idx = idx
	}
	c.mu.Lock()
	if c.journal == nil {
		e.idx = c.nextIdx
		c.nextIdx++
	}
	online := c.conn != nil
	var done chan error
	if online {
		done = make(chan error, 1)
		e.done = done
	}
	if len(c.queue) >= c.cfg.OfflineBuffer {
		c.dropOldest()
	}
	c.queue = append(c.queue, e)
	c.mu.Unlock()
	c.appendMu.Unlock()
	c.wake()
	if !online {
		return nil
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("device: waiting for the hub to acknowledge seq %d (it stays buffered): %w", e.seq, ctx.Err())
	}
}

// message converts data to a payload.Message with one point per metric,
// in name order.
func message(ts time.Time, data map[string]any) (*payload.Message, error) {
	m := &payload.Message{}
	if err := flatten(m, "", data, ts.UnixNano(), 0); err != nil {
		return nil, err
	}
	if len(m.Points) == 0 {
		return nil, fmt.Errorf("%w: no metrics", ErrInvalidData)
	}
	slices.SortFunc(m.Points, func(a, b payload.Point) int {
		switch {
		case a.Metric < b.Metric:
			return -1
		case a.Metric > b.Metric:
			return 1
		}
		return 0
	})
	return m, nil
}

func flatten(m *payload.Message, prefix string, data map[string]any, ts int64, depth int) error {
	if depth >= payload.DefaultMaxDepth {
		return fmt.Errorf("%w: %q nests too deep", ErrInvalidData, prefix)
	}
	for k, v := range data {
		if k == "" {
			return fmt.Errorf("%w: empty metric name", ErrInvalidData)
		}
		name := k
		if prefix != "" {
			name = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok {
			if err := flatten(m, name, sub, ts, depth+1); err != nil {
				return err
			}
			continue
		}
		val, err := value(v)
		if err != nil {
			return fmt.Errorf("%w: metric %q: %w", ErrInvalidData, name, err)
		}
		m.Points = append(m.Points, payload.Point{Metric: name, TS: ts, Value: val})
	}
	return nil
}

func value(v any) (payload.Value, error) {
	var f float64
	switch x := v.(type) {
	case bool:
		return payload.BoolValue(x), nil
	case string:
		return payload.StringValue(x), nil
	case float64:
		f = x
	case float32:
		f = float64(x)
	case int:
		f = float64(x)
	case int8:
		f = float64(x)
	case int16:
		f = float64(x)
	case int32:
		f = float64(x)
	case int64:
		f = float64(x)
	case uint:
		f = float64(x)
	case uint8:
		f = float64(x)
	case uint16:
		f = float64(x)
	case uint32:
		f = float64(x)
	case uint64:
		f = float64(x)
	case json.Number:
		var err error
		if f, err = x.Float64(); err != nil {
			return payload.Value{}, err
		}
	default:
		return payload.Value{}, fmt.Errorf("unsupported type %T", v)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return payload.Value{}, fmt.Errorf("%v is not a finite number", f)
	}
	return payload.NumberValue(f), nil
}

// dropOldest drops the first message of the full buffer. Called with mu
// held.
func (c *Client) dropOldest() {
	e := c.queue[0]
	e.state = stateDone
	e.complete(ErrDropped)
	c.stats.Dropped++
	if now := time.Now(); now.Sub(c.lastDrop) >= 10*time.Second {
		c.lastDrop = now
		c.log.Warn("offline buffer full: dropping the oldest telemetry", "seq", e.seq, "limit", c.cfg.OfflineBuffer, "dropped_total", c.stats.Dropped)
	}
	c.popDone()
}

// popDone removes the finished messages at the front of the queue and
// records them in the journal. Called with mu held.
func (c *Client) popDone() {
	n := 0
	for n < len(c.queue) && c.queue[n].state == stateDone {
		n++
	}
	if n == 0 {
		return
	}
	last := c.queue[n-1].idx
	clear(c.queue[:n])
	c.queue = c.queue[n:]
	c.next = max(0, c.next-n)
	if c.journal != nil {
		if err := c.journal.markDone(last); err != nil {
			c.log.Warn("offline buffer: recording acknowledged messages failed", "err", err)
		}
	}
}

// takeNext marks the next unsent message sent and returns it, or nil.
func (c *Client) takeNext() *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.next < len(c.queue) {
		e := c.queue[c.next]
		c.next++
		if e.state == stateQueued {
			e.state = stateSent
			return e
		}
	}
	return nil
}

// sender is the state of send: what is in flight on one connection.
type sender struct {
	cn       *conn
	inflight map[uint16]*entry
	twinID   uint16 // packet id of the reported patch in flight; 0: none
	broken   bool   // a send failed: the connection is going down
}

// send pipelines the buffered telemetry and the pending reported state
// on cn, in order, until cn closes. When ctx ends it disconnects (with
// the will unless Close published "offline") and waits for the close.
func (c *Client) send(ctx context.Context, cn *conn) {
	s := &sender{cn: cn, inflight: make(map[uint16]*entry, cn.window)}
	stop := ctx.Done()
	for {
		if stop != nil && !s.broken {
			c.fill(ctx, s)
			if s.broken {
				// A send failed: make sure the connection goes down, so
				// that the next one resends rather than this one stalls.
				_ = cn.cli.Disconnect(&paho.Disconnect{ReasonCode: 0x80})
			}
		}
		select {
		case <-c.kick:
		case pk := <-cn.sess.acks:
			c.acked(s, pk)
		case <-stop:
			stop = nil
			c.mu.Lock()
			withWill := c.willOnExit
			c.mu.Unlock()
			d := &paho.Disconnect{ReasonCode: 0x00}
			if withWill {
				d.ReasonCode = 0x04 // Disconnect with Will Message: the hub publishes "offline"
			}
			_ = cn.cli.Disconnect(d)
		case <-cn.cli.Done():
			// Take the acknowledgements that arrived before the drop,
			// so that fewer messages are sent twice.
			for {
				select {
				case pk := <-cn.sess.acks:
					c.acked(s, pk)
				default:
					return
				}
			}
		}
	}
}

// fill sends messages until the window is full, and the pending reported
// patch when none is in flight.
func (c *Client) fill(ctx context.Context, s *sender) {
	if s.twinID == 0 {
		if body := c.takePatch(); body != nil {
			id, err := c.sendAsync(ctx, s.cn, c.topics.reported, body)
			if err != nil {
				s.broken = true
				return
			}
			s.twinID = id
		}
	}
	for len(s.inflight) < s.cn.window {
		e := c.takeNext()
		if e == nil {
			return
		}
		if s.cn.maxPacket > 0 && len(e.payload)+len(c.topics.telemetry)+16 > s.cn.maxPacket {
			c.finish(e, fmt.Errorf("%w: %d bytes, above the hub's maximum packet size %d", ErrRefused, len(e.payload), s.cn.maxPacket))
			continue
		}
		id, err := c.sendAsync(ctx, s.cn, c.topics.telemetry, e.payload)
		if err != nil {
			s.broken = true
			return
		}
		s.inflight[id] = e
	}
}

// sendAsync writes a QoS 1 publish on a pipelined topic; its PUBACK comes
// through cn.sess.acks.
func (c *Client) sendAsync(ctx context.Context, cn *conn, topic string, body []byte) (uint16, error) {
	_, err := cn.cli.PublishWithOptions(ctx, &paho.Publish{QoS: 1, Topic: topic, Payload: body},
		paho.PublishOptions{Method: paho.PublishMethod_AsyncSend})
	if err != nil && !errors.Is(err, paho.ErrNetworkErrorAfterStored) {
		c.log.Debug("send failed", "topic", topic, "err", err)
		return 0, err
	}
	return uint16(cn.sess.lastID.Load()), err
}

// acked handles a PUBACK of a pipelined publish (or the empty packet of a
// closed session, ignored: what was in flight is resent).
func (c *Client) acked(s *sender, pk packets.ControlPacket) {
	pa, ok := pk.Content.(*packets.Puback)
	if !ok {
		return
	}
	var err error
	if pa.ReasonCode >= 0x80 {
		reason := ""
		if pa.Properties != nil {
			reason = pa.Properties.ReasonString
		}
		err = fmt.Errorf("%w: reason 0x%02x %s", ErrRefused, pa.ReasonCode, reason)
	}
	if pa.PacketID == s.twinID && s.twinID != 0 {
		s.twinID = 0
		c.twinAcked(err)
		return
	}
	e := s.inflight[pa.PacketID]
	if e == nil {
		return
	}
	delete(s.inflight, pa.PacketID)
	c.finish(e, err)
}

// finish records the outcome of a sent message: nil (acknowledged) or a
// refusal, which is not resent.
func (c *Client) finish(e *entry, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.state == stateDone {
		return // dropped meanwhile
	}
	e.state = stateDone
	if err != nil {
		c.stats.Refused++
		c.log.Warn("the hub refused a telemetry message; it is not resent", "seq", e.seq, "err", err)
		e.complete(fmt.Errorf("device: telemetry seq %d: %w", e.seq, err))
	} else {
		c.stats.Published++
		e.complete(nil)
	}
	c.popDone()
}
