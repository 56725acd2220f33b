package hub_test

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/fieldhub/fieldhub/topic"
)

// TestWillOnCutConnection: a device whose TCP connection is cut without a
// DISCONNECT goes offline at once, and its retained will is published.
func TestWillOnCutConnection(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	d := h.addDevice("will-cut", "password")
	other := h.addDevice("will-other", "password")
	if _, _, err := dial5(t, h.Addr("mqtt").String(), nil, other.ID, other.ID, other.Password); err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", h.Addr("mqtt").String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{
		ClientID: d.ID, KeepAlive: 2, CleanStart: true,
		Username: d.ID, UsernameFlag: true, Password: []byte(d.Password), PasswordFlag: true,
		WillMessage: &paho.WillMessage{Topic: topic.Status(d.ID), Payload: []byte("offline"), QoS: 1, Retain: true},
	})
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("connect with a will: %v, %+v", err, ack)
	}
	if rc := publish5(t, c, topic.Status(d.ID), []byte("online")); rc != 0 {
		t.Fatalf("status online: PUBACK 0x%02x", rc)
	}
	eventually(t, 5*time.Second, "online with status online", func() bool {
		s := h.device(d.ID)
		return s.Online && s.Status == "online" && s.LastSeen != nil
	})
	if n := h.counter("fieldhub_devices_online"); n != 2 {
		t.Errorf("fieldhub_devices_online = %v; want 2", n)
	}
	cut := time.Now()
	conn.Close() // no DISCONNECT: the hub sees the socket close
	eventually(t, 5*time.Second, "offline with the will's status", func() bool {
		s := h.device(d.ID)
		return !s.Online && s.Status == "offline"
	})
	s := h.device(d.ID)
	if s.LastSeen == nil || s.LastSeen.Before(cut.Add(-time.Second)) {
		t.Errorf("last_seen %v; want about %v", s.LastSeen, cut)
	}
	if n := h.counter("fieldhub_devices_online"); n != 1 {
		t.Errorf("fieldhub_devices_online = %v; want 1", n)
	}
	// The device list shows it.
	var list struct {
		Devices []deviceState `json:"devices"`
	}
	h.api("GET", "/api/v1/devices?prefix=will-cut", nil, &list)
	if len(list.Devices) != 1 || list.Devices[0].Online || list.Devices[0].Status != "offline" {
		t.Errorf("device list = %+v", list.Devices)
	}
}

// freezer is a TCP proxy that can stop forwarding without closing either
// side: the connection goes silent, as when a network path dies.
type freezer struct {
	ln     net.Listener
	target string
	frozen atomic.Bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target, stop: make(chan struct{})}
	f.wg.Add(1)
	go f.serve()
	t.Cleanup(func() {
		close(f.stop)
		ln.Close()
		f.wg.Wait()
	})
	return f
}

func (f *freezer) serve() {
	defer f.wg.Done()
	for {
		in, err := f.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", f.target)
		if err != nil {
			in.Close()
			continue
		}
		f.wg.Add(3)
		go f.pipe(out, in)
		go f.pipe(in, out)
		go func() {
			defer f.wg.Done()
			<-f.stop
			in.Close()
			out.Close()
		}()
	}
}

// pipe copies until frozen, then holds both sockets open until stop.
func (f *freezer) pipe(dst, src net.Conn) {
	defer f.wg.Done()
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		if f.frozen.Load() {
			<-f.stop
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err == io.EOF && !f.frozen.Load() {
				// A clean close before freezing is passed on.
				dst.(*net.TCPConn).CloseWrite()
			}
			return
		}
	}
}

// TestKeepaliveTimeout: a connection that goes silent (no FIN, no RST) is
// closed by the hub after 1.5 × the keepalive, the device goes offline
// and its will (MQTT 3.1.1 here) is published.
func TestKeepaliveTimeout(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	d := h.addDevice("will-silent", "password")
	f := newFreezer(t, h.Addr("mqtt").String())
	o := mqtt3.NewClientOptions().AddBroker("tcp://"+f.ln.Addr().String()).SetClientID(d.ID).
		SetUsername(d.ID).SetPassword(d.Password).SetProtocolVersion(4).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(10*time.Second).
		SetKeepAlive(2*time.Second).SetPingTimeout(time.Second).
		SetWill(topic.Status(d.ID), "offline", 1, true).
		SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt3.ClientOptions) (net.Conn, error) {
			return net.DialTimeout("tcp", u.Host, 10*time.Second)
		})
	c := mqtt3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	if tok := c.Publish(topic.Status(d.ID), 1, true, "online"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("status: %v", tok.Error())
	}
	eventually(t, 5*time.Second, "online", func() bool { s := h.device(d.ID); return s.Online && s.Status == "online" })
	frozen := time.Now()
	f.frozen.Store(true)
	// mochi allows keepalive + keepalive/2 = 3 s of silence.
	eventually(t, 10*time.Second, "offline after the keepalive", func() bool {
		s := h.device(d.ID)
		return !s.Online && s.Status == "offline"
	})
	if d := time.Since(frozen); d < 2*time.Second {
		t.Errorf("offline %v after the connection went silent; want after the 3 s keepalive allowance", d)
	}
}
