package sim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/device"
	"github.com/fieldhub/fieldhub/topic"
)

// AppendSenML appends data as a SenML pack (RFC 8428) of one record per
// metric, in name order: the first record carries the base time bt (Unix
// seconds with milliseconds), then n and v, vb or vs. Values other than
// numbers, booleans and strings are skipped.
func AppendSenML(dst []byte, ts time.Time, data map[string]any) []byte {
	names := make([]string, 0, len(data))
	for n := range data {
		names = append(names, n)
	}
	sort.Strings(names)
	dst = append(dst, '[')
	first := true
	for _, n := range names {
		var val []byte
		switch v := data[n].(type) {
		case float64:
			val = strconv.AppendFloat(append(val, `"v":`...), v, 'g', -1, 64)
		case int:
			val = strconv.AppendInt(append(val, `"v":`...), int64(v), 10)
		case bool:
			val = strconv.AppendBool(append(val, `"vb":`...), v)
		case string:
			b, _ := json.Marshal(v)
			val = append(append(val, `"vs":`...), b...)
		default:
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		dst = append(dst, '{')
		if first {
			ms := ts.UnixMilli()
			dst = append(dst, `"bt":`...)
			dst = strconv.AppendInt(dst, ms/1000, 10)
			dst = append(dst, '.', byte('0'+ms%1000/100), byte('0'+ms%100/10), byte('0'+ms%10), ',')
			first = false
		}
		name, _ := json.Marshal(n)
		dst = append(dst, `"n":`...)
		dst = append(dst, name...)
		dst = append(dst, ',')
		dst = append(dst, val...)
		dst = append(dst, '}')
	}
	return append(dst, ']')
}

// senmlConfig says how a SenML link connects.
type senmlConfig struct {
	Server string
	TLS    *tls.Config // nil for plain TCP; a copy with the device's certificate
	Cred   Credential
	Logger *slog.Logger
}

// senmlLink is the simulator's own MQTT 5 client for SenML devices (the
// SDK publishes JSON only). It keeps a connection with reconnects (backoff
// and full jitter), presence (retained online, will offline), command
// answers (response topic with correlation data, or
// devices/{id}/responses/{cid}) and the twin (the reported state it has
// sent is sent again after every reconnect; desired versions are
// followed). Unlike the SDK it has no offline buffer: SenML carries no seq
// for the hub to drop duplicates by, so a message is sent once; one
// produced while disconnected, or whose PUBACK is lost with the
// connection, is counted in Stats.Dropped.
type senmlLink struct {
	cfg    senmlConfig
	addr   string
	log    *slog.Logger
	topics struct{ telemetry, reported, desired, status, commands, cmdPrefix string }

	lifetime context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup // the manager and the command goroutines
	firstUp  chan struct{}
	first    chan error

	mu       sync.Mutex
	cli      *paho.Client // nil while down
	closing  bool
	stats    device.Stats
	reported map[string]any
	handlers map[string]handler
	subs     []func(int64, map[string]any)
	version  int64
	recent   map[string]bool
	order    []string
	busy     sync.WaitGroup // commands being run and answered
}

// receiveMaximum is the Receive Maximum the SenML client announces: the
// commands and desired states in flight towards one device.
var receiveMaximum uint16 = 32

// parseServer returns the address to dial and whether to use TLS.
func parseServer(s string) (string, bool, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", false, err
	}
	port, useTLS := "1883", false
	switch u.Scheme {
	case "mqtts", "tls", "ssl":
		port, useTLS = "8883", true
	case "mqtt", "tcp":
	default:
		return "", false, fmt.Errorf("%q: want mqtt://host:port or mqtts://host:port", s)
	}
	if u.Port() != "" {
		port = u.Port()
	}
	if u.Hostname() == "" {
		return "", false, fmt.Errorf("%q: no host", s)
	}
	return net.JoinHostPort(u.Hostname(), port), useTLS, nil
}

// connectSenML connects like device.Connect: it returns once connected,
// or with ctx's error, or with an error wrapping device.ErrRefused when
// the hub refuses the device for good.
func connectSenML(ctx context.Context, cfg senmlConfig) (*senmlLink, error) {
	addr, useTLS, err := parseServer(cfg.Server)
	if err != nil {
		return nil, err
	}
	if useTLS && cfg.TLS == nil {
		return nil, errors.New("sim: TLS server without a TLS configuration")
	}
	if !useTLS {
		cfg.TLS = nil
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	id := cfg.Cred.ID
	l := &senmlLink{cfg: cfg, addr: addr, log: cfg.Logger.With("device", id),
		firstUp: make(chan struct{}), first: make(chan error, 1),
		reported: map[string]any{}, handlers: map[string]handler{}, recent: map[string]bool{}}
	l.topics.telemetry, l.topics.reported, l.topics.desired = topic.Telemetry(id), topic.TwinReported(id), topic.TwinDesired(id)
	l.topics.status, l.topics.commands, l.topics.cmdPrefix = topic.Status(id), topic.Command(id, "+"), topic.Command(id, "")
	l.lifetime, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.run(l.lifetime)
	}()
	select {
	case <-l.firstUp:
		return l, nil
	case err = <-l.first:
	case <-ctx.Done():
		err = ctx.Err()
	}
	l.mu.Lock()
	l.closing = true
	l.mu.Unlock()
	l.cancel()
	l.wg.Wait()
	return nil, fmt.Errorf("sim: connecting %s: %w", id, err)
}

// run keeps a connection until ctx ends.
func (l *senmlLink) run(ctx context.Context) {
	attempt, connected := 0, false
	for ctx.Err() == nil {
		cli, err := l.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !connected && errors.Is(err, device.ErrRefused) {
				l.first <- err
				return
			}
			l.log.Warn("connecting failed", "err", err, "attempt", attempt+1)
			if !sleep(ctx, backoff(attempt)) {
				return
			}
			attempt++
			continue
		}
		up := time.Now()
		l.mu.Lock()
		l.cli = cli
		if connected {
			l.stats.Reconnects++
		}
		rep := cloneAny(l.reported)
		l.mu.Unlock()
		if len(rep) > 0 {
			l.publishJSON(ctx, l.topics.reported, rep)
		}
		if !connected {
			close(l.firstUp)
			connected = true
		}
		select {
		case <-cli.Done():
		case <-ctx.Done():
		}
		l.mu.Lock()
		l.cli = nil
		closing := l.closing
		l.mu.Unlock()
		if ctx.Err() != nil || closing {
			return
		}
		l.log.Warn("connection lost")
		if time.Since(up) > 10*time.Second {
			attempt = 0
		}
		if !sleep(ctx, backoff(attempt)) {
			return
		}
		attempt++
	}
}

// backoff is full jitter from 500 ms doubling to a minute.
func backoff(n int) time.Duration {
	ceil := 500 * time.Millisecond << min(n, 7)
	return rand.N(min(ceil, time.Minute) + 1)
}

// sleep waits d or until ctx ends; false when ctx ended.
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

// dial connects, subscribes and says "online".
func (l *senmlLink) dial(ctx context.Context) (*paho.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var nc net.Conn
	var err error
	if l.cfg.TLS != nil {
		nc, err = (&tls.Dialer{Config: l.cfg.TLS}).DialContext(dctx, "tcp", l.addr)
	} else {
		nc, err = (&net.Dialer{}).DialContext(dctx, "tcp", l.addr)
	}
	if err != nil {
		var ua x509.UnknownAuthorityError
		var hn x509.HostnameError
		var alert tls.AlertError
		if errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &alert) {
			return nil, fmt.Errorf("%w: %w", device.ErrRefused, err)
		}
		return nil, err
	}
	id := l.cfg.Cred.ID
	cli := paho.NewClient(paho.ClientConfig{
		ClientID:          id,
		Conn:              packets.NewThreadSafeConn(nc),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){l.onPublish},
		OnClientError:     func(err error) { l.log.Debug("connection error", "err", err) },
	})
	ack, err := cli.Connect(dctx, &paho.Connect{
		ClientID: id, Username: id, UsernameFlag: true,
		Password: []byte(l.cfg.Cred.Password), PasswordFlag: l.cfg.Cred.Password != "",
		KeepAlive: 30, CleanStart: true,
		// paho sizes its queue of incoming messages by Receive Maximum:
		// 65,535 slots (512 KiB) per connection when unset.
		Properties:  &paho.ConnectProperties{ReceiveMaximum: &receiveMaximum},
		WillMessage: &paho.WillMessage{Retain: true, QoS: 1, Topic: l.topics.status, Payload: []byte(device.StatusOffline)},
	})
	if err != nil {
		nc.Close()
		if ack != nil && ack.ReasonCode >= 0x80 {
			err = fmt.Errorf("connect: reason 0x%02x", ack.ReasonCode)
			switch ack.ReasonCode {
			case 0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C:
				err = fmt.Errorf("%w: %w", device.ErrRefused, err)
			}
		}
		return nil, err
	}
	fail := func(err error) (*paho.Client, error) {
		_ = cli.Disconnect(&paho.Disconnect{})
		return nil, err
	}
	if _, err := cli.Subscribe(dctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: l.topics.commands, QoS: 1}, {Topic: l.topics.desired, QoS: 1},
	}}); err != nil {
		return fail(fmt.Errorf("subscribing: %w", err))
	}
	if _, err := cli.Publish(dctx, &paho.Publish{Topic: l.topics.status, QoS: 1, Retain: true, Payload: []byte(device.StatusOnline)}); err != nil {
		return fail(fmt.Errorf("publishing online: %w", err))
	}
	return cli, nil
}

func (l *senmlLink) current() *paho.Client {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cli
}

// PublishAt implements link: one SenML pack at QoS 1, not buffered.
func (l *senmlLink) PublishAt(ctx context.Context, ts time.Time, data map[string]any) error {
	l.mu.Lock()
	cli, closing := l.cli, l.closing
	if cli == nil && !closing {
		l.stats.Dropped++
	}
	l.mu.Unlock()
	if closing {
		return device.ErrClosed
	}
	if cli == nil {
		return nil // counted as dropped: no buffer, see senmlLink
	}
	resp, err := cli.Publish(ctx, &paho.Publish{Topic: l.topics.telemetry, QoS: 1, Payload: AppendSenML(nil, ts, data)})
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case resp != nil && resp.ReasonCode >= 0x80:
		l.stats.Refused++
		reason := ""
		if resp.Properties != nil {
			reason = resp.Properties.ReasonString
		}
		return fmt.Errorf("%w: reason 0x%02x %s", device.ErrRefused, resp.ReasonCode, reason)
	case err != nil:
		l.stats.Dropped++
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return nil
	}
	l.stats.Published++
	return nil
}

// ReportState implements link: the patch is merged (top level) into the
// reported state kept for reconnects and sent now when connected.
func (l *senmlLink) ReportState(ctx context.Context, patch map[string]any) error {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return device.ErrClosed
	}
	for k, v := range patch {
		if v == nil {
			delete(l.reported, k)
		} else {
			l.reported[k] = v
		}
	}
	cli := l.cli
	l.mu.Unlock()
	if cli == nil {
		return nil
	}
	return l.publishJSON(ctx, l.topics.reported, patch)
}

// publishJSON publishes v as JSON at QoS 1 on the current connection.
func (l *senmlLink) publishJSON(ctx context.Context, name string, v any) error {
	cli := l.current()
	if cli == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cli.Publish(pctx, &paho.Publish{Topic: name, QoS: 1, Payload: b})
	if resp != nil && resp.ReasonCode >= 0x80 {
		return fmt.Errorf("%w: %s: reason 0x%02x", device.ErrRefused, name, resp.ReasonCode)
	}
	return err
}

// HandleCommand implements link.
func (l *senmlLink) HandleCommand(name string, h handler) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.handlers[name] = h
}

// OnDesired implements link; f is called on the receiving goroutine.
func (l *senmlLink) OnDesired(f func(int64, map[string]any)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.subs = append(l.subs, f)
}

// Stats implements link.
func (l *senmlLink) Stats() device.Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats
	s.Connected = l.cli != nil
	return s
}

// onPublish routes what the hub sends (paho's receive goroutine).
func (l *senmlLink) onPublish(pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	switch {
	case p.Topic == l.topics.desired:
		var d struct {
			Version int64          `json:"version"`
			State   map[string]any `json:"state"`
		}
		if err := json.Unmarshal(p.Payload, &d); err != nil {
			l.log.Warn("malformed desired state", "err", err)
			return true, nil
		}
		l.mu.Lock()
		if d.Version <= l.version {
			l.mu.Unlock()
			return true, nil
		}
		l.version = d.Version
		subs := append([]func(int64, map[string]any){}, l.subs...)
		l.mu.Unlock()
		for _, f := range subs {
			f(d.Version, d.State)
		}
	case strings.HasPrefix(p.Topic, l.topics.cmdPrefix):
		l.receiveCommand(strings.TrimPrefix(p.Topic, l.topics.cmdPrefix), p)
	}
	return true, nil
}

func (l *senmlLink) receiveCommand(name string, p *paho.Publish) {
	var msg struct {
		ID      string          `json:"id"`
		Params  json.RawMessage `json:"params"`
		Expires string          `json:"expires"`
	}
	perr := json.Unmarshal(p.Payload, &msg)
	respTopic, corr := topic.Response(l.cfg.Cred.ID, msg.ID), []byte(nil)
	if p.Properties != nil && p.Properties.ResponseTopic != "" {
		respTopic, corr = p.Properties.ResponseTopic, p.Properties.CorrelationData
	} else if msg.ID == "" {
		return
	}
	ctx, cancel := context.WithCancel(l.lifetime)
	if perr == nil && msg.Expires != "" {
		t, err := time.Parse(time.RFC3339Nano, msg.Expires)
		if err != nil {
			perr = err
		} else if !time.Now().Before(t) {
			cancel()
			l.mu.Lock()
			l.stats.CommandsExpired++
			l.mu.Unlock()
			return
		} else {
			ctx, cancel = context.WithDeadline(l.lifetime, t)
		}
	}
	l.mu.Lock()
	if l.closing || (msg.ID != "" && l.recent[msg.ID]) {
		l.mu.Unlock()
		cancel()
		return
	}
	if msg.ID != "" {
		l.recent[msg.ID] = true
		l.order = append(l.order, msg.ID)
		if len(l.order) > 256 {
			delete(l.recent, l.order[0])
			l.order = l.order[1:]
		}
	}
	l.stats.Commands++
	h := l.handlers[name]
	if h == nil {
		h = l.handlers["*"]
	}
	l.busy.Add(1)
	l.wg.Add(1)
	l.mu.Unlock()
	go func() {
		defer l.wg.Done()
		defer l.busy.Done()
		defer cancel()
		var result any
		err := perr
		switch {
		case err != nil:
			err = fmt.Errorf("malformed command: %w", err)
		case h == nil:
			err = fmt.Errorf("unknown command %s", name)
		default:
			result, err = h(ctx, name, msg.Params)
		}
		body := map[string]any{"status": "ok"}
		if err != nil {
			body = map[string]any{"status": "error", "error": err.Error()}
		} else if result != nil {
			body["result"] = result
		}
		b, merr := json.Marshal(body)
		if merr != nil {
			b, _ = json.Marshal(map[string]any{"status": "error", "error": "result not JSON: " + merr.Error()})
		}
		pub := &paho.Publish{Topic: respTopic, QoS: 1, Payload: b}
		if corr != nil {
			pub.Properties = &paho.PublishProperties{CorrelationData: corr}
		}
		if cli := l.current(); cli != nil {
			pctx, pcancel := context.WithTimeout(l.lifetime, 10*time.Second)
			if _, err := cli.Publish(pctx, pub); err != nil {
				l.log.Warn("answering a command failed", "command", name, "err", err)
			}
			pcancel()
		}
	}()
}

// Close implements link: it waits (until ctx ends) for the commands being
// answered, says "offline", and disconnects.
func (l *senmlLink) Close(ctx context.Context) error {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return nil
	}
	l.closing = true
	l.mu.Unlock()
	idle := make(chan struct{})
	go func() {
		l.busy.Wait()
		close(idle)
	}()
	select {
	case <-idle:
	case <-ctx.Done():
	}
	var err error
	if cli := l.current(); cli != nil {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = cli.Publish(pctx, &paho.Publish{Topic: l.topics.status, QoS: 1, Retain: true, Payload: []byte(device.StatusOffline)})
		cancel()
		if err != nil {
			err = fmt.Errorf("sim: publishing offline: %w", err)
		}
		_ = cli.Disconnect(&paho.Disconnect{ReasonCode: 0})
		select {
		case <-cli.Done():
		case <-time.After(5 * time.Second):
		}
	}
	l.cancel()
	l.wg.Wait()
	<-idle
	return err
}

// cloneAny returns a shallow copy of m.
func cloneAny(m map[string]any) map[string]any {
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
