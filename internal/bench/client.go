package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"sync/atomic"
	"time"

	"github.com/fieldhub/fieldhub/topic"
)

// flushAt is the size at which a writer sends its buffer even though the
// window is not yet full.
const flushAt = 32 << 10

// paceAhead is how early a paced message may be sent: the pacer keeps the
// rate over any span longer than this.
const paceAhead = int64(time.Millisecond)

// client is one device's connection: a writer goroutine that encodes and
// sends PUBLISH packets within the window, and a reader goroutine that
// matches PUBACKs to their send times.
//
// A PUBLISH's send time and packet id live in slots, indexed by packet id,
// packed into one atomic word (nanoseconds since the run's start << 16 |
// packet id): the writer stores it before the packet leaves, the reader
// loads and clears it when the ack arrives. Ids cycle through 1…idLimit, a
// multiple of len(slots), so ids in flight map to distinct slots, and the
// writer never reuses a slot that is still taken, even when acks arrive
// out of order.
type client struct {
	r          *run
	dev        Device
	seed       uint64
	nc         net.Conn
	protocol   byte
	qos        byte
	topic      []byte
	window     uint64
	keepAlive  time.Duration // 0: no PINGREQ
	leftover   []byte        // bytes read after the CONNACK
	packetSize int           // a typical PUBLISH, for the report

	slots   []atomic.Uint64
	mask    uint16
	idLimit uint16

	acked      atomic.Uint64 // acks received, successful or not
	wake       chan struct{} // reader → writer: acks freed the window
	readerDone chan struct{} // closed when the reader returns
	closing    atomic.Bool   // DISCONNECT sent: a closed socket is expected
	failed     atomic.Bool

	// Owned by the writer; read after it returns.
	sent              uint64
	publishedInWindow int64

	// Owned by the reader; read after it returns.
	hist          histogram
	ackedInWindow int64
	refused       map[byte]int64
	unknownAcks   int64
}

// dial connects device d, sends CONNECT and reads the CONNACK. A refusal
// is a *ConnectError.
func dial(ctx context.Context, r *run, d Device, idx uint64) (*client, error) {
	cfg := r.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	var dialer net.Dialer
	nc, err := dialer.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("device %s: dialing %s: %w", d.ID, cfg.Addr, err)
	}
	fail := func(err error) (*client, error) {
		_ = nc.Close()
		if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
			err = fmt.Errorf("%w (%w)", err, ctxErr)
		}
		return nil, err
	}
	// A cancelled or expired ctx interrupts the handshake below.
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	conn := nc
	if cfg.TLS != nil {
		tc := cfg.TLS.Clone()
		if d.Cert != nil {
			tc.Certificates = []tls.Certificate{*d.Cert}
		}
		if tc.ServerName == "" {
			if host, _, err := net.SplitHostPort(cfg.Addr); err == nil {
				tc.ServerName = host
			}
		}
		tconn := tls.Client(nc, tc)
		if err := tconn.HandshakeContext(ctx); err != nil {
			stop()
			return fail(fmt.Errorf("device %s: tls handshake: %w", d.ID, err))
		}
		conn = tconn
	}
	ka := uint16(cfg.KeepAlive / time.Second)
	if _, err := conn.Write(appendConnect(nil, cfg.Protocol, d.ID, d.Username, d.Password, ka)); err != nil {
		stop()
		return fail(fmt.Errorf("device %s: sending connect: %w", d.ID, err))
	}
	buf := make([]byte, 0, 512)
	var (
		first byte
		body  []byte
		size  int
	)
	for {
		n, rerr := conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		var perr error
		first, body, size, perr = splitPacket(buf)
		if perr == nil {
			break
		}
		if !errors.Is(perr, errIncomplete) {
			stop()
			return fail(fmt.Errorf("device %s: reading connack: %w", d.ID, perr))
		}
		if rerr != nil {
			stop()
			return fail(fmt.Errorf("device %s: reading connack: %w", d.ID, rerr))
		}
		if size > 1<<16 {
			stop()
			return fail(fmt.Errorf("device %s: connack of %d bytes: %w", d.ID, size, errMalformed))
		}
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, cap(buf))...)[:len(buf)]
		}
	}
	if !stop() {
		return fail(fmt.Errorf("device %s: connecting: %w", d.ID, context.Cause(ctx)))
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return fail(fmt.Errorf("device %s: %w", d.ID, err))
	}
	if first&0xF0 != pktConnack {
		return fail(fmt.Errorf("device %s: expected CONNACK, got packet type %d: %w", d.ID, first>>4, errMalformed))
	}
	ca, err := parseConnack(cfg.Protocol, body)
	if err != nil {
		return fail(fmt.Errorf("device %s: %w", d.ID, err))
	}
	if ca.refused() {
		return fail(&ConnectError{Device: d.ID, Protocol: cfg.Protocol, Code: ca.code, Reason: ca.reason})
	}
	if ca.maxQoS == 0 && cfg.QoS > 0 {
		return fail(fmt.Errorf("device %s: broker allows only QoS 0", d.ID))
	}

	c := &client{
		r:          r,
		dev:        d,
		seed:       (idx + 1) * 0x9E3779B97F4A7C15,
		nc:         conn,
		protocol:   cfg.Protocol,
		qos:        cfg.QoS,
		topic:      []byte(deviceTopic(cfg.PayloadFormat, d.ID)),
		window:     uint64(cfg.Inflight),
		keepAlive:  cfg.KeepAlive,
		leftover:   append([]byte(nil), buf[size:]...),
		wake:       make(chan struct{}, 1),
		readerDone: make(chan struct{}),
	}
	if ca.receiveMaximum > 0 && uint64(ca.receiveMaximum) < c.window {
		c.window = uint64(ca.receiveMaximum)
	}
	if ca.serverKeep >= 0 {
		c.keepAlive = time.Duration(ca.serverKeep) * time.Second
	}
	// Slots: the next power of two ≥ 2 × window, so out-of-order acks
	// rarely stall the writer.
	n := 1 << bits.Len(uint(2*c.window-1))
	c.slots = make([]atomic.Uint64, n)
	c.mask = uint16(n - 1)
	c.idLimit = uint16(65535 / n * n)
	sample := newPayloadGen(cfg.PayloadFormat, cfg.Metrics, 1).forDevice(d.ID, cfg.BatchReadings).append(nil, r.seqStart, time.Now())
	c.packetSize = publishSize(c.protocol, c.qos, len(c.topic), len(sample))
	if ca.maxPacketSize > 0 && c.packetSize+64 > ca.maxPacketSize {
		return fail(fmt.Errorf("device %s: broker's maximum packet size %d is below the payload's %d bytes", d.ID, ca.maxPacketSize, c.packetSize))
	}
	return c, nil
}

// fail records a lost connection once and closes the socket so that the
// other goroutine of the pair unblocks. Losses after DISCONNECT or during
// a forced shutdown are not counted.
func (c *client) fail(err error) {
	if !c.failed.CompareAndSwap(false, true) {
		return
	}
	_ = c.nc.Close()
	if c.closing.Load() || c.r.stopped.Load() && errors.Is(err, net.ErrClosed) {
		return
	}
	c.r.log.Warn("connection lost", "device", c.dev.ID, "err", err)
	if c.r.live.Add(-1) == 0 {
		c.r.dead.Do(func() { close(c.r.allDead) })
	}
}

// writeLoop publishes until the run stops, then waits (bounded) for the
// outstanding acks and sends DISCONNECT.
func (c *client) writeLoop() {
	r := c.r
	gen := newPayloadGen(r.cfg.PayloadFormat, r.cfg.Metrics, c.seed).forDevice(c.dev.ID, r.cfg.BatchReadings)
	out := make([]byte, 0, flushAt+4096)
	batch := 0 // messages in out
	payload := make([]byte, 0, 512)
	seq := r.seqStart
	var id uint16
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()

	flush := func() bool {
		if len(out) == 0 {
			return true
		}
		_, err := c.nc.Write(out)
		out = out[:0]
		batch = 0
		if err != nil {
			c.fail(fmt.Errorf("writing: %w", err))
			return false
		}
		return true
	}
	// sleepUntil waits for the pacer's slot at (run nanoseconds), sending
	// PINGREQ when idle for half the keep alive; false when the run stops.
	sleepUntil := func(at int64) bool {
		for {
			d := time.Duration(at - r.mono(time.Now()))
			if d <= 0 {
				return true
			}
			ping := false
			if c.keepAlive > 0 && d > c.keepAlive/2 {
				d, ping = c.keepAlive/2, true
			}
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-r.stop:
				timer.Stop()
				return false
			case <-c.readerDone:
				timer.Stop()
				return false
			}
			if ping {
				out = appendPingreq(out)
				if !flush() {
					return false
				}
			}
		}
	}

	// Once the window is full, the writer waits until a quarter of it is
	// free again before refilling it, so that brokers which ack one
	// message per write do not drive the generator into one write syscall
	// per message. It holds back at most holdFor, though: a broker with
	// Nagle's algorithm on (Mosquitto's default) keeps its next acks until
	// the generator's TCP ack, which the kernel delays up to 40 ms unless
	// data goes out to carry it. Send times are taken when a message is
	// encoded, so the hold is not counted as latency.
	const holdFor = 500 * time.Microsecond
	minFree := max(c.window/4, 1)
	maxBatch := r.cfg.WriteBatch
	if maxBatch > 0 {
		minFree = max(min(minFree, uint64(maxBatch)), 1)
	}
	full, holding := false, false
	hold := time.NewTimer(time.Hour)
	hold.Stop()
	defer hold.Stop()
	for !r.stopped.Load() {
		next := id%c.idLimit + 1
		if c.qos > 0 {
			free := c.window - min(c.sent-c.acked.Load(), c.window)
			if free == 0 {
				full = true
			}
			slotBusy := c.slots[(next-1)&c.mask].Load() != 0
			if slotBusy || full && free < minFree {
				if !flush() {
					return
				}
				var holdC <-chan time.Time
				if !slotBusy && free > 0 {
					if !holding {
						hold.Reset(holdFor)
						holding = true
					}
					holdC = hold.C
				}
				select {
				case <-c.wake:
				case <-holdC:
					holding, full = false, false // send what is free
				case <-r.stop:
				case <-c.readerDone:
					return
				}
				continue
			}
			full = false
			if holding {
				hold.Stop()
				holding = false
			}
		}
		now := time.Now()
		t := r.mono(now)
		if r.pacer != nil {
			// A message whose slot is less than paceAhead away goes now,
			// with the others due by then, in one write: sleeping for
			// each slot (every 11 µs per connection at 90,000 msgs/s over
			// ten) would cost a write and a timer per message, and sleeps
			// that short are imprecise anyway.
			if at := r.pacer.reserve(t); at > t+paceAhead {
				if !flush() || !sleepUntil(at-paceAhead) {
					break
				}
				now = time.Now()
				t = r.mono(now)
			}
		}
		payload = gen.append(payload[:0], seq, now)
		out = appendPublishHeader(out, c.protocol, c.qos, c.topic, next, len(payload))
		out = append(out, payload...)
		if c.qos > 0 {
			c.slots[(next-1)&c.mask].Store(uint64(t)<<16 | uint64(next))
			id = next
		}
		c.sent++
		seq++
		if t >= r.w0 && t < r.w1 {
			c.publishedInWindow++
		}
		batch++
		if (len(out) >= flushAt || batch == maxBatch) && !flush() {
			return
		}
	}
	if c.failed.Load() || !flush() {
		return
	}

	// Drain: wait for the acks of what is in flight, at most DrainTimeout.
	if c.qos > 0 {
		timer.Reset(r.cfg.DrainTimeout)
	drain:
		for c.sent != c.acked.Load() {
			select {
			case <-c.wake:
			case <-timer.C:
				break drain
			case <-c.readerDone:
				return
			}
		}
		timer.Stop()
	}
	c.closing.Store(true)
	if _, err := c.nc.Write(appendDisconnect(nil, c.protocol)); err != nil {
		_ = c.nc.Close()
		return
	}
	// The broker closes the connection after DISCONNECT; the reader sees
	// that, or this deadline.
	_ = c.nc.SetReadDeadline(time.Now().Add(time.Second))
}

// readLoop reads PUBACKs (and PINGRESP, DISCONNECT) until the connection
// ends.
func (c *client) readLoop() {
	defer close(c.readerDone)
	r := c.r
	buf := make([]byte, 32<<10)
	start, end := 0, copy(buf, c.leftover)
	now := r.mono(time.Now())
	var rerr error
	for {
		acks := 0
		for start < end {
			first, body, size, err := splitPacket(buf[start:end])
			if errors.Is(err, errIncomplete) {
				if size > len(buf) {
					c.fail(fmt.Errorf("packet of %d bytes from broker: %w", size, errMalformed))
					return
				}
				break
			}
			if err != nil {
				c.fail(fmt.Errorf("reading: %w", err))
				return
			}
			start += size
			switch first & 0xF0 {
			case pktPuback:
				acks += c.onAck(body, now)
			case pktPingresp, pktPublish:
				// PUBLISH cannot come (nothing is subscribed); ignore it.
			case pktDisconnect:
				code, reason := parseReason(body)
				err := fmt.Errorf("broker sent DISCONNECT 0x%02x %s", code, reasonText(c.protocol, code))
				if reason != "" {
					err = fmt.Errorf("%w: %s", err, reason)
				}
				c.fail(err)
				return
			default:
				c.fail(fmt.Errorf("unexpected packet type %d: %w", first>>4, errMalformed))
				return
			}
		}
		if acks > 0 {
			c.acked.Add(uint64(acks))
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
		if start == end {
			start, end = 0, 0
		} else if len(buf)-end < 4096 {
			end = copy(buf, buf[start:end])
			start = 0
		}
		if rerr != nil {
			if !c.closing.Load() {
				c.fail(fmt.Errorf("reading: %w", rerr))
			}
			return
		}
		var n int
		n, rerr = c.nc.Read(buf[end:])
		end += n
		now = r.mono(time.Now())
	}
}

// onAck handles one PUBACK body and returns 1 when it acknowledged a
// message in flight.
func (c *client) onAck(body []byte, now int64) int {
	if len(body) < 2 {
		c.unknownAcks++
		return 0
	}
	id := uint16(body[0])<<8 | uint16(body[1])
	if id == 0 || id > c.idLimit {
		c.unknownAcks++
		return 0
	}
	s := &c.slots[(id-1)&c.mask]
	v := s.Load()
	if v == 0 || uint16(v) != id {
		c.unknownAcks++
		return 0
	}
	s.Store(0)
	if c.protocol == 5 && len(body) > 2 && body[2] >= 0x80 {
		if c.refused == nil {
			c.refused = map[byte]int64{}
		}
		c.refused[body[2]]++
		return 1
	}
	if now >= c.r.w0 && now < c.r.w1 {
		c.ackedInWindow++
		c.hist.record(now - int64(v>>16))
	}
	return 1
}

// deviceTopic is where device id publishes payloads of format.
func deviceTopic(format, id string) string {
	if format == FormatBatch {
		return topic.Batch(id)
	}
	return topic.Telemetry(id)
}
