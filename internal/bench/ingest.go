// Package bench holds fieldhub's reproducible benchmarks (DESIGN §5, §2.6):
// a lean MQTT publisher that loads a broker with QoS 1 telemetry and
// measures acknowledged messages per second and publish→ack latency, CPU
// and memory readings of the broker's process from /proc, a bare mochi-mqtt
// broker and a Mosquitto launcher to serve as baselines, and the report
// formats that docs/benchmarks.md quotes.
//
// The load generator speaks MQTT 3.1.1 and 5 with hand-encoded packets
// rather than through a client library, so that on a two-core machine
// shared with the broker it spends far less CPU per message than the
// broker it measures. Each connection keeps a window of unacknowledged
// QoS 1 messages and sends what the window allows in one write; latency
// runs from a message's encoding to its PUBACK. The generator's own CPU
// time is reported beside the broker's.
package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldhub/fieldhub/topic"
)

// Payload formats of IngestConfig.PayloadFormat.
const (
	FormatJSON  = "json"  // DESIGN §3 JSON object (the default)
	FormatSenML = "senml" // RFC 8428 SenML JSON array
	// FormatBatch is an edge gateway's uplink: BatchReadings readings of
	// the device itself per message on devices/{id}/batch (the device must
	// be a gateway at the hub, i.e. have a child).
	FormatBatch = "batch"
)

// QoSAtMostOnce selects QoS 0 in IngestConfig.QoS, whose zero value means
// QoS 1. At QoS 0 nothing is acknowledged: Messages counts the messages
// written in the timed window and no latency is measured.
const QoSAtMostOnce byte = 0x80

// Defaults of IngestConfig.
const (
	DefaultDuration       = 10 * time.Second
	DefaultInflight       = 64
	DefaultMetrics        = 3
	DefaultProtocol       = 4
	DefaultConnectTimeout = 10 * time.Second
	DefaultDrainTimeout   = 2 * time.Second
	DefaultKeepAlive      = 60 * time.Second
	// MaxInflight bounds IngestConfig.Inflight (packet ids are 16 bits).
	MaxInflight = 16384
)

// Device is one publisher's identity. The MQTT client id is ID, and the
// device publishes to devices/{ID}/telemetry.
type Device struct {
	ID       string
	Username string // empty: none sent
	Password string // empty: none sent (MQTT 3.1.1 requires a username with it)
	// Cert is the device's TLS client certificate, used when
	// IngestConfig.TLS is set; nil: the TLS config's own certificates.
	Cert *tls.Certificate
}

// Devices returns n devices named prefix-0001, prefix-0002, … with no
// credentials (prefix "bench" when empty).
func Devices(n int, prefix string) []Device {
	if prefix == "" {
		prefix = "bench"
	}
	d := make([]Device, n)
	for i := range d {
		d[i].ID = fmt.Sprintf("%s-%04d", prefix, i+1)
	}
	return d
}

// IngestConfig describes one ingest run. Its zero value, with Addr and
// Devices set, is a run of 10 s of QoS 1 MQTT 3.1.1 JSON telemetry with 3
// metrics and a window of 64 unacknowledged messages per connection, as
// fast as acknowledgements allow.
type IngestConfig struct {
	// Label names the target in reports ("hub", "mosquitto", …); default Addr.
	Label string
	// Addr is the broker's host:port.
	Addr string
	// TLS, when set, is used for every connection (cloned per device, with
	// the device's Cert); nil means plain TCP.
	TLS *tls.Config
	// Devices are the publishers, one connection each.
	Devices []Device
	// Protocol is 4 (MQTT 3.1.1, the default) or 5.
	Protocol byte
	// Warmup is published before the timed window and not counted; 0 means
	// none.
	Warmup time.Duration
	// Duration is the timed window; default 10 s.
	Duration time.Duration
	// Inflight is each connection's window of unacknowledged QoS 1
	// messages; default 64, at most MaxInflight, and lowered to the
	// broker's Receive Maximum when an MQTT 5 broker announces a smaller one.
	Inflight int
	// Rate is the target of messages per second over all connections,
	// paced by a shared token bucket; 0 means as fast as acks allow.
	Rate float64
	// Metrics is the number of metrics per message; default 3
	// (temperature, humidity, vibration).
	Metrics int
	// QoS is 1 (the zero value) or QoSAtMostOnce.
	QoS byte
	// PayloadFormat is FormatJSON (the default), FormatSenML or FormatBatch.
	PayloadFormat string
	// BatchReadings is the readings per message of FormatBatch; default 100.
	BatchReadings int
	// SeqStart is the first seq of every device; 0 means the run's start
	// time in Unix microseconds, so that a later run against the same hub
	// continues above an earlier one's seq instead of replaying
	// duplicates that a hub may skip.
	SeqStart uint64
	// ServerPID, when not 0, is the broker's process: its CPU time over
	// the timed window and its RSS at the window's end are reported.
	ServerPID int
	// ConnectTimeout bounds each dial, TLS handshake and CONNACK; default
	// 10 s.
	ConnectTimeout time.Duration
	// DrainTimeout bounds the wait for outstanding acks after the window,
	// before DISCONNECT; default 2 s.
	DrainTimeout time.Duration
	// WriteBatch caps the messages sent per write system call; 0 means
	// no cap: a connection sends the free part of its window at once (and,
	// once the window is full, waits until a quarter is free), which
	// costs the generator and the broker the fewest system calls. 1 sends
	// each message in its own write, as stock clients (paho,
	// mosquitto_pub) do.
	WriteBatch int
	// KeepAlive is the MQTT keep alive sent in CONNECT; default 60 s.
	KeepAlive time.Duration
	// Logger receives progress and errors; nil discards them.
	Logger *slog.Logger
}

// ErrConfig is wrapped by errors about an invalid IngestConfig.
var ErrConfig = errors.New("invalid ingest config")

// withDefaults returns c with defaults applied, or an error wrapping
// ErrConfig.
func (c IngestConfig) withDefaults() (IngestConfig, error) {
	bad := func(format string, args ...any) (IngestConfig, error) {
		return c, fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	if c.Addr == "" {
		return bad("no address")
	}
	if c.Label == "" {
		c.Label = c.Addr
	}
	if len(c.Devices) == 0 {
		return bad("no devices")
	}
	if c.Protocol == 0 {
		c.Protocol = DefaultProtocol
	}
	if c.Protocol != 4 && c.Protocol != 5 {
		return bad("protocol %d (want 4 or 5)", c.Protocol)
	}
	switch c.QoS {
	case 0:
		c.QoS = 1
	case 1:
	case QoSAtMostOnce:
		c.QoS = 0
	default:
		return bad("qos %d (want 1, or QoSAtMostOnce for 0)", c.QoS)
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Duration < 0 || c.Warmup < 0 {
		return bad("negative duration or warmup")
	}
	if c.Inflight == 0 {
		c.Inflight = DefaultInflight
	}
	if c.Inflight < 1 || c.Inflight > MaxInflight {
		return bad("inflight %d (want 1…%d)", c.Inflight, MaxInflight)
	}
	if c.Rate < 0 {
		return bad("negative rate")
	}
	if c.WriteBatch < 0 {
		return bad("negative write batch")
	}
	if c.Metrics == 0 {
		c.Metrics = DefaultMetrics
	}
	if c.Metrics < 1 || c.Metrics > 1000 {
		return bad("metrics %d (want 1…1000)", c.Metrics)
	}
	switch c.PayloadFormat {
	case "":
		c.PayloadFormat = FormatJSON
	case FormatJSON, FormatSenML:
	case FormatBatch:
		if c.BatchReadings <= 0 {
			c.BatchReadings = 100
		}
	default:
		return bad("payload format %q (want %q, %q or %q)", c.PayloadFormat, FormatJSON, FormatSenML, FormatBatch)
	}
	if c.PayloadFormat != FormatBatch {
		c.BatchReadings = 1 // one reading per message, whatever was asked
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.KeepAlive > 65535*time.Second {
		return bad("keep alive %s too long", c.KeepAlive)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	seen := make(map[string]bool, len(c.Devices))
	for _, d := range c.Devices {
		if !topic.ValidDeviceID(d.ID) {
			return bad("device id %q", d.ID)
		}
		if seen[d.ID] {
			return bad("duplicate device id %q", d.ID)
		}
		seen[d.ID] = true
		if c.Protocol == 4 && d.Password != "" && d.Username == "" {
			return bad("device %q: MQTT 3.1.1 needs a username with a password", d.ID)
		}
	}
	return c, nil
}

// IngestResult is the outcome of one run. Counts and latencies cover the
// timed window (acks that arrived in it); Errors and Refused cover the
// whole run, warmup and drain included, so that nothing is hidden.
type IngestResult struct {
	Label         string
	Addr          string
	Devices       int
	Protocol      byte
	QoS           byte
	Inflight      int
	Rate          float64 // target; 0 = unpaced
	WriteBatch    int     // messages per write at most; 0 = no cap
	Metrics       int
	PayloadFormat string
	PacketBytes   int // size of a typical PUBLISH packet, headers included
	Warmup        time.Duration
	Duration      time.Duration // the timed window

	Messages     int64 // acknowledged with success in the window (QoS 0: written)
	Points       int64 // Messages × Metrics (× BatchReadings)
	MsgsPerSec   float64
	PointsPerSec float64
	Published    int64 // written in the window

	// Publish→ack latency of the messages acked in the window, from a
	// log-linear histogram (within 3%); Max is exact.
	P50, P99, P999, Max, Mean time.Duration

	Errors      int64          // refused PUBACKs + disconnects + unexpected acks
	Refused     map[byte]int64 // PUBACK reason codes ≥ 0x80 and their counts
	Disconnects int64          // connections lost before the end
	Unacked     int64          // published but never acked by the end of the drain

	// With IngestConfig.ServerPID: the broker's CPU time over the window,
	// the same per 1,000 acked messages, and its RSS at the window's end.
	ServerPID      int
	ServerCPU      time.Duration
	ServerCPUPer1k time.Duration
	ServerRSS      int64
	// The generator's own CPU time over the window (this process), to
	// show how much of the machine the measurement itself took.
	GeneratorCPU time.Duration
}

// ConnectError is returned by RunIngest when the broker refuses a device's
// CONNECT.
type ConnectError struct {
	Device   string
	Protocol byte
	Code     byte   // CONNACK return code (3.1.1) or reason code (5)
	Reason   string // MQTT 5 reason string, if the broker sent one
}

// Error describes the refusal with the code's name.
func (e *ConnectError) Error() string {
	s := fmt.Sprintf("device %s: connection refused: 0x%02x %s", e.Device, e.Code, reasonText(e.Protocol, e.Code))
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// ErrAllDisconnected is returned (with the partial result) when every
// connection was lost before the end of the run.
var ErrAllDisconnected = errors.New("all connections lost")

// run is the state shared by one RunIngest's goroutines.
type run struct {
	cfg      IngestConfig
	base     time.Time // time zero of the run's nanosecond clock
	w0, w1   int64     // the timed window, nanoseconds since base
	pacer    *pacer    // nil when unpaced
	stopped  atomic.Bool
	stop     chan struct{} // closed when publishing must end
	live     atomic.Int64  // connections not failed
	allDead  chan struct{} // closed when live reaches 0
	dead     sync.Once
	seqStart uint64
	log      *slog.Logger
}

// mono returns t as nanoseconds since the run's start.
func (r *run) mono(t time.Time) int64 { return int64(t.Sub(r.base)) }

// RunIngest connects every device, publishes telemetry for Warmup and then
// Duration, and reports acknowledged messages, latency and, with
// ServerPID, the broker's CPU and memory. It fails fast, before any load,
// when a connection is refused (a *ConnectError) or cannot be made. When
// ctx ends early it returns what was measured so far with ctx's error.
// Every connection is closed, with a DISCONNECT, before it returns.
func RunIngest(ctx context.Context, cfg IngestConfig) (IngestResult, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return IngestResult{}, err
	}
	log := cfg.Logger.With("component", "bench", "target", cfg.Label)
	if cfg.ServerPID != 0 {
		if _, err := ProcCPU(cfg.ServerPID); err != nil {
			return IngestResult{}, fmt.Errorf("server process: %w", err)
		}
	}
	r := &run{
		cfg:      cfg,
		stop:     make(chan struct{}),
		allDead:  make(chan struct{}),
		seqStart: cfg.SeqStart,
		log:      log,
	}
	if r.seqStart == 0 {
		r.seqStart = uint64(time.Now().UnixMicro())
	}
	if cfg.Rate > 0 {
		r.pacer = newPacer(cfg.Rate)
	}

	log.Info("connecting", "addr", cfg.Addr, "devices", len(cfg.Devices), "protocol", cfg.Protocol)
	clients, err := connectAll(ctx, r)
	if err != nil {
		return IngestResult{}, err
	}
	log.Info("connected; publishing", "warmup", cfg.Warmup, "duration", cfg.Duration)

	r.base = time.Now()
	r.w0 = int64(cfg.Warmup)
	r.w1 = int64(cfg.Warmup + cfg.Duration)
	r.live.Store(int64(len(clients)))
	var writers, readers sync.WaitGroup
	for _, c := range clients {
		readers.Add(1)
		go func() {
			defer readers.Done()
			c.readLoop()
		}()
		writers.Add(1)
		go func() {
			defer writers.Done()
			c.writeLoop()
		}()
	}

	res, cpuWindow, runErr := r.measure(ctx)

	// Stop publishing; writers drain (bounded by DrainTimeout), send
	// DISCONNECT and return. Anything still blocked after that is closed.
	r.stopped.Store(true)
	close(r.stop)
	if runErr != nil {
		closeAll(clients)
	}
	if !waitTimeout(&writers, cfg.DrainTimeout+2*time.Second) {
		log.Warn("writers did not finish; closing connections")
	}
	graceful := time.AfterFunc(time.Second, func() { closeAll(clients) })
	readers.Wait()
	graceful.Stop()
	closeAll(clients)
	writers.Wait()

	// Merge the per-connection tallies.
	var hist histogram
	res.Refused = map[byte]int64{}
	for _, c := range clients {
		hist.merge(&c.hist)
		res.Messages += c.ackedInWindow
		res.Published += c.publishedInWindow
		res.Unacked += int64(c.sent - c.acked.Load())
		res.Errors += c.unknownAcks
		for code, n := range c.refused {
			res.Refused[code] += n
			res.Errors += n
		}
		if res.PacketBytes == 0 {
			res.PacketBytes = c.packetSize
		}
	}
	if cfg.QoS == 0 {
		res.Messages = res.Published
		res.Unacked = 0
	}
	res.Disconnects = r.disconnects()
	res.Errors += res.Disconnects
	res.Points = res.Messages * int64(cfg.Metrics) * int64(cfg.BatchReadings)
	if secs := res.Duration.Seconds(); secs > 0 {
		res.MsgsPerSec = float64(res.Messages) / secs
		res.PointsPerSec = float64(res.Points) / secs
	}
	res.P50, res.P99, res.P999 = hist.quantile(0.50), hist.quantile(0.99), hist.quantile(0.999)
	res.Max, res.Mean = time.Duration(hist.max), hist.mean()
	// CPU is read when the coordinator wakes at the window's ends, which
	// on a loaded machine may be late: divide by the messages acked over
	// the span actually sampled, at the window's rate.
	if msgs := res.MsgsPerSec * cpuWindow.Seconds(); res.ServerPID != 0 && msgs > 0 {
		res.ServerCPUPer1k = time.Duration(float64(res.ServerCPU) * 1000 / msgs)
	}
	if d := cpuWindow - res.Duration; runErr == nil && (d > res.Duration/10 || d < -res.Duration/10) {
		log.Warn("cpu sampled over a window of a different length; is the machine overloaded?",
			"sampled", cpuWindow, "window", res.Duration)
	}
	log.Info("done", "msgs_per_sec", int64(res.MsgsPerSec), "p99", res.P99, "errors", res.Errors)
	return res, runErr
}

// measure waits out the warmup and the timed window, sampling CPU at both
// ends, and returns the result's header fields and the time between the
// two samples.
func (r *run) measure(ctx context.Context) (IngestResult, time.Duration, error) {
	cfg := r.cfg
	res := IngestResult{
		Label: cfg.Label, Addr: cfg.Addr, Devices: len(cfg.Devices), Protocol: cfg.Protocol,
		QoS: cfg.QoS, Inflight: cfg.Inflight, Rate: cfg.Rate, WriteBatch: cfg.WriteBatch, Metrics: cfg.Metrics,
		PayloadFormat: cfg.PayloadFormat, Warmup: cfg.Warmup, Duration: cfg.Duration,
		ServerPID: cfg.ServerPID,
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	waitUntil := func(at int64) error {
		timer.Reset(time.Until(r.base.Add(time.Duration(at))))
		select {
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-r.allDead:
			return ErrAllDisconnected
		}
	}
	self := os.Getpid()
	sample := func() (srv, gen time.Duration, at time.Time) {
		if cfg.ServerPID != 0 {
			var err error
			if srv, err = ProcCPU(cfg.ServerPID); err != nil {
				r.log.Warn("server cpu", "err", err)
			}
		}
		gen, _ = ProcCPU(self)
		return srv, gen, time.Now()
	}
	if err := waitUntil(r.w0); err != nil {
		res.Duration = 0
		return res, 0, err
	}
	srv0, gen0, at0 := sample()
	err := waitUntil(r.w1)
	srv1, gen1, at1 := sample()
	if err != nil {
		// Report the part of the window that ran.
		res.Duration = min(max(time.Since(r.base)-cfg.Warmup, 0), cfg.Duration)
	}
	res.ServerCPU = srv1 - srv0
	res.GeneratorCPU = gen1 - gen0
	if cfg.ServerPID != 0 {
		rss, rerr := ProcRSS(cfg.ServerPID)
		if rerr != nil {
			r.log.Warn("server rss", "err", rerr)
		}
		res.ServerRSS = rss
	}
	return res, at1.Sub(at0), err
}

// disconnects counts the connections lost before the end.
func (r *run) disconnects() int64 {
	return int64(len(r.cfg.Devices)) - r.live.Load()
}

// connectAll connects every device, at most 32 at a time. On the first
// failure it closes what it opened and returns that error.
func connectAll(ctx context.Context, r *run) ([]*client, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	clients := make([]*client, len(r.cfg.Devices))
	errs := make([]error, len(r.cfg.Devices))
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i, d := range r.cfg.Devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			clients[i], errs[i] = dial(ctx, r, d, uint64(i))
			if errs[i] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	// Prefer the first real error over the cancellations it caused.
	var first error
	for _, err := range errs {
		if err != nil && (first == nil || errors.Is(first, context.Canceled)) {
			first = err
		}
	}
	if first != nil {
		for _, c := range clients {
			if c != nil {
				_ = c.nc.Close()
			}
		}
		return nil, first
	}
	return clients, nil
}

// closeAll closes every connection; safe to call more than once.
func closeAll(clients []*client) {
	for _, c := range clients {
		_ = c.nc.Close()
	}
}

// waitTimeout waits for wg for at most d and reports whether it finished.
// The helper goroutine ends when wg does, which closeAll guarantees.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// reasonText names an MQTT CONNACK or PUBACK code.
func reasonText(protocol, code byte) string {
	if protocol == 4 {
		switch code {
		case 0:
			return "accepted"
		case 1:
			return "unacceptable protocol version"
		case 2:
			return "identifier rejected"
		case 3:
			return "server unavailable"
		case 4:
			return "bad user name or password"
		case 5:
			return "not authorized"
		}
		return "unknown return code"
	}
	if t, ok := reasonTexts[code]; ok {
		return t
	}
	return "reason " + strconv.Itoa(int(code))
}

var reasonTexts = map[byte]string{
	0x00: "success", 0x10: "no matching subscribers",
	0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
	0x83: "implementation specific error", 0x84: "unsupported protocol version",
	0x85: "client identifier not valid", 0x86: "bad user name or password",
	0x87: "not authorized", 0x88: "server unavailable", 0x89: "server busy",
	0x8A: "banned", 0x8B: "server shutting down", 0x8C: "bad authentication method",
	0x8D: "keep alive timeout", 0x8E: "session taken over", 0x90: "topic name invalid",
	0x91: "packet identifier in use", 0x93: "receive maximum exceeded",
	0x95: "packet too large", 0x97: "quota exceeded", 0x99: "payload format invalid",
	0x9A: "retain not supported", 0x9B: "qos not supported", 0x9C: "use another server",
	0x9D: "server moved", 0x9F: "connection rate exceeded",
}
