package sim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldhub/fieldhub/device"
)

// FleetConfig is a fleet to run: a validated scenario and one credential
// per device.
type FleetConfig struct {
	Scenario Scenario
	// Credentials name the devices, in order; len(Credentials) devices
	// run (Scenario.Devices is not read).
	Credentials []Credential
	// RootCAs, when set, are trusted for an mqtts server instead of
	// Scenario.CAFile.
	RootCAs *x509.CertPool
	// OnStatus, when set, is called every Scenario.StatusEvery from Run's
	// goroutine.
	OnStatus func(Status)
	// Logger receives the fleet's and the devices' logs; nil discards.
	Logger *slog.Logger
}

// Status is a snapshot of a fleet's counters.
type Status struct {
	Elapsed time.Duration
	Devices int
	// Connected is the devices connected now; EverConnected those that
	// connected at least once; Refused those the hub refused for good.
	Connected, EverConnected, Refused int
	// Telemetry messages: acknowledged by the hub, waiting in offline
	// buffers, dropped (buffer full, or SenML while disconnected),
	// refused by the hub.
	Published                uint64
	Buffered                 int
	Dropped, PayloadsRefused uint64
	// Reconnects counts connections re-established after a drop.
	Reconnects uint64
	// CommandsAnswered and CommandsFailed count the commands the devices
	// answered with ok and with an error; Reboots the reboot commands.
	CommandsAnswered, CommandsFailed, Reboots uint64
	// TwinReports counts reported-state patches acknowledged;
	// DesiredApplied the desired states applied.
	TwinReports, DesiredApplied uint64
	// ConnectP50 and ConnectP99 are the times from a device's start (after
	// its ramp delay) to its first connection.
	ConnectP50, ConnectP99 time.Duration
}

// Fleet runs simulated devices. Create it with NewFleet, run it with Run.
type Fleet struct {
	cfg   FleetConfig
	sc    Scenario
	log   *slog.Logger
	tls   *tls.Config // nil for plain TCP
	devs  []*simDevice
	sem   chan struct{}
	start time.Time

	answered, failed, reboots, reports, applied atomic.Uint64
	refused                                     atomic.Int64

	connMu    sync.Mutex
	connTimes []time.Duration
}

// simDevice is one simulated device; its goroutine owns the link.
type simDevice struct {
	n       int
	cred    Credential
	metrics []Metric
	born    time.Time // start of the current boot's uptime
	boots   int

	rebootCh   chan time.Duration
	intervalCh chan intervalSetting
	desiredCh  chan map[string]any

	mu        sync.Mutex
	link      link
	totals    device.Stats // of the links closed before
	connected bool         // at least once
}

// intervalSetting is a new interval and how to report it (the form it was
// given in: seconds or a duration string).
type intervalSetting struct {
	d      time.Duration
	report any
}

// NewFleet checks cfg and prepares the devices.
func NewFleet(cfg FleetConfig) (*Fleet, error) {
	sc := cfg.Scenario
	if len(cfg.Credentials) == 0 {
		return nil, fmt.Errorf("%w: no devices", ErrInvalidScenario)
	}
	sc.Devices = len(cfg.Credentials)
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	if sc.StatusEvery == 0 {
		sc.StatusEvery = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{cfg: cfg, sc: sc, log: log, sem: make(chan struct{}, sc.ConnectConcurrency)}
	addr, useTLS, err := parseServer(sc.Server)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidScenario, err)
	}
	if useTLS {
		pool := cfg.RootCAs
		if pool == nil && sc.CAFile != "" {
			pem, err := os.ReadFile(sc.CAFile)
			if err != nil {
				return nil, fmt.Errorf("cafile: %w", err)
			}
			pool = x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("cafile: no certificate in %s", sc.CAFile)
			}
		}
		name := sc.ServerName
		if name == "" {
			name, _, _ = net.SplitHostPort(addr)
		}
		f.tls = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: name}
	}
	seed := rand.Uint64()
	for i, c := range cfg.Credentials {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		d := &simDevice{n: i, cred: c,
			rebootCh: make(chan time.Duration, 1), intervalCh: make(chan intervalSetting, 1), desiredCh: make(chan map[string]any, 1)}
		for _, m := range sc.Metrics {
			d.metrics = append(d.metrics, Metric{Name: m.Name, Wave: m.Build(rng)})
		}
		f.devs = append(f.devs, d)
	}
	return f, nil
}

// Run runs the fleet until ctx ends (or Scenario.Duration passes), then
// closes every device and returns the final status. Device i starts at
// i·Ramp/N. It returns an error only when no device could connect.
func (f *Fleet) Run(ctx context.Context) (Status, error) {
	if f.sc.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.sc.Duration)
		defer cancel()
	}
	f.start = time.Now()
	var wg sync.WaitGroup
	n := len(f.devs)
	for i, d := range f.devs {
		delay := time.Duration(0)
		if n > 1 {
			delay = f.sc.Ramp * time.Duration(i) / time.Duration(n)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.runDevice(ctx, d, delay)
		}()
	}
	t := time.NewTicker(f.sc.StatusEvery)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-t.C:
			if f.cfg.OnStatus != nil {
				f.cfg.OnStatus(f.Status())
			}
		}
	}
	t.Stop()
	wg.Wait()
	st := f.Status()
	if st.EverConnected == 0 {
		return st, errors.New("sim: no device connected")
	}
	return st, nil
}

// Status returns the fleet's counters now.
func (f *Fleet) Status() Status {
	s := Status{Devices: len(f.devs), Refused: int(f.refused.Load()),
		CommandsAnswered: f.answered.Load(), CommandsFailed: f.failed.Load(), Reboots: f.reboots.Load(),
		TwinReports: f.reports.Load(), DesiredApplied: f.applied.Load()}
	if !f.start.IsZero() {
		s.Elapsed = time.Since(f.start)
	}
	for _, d := range f.devs {
		d.mu.Lock()
		st := d.totals
		if d.link != nil {
			cur := d.link.Stats()
			st.Published += cur.Published
			st.Dropped += cur.Dropped
			st.Refused += cur.Refused
			st.Reconnects += cur.Reconnects
			st.Buffered = cur.Buffered
			st.Connected = cur.Connected
		}
		if d.connected {
			s.EverConnected++
		}
		d.mu.Unlock()
		if st.Connected {
			s.Connected++
		}
		s.Published += st.Published
		s.Buffered += st.Buffered
		s.Dropped += st.Dropped
		s.PayloadsRefused += st.Refused
		s.Reconnects += st.Reconnects
	}
	f.connMu.Lock()
	if len(f.connTimes) > 0 {
		ts := slices.Clone(f.connTimes)
		slices.Sort(ts)
		s.ConnectP50 = ts[(len(ts)-1)/2]
		s.ConnectP99 = ts[(len(ts)-1)*99/100]
	}
	f.connMu.Unlock()
	return s
}

// runDevice runs device d until ctx ends: boots it after delay, and again
// after each reboot command.
func (f *Fleet) runDevice(ctx context.Context, d *simDevice, delay time.Duration) {
	if !sleep(ctx, delay) {
		return
	}
	first := true
	for {
		l, err := f.connect(ctx, d, first)
		if err != nil {
			return
		}
		first = false
		reboot, wait := f.serve(ctx, d, l)
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := l.Close(cctx); err != nil && !errors.Is(err, device.ErrClosed) {
			f.log.Debug("closing a device", "device", d.cred.ID, "err", err)
		}
		cancel()
		d.mu.Lock()
		st := d.link.Stats()
		d.totals.Published += st.Published
		d.totals.Dropped += st.Dropped
		d.totals.Refused += st.Refused
		d.totals.Reconnects += st.Reconnects
		d.link = nil
		d.mu.Unlock()
		if !reboot || !sleep(ctx, wait) {
			return
		}
	}
}

// connect connects d, with at most ConnectConcurrency connections being
// set up at once; it gives up when ctx ends or the hub refuses the device
// for good.
func (f *Fleet) connect(ctx context.Context, d *simDevice, first bool) (link, error) {
	start := time.Now()
	for attempt := 0; ; attempt++ {
		select {
		case f.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		l, err := f.dial(actx, d)
		cancel()
		<-f.sem
		if err == nil {
			if first {
				f.connMu.Lock()
				f.connTimes = append(f.connTimes, time.Since(start))
				f.connMu.Unlock()
			}
			d.mu.Lock()
			d.link, d.connected = l, true
			d.boots++
			d.born = time.Now()
			d.mu.Unlock()
			return l, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, device.ErrRefused) {
			f.refused.Add(1)
			f.log.Error("the hub refused a device", "device", d.cred.ID, "err", err)
			return nil, err
		}
		f.log.Warn("connecting a device failed; retrying", "device", d.cred.ID, "err", err)
		if !sleep(ctx, backoff(attempt)) {
			return nil, ctx.Err()
		}
	}
}

// dial makes one link for d.
func (f *Fleet) dial(ctx context.Context, d *simDevice) (link, error) {
	var tc *tls.Config
	if f.tls != nil {
		tc = f.tls
		if len(d.cred.Certificate.Certificate) > 0 {
			tc = f.tls.Clone()
			tc.Certificates = []tls.Certificate{d.cred.Certificate}
		}
	}
	if f.sc.Format == FormatSenML {
		return connectSenML(ctx, senmlConfig{Server: f.sc.Server, TLS: tc, Cred: d.cred, Logger: f.log})
	}
	cfg := device.Config{Server: f.sc.Server, DeviceID: d.cred.ID, Password: d.cred.Password, Certificate: d.cred.Certificate,
		OfflineBuffer: f.sc.OfflineBuffer, Logger: f.log}
	if tc != nil {
		cfg.RootCAs, cfg.ServerName = tc.RootCAs, tc.ServerName
	}
	c, err := device.Connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return sdkLink{c}, nil
}

// Limits of the simulated commands.
const (
	maxRebootDelay     = time.Minute
	defaultRebootDelay = time.Second
)

// serve runs one boot of d on l: handlers, twin, then telemetry every
// interval until ctx ends or a reboot is asked for.
func (f *Fleet) serve(ctx context.Context, d *simDevice, l link) (reboot bool, wait time.Duration) {
	interval := f.sc.Interval
	var intervalReport any = interval.Seconds()
	// A reboot asked for during the previous boot is behind us.
	select {
	case <-d.rebootCh:
	default:
	}
	l.HandleCommand("reboot", func(_ context.Context, _ string, params json.RawMessage) (any, error) {
		var p struct {
			Delay json.RawMessage `json:"delay"`
		}
		if len(params) > 0 {
			if err := json.Unmarshal(params, &p); err != nil {
				f.failed.Add(1)
				return nil, fmt.Errorf("params: %w", err)
			}
		}
		delay := defaultRebootDelay
		switch string(p.Delay) {
		case "", "null":
		case "0", `"0s"`:
			delay = 0
		default:
			dd, _, err := parseInterval(p.Delay)
			if err != nil || dd > maxRebootDelay {
				f.failed.Add(1)
				return nil, fmt.Errorf("delay: want up to %v (seconds or a duration)", maxRebootDelay)
			}
			delay = dd
		}
		select {
		case d.rebootCh <- delay:
		default: // a reboot is already coming
		}
		f.answered.Add(1)
		f.reboots.Add(1)
		d.mu.Lock()
		up := time.Since(d.born)
		d.mu.Unlock()
		return map[string]any{"rebooting": true, "delay": delay.String(), "uptime_s": int64(up.Seconds())}, nil
	})
	l.HandleCommand("set_interval", func(_ context.Context, _ string, params json.RawMessage) (any, error) {
		var p struct {
			Interval json.RawMessage `json:"interval"`
		}
		if err := json.Unmarshal(params, &p); err != nil || len(p.Interval) == 0 {
			f.failed.Add(1)
			return nil, errors.New(`params: want {"interval": seconds or "5s"}`)
		}
		dd, rep, err := parseInterval(p.Interval)
		if err != nil {
			f.failed.Add(1)
			return nil, err
		}
		putNewest(d.intervalCh, intervalSetting{dd, rep})
		f.answered.Add(1)
		return map[string]any{"interval": rep}, nil
	})
	l.HandleCommand("*", func(_ context.Context, name string, params json.RawMessage) (any, error) {
		f.answered.Add(1)
		res := map[string]any{"command": name}
		if len(params) > 0 {
			res["params"] = params
		}
		return res, nil
	})
	l.OnDesired(func(_ int64, state map[string]any) { putNewest(d.desiredCh, state) })

	d.mu.Lock()
	boots := d.boots
	d.mu.Unlock()
	f.report(ctx, d, l, map[string]any{"firmware": f.sc.Firmware, "interval": intervalReport, "boots": boots, "format": f.sc.Format})

	// The first message comes at a random point of the first interval, so
	// that a fleet started at once does not publish in lockstep.
	next := time.Now().Add(rand.N(interval))
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	start := f.start
	for {
		select {
		case <-ctx.Done():
			return false, 0
		case w := <-d.rebootCh:
			return true, w
		case s := <-d.intervalCh:
			interval, intervalReport = s.d, s.report
			next = time.Now().Add(interval)
			timer.Reset(interval)
			f.report(ctx, d, l, map[string]any{"interval": intervalReport})
		case state := <-d.desiredCh:
			patch := map[string]any{}
			for k, v := range state {
				if k == "interval" {
					dd, rep, err := parseIntervalValue(v)
					if err != nil {
						f.log.Warn("ignoring a desired interval", "device", d.cred.ID, "err", err)
						continue
					}
					if dd != interval {
						interval, next = dd, time.Now().Add(dd)
						timer.Reset(dd)
					}
					intervalReport = rep
				}
				patch[k] = v // the simulated device accepts every desired setting
			}
			f.applied.Add(1)
			f.report(ctx, d, l, patch)
		case now := <-timer.C:
			data := make(map[string]any, len(d.metrics))
			for _, m := range d.metrics {
				data[m.Name] = m.Wave.Next(now.Sub(start)).Any()
			}
			if err := l.PublishAt(ctx, now, data); err != nil && ctx.Err() == nil && !errors.Is(err, device.ErrDropped) {
				f.log.Debug("publish", "device", d.cred.ID, "err", err)
			}
			// Ticks missed while a publish waited are skipped.
			next = next.Add(interval)
			if late := time.Since(next); late > 0 {
				next = next.Add((late/interval + 1) * interval)
			}
			timer.Reset(time.Until(next))
		}
	}
}

// report sends a reported-state patch, counting it when acknowledged.
func (f *Fleet) report(ctx context.Context, d *simDevice, l link, patch map[string]any) {
	if err := l.ReportState(ctx, patch); err != nil {
		if ctx.Err() == nil {
			f.log.Warn("reporting the twin failed", "device", d.cred.ID, "err", err)
		}
		return
	}
	f.reports.Add(1)
}

// putNewest puts v in ch (capacity 1), replacing a value not yet taken.
func putNewest[T any](ch chan T, v T) {
	for {
		select {
		case ch <- v:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}

// parseInterval reads an interval given as seconds (a JSON number) or a
// duration string ("5s"), and returns it with its report form.
func parseInterval(raw json.RawMessage) (time.Duration, any, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, nil, fmt.Errorf("interval: %w", err)
	}
	return parseIntervalValue(v)
}

// parseIntervalValue is parseInterval of a decoded JSON value.
func parseIntervalValue(v any) (time.Duration, any, error) {
	var d time.Duration
	switch x := v.(type) {
	case float64:
		d = time.Duration(x * float64(time.Second))
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return 0, nil, fmt.Errorf("interval %v: %w", x, err)
		}
		d, v = time.Duration(f*float64(time.Second)), f
	case string:
		var err error
		if d, err = time.ParseDuration(x); err != nil {
			return 0, nil, fmt.Errorf("interval %q: want seconds or a duration such as 5s", x)
		}
	default:
		return 0, nil, fmt.Errorf("interval %v: want seconds or a duration such as 5s", v)
	}
	if d < MinInterval || d > MaxInterval {
		return 0, nil, fmt.Errorf("interval %v: want %v..%v", d, MinInterval, MaxInterval)
	}
	return d, v, nil
}
