package hub_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/fieldhub/fieldhub/topic"
)

// commandJSON is the API's view of a command.
type commandJSON struct {
	ID          string          `json:"id"`
	Device      string          `json:"device"`
	Name        string          `json:"name"`
	Params      json.RawMessage `json:"params"`
	State       string          `json:"state"`
	CreatedAt   time.Time       `json:"created_at"`
	ExpiresAt   time.Time       `json:"expires_at"`
	SentAt      *time.Time      `json:"sent_at"`
	Attempts    int             `json:"attempts"`
	CompletedAt *time.Time      `json:"completed_at"`
	Result      json.RawMessage `json:"result"`
	Error       string          `json:"error"`
}

// wireCommand is the payload of devices/{id}/commands/{name}.
type wireCommand struct {
	ID      string          `json:"id"`
	Params  json.RawMessage `json:"params"`
	Expires string          `json:"expires"`
}

// sendCommand posts a command; query is appended to the URL ("?wait=5s").
func (h *testHub) sendCommand(device, name string, body map[string]any, query string) commandJSON {
	h.t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	body["name"] = name
	var c commandJSON
	if code := h.api("POST", "/api/v1/devices/"+device+"/commands"+query, body, &c); code != http.StatusCreated {
		h.t.Fatalf("POST command %s to %s: HTTP %d", name, device, code)
	}
	return c
}

func (h *testHub) getCommand(cid, query string) commandJSON {
	h.t.Helper()
	var c commandJSON
	if code := h.api("GET", "/api/v1/commands/"+cid+query, nil, &c); code != http.StatusOK {
		h.t.Fatalf("GET command %s: HTTP %d", cid, code)
	}
	return c
}

// waitState polls a command until it is in state want.
func (h *testHub) waitState(cid, want string, d time.Duration) commandJSON {
	h.t.Helper()
	var c commandJSON
	eventually(h.t, d, "command "+cid+" "+want, func() bool {
		c = h.getCommand(cid, "")
		return c.State == want
	})
	return c
}

// dial5Handler connects an MQTT 5 device whose received messages go to fn
// (on their own goroutine).
func dial5Handler(t *testing.T, addr string, tlsCfg *tls.Config, id, password string, fn func(c *paho.Client, p *paho.Publish)) *paho.Client {
	t.Helper()
	c, _, err := dial5(t, addr, tlsCfg, id, id, password)
	if err != nil {
		t.Fatal(err)
	}
	c.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
		go fn(pr.Client, pr.Packet) // fn may publish: not on paho's router goroutine
		return true, nil
	})
	return c
}

// dial5Recorder connects a device that records the commands it receives
// in arrival order (on paho's router goroutine, which keeps that order).
func dial5Recorder(t *testing.T, addr string, id, password string, rec *recorder) *paho.Client {
	t.Helper()
	c, _, err := dial5(t, addr, nil, id, id, password)
	if err != nil {
		t.Fatal(err)
	}
	c.AddOnPublishReceived(func(pr paho.PublishReceived) (bool, error) {
		rec.handle(pr.Client, pr.Packet)
		return true, nil
	})
	return c
}

func subscribe5(t *testing.T, c *paho.Client, filter string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
		t.Fatalf("subscribe %s: SUBACK %v", filter, sa.Reasons)
	}
}

func TestCommandRoundTrip(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	addr := h.Addr("mqtt").String()

	// An MQTT 5 device answers on the Response Topic with the Correlation Data.
	v5 := h.addDevice("cmd-v5", "password")
	type seen struct {
		topic, responseTopic string
		correlation          []byte
		contentType          string
		expiry               *uint32
		cmd                  wireCommand
	}
	got5 := make(chan seen, 4)
	answerErr := make(chan error, 1)
	c5 := dial5Handler(t, addr, nil, v5.ID, v5.Password, func(c *paho.Client, p *paho.Publish) {
		if p.Topic != topic.Command(v5.ID, "reboot") {
			return // the history commands below stay unanswered
		}
		s := seen{topic: p.Topic}
		if p.Properties != nil {
			s.responseTopic, s.correlation = p.Properties.ResponseTopic, p.Properties.CorrelationData
			s.contentType, s.expiry = p.Properties.ContentType, p.Properties.MessageExpiry
		}
		json.Unmarshal(p.Payload, &s.cmd)
		got5 <- s
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		answer := fmt.Sprintf(`{"status":"ok","result":{"echo":%s,"uptime":42}}`, s.cmd.Params)
		resp, err := c.Publish(ctx, &paho.Publish{
			Topic: s.responseTopic, QoS: 1, Payload: []byte(answer),
			Properties: &paho.PublishProperties{CorrelationData: s.correlation},
		})
		if err == nil && resp.ReasonCode != 0 {
			err = fmt.Errorf("PUBACK 0x%02x", resp.ReasonCode)
		}
		answerErr <- err
	})
	subscribe5(t, c5, topic.Prefix+"/"+v5.ID+"/commands/+")

	start := time.Now()
	c := h.sendCommand(v5.ID, "reboot", map[string]any{"params": map[string]any{"delay": 5, "mode": "soft"}, "expires_in": "30s"}, "?wait=5s")
	if c.State != "succeeded" {
		t.Fatalf("POST ?wait=5s: state %s; want succeeded: %+v", c.State, c)
	}
	if string(c.Result) != `{"echo":{"delay":5,"mode":"soft"},"uptime":42}` {
		t.Errorf("result = %s", c.Result)
	}
	if c.SentAt == nil || c.CompletedAt == nil || c.Attempts != 1 || c.Device != v5.ID || c.Name != "reboot" {
		t.Errorf("command = %+v; want sent and completed times, 1 attempt", c)
	}
	if d := c.ExpiresAt.Sub(start); d < 29*time.Second || d > 31*time.Second {
		t.Errorf("expires_at %v is %v after the request; want 30s", c.ExpiresAt, d)
	}
	if err := <-answerErr; err != nil {
		t.Errorf("v5 answer: %v", err)
	}
	s := <-got5
	wantResp := topic.Response(v5.ID, c.ID)
	switch {
	case s.topic != topic.Command(v5.ID, "reboot"):
		t.Errorf("command topic %q", s.topic)
	case s.responseTopic != wantResp:
		t.Errorf("response topic %q; want %q", s.responseTopic, wantResp)
	case string(s.correlation) != c.ID:
		t.Errorf("correlation data %q; want the command id %q", s.correlation, c.ID)
	case s.cmd.ID != c.ID || string(s.cmd.Params) != `{"delay":5,"mode":"soft"}`:
		t.Errorf("payload %+v", s.cmd)
	case s.contentType != "application/json":
		t.Errorf("content type %q", s.contentType)
	case s.expiry == nil || *s.expiry < 28 || *s.expiry > 30:
		t.Errorf("message expiry %v; want about 30 s", s.expiry)
	}
	if exp, err := time.Parse(time.RFC3339, s.cmd.Expires); err != nil || !exp.Equal(c.ExpiresAt.Truncate(time.Millisecond)) {
		t.Errorf("expires %q (%v); want %v", s.cmd.Expires, err, c.ExpiresAt)
	}
	if g := h.getCommand(c.ID, ""); g.State != "succeeded" || string(g.Result) != string(c.Result) {
		t.Errorf("GET after the answer = %+v", g)
	}

	// An MQTT 3.1.1 device answers on devices/{id}/responses/{cid}.
	v3 := h.addDevice("cmd-v3", "password")
	c3, err := dial3(t, "tcp://"+addr, nil, v3.ID, v3.ID, v3.Password)
	if err != nil {
		t.Fatal(err)
	}
	tok := c3.Subscribe(topic.Prefix+"/"+v3.ID+"/commands/#", 1, func(cl mqtt3.Client, m mqtt3.Message) {
		var wc wireCommand
		json.Unmarshal(m.Payload(), &wc)
		go cl.Publish(topic.Response(v3.ID, wc.ID), 1, false, `{"status":"error","error":"valve stuck","result":{"code":7}}`)
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("v3 subscribe: %v", tok.Error())
	}
	f := h.sendCommand(v3.ID, "open-valve", nil, "?wait=5s")
	if f.State != "failed" || f.Error != "valve stuck" || string(f.Result) != `{"code":7}` || string(f.Params) != "{}" {
		t.Errorf("v3 command = %+v; want failed with the device's error and result", f)
	}

	// Without an answer, ?wait ends with the current state.
	silent := h.addDevice("cmd-silent", "password")
	cs, _, err := dial5(t, addr, nil, silent.ID, silent.ID, silent.Password)
	if err != nil {
		t.Fatal(err)
	}
	subscribe5(t, cs, topic.Prefix+"/"+silent.ID+"/#")
	t0 := time.Now()
	w := h.sendCommand(silent.ID, "noop", nil, "?wait=300ms")
	if w.State != "sent" || time.Since(t0) < 300*time.Millisecond {
		t.Errorf("unanswered ?wait=300ms = %s after %v; want sent after 300ms", w.State, time.Since(t0))
	}

	// History, newest first.
	for i := range 3 {
		h.sendCommand(v5.ID, fmt.Sprintf("step-%d", i), nil, "")
	}
	var list struct {
		Commands []commandJSON `json:"commands"`
		Next     string        `json:"next"`
	}
	if code := h.api("GET", "/api/v1/devices/"+v5.ID+"/commands?limit=3", nil, &list); code != 200 {
		t.Fatalf("list: HTTP %d", code)
	}
	if len(list.Commands) != 3 || list.Commands[0].Name != "step-2" || list.Commands[2].Name != "step-0" || list.Next == "" {
		t.Errorf("list ?limit=3 = %d commands, next %q", len(list.Commands), list.Next)
	}
	if code := h.api("GET", "/api/v1/devices/"+v5.ID+"/commands?limit=3&before="+list.Next, nil, &list); code != 200 || len(list.Commands) != 1 || list.Commands[0].ID != c.ID {
		t.Errorf("second page = %d commands", len(list.Commands))
	}
	for _, st := range []string{"succeeded", "failed"} {
		if n := h.counter("fieldhub_commands_total", "state", st); n < 1 {
			t.Errorf("fieldhub_commands_total{state=%s} = %v", st, n)
		}
	}
	if n := h.counter("fieldhub_command_responses_total", "result", "stored"); n < 2 {
		t.Errorf("fieldhub_command_responses_total{result=stored} = %v; want ≥ 2", n)
	}
}

func TestCommandRequestsRefused(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	h.addDevice("dev", "password")
	for _, tc := range []struct {
		name, path string
		body       any
		want       int
	}{
		{"no name", "/api/v1/devices/dev/commands", map[string]any{}, 400},
		{"slash in name", "/api/v1/devices/dev/commands", map[string]any{"name": "a/b"}, 400},
		{"wildcard in name", "/api/v1/devices/dev/commands", map[string]any{"name": "a+"}, 400},
		{"params not an object", "/api/v1/devices/dev/commands", map[string]any{"name": "x", "params": []int{1}}, 400},
		{"params too large", "/api/v1/devices/dev/commands", map[string]any{"name": "x", "params": map[string]string{"a": strings.Repeat("x", 33<<10)}}, 400},
		{"expiry beyond 7 days", "/api/v1/devices/dev/commands", map[string]any{"name": "x", "expires_in": "169h"}, 400},
		{"negative expiry", "/api/v1/devices/dev/commands", map[string]any{"name": "x", "expires_in": "-1s"}, 400},
		{"expiry in the past", "/api/v1/devices/dev/commands", map[string]any{"name": "x", "expires": "2020-01-01T00:00:00Z"}, 400},
		{"both expiries", "/api/v1/devices/dev/commands", map[string]any{"name": "x", "expires_in": 60, "expires": time.Now().Add(time.Hour).Format(time.RFC3339)}, 400},
		{"bad expires_in", "/api/v1/devices/dev/commands", map[string]any{"name": "x", "expires_in": "soon"}, 400},
		{"unknown field", "/api/v1/devices/dev/commands", map[string]any{"name": "x", "nmae": "y"}, 400},
		{"wait too long", "/api/v1/devices/dev/commands?wait=61s", map[string]any{"name": "x"}, 400},
		{"unknown device", "/api/v1/devices/nobody/commands", map[string]any{"name": "x"}, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code := h.api("POST", tc.path, tc.body, nil); code != tc.want {
				t.Errorf("POST %s %v = HTTP %d; want %d", tc.path, tc.body, code, tc.want)
			}
		})
	}
	if code := h.api("GET", "/api/v1/commands/nope", nil, nil); code != 404 {
		t.Errorf("GET unknown command = %d; want 404", code)
	}
	if code := h.api("GET", "/api/v1/devices/nobody/commands", nil, nil); code != 404 {
		t.Errorf("GET commands of an unknown device = %d; want 404", code)
	}
	// Expiry as a number of seconds.
	c := h.sendCommand("dev", "x", map[string]any{"expires_in": 90}, "")
	if d := c.ExpiresAt.Sub(c.CreatedAt); d != 90*time.Second || c.State != "queued" {
		t.Errorf("expires_in 90 → %v, %s; want 90s, queued", d, c.State)
	}
}

func TestCommandAnswersRefused(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	addr := h.Addr("mqtt").String()
	a := h.addDevice("ans-a", "password")
	b := h.addDevice("ans-b", "password")
	ca, _, err := dial5(t, addr, nil, a.ID, a.ID, a.Password)
	if err != nil {
		t.Fatal(err)
	}
	subscribe5(t, ca, topic.Prefix+"/"+a.ID+"/commands/#")
	cmdA := h.sendCommand(a.ID, "x", nil, "")
	cmdB := h.sendCommand(b.ID, "x", nil, "") // b is offline: queued
	pub := func(topicName, payload string, corr []byte) byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p := &paho.Publish{Topic: topicName, QoS: 1, Payload: []byte(payload)}
		if corr != nil {
			p.Properties = &paho.PublishProperties{CorrelationData: corr}
		}
		resp, err := ca.Publish(ctx, p)
		if resp == nil {
			t.Fatalf("publish %s: %v", topicName, err)
		}
		return resp.ReasonCode // paho also returns an error for codes ≥ 0x80
	}
	for _, tc := range []struct {
		name, topic, payload string
		corr                 []byte
		code                 byte
		reason               string
	}{
		{"unknown command", topic.Response(a.ID, "0123456789abcdef0123456789abcdef"), `{"status":"ok"}`, nil, 0x90, "unknown_command"},
		{"another device's command", topic.Response(a.ID, cmdB.ID), `{"status":"ok"}`, nil, 0x90, "unknown_command"},
		{"not JSON", topic.Response(a.ID, cmdA.ID), `ok`, nil, 0x99, "malformed"},
		{"bad status", topic.Response(a.ID, cmdA.ID), `{"status":"done"}`, nil, 0x99, "wrong_type"},
		{"error not a string", topic.Response(a.ID, cmdA.ID), `{"status":"error","error":{"code":1}}`, nil, 0x99, "wrong_type"},
		{"correlation mismatch", topic.Response(a.ID, cmdA.ID), `{"status":"ok"}`, []byte("other"), 0x83, "correlation_mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.counter("fieldhub_command_responses_refused_total", "reason", tc.reason)
			if code := pub(tc.topic, tc.payload, tc.corr); code != tc.code {
				t.Errorf("PUBACK 0x%02x; want 0x%02x", code, tc.code)
			}
			if n := h.counter("fieldhub_command_responses_refused_total", "reason", tc.reason); n != before+1 {
				t.Errorf("fieldhub_command_responses_refused_total{reason=%s} = %v; want %v", tc.reason, n, before+1)
			}
		})
	}
	// A device cannot even publish on another device's responses topic.
	if code := pub(topic.Response(b.ID, cmdB.ID), `{"status":"ok"}`, nil); code != 0x87 {
		t.Errorf("answer on another device's topic: PUBACK 0x%02x; want 0x87", code)
	}
	if got := h.getCommand(cmdB.ID, ""); got.State != "queued" {
		t.Errorf("b's command is %s after refused answers; want queued", got.State)
	}
	// The right answer is taken; a resend of it is acked and changes nothing.
	for range 2 {
		if code := pub(topic.Response(a.ID, cmdA.ID), `{"status":"ok","result":1}`, []byte(cmdA.ID)); code != 0 {
			t.Errorf("answer: PUBACK 0x%02x", code)
		}
	}
	if got := h.getCommand(cmdA.ID, ""); got.State != "succeeded" || string(got.Result) != "1" {
		t.Errorf("after the answer: %+v", got)
	}
	if n := h.counter("fieldhub_command_responses_total", "result", "duplicate"); n != 1 {
		t.Errorf("duplicates counted %v; want 1", n)
	}
}

// recorder is an MQTT 5 device that records the commands it receives and
// answers none.
type recorder struct {
	mu  sync.Mutex
	got []wireCommand
}

func (r *recorder) handle(_ *paho.Client, p *paho.Publish) {
	var wc wireCommand
	json.Unmarshal(p.Payload, &wc)
	r.mu.Lock()
	r.got = append(r.got, wc)
	r.mu.Unlock()
}

func (r *recorder) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.got {
		out = append(out, c.ID)
	}
	return out
}

func TestCommandWaitsForOfflineDevice(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	addr := h.Addr("mqtt").String()
	d := h.addDevice("sleepy", "password")
	first := h.sendCommand(d.ID, "a", map[string]any{"params": map[string]int{"n": 1}}, "")
	second := h.sendCommand(d.ID, "b", nil, "?wait=200ms")
	if first.State != "queued" || second.State != "queued" || first.SentAt != nil {
		t.Fatalf("commands to an offline device: %s, %s; want queued", first.State, second.State)
	}
	// Connecting is not enough: the device must listen for commands.
	var rec recorder
	c := dial5Recorder(t, addr, d.ID, d.Password, &rec)
	time.Sleep(200 * time.Millisecond)
	if got := h.getCommand(first.ID, ""); got.State != "queued" {
		t.Errorf("before subscribing: %s; want queued", got.State)
	}
	subscribe5(t, c, topic.Prefix+"/"+d.ID+"/commands/+")
	eventually(t, 5*time.Second, "both commands delivered", func() bool { return len(rec.ids()) == 2 })
	if ids := rec.ids(); ids[0] != first.ID || ids[1] != second.ID {
		t.Errorf("delivered %v; want %s then %s (creation order)", ids, first.ID, second.ID)
	}
	if got := h.getCommand(first.ID, ""); got.State != "sent" || got.Attempts != 1 || got.SentAt == nil {
		t.Errorf("after delivery: %+v; want sent once", got)
	}
	// A new connection gets what it did not answer again (at least once).
	c.Disconnect(&paho.Disconnect{})
	eventually(t, 5*time.Second, "device offline", func() bool { return !h.online(d.ID) })
	var rec2 recorder
	c2 := dial5Recorder(t, addr, d.ID, d.Password, &rec2)
	subscribe5(t, c2, topic.Prefix+"/"+d.ID+"/commands/#")
	eventually(t, 5*time.Second, "unanswered commands sent again", func() bool { return len(rec2.ids()) == 2 })
	if got := h.getCommand(second.ID, ""); got.Attempts != 2 {
		t.Errorf("attempts after the resend = %d; want 2", got.Attempts)
	}
	// Subscribing again on the same connection sends nothing again.
	subscribe5(t, c2, topic.Prefix+"/"+d.ID+"/commands/a")
	time.Sleep(200 * time.Millisecond)
	if n := len(rec2.ids()); n != 2 {
		t.Errorf("a second subscription delivered %d commands; want 2", n)
	}
}

func TestExpiredCommandNeverDelivered(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	addr := h.Addr("mqtt").String()
	d := h.addDevice("late", "password")
	short := h.sendCommand(d.ID, "short", map[string]any{"expires_in": "500ms"}, "")
	long := h.sendCommand(d.ID, "long", map[string]any{"expires_in": "1m"}, "")
	// The sweeper marks it expired at its expiry; ?wait sees it.
	got := h.getCommand(short.ID, "?wait=5s")
	if got.State != "expired" || got.CompletedAt == nil || got.CompletedAt.Before(short.ExpiresAt) {
		t.Fatalf("after its expiry: %+v; want expired at or after %v", got, short.ExpiresAt)
	}
	if d := got.CompletedAt.Sub(short.ExpiresAt); d > time.Second {
		t.Errorf("expired %v after its expiry; want within 1 s", d)
	}
	var rec recorder
	c := dial5Recorder(t, addr, d.ID, d.Password, &rec)
	subscribe5(t, c, topic.Prefix+"/"+d.ID+"/commands/#")
	eventually(t, 5*time.Second, "the live command delivered", func() bool { return len(rec.ids()) >= 1 })
	time.Sleep(300 * time.Millisecond)
	if ids := rec.ids(); len(ids) != 1 || ids[0] != long.ID {
		t.Errorf("delivered %v; want only %s (the expired %s never)", ids, long.ID, short.ID)
	}
	// A late answer to the expired command is refused.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Publish(ctx, &paho.Publish{Topic: topic.Response(d.ID, short.ID), QoS: 1, Payload: []byte(`{"status":"ok"}`)})
	if resp == nil || resp.ReasonCode != 0x83 {
		t.Errorf("late answer: %v, PUBACK %+v; want 0x83", err, resp)
	}
	if got := h.getCommand(short.ID, ""); got.State != "expired" {
		t.Errorf("after a late answer: %s; want expired", got.State)
	}
	if n := h.counter("fieldhub_commands_total", "state", "expired"); n != 1 {
		t.Errorf("fieldhub_commands_total{state=expired} = %v; want 1", n)
	}
}

func TestCommandsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := hubConfig(t, dir)
	h := startHub(t, cfg)
	d := h.addDevice("durable", "password")
	// One command sent and not answered, one queued, one that expires
	// while the hub is down.
	var rec recorder
	c := dial5Recorder(t, h.Addr("mqtt").String(), d.ID, d.Password, &rec)
	subscribe5(t, c, topic.Prefix+"/"+d.ID+"/commands/#")
	sent := h.sendCommand(d.ID, "sent", nil, "")
	if sent.State != "sent" {
		t.Fatalf("command to a listening device: %s; want sent", sent.State)
	}
	eventually(t, 5*time.Second, "delivery", func() bool { return len(rec.ids()) == 1 })
	c.Disconnect(&paho.Disconnect{})
	eventually(t, 5*time.Second, "device offline", func() bool { return !h.online(d.ID) })
	queued := h.sendCommand(d.ID, "queued", map[string]any{"params": map[string]string{"k": "v"}}, "")
	doomed := h.sendCommand(d.ID, "doomed", map[string]any{"expires_in": "1s"}, "")
	h.stop()
	time.Sleep(time.Until(doomed.ExpiresAt) + 100*time.Millisecond)

	h2 := startHub(t, cfg)
	if got := h2.getCommand(queued.ID, ""); got.State != "queued" {
		t.Fatalf("after restart: %s; want queued", got.State)
	}
	var rec2 recorder
	c2 := dial5Handler(t, h2.Addr("mqtt").String(), nil, d.ID, d.Password, func(cl *paho.Client, p *paho.Publish) {
		rec2.handle(cl, p)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cl.Publish(ctx, &paho.Publish{Topic: p.Properties.ResponseTopic, QoS: 1, Payload: []byte(`{"status":"ok"}`), Properties: &paho.PublishProperties{CorrelationData: p.Properties.CorrelationData}})
	})
	subscribe5(t, c2, topic.Prefix+"/"+d.ID+"/commands/#")
	eventually(t, 5*time.Second, "two deliveries after the restart", func() bool { return len(rec2.ids()) >= 2 })
	if ids := rec2.ids(); len(ids) != 2 || ids[0] != sent.ID || ids[1] != queued.ID {
		t.Errorf("after restart delivered %v; want %s (resent) then %s", ids, sent.ID, queued.ID)
	}
	for _, id := range []string{sent.ID, queued.ID} {
		h2.waitState(id, "succeeded", 5*time.Second)
	}
	if got := h2.getCommand(doomed.ID, ""); got.State != "expired" {
		t.Errorf("a command that expired while the hub was down: %s; want expired", got.State)
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(rec2.ids()); n != 2 {
		t.Errorf("%d commands delivered; want 2 (never the expired one)", n)
	}
}

// TestStockClientsAnswerCommands: mosquitto_sub receives a command over
// TLS with per-device credentials and mosquitto_pub answers it.
func TestStockClientsAnswerCommands(t *testing.T) {
	sub := requireTool(t, "mosquitto_sub")
	pub := requireTool(t, "mosquitto_pub")
	h := startHub(t, hubConfig(t, t.TempDir()))
	d := h.addDevice("stock-dev", "password")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, h.CAPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(h.Addr("mqtts").String())
	for _, v := range []string{"mqttv311", "mqttv5"} {
		t.Run(v, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, sub, "-h", "localhost", "-p", port, "--cafile", caFile, "-V", v,
				"-i", d.ID, "-u", d.ID, "-P", d.Password, "-q", "1", "-t", topic.Prefix+"/"+d.ID+"/commands/#", "-C", "1", "-v")
			var out strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// The command is queued until mosquitto_sub has subscribed.
			c := h.sendCommand(d.ID, "set-led", map[string]any{"params": map[string]string{"color": "green"}}, "")
			if err := cmd.Wait(); err != nil {
				t.Fatalf("mosquitto_sub: %v\n%s", err, out.String())
			}
			line := strings.TrimSpace(out.String())
			gotTopic, payload, _ := strings.Cut(line, " ")
			var wc wireCommand
			if gotTopic != topic.Command(d.ID, "set-led") || json.Unmarshal([]byte(payload), &wc) != nil || wc.ID != c.ID || string(wc.Params) != `{"color":"green"}` {
				t.Fatalf("mosquitto_sub printed %q; want %s and the command %s", line, topic.Command(d.ID, "set-led"), c.ID)
			}
			b, err := exec.CommandContext(ctx, pub, "-h", "localhost", "-p", port, "--cafile", caFile, "-V", v,
				"-i", d.ID, "-u", d.ID, "-P", d.Password, "-q", "1",
				"-t", topic.Response(d.ID, wc.ID), "-m", `{"status":"ok","result":"green"}`).CombinedOutput()
			if err != nil {
				t.Fatalf("mosquitto_pub: %v\n%s", err, b)
			}
			// mosquitto_pub exits after the PUBACK, which means stored.
			if got := h.getCommand(c.ID, ""); got.State != "succeeded" || string(got.Result) != `"green"` {
				t.Errorf("after mosquitto_pub answered: %+v", got)
			}
		})
	}
}

// deviceState is what the device API says about presence.
type deviceState struct {
	Online   bool       `json:"online"`
	LastSeen *time.Time `json:"last_seen"`
	Status   string     `json:"status"`
}

func (h *testHub) device(id string) deviceState {
	h.t.Helper()
	var d deviceState
	if code := h.api("GET", "/api/v1/devices/"+id, nil, &d); code != http.StatusOK {
		h.t.Fatalf("GET device %s: HTTP %d", id, code)
	}
	return d
}

func (h *testHub) online(id string) bool { return h.device(id).Online }
