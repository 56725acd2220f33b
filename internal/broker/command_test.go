package broker

import (
	"bufio"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fieldhub/fieldhub/payload"
	"github.com/fieldhub/fieldhub/topic"
)

// answerRec is a ResponseIngester, TwinIngester and SubscribeWatcher that
// records what it is given and answers with err.
type answerRec struct {
	mu   sync.Mutex
	got  []string // "response dev cid corr payload" / "reported dev payload"
	subs []string // "client filter"
	err  error
}

func (a *answerRec) IngestResponse(device, cid string, corr, p []byte, done func(error)) {
	a.mu.Lock()
	a.got = append(a.got, "response "+device+" "+cid+" "+string(corr)+" "+string(p))
	err := a.err
	a.mu.Unlock()
	done(err)
}

func (a *answerRec) IngestReported(device string, p []byte, done func(error)) {
	a.mu.Lock()
	a.got = append(a.got, "reported "+device+" "+string(p))
	err := a.err
	a.mu.Unlock()
	done(err)
}

func (a *answerRec) Subscribed(client string, filters []string) {
	a.mu.Lock()
	for _, f := range filters {
		a.subs = append(a.subs, client+" "+f)
	}
	a.mu.Unlock()
}

func (a *answerRec) list() (got, subs []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.got...), append([]string(nil), a.subs...)
}

// codeRefusal is a refusal with its own MQTT 5 reason code.
type codeRefusal struct{ code byte }

func (r codeRefusal) Error() string    { return "refused" }
func (r codeRefusal) ReasonCode() byte { return r.code }
func (r codeRefusal) Unwrap() error    { return &payload.Error{Reason: "unknown_command"} }

func withAnswers(a *answerRec) func(*Broker) {
	return func(b *Broker) { b.ings.Responses, b.ings.Twins, b.subs = a, a, a }
}

func TestResponsesAndReportedIngested(t *testing.T) {
	ans := &answerRec{}
	e := startEnv(t, Config{}, "ok", withAnswers(ans))
	c := connectV5(t, e.addr(ListenerTCP), "dev-a")
	ctx := t.Context()
	resp, err := c.c.Publish(ctx, &paho.Publish{
		Topic: topic.Response("dev-a", "c1"), QoS: 1, Payload: []byte(`{"status":"ok"}`),
		Properties: &paho.PublishProperties{CorrelationData: []byte("c1")},
	})
	if err != nil || resp.ReasonCode != 0 {
		t.Fatalf("response: %v, %+v", err, resp)
	}
	if _, err := c.publish(t, topic.TwinReported("dev-a"), 1, `{"fw":"1.2"}`); err != nil {
		t.Fatal(err)
	}
	got, _ := ans.list()
	want := []string{`response dev-a c1 c1 {"status":"ok"}`, `reported dev-a {"fw":"1.2"}`}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("ingested %q; want %q", got, want)
	}
	// A refusal's own reason code reaches MQTT 5 clients; a payload
	// refusal without one is 0x99.
	for _, tc := range []struct {
		err  error
		code byte
	}{
		{codeRefusal{0x90}, 0x90},
		{&payload.Error{Reason: "malformed"}, 0x99},
	} {
		ans.mu.Lock()
		ans.err = tc.err
		ans.mu.Unlock()
		resp, _ := c.publish(t, topic.Response("dev-a", "c2"), 1, `{}`)
		if resp == nil || resp.ReasonCode != tc.code {
			t.Errorf("refused with %v: PUBACK %+v; want 0x%02x", tc.err, resp, tc.code)
		}
	}
	if n := e.counter(t, "fieldhub_ingest_refused_total", "reason", "unknown_command"); n != 1 {
		t.Errorf("refusals counted %v; want 1", n)
	}
}

func TestPublishMessageProperties(t *testing.T) {
	ans := &answerRec{}
	e := startEnv(t, Config{}, "ok", withAnswers(ans))
	addr := e.addr(ListenerTCP)
	cmd := topic.Command("dev-a", "reboot")
	if e.b.HasSubscriber(cmd) {
		t.Fatal("HasSubscriber before anyone subscribed")
	}
	v5 := connectV5(t, addr, "dev-a")
	if r := v5.subscribe(t, topic.Prefix+"/dev-a/commands/+"); r[0] != 1 {
		t.Fatalf("SUBACK %v", r)
	}
	eventually(t, "SubscribeWatcher told", func() bool {
		_, subs := ans.list()
		return len(subs) == 1 && subs[0] == "dev-a devices/dev-a/commands/+"
	})
	if !e.b.HasSubscriber(cmd) || e.b.HasSubscriber(topic.Command("dev-b", "reboot")) {
		t.Error("HasSubscriber: want true for dev-a's command only")
	}
	v3 := connectV3(t, addr, "dev-b")
	got3 := make(chan pahov3.Message, 1)
	if tok := v3.c.Subscribe(topic.Prefix+"/dev-b/commands/#", 1, func(_ pahov3.Client, m pahov3.Message) { got3 <- m }); !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	for _, dev := range []string{"dev-a", "dev-b"} {
		err := e.b.PublishMessage(Message{
			Topic: topic.Command(dev, "reboot"), Payload: []byte(`{"id":"c1"}`), QoS: 1,
			ResponseTopic: topic.Response(dev, "c1"), CorrelationData: []byte("c1"),
			ContentType: "application/json", Expiry: 90 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	select {
	case p := <-v5.received:
		pr := p.Properties
		if p.Topic != cmd || string(p.Payload) != `{"id":"c1"}` || pr == nil || pr.ResponseTopic != topic.Response("dev-a", "c1") ||
			string(pr.CorrelationData) != "c1" || pr.ContentType != "application/json" || pr.MessageExpiry == nil || *pr.MessageExpiry > 90 || *pr.MessageExpiry < 89 {
			t.Errorf("v5 received %+v with %+v", p, pr)
		}
	case <-time.After(testTimeout):
		t.Fatal("v5 device got no command")
	}
	select {
	case m := <-got3:
		if m.Topic() != topic.Command("dev-b", "reboot") || string(m.Payload()) != `{"id":"c1"}` {
			t.Errorf("v3 received %s %s", m.Topic(), m.Payload())
		}
	case <-time.After(testTimeout):
		t.Fatal("v3 device got no command")
	}
}

// TestResumedSessionDropsOwnCommands: unacknowledged commands kept in a
// persistent session are dropped when the device reconnects (the command
// service resends what is still due), so a command is neither doubled
// nor delivered after its expiry.
func TestResumedSessionDropsOwnCommands(t *testing.T) {
	ans := &answerRec{}
	e := startEnv(t, Config{}, "ok", withAnswers(ans))
	addr := e.addr(ListenerTCP)
	connect := func() *rawClient {
		rc := &rawClient{conn: dialTCP(t, addr), version: 5}
		rc.r = bufio.NewReader(rc.conn)
		t.Cleanup(func() { rc.conn.Close() })
		rc.send(t, packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Connect},
			Connect: packets.ConnectParams{
				ProtocolName: []byte("MQTT"), Clean: false, Keepalive: 30, ClientIdentifier: "dev-a",
				UsernameFlag: true, Username: []byte("dev-a"), PasswordFlag: true, Password: []byte(testPasswords["dev-a"]),
			},
			Properties: packets.Properties{SessionExpiryInterval: 600, SessionExpiryIntervalFlag: true},
		})
		pk, err := rc.read(t)
		if err != nil || pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
			t.Fatalf("connect: %+v, %v", pk, err)
		}
		return rc
	}
	rc := connect()
	rc.send(t, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: topic.Prefix + "/dev-a/#", Qos: 1}},
	})
	if pk, err := rc.read(t); err != nil || pk.FixedHeader.Type != packets.Suback {
		t.Fatalf("subscribe: %+v, %v", pk, err)
	}
	for _, name := range []string{"own", "other"} {
		if err := e.b.PublishMessage(Message{Topic: topic.Command("dev-a", name), Payload: []byte(name), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	// A non-command message held for the session is not dropped.
	if err := e.b.PublishMessage(Message{Topic: topic.TwinDesired("dev-a"), Payload: []byte("desired"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if pk, err := rc.read(t); err != nil || pk.FixedHeader.Type != packets.Publish {
			t.Fatalf("want a PUBLISH: %+v, %v", pk.FixedHeader, err)
		}
	}
	// No PUBACKs; the connection drops.
	rc.conn.Close()
	eventually(t, "disconnect seen", func() bool { return !e.b.Online("dev-a") })

	rc = connect()
	var resent []string
	for {
		pk, err := rc.readWithin(500 * time.Millisecond)
		if err != nil {
			break
		}
		if pk.FixedHeader.Type == packets.Publish {
			resent = append(resent, string(pk.Payload))
		}
	}
	if len(resent) != 1 || resent[0] != "desired" {
		t.Errorf("resumed session resent %q; want only the twin message", resent)
	}
}

func TestPublishMessageRefusesBadInput(t *testing.T) {
	e := startEnv(t, Config{}, "ok")
	if err := e.b.PublishMessage(Message{Topic: "", QoS: 1}); err == nil {
		t.Error("PublishMessage with an empty topic succeeded")
	}
	if err := e.b.PublishMessage(Message{Topic: topic.Command("dev-a", "x"), QoS: 3}); err == nil {
		t.Error("PublishMessage with QoS 3 succeeded")
	}
}
