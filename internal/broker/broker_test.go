package broker

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fieldhub/fieldhub/topic"
)

func TestNewConfigErrors(t *testing.T) {
	ing := newRecIngester("ok")
	auth := newFakeAuth(nil)
	tests := []struct {
		name  string
		cfg   Config
		auth  Authenticator
		field string // must appear in the error; "" means no error
	}{
		{"no listener", Config{}, auth, "TCPAddr"},
		{"tls without cert", Config{TLSAddr: "127.0.0.1:0"}, auth, "TLS:"},
		{"wss without cert", Config{WSSAddr: "127.0.0.1:0"}, auth, "TLS:"},
		{"bad address", Config{TCPAddr: "127.0.0.1"}, auth, "TCPAddr"},
		{"no auth", Config{TCPAddr: "127.0.0.1:0"}, nil, "auth"},
		{"tiny packets", Config{TCPAddr: "127.0.0.1:0", MaxPacketSize: 10}, auth, "MaxPacketSize"},
		{"negative interval", Config{TCPAddr: "127.0.0.1:0", RefusalLogInterval: -1}, auth, "RefusalLogInterval"},
		{"open :1883", Config{OpenPolicy: true, TCPAddr: ":1883"}, nil, "OpenPolicy: TCPAddr"},
		{"open 0.0.0.0", Config{OpenPolicy: true, TCPAddr: "0.0.0.0:1883"}, nil, "OpenPolicy: TCPAddr"},
		{"open [::]", Config{OpenPolicy: true, WSAddr: "[::]:1883"}, nil, "OpenPolicy: WSAddr"},
		{"open LAN address", Config{OpenPolicy: true, TCPAddr: "127.0.0.1:0", WSAddr: "192.168.1.2:8083"}, nil, "OpenPolicy: WSAddr"},
		{"open host name", Config{OpenPolicy: true, TCPAddr: "example.com:1883"}, nil, "OpenPolicy: TCPAddr"},
		{"open loopback", Config{OpenPolicy: true, TCPAddr: "127.0.0.1:0"}, nil, ""},
		{"open 127.1.2.3", Config{OpenPolicy: true, TCPAddr: "127.1.2.3:0"}, nil, ""},
		{"open ::1", Config{OpenPolicy: true, TCPAddr: "[::1]:0"}, nil, ""},
		{"open localhost", Config{OpenPolicy: true, TCPAddr: "localhost:0", WSAddr: "localhost:0"}, nil, ""},
		{"plain tcp", Config{TCPAddr: ":0"}, auth, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Logger = testLogger()
			_, err := New(tt.cfg, tt.auth, ing, nil)
			switch {
			case tt.field == "" && err != nil:
				t.Fatalf("New(%+v) = %v; want no error", tt.cfg, err)
			case tt.field != "" && err == nil:
				t.Fatalf("New(%+v) = nil; want an error naming %q", tt.cfg, tt.field)
			case tt.field != "" && (!strings.Contains(err.Error(), tt.field) || !errors.Is(err, ErrInvalidConfig)):
				t.Fatalf("New(%+v) = %v; want ErrInvalidConfig naming %q", tt.cfg, err, tt.field)
			}
		})
	}
}

func TestTelemetryAckedOnlyWhenDurable(t *testing.T) {
	e := startEnv(t, Config{}, "hold")
	for _, proto := range []string{"v5", "v3"} {
		t.Run(proto, func(t *testing.T) {
			acked := make(chan error, 1)
			switch proto {
			case "v5":
				c := connectV5(t, e.addr("tcp"), "dev-a")
				go func() {
					_, err := c.publish(t, topic.Telemetry("dev-a"), 1, `{"data":{"t":1}}`)
					acked <- err
				}()
			case "v3":
				c := connectV3(t, e.addr("tcp"), "dev-b")
				tok := c.c.Publish(topic.Telemetry("dev-b"), 1, false, `{"data":{"t":1}}`)
				go func() {
					tok.WaitTimeout(testTimeout)
					acked <- tok.Error()
				}()
			}
			e.ing.waitArrived(t, 1)
			select {
			case err := <-acked:
				t.Fatalf("PUBACK (err %v) before the ingester completed", err)
			case <-time.After(200 * time.Millisecond):
			}
			if n := e.ing.release(nil, false); n != 1 {
				t.Fatalf("released %d messages; want 1", n)
			}
			select {
			case err := <-acked:
				if err != nil {
					t.Fatalf("publish: %v", err)
				}
			case <-time.After(testTimeout):
				t.Fatal("no PUBACK after the ingester completed")
			}
		})
	}
	if got := testutil.ToFloat64(e.b.metrics.received[topic.KindTelemetry]); got != 2 {
		t.Errorf("messages_received{kind=telemetry} = %v; want 2", got)
	}
	if got := testutil.CollectAndCount(e.b.metrics.ingestLatency); got != 1 {
		t.Errorf("latency histogram series = %d; want 1", got)
	}
}

// TestPipelining: 100 QoS 1 messages from one connection are all pending in
// the ingester at once (the read loop is not blocked per message), and
// complete in one batch — completed in reverse order, yet acked in receive
// order.
func TestPipelining(t *testing.T) {
	e := startEnv(t, Config{}, "hold")
	for _, version := range []byte{5, 4} {
		t.Run(map[byte]string{5: "v5", 4: "v3"}[version], func(t *testing.T) {
			rc := rawConnect(t, e.addr("tcp"), "dev-a", version)
			const n = 100
			for i := 1; i <= n; i++ {
				rc.publish(t, uint16(i), topic.Telemetry("dev-a"), 1, `{"data":{"x":1}}`)
			}
			e.ing.waitArrived(t, n)
			if got := testutil.ToFloat64(e.b.metrics.ingestPending); got != n {
				t.Fatalf("ingest_pending = %v; want %d", got, n)
			}
			if _, err := rc.readWithin(100 * time.Millisecond); err == nil {
				t.Fatal("got a packet before any ingest completed")
			}
			start := time.Now()
			e.ing.release(nil, true)
			for i := 1; i <= n; i++ {
				pk, err := rc.read(t)
				if err != nil {
					t.Fatalf("reading ack %d: %v", i, err)
				}
				if pk.FixedHeader.Type != packets.Puback || pk.PacketID != uint16(i) || pk.ReasonCode != 0 {
					t.Fatalf("ack %d = type %d id %d code %#x; want PUBACK id %d code 0", i, pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode, i)
				}
			}
			t.Logf("%d acks %v after the batch completed", n, time.Since(start))
			eventually(t, "ingest_pending back to 0", func() bool { return testutil.ToFloat64(e.b.metrics.ingestPending) == 0 })
		})
	}
}

// TestBackpressure: with ReceiveMaximum 4, at most 4 messages of a device are
// pending; the fifth waits in the read loop until acks free slots.
func TestBackpressure(t *testing.T) {
	e := startEnv(t, Config{ReceiveMaximum: 4}, "hold")
	rc := rawConnect(t, e.addr("tcp"), "dev-a", 4)
	for i := 1; i <= 10; i++ {
		rc.publish(t, uint16(i), topic.Telemetry("dev-a"), 1, `{}`)
	}
	e.ing.waitArrived(t, 4)
	time.Sleep(100 * time.Millisecond)
	if got := len(e.ing.messages()); got != 4 {
		t.Fatalf("%d messages handed to the ingester; want 4 (ReceiveMaximum)", got)
	}
	acked := 0
	deadline := time.Now().Add(testTimeout)
	for acked < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of 10 acks", acked)
		}
		e.ing.release(nil, false)
		for {
			pk, err := rc.readWithin(50 * time.Millisecond)
			if err != nil {
				break
			}
			acked++
			if pk.PacketID != uint16(acked) {
				t.Fatalf("ack %d has id %d", acked, pk.PacketID)
			}
		}
		if n := testutil.ToFloat64(e.b.metrics.ingestPending); n > 4 {
			t.Fatalf("ingest_pending = %v; want at most 4", n)
		}
	}
}

func TestTelemetryRefused(t *testing.T) {
	tests := []struct {
		mode, reason string
	}{
		{"refuse", "malformed"},
		{"mismatch", "type_mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			e := startEnv(t, Config{}, tt.mode)
			c5 := connectV5(t, e.addr("tcp"), "dev-a")
			pr, err := c5.publish(t, topic.Telemetry("dev-a"), 1, `[1,2`)
			if err == nil || pr == nil || pr.ReasonCode != 0x99 {
				t.Fatalf("v5 publish = %+v, %v; want reason 0x99", pr, err)
			}
			if pr.Properties == nil || pr.Properties.ReasonString == "" {
				t.Errorf("v5 PUBACK has no reason string")
			} else {
				t.Logf("reason string: %q", pr.Properties.ReasonString)
			}
			// v3.1.1: acked and dropped, so that the client does not resend forever.
			c3 := connectV3(t, e.addr("tcp"), "dev-b")
			tok := c3.c.Publish(topic.Telemetry("dev-b"), 1, false, `[1,2`)
			if !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
				t.Fatalf("v3 publish not acked: %v", tok.Error())
			}
			// QoS 2, v5: PUBREC 0x99.
			pr, err = c5.publish(t, topic.Telemetry("dev-a"), 2, `[1,2`)
			if pr == nil || pr.ReasonCode != 0x99 {
				t.Fatalf("v5 QoS 2 publish = %+v, %v; want PUBREC 0x99", pr, err)
			}
			if got := testutil.ToFloat64(e.b.metrics.ingestRefused.WithLabelValues(tt.reason)); got != 3 {
				t.Errorf("ingest_refused_total{reason=%q} = %v; want 3", tt.reason, got)
			}
		})
	}
}

func TestTelemetryFailureDisconnectsUnacked(t *testing.T) {
	e := startEnv(t, Config{}, "fail")
	c5 := connectV5(t, e.addr("tcp"), "dev-a")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	pr, err := c5.c.Publish(ctx, &paho.Publish{Topic: topic.Telemetry("dev-a"), QoS: 1, Payload: []byte(`{}`)})
	if err == nil {
		t.Fatalf("v5 publish acked (%+v) after an ingest failure", pr)
	}
	c5.waitDisconnected(t)

	c3 := connectV3(t, e.addr("tcp"), "dev-b")
	tok := c3.c.Publish(topic.Telemetry("dev-b"), 1, false, `{}`)
	c3.waitLost(t)
	if tok.WaitTimeout(100*time.Millisecond) && tok.Error() == nil {
		t.Fatal("v3 publish acked after an ingest failure")
	}
	if got := testutil.ToFloat64(e.b.metrics.ingestFailed); got != 2 {
		t.Errorf("ingest_failed_total = %v; want 2", got)
	}
}

func TestQoS0AndQoS2Telemetry(t *testing.T) {
	e := startEnv(t, Config{}, "ok")
	c := connectV5(t, e.addr("tcp"), "dev-a")
	if _, err := c.publish(t, topic.Telemetry("dev-a"), 0, `{"q":0}`); err != nil {
		t.Fatal(err)
	}
	pr, err := c.publish(t, topic.Telemetry("dev-a"), 2, `{"q":2}`)
	if err != nil || pr.ReasonCode != 0 {
		t.Fatalf("QoS 2 publish = %+v, %v", pr, err)
	}
	e.ing.waitArrived(t, 2)
	got := e.ing.messages()
	if len(got) != 2 || got[0].payload != `{"q":0}` || got[1].payload != `{"q":2}` || got[1].device != "dev-a" {
		t.Fatalf("ingested %+v", got)
	}
}

func TestACL(t *testing.T) {
	e := startEnv(t, Config{}, "ok")
	a := connectV5(t, e.addr("tcp"), "dev-a")

	// Publishing on another device's or a hub → device topic is denied.
	for _, tt := range []struct{ topic, reason string }{
		{topic.Telemetry("dev-b"), DenyForeignDevice},
		{topic.Command("dev-a", "reboot"), DenyWrongDirection},
		{"devices/dev-a/nonsense", DenyUnknownTopic},
		{"other/topic", DenyOutsideDevice},
	} {
		pr, err := a.publish(t, tt.topic, 1, `{}`)
		if pr == nil || pr.ReasonCode != 0x87 {
			t.Errorf("publish %s = %+v, %v; want 0x87", tt.topic, pr, err)
		}
		if got := testutil.ToFloat64(e.b.metrics.aclDenials.WithLabelValues("publish", tt.reason)); got != 1 {
			t.Errorf("acl_denials_total{publish,%s} = %v; want 1", tt.reason, got)
		}
	}
	// Own device → hub topics pass (and are not ingested).
	for _, name := range []string{topic.Status("dev-a"), topic.Alerts("dev-a"), topic.TwinReported("dev-a"), topic.Response("dev-a", "c1"), "devices/dev-a/ota/progress"} {
		if pr, err := a.publish(t, name, 1, `{}`); err != nil || pr.ReasonCode != 0 {
			t.Errorf("publish %s = %+v, %v; want success", name, pr, err)
		}
	}
	if n := len(e.ing.messages()); n != 0 {
		t.Errorf("%d non-telemetry messages ingested", n)
	}

	filters := []string{
		"devices/dev-a/commands/+", "devices/dev-a/twin/desired", "devices/dev-a/ota/#", "devices/dev-a/#",
		"devices/dev-b/commands/#", "devices/+/commands/#", "#", "devices/dev-a/telemetry", "$share/g/devices/dev-a/commands/+",
	}
	want := []byte{1, 1, 1, 1, 0x87, 0x87, 0x87, 0x87, 0x87}
	if got := a.subscribe(t, filters...); string(got) != string(want) {
		t.Errorf("SUBACK codes = %x; want %x", got, want)
	}
	if got := testutil.ToFloat64(e.b.metrics.aclDenials.WithLabelValues("subscribe", DenyForeignDevice)); got != 1 {
		t.Errorf("acl_denials_total{subscribe,foreign_device} = %v; want 1", got)
	}
	if got := testutil.ToFloat64(e.b.metrics.aclDenials.WithLabelValues("subscribe", DenyOutsideDevice)); got != 3 {
		t.Errorf("acl_denials_total{subscribe,outside_device} = %v; want 3", got)
	}

	// Commands reach their device only; status is not echoed back.
	b := connectV5(t, e.addr("tcp"), "dev-b")
	b.subscribe(t, "devices/dev-b/#")
	if err := e.b.Publish(topic.Command("dev-a", "reboot"), []byte(`{"id":"1"}`), false, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-a.received:
		if p.Topic != topic.Command("dev-a", "reboot") {
			t.Fatalf("dev-a received %s", p.Topic)
		}
	case <-time.After(testTimeout):
		t.Fatal("dev-a did not receive its command")
	}
	if _, err := b.publish(t, topic.Status("dev-b"), 1, "online"); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-b.received:
		t.Fatalf("dev-b received %s", p.Topic)
	case p := <-a.received:
		t.Fatalf("dev-a received %s", p.Topic)
	case <-time.After(100 * time.Millisecond):
	}

	// MQTT 3.1.1: a denied SUBSCRIBE gets 0x80; a denied QoS 1 PUBLISH closes the connection.
	c3 := connectV3(t, e.addr("tcp"), "dev-c")
	tok := c3.c.SubscribeMultiple(map[string]byte{"devices/dev-a/commands/#": 1}, nil)
	if !tok.WaitTimeout(testTimeout) {
		t.Fatal("v3 subscribe timed out")
	}
	if codes := tok.(interface{ Result() map[string]byte }).Result(); codes["devices/dev-a/commands/#"] != 0x80 {
		t.Errorf("v3 SUBACK = %v; want 0x80", codes)
	}
	c3.c.Publish(topic.Telemetry("dev-a"), 1, false, `{}`)
	c3.waitLost(t)
}

func TestAuthRefusals(t *testing.T) {
	e := startEnv(t, Config{}, "ok")
	tests := []struct {
		name         string
		id, user, pw string
		v5, v3       byte
		reason       string
	}{
		{"anonymous", "dev-a", "", "", 0x87, 0x05, ReasonAnonymous},
		{"wrong password", "dev-a", "dev-a", "nope", 0x86, 0x04, "bad_password"},
		{"disabled device", "disabled", "disabled", "pw-d", 0x87, 0x05, "disabled"},
		{"client id not the device", "dev-x", "dev-a", "pw-a", 0x85, 0x02, ReasonClientIDMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := testutil.ToFloat64(e.b.metrics.refusals.WithLabelValues(tt.reason))
			cp := &paho.Connect{ClientID: tt.id, CleanStart: true}
			if tt.user != "" {
				cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = tt.user, true, []byte(tt.pw), true
			}
			_, ca, err := dialV5(t, dialTCP(t, e.addr("tcp")), cp)
			if err == nil || ca == nil || ca.ReasonCode != tt.v5 {
				t.Errorf("v5 connect = %+v, %v; want CONNACK %#x", ca, err, tt.v5)
			}
			_, err = dialV3(t, "tcp://"+e.addr("tcp"), tt.id, tt.user, tt.pw, nil)
			wantErr := map[byte]string{0x04: "bad user name or password", 0x05: "not Authorized", 0x02: "identifier rejected"}[tt.v3]
			if err == nil || err.Error() != wantErr {
				t.Errorf("v3 connect = %v; want %q (0x%02x)", err, wantErr, tt.v3)
			}
			if got := testutil.ToFloat64(e.b.metrics.refusals.WithLabelValues(tt.reason)) - before; got != 2 {
				t.Errorf("connect_refusals_total{reason=%q} grew by %v; want 2", tt.reason, got)
			}
		})
	}
	if got := testutil.ToFloat64(e.b.metrics.connects); got != 0 {
		t.Errorf("connects_total = %v; want 0", got)
	}
}

// TestAuthUnavailable: an Authenticator that does not answer in time, or a
// full authentication queue, answers "server unavailable".
func TestAuthUnavailable(t *testing.T) {
	e := startEnv(t, Config{MaxConcurrentAuth: 1}, "ok", func(b *Broker) { b.authTimeout = 300 * time.Millisecond })
	results := make(chan *paho.Connack, 2)
	for i := 0; i < 2; i++ {
		conn := dialTCP(t, e.addr("tcp"))
		go func() {
			_, ca, _ := dialV5(t, conn, &paho.Connect{ClientID: "slow", CleanStart: true, Username: "slow", UsernameFlag: true, Password: []byte("pw-s"), PasswordFlag: true})
			results <- ca
		}()
	}
	for i := 0; i < 2; i++ {
		select {
		case ca := <-results:
			if ca == nil || ca.ReasonCode != 0x88 {
				t.Errorf("connect = %+v; want CONNACK 0x88", ca)
			}
		case <-time.After(testTimeout):
			t.Fatal("no CONNACK")
		}
	}
	if got := testutil.ToFloat64(e.b.metrics.refusals.WithLabelValues(ReasonAuthUnavailable)); got != 2 {
		t.Errorf("connect_refusals_total{auth_unavailable} = %v; want 2", got)
	}
}

func TestWillOnForeignTopicRefused(t *testing.T) {
	e := startEnv(t, Config{}, "ok")
	_, ca, err := dialV5(t, dialTCP(t, e.addr("tcp")), &paho.Connect{
		ClientID: "dev-a", CleanStart: true, Username: "dev-a", UsernameFlag: true, Password: []byte("pw-a"), PasswordFlag: true,
		WillMessage: &paho.WillMessage{Topic: topic.TwinDesired("dev-b"), Payload: []byte(`{"state":{"evil":1}}`), Retain: true},
	})
	if err == nil || ca == nil || ca.ReasonCode != 0x87 {
		t.Fatalf("connect with a foreign will = %+v, %v; want 0x87", ca, err)
	}
	// A will on its own status is fine.
	_, _, err = dialV5(t, dialTCP(t, e.addr("tcp")), &paho.Connect{
		ClientID: "dev-a", CleanStart: true, Username: "dev-a", UsernameFlag: true, Password: []byte("pw-a"), PasswordFlag: true,
		WillMessage: &paho.WillMessage{Topic: topic.Status("dev-a"), Payload: []byte("offline"), Retain: true},
	})
	if err != nil {
		t.Fatalf("connect with own status will: %v", err)
	}
}

func TestDisconnectAndPresence(t *testing.T) {
	e := startEnv(t, Config{}, "ok")
	c := connectV5(t, e.addr("tcp"), "dev-a")
	// mochi marks the session established just after writing the CONNACK.
	eventually(t, "dev-a online", func() bool {
		return e.b.Online("dev-a") && e.b.OnlineCount() == 1 && testutil.ToFloat64(e.b.metrics.connections.WithLabelValues("tcp")) == 1
	})
	e.b.Disconnect("dev-a")
	c.waitDisconnected(t)
	select {
	case d := <-c.serverDisc:
		if d.ReasonCode != 0x98 {
			t.Errorf("DISCONNECT reason %#x; want 0x98", d.ReasonCode)
		}
	default:
		t.Error("no DISCONNECT packet before the close")
	}
	eventually(t, "dev-a offline", func() bool { return !e.b.Online("dev-a") })
	if got := strings.Join(e.pres.list(), " "); got != "+dev-a -dev-a" {
		t.Errorf("presence events = %q; want %q", got, "+dev-a -dev-a")
	}
	eventually(t, "connections{tcp} = 0", func() bool {
		return testutil.ToFloat64(e.b.metrics.connections.WithLabelValues("tcp")) == 0
	})

	// MQTT 3.1.1 too.
	c3 := connectV3(t, e.addr("tcp"), "dev-b")
	e.b.Disconnect("dev-b")
	c3.waitLost(t)
}

// TestSessionTakeoverPresence: a second connection with the same client id
// takes the session over; the device must stay online.
func TestSessionTakeoverPresence(t *testing.T) {
	e := startEnv(t, Config{}, "ok")
	for i := 0; i < 5; i++ {
		first := connectV5(t, e.addr("tcp"), "dev-a")
		second := connectV5(t, e.addr("tcp"), "dev-a")
		first.waitDisconnected(t)
		time.Sleep(20 * time.Millisecond)
		if !e.b.Online("dev-a") {
			t.Fatalf("round %d: dev-a offline after a takeover; events %v", i, e.pres.list())
		}
		ev := e.pres.list()
		if ev[len(ev)-1] != "+dev-a" {
			t.Fatalf("round %d: last presence event %q; want +dev-a (%v)", i, ev[len(ev)-1], ev)
		}
		second.c.Disconnect(&paho.Disconnect{})
		eventually(t, "dev-a offline", func() bool { return !e.b.Online("dev-a") })
	}
}

func TestRetainedStatusSurvives(t *testing.T) {
	e := startEnv(t, Config{}, "ok")
	c := connectV5(t, e.addr("tcp"), "dev-a")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := c.c.Publish(ctx, &paho.Publish{Topic: topic.Status("dev-a"), QoS: 1, Retain: true, Payload: []byte("online")}); err != nil {
		t.Fatal(err)
	}
	c.c.Disconnect(&paho.Disconnect{})
	// A retained twin/desired stamped 30 days ago (mochi's default would
	// expire it after 24 h).
	old := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true, Qos: 1},
		TopicName:   topic.TwinDesired("dev-a"), Payload: []byte(`{"version":1}`),
		Created: time.Now().Add(-30 * 24 * time.Hour).Unix(), Origin: "inline", ProtocolVersion: 5,
	}
	e.b.server.Topics.RetainMessage(old)
	time.Sleep(1500 * time.Millisecond) // mochi's expiry sweep runs every second

	retained := func(filter string) []string {
		var got []string
		for _, pk := range e.b.server.Topics.Messages(filter) {
			got = append(got, pk.TopicName+"="+string(pk.Payload))
		}
		return got
	}
	if got := retained(topic.Status("dev-a")); len(got) != 1 || got[0] != topic.Status("dev-a")+"=online" {
		t.Errorf("retained status = %v", got)
	}
	// The device gets its old desired twin after reconnecting.
	c2 := connectV5(t, e.addr("tcp"), "dev-a")
	c2.subscribe(t, topic.TwinDesired("dev-a"))
	select {
	case p := <-c2.received:
		if string(p.Payload) != `{"version":1}` {
			t.Errorf("desired twin payload %q", p.Payload)
		}
	case <-time.After(testTimeout):
		t.Fatal("retained twin/desired (30 days old) not delivered")
	}
}

func TestOpenPolicy(t *testing.T) {
	e := startEnv(t, Config{OpenPolicy: true}, "ok")
	sub, _, err := dialV5(t, dialTCP(t, e.addr("tcp")), &paho.Connect{ClientID: "anything goes", CleanStart: true})
	if err != nil {
		t.Fatalf("anonymous connect: %v", err)
	}
	if got := sub.subscribe(t, "#"); got[0] != 1 {
		t.Fatalf("subscribe # = %x", got)
	}
	pub, _, err := dialV5(t, dialTCP(t, e.addr("tcp")), &paho.Connect{ClientID: "pub", CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"foo/bar", topic.Status("x"), topic.Telemetry("sensor-1")} {
		if _, err := pub.publish(t, name, 1, "hi"); err != nil {
			t.Fatalf("publish %s: %v", name, err)
		}
	}
	for _, want := range []string{"foo/bar", topic.Status("x")} {
		select {
		case p := <-sub.received:
			if p.Topic != want {
				t.Errorf("received %s; want %s", p.Topic, want)
			}
		case <-time.After(testTimeout):
			t.Fatalf("%s not delivered", want)
		}
	}
	got := e.ing.messages()
	if len(got) != 1 || got[0].device != "sensor-1" {
		t.Fatalf("ingested %+v; want one message of sensor-1", got)
	}
	// mochi's inline client id stays reserved.
	if _, ca, err := dialV5(t, dialTCP(t, e.addr("tcp")), &paho.Connect{ClientID: "inline", CleanStart: true}); err == nil || ca == nil || ca.ReasonCode != 0x85 {
		t.Fatalf("connect as %q = %+v, %v; want 0x85", "inline", ca, err)
	}
	if err := e.b.Publish("foo/after", []byte("x"), false, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-sub.received:
		if p.Topic != "foo/after" {
			t.Errorf("received %s", p.Topic)
		}
	case <-time.After(testTimeout):
		t.Fatal("hub publish not delivered")
	}
}

func TestShutdown(t *testing.T) {
	e := startEnv(t, Config{}, "hold")
	e.shutdownErrOK = true
	c := connectV5(t, e.addr("tcp"), "dev-a")
	go c.c.Publish(context.Background(), &paho.Publish{Topic: topic.Telemetry("dev-a"), QoS: 1, Payload: []byte(`{}`)})
	e.ing.waitArrived(t, 1)

	// A pending ingest that never completes bounds Shutdown by its ctx.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := e.b.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a stuck ingest = %v; want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Shutdown took %v", d)
	}
	// Later completion is harmless; a second Shutdown returns the first's result.
	e.ing.release(nil, false)
	if err2 := e.b.Shutdown(context.Background()); !errors.Is(err2, context.DeadlineExceeded) {
		t.Fatalf("second Shutdown = %v; want the first's result", err2)
	}
	if err := e.b.Publish("x", nil, false, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Shutdown = %v; want ErrClosed", err)
	}
	if conn, err := net.DialTimeout("tcp", e.addr("tcp"), time.Second); err == nil {
		conn.Close()
		t.Fatal("listener still accepting after Shutdown")
	}
}

func TestShutdownDrainsAcks(t *testing.T) {
	reg := startEnv(t, Config{}, "hold")
	c := connectV5(t, reg.addr("tcp"), "dev-a")
	acked := make(chan error, 1)
	go func() {
		_, err := c.publish(t, topic.Telemetry("dev-a"), 1, `{}`)
		acked <- err
	}()
	reg.ing.waitArrived(t, 1)
	done := make(chan error, 1)
	go func() { done <- reg.b.Shutdown(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	reg.ing.release(nil, false)
	if err := <-acked; err != nil {
		t.Fatalf("pending message not acked during Shutdown: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

func TestStartErrors(t *testing.T) {
	e := startEnv(t, Config{}, "ok")
	b2, err := New(Config{TCPAddr: "127.0.0.1:0", WSAddr: e.addr("tcp"), Logger: testLogger()}, e.auth, e.ing, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = b2.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "ws") {
		t.Fatalf("Start on a taken port = %v; want a bind error naming the ws listener", err)
	}
	if err := b2.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown after a failed Start: %v", err)
	}

	b3, err := New(Config{TCPAddr: "127.0.0.1:0", Logger: testLogger()}, e.auth, e.ing, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b3.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown before Start: %v", err)
	}
	if err := b3.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Shutdown = %v; want ErrClosed", err)
	}
}

// TestShutdownStopsGoroutines: after Shutdown (and the clients' closes) no
// broker goroutine is left.
func TestShutdownStopsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		e := &env{reg: nil, auth: newFakeAuth(testPasswords), ing: newRecIngester("ok")}
		b, err := New(Config{TCPAddr: "127.0.0.1:0", WSAddr: "127.0.0.1:0", Logger: testLogger()}, e.auth, e.ing, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		rc := rawConnect(t, b.Addr("tcp").String(), "dev-a", 5)
		rc.publish(t, 1, topic.Telemetry("dev-a"), 1, `{}`)
		if _, err := rc.read(t); err != nil {
			t.Fatal(err)
		}
		c3, err := dialV3(t, "ws://"+b.Addr("ws").String()+WSPath, "dev-b", "dev-b", "pw-b", nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		c3.waitLost(t)
		rc.conn.Close()
	}()
	eventually(t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= before })
}
