package edge

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/fieldhub/fieldhub/internal/pipeline"
	"github.com/fieldhub/fieldhub/payload"
	"github.com/fieldhub/fieldhub/topic"
)

// Spool records start with a kind byte, then the JSON element the uplink
// puts in a batch as it is.
const (
	recReading = 'r'
	recAlert   = 'a'
)

// Ingest implements broker.Ingester for the local listener: decode, run
// the pipeline, spool what it forwards and raises, and call done once it
// is all on disk. A reading the pipeline filters out is acknowledged (it
// was processed) and counted.
func (e *Edge) Ingest(device string, b []byte, done func(error)) {
	m, err := payload.DecodeTelemetry(b, device, time.Now(), payload.Limits{})
	if err != nil {
		e.m.refused.WithLabelValues(payload.Reason(err)).Inc()
		done(err)
		return
	}
	e.m.readings.Add(float64(len(m.Points)))
	var out pipeline.Output
	e.pipeMu.Lock()
	for _, p := range m.Points {
		o := e.pipe.Process(pipeline.Reading{Sensor: device, Metric: p.Metric, TS: time.Unix(0, p.TS), Value: p.Value})
		out.Forward = append(out.Forward, o.Forward...)
		out.Aggregates = append(out.Aggregates, o.Aggregates...)
		out.Alerts = append(out.Alerts, o.Alerts...)
		out.Dropped = append(out.Dropped, o.Dropped...)
	}
	e.pipeMu.Unlock()
	recs := e.records(m, out)
	if len(recs) == 0 {
		done(nil)
		return
	}
	e.appendAll(recs, done)
}

// spoolOutput spools what a pipeline flush produced and waits for it.
func (e *Edge) spoolOutput(ctx context.Context, out pipeline.Output) error {
	recs := e.records(nil, out)
	if len(recs) == 0 {
		return nil
	}
	ch := make(chan error, 1)
	e.appendAll(recs, func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

type record struct {
	key  string
	data []byte
}

// records turns a pipeline output into spool records. m, when not nil, is
// the sensor message the raw readings came from: its seq goes with them,
// so that the hub stores each reading once however often it is resent.
func (e *Edge) records(m *payload.Message, out pipeline.Output) []record {
	var recs []record
	for _, d := range out.Dropped {
		e.m.dropped.WithLabelValues("pipeline_" + d.Reason).Inc()
	}
	if len(out.Forward) > 0 {
		// The object form carries one time per message: group by time. Only
		// the first group keeps the seq (a seq names one message).
		var groups [][]payload.Point
		for _, r := range out.Forward {
			p := payload.Point{Metric: r.Metric, TS: r.TS.UnixNano(), Value: r.Value}
			if n := len(groups); n > 0 && groups[n-1][0].TS == p.TS {
				groups[n-1] = append(groups[n-1], p)
			} else {
				groups = append(groups, []payload.Point{p})
			}
		}
		for i, g := range groups {
			msg := &payload.Message{Points: g}
			if i == 0 && m != nil {
				msg.Seq, msg.HasSeq = m.Seq, m.HasSeq
			}
			recs = append(recs, record{out.Forward[0].Sensor, readingRecord(out.Forward[0].Sensor, msg)})
		}
	}
	for _, a := range out.Aggregates {
		msg := &payload.Message{}
		add := func(name string, v float64) {
			msg.Points = append(msg.Points, payload.Point{Metric: a.Metric + "." + name, TS: a.Start.UnixNano(), Value: payload.NumberValue(v)})
		}
		for _, f := range a.Fields {
			switch f {
			case "count":
				add(f, float64(a.Count))
			case "avg":
				add(f, a.Avg)
			case "min":
				add(f, a.Min)
			case "max":
				add(f, a.Max)
			case "last":
				add(f, a.Last)
			}
		}
		if len(msg.Points) > 0 {
			recs = append(recs, record{a.Sensor, readingRecord(a.Sensor, msg)})
		}
	}
	for _, a := range out.Alerts {
		e.m.alerts.WithLabelValues(a.Severity, a.State).Inc()
		body := alertJSON(a)
		// Local actuators hear of it at once, whatever the uplink's state.
		if err := e.broker.Publish(topic.Alerts(a.Sensor), body, false, 1); err != nil {
			e.log.Warn("publishing alert locally failed", "sensor", a.Sensor, "err", err)
		}
		e.log.Info("alert", "sensor", a.Sensor, "metric", a.Metric, "rule", a.Rule, "severity", a.Severity, "state", a.State, "message", a.Message)
		recs = append(recs, record{a.Sensor, append([]byte{recAlert}, withDevice(a.Sensor, body)...)})
	}
	return recs
}

// readingRecord is a spool record of one message of device, in the batch
// element form {"device": …, "ts", "seq", "data"}.
func readingRecord(device string, m *payload.Message) []byte {
	b := append([]byte{recReading}, `{"device":`...)
	b = strconv.AppendQuote(b, device)
	b = append(b, ',')
	enc := payload.AppendTelemetry(nil, m, true)
	return append(b, enc[1:]...) // enc starts with '{'
}

func withDevice(device string, obj []byte) []byte {
	b := append([]byte(`{"device":`), strconv.Quote(device)...)
	b = append(b, ',')
	return append(b, obj[1:]...)
}

// alertJSON is the DESIGN §3 alert payload plus the alert's state.
func alertJSON(a pipeline.Alert) []byte {
	b, _ := json.Marshal(struct {
		TS       string  `json:"ts"`
		Metric   string  `json:"metric"`
		Value    float64 `json:"value"`
		Rule     string  `json:"rule"`
		Severity string  `json:"severity"`
		Message  string  `json:"message"`
		State    string  `json:"state"`
	}{a.TS.UTC().Format(time.RFC3339Nano), a.Metric, a.Value, a.Rule, a.Severity, a.Message, a.State})
	return b
}

// appendAll spools recs in order and calls done once all are durable, or
// with the first error.
func (e *Edge) appendAll(recs []record, done func(error)) {
	var mu sync.Mutex
	left := len(recs)
	var first error
	for _, r := range recs {
		e.spool.AppendAsync(r.key, r.data, func(_ uint64, err error) {
			mu.Lock()
			if err != nil && first == nil {
				first = err
			}
			left--
			last := left == 0
			ferr := first
			mu.Unlock()
			if err != nil {
				e.m.dropped.WithLabelValues("spool_refused").Inc()
			}
			if last {
				if ferr != nil {
					ferr = errors.Join(errSpool, ferr)
				}
				done(ferr)
			}
		})
	}
}

var errSpool = errors.New("spooling failed")
