package extbroker

import (
	"bufio"
	"context"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// TestSessionAcksInReceiveOrder plays the broker's side of one connection
// with paho's packet codec: whatever order the hub finishes storing
// messages in, the PUBACKs go out in the order the messages came, and a
// message not yet stored holds back the acknowledgements behind it.
func TestSessionAcksInReceiveOrder(t *testing.T) {
	hubSide, brokerSide := net.Pipe()
	defer brokerSide.Close()
	br := bufio.NewReader(brokerSide)
	const n = 200
	var mu sync.Mutex
	acks := map[uint16]func(){}
	got := make(chan struct{}, n)
	handler := func(_ *session, p *packets.Publish, ack func()) {
		mu.Lock()
		acks[p.PacketID] = ack
		mu.Unlock()
		got <- struct{}{}
	}
	type dialed struct {
		s   *session
		err error
	}
	dch := make(chan dialed, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, _, err := dial(ctx, hubSide, &packets.Connect{ProtocolName: "MQTT", ProtocolVersion: 5, ClientID: "hub", Properties: &packets.Properties{}}, handler)
		dch <- dialed{s, err}
	}()
	if pkt, err := packets.ReadPacket(br); err != nil || pkt.Type != packets.CONNECT {
		t.Fatalf("expected CONNECT: %v %v", pkt, err)
	}
	if _, err := (&packets.Connack{Properties: &packets.Properties{}}).WriteTo(brokerSide); err != nil {
		t.Fatal(err)
	}
	d := <-dch
	if d.err != nil {
		t.Fatal(d.err)
	}
	defer func() {
		brokerSide.Close() // net.Pipe: nobody would read the DISCONNECT
		d.s.Disconnect(0)
	}()
	go func() {
		for i := 1; i <= n; i++ {
			p := &packets.Publish{Topic: "devices/d/telemetry", QoS: 1, PacketID: uint16(i), Payload: []byte("{}"), Properties: &packets.Properties{}}
			if _, err := p.WriteTo(brokerSide); err != nil {
				return
			}
		}
	}()
	for range n {
		<-got
	}
	// Acknowledge everything but message 50, in random order.
	order := rand.Perm(n)
	for _, i := range order {
		if i+1 != 50 {
			mu.Lock()
			ack := acks[uint16(i+1)]
			mu.Unlock()
			go ack()
		}
	}
	readAcks := func(from, to int) {
		t.Helper()
		for want := from; want <= to; want++ {
			brokerSide.SetReadDeadline(time.Now().Add(5 * time.Second))
			pkt, err := packets.ReadPacket(br)
			if err != nil {
				t.Fatalf("waiting for PUBACK %d: %v", want, err)
			}
			pa, ok := pkt.Content.(*packets.Puback)
			if !ok || int(pa.PacketID) != want {
				t.Fatalf("got %s %d; want PUBACK %d", pkt.PacketType(), pkt.PacketID(), want)
			}
		}
	}
	readAcks(1, 49)
	brokerSide.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if pkt, err := packets.ReadPacket(br); err == nil {
		t.Fatalf("got %s %d while message 50 was not stored", pkt.PacketType(), pkt.PacketID())
	}
	mu.Lock()
	acks[50]()
	acks[50]() // a second call is ignored
	mu.Unlock()
	readAcks(50, n)
}
