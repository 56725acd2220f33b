package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// childEnv, when set in a re-executed test binary, makes it run a broker
// instead of tests (the os.Args[0] trick): see TestMain.
const childEnv = "FIELDHUB_BENCH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "baseline" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		if err := RunBaselineBroker(ctx, "127.0.0.1:0", os.Stdout, logger); err != nil {
			logger.Error("baseline broker", "err", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// recorder is a mochi hook that checks what the generator publishes: per
// client, seq must increase by one and the payload must be well formed.
type recorder struct {
	mqtt.HookBase
	mu       sync.Mutex
	lastSeq  map[string]uint64
	count    map[string]int
	problems []string
	rejectN  int // with v5, refuse every rejectN-th message with 0x87
	seen     int
}

func newRecorder() *recorder {
	return &recorder{lastSeq: map[string]uint64{}, count: map[string]int{}}
}

func (h *recorder) ID() string { return "recorder" }

func (h *recorder) Provides(b byte) bool { return b == mqtt.OnPublish }

func (h *recorder) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen++
	if want := "devices/" + cl.ID + "/telemetry"; pk.TopicName != want {
		h.problem("topic %q; want %q", pk.TopicName, want)
	}
	p := pk.Payload
	i := bytes.Index(p, []byte(`{"seq":`))
	j := bytes.IndexByte(p, ',')
	if i != 0 || j < 0 || !bytes.Contains(p, []byte(`"ts":"`)) || !bytes.HasSuffix(p, []byte("}}")) {
		h.problem("payload %s", p)
		return pk, nil
	}
	seq, err := strconv.ParseUint(string(p[len(`{"seq":`):j]), 10, 64)
	if err != nil {
		h.problem("seq in %s: %v", p, err)
	}
	if last, ok := h.lastSeq[cl.ID]; ok && seq != last+1 {
		h.problem("client %s: seq %d after %d", cl.ID, seq, last)
	}
	h.lastSeq[cl.ID] = seq
	h.count[cl.ID]++
	if h.rejectN > 0 && h.seen%h.rejectN == 0 {
		return pk, packets.ErrNotAuthorized
	}
	return pk, nil
}

func (h *recorder) problem(format string, args ...any) {
	if len(h.problems) < 10 {
		h.problems = append(h.problems, fmt.Sprintf(format, args...))
	}
}

// startRecorded starts an in-process baseline broker with the recorder.
func startRecorded(t *testing.T, rec *recorder) *BaselineBroker {
	t.Helper()
	logger := testLogger(t)
	if rec.rejectN > 0 {
		logger = nil // mochi logs every refused publish at error level
	}
	b, err := startBaseline("127.0.0.1:0", logger, nil, new(allowHook), rec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// checkSane checks the invariants of a successful unpaced run.
func checkSane(t *testing.T, res IngestResult) {
	t.Helper()
	if res.Messages <= 0 || res.MsgsPerSec < 100 {
		t.Errorf("messages = %d (%.0f/s); want some", res.Messages, res.MsgsPerSec)
	}
	if res.Points != res.Messages*int64(res.Metrics) {
		t.Errorf("points = %d; want messages × %d = %d", res.Points, res.Metrics, res.Messages*int64(res.Metrics))
	}
	if res.P50 <= 0 || res.P50 > res.P99 || res.P99 > res.Max || res.Max > 5*time.Second {
		t.Errorf("latency p50 %v p99 %v max %v; want 0 < p50 ≤ p99 ≤ max < 5s", res.P50, res.P99, res.Max)
	}
	if res.Errors != 0 || res.Unacked != 0 || res.Disconnects != 0 {
		t.Errorf("errors %d (refused %v, disconnects %d), unacked %d; want none", res.Errors, res.Refused, res.Disconnects, res.Unacked)
	}
	if res.Published < res.Messages-int64(res.Devices*res.Inflight) {
		t.Errorf("published %d < acked %d minus the windows", res.Published, res.Messages)
	}
}

func checkRecorder(t *testing.T, rec *recorder, devices int) {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, p := range rec.problems {
		t.Error(p)
	}
	if len(rec.count) != devices {
		t.Errorf("broker saw %d publishing clients; want %d", len(rec.count), devices)
	}
}

func TestIngestAgainstBaseline(t *testing.T) {
	for _, protocol := range []byte{4, 5} {
		t.Run("v"+strconv.Itoa(int(protocol)), func(t *testing.T) {
			rec := newRecorder()
			b := startRecorded(t, rec)
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			res, err := RunIngest(ctx, IngestConfig{
				Label:    "baseline",
				Addr:     b.Addr().String(),
				Devices:  Devices(4, "t"),
				Protocol: protocol,
				Warmup:   200 * time.Millisecond,
				Duration: time.Second,
				SeqStart: 1,
				Logger:   testLogger(t),
			})
			if err != nil {
				t.Fatalf("RunIngest: %v", err)
			}
			checkSane(t, res)
			checkRecorder(t, rec, 4)
			var buf bytes.Buffer
			res.Table(&buf)
			t.Logf("\n%s", buf.String())
		})
	}
}

func TestIngestSenMLAndManyMetrics(t *testing.T) {
	b, err := StartBaseline("127.0.0.1:0", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	res, err := RunIngest(t.Context(), IngestConfig{
		Addr: b.Addr().String(), Devices: Devices(2, ""), Duration: 300 * time.Millisecond,
		PayloadFormat: FormatSenML, Metrics: 10, Protocol: 5,
		BatchReadings: 100, // only for FormatBatch: ignored here, as the CLI's default is
	})
	if err != nil {
		t.Fatal(err)
	}
	checkSane(t, res)
	if res.Points != 10*res.Messages {
		t.Errorf("points = %d; want 10 × %d", res.Points, res.Messages)
	}
}

func TestIngestPaced(t *testing.T) {
	b, err := StartBaseline("127.0.0.1:0", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	res, err := RunIngest(t.Context(), IngestConfig{
		Addr: b.Addr().String(), Devices: Devices(4, ""), Rate: 2000,
		Warmup: 200 * time.Millisecond, Duration: time.Second, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	// A pacer must never exceed its rate; on a loaded machine (or under
	// the race detector) it may fall behind.
	if res.MsgsPerSec < 1000 || res.MsgsPerSec > 2100 {
		t.Errorf("paced at 2000/s: got %.0f/s", res.MsgsPerSec)
	}
	if res.P99 > 500*time.Millisecond || res.Errors != 0 {
		t.Errorf("paced run: p99 %v, errors %d", res.P99, res.Errors)
	}
}

func TestIngestQoS0(t *testing.T) {
	b, err := StartBaseline("127.0.0.1:0", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	res, err := RunIngest(t.Context(), IngestConfig{
		Addr: b.Addr().String(), Devices: Devices(2, ""), QoS: QoSAtMostOnce,
		Rate: 5000, Duration: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.QoS != 0 || res.Messages < 2000 || res.P99 != 0 || res.Errors != 0 {
		t.Errorf("qos 0: %+v", res)
	}
}

func TestIngestRefusedPubacks(t *testing.T) {
	rec := newRecorder()
	rec.rejectN = 10
	b := startRecorded(t, rec)
	res, err := RunIngest(t.Context(), IngestConfig{
		Addr: b.Addr().String(), Devices: Devices(2, ""), Protocol: 5, Duration: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	n := res.Refused[0x87]
	if n == 0 || res.Errors != n || res.Messages == 0 {
		t.Errorf("refused %v, errors %d, messages %d; want about a tenth refused with 0x87", res.Refused, res.Errors, res.Messages)
	}
	var buf bytes.Buffer
	res.Table(&buf)
	if !strings.Contains(buf.String(), "0x87 not authorized") {
		t.Errorf("table does not show the refusals:\n%s", buf.String())
	}
}

func TestIngestConnectRefused(t *testing.T) {
	// A fake broker rather than mochi with a denying hook: mochi v2.7.9's
	// Close races (Listeners.ClientsWg Add against Wait) with the
	// goroutines of refused connections, which the race detector reports.
	for _, tc := range []struct {
		protocol byte
		code     byte
		want     string
	}{
		{4, 5, "device bench-0001: connection refused: 0x05 not authorized"},
		{5, 0x86, "device bench-0001: connection refused: 0x86 bad user name or password: go away"},
	} {
		fb := startFakeBroker(t, tc.protocol, 5*time.Second, tc.code)
		start := time.Now()
		_, err := RunIngest(t.Context(), IngestConfig{
			Addr: fb.addr, Devices: Devices(1, ""), Protocol: tc.protocol, Duration: 10 * time.Second,
		})
		var ce *ConnectError
		if !errors.As(err, &ce) || ce.Code != tc.code || err.Error() != tc.want {
			t.Errorf("v%d: RunIngest = %v; want %s", tc.protocol, err, tc.want)
		}
		if time.Since(start) > 3*time.Second {
			t.Errorf("v%d: refusal took %v; want a fast failure", tc.protocol, time.Since(start))
		}
		fb.stop()
	}
}

func TestIngestConfigErrors(t *testing.T) {
	for _, cfg := range []IngestConfig{
		{},
		{Addr: "x:1"},
		{Addr: "x:1", Devices: []Device{{ID: "a/b"}}},
		{Addr: "x:1", Devices: []Device{{ID: "a"}, {ID: "a"}}},
		{Addr: "x:1", Devices: Devices(1, ""), Protocol: 3},
		{Addr: "x:1", Devices: Devices(1, ""), QoS: 2},
		{Addr: "x:1", Devices: Devices(1, ""), Inflight: MaxInflight + 1},
		{Addr: "x:1", Devices: Devices(1, ""), PayloadFormat: "xml"},
		{Addr: "x:1", Devices: []Device{{ID: "a", Password: "p"}}},
	} {
		if _, err := RunIngest(t.Context(), cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("RunIngest(%+v) = %v; want ErrConfig", cfg, err)
		}
	}
}

func TestIngestCancelAndDisconnect(t *testing.T) {
	before := runtime.NumGoroutine()
	b, err := StartBaseline("127.0.0.1:0", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 400*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := RunIngest(ctx, IngestConfig{Addr: b.Addr().String(), Devices: Devices(3, ""), Duration: 10 * time.Second})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("RunIngest with a short ctx = %v; want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("cancelled run took %v", d)
	}
	if res.Messages == 0 || res.Duration >= 10*time.Second {
		t.Errorf("partial result: %d messages over %v", res.Messages, res.Duration)
	}

	_ = b.Close()

	// The broker going away mid-run ends it with ErrAllDisconnected, for
	// a broker that just closes (v4) or says why (v5).
	for _, protocol := range []byte{4, 5} {
		fb := startFakeBroker(t, protocol, 300*time.Millisecond, 0)
		start := time.Now()
		res, err = RunIngest(t.Context(), IngestConfig{Addr: fb.addr, Devices: Devices(2, ""), Protocol: protocol, Duration: 10 * time.Second})
		if !errors.Is(err, ErrAllDisconnected) || res.Disconnects != 2 || res.Errors != 2 || res.Messages == 0 {
			t.Errorf("v%d broker closed: err %v, disconnects %d, errors %d; want ErrAllDisconnected, 2, 2", protocol, err, res.Disconnects, res.Errors)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("v%d: run with a lost broker took %v", protocol, d)
		}
		t.Logf("v%d: lost broker after %v: %v (%d messages)", protocol, time.Since(start), err, res.Messages)
		fb.stop()
	}

	// No goroutine is left behind.
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

func TestServeBaselineLoopbackOnly(t *testing.T) {
	if _, err := ServeBaseline(t.Context(), "0.0.0.0:0", nil); !errors.Is(err, ErrNotLoopback) {
		t.Errorf("ServeBaseline(0.0.0.0:0) = %v; want ErrNotLoopback", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	addr, err := ServeBaseline(ctx, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := RunIngest(t.Context(), IngestConfig{Addr: addr.String(), Devices: Devices(1, ""), Duration: 200 * time.Millisecond})
	if err != nil || res.Messages == 0 {
		t.Errorf("against ServeBaseline: %v, %d messages", err, res.Messages)
	}
	cancel()
}

func TestBaselineSubprocess(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	p, err := StartProcess(ctx, ProcessConfig{
		Path: os.Args[0], Args: []string{"-test.run=^$"}, Env: []string{childEnv + "=baseline"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	res, err := RunIngest(ctx, IngestConfig{
		Label: "mochi", Addr: p.Addr, Devices: Devices(4, ""), Duration: time.Second, ServerPID: p.PID,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkSane(t, res)
	if res.ServerCPU <= 0 || res.ServerCPUPer1k <= 0 || res.ServerRSS < 1<<20 {
		t.Errorf("server cpu %v (%v per 1k), rss %d; want positive", res.ServerCPU, res.ServerCPUPer1k, res.ServerRSS)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("Stop: %v (output %s)", err, p.Output())
	}
	select {
	case <-p.Done():
	default:
		t.Error("process still running after Stop")
	}
}

func TestReportFormats(t *testing.T) {
	hub := IngestResult{
		Label: "hub", Addr: "127.0.0.1:1883", Devices: 10, Protocol: 4, QoS: 1, Inflight: 64, Metrics: 3,
		PayloadFormat: "json", PacketBytes: 120, Duration: 10 * time.Second, Warmup: 2 * time.Second,
		Messages: 1_000_000, Points: 3_000_000, MsgsPerSec: 100_000, PointsPerSec: 300_000,
		P50: 900 * time.Microsecond, P99: 4 * time.Millisecond, Max: 20 * time.Millisecond,
		ServerPID: 1, ServerCPU: 15 * time.Second, ServerCPUPer1k: 15 * time.Millisecond, ServerRSS: 40 << 20,
		Refused: map[byte]int64{0x97: 3}, Errors: 3,
	}
	base := hub
	base.Label, base.MsgsPerSec, base.ServerCPUPer1k, base.Refused, base.Errors = "mosquitto", 64_000, 17*time.Millisecond, nil, 0
	var buf bytes.Buffer
	hub.Table(&buf)
	for _, want := range []string{"100,000", "900 µs", "4.00 ms", "15.0 ms (15.0 µs/msg)", "40.0 MiB", "3 × 0x97 quota exceeded"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("Table lacks %q:\n%s", want, buf.String())
		}
	}
	buf.Reset()
	Compare(&buf, hub, base)
	for _, want := range []string{"hub/mosquitto", "1.56×", "0.88×"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("Compare lacks %q:\n%s", want, buf.String())
		}
	}
	j, err := hub.JSON()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"msgs_per_sec": 100000`, `"p99_ms": 4`, `"0x97": 3`, `"server_cpu_ms_per_1k_msgs": 15`} {
		if !bytes.Contains(j, []byte(want)) {
			t.Errorf("JSON lacks %s:\n%s", want, j)
		}
	}
}

// fakeBroker accepts MQTT connections (or refuses them), acks every QoS 1
// PUBLISH, and after closeAfter closes each connection (with a DISCONNECT
// 0x8B for MQTT 5).
type fakeBroker struct {
	addr   string
	refuse byte // when not 0, the CONNACK code refusing every connection
	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	conn   []net.Conn
}

func startFakeBroker(t *testing.T, protocol byte, closeAfter time.Duration, refuse byte) *fakeBroker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fb := &fakeBroker{addr: ln.Addr().String(), ln: ln, refuse: refuse}
	fb.wg.Add(1)
	go func() {
		defer fb.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fb.mu.Lock()
			fb.conn = append(fb.conn, c)
			fb.mu.Unlock()
			fb.wg.Add(1)
			go func() {
				defer fb.wg.Done()
				defer c.Close()
				fb.serve(c, protocol, closeAfter)
			}()
		}
	}()
	t.Cleanup(fb.stop)
	return fb
}

func (fb *fakeBroker) serve(c net.Conn, protocol byte, closeAfter time.Duration) {
	_ = c.SetDeadline(time.Now().Add(closeAfter))
	buf := make([]byte, 0, 64<<10)
	var out []byte
	connected := false
	for {
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		for {
			first, body, size, perr := splitPacket(buf)
			if perr != nil {
				break
			}
			switch first & 0xF0 {
			case pktConnect:
				if fb.refuse != 0 && protocol == 5 {
					// Reason string property "go away".
					out = append(out, pktConnack, 13, 0, fb.refuse, 10, 0x1F, 0, 7)
					out = append(out, "go away"...)
				} else if fb.refuse != 0 {
					out = append(out, pktConnack, 2, 0, fb.refuse)
				} else if protocol == 5 {
					out = append(out, pktConnack, 3, 0, 0, 0) // no properties
				} else {
					out = append(out, pktConnack, 2, 0, 0)
				}
				connected = true
			case pktPublish:
				topicLen := int(body[0])<<8 | int(body[1])
				id := body[2+topicLen : 4+topicLen]
				out = append(out, pktPuback, 2, id[0], id[1])
			}
			buf = append(buf[:0], buf[size:]...)
		}
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil {
				return
			}
			out = out[:0]
		}
		if err != nil {
			if connected && protocol == 5 {
				_ = c.SetDeadline(time.Now().Add(time.Second))
				_, _ = c.Write([]byte{pktDisconnect, 1, 0x8B})
			}
			return
		}
	}
}

func (fb *fakeBroker) stop() {
	_ = fb.ln.Close()
	fb.mu.Lock()
	for _, c := range fb.conn {
		_ = c.Close()
	}
	fb.mu.Unlock()
	fb.wg.Wait()
}
