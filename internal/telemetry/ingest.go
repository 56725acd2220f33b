// Package telemetry turns device payloads into durable data: it decodes
// DESIGN §3 telemetry, gateway batches and alerts, hands readings to a
// store.Appender and alerts to a store.Alerts (both acknowledge only once
// the data is durable) and counts every outcome.
package telemetry

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/payload"
)

// Options configure an Ingester. The zero value works.
type Options struct {
	Limits     payload.Limits
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock used for messages without a timestamp; default time.Now.
	Now func() time.Time
	// Seen, when set, is told of every device whose message was stored.
	Seen func(device string, at time.Time)
	// BatchLimits bound gateway batches; zero fields mean the payload
	// defaults, and a zero Reading means Limits.
	BatchLimits payload.BatchLimits
	// Gateways tells which devices are behind which gateway; without it a
	// batch may carry only the gateway's own readings.
	Gateways Gateways
	// Alerts stores alerts; without it alerts are refused (no_alert_store).
	Alerts store.Alerts
	// Stored, when set, is handed every message once it is durably stored
	// (not duplicates, nor refused or failed ones), readings of gateway
	// batches included. It runs on the store's committer goroutine: it must
	// only hand off, never block, and must not change m.
	Stored func(m *payload.Message)
}

// Gateways tells whether a device is registered behind a gateway. The
// registry implements it, with a cache: it is asked for every device of
// every batch.
type Gateways interface {
	IsChild(ctx context.Context, gateway, device string) bool
}

// Ingester decodes and stores telemetry, gateway batches and alerts. It
// implements broker.Ingester, broker.BatchIngester and broker.AlertIngester.
// Close it after the broker has stopped, to drain the alert writer.
type Ingester struct {
	app      store.Appender
	async    store.AsyncAppender // nil when app cannot pipeline
	limits   payload.Limits
	blimits  payload.BatchLimits
	gateways Gateways
	alertw   *alertWriter // nil without Options.Alerts
	log      *slog.Logger
	now      func() time.Time
	seen     func(string, time.Time)
	stored   func(*payload.Message)
	rates    *rates // stored messages per device, last minute

	messages *prometheus.CounterVec // by result
	refused  *prometheus.CounterVec // by reason
	points   prometheus.Counter
	latency  prometheus.Histogram

	batches         *prometheus.CounterVec // by result
	batchRefused    *prometheus.CounterVec // by reason
	batchReadings   prometheus.Histogram
	alertsTotal     *prometheus.CounterVec // by severity
	alertsRefused   *prometheus.CounterVec // by reason
	alertsDuplicate prometheus.Counter
}

// Outcomes counted in fieldhub_telemetry_messages_total{result}.
const (
	ResultStored    = "stored"
	ResultDuplicate = "duplicate"
	ResultRefused   = "refused"
	ResultFailed    = "failed"
)

// New returns an Ingester that stores into app.
func New(app store.Appender, o Options) *Ingester {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	if o.BatchLimits.Reading == (payload.Limits{}) {
		o.BatchLimits.Reading = o.Limits
	}
	in := &Ingester{
		app:      app,
		limits:   o.Limits.WithDefaults(),
		blimits:  o.BatchLimits.WithDefaults(),
		gateways: o.Gateways,
		log:      o.Logger,
		now:      o.Now,
		seen:     o.Seen,
		stored:   o.Stored,
		rates:    newRates(),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldhub_telemetry_messages_total",
			Help: "Telemetry messages by outcome: stored, duplicate (acknowledged, stored once), refused (invalid payload), failed (storage error, not acknowledged).",
		}, []string{"result"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldhub_telemetry_refused_total",
			Help: "Telemetry messages refused and never stored, by reason.",
		}, []string{"reason"}),
		points: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_telemetry_points_stored_total",
			Help: "Points durably stored.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fieldhub_telemetry_store_latency_seconds",
			Help:    "Time from decoding a message to its points being durable.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	if a, ok := app.(store.AsyncAppender); ok {
		in.async = a
	}
	for _, r := range []string{ResultStored, ResultDuplicate, ResultRefused, ResultFailed} {
		in.messages.WithLabelValues(r)
	}
	o.Registerer.MustRegister(in.messages, in.refused, in.points, in.latency)
	in.newBatchMetrics(o.Registerer)
	if o.Alerts != nil {
		in.alertw = newAlertWriter(o.Alerts, in.log)
	}
	return in
}

// Close stops the alert writer once the alerts queued are stored, or when
// ctx ends. Call it after the broker has stopped handing in messages;
// alerts handed in afterwards fail with store.ErrClosed. It is safe to
// call more than once.
func (in *Ingester) Close(ctx context.Context) error {
	if in.alertw == nil {
		return nil
	}
	return in.alertw.close(ctx)
}

// Ingest decodes b, published by device, and stores it. done is called
// exactly once: nil when durable (or a duplicate of something durable), an
// error matching payload.ErrRefused or store.ErrTypeMismatch when refused,
// any other error when storing failed.
func (in *Ingester) Ingest(device string, b []byte, done func(error)) {
	now := in.now()
	m, err := payload.DecodeTelemetry(b, device, now, in.limits)
	if err != nil {
		in.refuse(device, payload.Reason(err), err)
		done(err)
		return
	}
	in.store(m, now, done)
}

// store appends m and calls done with the outcome, counted.
func (in *Ingester) store(m *payload.Message, now time.Time, done func(error)) {
	start := time.Now()
	complete := func(dup bool, err error) {
		switch {
		case err == nil && dup:
			in.messages.WithLabelValues(ResultDuplicate).Inc()
		case err == nil:
			in.messages.WithLabelValues(ResultStored).Inc()
			in.points.Add(float64(len(m.Points)))
			in.latency.Observe(time.Since(start).Seconds())
			in.rates.observe(m.Device, now)
			if in.seen != nil {
				in.seen(m.Device, now)
			}
			if in.stored != nil {
				in.stored(m)
			}
		case errors.Is(err, store.ErrTypeMismatch):
			in.refuse(m.Device, "type_mismatch", err)
		default:
			in.messages.WithLabelValues(ResultFailed).Inc()
			in.log.Error("storing telemetry failed", "device", m.Device, "err", err)
		}
		done(err)
	}
	if in.async != nil {
		in.async.AppendAsync(m, complete)
		return
	}
	complete(in.app.Append(context.Background(), m))
}

func (in *Ingester) refuse(device, reason string, err error) {
	in.messages.WithLabelValues(ResultRefused).Inc()
	in.refused.WithLabelValues(reason).Inc()
	in.log.Debug("telemetry refused", "device", device, "reason", reason, "err", err)
}
