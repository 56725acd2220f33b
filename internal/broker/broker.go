// Package broker is the hub's embedded MQTT broker: mochi-mqtt behind
// listeners that fieldhub owns (TCP, TLS, WebSocket, secure WebSocket), with
// hooks that authenticate every CONNECT, enforce the device topic ACLs of
// DESIGN §3 on every publish and subscribe, bound hostile topic filters
// before mochi indexes them, and hand device telemetry, gateway batches,
// alerts, command responses and reported twin patches to an Ingester. A
// gateway (Config.Gateways) may also act for the devices registered behind
// it (see acl.go).
//
// A QoS 1 telemetry, batch, alert, response or twin PUBLISH is
// acknowledged only once the Ingester reports it durable ("an
// acknowledgement means durable", DESIGN §2.1), without making a
// connection wait for one message before reading the next: acks are
// written by the broker, in receive order per connection, when the
// Ingester's done callbacks fire, and at most ReceiveMaximum messages per
// device (MaxPendingBatches batches per gateway) are pending.
package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/idleconn"
	"github.com/fieldhub/fieldhub/topic"
)

// Authenticator decides who may connect. The registry implements it.
type Authenticator interface {
	// Authenticate decides a CONNECT. peerCerts is the verified client chain
	// on TLS listeners (leaf first; nil otherwise). It returns the device id,
	// which must equal clientID. A refusal error may implement
	// RefusalReason() string (used as the metric label) and
	// BadCredentials() bool (true answers "bad user name or password",
	// false "not authorized"; without it a failed password login gets the
	// former and everything else the latter).
	Authenticate(ctx context.Context, clientID, username string, password []byte, peerCerts []*x509.Certificate) (deviceID string, err error)
}

// Ingester takes device telemetry. The telemetry pipeline implements it.
type Ingester interface {
	// Ingest handles a telemetry payload published by device. It calls done
	// exactly once, possibly from another goroutine and possibly before
	// returning, when the data is durable (nil), refused (an error matching
	// payload.ErrRefused or store.ErrTypeMismatch), or failed (any other
	// error). The broker acks in receive order per connection whatever the
	// completion order. done must not block: it runs on the Ingester's
	// goroutine (the broker writes acks from its own goroutines).
	Ingest(device string, payload []byte, done func(err error))
}

// BatchIngester is an optional interface of the Ingester: it takes the
// batches a gateway publishes on devices/{gateway}/batch (QoS 1 acked, as
// telemetry is, only once done reports every reading durable). Its done
// has Ingest's contract; a refusal error that also implements
// NotAuthorized() bool returning true (a reading of a device that is not
// the gateway's child) is answered 0x87 Not authorized instead of 0x99
// (MQTT 5), and closes an MQTT 3.1.1 connection instead of being acked.
// Without it, every publish on a batch topic is denied.
type BatchIngester interface {
	IngestBatch(gateway string, payload []byte, done func(err error))
}

// AlertIngester is an optional interface of the Ingester: it takes the
// alerts published on devices/{id}/alerts (by the device or its gateway),
// with Ingest's contract, so that a QoS 1 alert is acked only once it is
// durable. Without it, alerts go on through the broker to subscribers.
type AlertIngester interface {
	IngestAlert(device string, payload []byte, done func(err error))
}

// ResponseIngester is an optional interface of the Ingester: it takes the
// answers devices publish to commands on devices/{id}/responses/{cid},
// with Ingest's contract (a QoS 1 response is acked once done reports it
// durable). correlation is the MQTT 5 Correlation Data of the PUBLISH (nil
// from MQTT 3.1.1). A refusal error may implement ReasonCode() byte to
// choose the MQTT 5 PUBACK reason code (default 0x99). With it, the broker
// also leaves command redelivery to the Ingester: when a device reconnects
// to a persistent session, the unacknowledged publishes of its own
// commands that mochi kept are dropped rather than resent (the command
// service resends what is still due, and never what has expired).
// Without it, responses go on through the broker to subscribers.
type ResponseIngester interface {
	IngestResponse(device, commandID string, correlation, payload []byte, done func(err error))
}

// TwinIngester is an optional interface of the Ingester: it takes the
// reported-state patches devices publish on devices/{id}/twin/reported,
// with Ingest's contract. Without it, they go on through the broker to
// subscribers.
type TwinIngester interface {
	IngestReported(device string, payload []byte, done func(err error))
}

// Gateways tells which devices a gateway may act for (DESIGN §3). The
// registry implements it. Both methods run on the ACL path of every
// publish a gateway makes for a child and of every delivery to it: they
// must answer from a cache, and answer false when in doubt.
type Gateways interface {
	// IsGateway reports whether id is a gateway (has devices behind it).
	IsGateway(ctx context.Context, id string) bool
	// IsChild reports whether device is registered behind gateway.
	IsChild(ctx context.Context, gateway, device string) bool
}

// Presence is told when devices come and go. It is optional. Its methods are
// called in order per device, under a lock: they must not block.
type Presence interface {
	Connected(deviceID string, at time.Time)
	Disconnected(deviceID string, at time.Time)
}

// SubscribeWatcher is an optional interface of the Presence: it is told
// the filters a client (a device, or a gateway for its children) was
// granted by a SUBSCRIBE, so that what waits for a device (queued
// commands) can be sent once it listens. It must not block.
type SubscribeWatcher interface {
	Subscribed(clientID string, filters []string)
}

// Defaults of Config fields left at their zero value.
const (
	DefaultMaxPacketSize      = 256 << 10
	DefaultReceiveMaximum     = 1024
	DefaultMaxInflight        = 1024
	DefaultMaxWritesPending   = 256
	DefaultRefusalLogInterval = time.Minute
	DefaultConnectTimeout     = 15 * time.Second
	DefaultSessionExpiry      = 7 * 24 * time.Hour
	DefaultMaxConcurrentAuth  = 64
	DefaultMaxPendingBatches  = 64
	DefaultIdleAfter          = time.Second
	authTimeout               = 10 * time.Second
	gatewayCheckTimeout       = 5 * time.Second
	netBufferSize             = 1024
)

// Config configures a Broker. The zero value of every field but the
// listener addresses means its documented default.
type Config struct {
	// Listener addresses ("host:port"); "" leaves a listener off. Plain TCP
	// and WebSocket listen only when set explicitly.
	TCPAddr, TLSAddr, WSAddr, WSSAddr string
	// TLS holds the server certificate(s); required for TLSAddr and WSSAddr.
	// The broker clones it, requests (but does not require) a client
	// certificate and verifies presented ones itself.
	TLS *tls.Config
	// ClientCAs are the trust anchors for client certificates. When nil,
	// every presented client certificate is refused (tls_unknown_ca);
	// clients without a certificate may still log in with a password.
	ClientCAs *x509.CertPool
	// ClientIntermediates optionally completes client chains.
	ClientIntermediates *x509.CertPool
	// VerifyClient is an optional extra check of a verified client chain
	// (leaf first, root last), e.g. revocation. Its error refuses the
	// handshake; RefusalReason() string, if implemented, labels the metric.
	VerifyClient func(certs []*x509.Certificate) error
	// OpenPolicy is DESIGN §2.3's open policy for development and stock
	// MQTT test suites: anonymous clients, any client id, any topic;
	// publishes on devices/{id}/ topics of the ingested kinds (telemetry,
	// batch, alerts, responses, twin/reported) are ingested for the
	// topic's id, nothing else. New refuses it unless every listener
	// address is loopback.
	OpenPolicy bool
	// MaxPacketSize bounds an inbound packet; default 256 KiB.
	MaxPacketSize uint32
	// ReceiveMaximum bounds unacknowledged QoS 1/2 publishes per client
	// (advertised in CONNACK) and pending ingests per device; default 1024
	// (the store's dedup window assumes at most 1024).
	ReceiveMaximum uint16
	// MaxInflight bounds outbound QoS 1/2 messages stored per client
	// awaiting acknowledgement (queued commands of an offline device with a
	// persistent session); beyond it messages are dropped and counted.
	// Default 1024.
	MaxInflight uint16
	// MaxWritesPending bounds messages queued for a client's socket; beyond
	// it messages to that (slow) client are dropped and counted. Default 256.
	MaxWritesPending int32
	// SessionExpiry caps how long a disconnected persistent session is
	// kept; default 7 days.
	SessionExpiry time.Duration
	// ConnectTimeout bounds the time from accept to CONNACK (TLS handshake,
	// CONNECT, authentication); default 15 s.
	ConnectTimeout time.Duration
	// MaxConcurrentAuth bounds Authenticate calls in progress (password
	// hashing is costly: a reconnect storm must queue, not exhaust memory).
	// A CONNECT that waits longer than 10 s for its turn is answered
	// "server unavailable" (0x88 / 0x03). Default 64.
	MaxConcurrentAuth int
	// Logger receives the broker's logs; default slog.Default().
	Logger *slog.Logger
	// Registerer receives the fieldhub_mqtt_* and fieldhub_ingest_* metrics;
	// nil keeps them unregistered.
	Registerer prometheus.Registerer
	// RefusalLogInterval: refusals and denials are logged at most once per
	// device (or remote address) per reason per interval; default 1 min.
	RefusalLogInterval time.Duration
	// Gateways, when set, lets a gateway act for the devices registered
	// behind it: publish its own devices/{gw}/batch, and for each child C
	// publish devices/C/alerts, status, responses/{cid} and twin/reported
	// and subscribe to devices/C/commands/… and twin/desired. When nil no
	// device is a gateway. Ignored under OpenPolicy, which allows any topic.
	Gateways Gateways
	// MaxPendingBatches bounds the batches of one gateway handed to the
	// BatchIngester and not yet completed (each may hold thousands of
	// readings); beyond it the gateway's connection is not read until one
	// completes. Default 64.
	MaxPendingBatches int
	// IdleAfter is how long an established TCP or TLS connection may go
	// without receiving a byte before it parks: its goroutines end and
	// epoll watches it until the next packet, its keepalive deadline or its
	// close (Linux only; WebSocket connections never park). Default 1 s;
	// negative keeps a goroutine per connection.
	IdleAfter time.Duration
}

// ErrInvalidConfig is wrapped by every configuration error from New.
var ErrInvalidConfig = errors.New("invalid broker config")

// ErrClosed is returned by Start and Publish after Shutdown.
var ErrClosed = errors.New("broker closed")

// Listener names accepted by Addr.
const (
	ListenerTCP = "tcp"
	ListenerTLS = "tls"
	ListenerWS  = "ws"
	ListenerWSS = "wss"
)

const (
	stateNew int32 = iota
	stateRunning
	stateStopping
)

// Broker is the embedded MQTT broker. Create it with New, then Start it.
type Broker struct {
	cfg      Config
	auth     Authenticator
	ings     Ingesters        // ing with its optional interfaces
	subs     SubscribeWatcher // nil when presence is not one
	gateways Gateways         // nil when no device is a gateway
	presence Presence
	log      *slog.Logger
	server   *mqtt.Server
	inline   *mqtt.Client // mochi's inline client
	hook     *hook
	metrics  *metrics
	limiter  *rateLimiter
	slots    *slotTable // pending telemetry and alerts per device
	bslots   *slotTable // pending batches per gateway
	tlsCfg   *tls.Config
	poller   atomic.Pointer[idleconn.Poller] // nil when connections do not park
	authSem  chan struct{}
	// authTimeout bounds the wait for an authentication slot plus
	// Authenticate itself.
	authTimeout time.Duration

	state     atomic.Int32
	stopCh    chan struct{} // closed when Shutdown begins
	done      chan struct{} // closed when Shutdown ends
	shutErr   error
	listeners []*listener

	// mu guards stopping, sessions and pending.Add against Shutdown.
	mu       sync.RWMutex
	stopping bool
	sessions map[*mqtt.Client]*session
	pending  sync.WaitGroup // ingests whose done has not fired
	flushers sync.WaitGroup // ack-writing goroutines

	// presMu guards online and serializes Presence calls.
	presMu sync.Mutex
	online map[string]*mqtt.Client

	now func() time.Time
}

// New validates cfg and builds a Broker. auth may be nil only with
// OpenPolicy; presence may be nil and may implement SubscribeWatcher. ing
// may also implement BatchIngester, AlertIngester, ResponseIngester and
// TwinIngester.
func New(cfg Config, auth Authenticator, ing Ingester, presence Presence) (*Broker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if auth == nil && !cfg.OpenPolicy {
		return nil, fmt.Errorf("%w: auth: an Authenticator is required unless OpenPolicy is set", ErrInvalidConfig)
	}
	if ing == nil {
		return nil, fmt.Errorf("%w: ing: an Ingester is required", ErrInvalidConfig)
	}
	b := &Broker{
		cfg:         cfg,
		auth:        auth,
		gateways:    cfg.Gateways,
		presence:    presence,
		log:         cfg.Logger.With("component", "broker"),
		stopCh:      make(chan struct{}),
		done:        make(chan struct{}),
		sessions:    make(map[*mqtt.Client]*session),
		online:      make(map[string]*mqtt.Client),
		slots:       newSlotTable(int(cfg.ReceiveMaximum)),
		bslots:      newSlotTable(cfg.MaxPendingBatches),
		authSem:     make(chan struct{}, cfg.MaxConcurrentAuth),
		authTimeout: authTimeout,
		now:         time.Now,
	}
	b.limiter = newRateLimiter(cfg.RefusalLogInterval, b.now)
	b.ings = NewIngesters(ing)
	b.subs, _ = presence.(SubscribeWatcher)

	caps := mqtt.NewDefaultServerCapabilities()
	// 0 = no server-imposed expiry: mochi would otherwise delete retained
	// messages (twin/desired, status) and inflight commands after 24 h. A
	// v5 publisher's own Message Expiry Interval is still honoured.
	caps.MaximumMessageExpiryInterval = 0
	caps.MaximumClientWritesPending = cfg.MaxWritesPending
	caps.MaximumInflight = cfg.MaxInflight
	caps.MaximumPacketSize = cfg.MaxPacketSize
	caps.ReceiveMaximum = cfg.ReceiveMaximum
	caps.MaximumSessionExpiryInterval = uint32(cfg.SessionExpiry / time.Second)
	if !cfg.OpenPolicy {
		// mochi checks the ACL before resolving an inbound topic alias, so
		// an aliased publish would be judged on an empty topic. mochi never
		// advertises Topic Alias Maximum in CONNACK, so compliant clients
		// assume 0 anyway; 0 here makes mochi refuse aliases outright.
		caps.TopicAliasMaximum = 0
	}

	b.server = mqtt.New(&mqtt.Options{
		Capabilities:             caps,
		ClientNetReadBufferSize:  netBufferSize,
		ClientNetWriteBufferSize: netBufferSize,
		Logger:                   slog.New(newMochiLogHandler(cfg.Logger.With("component", "mqtt").Handler(), b.limiter)),
		SysTopicResendInterval:   10,
		InlineClient:             true,
	})
	b.inline, _ = b.server.Clients.Get(mqtt.InlineClientId)
	if b.metrics, err = newMetrics(cfg.Registerer, b.server.Info, &b.poller); err != nil {
		return nil, err
	}
	b.hook = &hook{b: b}
	if err := b.server.AddHook(b.hook, nil); err != nil {
		return nil, fmt.Errorf("broker: adding hook: %w", err)
	}
	if cfg.TLS != nil {
		b.tlsCfg = b.serverTLSConfig()
	}
	return b, nil
}

func (c Config) withDefaults() (Config, error) {
	addrs := c.addrs()
	if len(addrs) == 0 {
		return c, fmt.Errorf("%w: TCPAddr, TLSAddr, WSAddr, WSSAddr: at least one listener address is required", ErrInvalidConfig)
	}
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return c, fmt.Errorf("%w: %s: %q: %w", ErrInvalidConfig, a.field, a.addr, err)
		}
		if c.OpenPolicy && !isLoopbackAddr(a.addr) {
			return c, fmt.Errorf("%w: OpenPolicy: %s %q is not a loopback address; the open policy is allowed only on 127.0.0.0/8, ::1 or localhost", ErrInvalidConfig, a.field, a.addr)
		}
	}
	if (c.TLSAddr != "" || c.WSSAddr != "") && (c.TLS == nil || (len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil && c.TLS.GetConfigForClient == nil)) {
		return c, fmt.Errorf("%w: TLS: a server certificate is required when TLSAddr or WSSAddr is set", ErrInvalidConfig)
	}
	if c.MaxPacketSize == 0 {
		c.MaxPacketSize = DefaultMaxPacketSize
	} else if c.MaxPacketSize < 1024 {
		return c, fmt.Errorf("%w: MaxPacketSize: %d is below 1024 bytes", ErrInvalidConfig, c.MaxPacketSize)
	}
	if c.ReceiveMaximum == 0 {
		c.ReceiveMaximum = DefaultReceiveMaximum
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.MaxConcurrentAuth < 0 {
		return c, fmt.Errorf("%w: MaxConcurrentAuth: %d is negative", ErrInvalidConfig, c.MaxConcurrentAuth)
	} else if c.MaxConcurrentAuth == 0 {
		c.MaxConcurrentAuth = DefaultMaxConcurrentAuth
	}
	if c.MaxPendingBatches < 0 {
		return c, fmt.Errorf("%w: MaxPendingBatches: %d is negative", ErrInvalidConfig, c.MaxPendingBatches)
	} else if c.MaxPendingBatches == 0 {
		c.MaxPendingBatches = DefaultMaxPendingBatches
	}
	if c.IdleAfter == 0 {
		c.IdleAfter = DefaultIdleAfter
	}
	if c.MaxWritesPending < 0 {
		return c, fmt.Errorf("%w: MaxWritesPending: %d is negative", ErrInvalidConfig, c.MaxWritesPending)
	} else if c.MaxWritesPending == 0 {
		c.MaxWritesPending = DefaultMaxWritesPending
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"SessionExpiry", &c.SessionExpiry, DefaultSessionExpiry},
		{"ConnectTimeout", &c.ConnectTimeout, DefaultConnectTimeout},
		{"RefusalLogInterval", &c.RefusalLogInterval, DefaultRefusalLogInterval},
	} {
		if *d.v < 0 {
			return c, fmt.Errorf("%w: %s: %v is negative", ErrInvalidConfig, d.name, *d.v)
		} else if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.SessionExpiry/time.Second > 1<<32-1 {
		return c, fmt.Errorf("%w: SessionExpiry: %v is above the MQTT maximum (about 136 years)", ErrInvalidConfig, c.SessionExpiry)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

type listenerAddr struct{ name, field, addr string }

func (c Config) addrs() []listenerAddr {
	var out []listenerAddr
	for _, a := range []listenerAddr{
		{ListenerTCP, "TCPAddr", c.TCPAddr},
		{ListenerTLS, "TLSAddr", c.TLSAddr},
		{ListenerWS, "WSAddr", c.WSAddr},
		{ListenerWSS, "WSSAddr", c.WSSAddr},
	} {
		if a.addr != "" {
			out = append(out, a)
		}
	}
	return out
}

// isLoopbackAddr reports whether a "host:port" address names only loopback:
// 127.0.0.0/8, ::1 or localhost. An empty host (":1883") or an unspecified
// one ("0.0.0.0") is not loopback.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// Start binds every configured listener and starts serving. It returns the
// first bind error (closing whatever it had bound); it may be called once.
func (b *Broker) Start(ctx context.Context) (err error) {
	if !b.state.CompareAndSwap(stateNew, stateRunning) {
		if b.state.Load() == stateStopping {
			return ErrClosed
		}
		return errors.New("broker: already started")
	}
	if b.cfg.IdleAfter > 0 {
		p, err := idleconn.NewPoller(b.cfg.IdleAfter)
		switch {
		case errors.Is(err, idleconn.ErrUnsupported):
			b.log.Info("idle connections keep their goroutines", "reason", err)
		case err != nil:
			return fmt.Errorf("broker: %w", err)
		default:
			b.poller.Store(p)
			defer func() {
				if err != nil {
					_ = p.Close()
					b.poller.Store(nil)
				}
			}()
		}
	}
	var lc net.ListenConfig
	for _, a := range b.cfg.addrs() {
		ln, err := lc.Listen(ctx, "tcp", a.addr)
		if err == nil && b.cfg.OpenPolicy && !isLoopbackIP(ln.Addr()) {
			ln.Close()
			err = fmt.Errorf("open policy: bound address %s is not loopback", ln.Addr())
		}
		if err != nil {
			for _, l := range b.listeners {
				l.ln.Close()
			}
			b.listeners = nil
			return fmt.Errorf("broker: listening on %s %q: %w", a.name, a.addr, err)
		}
		l := &listener{
			id:             a.name,
			ln:             ln,
			connectTimeout: b.cfg.ConnectTimeout,
			log:            b.log.With("listener", a.name),
			closed:         make(chan struct{}),
			served:         make(chan struct{}),
			closeClients:   b.closeListenerClients,
			refused:        b.logRefusal,
			poller:         b.poller.Load(),
		}
		switch a.name {
		case ListenerTLS:
			l.tlsCfg = b.tlsCfg
		case ListenerWSS:
			l.tlsCfg = b.wsTLSConfig(b.tlsCfg)
		}
		if a.name == ListenerWS || a.name == ListenerWSS {
			l.initWS()
		}
		b.listeners = append(b.listeners, l)
	}
	for _, l := range b.listeners {
		if err := b.server.AddListener(l); err != nil {
			for _, l := range b.listeners {
				l.ln.Close()
			}
			b.listeners = nil
			return fmt.Errorf("broker: adding listener %s: %w", l.id, err)
		}
	}
	if err := b.server.Serve(); err != nil {
		return fmt.Errorf("broker: serving: %w", err)
	}
	for _, l := range b.listeners {
		b.log.Info("mqtt listener started", "listener", l.id, "addr", l.ln.Addr().String())
	}
	return nil
}

func isLoopbackIP(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// Addr returns the bound address of listener name ("tcp", "tls", "ws",
// "wss"), or nil when that listener is off or the broker is not started.
func (b *Broker) Addr(name string) net.Addr {
	if b.state.Load() == stateNew {
		return nil
	}
	for _, l := range b.listeners {
		if l.id == name {
			return l.ln.Addr()
		}
	}
	return nil
}

// Disconnect closes the live session of deviceID at once (MQTT 5 clients
// get DISCONNECT 0x98 "administrative action"). It is used when a device is
// deleted or its credentials rotated; the device may reconnect if its new
// credentials allow it.
func (b *Broker) Disconnect(deviceID string) {
	b.presMu.Lock()
	cl := b.online[deviceID]
	b.presMu.Unlock()
	if cl == nil {
		if c, ok := b.server.Clients.Get(deviceID); ok && !c.Net.Inline {
			cl = c
		}
	}
	if cl == nil || cl.Closed() {
		return
	}
	b.log.Info("disconnecting device", "device", deviceID, "remote", cl.Net.Remote)
	b.closeClient(cl, packets.ErrAdministrativeAction)
}

// Online reports whether deviceID has a live session.
func (b *Broker) Online(deviceID string) bool {
	b.presMu.Lock()
	defer b.presMu.Unlock()
	_, ok := b.online[deviceID]
	return ok
}

// OnlineCount returns the number of devices with a live session.
func (b *Broker) OnlineCount() int {
	b.presMu.Lock()
	defer b.presMu.Unlock()
	return len(b.online)
}

// Publish publishes a message from the hub itself (mochi's inline client):
// it bypasses the ACLs, reaches subscribers whose ACL allows the topic, and
// is retained when retain is set. qos caps the delivery QoS.
func (b *Broker) Publish(topicName string, payload []byte, retain bool, qos byte) error {
	if b.state.Load() != stateRunning {
		if b.state.Load() == stateNew {
			return errors.New("broker: publish before Start")
		}
		return ErrClosed
	}
	if topicName == "" || qos > 2 {
		return fmt.Errorf("broker: publish: invalid topic %q or qos %d", topicName, qos)
	}
	if err := checkTopicShape(topicName); err != nil {
		return fmt.Errorf("broker: publish: %w", err)
	}
	if err := b.server.Publish(topicName, payload, retain, qos); err != nil {
		return fmt.Errorf("broker: publish %q: %w", topicName, err)
	}
	return nil
}

// Message is a message the hub publishes itself (PublishMessage). MQTT 5
// subscribers receive its properties; MQTT 3.1.1 subscribers only its
// topic and payload.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte // caps the delivery QoS
	Retain  bool
	// ResponseTopic and CorrelationData ask for an answer (MQTT 5 §4.10).
	ResponseTopic   string
	CorrelationData []byte
	// ContentType is the MQTT 5 Content Type, e.g. "application/json";
	// a non-empty one also marks the payload as UTF-8.
	ContentType string
	// Expiry > 0 is the Message Expiry Interval, in whole seconds rounded
	// down (at least 1): a copy still undelivered then is dropped, and MQTT
	// 5 subscribers are told the time left.
	Expiry time.Duration
}

// PublishMessage is Publish with MQTT 5 properties.
func (b *Broker) PublishMessage(m Message) error {
	if b.state.Load() != stateRunning {
		if b.state.Load() == stateNew {
			return errors.New("broker: publish before Start")
		}
		return ErrClosed
	}
	if m.Topic == "" || m.QoS > 2 || b.inline == nil {
		return fmt.Errorf("broker: publish: invalid topic %q or qos %d", m.Topic, m.QoS)
	}
	if err := checkTopicShape(m.Topic); err != nil {
		return fmt.Errorf("broker: publish: %w", err)
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: m.QoS, Retain: m.Retain},
		TopicName:   m.Topic,
		Payload:     m.Payload,
		// mochi never acks the inline client, but checks the id is set.
		PacketID: uint16(m.QoS),
		Properties: packets.Properties{
			ResponseTopic:   m.ResponseTopic,
			CorrelationData: m.CorrelationData,
			ContentType:     m.ContentType,
		},
	}
	if m.ContentType != "" {
		pk.Properties.PayloadFormat, pk.Properties.PayloadFormatFlag = 1, true
	}
	if m.Expiry > 0 {
		pk.Properties.MessageExpiryInterval = uint32(max(1, min(m.Expiry/time.Second, 1<<32-1)))
	}
	if err := b.server.InjectPacket(b.inline, pk); err != nil {
		return fmt.Errorf("broker: publish %q: %w", m.Topic, err)
	}
	return nil
}

// HasSubscriber reports whether a connected client (not the hub's inline
// client) holds a subscription matching the topic name, so that a message
// published there now would be delivered to someone.
func (b *Broker) HasSubscriber(topicName string) bool {
	if b.state.Load() != stateRunning {
		return false
	}
	subs := b.server.Topics.Subscribers(topicName)
	for id := range subs.Subscriptions {
		if b.connected(id) {
			return true
		}
	}
	for _, group := range subs.Shared {
		for id := range group {
			if b.connected(id) {
				return true
			}
		}
	}
	return false
}

// connected reports whether client id has a live network connection.
func (b *Broker) connected(id string) bool {
	cl, ok := b.server.Clients.Get(id)
	return ok && !cl.Net.Inline && !cl.Closed()
}

// Subscribe delivers every message published on topics matching filter
// (by devices, or retained before the call) to fn, on the publisher's
// goroutine: fn must not block. id tells subscriptions apart; it must be
// unique per filter.
func (b *Broker) Subscribe(filter string, id int, fn func(topic string, payload []byte)) error {
	err := b.server.Subscribe(filter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		fn(pk.TopicName, pk.Payload)
	})
	if err != nil {
		return fmt.Errorf("broker: subscribe %q: %w", filter, err)
	}
	return nil
}

// Shutdown stops accepting connections, stops taking telemetry, waits for
// pending ingests to complete and their acks to be written, disconnects
// every client (MQTT 5: 0x8B "server shutting down") and waits for the
// broker's goroutines. It returns ctx's error if ctx ends first (the broker
// is closed anyway). It is safe to call more than once; later calls wait for
// the first to finish or for their own ctx.
func (b *Broker) Shutdown(ctx context.Context) error {
	if b.state.Load() == stateNew && b.state.CompareAndSwap(stateNew, stateStopping) {
		close(b.stopCh)
		close(b.done)
		return nil
	}
	if !b.state.CompareAndSwap(stateRunning, stateStopping) {
		select {
		case <-b.done:
			return b.shutErr
		case <-ctx.Done():
			return fmt.Errorf("broker: shutdown: %w", ctx.Err())
		}
	}
	defer close(b.done)
	close(b.stopCh)
	b.mu.Lock()
	b.stopping = true
	b.mu.Unlock()
	for _, l := range b.listeners {
		l.stopAccepting()
	}

	var errs []error
	if err := waitCtx(ctx, b.pending.Wait); err != nil {
		errs = append(errs, fmt.Errorf("waiting for pending ingests: %w", err))
	} else if err := waitCtx(ctx, b.flushers.Wait); err != nil {
		// (flushers are started only by completing ingests, so waiting for
		// them is ordered only once no ingest is pending)
		errs = append(errs, fmt.Errorf("waiting for acks: %w", err))
	}
	// mochi's Close disconnects every client, then waits for their
	// goroutines without a bound: bound it here.
	if err := waitCtx(ctx, func() { _ = b.server.Close() }); err != nil && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("closing clients: %w", err))
	}
	for _, l := range b.listeners {
		if err := waitCtx(ctx, func() { <-l.served }); err != nil && len(errs) == 0 {
			errs = append(errs, fmt.Errorf("stopping listener %s: %w", l.id, err))
		}
	}
	if p := b.poller.Load(); p != nil && len(errs) == 0 {
		// Every client is closed (which resumed the parked ones); a
		// shutdown that timed out leaves the poller to the process exit.
		_ = p.Close()
	}
	if len(errs) > 0 {
		b.shutErr = fmt.Errorf("broker: shutdown: %w", errors.Join(errs...))
		b.log.Warn("broker shutdown incomplete", "error", b.shutErr)
	}
	return b.shutErr
}

// closeListenerClients disconnects the clients of one listener at
// shutdown. It replaces mochi's own (v2.7.9), whose Clients.GetByListener
// takes the clients' read lock twice and so deadlocks against a concurrent
// Clients.Delete of a client that is just going away (seen as a shutdown
// hanging until its deadline).
func (b *Broker) closeListenerClients(id string) {
	for _, cl := range b.server.Clients.GetAll() {
		if cl.Net.Listener == id && !cl.Closed() {
			_ = b.server.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}

// waitCtx runs wait in a goroutine and returns when it returns or ctx ends.
// On ctx's end the goroutine is left to finish on its own: it only waits.
func waitCtx(ctx context.Context, wait func()) error {
	ch := make(chan struct{})
	go func() {
		wait()
		close(ch)
	}()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// closeClient ends a client's connection: MQTT 5 clients get a DISCONNECT
// with code first (MQTT 3.1.1 has no server DISCONNECT).
func (b *Broker) closeClient(cl *mqtt.Client, code packets.Code) {
	if cl.Properties.ProtocolVersion == 5 {
		_ = b.server.DisconnectClient(cl, code)
		return
	}
	cl.Stop(code)
}

// identity returns the device a client speaks for: its client id, which
// Authenticate checked, or under the open policy its client id when that
// is a valid device id.
func (b *Broker) identity(cl *mqtt.Client) string {
	if cl.Net.Inline {
		return ""
	}
	if b.cfg.OpenPolicy && !topic.ValidDeviceID(cl.ID) {
		return ""
	}
	return cl.ID
}

// remoteHost returns the client's remote IP (no port), the key for
// rate-limited logs about unauthenticated clients.
func remoteHost(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}
