package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/payload"
)

// ReasonNoAlertStore labels alerts refused by an Ingester built without
// Options.Alerts.
const ReasonNoAlertStore = "no_alert_store"

// IngestAlert decodes an alert published on devices/{device}/alerts (by
// the device, or by its gateway for it) and stores it. done is called
// exactly once: nil when the alert is durable (or a resend of a stored
// one), an error matching payload.ErrRefused when refused
// (payload.DecodeAlert), any other error when storing failed.
func (in *Ingester) IngestAlert(device string, b []byte, done func(error)) {
	now := in.now()
	a, err := payload.DecodeAlert(b, device, now)
	if err == nil && in.alertw == nil {
		err = &payload.Error{Reason: ReasonNoAlertStore, Msg: "this hub stores no alerts"}
	}
	if err != nil {
		reason := payload.Reason(err)
		in.alertsRefused.WithLabelValues(reason).Inc()
		in.log.Debug("alert refused", "device", device, "reason", reason, "err", err)
		done(err)
		return
	}
	in.storeAlerts([]payload.Alert{*a}, now, done)
}

// storeAlerts queues alerts received at now for the alert writer; done
// runs once they are durable or failed.
func (in *Ingester) storeAlerts(as []payload.Alert, now time.Time, done func(error)) {
	out := make([]store.Alert, len(as))
	for i, a := range as {
		out[i] = store.Alert{
			Device: a.Device, TS: time.Unix(0, a.TS).UTC(), Received: now.UTC(),
			Metric: a.Metric, Value: a.Value, Rule: a.Rule, Severity: a.Severity,
			Message: a.Message, State: a.State,
		}
	}
	in.alertw.submit(out, func(err error) {
		if err == nil {
			for _, a := range out {
				in.alertsTotal.WithLabelValues(a.Severity).Inc()
				if in.seen != nil {
					in.seen(a.Device, now)
				}
			}
		} else {
			in.log.Error("storing alerts failed", "alerts", len(out), "err", err)
		}
		done(err)
	})
}

// alertWriter stores alerts from one goroutine, several callers' alerts
// per transaction (group commit): an alert costs a SQLite commit only when
// none is in progress.
type alertWriter struct {
	st  store.Alerts
	log *slog.Logger

	mu     sync.Mutex
	queue  []alertReq
	closed bool

	wake    chan struct{} // capacity 1
	stopped chan struct{} // closed when run returns
}

type alertReq struct {
	alerts []store.Alert
	done   func(error)
}

// maxAlertTx bounds the alerts of one transaction.
const maxAlertTx = 4096

// alertWriteTimeout bounds one transaction.
const alertWriteTimeout = 30 * time.Second

func newAlertWriter(st store.Alerts, log *slog.Logger) *alertWriter {
	w := &alertWriter{st: st, log: log, wake: make(chan struct{}, 1), stopped: make(chan struct{})}
	go w.run()
	return w
}

// submit queues alerts; done is called from the writer's goroutine, or at
// once with store.ErrClosed after close.
func (w *alertWriter) submit(alerts []store.Alert, done func(error)) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		done(fmt.Errorf("storing alerts: %w", store.ErrClosed))
		return
	}
	w.queue = append(w.queue, alertReq{alerts, done})
	select { // under mu: close cannot close wake in between
	case w.wake <- struct{}{}:
	default:
	}
	w.mu.Unlock()
}

// run writes what is queued until closed and drained.
func (w *alertWriter) run() {
	defer close(w.stopped)
	for {
		_, open := <-w.wake
		for {
			w.mu.Lock()
			q := w.queue
			w.queue = nil
			w.mu.Unlock()
			if len(q) == 0 {
				break
			}
			w.write(q)
		}
		if !open {
			return // closed: submit refuses, so nothing can be queued now
		}
	}
}

// write stores the alerts of q in transactions of at most maxAlertTx
// (a request is never split) and completes each request.
func (w *alertWriter) write(q []alertReq) {
	for len(q) > 0 {
		n, size := 0, 0
		for n < len(q) && (n == 0 || size+len(q[n].alerts) <= maxAlertTx) {
			size += len(q[n].alerts)
			n++
		}
		all := make([]store.Alert, 0, size)
		for _, r := range q[:n] {
			all = append(all, r.alerts...)
		}
		ctx, cancel := context.WithTimeout(context.Background(), alertWriteTimeout)
		err := w.st.AppendAlerts(ctx, all)
		cancel()
		for _, r := range q[:n] {
			r.done(err)
		}
		q = q[n:]
	}
}

// close refuses new alerts, lets run store what is queued, and waits for
// it or for ctx.
func (w *alertWriter) close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.wake)
	}
	w.mu.Unlock()
	select {
	case <-w.stopped:
		return nil
	case <-ctx.Done():
	}
	// ctx may have ended before the call: give an idle writer a moment.
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case <-w.stopped:
		return nil
	case <-t.C:
		return fmt.Errorf("telemetry: waiting for the alert writer: %w", ctx.Err())
	}
}
