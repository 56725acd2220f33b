package edge

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/internal/spool"
	"github.com/fieldhub/fieldhub/topic"
)

// uplink drains the spool to the hub: one batch in flight, a record
// acknowledged in the spool only after the hub's PUBACK for its batch.
type uplink struct {
	cfg      Config
	tls      *tls.Config // nil for plaintext
	password []byte
	sp       *spool.Spool
	m        *metrics
	log      *slog.Logger

	connected atomic.Bool
	since     atomic.Int64                // unix ns of the last change of connected
	conns     atomic.Uint64               // connections made, to report on each new one
	lost      atomic.Uint64               // failed or lost connections
	refused   atomic.Uint64               // records in batches the hub refused for good
	cur       atomic.Pointer[paho.Client] // the live connection, nil while down
	// relay hands a command from the hub to the local broker.
	relay func(p *paho.Publish)
}

func newUplink(cfg Config, sp *spool.Spool, m *metrics, log *slog.Logger) (*uplink, error) {
	u := &uplink{cfg: cfg, sp: sp, m: m, log: log}
	u.since.Store(time.Now().UnixNano())
	if cfg.Hub.PasswordFile != "" {
		b, err := os.ReadFile(cfg.Hub.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("hub.password_file: %w", err)
		}
		u.password = bytes.TrimSpace(b)
	}
	if cfg.Hub.Plaintext {
		return u, nil
	}
	pem, err := os.ReadFile(cfg.Hub.CAFile)
	if err != nil {
		return nil, fmt.Errorf("hub.ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("hub.ca_file: no certificate in %s", cfg.Hub.CAFile)
	}
	u.tls = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, ServerName: cfg.Hub.ServerName}
	if u.tls.ServerName == "" {
		if host, _, err := net.SplitHostPort(cfg.Hub.Addr); err == nil {
			u.tls.ServerName = host
		}
	}
	if cfg.Hub.CertFile != "" {
		kp, err := tls.LoadX509KeyPair(cfg.Hub.CertFile, cfg.Hub.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("hub.cert_file/key_file: %w", err)
		}
		u.tls.Certificates = []tls.Certificate{kp}
	}
	return u, nil
}

// run keeps the uplink up until ctx ends, reconnecting with exponential
// backoff and full jitter.
func (u *uplink) run(ctx context.Context) {
	minB, maxB := time.Duration(u.cfg.Uplink.BackoffMin), time.Duration(u.cfg.Uplink.BackoffMax)
	backoff := minB
	for ctx.Err() == nil {
		c, err := u.connect(ctx)
		if err != nil {
			u.m.reconnects.Inc()
			u.lost.Add(1)
			wait := backoff/2 + rand.N(backoff/2+1)
			u.log.Warn("hub unreachable; retrying", "err", err, "in", wait.Round(time.Millisecond))
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			backoff = min(2*backoff, maxB)
			continue
		}
		backoff = minB
		u.cur.Store(c)
		u.connected.Store(true)
		u.since.Store(time.Now().UnixNano())
		u.conns.Add(1)
		u.m.connected.Set(1)
		u.log.Info("uplink connected", "hub", u.cfg.Hub.Addr)
		u.sp.Rewind() // resend whatever the hub has not acknowledged
		err = u.pump(ctx, c)
		u.cur.Store(nil)
		u.connected.Store(false)
		u.since.Store(time.Now().UnixNano())
		u.m.connected.Set(0)
		c.Disconnect(&paho.Disconnect{})
		if ctx.Err() == nil {
			u.m.reconnects.Inc()
			u.lost.Add(1)
			u.log.Warn("uplink lost", "err", err)
		}
	}
}

func (u *uplink) connect(ctx context.Context) (*paho.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var conn net.Conn
	var err error
	if u.tls != nil {
		conn, err = (&tls.Dialer{Config: u.tls}).DialContext(dctx, "tcp", u.cfg.Hub.Addr)
	} else {
		conn, err = (&net.Dialer{}).DialContext(dctx, "tcp", u.cfg.Hub.Addr)
	}
	if err != nil {
		return nil, err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			if u.relay != nil {
				u.relay(pr.Packet)
			}
			return true, nil
		},
	}})
	// Presence: a retained "online" once connected, and the will's
	// retained "offline" when the connection is lost (DESIGN §3); a hub
	// behind an external broker knows the gateway — and so the sensors
	// behind it — are reachable from these alone.
	cp := &paho.Connect{ClientID: u.cfg.ID, KeepAlive: 30, CleanStart: true,
		WillMessage: &paho.WillMessage{Topic: topic.Status(u.cfg.ID), Payload: []byte("offline"), QoS: 1, Retain: true}}
	if len(u.password) > 0 {
		cp.Username, cp.UsernameFlag = u.cfg.ID, true
		cp.Password, cp.PasswordFlag = u.password, true
	}
	ack, err := c.Connect(dctx, cp)
	if err != nil {
		conn.Close()
		if ack != nil {
			return nil, fmt.Errorf("hub refused the gateway: reason 0x%02x %s", ack.ReasonCode, ack.Properties.ReasonString)
		}
		return nil, err
	}
	// Commands for the sensors behind this gateway, relayed to the local
	// broker. The hub delivers a command only while a subscription for it
	// exists, so subscribing on every connection is what resumes them.
	var subs []paho.SubscribeOptions
	for _, s := range u.cfg.Sensors {
		subs = append(subs, paho.SubscribeOptions{Topic: topic.Command(s.ID, "+"), QoS: 1})
	}
	for len(subs) > 0 {
		n := min(len(subs), 100)
		if _, err := c.Subscribe(dctx, &paho.Subscribe{Subscriptions: subs[:n]}); err != nil {
			c.Disconnect(&paho.Disconnect{})
			return nil, fmt.Errorf("subscribing to the sensors' commands: %w", err)
		}
		subs = subs[n:]
	}
	if _, err := c.Publish(dctx, &paho.Publish{Topic: topic.Status(u.cfg.ID), Payload: []byte("online"), QoS: 1, Retain: true}); err != nil {
		c.Disconnect(&paho.Disconnect{})
		return nil, fmt.Errorf("publishing the gateway's status: %w", err)
	}
	return c, nil
}

// publish sends a message to the hub on the live connection, waiting for
// its PUBACK.
func (u *uplink) publish(ctx context.Context, p *paho.Publish) error {
	c := u.cur.Load()
	if c == nil {
		return errUplinkDown
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := c.Publish(ctx, p)
	if resp != nil && resp.ReasonCode >= 0x80 {
		return fmt.Errorf("hub refused %s: reason 0x%02x", p.Topic, resp.ReasonCode)
	}
	return err
}

var errUplinkDown = errors.New("uplink to the hub is down")

// pump sends batches until the connection or ctx ends.
func (u *uplink) pump(ctx context.Context, c *paho.Client) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	lim := newLimiter(u.cfg.Uplink.Rate)
	for {
		recs, err := u.sp.Read(ctx, u.cfg.Uplink.BatchMax, u.cfg.Uplink.BatchBytes)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			continue
		}
		if err := lim.wait(ctx, len(recs)); err != nil {
			return err
		}
		body, readings, alerts := u.batch(recs)
		start := time.Now()
		pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := c.Publish(pctx, &paho.Publish{Topic: topic.Batch(u.cfg.ID), QoS: 1, Payload: body})
		pcancel()
		last := recs[len(recs)-1].ID
		if resp != nil && resp.ReasonCode >= 0x80 {
			// Refused for good (the hub would refuse it again): count every
			// record as dropped, say why, and move on.
			reason := ""
			if resp.Properties != nil {
				reason = resp.Properties.ReasonString
			}
			u.m.hubRefusedRecs.Add(float64(len(recs)))
			u.refused.Add(uint64(len(recs)))
			u.m.dropped.WithLabelValues("hub_refused").Add(float64(len(recs)))
			u.log.Error("hub refused a batch; its records are dropped", "records", len(recs), "reason_code", fmt.Sprintf("0x%02x", resp.ReasonCode), "reason", reason)
			if err := u.sp.Ack(last); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if err := u.sp.Ack(last); err != nil {
			return err
		}
		u.m.batches.Inc()
		u.m.uplinked.WithLabelValues("reading").Add(float64(readings))
		u.m.uplinked.WithLabelValues("alert").Add(float64(alerts))
		u.m.uplinkBytes.Add(float64(len(body)))
		u.m.batchLatency.Observe(time.Since(start).Seconds())
	}
}

// batch builds {"readings":[…],"alerts":[…]} from spool records, gzipped
// when configured.
func (u *uplink) batch(recs []spool.Record) (body []byte, readings, alerts int) {
	var r, a bytes.Buffer
	for _, rec := range recs {
		if len(rec.Data) < 2 {
			continue
		}
		dst := &r
		switch rec.Data[0] {
		case recReading:
			readings++
		case recAlert:
			dst = &a
			alerts++
		default:
			u.log.Error("unknown spool record kind; skipped", "id", rec.ID, "kind", rec.Data[0])
			u.m.dropped.WithLabelValues("bad_record").Inc()
			continue
		}
		if dst.Len() > 0 {
			dst.WriteByte(',')
		}
		dst.Write(rec.Data[1:])
	}
	var out bytes.Buffer
	out.WriteString(`{"readings":[`)
	out.Write(r.Bytes())
	out.WriteString(`],"alerts":[`)
	out.Write(a.Bytes())
	out.WriteString(`]}`)
	if !*u.cfg.Uplink.Compress {
		return out.Bytes(), readings, alerts
	}
	var z bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&z, gzip.BestSpeed)
	zw.Write(out.Bytes())
	zw.Close()
	return z.Bytes(), readings, alerts
}

// limiter paces records per second with a token bucket of one second.
type limiter struct {
	rate   float64
	tokens float64
	last   time.Time
}

func newLimiter(rate float64) *limiter { return &limiter{rate: rate, tokens: rate, last: time.Now()} }

func (l *limiter) wait(ctx context.Context, n int) error {
	if l.rate <= 0 {
		return nil
	}
	for {
		now := time.Now()
		l.tokens = min(l.rate, l.tokens+now.Sub(l.last).Seconds()*l.rate)
		l.last = now
		if l.tokens >= float64(n) || (l.tokens >= l.rate && float64(n) > l.rate) {
			l.tokens -= float64(n)
			return nil
		}
		need := time.Duration((float64(n) - l.tokens) / l.rate * float64(time.Second))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(need):
		}
	}
}
