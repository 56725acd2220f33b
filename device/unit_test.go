package device

import (
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/payload"
)

func TestMessageEncoding(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 600_000_000, time.UTC)
	tests := []struct {
		name    string
		data    map[string]any
		want    string // payload with seq 7
		wantErr bool
	}{
		{"numbers, bool, string", map[string]any{"t": 21.5, "n": 3, "ok": true, "s": "run"},
			`{"ts":"2026-01-02T03:04:05.6Z","seq":7,"data":{"n":3,"ok":true,"s":"run","t":21.5}}`, false},
		{"integer kinds", map[string]any{"a": int8(-1), "b": uint64(1 << 40), "c": float32(0.5), "d": json.Number("1e3")},
			`{"ts":"2026-01-02T03:04:05.6Z","seq":7,"data":{"a":-1,"b":1099511627776,"c":0.5,"d":1000}}`, false},
		{"nested maps flatten", map[string]any{"net": map[string]any{"rssi": -70, "wifi": map[string]any{"ch": 6}}},
			`{"ts":"2026-01-02T03:04:05.6Z","seq":7,"data":{"net.rssi":-70,"net.wifi.ch":6}}`, false},
		{"empty", map[string]any{}, "", true},
		{"nil value", map[string]any{"x": nil}, "", true},
		{"NaN", map[string]any{"x": math.NaN()}, "", true},
		{"infinity", map[string]any{"x": math.Inf(1)}, "", true},
		{"array", map[string]any{"x": []any{1, 2}}, "", true},
		{"empty name", map[string]any{"": 1}, "", true},
		{"empty nested map", map[string]any{"x": map[string]any{}}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := message(ts, tt.data)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidData) {
					t.Errorf("message(%v) = %v; want ErrInvalidData", tt.data, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("message(%v) = %v", tt.data, err)
			}
			m.Seq, m.HasSeq = 7, true
			got := payload.AppendTelemetry(nil, m, true)
			if string(got) != tt.want {
				t.Errorf("payload = %s; want %s", got, tt.want)
			}
			back, err := payload.DecodeTelemetry(got, "d1", time.Now(), payload.Limits{})
			if err != nil || back.Seq != 7 || len(back.Points) != len(m.Points) {
				t.Errorf("DecodeTelemetry(%s) = %+v, %v", got, back, err)
			}
		})
	}
}

// applyPatch is RFC 7386 MergePatch, to check composePatch against.
func applyPatch(target any, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	out := cloneMap(t)
	for k, v := range p {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = applyPatch(out[k], v)
		}
	}
	return out
}

func decodeJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return m
}

// TestComposePatch: where composable says so, sending composePatch(a, b)
// gives the same document as sending a then b, from any starting document.
func TestComposePatch(t *testing.T) {
	docs := []string{`{}`, `{"a":1,"b":{"c":2,"d":3}}`, `{"a":{"x":1},"b":"s"}`, `{"b":{"c":{"deep":1}}}`}
	tests := []struct {
		a, b string
		want string // "": not composable
	}{
		{`{"a":1}`, `{"b":2}`, `{"a":1,"b":2}`},
		{`{"a":1}`, `{"a":2}`, `{"a":2}`},
		{`{"a":1}`, `{"a":null}`, `{"a":null}`},
		{`{"a":null}`, `{"a":1}`, `{"a":1}`},
		{`{"b":{"c":1}}`, `{"b":{"d":null}}`, `{"b":{"c":1,"d":null}}`},
		{`{"b":{"c":null}}`, `{"b":7}`, `{"b":7}`},
		{`{"a":{"x":null}}`, `{"a":{"y":1}}`, `{"a":{"x":null,"y":1}}`},
		{`{"a":{"x":{"y":1}}}`, `{"a":{"x":{"z":null}}}`, `{"a":{"x":{"y":1,"z":null}}}`},
		{`{"b":5}`, `{"b":{"c":1,"d":null}}`, ""},
		{`{"b":null}`, `{"b":{"c":1}}`, ""},
		{`{"a":{"x":1}}`, `{"a":{"x":{"y":1}}}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.a+"+"+tt.b, func(t *testing.T) {
			if ok := composable(decodeJSON(t, tt.a), decodeJSON(t, tt.b)); ok != (tt.want != "") {
				t.Fatalf("composable(%s, %s) = %v; want %v", tt.a, tt.b, ok, tt.want != "")
			}
			if tt.want == "" {
				return
			}
			got := composePatch(decodeJSON(t, tt.a), decodeJSON(t, tt.b))
			if b, _ := json.Marshal(got); string(b) != tt.want {
				t.Errorf("composePatch(%s, %s) = %s; want %s", tt.a, tt.b, b, tt.want)
			}
			for _, d := range docs {
				seq := applyPatch(applyPatch(decodeJSON(t, d), decodeJSON(t, tt.a)), decodeJSON(t, tt.b))
				one := applyPatch(decodeJSON(t, d), composePatch(decodeJSON(t, tt.a), decodeJSON(t, tt.b)))
				s1, _ := json.Marshal(seq)
				s2, _ := json.Marshal(one)
				if string(s1) != string(s2) {
					t.Errorf("on %s: a then b = %s; composed = %s", d, s1, s2)
				}
			}
		})
	}
}

func TestResponseTarget(t *testing.T) {
	tests := []struct {
		name        string
		cid         string
		props       *paho.PublishProperties
		topic, corr string
	}{
		{"MQTT 5 response topic", "c1", &paho.PublishProperties{ResponseTopic: "devices/d/responses/c1", CorrelationData: []byte("c1")}, "devices/d/responses/c1", "c1"},
		{"response topic without correlation", "c1", &paho.PublishProperties{ResponseTopic: "r/x"}, "r/x", ""},
		{"no properties: responses/{cid}", "c1", nil, "devices/d/responses/c1", ""},
		{"empty response topic: responses/{cid}", "c2", &paho.PublishProperties{}, "devices/d/responses/c2", ""},
		{"no id, no response topic", "", nil, "", ""},
		{"id with a slash", "a/b", nil, "", ""},
		{"id with a wildcard", "a+", nil, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := responseTargetFor("d", tt.cid, tt.props)
			if got.topic != tt.topic || string(got.correlation) != tt.corr {
				t.Errorf("responseTargetFor(d, %q, %+v) = %q, %q; want %q, %q", tt.cid, tt.props, got.topic, got.correlation, tt.topic, tt.corr)
			}
		})
	}
}

func TestResponseBody(t *testing.T) {
	tests := []struct {
		name   string
		result any
		err    error
		want   string
	}{
		{"ok with result", map[string]int{"a": 1}, nil, `{"status":"ok","result":{"a":1}}`},
		{"ok without result", nil, nil, `{"status":"ok"}`},
		{"error", "ignored", errors.New("boom"), `{"status":"error","error":"boom"}`},
		{"unencodable result", func() {}, nil, `{"status":"error","error":"encoding the result: json: unsupported type: func()"}`},
		{"huge result", strings.Repeat("x", MaxPayloadBytes), nil, `{"status":"error","error":"the result is too large: 261147 bytes encoded, at most 261120"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(responseBody(tt.result, tt.err)); got != tt.want {
				t.Errorf("responseBody = %s; want %s", got, tt.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 500*time.Millisecond, time.Minute
	for n := range 80 {
		ceil := hi
		if n < 7 {
			ceil = lo << n
		}
		for range 50 {
			if d := backoff(n, lo, hi); d < 0 || d > ceil {
				t.Fatalf("backoff(%d) = %v; want within [0, %v]", n, d, ceil)
			}
		}
	}
	// Full jitter spreads the waits: not all in the top half.
	low := 0
	for range 200 {
		if backoff(3, lo, hi) < 2*time.Second {
			low++
		}
	}
	if low < 50 {
		t.Errorf("only %d of 200 waits below half the ceiling", low)
	}
}

func TestConfigLogValue(t *testing.T) {
	var b strings.Builder
	log := slog.New(slog.NewTextHandler(&b, nil))
	log.Info("connecting", "cfg", Config{Server: "mqtts://hub", DeviceID: "d1", Password: "hunter2"})
	if out := b.String(); strings.Contains(out, "hunter2") || !strings.Contains(out, "cfg.auth=password") {
		t.Errorf("logged %q; want the auth kind without the password", out)
	}
}

func TestConfig(t *testing.T) {
	ok := Config{Server: "mqtt://localhost", DeviceID: "d1"}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"minimal", func(*Config) {}, ""},
		{"mqtts with port", func(c *Config) { c.Server = "mqtts://hub.example:18883" }, ""},
		{"no server", func(c *Config) { c.Server = "" }, "Server is required"},
		{"bad scheme", func(c *Config) { c.Server = "http://hub" }, "want mqtts://"},
		{"no host", func(c *Config) { c.Server = "mqtt://:1883" }, "no host"},
		{"path", func(c *Config) { c.Server = "mqtt://hub/x" }, "only scheme, host and port"},
		{"bad device id", func(c *Config) { c.DeviceID = "a/b" }, "DeviceID"},
		{"empty device id", func(c *Config) { c.DeviceID = "" }, "DeviceID"},
		{"negative keep-alive", func(c *Config) { c.KeepAlive = -time.Second }, "KeepAlive"},
		{"huge keep-alive", func(c *Config) { c.KeepAlive = 100000 * time.Second }, "KeepAlive"},
		{"backoff max below min", func(c *Config) { c.BackoffMin, c.BackoffMax = time.Minute, time.Second }, "BackoffMax"},
		{"negative buffer", func(c *Config) { c.OfflineBuffer = -1 }, "OfflineBuffer"},
		{"certificate without TLS", func(c *Config) { c.Certificate.Certificate = [][]byte{{1}} }, "mqtts://"},
		{"missing CA file", func(c *Config) { c.Server, c.CAFile = "mqtts://hub", "/nonexistent/ca.pem" }, "CAFile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mod(&c)
			d, err := c.withDefaults()
			if err == nil {
				_, err = d.tlsConfig()
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("config = %v; want valid", err)
			case tt.wantErr != "" && (!errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("config = %v; want ErrInvalidConfig about %q", err, tt.wantErr)
			}
		})
	}
	d, _ := ok.withDefaults()
	if d.KeepAlive != DefaultKeepAlive || d.BackoffMin != DefaultBackoffMin || d.BackoffMax != DefaultBackoffMax ||
		d.OfflineBuffer != DefaultOfflineBuffer || d.SessionExpiry != DefaultSessionExpiry || d.ConnectTimeout != DefaultConnectTimeout {
		t.Errorf("defaults = %+v", d)
	}
}
