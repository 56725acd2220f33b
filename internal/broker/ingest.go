package broker

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/payload"
	"github.com/fieldhub/fieldhub/topic"
)

// Telemetry ingest and "ack means durable" with pipelining.
//
// mochi calls OnPublish on the client's read goroutine and writes the PUBACK
// when it returns. Blocking there until the store has fsynced would allow one
// message in flight per connection. Instead, a QoS 1 telemetry publish is
// handed to the Ingester and OnPublish returns packets.ErrRejectPacket, so
// mochi writes nothing (and, since mochi only touches the receive quota
// after OnPublish, its v5 flow-control state is untouched). The broker
// keeps a FIFO of the connection's pending publishes; when done callbacks
// fire, a short-lived goroutine writes the PUBACKs of the completed head of
// the FIFO in receive order, several per socket write, and releases their
// slots. Slots bound pending publishes per device (ReceiveMaximum):
// OnPublish blocks the read loop when the device has that many, which is
// TCP backpressure for v3 clients; v5 clients, told ReceiveMaximum in
// CONNACK, never get there.

// slotTable bounds pending telemetry per device.
type slotTable struct {
	max int
	mu  sync.Mutex
	m   map[string]*slot
}

type slot struct {
	ch   chan struct{} // one token per pending message
	refs int           // holders and waiters
}

func newSlotTable(max int) *slotTable {
	return &slotTable{max: max, m: make(map[string]*slot)}
}

// acquire takes a slot of device, waiting while it has max pending, until
// cancel is closed (then it returns false).
func (t *slotTable) acquire(device string, cancel <-chan struct{}) bool {
	t.mu.Lock()
	s := t.m[device]
	if s == nil {
		s = &slot{ch: make(chan struct{}, t.max)}
		t.m[device] = s
	}
	s.refs++
	t.mu.Unlock()
	select {
	case s.ch <- struct{}{}:
		return true
	default:
	}
	select {
	case s.ch <- struct{}{}:
		return true
	case <-cancel:
		t.unref(device, s)
		return false
	}
}

// release returns a slot taken by acquire.
func (t *slotTable) release(device string) {
	t.mu.Lock()
	s := t.m[device]
	<-s.ch
	t.unrefLocked(device, s)
	t.mu.Unlock()
}

func (t *slotTable) unref(device string, s *slot) {
	t.mu.Lock()
	t.unrefLocked(device, s)
	t.mu.Unlock()
}

func (t *slotTable) unrefLocked(device string, s *slot) {
	if s.refs--; s.refs == 0 {
		delete(t.m, device)
	}
}

// session is the ack state of one connection that has published QoS 1
// telemetry.
type session struct {
	cl *mqtt.Client

	mu       sync.Mutex
	queue    []*pending // in receive order
	flushing bool       // a flush goroutine is running
	failed   bool       // an ingest failed: no more acks, the client is being closed
}

// pending is one message (telemetry, batch or alert) handed to the
// Ingester.
type pending struct {
	s        *session // nil unless QoS 1
	slots    *slotTable
	device   string     // the slot's key: the device, or the gateway of a batch
	kind     topic.Kind // telemetry, batch or alerts
	packetID uint16
	start    time.Time
	done     atomic.Bool
	err      error // set before done
}

// session returns cl's session, creating it.
func (b *Broker) session(cl *mqtt.Client) *session {
	b.mu.RLock()
	s := b.sessions[cl]
	b.mu.RUnlock()
	if s != nil {
		return s
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if s = b.sessions[cl]; s == nil {
		s = &session{cl: cl}
		b.sessions[cl] = s
	}
	return s
}

// ingest handles a PUBLISH from cl that run hands to the Ingester (mochi's
// OnPublish): telemetry or an alert of device, or a batch of gateway
// device. It holds one of device's slots in slots until done.
func (b *Broker) ingest(cl *mqtt.Client, pk packets.Packet, slots *slotTable, device string, kind topic.Kind, run func(done func(error))) (packets.Packet, error) {
	qos := pk.FixedHeader.Qos
	var s *session
	if qos == 1 {
		s = b.session(cl)
		s.mu.Lock()
		failed := s.failed
		s.mu.Unlock()
		if failed {
			return pk, packets.ErrRejectPacket
		}
	}
	if !slots.acquire(device, b.stopCh) {
		return pk, packets.ErrRejectPacket // shutting down: no ack, the client resends
	}
	b.mu.RLock()
	if b.stopping {
		b.mu.RUnlock()
		slots.release(device)
		return pk, packets.ErrRejectPacket
	}
	b.pending.Add(1)
	b.mu.RUnlock()
	b.metrics.ingestPending.Inc()

	p := &pending{s: s, slots: slots, device: device, kind: kind, packetID: pk.PacketID, start: b.now()}
	switch qos {
	case 0:
		run(func(err error) {
			b.finish(p, err)
			slots.release(device)
			b.pending.Done()
		})
		return pk, packets.ErrRejectPacket
	case 1:
		s.mu.Lock()
		s.queue = append(s.queue, p)
		s.mu.Unlock()
		run(func(err error) { b.complete(p, err) })
		return pk, packets.ErrRejectPacket
	}
	// QoS 2: wait for the store, then let mochi run the PUBREC/PUBREL flow.
	ch := make(chan error, 1)
	run(func(err error) {
		b.finish(p, err)
		slots.release(device)
		b.pending.Done()
		ch <- err
	})
	err := <-ch
	switch {
	case err == nil:
		return pk, packets.CodeSuccessIgnore // PUBREC; not retained, not forwarded
	case IsRefusal(err) && cl.Properties.ProtocolVersion == 5:
		// mochi would answer a hook's error code with a PUBACK even for
		// QoS 2; write the PUBREC ourselves.
		_ = cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Pubrec},
			PacketID:    pk.PacketID,
			ReasonCode:  refusalCode(err),
			Properties:  packets.Properties{ReasonString: reasonString(err)},
		})
		return pk, packets.ErrRejectPacket
	case IsRefusal(err) && notAuthorized(err):
		b.closeClient(cl, packets.ErrNotAuthorized) // v3 cannot be told
		return pk, packets.ErrRejectPacket
	case IsRefusal(err):
		return pk, packets.CodeSuccessIgnore // v3: ack and drop
	default:
		b.closeClient(cl, errIngestFailed)
		return pk, packets.ErrRejectPacket
	}
}

var errIngestFailed = packets.Code{Code: packets.ErrUnspecifiedError.Code, Reason: "ingest failed; resend"}

// finish records a completed ingest in the metrics and logs.
func (b *Broker) finish(p *pending, err error) {
	b.metrics.ingestLatency.Observe(b.now().Sub(p.start).Seconds())
	b.metrics.ingestPending.Dec()
	if err == nil {
		return
	}
	if IsRefusal(err) {
		reason := refusalLabel(err)
		b.metrics.ingestRefused.WithLabelValues(reason).Inc()
		if b.limiter.allow("ingest|" + reason + "|" + p.device) {
			b.log.Info("message refused", "kind", p.kind.String(), "device", p.device, "reason", reason, "error", err)
		}
		return
	}
	b.metrics.ingestFailed.Inc()
	if b.limiter.allow("ingest|failed|" + p.device) {
		b.log.Error("ingest failed; disconnecting the client unacked", "kind", p.kind.String(), "device", p.device, "error", err)
	}
}

// complete is the done callback of a QoS 1 ingest. It must not block: it
// marks the message and, if the head of the connection's FIFO is complete
// and no flush is running, starts one.
func (b *Broker) complete(p *pending, err error) {
	b.finish(p, err)
	s := p.s
	p.err = err
	p.done.Store(true)
	s.mu.Lock()
	start := !s.flushing && len(s.queue) > 0 && s.queue[0].done.Load()
	if start {
		s.flushing = true
		b.flushers.Add(1) // before pending.Done, so Shutdown's waits are ordered
	}
	s.mu.Unlock()
	if start {
		go b.flush(s)
	}
	b.pending.Done()
}

// flush writes the acks of the completed head of s's FIFO, in order, until
// the head is not complete.
func (b *Broker) flush(s *session) {
	defer b.flushers.Done()
	var buf bytes.Buffer
	for {
		s.mu.Lock()
		n := 0
		for n < len(s.queue) && s.queue[n].done.Load() {
			n++
		}
		if n == 0 {
			s.flushing = false
			s.mu.Unlock()
			return
		}
		batch := s.queue[:n:n]
		s.queue = s.queue[n:]
		if len(s.queue) == 0 {
			s.queue = nil
		}
		failed := s.failed
		s.mu.Unlock()

		buf.Reset()
		count := 0
		v3 := s.cl.Properties.ProtocolVersion < 5
		for _, p := range batch {
			if failed {
				continue
			}
			if p.err != nil && (!IsRefusal(p.err) || v3 && notAuthorized(p.err)) {
				failed = true // ack those before it, then disconnect
				continue
			}
			if err := b.encodePuback(&buf, s.cl, p); err != nil {
				b.log.Warn("encoding puback", "error", err)
				failed = true
				continue
			}
			count++
		}
		if count > 0 && !b.writeAcks(s.cl, buf.Bytes(), count) {
			failed = true
		}
		if failed {
			s.mu.Lock()
			first := !s.failed
			s.failed = true
			s.mu.Unlock()
			if first {
				b.closeClient(s.cl, errIngestFailed)
			}
		}
		for _, p := range batch {
			p.slots.release(p.device)
		}
	}
}

// encodePuback appends p's PUBACK to buf: success, or for a refused payload
// 0x99 Payload Format Invalid (0x87 Not authorized for a batch naming a
// device that is not the gateway's child) with the refusal as reason
// string (v5), or a plain PUBACK, so that the client does not resend it
// forever (v3; a not-authorized refusal closes a v3 connection instead).
func (b *Broker) encodePuback(buf *bytes.Buffer, cl *mqtt.Client, p *pending) error {
	ack := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Puback},
		PacketID:        p.packetID,
		ProtocolVersion: cl.Properties.ProtocolVersion,
	}
	if p.err != nil && cl.Properties.ProtocolVersion == 5 {
		ack.ReasonCode = refusalCode(p.err)
		if !(cl.Properties.Props.RequestProblemInfoFlag && cl.Properties.Props.RequestProblemInfo == 0) {
			ack.Properties.ReasonString = reasonString(p.err)
		}
	}
	ack.Mods.MaxSize = cl.Properties.Props.MaximumPacketSize
	var one bytes.Buffer
	if err := ack.PubackEncode(&one); err != nil {
		return err
	}
	if ack.Mods.MaxSize > 0 && uint32(one.Len()) > ack.Mods.MaxSize {
		// The reason string made it too large for the client: drop it.
		ack.Properties.ReasonString = ""
		one.Reset()
		if err := ack.PubackEncode(&one); err != nil {
			return err
		}
	}
	buf.Write(one.Bytes())
	return nil
}

// writeAcks writes count encoded acks in one write, under the client's
// lock as mochi's WritePacket does, so packets never interleave. It reports
// whether the write succeeded.
func (b *Broker) writeAcks(cl *mqtt.Client, data []byte, count int) bool {
	if cl.Closed() || cl.Net.Conn == nil {
		return false
	}
	cl.Lock()
	n, err := cl.Net.Conn.Write(data)
	cl.Unlock()
	atomic.AddInt64(&b.server.Info.BytesSent, int64(n))
	if err != nil {
		return false
	}
	atomic.AddInt64(&b.server.Info.PacketsSent, int64(count))
	return true
}

// dropSession forgets cl's ack state when it disconnects; pending acks are
// still completed (their writes fail) so that slots are released.
func (b *Broker) dropSession(cl *mqtt.Client) {
	b.mu.Lock()
	delete(b.sessions, cl)
	b.mu.Unlock()
}

// isRefusal reports whether an ingest error refuses the message (acked,
// not retried) rather than failing it.
func IsRefusal(err error) bool {
	return errors.Is(err, payload.ErrRefused) || errors.Is(err, store.ErrTypeMismatch)
}

// notAuthorized reports whether a refusal is an authorization decision
// (its error has NotAuthorized() returning true).
func notAuthorized(err error) bool {
	var na interface{ NotAuthorized() bool }
	return errors.As(err, &na) && na.NotAuthorized()
}

// refusalCode is the MQTT 5 reason code of a refused message: 0x87 for an
// authorization refusal, the error's own ReasonCode() when it has one (an
// error code, 0x80 or above), else 0x99 Payload Format Invalid.
func refusalCode(err error) byte {
	if notAuthorized(err) {
		return packets.ErrNotAuthorized.Code
	}
	var rc interface{ ReasonCode() byte }
	if errors.As(err, &rc) {
		if c := rc.ReasonCode(); c >= 0x80 {
			return c
		}
	}
	return packets.ErrPayloadFormatInvalid.Code
}

// refusalLabel is the metric label of a refused message.
func refusalLabel(err error) string {
	if r := payload.Reason(err); r != "" {
		return r
	}
	if r := refusalReason(err); r != "" {
		return r
	}
	if errors.Is(err, store.ErrTypeMismatch) {
		return "type_mismatch"
	}
	return "refused"
}

// reasonString is an MQTT 5 reason string for err: valid UTF-8, bounded.
func reasonString(err error) string {
	s := strings.ToValidUTF8(err.Error(), "?")
	if len(s) > 256 {
		s = strings.ToValidUTF8(s[:256], "")
	}
	return s
}
