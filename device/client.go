package device

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/topic"
)

// Errors returned by the client. Refusals by the hub wrap ErrRefused.
var (
	// ErrClosed is returned by calls on a closed Client.
	ErrClosed = errors.New("device: client closed")
	// ErrRefused is wrapped by every refusal from the hub: a CONNECT
	// refused for bad credentials, a payload refused by ingest, a PUBACK
	// with a failure reason code.
	ErrRefused = errors.New("refused by the hub")
	// ErrDropped is returned by a Publish still waiting when its message
	// was dropped from a full buffer (Config.OfflineBuffer).
	ErrDropped = errors.New("device: message dropped: offline buffer full")
	// ErrInvalidData is wrapped by the errors of telemetry data that cannot
	// be encoded (nil, NaN, arrays, an empty map).
	ErrInvalidData = errors.New("device: invalid telemetry data")
)

// Presence payloads on devices/{id}/status (retained).
const (
	StatusOnline  = "online"
	StatusOffline = "offline"
)

// maxWindow bounds the telemetry messages in flight (sent, not yet
// acknowledged) on one connection; it is also kept at half the hub's
// Receive Maximum. Pipelining matters for flushing a large buffer over a
// link with a long round trip.
const maxWindow = 64

// Stats are the client's counters since Connect.
type Stats struct {
	Connected       bool   // a connection is up and serving
	Reconnects      uint64 // connections established after the first
	Published       uint64 // telemetry messages acknowledged by the hub
	Buffered        int    // telemetry messages not yet acknowledged (in flight included)
	Dropped         uint64 // telemetry messages dropped from a full buffer
	Refused         uint64 // telemetry messages refused by the hub (not retried)
	Commands        uint64 // commands received (redeliveries excluded)
	CommandsExpired uint64 // commands skipped because their expiry had passed
}

// receiveMaximum is the most QoS 1 messages the hub may have in flight
// to the device at once.
const receiveMaximum = 32

// Client is a connected device. Its methods are safe for concurrent use.
// Create it with Connect and release it with Close.
type Client struct {
	cfg    Config
	log    *slog.Logger
	addr   string
	tls    *tls.Config
	topics topics

	journal *journal // nil: memory only

	// lifetime ends when the client stops; it is the parent of the
	// contexts of command handlers, started from paho's receive goroutine.
	lifetime context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup // every goroutine of the client
	kick     chan struct{}  // wakes the sender
	// firstUp is closed at the first connection; firstFail gets a refusal
	// that makes the first connection hopeless.
	firstUp   chan struct{}
	firstFail chan error

	// appendMu serializes Publish from seq assignment to enqueueing, so
	// that the queue (and the journal) is in seq order.
	appendMu sync.Mutex

	mu         sync.Mutex
	closing    bool
	conn       *conn         // serving connection; nil when down
	upCh       chan struct{} // closed while conn != nil
	lastErr    error
	willOnExit bool // Close could not publish "offline": DISCONNECT with the will
	seq        uint64
	nextIdx    uint64 // memory mode: the next entry index
	queue      []*entry
	next       int // queue[next] is the first entry not sent on this connection
	lastDrop   time.Time
	stats      Stats
	twin       twinOut

	cmd     commandState
	desired desiredState
}

type topics struct {
	telemetry, reported, desired, status, commands, cmdPrefix string
}

// conn is one network connection.
type conn struct {
	cli       *paho.Client
	sess      *connSession
	window    int
	maxPacket int // the hub's Maximum Packet Size; 0: not given
}

// Connect validates cfg, opens Config.BufferDir when set, and starts the
// connection manager, which keeps a connection to the hub until Close:
// it reconnects with exponential backoff and full jitter, and on every
// connection subscribes to devices/{id}/commands/+ and twin/desired,
// publishes a retained "online" on devices/{id}/status (the will is a
// retained "offline" there), then sends the buffered telemetry in order.
//
// Connect returns once the first connection is up, or with an error when
// ctx ends first or the hub refuses the device for good (bad credentials,
// not authorized, a certificate it rejects: errors.Is(err, ErrRefused)).
// With Config.NoWait it returns at once and connects in the background
// (see WaitConnected); refusals are then logged and retried with backoff.
func Connect(ctx context.Context, cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	addr, _, _ := parseServer(cfg.Server)
	id := cfg.DeviceID
	c := &Client{
		cfg:  cfg,
		log:  cfg.Logger.With("device", id),
		addr: addr,
		tls:  tlsCfg,
		topics: topics{
			telemetry: topic.Telemetry(id),
			reported:  topic.TwinReported(id),
			desired:   topic.TwinDesired(id),
			status:    topic.Status(id),
			commands:  topic.Command(id, "+"),
			cmdPrefix: topic.Command(id, ""),
		},
		kick:      make(chan struct{}, 1),
		firstUp:   make(chan struct{}),
		firstFail: make(chan error, 1),
		upCh:      make(chan struct{}),
		seq:       cfg.SeqStart,
		nextIdx:   1,
	}
	if c.seq == 0 {
		c.seq = uint64(time.Now().UnixMilli())
	}
	c.cmd.init()
	c.desired.init()
	if cfg.BufferDir != "" {
		j, recs, err := openJournal(cfg.BufferDir, c.log)
		if err != nil {
			return nil, fmt.Errorf("device: opening BufferDir: %w", err)
		}
		c.journal = j
		for _, r := range recs {
			c.queue = append(c.queue, &entry{idx: r.index, seq: r.seq, payload: r.payload})
			c.seq = max(c.seq, r.seq+1)
		}
		c.mu.Lock()
		for len(c.queue) > cfg.OfflineBuffer {
			c.dropOldest()
		}
		c.mu.Unlock()
		if len(recs) > 0 {
			c.log.Info("replaying the offline buffer", "messages", len(c.queue), "dir", cfg.BufferDir)
		}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	c.lifetime, c.cancel = runCtx, cancel
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		c.run(runCtx)
	}()
	go func() {
		defer c.wg.Done()
		c.deliverDesired(runCtx)
	}()
	if cfg.NoWait {
		return c, nil
	}
	select {
	case <-c.firstUp:
		return c, nil
	case err = <-c.firstFail:
	case <-ctx.Done():
		c.mu.Lock()
		last := c.lastErr
		c.mu.Unlock()
		err = fmt.Errorf("device: connecting to %s: %w", cfg.Server, ctx.Err())
		if last != nil {
			err = fmt.Errorf("%w (last attempt: %w)", err, last)
		}
	}
	c.stop()
	return nil, err
}

// stop ends the goroutines and closes the journal.
func (c *Client) stop() {
	c.mu.Lock()
	c.closing = true
	c.willOnExit = true // a connection that came up just now says "offline"
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	if c.journal != nil {
		c.appendMu.Lock()
		c.journal.close()
		c.appendMu.Unlock()
	}
}

// WaitConnected returns once a connection is up, or ctx's error. After
// Close it returns ErrClosed.
func (c *Client) WaitConnected(ctx context.Context) error {
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if closing {
		return ErrClosed
	}
	_, err := c.waitUp(ctx)
	return err
}

// waitUp returns the serving connection, waiting for one until ctx ends.
func (c *Client) waitUp(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		cn, up := c.conn, c.upCh
		c.mu.Unlock()
		if cn != nil {
			return cn, nil
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	s := c.stats
	s.Connected = c.conn != nil
	s.Buffered = len(c.queue)
	c.mu.Unlock()
	s.Commands, s.CommandsExpired = c.cmd.counts()
	return s
}

// Close publishes a retained "offline" on devices/{id}/status and
// disconnects cleanly, like http.Server.Shutdown: while connected, it
// first waits, until ctx ends, for the buffered telemetry and reported
// state to be acknowledged and for running command handlers to return and
// their answers to be acknowledged (while disconnected it does not wait
// for a connection). Then it cancels the contexts of handlers still
// running and waits for every goroutine of the client to return, until
// ctx ends or, when ctx has already ended, one more second. Telemetry
// still unacknowledged stays in BufferDir for the next Connect (it is lost
// without one) and makes Close return an error saying how many messages.
// Calls after the first return nil.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return nil
	}
	c.closing = true
	c.mu.Unlock()

	var errs []error
	c.flush(ctx)
	willOnExit := true
	if cn := c.current(); cn != nil {
		pctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
		_, err := cn.cli.Publish(pctx, &paho.Publish{Topic: c.topics.status, QoS: 1, Retain: true, Payload: []byte(StatusOffline)})
		cancel()
		if err == nil {
			willOnExit = false
		} else {
			c.log.Warn("publishing offline status failed; disconnecting with the will", "err", err)
		}
	}
	c.mu.Lock()
	c.willOnExit = willOnExit
	c.mu.Unlock()

	c.cancel()
	done := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(done)
	}()
	// Cancelled goroutines get at least closeGrace to return.
	grace := time.NewTimer(closeGrace)
	defer grace.Stop()
	select {
	case <-done:
	case <-ctx.Done():
		select {
		case <-done:
		case <-grace.C:
			errs = append(errs, fmt.Errorf("device: close: command handlers still running: %w", ctx.Err()))
		}
	}

	c.appendMu.Lock()
	c.mu.Lock()
	left := len(c.queue)
	for _, e := range c.queue {
		e.complete(ErrClosed)
	}
	c.releaseTwinWaiters(ErrClosed)
	c.mu.Unlock()
	if c.journal != nil {
		if err := c.journal.close(); err != nil {
			errs = append(errs, fmt.Errorf("device: closing BufferDir: %w", err))
		}
	}
	c.appendMu.Unlock()
	if left > 0 {
		where := "lost: no BufferDir"
		if c.journal != nil {
			where = "kept in BufferDir for the next Connect"
		}
		err := fmt.Errorf("device: %d telemetry messages not acknowledged at close (%s)", left, where)
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", err, ctx.Err())
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// closeGrace is how long Close waits for its goroutines after cancelling
// them when ctx has already ended.
const closeGrace = time.Second

// flush waits, while connected, until nothing is left to send.
func (c *Client) flush(ctx context.Context) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		c.mu.Lock()
		idle := len(c.queue) == 0 && c.twinIdle() && c.cmd.busy.Load() == 0
		up := c.conn != nil
		c.mu.Unlock()
		if idle || !up {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// current returns the serving connection, or nil.
func (c *Client) current() *conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

func (c *Client) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// stableAfter is how long a connection must last for the reconnect
// backoff to start again from BackoffMin: a hub that accepts and drops
// the device at once (another client with the same id, say) is retried
// with a growing delay.
const stableAfter = 10 * time.Second

// run is the connection manager: connect, serve until the connection
// drops, wait, again, until ctx ends.
func (c *Client) run(ctx context.Context) {
	attempt := 0
	connected := false
	for ctx.Err() == nil {
		cn, err := c.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.mu.Lock()
			c.lastErr = err
			c.mu.Unlock()
			if !connected && !c.cfg.NoWait && errors.Is(err, ErrRefused) {
				c.firstFail <- err
				return
			}
			wait := backoff(attempt, c.cfg.BackoffMin, c.cfg.BackoffMax)
			attempt++
			level := slog.LevelWarn
			if errors.Is(err, ErrRefused) {
				level = slog.LevelError
			}
			c.log.Log(ctx, level, "connecting to the hub failed", "server", c.cfg.Server, "err", err, "attempt", attempt, "retry_in", wait.Round(time.Millisecond))
			if !sleep(ctx, wait) {
				return
			}
			continue
		}
		if connected {
			c.mu.Lock()
			c.stats.Reconnects++
			c.mu.Unlock()
		}
		up := time.Now()
		c.serveConn(ctx, cn, !connected)
		connected = true
		if ctx.Err() != nil {
			return
		}
		if time.Since(up) >= stableAfter {
			attempt = 0
		}
		// Even the first attempt waits a random time, which spreads a
		// fleet that lost the hub at once.
		wait := backoff(attempt, c.cfg.BackoffMin, c.cfg.BackoffMax)
		attempt++
		if !sleep(ctx, wait) {
			return
		}
	}
}

// backoff returns the delay before attempt n (from 0): uniformly random
// in [0, min(hi, lo·2ⁿ)].
func backoff(n int, lo, hi time.Duration) time.Duration {
	ceil := lo
	for i := 0; i < n && ceil < hi; i++ {
		if ceil > hi/2 {
			ceil = hi
			break
		}
		ceil *= 2
	}
	ceil = min(ceil, hi)
	if ceil <= 0 {
		return 0
	}
	return rand.N(ceil + 1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// dial opens a connection and completes the MQTT 5 CONNECT.
func (c *Client) dial(ctx context.Context) (*conn, error) {
	dctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	var nc net.Conn
	var err error
	if c.tls != nil {
		nc, err = (&tls.Dialer{Config: c.tls}).DialContext(dctx, "tcp", c.addr)
	} else {
		nc, err = (&net.Dialer{}).DialContext(dctx, "tcp", c.addr)
	}
	if err != nil {
		if permanentTLSError(err) {
			return nil, fmt.Errorf("%w: %w", ErrRefused, err)
		}
		return nil, err
	}
	sess := newConnSession(maxWindow, c.topics.telemetry, c.topics.reported)
	cli := paho.NewClient(paho.ClientConfig{
		ClientID:          c.cfg.DeviceID,
		Conn:              packets.NewThreadSafeConn(nc),
		Session:           sess,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){c.onPublish},
		OnClientError: func(err error) {
			c.log.Debug("connection error", "err", err)
		},
		OnServerDisconnect: func(d *paho.Disconnect) {
			reason := ""
			if d.Properties != nil {
				reason = d.Properties.ReasonString
			}
			c.log.Info("the hub closed the connection", "reason_code", fmt.Sprintf("0x%02x", d.ReasonCode), "reason", reason)
		},
	})
	expiry := uint32(c.cfg.SessionExpiry / time.Second)
	// A device receives few messages at a time (commands, desired state):
	// a small Receive Maximum keeps paho from sizing its inbound queue for
	// 65,535 (half a megabyte per client).
	recvMax := uint16(receiveMaximum)
	cp := &paho.Connect{
		ClientID:     c.cfg.DeviceID,
		Username:     c.cfg.DeviceID,
		UsernameFlag: true,
		Password:     []byte(c.cfg.Password),
		PasswordFlag: c.cfg.Password != "",
		KeepAlive:    uint16(c.cfg.KeepAlive / time.Second),
		CleanStart:   false,
		Properties:   &paho.ConnectProperties{SessionExpiryInterval: &expiry, ReceiveMaximum: &recvMax, RequestProblemInfo: true},
		WillMessage:  &paho.WillMessage{Retain: true, QoS: 1, Topic: c.topics.status, Payload: []byte(StatusOffline)},
	}
	ack, err := cli.Connect(dctx, cp)
	if err != nil {
		sess.Close()
		nc.Close()
		if ack != nil && ack.ReasonCode >= 0x80 {
			reason := ""
			if ack.Properties != nil {
				reason = ack.Properties.ReasonString
			}
			err = fmt.Errorf("connect: reason 0x%02x %s", ack.ReasonCode, reason)
			if permanentConnack(ack.ReasonCode) {
				err = fmt.Errorf("%w: %w", ErrRefused, err)
			}
		}
		return nil, err
	}
	cn := &conn{cli: cli, sess: sess, window: maxWindow}
	if p := ack.Properties; p != nil {
		if p.ReceiveMaximum != nil {
			cn.window = max(1, min(maxWindow, int(*p.ReceiveMaximum)/2))
		}
		if p.MaximumPacketSize != nil {
			cn.maxPacket = int(*p.MaximumPacketSize)
		}
	}
	return cn, nil
}

// permanentConnack reports whether a CONNACK refusal will not go away by
// retrying with the same credentials.
func permanentConnack(code byte) bool {
	switch code {
	case 0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C:
		return true
	}
	return false
}

// permanentTLSError reports whether a TLS handshake failed on
// certificates rather than on the network.
func permanentTLSError(err error) bool {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var alert tls.AlertError
	if errors.As(err, &alert) {
		switch alert {
		case 42, 43, 44, 45, 46, 48, 116: // bad, unsupported, revoked, expired, unknown certificate; unknown CA; certificate required
			return true
		}
	}
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci)
}

// serveConn runs one connection: subscriptions and presence, then the
// sender until the connection drops or ctx ends.
func (c *Client) serveConn(ctx context.Context, cn *conn, first bool) {
	sctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	_, err := cn.cli.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: c.topics.commands, QoS: 1},
		{Topic: c.topics.desired, QoS: 1},
	}})
	if err != nil {
		c.log.Error("subscribing to commands and desired state failed", "err", err)
	}
	if err == nil {
		_, err = cn.cli.Publish(sctx, &paho.Publish{Topic: c.topics.status, QoS: 1, Retain: true, Payload: []byte(StatusOnline)})
		if err != nil {
			c.log.Warn("publishing online status failed", "err", err)
		}
	}
	cancel()

	c.mu.Lock()
	c.conn = cn
	close(c.upCh)
	c.lastErr = nil
	backlog := len(c.queue)
	c.mu.Unlock()
	if first {
		close(c.firstUp)
	}
	c.log.Info("connected", "server", c.cfg.Server, "buffered", backlog)

	c.send(ctx, cn)
	c.connectionDown()
	cn.sess.Close()
	if ctx.Err() == nil {
		c.log.Warn("connection lost", "buffered", c.Stats().Buffered)
	}
}

// connectionDown marks the client disconnected: messages in flight go
// back to the queue, waiting Publish and ReportState calls return nil
// (their messages are buffered), and the twin patch in flight is merged
// back into the pending one.
func (c *Client) connectionDown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = nil
	c.upCh = make(chan struct{})
	for _, e := range c.queue {
		if e.state == stateSent {
			e.state = stateQueued
		}
		e.complete(nil)
	}
	c.next = 0
	c.twinDown()
}
