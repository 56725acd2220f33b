package hub_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/fieldhub/fieldhub/internal/config"
	"github.com/fieldhub/fieldhub/internal/fhtest"
	"github.com/fieldhub/fieldhub/internal/hub"
)

// testHub is a real hub on loopback ports in a temporary data folder.
type testHub struct {
	*hub.Hub
	t      *testing.T
	cfg    config.Hub
	apiURL string
	// tokenOverride is the admin token of a hub in another process.
	tokenOverride string
}

func (h *testHub) token() string {
	if h.tokenOverride != "" {
		return h.tokenOverride
	}
	return h.AdminToken()
}

// hubConfig returns a configuration for a hub in dir, all listeners on
// free loopback ports, the master key outside the data folder.
func hubConfig(t *testing.T, dir string) config.Hub {
	c := config.Default()
	c.Data = filepath.Join(dir, "data")
	c.MasterKeyFile = filepath.Join(dir, "master.key")
	c.MQTTAddr = "127.0.0.1:0"
	c.MQTTSAddr = "127.0.0.1:0"
	c.WSAddr = "127.0.0.1:0"
	c.HTTPAddr = "127.0.0.1:0"
	c.LogLevel = "warn"
	if os.Getenv("FIELDHUB_TEST_STORAGE") == "postgres" {
		// The same end-to-end tests with everything in PostgreSQL
		// (make test runs the package both ways).
		c.Storage = "postgres"
		c.PostgresURL = fhtest.Postgres(t)
	}
	return c
}

func startHub(t *testing.T, cfg config.Hub) *testHub {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h, err := hub.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	th := &testHub{Hub: h, t: t, cfg: cfg, apiURL: "http://" + h.Addr("http").String()}
	t.Cleanup(func() { th.stop() })
	return th
}

func (h *testHub) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Shutdown(ctx); err != nil {
		// A bounded shutdown that ran out of time: show what was stuck.
		var b strings.Builder
		pprof.Lookup("goroutine").WriteTo(&b, 1)
		h.t.Errorf("shutdown: %v\ngoroutines:\n%s", err, b.String())
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// api calls the REST API with the admin token and decodes the answer.
func (h *testHub) api(method, path string, body, out any) int {
	h.t.Helper()
	return fhtest.API(h.t, method, h.apiURL+path, h.token(), body, out)
}

type creds struct {
	ID          string
	Password    string `json:"password"`
	Certificate string `json:"certificate"`
	PrivateKey  string `json:"private_key"`
	CA          string `json:"ca"`
}

func (h *testHub) addDevice(id, auth string) creds {
	h.t.Helper()
	var out struct {
		Credentials creds `json:"credentials"`
	}
	if code := h.api("POST", "/api/v1/devices", map[string]any{"id": id, "auth": auth}, &out); code != http.StatusCreated {
		h.t.Fatalf("creating %s: HTTP %d", id, code)
	}
	out.Credentials.ID = id
	return out.Credentials
}

// clientTLS returns a TLS configuration trusting the hub's CA, with the
// device certificate when c has one.
func (h *testHub) clientTLS(c *creds) *tls.Config {
	h.t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(h.CAPEM()) {
		h.t.Fatal("no CA certificate")
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	if c != nil && c.Certificate != "" {
		kp, err := tls.X509KeyPair([]byte(c.Certificate), []byte(c.PrivateKey))
		if err != nil {
			h.t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	return cfg
}

type point struct {
	TS    time.Time `json:"ts"`
	Value any       `json:"value"`
}

type series struct {
	Metric string  `json:"metric"`
	Kind   string  `json:"kind"`
	Points []point `json:"points"`
}

// telemetry returns every point of a device in the last day, by metric.
func (h *testHub) telemetry(id string) map[string][]point {
	h.t.Helper()
	var out struct {
		Series []series `json:"series"`
	}
	from := time.Now().Add(-24 * time.Hour).UnixMilli()
	to := time.Now().Add(time.Hour).UnixMilli()
	if code := h.api("GET", fmt.Sprintf("/api/v1/devices/%s/telemetry?from=%d&to=%d&limit=100000", id, from, to), nil, &out); code != 200 {
		h.t.Fatalf("query %s: HTTP %d", id, code)
	}
	m := map[string][]point{}
	for _, s := range out.Series {
		m[s.Metric] = s.Points
	}
	return m
}

// counter reads a counter of the hub's metrics with the given labels.
func (h *testHub) counter(name string, labels ...string) float64 {
	h.t.Helper()
	mfs, err := h.Metrics().Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			if c := m.GetCounter(); c != nil {
				sum += c.GetValue()
			} else if g := m.GetGauge(); g != nil {
				sum += g.GetValue()
			}
		}
		return sum
	}
	return 0
}

// dial5 connects an MQTT 5 client (paho.golang) or returns the refusal.
func dial5(t *testing.T, addr string, tlsCfg *tls.Config, id, user, password string) (*paho.Client, *paho.Connack, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var conn net.Conn
	var err error
	if tlsCfg != nil {
		conn, err = (&tls.Dialer{Config: tlsCfg}).DialContext(ctx, "tcp", addr)
	} else {
		conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, nil, err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	cp := &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
	}
	if password != "" {
		cp.Password, cp.PasswordFlag = []byte(password), true
	}
	ack, err := c.Connect(ctx, cp)
	if err != nil {
		conn.Close()
		return nil, ack, err
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	return c, ack, nil
}

// dial3 connects an MQTT 3.1.1 client (paho.mqtt.golang).
func dial3(t *testing.T, url string, tlsCfg *tls.Config, id, user, password string) (mqtt3.Client, error) {
	t.Helper()
	o := mqtt3.NewClientOptions().AddBroker(url).SetClientID(id).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(10 * time.Second).SetCleanSession(true)
	if user != "" {
		o.SetUsername(user)
	}
	if password != "" {
		o.SetPassword(password)
	}
	if tlsCfg != nil {
		o.SetTLSConfig(tlsCfg)
	}
	c := mqtt3.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

func telemetryJSON(seq int, temp float64, ts time.Time) []byte {
	return []byte(fmt.Sprintf(`{"seq":%d,"ts":%q,"data":{"temperature":%g,"ok":true,"state":"run"}}`, seq, ts.UTC().Format(time.RFC3339Nano), temp))
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := execLookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is required in CI (make test installs it): %v", name, err)
		}
		t.Skipf("%s not installed (make test installs it)", name)
	}
	return p
}
