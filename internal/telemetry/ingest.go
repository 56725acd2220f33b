// Package telemetry turns device telemetry payloads into durable points:
// it decodes DESIGN §3 payloads, hands them to a store.Appender (which
// acknowledges only once they are durable) and counts every outcome.
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
}

// Ingester decodes and stores telemetry. It implements broker.Ingester.
type Ingester struct {
	app    store.Appender
	async  store.AsyncAppender // nil when app cannot pipeline
	limits payload.Limits
	log    *slog.Logger
	now    func() time.Time
	seen   func(string, time.Time)

	messages *prometheus.CounterVec // by result
	refused  *prometheus.CounterVec // by reason
	points   prometheus.Counter
	latency  prometheus.Histogram
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
	in := &Ingester{
		app:    app,
		limits: o.Limits.WithDefaults(),
		log:    o.Logger,
		now:    o.Now,
		seen:   o.Seen,
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
	return in
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
	start := time.Now()
	complete := func(dup bool, err error) {
		switch {
		case err == nil && dup:
			in.messages.WithLabelValues(ResultDuplicate).Inc()
		case err == nil:
			in.messages.WithLabelValues(ResultStored).Inc()
			in.points.Add(float64(len(m.Points)))
			in.latency.Observe(time.Since(start).Seconds())
			if in.seen != nil {
				in.seen(device, now)
			}
		case errors.Is(err, store.ErrTypeMismatch):
			in.refuse(device, "type_mismatch", err)
		default:
			in.messages.WithLabelValues(ResultFailed).Inc()
			in.log.Error("storing telemetry failed", "device", device, "err", err)
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
