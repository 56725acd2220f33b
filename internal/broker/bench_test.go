package broker

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

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
