package sim

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fieldhub/fieldhub/payload"
	"github.com/fieldhub/fieldhub/topic"
)

// Payload formats of a fleet's telemetry.
const (
	// FormatJSON is DESIGN §3's JSON object, published through the SDK.
	FormatJSON = "json"
	// FormatSenML is a SenML pack (RFC 8428), published by the
	// simulator's own MQTT client (the SDK publishes JSON only).
	FormatSenML = "senml"
)

// Auth kinds for provisioning.
const (
	AuthPassword    = "password"
	AuthCertificate = "certificate"
)

// Bounds of a scenario.
const (
	MaxDevices  = 1_000_000
	MinInterval = time.Millisecond
	MaxInterval = 24 * time.Hour
)

// Scenario describes a simulated fleet. It is read from a YAML file
// (ParseScenario, LoadScenario) and completed or overridden by flags; the
// zero value of a field means its default (DefaultScenario). Field names
// in YAML are the snake_case names given in the tags.
type Scenario struct {
	// Devices is the number of devices; they are named IDPrefix followed
	// by First, First+1, … (unless a credentials file names them).
	Devices  int    `yaml:"devices"`
	First    int    `yaml:"first"`
	IDPrefix string `yaml:"id_prefix"`

	// Server is the hub's (or an edge's) MQTT URL: mqtt://host:port or
	// mqtts://host:port. CAFile is the CA the server's certificate must
	// chain to (mqtts); ServerName overrides the name checked in it.
	Server     string `yaml:"server"`
	CAFile     string `yaml:"cafile"`
	ServerName string `yaml:"server_name"`

	// Provision registers the devices through the hub's API at ServerAPI
	// with Auth (password or certificate) and uses the credentials it
	// returns. Otherwise Credentials is a file of "id,password" lines.
	Provision   bool   `yaml:"provision"`
	ServerAPI   string `yaml:"server_api"`
	Auth        string `yaml:"auth"`
	Credentials string `yaml:"credentials"`

	// Interval is the time between two messages of a device (its rate is
	// 1/Interval); commands and the twin may change it per device.
	Interval time.Duration `yaml:"interval"`
	// Format is json or senml.
	Format string `yaml:"format"`
	// Ramp spreads the first connections evenly over this time;
	// ConnectConcurrency bounds the connections being set up at once.
	Ramp               time.Duration `yaml:"ramp"`
	ConnectConcurrency int           `yaml:"connect_concurrency"`
	// Duration ends the run (0: until interrupted).
	Duration time.Duration `yaml:"duration"`
	// StatusEvery is the time between two status lines (0: default).
	StatusEvery time.Duration `yaml:"status_every"`
	// Firmware is the version the devices report in their twin.
	Firmware string `yaml:"firmware"`
	// OfflineBuffer bounds each device's unacknowledged messages (JSON).
	OfflineBuffer int `yaml:"offline_buffer"`

	// Metrics are the readings of every message; each device gets its
	// own instance of each waveform (with its own phase, noise and
	// spread). Default: DefaultMetricSpecs.
	Metrics []MetricSpec `yaml:"metrics"`
}

// Waveform kinds of a MetricSpec.
const (
	WaveSine       = "sine"
	WaveRandomWalk = "random_walk"
	WaveSteps      = "steps"
	WaveVibration  = "vibration"
	WaveConstant   = "constant"
)

// MetricSpec describes one metric of every device of a scenario.
type MetricSpec struct {
	Name string `yaml:"name"`
	// Wave is sine, random_walk, steps, vibration or constant.
	Wave string `yaml:"wave"`
	// Decimals rounds the values (default 2).
	Decimals *int `yaml:"decimals,omitempty"`
	// Noise is the standard deviation of Gaussian noise added to sine,
	// steps and vibration.
	Noise float64 `yaml:"noise,omitempty"`
	// Spread varies the central value (mean, start, base, value, levels)
	// across devices: each device's is shifted by a uniform random amount
	// in [-Spread, Spread].
	Spread float64 `yaml:"spread,omitempty"`

	// sine: Mean + Amplitude·sin(2πt/Period + a random phase).
	Mean      float64       `yaml:"mean,omitempty"`
	Amplitude float64       `yaml:"amplitude,omitempty"`
	Period    time.Duration `yaml:"period,omitempty"`
	// random_walk: from Start, a Gaussian step of σ Step per sample,
	// kept within [Min, Max].
	Start float64 `yaml:"start,omitempty"`
	Step  float64 `yaml:"step,omitempty"`
	Min   float64 `yaml:"min,omitempty"`
	Max   float64 `yaml:"max,omitempty"`
	// steps: one of Levels, changing on average every Every.
	Levels []float64     `yaml:"levels,omitempty"`
	Every  time.Duration `yaml:"every,omitempty"`
	// vibration: an RMS level Base with noise and a spike to about
	// SpikeLevel on average every SpikeEvery.
	Base       float64       `yaml:"base,omitempty"`
	SpikeLevel float64       `yaml:"spike_level,omitempty"`
	SpikeEvery time.Duration `yaml:"spike_every,omitempty"`
	// constant: Value.
	Value float64 `yaml:"value,omitempty"`

	// Anomaly, when set, adds anomalies to any wave: Magnitude added for
	// For, on average every Every.
	Anomaly *AnomalySpec `yaml:"anomaly,omitempty"`
}

// AnomalySpec describes the anomalies added to a metric (see Anomaly).
type AnomalySpec struct {
	Every     time.Duration `yaml:"every"`
	Magnitude float64       `yaml:"magnitude"`
	For       time.Duration `yaml:"for"`
}

func intp(i int) *int { return &i }

// DefaultMetricSpecs are the metrics of a fleet whose scenario names none:
// a temperature (sine with noise, and a +15 °C anomaly for 20 s about
// every 30 min), a humidity (random walk), a vibration (noise with a spike
// about every 10 min) and an electrical power that steps between off,
// half and full load.
func DefaultMetricSpecs() []MetricSpec {
	return []MetricSpec{
		{Name: "temperature", Wave: WaveSine, Mean: 21, Amplitude: 2.5, Period: 10 * time.Minute, Noise: 0.15, Decimals: intp(2), Spread: 3,
			Anomaly: &AnomalySpec{Every: 30 * time.Minute, Magnitude: 15, For: 20 * time.Second}},
		{Name: "humidity", Wave: WaveRandomWalk, Start: 45, Step: 0.3, Min: 20, Max: 90, Decimals: intp(1), Spread: 10},
		{Name: "vibration", Wave: WaveVibration, Base: 0.02, Noise: 0.005, SpikeLevel: 0.9, SpikeEvery: 10 * time.Minute, Decimals: intp(4)},
		{Name: "power", Wave: WaveSteps, Levels: []float64{0, 750, 1500}, Every: 5 * time.Minute, Noise: 5, Decimals: intp(0)},
	}
}

// DefaultScenario returns the defaults of every Scenario field.
func DefaultScenario() Scenario {
	return Scenario{
		Devices:            10,
		First:              1,
		IDPrefix:           "sim-",
		Server:             "mqtt://127.0.0.1:1883",
		ServerAPI:          "http://127.0.0.1:8080",
		Auth:               AuthPassword,
		Interval:           time.Second,
		Format:             FormatJSON,
		ConnectConcurrency: 64,
		StatusEvery:        5 * time.Second,
		Firmware:           DefaultFirmware,
		OfflineBuffer:      1000,
		Metrics:            DefaultMetricSpecs(),
	}
}

// ErrInvalidScenario is wrapped by the errors of an unusable scenario.
var ErrInvalidScenario = errors.New("invalid scenario")

// LoadScenario reads a YAML scenario file over the defaults.
func LoadScenario(path string) (Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Scenario{}, fmt.Errorf("scenario: %w", err)
	}
	s, err := ParseScenario(b)
	if err != nil {
		return s, fmt.Errorf("scenario %s: %w", path, err)
	}
	return s, nil
}

// ParseScenario reads a YAML scenario over the defaults. Unknown fields
// are errors; a scenario that names metrics replaces the default ones.
// Devices stays 0 when the file does not set it (the caller picks: the
// default, or every device of a credentials file). It does not validate
// (see Validate): flags may still change it.
func ParseScenario(b []byte) (Scenario, error) {
	s := DefaultScenario()
	s.Devices = 0 // unset: the caller's default, or every device of the credentials file
	s.Metrics = nil
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil && !errors.Is(err, errEOF) {
		return s, fmt.Errorf("%w: %w", ErrInvalidScenario, err)
	}
	if len(s.Metrics) == 0 {
		s.Metrics = DefaultMetricSpecs()
	}
	return s, nil
}

// errEOF is what the YAML decoder returns for an empty document.
var errEOF = func() error {
	var v struct{}
	return yaml.NewDecoder(bytes.NewReader(nil)).Decode(&v)
}()

// DeviceID returns the id of device n (0-based) of the scenario.
func (s Scenario) DeviceID(n int) string {
	return s.IDPrefix + strconv.Itoa(s.First+n)
}

// Validate checks the scenario; its errors wrap ErrInvalidScenario.
func (s Scenario) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidScenario}, args...)...)
	}
	if s.Devices < 1 || s.Devices > MaxDevices {
		return bad("devices: %d, want 1..%d", s.Devices, MaxDevices)
	}
	if s.First < 0 {
		return bad("first: %d is negative", s.First)
	}
	if s.Credentials == "" {
		for _, n := range []int{0, s.Devices - 1} {
			if id := s.DeviceID(n); !topic.ValidDeviceID(id) {
				return bad("id_prefix %q makes the device id %q: want 1–128 characters of [A-Za-z0-9._:-]", s.IDPrefix, id)
			}
		}
	}
	u, err := url.Parse(s.Server)
	if err != nil || u.Host == "" {
		return bad("server %q: want mqtt://host:port or mqtts://host:port", s.Server)
	}
	switch u.Scheme {
	case "mqtt", "tcp", "mqtts", "tls", "ssl":
	default:
		return bad("server %q: want mqtt://host:port or mqtts://host:port", s.Server)
	}
	if s.Provision && s.Credentials != "" {
		return bad("provision and credentials exclude each other")
	}
	switch s.Auth {
	case AuthPassword:
	case AuthCertificate:
		if !s.Provision {
			return bad("auth certificate needs provision (a credentials file holds passwords)")
		}
		if u.Scheme == "mqtt" || u.Scheme == "tcp" {
			return bad("auth certificate needs an mqtts:// server")
		}
	default:
		return bad("auth %q: want password or certificate", s.Auth)
	}
	if s.Provision && s.ServerAPI == "" {
		return bad("provision needs server_api")
	}
	if s.Interval < MinInterval || s.Interval > MaxInterval {
		return bad("interval %v: want %v..%v", s.Interval, MinInterval, MaxInterval)
	}
	if s.Format != FormatJSON && s.Format != FormatSenML {
		return bad("format %q: want json or senml", s.Format)
	}
	if s.Ramp < 0 || s.Duration < 0 || s.StatusEvery < 0 {
		return bad("ramp, duration and status_every must not be negative")
	}
	if s.ConnectConcurrency < 1 {
		return bad("connect_concurrency: %d, want at least 1", s.ConnectConcurrency)
	}
	if s.OfflineBuffer < 1 {
		return bad("offline_buffer: %d, want at least 1", s.OfflineBuffer)
	}
	if len(s.Metrics) == 0 {
		return bad("no metrics")
	}
	seen := map[string]bool{}
	for i, m := range s.Metrics {
		if err := m.validate(); err != nil {
			return bad("metrics[%d] (%s): %v", i, m.Name, err)
		}
		if seen[m.Name] {
			return bad("metrics[%d]: %q named twice", i, m.Name)
		}
		seen[m.Name] = true
	}
	return nil
}

func (m MetricSpec) validate() error {
	if m.Name == "" {
		return errors.New("name is required")
	}
	// The hub's decoder has the last word on metric names.
	probe := payload.EncodeTelemetry(&payload.Message{Points: []payload.Point{{Metric: m.Name, Value: payload.NumberValue(1)}}}, false)
	if _, err := payload.DecodeTelemetry(probe, "", time.Now(), payload.Limits{}); err != nil {
		return fmt.Errorf("name %q: %w", m.Name, err)
	}
	if m.Decimals != nil && (*m.Decimals < 0 || *m.Decimals > 12) {
		return fmt.Errorf("decimals: %d, want 0..12", *m.Decimals)
	}
	if m.Noise < 0 || m.Spread < 0 {
		return errors.New("noise and spread must not be negative")
	}
	switch m.Wave {
	case WaveSine:
		if m.Period <= 0 {
			return errors.New("sine: period must be positive")
		}
	case WaveRandomWalk:
		if m.Min >= m.Max {
			return fmt.Errorf("random_walk: min %g must be below max %g", m.Min, m.Max)
		}
		if m.Step <= 0 {
			return errors.New("random_walk: step must be positive")
		}
	case WaveSteps:
		if len(m.Levels) == 0 || m.Every <= 0 {
			return errors.New("steps: want levels and a positive every")
		}
	case WaveVibration:
		if m.SpikeEvery < 0 {
			return errors.New("vibration: spike_every must not be negative")
		}
	case WaveConstant:
	default:
		return fmt.Errorf("wave %q: want sine, random_walk, steps, vibration or constant", m.Wave)
	}
	if a := m.Anomaly; a != nil && (a.Every <= 0 || a.For < 0) {
		return errors.New("anomaly: want a positive every and a non-negative for")
	}
	return nil
}

// Build returns the waveform of this metric for one device; rng draws the
// device's spread and phase.
func (m MetricSpec) Build(rng *rand.Rand) Waveform {
	dec := 2
	if m.Decimals != nil {
		dec = *m.Decimals
	}
	shift := 0.0
	if m.Spread > 0 {
		shift = (2*rng.Float64() - 1) * m.Spread
	}
	var w Waveform
	switch m.Wave {
	case WaveSine:
		w = &Sine{Mean: m.Mean + shift, Amplitude: m.Amplitude, Noise: m.Noise, Period: m.Period, Decimals: dec, Phase: 2 * 3.141592653589793 * rng.Float64()}
	case WaveRandomWalk:
		start := min(max(m.Start+shift, m.Min), m.Max)
		w = &RandomWalk{Value: start, Step: m.Step, Min: m.Min, Max: m.Max, Decimals: dec}
	case WaveSteps:
		levels := make([]float64, len(m.Levels))
		for i, l := range m.Levels {
			levels[i] = l + shift
		}
		w = &Steps{Levels: levels, Every: m.Every, Noise: m.Noise, Decimals: dec}
	case WaveVibration:
		w = &Vibration{Base: m.Base + shift, Noise: m.Noise, SpikeLevel: m.SpikeLevel, SpikeEvery: m.SpikeEvery}
	default:
		w = Constant{Value: round(m.Value+shift, dec)}
	}
	if a := m.Anomaly; a != nil {
		w = &Anomaly{Wave: w, Magnitude: a.Magnitude, Every: a.Every, For: a.For, Decimals: dec}
	}
	return w
}
