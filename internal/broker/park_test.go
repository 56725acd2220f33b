package broker

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fieldhub/fieldhub/topic"
)

// parkIdle is the IdleAfter of the parking tests: short, so that clients
// park between the test's steps.
const parkIdle = 30 * time.Millisecond

// openConnect connects a raw client without credentials (open policy).
func openConnect(t *testing.T, addr, id string, version byte, keepalive uint16, will *packets.ConnectParams) *rawClient {
	t.Helper()
	rc := &rawClient{conn: dialTCP(t, addr), version: version}
	rc.r = bufio.NewReader(rc.conn)
	t.Cleanup(func() { rc.conn.Close() })
	cp := packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: keepalive, ClientIdentifier: id}
	if will != nil {
		cp.WillFlag, cp.WillTopic, cp.WillPayload = true, will.WillTopic, will.WillPayload
	}
	rc.send(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, Connect: cp})
	if pk, err := rc.read(t); err != nil || pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 {
		t.Fatalf("connect %s: %+v reason %#x, %v", id, pk.FixedHeader, pk.ReasonCode, err)
	}
	return rc
}

func (e *env) parked(t *testing.T) float64 {
	return e.counter(t, "fieldhub_mqtt_connections_parked")
}

func (e *env) resumes(t *testing.T, cause string) float64 {
	return e.counter(t, "fieldhub_mqtt_connection_resumes_total", "cause", cause)
}

// TestParkedConnections: idle clients hold no goroutine, and a parked
// client still publishes (its packet wakes it), receives (the writer needs
// no reader) and answers pings, many times over.
func TestParkedConnections(t *testing.T) {
	const n = 40
	e := startEnv(t, Config{OpenPolicy: true, IdleAfter: parkIdle}, "ok")
	runtime.GC()
	before := runtime.NumGoroutine()

	clients := make([]*rawClient, n)
	for i := range clients {
		clients[i] = openConnect(t, e.addr("tcp"), fmt.Sprintf("park-%02d", i), byte(4+i%2), 30, nil)
	}
	eventually(t, "all parked", func() bool { return e.parked(t) == n })
	// Unparked, each connection would hold a reader and a writer.
	if g := runtime.NumGoroutine(); g > before+n/4 {
		t.Errorf("%d goroutines with %d parked connections; %d before they connected", g, n, before)
	}

	sub := clients[0]
	sub.send(t, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "fan/+", Qos: 1}},
	})
	if pk, err := sub.read(t); err != nil || pk.FixedHeader.Type != packets.Suback {
		t.Fatalf("suback: %+v, %v", pk.FixedHeader, err)
	}

	for round := 1; round <= 3; round++ {
		eventually(t, "all parked again", func() bool { return e.parked(t) == n })
		for i, c := range clients {
			c.publish(t, uint16(round), topic.Telemetry(fmt.Sprintf("park-%02d", i)), 1, fmt.Sprintf(`{"round":%d}`, round))
		}
		for i, c := range clients {
			pk, err := c.read(t)
			if err != nil || pk.FixedHeader.Type != packets.Puback || pk.PacketID != uint16(round) {
				t.Fatalf("round %d client %d: %+v id %d, %v; want PUBACK %d", round, i, pk.FixedHeader, pk.PacketID, err, round)
			}
		}
		// Delivery to a parked subscriber.
		eventually(t, "subscriber parked", func() bool { return e.parked(t) == n })
		clients[1].publish(t, 0, fmt.Sprintf("fan/%d", round), 0, "to the parked one")
		pk, err := sub.read(t)
		if err != nil || pk.FixedHeader.Type != packets.Publish || pk.TopicName != fmt.Sprintf("fan/%d", round) {
			t.Fatalf("round %d: subscriber got %+v %q, %v", round, pk.FixedHeader, pk.TopicName, err)
		}
	}
	if got := len(e.ing.messages()); got != 3*n {
		t.Errorf("ingested %d messages; want %d", got, 3*n)
	}
	if r := e.resumes(t, "readable"); r < 3*n {
		t.Errorf("resumes{readable} = %v; want at least %d", r, 3*n)
	}
	if r := e.resumes(t, "deadline"); r != 0 {
		t.Errorf("resumes{deadline} = %v; want 0", r)
	}
}

// TestParkedKeepalive: a parked client that stays silent past 1.5 × its
// keepalive is disconnected and its will is published.
func TestParkedKeepalive(t *testing.T) {
	e := startEnv(t, Config{OpenPolicy: true, IdleAfter: parkIdle}, "ok")
	watcher := openConnect(t, e.addr("tcp"), "watcher", 4, 30, nil)
	watcher.send(t, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "wills/#", Qos: 0}},
	})
	if pk, err := watcher.read(t); err != nil || pk.FixedHeader.Type != packets.Suback {
		t.Fatalf("suback: %+v, %v", pk.FixedHeader, err)
	}

	silent := openConnect(t, e.addr("tcp"), "silent", 4, 1, &packets.ConnectParams{WillTopic: "wills/silent", WillPayload: []byte("gone")})
	start := time.Now()
	eventually(t, "both parked", func() bool { return e.parked(t) == 2 })

	if _, err := silent.readWithin(testTimeout); err == nil {
		t.Fatal("silent client got a packet; want the connection closed")
	}
	if d := time.Since(start); d < time.Second || d > 3*time.Second {
		t.Errorf("closed after %v; want 1.5 s (keepalive 1 s)", d)
	}
	pk, err := watcher.read(t)
	if err != nil || pk.TopicName != "wills/silent" || string(pk.Payload) != "gone" {
		t.Fatalf("watcher got %q %q, %v; want the will", pk.TopicName, pk.Payload, err)
	}
	if r := e.resumes(t, "deadline"); r != 1 {
		t.Errorf("resumes{deadline} = %v; want 1", r)
	}
}

// TestParkedServerClose: a parked client is ended by the server (device
// disconnected, session taken over, broker shut down) as an active one is.
func TestParkedServerClose(t *testing.T) {
	e := startEnv(t, Config{IdleAfter: parkIdle}, "ok")
	a := connectV5(t, e.addr("tcp"), "dev-a")
	eventually(t, "dev-a parked", func() bool { return e.parked(t) == 1 })
	e.b.Disconnect("dev-a")
	a.waitDisconnected(t)
	select {
	case d := <-a.serverDisc:
		if d.ReasonCode != 0x98 {
			t.Errorf("DISCONNECT reason %#x; want 0x98", d.ReasonCode)
		}
	default:
		t.Error("no DISCONNECT packet before the close")
	}
	eventually(t, "dev-a offline", func() bool { return !e.b.Online("dev-a") && e.parked(t) == 0 })

	// Takeover of a parked session.
	b1 := rawConnect(t, e.addr("tcp"), "dev-b", 4)
	eventually(t, "dev-b parked", func() bool { return e.parked(t) == 1 })
	b2 := rawConnect(t, e.addr("tcp"), "dev-b", 4)
	waitClosed(t, b1, "first dev-b connection after the takeover")
	b2.publish(t, 7, topic.Telemetry("dev-b"), 1, `{"x":1}`)
	if pk, err := b2.read(t); err != nil || pk.FixedHeader.Type != packets.Puback {
		t.Fatalf("dev-b after takeover: %+v, %v", pk.FixedHeader, err)
	}
	if !e.b.Online("dev-b") {
		t.Error("dev-b offline after the takeover")
	}

	// Shutdown ends parked sessions and every goroutine they had.
	c := connectV5(t, e.addr("tcp"), "dev-c")
	eventually(t, "dev-b and dev-c parked", func() bool { return e.parked(t) == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := e.b.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	c.waitDisconnected(t)
	waitClosed(t, b2, "dev-b after the shutdown")
}

// waitClosed reads until the server closes rc (a DISCONNECT may come
// first).
func waitClosed(t *testing.T, rc *rawClient, what string) {
	t.Helper()
	for range 3 {
		pk, err := rc.readWithin(testTimeout)
		if err != nil {
			return
		}
		if pk.FixedHeader.Type != packets.Disconnect {
			t.Errorf("%s: got packet type %d; want DISCONNECT or the close", what, pk.FixedHeader.Type)
		}
	}
	t.Errorf("%s: still open", what)
}

// splitConn delays the second half of one write, so a TLS record arrives
// in two parts with the server parked in between.
type splitConn struct {
	net.Conn
	split atomic.Bool
	pause time.Duration
}

func (c *splitConn) Write(b []byte) (int, error) {
	if !c.split.CompareAndSwap(true, false) || len(b) < 2 {
		return c.Conn.Write(b)
	}
	n, err := c.Conn.Write(b[:len(b)/2])
	if err != nil {
		return n, err
	}
	time.Sleep(c.pause)
	m, err := c.Conn.Write(b[len(b)/2:])
	return n + m, err
}

// TestParkedTLS: TLS connections park too, including in the middle of a
// record: crypto/tls keeps the part it read and the publish goes through.
func TestParkedTLS(t *testing.T) {
	p := newTestPKI(t, "park CA")
	cfg := p.brokerConfig()
	cfg.IdleAfter = parkIdle
	e := startEnv(t, cfg, "ok")
	raw := &splitConn{Conn: dialTCP(t, e.addr("tls")), pause: 10 * parkIdle}
	vc, _, err := dialV5(t, tls.Client(raw, p.clientTLS(p.clientCert(t, "dev-a"))), &paho.Connect{ClientID: "dev-a", CleanStart: true})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	eventually(t, "dev-a parked", func() bool { return e.parked(t) == 1 })
	woken := e.resumes(t, "readable")

	raw.split.Store(true)
	if _, err := vc.publish(t, topic.Telemetry("dev-a"), 1, `{"t":21.5}`); err != nil {
		t.Fatalf("publish split across a park: %v", err)
	}
	// Woken by the first half, parked mid-record, woken by the second.
	if r := e.resumes(t, "readable"); r < woken+2 {
		t.Errorf("resumes{readable} went %v -> %v; want two wake-ups", woken, r)
	}
	msgs := e.ing.messages()
	if len(msgs) != 1 || msgs[0].device != "dev-a" || msgs[0].payload != `{"t":21.5}` {
		t.Errorf("ingested %+v; want dev-a's one message", msgs)
	}
	eventually(t, "dev-a parked again", func() bool { return e.parked(t) == 1 })
	for i := range 5 {
		if _, err := vc.publish(t, topic.Telemetry("dev-a"), 1, fmt.Sprintf(`{"i":%d}`, i)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		time.Sleep(2 * parkIdle)
	}
	if got := len(e.ing.messages()); got != 6 {
		t.Errorf("ingested %d messages; want 6", got)
	}
}

// TestParkingOff: with a negative IdleAfter nothing parks.
func TestParkingOff(t *testing.T) {
	e := startEnv(t, Config{IdleAfter: -1}, "ok")
	a := rawConnect(t, e.addr("tcp"), "dev-a", 4)
	time.Sleep(5 * parkIdle)
	if p := e.parked(t); p != 0 {
		t.Errorf("parked = %v; want 0", p)
	}
	a.publish(t, 1, topic.Telemetry("dev-a"), 1, `{}`)
	if pk, err := a.read(t); err != nil || pk.FixedHeader.Type != packets.Puback {
		t.Fatalf("publish: %+v, %v", pk.FixedHeader, err)
	}
}
