package device_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/device"
	"github.com/fieldhub/fieldhub/topic"
)

// connect connects a device and closes it at the end of the test.
func connect(t *testing.T, cfg device.Config) *device.Client {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t, slog.LevelWarn)
	}
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin, cfg.BackoffMax = 50*time.Millisecond, 500*time.Millisecond
	}
	c, err := device.Connect(ctxFor(t, 20*time.Second), cfg)
	if err != nil {
		t.Fatalf("Connect(%s, %s) = %v", cfg.Server, cfg.DeviceID, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Close(ctx)
	})
	return c
}

// TestAuthentication connects over TLS with each kind of credential and
// publishes telemetry that the hub stores.
func TestAuthentication(t *testing.T) {
	h := newHub(t, false)
	pw := h.addDevice("pw-dev", "password")
	cert := h.addDevice("cert-dev", "certificate")
	kp, err := tls.X509KeyPair([]byte(cert.Certificate), []byte(cert.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(cert.CA))

	tests := []struct {
		name string
		cfg  device.Config
	}{
		{"password over TLS, CAFile", device.Config{Server: h.mqttsURL(), DeviceID: "pw-dev", Password: pw.Password, CAFile: h.caFile()}},
		{"password over plain TCP", device.Config{Server: h.mqttURL(), DeviceID: "pw-dev", Password: pw.Password}},
		{"client certificate, RootCAs", device.Config{Server: h.mqttsURL(), DeviceID: "cert-dev", Certificate: kp, RootCAs: pool}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := connect(t, tt.cfg)
			ctx := ctxFor(t, 10*time.Second)
			for n := range 3 {
				if err := c.Publish(ctx, map[string]any{"n": 100*i + n, "ok": true, "state": "run"}); err != nil {
					t.Fatalf("Publish #%d = %v", n, err)
				}
			}
			if s := c.Stats(); !s.Connected || s.Published != 3 || s.Buffered != 0 {
				t.Errorf("Stats() = %+v; want connected, 3 published, 0 buffered", s)
			}
			if err := c.Close(ctx); err != nil {
				t.Errorf("Close = %v", err)
			}
			if err := c.Publish(ctx, map[string]any{"n": 1}); !errors.Is(err, device.ErrClosed) {
				t.Errorf("Publish after Close = %v; want ErrClosed", err)
			}
			if err := c.Close(ctx); err != nil {
				t.Errorf("second Close = %v; want nil", err)
			}
			var got []float64
			for _, v := range h.values(tt.cfg.DeviceID, "n") {
				if v >= float64(100*i) && v < float64(100*i+100) {
					got = append(got, v)
				}
			}
			if want := []float64{float64(100 * i), float64(100*i + 1), float64(100*i + 2)}; !slices.Equal(got, want) {
				t.Errorf("stored n = %v; want %v", got, want)
			}
		})
	}
}

// TestConnectRefused: bad credentials fail Connect at once with
// ErrRefused instead of retrying until ctx ends.
func TestConnectRefused(t *testing.T) {
	h := newHub(t, false)
	h.addDevice("refused-dev", "password")
	tests := []struct {
		name string
		cfg  device.Config
	}{
		{"wrong password", device.Config{Server: h.mqttsURL(), DeviceID: "refused-dev", Password: "wrong", CAFile: h.caFile()}},
		{"unknown device", device.Config{Server: h.mqttURL(), DeviceID: "nobody", Password: "x"}},
		{"untrusted server certificate", device.Config{Server: h.mqttsURL(), DeviceID: "refused-dev", Password: "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Logger = testLogger(t, slog.LevelError)
			start := time.Now()
			c, err := device.Connect(ctxFor(t, 20*time.Second), tt.cfg)
			if !errors.Is(err, device.ErrRefused) || c != nil {
				t.Fatalf("Connect = %v, %v; want ErrRefused", c, err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("Connect took %v to give up", d)
			}
		})
	}
}

// TestRefusedPayload: a payload the hub refuses is reported to the
// caller, counted and not resent; one too large to send is refused before.
func TestRefusedPayload(t *testing.T) {
	h := newHub(t, true)
	h.addDevice("big-dev", "password")
	c := connect(t, device.Config{Server: h.mqttURL(), DeviceID: "big-dev", Logger: testLogger(t, slog.LevelError)})
	ctx := ctxFor(t, 10*time.Second)
	if err := c.Publish(ctx, map[string]any{"blob": strings.Repeat("x", 100<<10)}); !errors.Is(err, device.ErrRefused) {
		t.Errorf("Publish(100 KiB) = %v; want ErrRefused (the hub takes 64 KiB)", err)
	}
	if err := c.Publish(ctx, map[string]any{"blob": strings.Repeat("x", 300<<10)}); !errors.Is(err, device.ErrInvalidData) {
		t.Errorf("Publish(300 KiB) = %v; want ErrInvalidData", err)
	}
	if err := c.Publish(ctx, map[string]any{"n": 1}); err != nil {
		t.Errorf("Publish after a refusal = %v", err)
	}
	if s := c.Stats(); s.Refused != 1 || s.Published != 1 || s.Buffered != 0 {
		t.Errorf("Stats() = %+v; want 1 refused, 1 published, 0 buffered", s)
	}
}

// TestPresence: the retained status is "online" on every connection and
// "offline" after Close, and the will sets it when the connection is
// cut; the device list follows.
func TestPresence(t *testing.T) {
	h := newHub(t, true)
	h.addDevice("p-dev", "password")
	px := newProxy(t, h.cfg.MQTTAddr)
	c := connect(t, device.Config{Server: px.url(), DeviceID: "p-dev"})
	status := topic.Status("p-dev")

	payloadIs := func(s string) func(*paho.Publish) bool {
		return func(p *paho.Publish) bool { return string(p.Payload) == s }
	}
	// A subscriber that comes later gets the retained state.
	o := newObserver(t, h, status)
	if m := o.wait(t, 5*time.Second, status, nil); string(m.Payload) != "online" || !m.Retain {
		t.Fatalf("retained status = %q (retain %v); want online", m.Payload, m.Retain)
	}
	eventually(t, 5*time.Second, "device list online", func() bool { return h.online("p-dev") })

	// Cut the TCP connection: the hub publishes the will, the device
	// comes back and says online again.
	px.setRefuse(true)
	px.cut()
	o.wait(t, 10*time.Second, status, payloadIs("offline"))
	eventually(t, 5*time.Second, "device list offline", func() bool { return !h.online("p-dev") })
	if c.Stats().Connected {
		// The client may not have noticed yet; it must within keep-alive.
		eventually(t, 10*time.Second, "client to see the drop", func() bool { return !c.Stats().Connected })
	}
	px.setRefuse(false)
	o.wait(t, 10*time.Second, status, payloadIs("online"))
	if err := c.WaitConnected(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.Reconnects != 1 {
		t.Errorf("Stats().Reconnects = %d; want 1", s.Reconnects)
	}

	if err := c.Close(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatalf("Close = %v", err)
	}
	o.wait(t, 5*time.Second, status, payloadIs("offline"))
	o2 := newObserver(t, h, status)
	if m := o2.wait(t, 5*time.Second, status, nil); string(m.Payload) != "offline" || !m.Retain {
		t.Errorf("retained status after Close = %q (retain %v); want offline", m.Payload, m.Retain)
	}
}

// command publishes a command as the hub's command service does, with an
// MQTT 5 response topic (here outside the device topics, which the hub
// would take for itself) and correlation data; it returns the response
// topic.
func command(o *observer, id, name, cid string, params any, expires time.Time) string {
	body := map[string]any{"id": cid, "params": params}
	if !expires.IsZero() {
		body["expires"] = expires.UTC().Format("2006-01-02T15:04:05.000Z07:00")
	}
	b, _ := json.Marshal(body)
	resp := "test/responses/" + cid
	o.publish(&paho.Publish{Topic: topic.Command(id, name), QoS: 1, Payload: b,
		Properties: &paho.PublishProperties{ResponseTopic: resp, CorrelationData: []byte("corr-" + cid)}})
	return resp
}

type answer struct {
	Status string          `json:"status"`
	Result json.RawMessage `json:"result"`
	Error  string          `json:"error"`
}

func decodeAnswer(t *testing.T, p *paho.Publish) answer {
	t.Helper()
	var a answer
	if err := json.Unmarshal(p.Payload, &a); err != nil {
		t.Fatalf("answer %s: %v", p.Payload, err)
	}
	return a
}

// TestCommands publishes commands through the broker (open policy) and
// checks the answers on the response topic.
func TestCommands(t *testing.T) {
	h := newHub(t, true)
	const id = "cmd-dev"
	h.addDevice(id, "password")
	o := newObserver(t, h, "test/responses/+")
	c := connect(t, device.Config{Server: h.mqttURL(), DeviceID: id, CommandGrace: time.Second})

	var mu sync.Mutex
	calls := map[string]int{}
	c.HandleCommand("reboot", func(ctx context.Context, params json.RawMessage) (any, error) {
		cmd, _ := device.CommandFromContext(ctx)
		mu.Lock()
		calls[cmd.ID]++
		mu.Unlock()
		var p struct {
			Delay int `json:"delay"`
		}
		if err := json.Unmarshal(params, &p); err != nil {
			return nil, fmt.Errorf("bad params: %w", err)
		}
		return map[string]any{"rebooting_in": p.Delay}, nil
	})
	c.HandleCommand("fail", func(ctx context.Context, params json.RawMessage) (any, error) {
		return nil, errors.New("disk on fire")
	})
	c.HandleCommand("panic", func(ctx context.Context, params json.RawMessage) (any, error) {
		panic("oops")
	})
	c.HandleCommand("deadline", func(ctx context.Context, params json.RawMessage) (any, error) {
		cmd, _ := device.CommandFromContext(ctx)
		d, ok := ctx.Deadline()
		return map[string]any{"has_deadline": ok, "matches": d.Equal(cmd.Expires), "params_nil": params == nil}, nil
	})
	calledFor := func(cid string) int {
		mu.Lock()
		defer mu.Unlock()
		return calls[cid]
	}

	tests := []struct {
		name, cmd, cid string
		params         any
		want           answer
	}{
		{"ok with result", "reboot", "c1", map[string]int{"delay": 5}, answer{Status: "ok", Result: json.RawMessage(`{"rebooting_in":5}`)}},
		{"handler error", "fail", "c2", nil, answer{Status: "error", Error: "disk on fire"}},
		{"bad params", "reboot", "c3", "soon", answer{Status: "error", Error: "bad params: json: cannot unmarshal"}},
		{"handler panic", "panic", "c4", nil, answer{Status: "error", Error: "command handler panicked: oops"}},
		{"ctx ends at expiry", "deadline", "c5", nil, answer{Status: "ok", Result: json.RawMessage(`{"has_deadline":true,"matches":true,"params_nil":true}`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := command(o, id, tt.cmd, tt.cid, tt.params, time.Now().Add(time.Minute))
			m := o.wait(t, 10*time.Second, resp, nil)
			got := decodeAnswer(t, m)
			if got.Status != tt.want.Status || !strings.HasPrefix(got.Error, tt.want.Error) || string(got.Result) != string(tt.want.Result) {
				t.Errorf("answer = %s; want %+v", m.Payload, tt.want)
			}
			if m.Properties == nil || string(m.Properties.CorrelationData) != "corr-"+tt.cid {
				t.Errorf("answer correlation data = %+v; want corr-%s", m.Properties, tt.cid)
			}
		})
	}

	t.Run("expired command is skipped", func(t *testing.T) {
		resp := command(o, id, "reboot", "c-old", map[string]int{"delay": 1}, time.Now().Add(-time.Second))
		// The answer to a later command shows the expired one was handled.
		resp2 := command(o, id, "reboot", "c-new", map[string]int{"delay": 2}, time.Time{})
		o.wait(t, 10*time.Second, resp2, nil)
		if got := o.take(resp); len(got) != 0 {
			t.Errorf("expired command answered: %s", got[0].Payload)
		}
		if n := calledFor("c-old"); n != 0 {
			t.Errorf("handler ran %d times for an expired command", n)
		}
		if s := c.Stats(); s.CommandsExpired != 1 {
			t.Errorf("Stats().CommandsExpired = %d; want 1", s.CommandsExpired)
		}
	})

	t.Run("redelivered id runs once, answered again", func(t *testing.T) {
		resp := command(o, id, "reboot", "c-dup", map[string]int{"delay": 3}, time.Time{})
		o.wait(t, 10*time.Second, resp, nil)
		o.take(resp)
		command(o, id, "reboot", "c-dup", map[string]int{"delay": 3}, time.Time{})
		if a := decodeAnswer(t, o.wait(t, 10*time.Second, resp, nil)); a.Status != "ok" {
			t.Errorf("second answer = %+v", a)
		}
		if n := calledFor("c-dup"); n != 1 {
			t.Errorf("handler ran %d times for one command id; want 1", n)
		}
	})

	t.Run("unknown command after the grace period, then wildcard", func(t *testing.T) {
		start := time.Now()
		resp := command(o, id, "selfdestruct", "c-unknown", nil, time.Time{})
		a := decodeAnswer(t, o.wait(t, 10*time.Second, resp, nil))
		if a.Status != "error" || a.Error != "unknown command selfdestruct" {
			t.Errorf("answer = %+v; want unknown command", a)
		}
		if d := time.Since(start); d < 900*time.Millisecond {
			t.Errorf("unknown command answered after %v; want the 1 s grace period first", d)
		}
		c.HandleCommand("*", func(ctx context.Context, params json.RawMessage) (any, error) {
			cmd, _ := device.CommandFromContext(ctx)
			return cmd.Name, nil
		})
		resp = command(o, id, "selfdestruct", "c-star", nil, time.Time{})
		if a := decodeAnswer(t, o.wait(t, 10*time.Second, resp, nil)); a.Status != "ok" || string(a.Result) != `"selfdestruct"` {
			t.Errorf("wildcard answer = %+v", a)
		}
	})
}

// TestCommandBeforeHandler: a command that arrives before HandleCommand
// (one queued in the session arrives right at connect) waits for the
// handler.
func TestCommandBeforeHandler(t *testing.T) {
	h := newHub(t, true)
	const id = "early-dev"
	h.addDevice(id, "password")
	o := newObserver(t, h, "test/responses/+")
	c := connect(t, device.Config{Server: h.mqttURL(), DeviceID: id})
	resp := command(o, id, "ping", "e1", nil, time.Time{})
	time.Sleep(300 * time.Millisecond)
	c.HandleCommand("ping", func(context.Context, json.RawMessage) (any, error) { return "pong", nil })
	if a := decodeAnswer(t, o.wait(t, 10*time.Second, resp, nil)); a.Status != "ok" || string(a.Result) != `"pong"` {
		t.Errorf("answer = %+v; want pong", a)
	}
}

// desiredRecorder collects OnDesired calls.
type desiredRecorder struct {
	t     *testing.T
	calls chan desiredCall
}

type desiredCall struct {
	v int64
	s map[string]any
}

func recordDesired(t *testing.T, c *device.Client) *desiredRecorder {
	r := &desiredRecorder{t: t, calls: make(chan desiredCall, 16)}
	c.OnDesired(func(v int64, s map[string]any) { r.calls <- desiredCall{v, s} })
	return r
}

func (r *desiredRecorder) next() desiredCall {
	r.t.Helper()
	select {
	case got := <-r.calls:
		return got
	case <-time.After(10 * time.Second):
		r.t.Fatal("no OnDesired call")
	}
	return desiredCall{}
}

func (r *desiredRecorder) none(d time.Duration) {
	r.t.Helper()
	select {
	case got := <-r.calls:
		r.t.Errorf("unexpected OnDesired(%d, %v)", got.v, got.s)
	case <-time.After(d):
	}
}

// TestDesired: the retained desired state arrives on connect and on every
// change, deduplicated by version, also across a reconnect.
func TestDesired(t *testing.T) {
	h := newHub(t, true)
	const id = "desired-dev"
	h.addDevice(id, "password")
	o := newObserver(t, h)
	desired := func(v int64, state map[string]any) {
		b, _ := json.Marshal(map[string]any{"version": v, "state": state})
		o.publish(&paho.Publish{Topic: topic.TwinDesired(id), QoS: 1, Retain: true, Payload: b})
	}
	desired(100, map[string]any{"interval": 5})

	px := newProxy(t, h.cfg.MQTTAddr)
	c := connect(t, device.Config{Server: px.url(), DeviceID: id})
	r := recordDesired(t, c)
	if got := r.next(); got.v != 100 || got.s["interval"] != float64(5) {
		t.Errorf("first desired = %+v; want version 100, interval 5", got)
	}
	desired(100, map[string]any{"interval": 5}) // the same version again
	desired(99, map[string]any{"interval": 1})  // an older one
	desired(101, map[string]any{"interval": 10})
	if got := r.next(); got.v != 101 || got.s["interval"] != float64(10) {
		t.Errorf("changed desired = %+v; want version 101", got)
	}
	r.none(300 * time.Millisecond)
	if v, s := c.Desired(); v != 101 || s["interval"] != float64(10) {
		t.Errorf("Desired() = %d, %v", v, s)
	}
	// A callback registered late gets the current state.
	late := recordDesired(t, c)
	if got := late.next(); got.v != 101 {
		t.Errorf("late OnDesired got version %d; want 101", got.v)
	}

	// After a reconnect the retained state arrives again (the client
	// resubscribes) but is not a change; a new version is.
	px.cut()
	eventually(t, 10*time.Second, "reconnect", func() bool { return c.Stats().Reconnects == 1 && c.Stats().Connected })
	r.none(500 * time.Millisecond)
	desired(102, map[string]any{"interval": 20})
	if got := r.next(); got.v != 102 {
		t.Errorf("desired after reconnect = %+v; want version 102", got)
	}
}

// twinView is GET /api/v1/devices/{id}/twin.
type twinView struct {
	Desired struct {
		Version int64          `json:"version"`
		State   map[string]any `json:"state"`
	} `json:"desired"`
	Reported struct {
		Version int64          `json:"version"`
		State   map[string]any `json:"state"`
	} `json:"reported"`
}

// TestThroughHub runs commands and the twin through the hub's own
// services and API with a password device over TLS: the wire contract of
// DESIGN §3 between the SDK and the hub.
func TestThroughHub(t *testing.T) {
	h := newHub(t, false)
	const id = "hub-dev"
	cr := h.addDevice(id, "password")
	if code := h.api("GET", "/api/v1/devices/"+id+"/twin", nil, nil); code == 404 || code == 405 {
		t.Skip("the hub has no twin API yet")
	}
	cfg := device.Config{Server: h.mqttsURL(), DeviceID: id, Password: cr.Password, CAFile: h.caFile()}
	c := connect(t, cfg)
	c.HandleCommand("reboot", func(ctx context.Context, params json.RawMessage) (any, error) {
		return map[string]any{"params": params}, nil
	})
	c.HandleCommand("fail", func(ctx context.Context, params json.RawMessage) (any, error) {
		return nil, errors.New("not now")
	})
	r := recordDesired(t, c)

	type cmdView struct {
		ID     string          `json:"id"`
		State  string          `json:"state"`
		Result json.RawMessage `json:"result"`
		Error  string          `json:"error"`
	}
	t.Run("commands", func(t *testing.T) {
		tests := []struct {
			name, cmd string
			want      cmdView
		}{
			{"succeeded", "reboot", cmdView{State: "succeeded", Result: json.RawMessage(`{"params":{"delay":3}}`)}},
			{"failed", "fail", cmdView{State: "failed", Error: "not now"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var got cmdView
				code := h.api("POST", "/api/v1/devices/"+id+"/commands?wait=10s",
					map[string]any{"name": tt.cmd, "params": map[string]any{"delay": 3}, "expires_in": "30s"}, &got)
				if code != 201 || got.State != tt.want.State || got.Error != tt.want.Error || string(got.Result) != string(tt.want.Result) {
					t.Errorf("POST commands = %d %+v; want %+v", code, got, tt.want)
				}
			})
		}
	})

	t.Run("twin", func(t *testing.T) {
		var v twinView
		if code := h.api("PATCH", "/api/v1/devices/"+id+"/twin", map[string]any{"desired": map[string]any{"interval": 5}}, &v); code != 200 {
			t.Fatalf("PATCH twin = %d", code)
		}
		if got := r.next(); got.v != v.Desired.Version || got.s["interval"] != float64(5) {
			t.Errorf("OnDesired(%d, %v); want version %d, interval 5", got.v, got.s, v.Desired.Version)
		}
		ctx := ctxFor(t, 10*time.Second)
		if err := c.ReportState(ctx, map[string]any{"firmware": "1.2.3", "interval": 5, "net": map[string]any{"rssi": -70}}); err != nil {
			t.Fatalf("ReportState = %v", err)
		}
		h.api("GET", "/api/v1/devices/"+id+"/twin", nil, &v)
		if v.Reported.State["firmware"] != "1.2.3" || v.Reported.State["interval"] != float64(5) {
			t.Errorf("reported = %+v", v.Reported)
		}
		if err := c.ReportState(ctx, map[string]any{"huge": strings.Repeat("x", 40<<10)}); !errors.Is(err, device.ErrRefused) {
			t.Errorf("ReportState(40 KiB) = %v; want ErrRefused", err)
		}
	})

	t.Run("restart: resubscribed, merged reports, offline command", func(t *testing.T) {
		var before twinView
		h.api("GET", "/api/v1/devices/"+id+"/twin", nil, &before)
		h.stop()
		eventually(t, 10*time.Second, "client to see the drop", func() bool { return !c.Stats().Connected })
		ctx := ctxFor(t, 20*time.Second)
		// Two reports while the hub is down reach it as one patch.
		if err := c.ReportState(ctx, map[string]any{"net": map[string]any{"rssi": nil, "ssid": "x"}, "mode": "a"}); err != nil {
			t.Fatalf("offline ReportState = %v", err)
		}
		if err := c.ReportState(ctx, map[string]any{"mode": "b"}); err != nil {
			t.Fatalf("offline ReportState = %v", err)
		}
		h.start()
		if err := c.WaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
		// The hub republishes the retained desired state; it is no change.
		r.none(time.Second)
		var v twinView
		eventually(t, 10*time.Second, "the merged report", func() bool {
			h.api("GET", "/api/v1/devices/"+id+"/twin", nil, &v)
			return v.Reported.State["mode"] == "b"
		})
		if got, want := string(mustJSON(v.Reported.State)), `{"firmware":"1.2.3","interval":5,"mode":"b","net":{"ssid":"x"}}`; got != want {
			t.Errorf("reported after reconnect = %s; want %s", got, want)
		}
		if v.Reported.Version != before.Reported.Version+1 {
			t.Errorf("reported version %d → %d; want one merged patch", before.Reported.Version, v.Reported.Version)
		}
		// The restarted hub has no sessions: commands and desired state
		// arrive because the client subscribed again.
		var cv cmdView
		h.api("POST", "/api/v1/devices/"+id+"/commands?wait=10s", map[string]any{"name": "reboot", "params": map[string]any{"delay": 4}, "expires_in": "30s"}, &cv)
		if cv.State != "succeeded" {
			t.Errorf("command after the restart = %+v; want succeeded", cv)
		}
		if code := h.api("PATCH", "/api/v1/devices/"+id+"/twin", map[string]any{"desired": map[string]any{"interval": 6}}, &v); code != 200 {
			t.Fatalf("PATCH twin = %d", code)
		}
		if got := r.next(); got.v != v.Desired.Version || got.s["interval"] != float64(6) {
			t.Errorf("OnDesired after the restart = %d, %v; want version %d, interval 6", got.v, got.s, v.Desired.Version)
		}
		// A command to the device while it is away is delivered when it
		// is back.
		c.Close(ctx)
		var cmd cmdView
		if code := h.api("POST", "/api/v1/devices/"+id+"/commands", map[string]any{"name": "reboot", "params": map[string]any{"delay": 1}, "expires_in": "1m"}, &cmd); code != 201 {
			t.Fatalf("POST commands = %d", code)
		}
		c2 := connect(t, cfg)
		c2.HandleCommand("reboot", func(ctx context.Context, params json.RawMessage) (any, error) { return "ok", nil })
		var got cmdView
		h.api("GET", "/api/v1/commands/"+cmd.ID+"?wait=10s", nil, &got)
		if got.State != "succeeded" || string(got.Result) != `"ok"` {
			t.Errorf("offline command = %+v; want succeeded", got)
		}
	})
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// clientGoroutines returns the stacks of goroutines running code of the
// device package.
func clientGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/fieldhub/fieldhub/device.") {
			out = append(out, g)
		}
	}
	return out
}

// TestCloseStopsEverything: Close waits for a running handler until its
// ctx ends, cancels it, and leaves no goroutine behind; the status is
// "offline".
func TestCloseStopsEverything(t *testing.T) {
	h := newHub(t, true)
	const id = "close-dev"
	h.addDevice(id, "password")
	o := newObserver(t, h, topic.Status(id))
	c := connect(t, device.Config{Server: h.mqttURL(), DeviceID: id, BufferDir: t.TempDir()})
	started := make(chan struct{})
	cancelled := make(chan struct{})
	c.HandleCommand("block", func(ctx context.Context, params json.RawMessage) (any, error) {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	})
	c.OnDesired(func(int64, map[string]any) {})
	if err := c.Publish(ctxFor(t, 5*time.Second), map[string]any{"n": 1}); err != nil {
		t.Fatal(err)
	}
	command(o, id, "block", "b1", nil, time.Time{})
	<-started

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := c.Close(ctx); err != nil {
		t.Errorf("Close = %v", err)
	}
	if d := time.Since(start); d < 400*time.Millisecond || d > 3*time.Second {
		t.Errorf("Close took %v; want about the 500 ms of its ctx", d)
	}
	select {
	case <-cancelled:
	default:
		t.Error("the running handler's ctx was not cancelled")
	}
	o.wait(t, 5*time.Second, topic.Status(id), func(p *paho.Publish) bool { return string(p.Payload) == "offline" })
	eventually(t, 5*time.Second, "no goroutine of the client left", func() bool { return len(clientGoroutines()) == 0 })
}
