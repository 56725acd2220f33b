package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/topic"
)

// Alert listing limits.
const (
	DefaultAlertLimit = 100
	MaxAlertLimit     = 1000
)

// AlertLister reads stored alerts.
type AlertLister interface {
	ListAlerts(ctx context.Context, q store.AlertQuery) (store.AlertPage, error)
}

// Alert is the API's view of a stored alert.
type Alert struct {
	Device   string    `json:"device"`
	TS       time.Time `json:"ts"`
	Received time.Time `json:"received"`
	Metric   string    `json:"metric,omitempty"`
	Value    float64   `json:"value"`
	Rule     string    `json:"rule,omitempty"`
	Severity string    `json:"severity"`
	Message  string    `json:"message,omitempty"`
	State    string    `json:"state"`
}

// alerts serves GET /api/v1/alerts?device=&severity=&limit=&before=:
// alerts newest first (by their time), a page at a time; next is the
// before of the next page.
func (a *API) alerts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	aq := store.AlertQuery{Device: q.Get("device"), Severity: q.Get("severity"), Before: q.Get("before"), Limit: DefaultAlertLimit}
	if aq.Device != "" && !topic.ValidDeviceID(aq.Device) {
		a.storeError(w, badRequest("device: %q is not a device id", aq.Device))
		return
	}
	switch aq.Severity {
	case "", "info", "warning", "critical":
	default:
		a.storeError(w, badRequest("severity: want info, warning or critical, got %q", aq.Severity))
		return
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxAlertLimit {
			a.storeError(w, badRequest("limit: want 1..%d, got %q", MaxAlertLimit, s))
			return
		}
		aq.Limit = n
	}
	page, err := a.o.Alerts.ListAlerts(r.Context(), aq)
	if err != nil {
		a.storeError(w, err)
		return
	}
	out := struct {
		Alerts []Alert `json:"alerts"`
		Next   string  `json:"next,omitempty"`
	}{Alerts: make([]Alert, 0, len(page.Alerts)), Next: page.Next}
	for _, al := range page.Alerts {
		out.Alerts = append(out.Alerts, Alert{
			Device: al.Device, TS: al.TS.UTC(), Received: al.Received.UTC(), Metric: al.Metric, Value: al.Value,
			Rule: al.Rule, Severity: al.Severity, Message: al.Message, State: al.State,
		})
	}
	writeJSON(w, http.StatusOK, out)
}
