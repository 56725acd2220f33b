// Package sim simulates devices that publish realistic telemetry over real
// MQTT connections.
//
// Waveforms (Sine, RandomWalk, Steps, Vibration, Constant, and Anomaly
// around any of them) produce the readings. Run is the demo's lean device
// loop. Fleet is `fieldhub sim`: many devices built on the device SDK
// from a Scenario (flags or YAML), with ramp-up, command answers
// ("reboot", "set_interval", "*" echoing its params), twin reporting and a
// desired "interval"; SenML devices use the package's own MQTT client,
// since the SDK publishes JSON only.
package sim

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/payload"
	"github.com/fieldhub/fieldhub/topic"
)

// Waveform produces a metric's value at elapsed time t.
type Waveform interface {
	Next(t time.Duration) payload.Value
}

// Sine is a slow oscillation plus Gaussian noise, rounded to Decimals.
type Sine struct {
	Mean, Amplitude, Noise float64
	Period                 time.Duration
	Decimals               int
	Phase                  float64
	rng                    *rand.Rand
}

// Next implements Waveform.
func (s *Sine) Next(t time.Duration) payload.Value {
	if s.rng == nil {
		s.rng = rand.New(rand.NewPCG(rand.Uint64(), 0))
	}
	v := s.Mean + s.Amplitude*math.Sin(2*math.Pi*t.Seconds()/s.Period.Seconds()+s.Phase) + s.Noise*s.rng.NormFloat64()
	return payload.NumberValue(round(v, s.Decimals))
}

// RandomWalk moves by a Gaussian step each sample, kept within [Min, Max].
type RandomWalk struct {
	Value, Step, Min, Max float64
	Decimals              int
	rng                   *rand.Rand
}

// Next implements Waveform.
func (w *RandomWalk) Next(time.Duration) payload.Value {
	if w.rng == nil {
		w.rng = rand.New(rand.NewPCG(rand.Uint64(), 1))
	}
	w.Value += w.Step * w.rng.NormFloat64()
	w.Value = math.Max(w.Min, math.Min(w.Max, w.Value))
	return payload.NumberValue(round(w.Value, w.Decimals))
}

// Vibration is an RMS level with noise and, now and then, a spike: the
// anomaly that rules and the edge pipeline are meant to catch.
type Vibration struct {
	Base, Noise, SpikeLevel float64
	SpikeEvery              time.Duration // mean time between spikes
	// SpikeAt, when set, injects one spike lasting SpikeFor at this time
	// after the start (the demo's anomaly).
	SpikeAt, SpikeFor time.Duration
	rng               *rand.Rand
	last              time.Duration // t of the previous sample
}

// Next implements Waveform.
func (v *Vibration) Next(t time.Duration) payload.Value {
	if v.rng == nil {
		v.rng = rand.New(rand.NewPCG(rand.Uint64(), 2))
	}
	x := v.Base + math.Abs(v.Noise*v.rng.NormFloat64())
	dt := t - v.last // the chance of a spike grows with the time since the last sample
	v.last = t
	if v.SpikeEvery > 0 && dt > 0 && v.rng.Float64() < float64(dt)/float64(v.SpikeEvery) {
		x = v.SpikeLevel * (1 + 0.2*v.rng.Float64())
	}
	if v.SpikeAt > 0 && t >= v.SpikeAt && t < v.SpikeAt+max(v.SpikeFor, time.Second) {
		x = v.SpikeLevel * (1 + 0.2*v.rng.Float64())
	}
	return payload.NumberValue(round(x, 4))
}

func round(v float64, decimals int) float64 {
	p := math.Pow10(decimals)
	return math.Round(v*p) / p
}

// Metric is a named waveform.
type Metric struct {
	Name string
	Wave Waveform
}

// DefaultFirmware is the firmware version simulated devices report in
// their twin unless told otherwise.
const DefaultFirmware = "1.0.0"

// Device is one simulated device.
type Device struct {
	ID       string
	Password string
	Metrics  []Metric
	// Firmware is reported in the twin (reported "firmware") on every
	// connection; empty means DefaultFirmware.
	Firmware string
}

// DefaultMetrics returns a device's temperature, humidity and vibration.
func DefaultMetrics(i int) []Metric {
	return []Metric{
		{"temperature", &Sine{Mean: 21 + float64(i%5), Amplitude: 2.5, Noise: 0.15, Period: 10 * time.Minute, Decimals: 2, Phase: float64(i)}},
		{"humidity", &RandomWalk{Value: 45 + float64(i%7), Step: 0.3, Min: 20, Max: 90, Decimals: 1}},
		{"vibration", &Vibration{Base: 0.02, Noise: 0.005, SpikeLevel: 0.9, SpikeEvery: 5 * time.Minute}},
	}
}

// Config says where and how often devices publish.
type Config struct {
	Addr     string      // host:port of the broker
	TLS      *tls.Config // nil for plain TCP
	Interval time.Duration
	Logger   *slog.Logger
}

// Run publishes d's telemetry at QoS 1 every cfg.Interval until ctx ends,
// reconnecting with exponential backoff and jitter. A message whose
// PUBACK did not arrive is sent again, with the same seq, after reconnect.
func Run(ctx context.Context, cfg Config, d Device) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("device", d.ID)
	// Counting from the boot time keeps seq increasing across restarts.
	seq := uint64(time.Now().UnixMilli())
	start := time.Now()
	var pending []byte // the message not yet acknowledged
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		c, err := connect(ctx, cfg, d)
		if err != nil {
			wait := backoff/2 + rand.N(backoff)
			log.Warn("connect failed; retrying", "err", err, "in", wait.Round(time.Millisecond))
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = 500 * time.Millisecond
		err = publishLoop(ctx, c, cfg, d, &seq, start, &pending, log)
		c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		if err != nil && ctx.Err() == nil {
			log.Warn("connection lost", "err", err)
		}
	}
	return nil
}

func connect(ctx context.Context, cfg Config, d Device) (*paho.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var conn net.Conn
	var err error
	if cfg.TLS != nil {
		conn, err = (&tls.Dialer{Config: cfg.TLS}).DialContext(dctx, "tcp", cfg.Addr)
	} else {
		conn, err = (&net.Dialer{}).DialContext(dctx, "tcp", cfg.Addr)
	}
	if err != nil {
		return nil, err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ack, err := c.Connect(dctx, &paho.Connect{
		ClientID: d.ID, Username: d.ID, UsernameFlag: true,
		Password: []byte(d.Password), PasswordFlag: d.Password != "",
		KeepAlive: 30, CleanStart: true,
	})
	if err != nil {
		conn.Close()
		if ack != nil {
			return nil, fmt.Errorf("connect refused: reason 0x%02x %s", ack.ReasonCode, ack.Properties.ReasonString)
		}
		return nil, err
	}
	return c, nil
}

// reportFirmware sends {"firmware": …} as a reported twin patch.
func reportFirmware(ctx context.Context, c *paho.Client, d Device) error {
	fw := d.Firmware
	if fw == "" {
		fw = DefaultFirmware
	}
	body, err := json.Marshal(map[string]string{"firmware": fw})
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := c.Publish(pctx, &paho.Publish{Topic: topic.TwinReported(d.ID), QoS: 1, Payload: body})
	if err == nil && resp != nil && resp.ReasonCode >= 0x80 {
		err = fmt.Errorf("refused: reason 0x%02x", resp.ReasonCode)
	}
	return err
}

// publishLoop publishes telemetry on c until it fails or ctx ends, and
// reports the firmware once per connection (tried again each interval
// until the broker acknowledges it: an edge gateway does so only while its
// uplink is up).
func publishLoop(ctx context.Context, c *paho.Client, cfg Config, d Device, seq *uint64, start time.Time, pending *[]byte, log *slog.Logger) error {
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	reported := false
	for {
		if !reported {
			err := reportFirmware(ctx, c, d)
			reported = err == nil
			if err != nil {
				log.Debug("reporting the firmware failed; trying again", "err", err)
			}
		}
		if *pending == nil {
			*seq++
			m := &payload.Message{Device: d.ID, Seq: *seq, HasSeq: true}
			now := time.Now()
			for _, mt := range d.Metrics {
				m.Points = append(m.Points, payload.Point{Metric: mt.Name, TS: now.UnixNano(), Value: mt.Wave.Next(now.Sub(start))})
			}
			*pending = payload.EncodeTelemetry(m, true)
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := c.Publish(pctx, &paho.Publish{Topic: topic.Telemetry(d.ID), QoS: 1, Payload: *pending})
		cancel()
		if resp != nil && resp.ReasonCode >= 0x80 {
			// Refused for good: sending it again would be refused again.
			*pending = nil
			return errors.New("telemetry refused: " + resp.Properties.ReasonString)
		}
		if err != nil {
			return err
		}
		*pending = nil
		select {
		case <-ctx.Done():
			return nil
		case <-c.Done():
			return errors.New("connection closed")
		case <-t.C:
		}
	}
}
