package device_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/internal/config"
	"github.com/fieldhub/fieldhub/internal/fhtest"
	"github.com/fieldhub/fieldhub/internal/hub"
)

var (
	freePort   = fhtest.FreePort
	eventually = fhtest.Eventually
)

// testHub is a real hub in this process on loopback ports fixed at
// creation, so that it can be stopped and started again on the same data
// folder and ports (a hub restart as devices see it).
type testHub struct {
	t   *testing.T
	cfg config.Hub
	h   *hub.Hub
}

// newHub starts a hub. open selects the loopback-only open policy
// (anonymous clients, any topic), which lets a test client observe and
// publish any device's topics; devices then authenticate anonymously.
func newHub(t *testing.T, open bool) *testHub {
	t.Helper()
	dir := t.TempDir()
	c := config.Default()
	c.Data = filepath.Join(dir, "data")
	c.MasterKeyFile = filepath.Join(dir, "master.key")
	c.MQTTAddr = freePort(t)
	c.MQTTSAddr = freePort(t)
	c.WSAddr = "off"
	c.HTTPAddr = freePort(t)
	c.LogLevel = "warn"
	c.InsecureOpenPolicy = open
	h := &testHub{t: t, cfg: c}
	h.start()
	t.Cleanup(h.stop)
	return h
}

func (h *testHub) start() {
	h.t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{h.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	hb, err := hub.New(h.cfg, log)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The ports were free a moment ago, but any outgoing connection of
	// this machine may take one of them as its local port meanwhile:
	// wait for it to go.
	for i := 0; ; i++ {
		err = hb.Start(ctx)
		if err == nil || i == 100 || !strings.Contains(err.Error(), "address already in use") {
			break
		}
		h.t.Logf("restarting the hub: %v; retrying", err)
		time.Sleep(100 * time.Millisecond)
		if hb, err = hub.New(h.cfg, log); err != nil {
			h.t.Fatal(err)
		}
	}
	if err != nil {
		h.t.Fatal(err)
	}
	h.h = hb
}

func (h *testHub) stop() {
	if h.h == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.h.Shutdown(ctx); err != nil {
		h.t.Errorf("hub shutdown: %v", err)
	}
	h.h = nil
}

func (h *testHub) mqttURL() string  { return "mqtt://" + h.cfg.MQTTAddr }
func (h *testHub) mqttsURL() string { return "mqtts://" + h.cfg.MQTTSAddr }
func (h *testHub) caFile() string   { return filepath.Join(h.cfg.Data, "ca.pem") }

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// api calls the REST API with the admin token; out is decoded from a
// 2xx answer.
func (h *testHub) api(method, path string, body, out any) int {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+h.cfg.HTTPAddr+path, rd)
	req.Header.Set("Authorization", "Bearer "+h.h.AdminToken())
	req.Header.Set("Content-Type", "application/json")
	resp, err := apiClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		h.t.Logf("%s %s = %d %s", method, path, resp.StatusCode, b)
	} else if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			h.t.Fatalf("%s %s: decoding %s: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}

// apiClient keeps no idle connection, whose local port could be one that
// a restarted hub needs.
var apiClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

type creds struct {
	Password    string `json:"password"`
	Certificate string `json:"certificate"`
	PrivateKey  string `json:"private_key"`
	CA          string `json:"ca"`
}

func (h *testHub) addDevice(id, auth string) creds {
	h.t.Helper()
	var out struct {
		Credentials creds `json:"credentials"`
	}
	if code := h.api("POST", "/api/v1/devices", map[string]any{"id": id, "auth": auth}, &out); code != http.StatusCreated {
		h.t.Fatalf("creating %s: HTTP %d", id, code)
	}
	return out.Credentials
}

// values returns every stored value of metric of device in the last day.
func (h *testHub) values(device, metric string) []float64 {
	h.t.Helper()
	var out struct {
		Series []struct {
			Metric string `json:"metric"`
			Points []struct {
				Value float64 `json:"value"`
			} `json:"points"`
		} `json:"series"`
	}
	from := time.Now().Add(-24 * time.Hour).UnixMilli()
	to := time.Now().Add(time.Hour).UnixMilli()
	path := fmt.Sprintf("/api/v1/devices/%s/telemetry?metric=%s&from=%d&to=%d&limit=100000", device, metric, from, to)
	if code := h.api("GET", path, nil, &out); code != http.StatusOK {
		h.t.Fatalf("query %s: HTTP %d", device, code)
	}
	var v []float64
	for _, s := range out.Series {
		if s.Metric != metric {
			continue
		}
		for _, p := range s.Points {
			v = append(v, p.Value)
		}
	}
	return v
}

// online reports the device list's online flag of id.
func (h *testHub) online(id string) bool {
	h.t.Helper()
	var d struct {
		Online bool `json:"online"`
	}
	h.api("GET", "/api/v1/devices/"+id, nil, &d)
	return d.Online
}

// observer is an MQTT 5 client of an open-policy hub that records what it
// receives and publishes anything.
type observer struct {
	t   *testing.T
	cli *paho.Client
	mu  sync.Mutex
	got []*paho.Publish
	ch  chan struct{}
}

func newObserver(t *testing.T, h *testHub, filters ...string) *observer {
	t.Helper()
	o := &observer{t: t, ch: make(chan struct{}, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", h.cfg.MQTTAddr)
	if err != nil {
		t.Fatal(err)
	}
	o.cli = paho.NewClient(paho.ClientConfig{
		Conn: packets.NewThreadSafeConn(nc),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			o.mu.Lock()
			o.got = append(o.got, pr.Packet)
			o.mu.Unlock()
			select {
			case o.ch <- struct{}{}:
			default:
			}
			return true, nil
		}},
	})
	if _, err := o.cli.Connect(ctx, &paho.Connect{ClientID: fmt.Sprintf("observer-%d", time.Now().UnixNano()), KeepAlive: 30, CleanStart: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.cli.Disconnect(&paho.Disconnect{}) })
	if len(filters) > 0 {
		var subs []paho.SubscribeOptions
		for _, f := range filters {
			subs = append(subs, paho.SubscribeOptions{Topic: f, QoS: 1})
		}
		if _, err := o.cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

func (o *observer) publish(p *paho.Publish) {
	o.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := o.cli.Publish(ctx, p); err != nil {
		o.t.Fatalf("observer publish %s: %v", p.Topic, err)
	}
}

// wait returns the first message received on topicName that satisfies
// ok (any message when ok is nil), failing t after d.
func (o *observer) wait(t *testing.T, d time.Duration, topicName string, ok func(*paho.Publish) bool) *paho.Publish {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	seen := 0
	for {
		o.mu.Lock()
		msgs := o.got[seen:]
		seen = len(o.got)
		o.mu.Unlock()
		for _, m := range msgs {
			if m.Topic == topicName && (ok == nil || ok(m)) {
				return m
			}
		}
		select {
		case <-o.ch:
		case <-deadline.C:
			t.Fatalf("observer: nothing matching on %s after %s", topicName, d)
		}
	}
}

// take returns and forgets everything received on topicName.
func (o *observer) take(topicName string) []*paho.Publish {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out, keep []*paho.Publish
	for _, m := range o.got {
		if m.Topic == topicName {
			out = append(out, m)
		} else {
			keep = append(keep, m)
		}
	}
	o.got = keep
	return out
}

// proxy is a TCP forwarder between devices and a hub: the test cuts its
// connections (the device sees a network failure and the hub a dropped
// connection, so the will fires), refuses new ones, and reads the MQTT
// packets devices send to record the seq of each telemetry message per
// connection.
type proxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu     sync.Mutex
	refuse bool
	conns  []net.Conn
	seqs   [][]uint64 // telemetry seqs sent, per connection, in order
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, target: target}
	var wg sync.WaitGroup
	wg.Go(func() { p.accept(&wg) })
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		wg.Wait()
	})
	return p
}

func (p *proxy) url() string { return "mqtt://" + p.ln.Addr().String() }

func (p *proxy) accept(wg *sync.WaitGroup) {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.refuse {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.seqs = append(p.seqs, nil)
		n := len(p.seqs) - 1
		p.mu.Unlock()
		pr, pw := io.Pipe()
		wg.Go(func() {
			io.Copy(io.MultiWriter(up, pw), c)
			pw.Close()
			up.Close()
		})
		wg.Go(func() {
			io.Copy(c, up)
			c.Close()
		})
		wg.Go(func() { p.read(pr, n) })
	}
}

// read records the telemetry seqs of connection n.
func (p *proxy) read(r *io.PipeReader, n int) {
	defer r.Close()
	for {
		cp, err := packets.ReadPacket(r)
		if err != nil {
			io.Copy(io.Discard, r)
			return
		}
		pub, ok := cp.Content.(*packets.Publish)
		if !ok || !strings.HasSuffix(pub.Topic, "/telemetry") {
			continue
		}
		var m struct {
			Seq uint64 `json:"seq"`
		}
		if json.Unmarshal(pub.Payload, &m) == nil {
			p.mu.Lock()
			p.seqs[n] = append(p.seqs[n], m.Seq)
			p.mu.Unlock()
		}
	}
}

// cut closes every connection.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// setRefuse makes the proxy close new connections at once (on) or
// forward them again (off).
func (p *proxy) setRefuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

func (p *proxy) sentSeqs() [][]uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([][]uint64, len(p.seqs))
	for i, s := range p.seqs {
		out[i] = append([]uint64(nil), s...)
	}
	return out
}

// quiet returns a logger that writes to the test log at level.
func testLogger(t *testing.T, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
