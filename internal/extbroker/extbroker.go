// Package extbroker connects a hub instance to an external MQTT 5 broker
// (Mosquitto, EMQX, HiveMQ, VerneMQ) when the hub embeds none: devices
// connect to that broker, and every hub instance consumes their messages
// through shared subscriptions ($share/{group}/…), so that N instances
// split the load.
//
// A message is acknowledged to the broker only once the hub has stored it
// (manual acknowledgement, in receive order), on a persistent session
// (Clean Start off, a session expiry): a hub killed mid-stream loses
// nothing, because the broker redelivers what it did not acknowledge —
// to the other members of the group or to it when it returns — and the
// store drops the duplicates by (device, seq).
package extbroker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/broker"
	"github.com/fieldhub/fieldhub/internal/promutil"
	"github.com/fieldhub/fieldhub/topic"
)

// ErrNotConnected is returned by Publish while the link to the broker is down.
var ErrNotConnected = errors.New("extbroker: not connected to the broker")

// Defaults of Config fields left at their zero value.
const (
	DefaultShareGroup     = "fieldhub"
	DefaultSessionExpiry  = 24 * time.Hour
	DefaultReceiveMaximum = 1024
	DefaultBackoffMin     = 100 * time.Millisecond
	DefaultBackoffMax     = 15 * time.Second
)

// Config configures a Client.
type Config struct {
	// URL is the broker: mqtt://host:port, or mqtts://host:port for TLS.
	URL string
	// ClientID must be stable per hub instance (its persistent session
	// holds the messages it has not acknowledged) and differ between
	// instances.
	ClientID string
	Username string
	Password []byte
	// TLS is used for mqtts:// (its ServerName defaults to the URL's host).
	TLS *tls.Config
	// ShareGroup names the shared subscriptions; default "fieldhub".
	ShareGroup string
	// SessionExpiry is how long the broker keeps this instance's session
	// while it is away; default 24 h.
	SessionExpiry time.Duration
	// ReceiveMaximum bounds the unacknowledged messages in flight to this
	// instance; default 1024.
	ReceiveMaximum uint16
	// BackoffMin and BackoffMax bound the reconnect delay (exponential,
	// full jitter).
	BackoffMin, BackoffMax time.Duration
	// Known, when set, is asked before a device's message is handed on:
	// a message under devices/{id}/… for an id it does not know is
	// acknowledged, counted as refused and dropped — the broker's ACL
	// should never have let it through.
	Known      func(device string) bool
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// StatusFunc is told every message on devices/{id}/status (retained
// "online", or the will's "offline"). Every instance receives them all.
type StatusFunc func(device string, payload []byte)

// Client is the hub's link to an external broker.
type Client struct {
	cfg  Config
	u    *url.URL
	ings broker.Ingesters
	stat StatusFunc
	log  *slog.Logger
	m    metrics

	cur    atomic.Pointer[session]
	cancel context.CancelFunc
	done   chan struct{}
	up     chan struct{} // closed at the first connection
	upOnce sync.Once
	closed atomic.Bool

	unknownLog logLimiter
}

// logLimiter allows one log line per interval.
type logLimiter struct {
	last atomic.Int64
}

// Allow reports whether a line may be logged now (at most one every 10 s).
func (l *logLimiter) Allow() bool {
	now := time.Now().UnixNano()
	last := l.last.Load()
	return now-last >= int64(10*time.Second) && l.last.CompareAndSwap(last, now)
}

type metrics struct {
	received  *prometheus.CounterVec // by kind
	stored    *prometheus.CounterVec // acknowledged after storing
	refused   *prometheus.CounterVec // acknowledged, not stored (bad payload…)
	failed    *prometheus.CounterVec // not acknowledged (storage failure)
	connects  prometheus.Counter
	connected prometheus.Gauge
	unknown   prometheus.Counter // refused: the device is not in the registry

	byKind [topic.KindBatch + 1]kindCounters // the vectors' children, bound once
}

// kindCounters are the per-message counters of one topic kind.
type kindCounters struct{ received, stored, refused, failed prometheus.Counter }

// kind returns the counters of k, bound in New so that the per-message
// path does no label lookup.
func (m *metrics) kind(k topic.Kind) *kindCounters {
	if k < 0 || int(k) >= len(m.byKind) {
		k = topic.KindUnknown
	}
	return &m.byKind[k]
}

// New validates cfg and returns a Client. ing takes what devices publish
// (its optional interfaces broker.BatchIngester, broker.AlertIngester,
// broker.ResponseIngester and broker.TwinIngester are used when present).
func New(cfg Config, ing broker.Ingester, status StatusFunc) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("external broker url: %w", err)
	}
	switch u.Scheme {
	case "mqtt", "tcp", "mqtts", "ssl", "tls":
	default:
		return nil, fmt.Errorf("external broker url: scheme %q is not mqtt or mqtts", u.Scheme)
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("external broker url: %q has no port", cfg.URL)
	}
	if cfg.ClientID == "" {
		return nil, errors.New("external broker: client id must be set (stable per hub instance)")
	}
	if cfg.ShareGroup == "" {
		cfg.ShareGroup = DefaultShareGroup
	}
	if cfg.SessionExpiry == 0 {
		cfg.SessionExpiry = DefaultSessionExpiry
	}
	if cfg.ReceiveMaximum == 0 {
		cfg.ReceiveMaximum = DefaultReceiveMaximum
	}
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = DefaultBackoffMin
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = DefaultBackoffMax
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, u: u, ings: broker.NewIngesters(ing), stat: status, log: cfg.Logger, done: make(chan struct{}), up: make(chan struct{})}
	byKind := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"kind"})
	}
	c.m = metrics{
		received: byKind("fieldhub_extbroker_received_total", "Messages received from the external broker, by topic kind."),
		stored:   byKind("fieldhub_extbroker_acked_total", "Messages acknowledged to the external broker after they were stored."),
		refused:  byKind("fieldhub_extbroker_refused_total", "Messages acknowledged but not stored because they were refused (invalid payload, not authorized, type mismatch)."),
		failed:   byKind("fieldhub_extbroker_unacked_total", "Messages left unacknowledged because storing them failed (the broker redelivers them)."),
		connects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_extbroker_connects_total", Help: "Connections made to the external broker.",
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fieldhub_extbroker_connected", Help: "1 while connected to the external broker.",
		}),
		unknown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_extbroker_unknown_device_total", Help: "Messages dropped because their topic names a device the registry does not have.",
		}),
	}
	for k := range c.m.byKind {
		name := topic.Kind(k).String()
		c.m.byKind[k] = kindCounters{
			received: c.m.received.WithLabelValues(name), stored: c.m.stored.WithLabelValues(name),
			refused: c.m.refused.WithLabelValues(name), failed: c.m.failed.WithLabelValues(name),
		}
	}
	if err := promutil.Register(cfg.Registerer, []prometheus.Collector{c.m.received, c.m.stored, c.m.refused, c.m.failed, c.m.connects, c.m.connected, c.m.unknown}); err != nil {
		return nil, fmt.Errorf("extbroker: %w", err)
	}
	return c, nil
}

// Start connects in the background, reconnecting until Shutdown, and
// waits for the first connection until ctx ends.
func (c *Client) Start(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.run(runCtx)
	select {
	case <-c.up:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("extbroker: connecting to %s: %w", c.u.Redacted(), ctx.Err())
	}
}

// Connected reports whether the link is up.
func (c *Client) Connected() bool { return c.cur.Load() != nil }

// Shutdown disconnects (leaving the session, and what was not
// acknowledged, with the broker) and waits for the loop to end.
func (c *Client) Shutdown(ctx context.Context) error {
	if !c.closed.CompareAndSwap(false, true) || c.cancel == nil {
		return nil
	}
	if cl := c.cur.Load(); cl != nil {
		// A normal disconnect: the session, with what is in flight to
		// this instance, stays with the broker for SessionExpiry.
		cl.Disconnect(0)
	}
	c.cancel()
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) run(ctx context.Context) {
	defer close(c.done)
	backoff := c.cfg.BackoffMin
	for ctx.Err() == nil {
		cl, err := c.connect(ctx)
		if err != nil {
			wait := rand.N(backoff) + time.Millisecond
			c.log.Warn("connecting to the external broker failed", "url", c.u.Redacted(), "err", err, "retry_in", wait)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			backoff = min(2*backoff, c.cfg.BackoffMax)
			continue
		}
		backoff = c.cfg.BackoffMin
		c.cur.Store(cl)
		c.m.connects.Inc()
		c.m.connected.Set(1)
		c.upOnce.Do(func() { close(c.up) })
		select {
		case <-ctx.Done():
		case <-cl.Done():
			c.log.Warn("connection to the external broker lost", "url", c.u.Redacted(), "err", cl.Err())
		}
		c.cur.Store(nil)
		c.m.connected.Set(0)
		if ctx.Err() != nil {
			// Shutdown disconnected already; make sure the connection ends.
			cl.Disconnect(0)
		}
	}
}

// subscriptions are what every instance consumes: device traffic shared
// in the group, statuses by every instance.
func (c *Client) subscriptions() []packets.SubOptions {
	share := "$share/" + c.cfg.ShareGroup + "/"
	p := topic.Prefix + "/+/"
	return []packets.SubOptions{
		{Topic: share + p + "telemetry", QoS: 1},
		{Topic: share + p + "batch", QoS: 1},
		{Topic: share + p + "alerts", QoS: 1},
		{Topic: share + p + "responses/+", QoS: 1},
		{Topic: share + p + "twin/reported", QoS: 1},
		{Topic: p + "status", QoS: 1},
	}
}

func (c *Client) connect(ctx context.Context) (*session, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var conn net.Conn
	var err error
	switch c.u.Scheme {
	case "mqtts", "ssl", "tls":
		cfg := c.cfg.TLS
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			cfg.ServerName = c.u.Hostname()
		}
		conn, err = (&tls.Dialer{Config: cfg}).DialContext(dctx, "tcp", c.u.Host)
	default:
		conn, err = (&net.Dialer{}).DialContext(dctx, "tcp", c.u.Host)
	}
	if err != nil {
		return nil, err
	}
	expiry := uint32(c.cfg.SessionExpiry / time.Second)
	recvMax := c.cfg.ReceiveMaximum
	problemInfo := byte(1)
	cp := &packets.Connect{
		ProtocolName:    "MQTT",
		ProtocolVersion: 5,
		ClientID:        c.cfg.ClientID,
		KeepAlive:       30,
		CleanStart:      false,
		Properties:      &packets.Properties{SessionExpiryInterval: &expiry, ReceiveMaximum: &recvMax, RequestProblemInfo: &problemInfo},
	}
	if c.cfg.Username != "" {
		cp.Username, cp.UsernameFlag = c.cfg.Username, true
	}
	if len(c.cfg.Password) > 0 {
		cp.Password, cp.PasswordFlag = c.cfg.Password, true
	}
	cl, ca, err := dial(dctx, conn, cp, c.handle)
	if err != nil {
		conn.Close()
		return nil, err
	}
	codes, err := cl.Subscribe(dctx, c.subscriptions())
	if err != nil {
		cl.Disconnect(0)
		return nil, fmt.Errorf("subscribing: %w", err)
	}
	for i, rc := range codes {
		if rc >= 0x80 && i < len(c.subscriptions()) {
			cl.Disconnect(0)
			return nil, fmt.Errorf("subscribing to %s refused: reason code 0x%02x", c.subscriptions()[i].Topic, rc)
		}
	}
	c.log.Info("connected to the external broker", "url", c.u.Redacted(), "client_id", c.cfg.ClientID,
		"session_present", ca.SessionPresent, "share_group", c.cfg.ShareGroup)
	return cl, nil
}

// handle routes one message to the ingester and acknowledges it once it
// is stored or refused. It runs on paho's router goroutine and does not
// block.
func (c *Client) handle(cl *session, p *packets.Publish, ack func()) {
	t, err := topic.Parse(p.Topic)
	m := c.m.kind(t.Kind)
	m.received.Inc()
	if err != nil {
		c.log.Warn("message on an unexpected topic dropped", "topic", p.Topic, "err", err)
		m.refused.Inc()
		ack()
		return
	}
	done := func(err error) {
		switch {
		case err == nil:
			m.stored.Inc()
			ack()
		case broker.IsRefusal(err):
			m.refused.Inc()
			c.log.Debug("message refused", "topic", p.Topic, "err", err)
			ack()
		default:
			// Not acknowledged: the broker redelivers it after a
			// reconnect, so drop the connection (the session stays).
			m.failed.Inc()
			c.log.Error("storing a message failed; reconnecting for redelivery", "topic", p.Topic, "err", err)
			go cl.Disconnect(0x80)
		}
	}
	if t.Kind != topic.KindStatus && c.cfg.Known != nil && !c.cfg.Known(t.Device) {
		m.refused.Inc()
		c.m.unknown.Inc()
		if c.unknownLog.Allow() {
			c.log.Warn("message from a device the registry does not know dropped; check the broker's ACL", "topic", p.Topic)
		}
		ack()
		return
	}
	var correlation []byte
	if p.Properties != nil {
		correlation = p.Properties.CorrelationData
	}
	if call := c.ings.Call(t, correlation, p.Payload); call != nil {
		call(done)
		return
	}
	if t.Kind == topic.KindStatus {
		if c.stat != nil {
			c.stat(t.Device, p.Payload)
		}
		m.stored.Inc()
		ack()
		return
	}
	m.refused.Inc()
	ack()
}

// Message is a message the hub publishes (commands, desired twin state).
type Message = broker.Message

// PublishMessage publishes m at QoS 0, or at QoS 1 waiting for the
// broker's PUBACK.
func (c *Client) PublishMessage(m Message) error {
	cl := c.cur.Load()
	if cl == nil {
		return ErrNotConnected
	}
	p := &packets.Publish{Topic: m.Topic, Payload: m.Payload, Retain: m.Retain, Properties: &packets.Properties{}}
	p.Properties.ResponseTopic = m.ResponseTopic
	p.Properties.CorrelationData = m.CorrelationData
	if m.ContentType != "" {
		p.Properties.ContentType = m.ContentType
		utf8 := byte(1)
		p.Properties.PayloadFormat = &utf8
	}
	if m.Expiry > 0 {
		e := uint32(max(1, m.Expiry/time.Second))
		p.Properties.MessageExpiry = &e
	}
	if m.QoS == 0 {
		if err := cl.write(p); err != nil {
			return fmt.Errorf("extbroker: publishing on %s: %w", m.Topic, err)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := cl.Publish(ctx, p)
	if err != nil {
		return fmt.Errorf("extbroker: publishing on %s: %w", m.Topic, err)
	}
	if rc >= 0x80 {
		return fmt.Errorf("extbroker: publishing on %s refused: reason code 0x%02x", m.Topic, rc)
	}
	return nil
}

// Publish publishes a plain message (retained desired twin documents).
func (c *Client) Publish(name string, payload []byte, retain bool, qos byte) error {
	return c.PublishMessage(Message{Topic: name, Payload: payload, Retain: retain, QoS: qos})
}
