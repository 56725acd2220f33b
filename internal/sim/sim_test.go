package sim

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/payload"
)

func TestParseScenario(t *testing.T) {
	s, err := ParseScenario([]byte(`
devices: 250
first: 1000
id_prefix: plant-a-
server: mqtts://hub.example.com:8883
cafile: ca.pem
provision: true
server_api: https://hub.example.com:8080
auth: certificate
interval: 2s
format: senml
ramp: 30s
duration: 1h
firmware: 2.1.0
metrics:
  - name: flow
    wave: steps
    levels: [0, 12.5, 25]
    every: 10m
    decimals: 1
  - name: bearing.temp
    wave: sine
    mean: 60
    amplitude: 5
    period: 1h
    noise: 0.2
    anomaly: {every: 2h, magnitude: 30, for: 1m}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.Devices != 250 || s.DeviceID(0) != "plant-a-1000" || s.DeviceID(249) != "plant-a-1249" || s.Interval != 2*time.Second ||
		s.Ramp != 30*time.Second || s.Duration != time.Hour || s.Format != FormatSenML || s.Auth != AuthCertificate {
		t.Errorf("scenario %+v", s)
	}
	if s.ConnectConcurrency != DefaultScenario().ConnectConcurrency || s.StatusEvery != 5*time.Second {
		t.Errorf("defaults not kept: %+v", s)
	}
	if len(s.Metrics) != 2 || s.Metrics[1].Anomaly == nil || s.Metrics[1].Anomaly.For != time.Minute || *s.Metrics[0].Decimals != 1 {
		t.Errorf("metrics %+v", s.Metrics)
	}

	// An empty file is the defaults, with the default metrics.
	s, err = ParseScenario(nil)
	if err != nil || len(s.Metrics) != len(DefaultMetricSpecs()) || s.Devices != 0 {
		t.Errorf("empty scenario: %+v, %v", s, err)
	}

	for _, tc := range []struct{ yaml, want string }{
		{"devcies: 3\n", "devcies"},
		{"interval: soon\n", "soon"},
		{"metrics: [{name: x, wave: square}]\n", "square"},
	} {
		s, err := ParseScenario([]byte(tc.yaml))
		if err == nil {
			s.Devices = 1
			err = s.Validate()
		}
		if !errors.Is(err, ErrInvalidScenario) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v; want an invalid scenario naming %q", tc.yaml, err, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := DefaultScenario()
	ok.Provision = true
	if err := ok.Validate(); err != nil {
		t.Fatalf("the defaults with provision: %v", err)
	}
	for name, change := range map[string]func(*Scenario){
		"no devices":            func(s *Scenario) { s.Devices = 0 },
		"bad prefix":            func(s *Scenario) { s.IDPrefix = "a/b" },
		"bad server":            func(s *Scenario) { s.Server = "http://x:1" },
		"certificate over mqtt": func(s *Scenario) { s.Auth = AuthCertificate },
		"certificate from a file": func(s *Scenario) {
			s.Auth, s.Provision, s.Credentials, s.Server = AuthCertificate, false, "f", "mqtts://x:1"
		},
		"both credential sources": func(s *Scenario) { s.Credentials = "f" },
		"interval too short":      func(s *Scenario) { s.Interval = time.Microsecond },
		"format":                  func(s *Scenario) { s.Format = "cbor" },
		"sine without period":     func(s *Scenario) { s.Metrics = []MetricSpec{{Name: "x", Wave: WaveSine}} },
		"walk bounds": func(s *Scenario) {
			s.Metrics = []MetricSpec{{Name: "x", Wave: WaveRandomWalk, Min: 5, Max: 1, Step: 1}}
		},
		"metric twice":    func(s *Scenario) { s.Metrics = append(s.Metrics, s.Metrics[0]) },
		"bad metric name": func(s *Scenario) { s.Metrics = []MetricSpec{{Name: "a\x01", Wave: WaveConstant}} },
		"negative ramp":   func(s *Scenario) { s.Ramp = -time.Second },
	} {
		s := ok
		s.Metrics = DefaultMetricSpecs()
		change(&s)
		if err := s.Validate(); !errors.Is(err, ErrInvalidScenario) {
			t.Errorf("%s: Validate = %v; want ErrInvalidScenario", name, err)
		}
	}
}

func TestWaveforms(t *testing.T) {
	steps := &Steps{Levels: []float64{0, 10, 20}, Every: time.Minute}
	seen := map[float64]bool{}
	for i := range 3600 {
		v := steps.Next(time.Duration(i) * time.Second).Num
		if v != 0 && v != 10 && v != 20 {
			t.Fatalf("steps gave %v", v)
		}
		seen[v] = true
	}
	if len(seen) != 3 {
		t.Errorf("an hour of steps every minute visited %v", seen)
	}

	an := &Anomaly{Wave: Constant{Value: 20}, Magnitude: 50, Every: time.Minute, For: 10 * time.Second, Decimals: 1}
	high := 0
	for i := range 3600 {
		v := an.Next(time.Duration(i) * time.Second).Num
		if v > 40 {
			high++
		} else if v != 20 {
			t.Fatalf("outside an anomaly the value is %v", v)
		}
	}
	// About 60 anomalies of 10 samples each in an hour.
	if an.Anomalies < 20 || an.Anomalies > 120 || high < 10*an.Anomalies/2 || high > 10*an.Anomalies {
		t.Errorf("%d anomalies, %d samples high", an.Anomalies, high)
	}

	// Every default metric builds and gives finite numbers; spread keeps
	// a random walk inside its bounds.
	rng := rand.New(rand.NewPCG(1, 2))
	for _, m := range DefaultMetricSpecs() {
		w := m.Build(rng)
		for i := range 100 {
			v := w.Next(time.Duration(i) * time.Second)
			if v.Kind != payload.Number || math.IsNaN(v.Num) || math.IsInf(v.Num, 0) {
				t.Fatalf("%s gave %+v", m.Name, v)
			}
			if m.Wave == WaveRandomWalk && (v.Num < m.Min || v.Num > m.Max) {
				t.Fatalf("%s left [%v, %v]: %v", m.Name, m.Min, m.Max, v.Num)
			}
		}
	}
}

func TestAppendSenML(t *testing.T) {
	ts := time.Date(2026, 11, 27, 10, 0, 0, 123e6, time.UTC)
	b := AppendSenML(nil, ts, map[string]any{"temperature": 21.25, "door": true, "mode": "auto", "count": 3, "skip": []int{1}})
	want := `[{"bt":1795773600.123,"n":"count","v":3},{"n":"door","vb":true},{"n":"mode","vs":"auto"},{"n":"temperature","v":21.25}]`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	m, err := payload.DecodeTelemetry(b, "d", time.Now(), payload.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Points) != 4 || m.Points[3].Metric != "temperature" || m.Points[3].Value.Num != 21.25 || time.Duration(m.Points[0].TS-ts.UnixNano()).Abs() > time.Millisecond {
		t.Errorf("decoded %+v", m.Points)
	}
}

func TestParseCredentials(t *testing.T) {
	c, err := ParseCredentials(strings.NewReader("# fleet\nd-1,pw,with,commas\n\n d-2 ,x\r\n"))
	if err != nil || len(c) != 2 || c[0].Password != "pw,with,commas" || c[1].ID != "d-2" || c[1].Password != "x" {
		t.Errorf("got %+v, %v", c, err)
	}
	for _, bad := range []string{"", "d-1\n", "d-1,\n", "a/b,x\n", "d,x\nd,y\n"} {
		if _, err := ParseCredentials(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseInterval(t *testing.T) {
	for raw, want := range map[string]time.Duration{`5`: 5 * time.Second, `0.25`: 250 * time.Millisecond, `"1m"`: time.Minute} {
		d, rep, err := parseInterval(json.RawMessage(raw))
		if err != nil || d != want {
			t.Errorf("%s: %v, %v", raw, d, err)
		}
		if b, _ := json.Marshal(rep); string(b) != raw {
			t.Errorf("%s is reported as %s", raw, b)
		}
	}
	for _, raw := range []string{`0`, `-1`, `"soon"`, `true`, `"48h"`} {
		if _, _, err := parseInterval(json.RawMessage(raw)); err == nil {
			t.Errorf("%s: no error", raw)
		}
	}
}

func TestPutNewest(t *testing.T) {
	ch := make(chan int, 1)
	putNewest(ch, 1)
	putNewest(ch, 2)
	if v := <-ch; v != 2 {
		t.Errorf("got %d, want the newest", v)
	}
}

// TestExampleScenario keeps the scenario shown in README.md valid.
func TestExampleScenario(t *testing.T) {
	s, err := LoadScenario("testdata/plant.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.Devices != 2000 || s.Auth != AuthCertificate || len(s.Metrics) != 5 || s.Metrics[4].Name != "line.voltage" {
		t.Errorf("scenario %+v", s)
	}
}
