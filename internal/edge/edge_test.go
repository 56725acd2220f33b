package edge_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/internal/config"
	"github.com/fieldhub/fieldhub/internal/fhtest"
	"github.com/fieldhub/fieldhub/internal/hub"
	"github.com/fieldhub/fieldhub/internal/registry"
	"github.com/fieldhub/fieldhub/topic"
)

var (
	freePort       = fhtest.FreePort
	fieldhubBinary = fhtest.Binary
	eventually     = fhtest.Eventually
)

// hubEnv is a real hub in this process, restartable on the same ports.
type hubEnv struct {
	t   *testing.T
	cfg config.Hub
	h   *hub.Hub
}

func newHubEnv(t *testing.T, dir string) *hubEnv {
	c := config.Default()
	c.Data = filepath.Join(dir, "hub")
	c.MasterKeyFile = filepath.Join(dir, "master.key")
	c.MQTTSAddr = freePort(t)
	c.HTTPAddr = freePort(t)
	c.LogLevel = "warn"
	e := &hubEnv{t: t, cfg: c}
	e.start()
	t.Cleanup(e.stop)
	return e
}

func (e *hubEnv) start() {
	e.t.Helper()
	h, err := hub.New(e.cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Start(ctx); err != nil {
		e.t.Fatal(err)
	}
	e.h = h
}

func (e *hubEnv) stop() {
	if e.h == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.h.Shutdown(ctx)
	e.h = nil
}

func (e *hubEnv) api(method, path string, body, out any) int {
	e.t.Helper()
	return fhtest.API(e.t, method, "http://"+e.cfg.HTTPAddr+path, e.h.AdminToken(), body, out)
}

// points returns the values of metric of device, in time order.
func (e *hubEnv) points(device, metric string) []float64 {
	var out struct {
		Series []struct {
			Metric string `json:"metric"`
			Points []struct {
				Value float64 `json:"value"`
			} `json:"points"`
		} `json:"series"`
	}
	from := time.Now().Add(-48 * time.Hour).UnixMilli()
	e.api("GET", fmt.Sprintf("/api/v1/devices/%s/telemetry?metric=%s&from=%d&limit=100000", device, metric, from), nil, &out)
	var v []float64
	for _, s := range out.Series {
		for _, p := range s.Points {
			v = append(v, p.Value)
		}
	}
	return v
}

// edgeProc is `fieldhub edge` in a child process.
type edgeProc struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan struct{}
}

func startEdge(t *testing.T, cfgPath, mqttAddr string) *edgeProc {
	t.Helper()
	cmd := exec.Command(fieldhubBinary(t), "edge", "--config", cfgPath)
	p := &edgeProc{cmd: cmd, out: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(p.kill)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("tcp", mqttAddr)
		if err == nil {
			c.Close()
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("fieldhub edge exited: %s", p.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("edge not listening after 30 s: %s", p.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *edgeProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// sensor publishes seq 1..n, resending (same seq) whatever has no PUBACK.
type sensor struct {
	id, password string
	mu           sync.Mutex
	acked        map[int]bool
	next         int
}

func (s *sensor) ackedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acked)
}

func (s *sensor) run(ctx context.Context, addr string, n int, every time.Duration, payload func(seq int) []byte) {
	for ctx.Err() == nil && s.ackedCount() < n {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		c := paho.NewClient(paho.ClientConfig{Conn: conn})
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = c.Connect(cctx, &paho.Connect{ClientID: s.id, Username: s.id, UsernameFlag: true, Password: []byte(s.password), PasswordFlag: true, KeepAlive: 30, CleanStart: true})
		cancel()
		if err != nil {
			conn.Close()
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for ctx.Err() == nil {
			s.mu.Lock()
			seq := s.next
			s.mu.Unlock()
			if seq > n {
				break
			}
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			resp, err := c.Publish(pctx, &paho.Publish{Topic: topic.Telemetry(s.id), QoS: 1, Payload: payload(seq)})
			cancel()
			if err != nil || resp.ReasonCode != 0 {
				break // reconnect and resend the same seq
			}
			s.mu.Lock()
			s.acked[seq] = true
			s.next++
			s.mu.Unlock()
			time.Sleep(every)
		}
		c.Disconnect(&paho.Disconnect{})
		conn.Close()
	}
}

// TestOutageAndEdgeCrash: sensors publish a steady stream through the
// edge; the hub is stopped; the edge is killed with SIGKILL and restarted
// during the outage; the hub comes back. Every reading a sensor got a
// PUBACK for is stored at the hub exactly once, and an alert raised while
// the uplink was down reaches the hub.
func TestOutageAndEdgeCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a hub and kills an edge process")
	}
	dir := t.TempDir()
	hb := newHubEnv(t, dir)
	var gw struct {
		Credentials struct {
			Certificate string `json:"certificate"`
			PrivateKey  string `json:"private_key"`
		} `json:"credentials"`
	}
	if code := hb.api("POST", "/api/v1/devices", map[string]any{"id": "gw", "auth": "certificate"}, &gw); code != 201 {
		t.Fatalf("creating the gateway: %d", code)
	}
	os.WriteFile(filepath.Join(dir, "gw.crt"), []byte(gw.Credentials.Certificate), 0o600)
	os.WriteFile(filepath.Join(dir, "gw.key"), []byte(gw.Credentials.PrivateKey), 0o600)
	os.WriteFile(filepath.Join(dir, "ca.pem"), hb.h.CAPEM(), 0o600)

	const nSensors, perSensor = 3, 300
	sensors := make([]*sensor, nSensors)
	var sensorYAML strings.Builder
	for i := range sensors {
		id := fmt.Sprintf("s%d", i+1)
		if code := hb.api("POST", "/api/v1/devices", map[string]any{"id": id, "gateway": "gw"}, nil); code != 201 {
			t.Fatalf("creating %s: %d", id, code)
		}
		pw := fmt.Sprintf("sensor-password-%d-xyz", i)
		sensors[i] = &sensor{id: id, password: pw, acked: map[int]bool{}, next: 1}
		fmt.Fprintf(&sensorYAML, "  - id: %s\n    password_hash: %q\n", id, registry.HashPassword([]byte(pw), registry.PasswordParams{Memory: 1024, Iterations: 1}))
	}
	edgeMQTT := freePort(t)
	cfgPath := filepath.Join(dir, "edge.yml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`id: gw
data: %s
hub:
  addr: %s
  ca_file: %s
  cert_file: %s
  key_file: %s
  server_name: localhost
listen:
  mqtt_addr: %s
http_addr: "off"
sensors:
%suplink:
  batch_max: 50
  rate: 0
  backoff_min: 100ms
  backoff_max: 500ms
pipeline:
  - sensors: ["s1"]
    metrics: ["t"]
    detect:
      - threshold: {above: 1000, clear_below: 900, severity: critical}
log_level: warn
`, filepath.Join(dir, "edge"), hb.cfg.MQTTSAddr, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "gw.crt"), filepath.Join(dir, "gw.key"), edgeMQTT, sensorYAML.String())), 0o600)

	ep := startEdge(t, cfgPath, edgeMQTT)
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	payloadFor := func(seq int) []byte {
		v := float64(seq)
		if seq == 200 {
			v = 5000 // the anomaly, published while the hub is down
		}
		return []byte(fmt.Sprintf(`{"seq":%d,"ts":%d,"data":{"t":%g}}`, seq, base.Add(time.Duration(seq)*time.Second).UnixMilli(), v))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range sensors {
		wg.Add(1)
		go func() { defer wg.Done(); s.run(ctx, edgeMQTT, perSensor, 5*time.Millisecond, payloadFor) }()
	}
	total := func() int {
		n := 0
		for _, s := range sensors {
			n += s.ackedCount()
		}
		return n
	}
	eventually(t, time.Minute, "readings before the outage", func() bool { return total() >= nSensors*50 })
	hb.stop() // the outage begins
	eventually(t, time.Minute, "readings during the outage", func() bool { return total() >= nSensors*150 })
	ep.kill() // power loss at the edge, in the middle of the outage
	startEdge(t, cfgPath, edgeMQTT)
	eventually(t, time.Minute, "readings after the edge restart", func() bool { return sensors[0].ackedCount() >= 220 })
	hb.start() // the hub is back
	wg.Wait()
	if total() != nSensors*perSensor {
		t.Fatalf("sensors got %d PUBACKs; want %d", total(), nSensors*perSensor)
	}
	for _, s := range sensors {
		want := perSensor
		eventually(t, time.Minute, s.id+" drained to the hub", func() bool { return len(hb.points(s.id, "t")) >= want })
		got := hb.points(s.id, "t")
		seen := map[int]int{}
		for i, v := range got {
			seq := int(v)
			if v == 5000 {
				seq = 200
			}
			seen[seq]++
			if i > 0 && seq != int(got[i-1])+1 && got[i-1] != 5000 && v != 5000 {
				t.Errorf("%s: point %d is seq %d after %v (out of order or missing)", s.id, i, seq, got[i-1])
			}
		}
		for seq := 1; seq <= perSensor; seq++ {
			if seen[seq] != 1 {
				t.Errorf("%s: seq %d stored %d times; want exactly once", s.id, seq, seen[seq])
			}
		}
	}
	var alerts struct {
		Alerts []struct {
			Device   string `json:"device"`
			Severity string `json:"severity"`
		} `json:"alerts"`
	}
	eventually(t, 30*time.Second, "the alert at the hub", func() bool {
		hb.api("GET", "/api/v1/alerts?device=s1", nil, &alerts)
		return len(alerts.Alerts) > 0
	})
	if alerts.Alerts[0].Severity != "critical" {
		t.Errorf("alert = %+v; want critical", alerts.Alerts[0])
	}
}
