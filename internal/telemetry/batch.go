package telemetry

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/payload"
)

// ReasonNotChild labels a batch refused because it carries a reading or
// an alert of a device that is not registered behind the gateway.
const ReasonNotChild = "not_child"

// NotChildError refuses a whole batch: Device is not behind Gateway. It
// matches payload.ErrRefused (the broker does not ask for a resend) and
// says NotAuthorized, which the broker answers with PUBACK 0x87.
type NotChildError struct {
	Gateway, Device string
}

func (e *NotChildError) Error() string {
	return "batch refused: device " + e.Device + " is not registered behind gateway " + e.Gateway
}

// Is makes errors.Is(err, payload.ErrRefused) true.
func (e *NotChildError) Is(target error) bool { return target == payload.ErrRefused }

// RefusalReason returns ReasonNotChild, the metric label.
func (e *NotChildError) RefusalReason() string { return ReasonNotChild }

// NotAuthorized is true: the refusal is an authorization decision.
func (e *NotChildError) NotAuthorized() bool { return true }

// gatewayCheckTimeout bounds the registry lookups of one batch.
const gatewayCheckTimeout = 5 * time.Second

func (in *Ingester) newBatchMetrics(reg prometheus.Registerer) {
	in.batches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fieldhub_telemetry_batches_total",
		Help: "Gateway batches by outcome: stored (every reading and alert durable), refused (whole batch, never stored), failed (storage error, not acknowledged).",
	}, []string{"result"})
	in.batchRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fieldhub_telemetry_batch_refused_total",
		Help: "Gateway batches refused whole, by reason (payload reasons, not_child).",
	}, []string{"reason"})
	in.batchReadings = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "fieldhub_telemetry_batch_readings",
		Help:    "Readings per accepted gateway batch.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 8), // 1 … 16384
	})
	in.alertsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fieldhub_alerts_total",
		Help: "Alerts durably stored (from devices and from gateway batches), by severity.",
	}, []string{"severity"})
	in.alertsRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fieldhub_alerts_refused_total",
		Help: "Alerts published on devices/{id}/alerts and refused, never stored, by reason.",
	}, []string{"reason"})
	for _, r := range []string{ResultStored, ResultRefused, ResultFailed} {
		in.batches.WithLabelValues(r)
	}
	for _, s := range []string{payload.SeverityInfo, payload.SeverityWarning, payload.SeverityCritical} {
		in.alertsTotal.WithLabelValues(s)
	}
	reg.MustRegister(in.batches, in.batchRefused, in.batchReadings, in.alertsTotal, in.alertsRefused)
}

// IngestBatch decodes a batch published by gateway on
// devices/{gateway}/batch and stores it. done is called exactly once:
//
//   - an error matching payload.ErrRefused when the payload is refused
//     (payload.DecodeBatch), or a *NotChildError when any reading or alert
//     names a device that is neither the gateway nor registered behind it:
//     the whole batch is refused and nothing of it is stored;
//   - nil once every reading and alert is durable. Each reading is stored
//     as a message of its device, deduplicated by (device, seq) as a
//     direct device's message is, so a resent batch stores nothing twice
//     (readings without seq are stored again). A reading refused by the
//     store for a metric type mismatch is counted
//     (fieldhub_telemetry_refused_total{reason="type_mismatch"}) and does
//     not fail the batch: resending would not help;
//   - any other error when storing failed (the gateway resends the batch).
//
// The devices of stored readings and alerts and the gateway are reported
// to Options.Seen.
func (in *Ingester) IngestBatch(gateway string, b []byte, done func(error)) {
	now := in.now()
	batch, err := payload.DecodeBatch(b, now, in.blimits)
	if err != nil {
		in.refuseBatch(gateway, payload.Reason(err), err)
		done(err)
		return
	}
	if err := in.checkChildren(gateway, batch); err != nil {
		in.refuseBatch(gateway, ReasonNotChild, err)
		done(err)
		return
	}
	if len(batch.Alerts) > 0 && in.alertw == nil {
		err := &payload.Error{Reason: ReasonNoAlertStore, Msg: "this hub stores no alerts"}
		in.refuseBatch(gateway, ReasonNoAlertStore, err)
		done(err)
		return
	}
	in.batchReadings.Observe(float64(len(batch.Messages)))

	// Count down: one for each reading, one for the alerts.
	n := int64(len(batch.Messages))
	if len(batch.Alerts) > 0 {
		n++
	}
	c := &countdown{}
	c.left.Store(n)
	c.finish = func(err error) {
		if err != nil {
			in.batches.WithLabelValues(ResultFailed).Inc()
			in.log.Error("storing batch failed", "gateway", gateway, "err", err)
		} else {
			in.batches.WithLabelValues(ResultStored).Inc()
			if in.seen != nil {
				in.seen(gateway, now)
			}
		}
		done(err)
	}
	for _, m := range batch.Messages {
		in.store(m, now, func(err error) {
			if errors.Is(err, store.ErrTypeMismatch) {
				err = nil // counted by store; see the doc comment
			}
			c.one(err)
		})
	}
	if len(batch.Alerts) > 0 {
		in.storeAlerts(batch.Alerts, now, c.one)
	}
}

// countdown completes a batch when its last part does, with the first
// error of any part.
type countdown struct {
	left   atomic.Int64
	mu     sync.Mutex
	err    error
	finish func(error)
}

func (c *countdown) one(err error) {
	if err != nil {
		c.mu.Lock()
		if c.err == nil {
			c.err = err
		}
		c.mu.Unlock()
	}
	if c.left.Add(-1) == 0 {
		c.mu.Lock()
		err := c.err
		c.mu.Unlock()
		c.finish(err)
	}
}

// checkChildren returns a *NotChildError for the first device of the batch
// that is neither the gateway nor behind it.
func (in *Ingester) checkChildren(gateway string, b *payload.Batch) error {
	ctx, cancel := context.WithTimeout(context.Background(), gatewayCheckTimeout)
	defer cancel()
	last := gateway // readings usually come in runs of one device
	ok := func(dev string) bool {
		if dev == gateway || dev == last {
			return true
		}
		if in.gateways == nil || !in.gateways.IsChild(ctx, gateway, dev) {
			return false
		}
		last = dev
		return true
	}
	for _, m := range b.Messages {
		if !ok(m.Device) {
			return &NotChildError{Gateway: gateway, Device: m.Device}
		}
	}
	for i := range b.Alerts {
		if dev := b.Alerts[i].Device; !ok(dev) {
			return &NotChildError{Gateway: gateway, Device: dev}
		}
	}
	return nil
}

func (in *Ingester) refuseBatch(gateway, reason string, err error) {
	in.batches.WithLabelValues(ResultRefused).Inc()
	in.batchRefused.WithLabelValues(reason).Inc()
	in.log.Debug("batch refused", "gateway", gateway, "reason", reason, "err", err)
}
