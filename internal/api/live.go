package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/fieldhub/fieldhub/internal/live"
	"github.com/fieldhub/fieldhub/payload"
)

// Live hands out subscriptions to the telemetry of a device as it is
// stored (internal/live.Broadcaster implements it). Subscribe returns an
// error when the subscription is refused (too many subscribers, or the hub
// is shutting down); the channel is closed when the subscription ends.
type Live interface {
	Subscribe(device string) (<-chan *payload.Message, func(), error)
}

// LiveHeartbeat is the interval of the comment lines that keep an idle
// live stream (and the proxies on its way) open.
var LiveHeartbeat = 15 * time.Second

// liveEvent is the data of one Server-Sent Event: one point.
type liveEvent struct {
	Metric string `json:"metric"`
	TS     string `json:"ts"`
	Value  any    `json:"value"`
}

// live serves GET /api/v1/devices/{id}/telemetry/live: the device's
// telemetry as Server-Sent Events, one event per stored point, from the
// moment of the request on. The stream ends when the client goes away or
// the hub shuts down.
func (a *API) liveStream(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := a.o.Registry.Get(r.Context(), id); err != nil {
		a.storeError(w, err)
		return
	}
	ch, cancel, err := a.o.Live.Subscribe(id)
	if err != nil {
		w.Header().Set("Retry-After", "5")
		msg := "too many live streams; try again later"
		if errors.Is(err, live.ErrClosed) {
			msg = "the hub is shutting down"
		}
		writeError(w, http.StatusServiceUnavailable, "unavailable", msg)
		return
	}
	defer cancel()
	rc := http.NewResponseController(w)
	// The server's ReadTimeout would end the stream (it cancels the
	// request's context): a stream has no end to read to.
	rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write([]byte(": live\n\n")); err != nil {
		return
	}
	if rc.Flush() != nil {
		return
	}
	tick := time.NewTicker(LiveHeartbeat)
	defer tick.Stop()
	var buf []byte
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			if _, err := w.Write([]byte(": heartbeat\n\n")); err != nil {
				return
			}
		case m, ok := <-ch:
			if !ok {
				return // hub shutting down
			}
			buf = buf[:0]
			for _, p := range m.Points {
				b, err := json.Marshal(liveEvent{Metric: p.Metric, TS: time.Unix(0, p.TS).UTC().Format(time.RFC3339Nano), Value: p.Value.Any()})
				if err != nil {
					continue
				}
				buf = append(buf, "data: "...)
				buf = append(buf, b...)
				buf = append(buf, "\n\n"...)
			}
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
		if rc.Flush() != nil {
			return
		}
	}
}
