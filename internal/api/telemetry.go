package api

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
)

// Query limits (DESIGN §4).
const (
	DefaultLimit = 10000
	MaxLimit     = 100000
	// MaxBuckets bounds step/agg queries so that a tiny step over a long
	// range cannot ask for millions of buckets.
	MaxBuckets = 100000
)

// Point is one point or bucket in a query answer.
type Point struct {
	TS    time.Time `json:"ts"`
	Value any       `json:"value"`
}

// Series is one metric in a query answer.
type Series struct {
	Metric string  `json:"metric"`
	Kind   string  `json:"kind"`
	Points []Point `json:"points"`
}

// parseTime reads RFC 3339 or Unix epoch milliseconds.
func parseTime(name, s string) (time.Time, error) {
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, badRequest("%s: want RFC 3339 or epoch milliseconds, got %q", name, s)
	}
	return t, nil
}

func (a *API) telemetry(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := a.o.Registry.Get(r.Context(), id); err != nil {
		a.storeError(w, err)
		return
	}
	q := r.URL.Query()
	to := a.o.Now()
	from := to.Add(-time.Hour)
	var err error
	if s := q.Get("to"); s != "" {
		if to, err = parseTime("to", s); err != nil {
			a.storeError(w, err)
			return
		}
	}
	if s := q.Get("from"); s != "" {
		if from, err = parseTime("from", s); err != nil {
			a.storeError(w, err)
			return
		}
	} else if q.Get("to") != "" {
		from = to.Add(-time.Hour)
	}
	if !from.Before(to) {
		a.storeError(w, badRequest("from must be before to"))
		return
	}
	sq := store.Query{Device: id, Metric: q.Get("metric"), From: from.UnixNano(), To: to.UnixNano(), Limit: DefaultLimit, After: q.Get("cursor")}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			a.storeError(w, badRequest("limit: want 1..%d, got %q", MaxLimit, s))
			return
		}
		sq.Limit = n
	}
	step, agg := q.Get("step"), store.Agg(strings.ToLower(q.Get("agg")))
	if !agg.Valid() {
		a.storeError(w, badRequest("agg: want avg, min, max, sum, count or last, got %q", agg))
		return
	}
	if (step == "") != (agg == store.AggNone) {
		a.storeError(w, badRequest("step and agg go together"))
		return
	}
	if step != "" {
		d, err := time.ParseDuration(step)
		if err != nil || d <= 0 {
			a.storeError(w, badRequest("step: want a positive duration such as 30s or 5m, got %q", step))
			return
		}
		if to.Sub(from)/d > MaxBuckets {
			a.storeError(w, badRequest("step: %s over this range makes more than %d buckets", step, MaxBuckets))
			return
		}
		sq.Step, sq.Agg = int64(d), agg
	}
	res, err := a.o.Telemetry.Query(r.Context(), sq)
	if err != nil {
		a.storeError(w, err)
		return
	}
	out := struct {
		Device string   `json:"device"`
		From   string   `json:"from"`
		To     string   `json:"to"`
		Step   string   `json:"step,omitempty"`
		Agg    string   `json:"agg,omitempty"`
		Series []Series `json:"series"`
		Next   string   `json:"next_cursor,omitempty"`
	}{Device: id, From: from.UTC().Format(time.RFC3339Nano), To: to.UTC().Format(time.RFC3339Nano), Step: step, Agg: string(agg), Series: []Series{}, Next: res.Next}
	for _, s := range res.Series {
		out.Series = append(out.Series, series(s))
	}
	writeJSON(w, http.StatusOK, out)
}

func series(s store.Series) Series {
	out := Series{Metric: s.Metric, Kind: s.Kind.String(), Points: make([]Point, len(s.Points))}
	for i, p := range s.Points {
		out.Points[i] = Point{TS: time.Unix(0, p.TS).UTC(), Value: p.Value.Any()}
	}
	return out
}

func (a *API) latest(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if _, err := a.o.Registry.Get(r.Context(), id); err != nil {
		a.storeError(w, err)
		return
	}
	ps, err := a.o.Telemetry.Latest(r.Context(), id)
	if err != nil {
		a.storeError(w, err)
		return
	}
	type latest struct {
		Metric string    `json:"metric"`
		Kind   string    `json:"kind"`
		TS     time.Time `json:"ts"`
		Value  any       `json:"value"`
	}
	out := struct {
		Device  string   `json:"device"`
		Metrics []latest `json:"metrics"`
	}{Device: id, Metrics: []latest{}}
	for _, p := range ps {
		out.Metrics = append(out.Metrics, latest{Metric: p.Metric, Kind: p.Value.Kind.String(), TS: time.Unix(0, p.TS).UTC(), Value: p.Value.Any()})
	}
	writeJSON(w, http.StatusOK, out)
}
