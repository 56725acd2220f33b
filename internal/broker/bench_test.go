package broker

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fieldhub/fieldhub/internal/bench"
	"github.com/fieldhub/fieldhub/topic"
)

// groupCommitIngester completes ingests in batches every millisecond from
// one goroutine, as a group-committing store does.
type groupCommitIngester struct {
	mu    sync.Mutex
	batch []func(error)
	stop  chan struct{}
	done  chan struct{}
}

func newGroupCommitIngester() *groupCommitIngester {
	g := &groupCommitIngester{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(g.done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-g.stop:
				g.flush()
				return
			case <-t.C:
				g.flush()
			}
		}
	}()
	return g
}

func (g *groupCommitIngester) flush() {
	g.mu.Lock()
	b := g.batch
	g.batch = nil
	g.mu.Unlock()
	for _, d := range b {
		d(nil)
	}
}

func (g *groupCommitIngester) Ingest(_ string, _ []byte, done func(error)) {
	g.mu.Lock()
	g.batch = append(g.batch, done)
	g.mu.Unlock()
}

func (g *groupCommitIngester) close() {
	close(g.stop)
	<-g.done
}

// BenchmarkTelemetryQoS1 measures acked QoS 1 telemetry through the broker
// from 10 pipelining MQTT 3.1.1 connections (window 500 each), with a
// group-committing ingester.
func BenchmarkTelemetryQoS1(b *testing.B) {
	const clients, window = 10, 500
	ing := newGroupCommitIngester()
	defer ing.close()
	pw := map[string]string{}
	for i := 0; i < clients; i++ {
		pw[fmt.Sprintf("bench-%d", i)] = "pw"
	}
	br, err := New(Config{TCPAddr: "127.0.0.1:0", Logger: testLogger()}, newFakeAuth(pw), ing, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := br.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	defer br.Shutdown(b.Context())

	per := b.N/clients + 1
	b.ResetTimer()
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		id := fmt.Sprintf("bench-%d", c)
		conn, err := net.Dial("tcp", br.Addr("tcp").String())
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		w := bufio.NewWriter(conn)
		r := bufio.NewReader(conn)
		var buf bytes.Buffer
		cp := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
			Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: id,
				UsernameFlag: true, Username: []byte(id), PasswordFlag: true, Password: []byte("pw")}}
		_ = cp.ConnectEncode(&buf)
		conn.Write(buf.Bytes())
		ack := make([]byte, 4)
		if _, err := io.ReadFull(r, ack); err != nil || ack[3] != 0 {
			b.Fatalf("connack %x %v", ack, err)
		}
		sem := make(chan struct{}, window)
		wg.Add(2)
		go func() { // acks
			defer wg.Done()
			pa := make([]byte, 4)
			for i := 0; i < per; i++ {
				if _, err := io.ReadFull(r, pa); err != nil {
					b.Errorf("reading puback: %v", err)
					return
				}
				<-sem
			}
		}()
		go func() { // publishes
			defer wg.Done()
			var enc bytes.Buffer
			for i := 0; i < per; i++ {
				sem <- struct{}{}
				enc.Reset()
				pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 4,
					TopicName: topic.Telemetry(id), PacketID: uint16(i%60000 + 1), Payload: []byte(`{"seq":1,"data":{"a":1,"b":2,"c":3}}`)}
				_ = pk.PublishEncode(&enc)
				w.Write(enc.Bytes())
				if len(sem) == window || i == per-1 {
					w.Flush()
				}
			}
			w.Flush()
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(per*clients)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkIdleWake measures the broker's cost per QoS 1 publish from
// devices that are idle between messages: 200 connections publish in turn,
// one message in flight at a time, so each connection waits about 200
// round trips between its messages — longer than IdleAfter (1 ms) in the
// "parked" case, which therefore wakes a parked connection per message and
// parks it again; "goroutine" keeps a reader per connection (IdleAfter < 0).
// The -tls cases do the same over TLS, where a parked connection also
// drops crypto/tls's input buffers and allocates them again on waking.
// Besides ns/op it reports the process's CPU per message (client included:
// compare the two cases).
func BenchmarkIdleWake(b *testing.B) {
	p := newTestPKI(b, "wake CA")
	for _, c := range []struct {
		name string
		idle time.Duration
		tls  bool
	}{{"parked", time.Millisecond, false}, {"goroutine", -1, false}, {"parked-tls", time.Millisecond, true}, {"goroutine-tls", -1, true}} {
		b.Run(c.name, func(b *testing.B) {
			const conns = 200
			cfg := Config{TCPAddr: "127.0.0.1:0", OpenPolicy: true, IdleAfter: c.idle, Logger: testLogger()}
			listener := "tcp"
			if c.tls {
				cfg.TLSAddr, cfg.TLS, listener = "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{p.server}}, "tls"
			}
			br, err := New(cfg, nil, nopIngester{}, nil)
			if err != nil {
				b.Fatal(err)
			}
			if err := br.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
				defer cancel()
				_ = br.Shutdown(ctx)
			}()
			type client struct {
				conn net.Conn
				r    *bufio.Reader
			}
			cs := make([]client, conns)
			for i := range cs {
				conn, err := net.Dial("tcp", br.Addr(listener).String())
				if err != nil {
					b.Fatal(err)
				}
				if c.tls {
					conn = tls.Client(conn, p.clientTLS())
				}
				defer conn.Close()
				var buf bytes.Buffer
				cp := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
					Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: fmt.Sprintf("wake-%d", i)}}
				_ = cp.ConnectEncode(&buf)
				if _, err := conn.Write(buf.Bytes()); err != nil {
					b.Fatal(err)
				}
				cs[i] = client{conn: conn, r: bufio.NewReader(conn)}
				if _, err := io.ReadFull(cs[i].r, make([]byte, 4)); err != nil {
					b.Fatal(err)
				}
			}
			msgs := make([][]byte, conns)
			for i := range msgs {
				var buf bytes.Buffer
				pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 4,
					TopicName: topic.Telemetry(fmt.Sprintf("wake-%d", i)), PacketID: 1, Payload: []byte(`{"t":21.5}`)}
				_ = pk.PublishEncode(&buf)
				msgs[i] = buf.Bytes()
			}
			ack := make([]byte, 4)
			time.Sleep(10 * time.Millisecond) // let them park
			cpu0, err := bench.ProcCPU(os.Getpid())
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for n := range b.N {
				c := cs[n%conns]
				if _, err := c.conn.Write(msgs[n%conns]); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c.r, ack); err != nil || ack[0] != 0x40 {
					b.Fatalf("puback: %x, %v", ack, err)
				}
			}
			b.StopTimer()
			cpu1, err := bench.ProcCPU(os.Getpid())
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "cpu-µs/msg")
			if p := br.poller.Load(); p != nil {
				woken, _, _ := p.Resumes()
				b.ReportMetric(float64(woken)/float64(b.N), "wakes/msg")
			}
		})
	}
}

// nopIngester completes every ingest at once.
type nopIngester struct{}

func (nopIngester) Ingest(_ string, _ []byte, done func(error)) { done(nil) }
