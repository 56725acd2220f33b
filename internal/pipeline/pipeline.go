package pipeline

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"path"
	"slices"
	"time"

	"github.com/fieldhub/fieldhub/payload"
)

// Reading is one value of one metric of one sensor.
type Reading struct {
	Sensor string
	Metric string
	TS     time.Time
	Value  payload.Value
}

// Aggregate summarises the accepted numbers of one series in the window
// [Start, End).
type Aggregate struct {
	Sensor, Metric string
	Start, End     time.Time
	Count          int
	Avg, Min, Max  float64
	// Last is the value of the reading with the latest timestamp (the
	// later arrival on a tie).
	Last float64
	// Fields are the aggregates the rule forwards (Window.Aggregates),
	// in configured order; shared, do not modify.
	Fields []string
}

// Value returns the aggregate called name (count, avg, min, max or last).
func (a Aggregate) Value(name string) (float64, bool) {
	switch name {
	case AggCount:
		return float64(a.Count), true
	case AggAvg:
		return a.Avg, true
	case AggMin:
		return a.Min, true
	case AggMax:
		return a.Max, true
	case AggLast:
		return a.Last, true
	}
	return 0, false
}

// Alert is a change of an anomaly detector's state for one series: raised
// when the anomaly starts, cleared when it ends.
type Alert struct {
	Sensor, Metric string
	// TS and Value are those of the reading that changed the state.
	TS    time.Time
	Value float64
	// Rule is RuleThresholdAbove, RuleThresholdBelow, RuleZScore or RuleRate.
	Rule     string
	Severity string
	// Message is human readable, e.g. "temperature 93.2 above 90 (critical)".
	Message string
	// State is StateRaised or StateCleared.
	State string
}

// Alert rules and states.
const (
	RuleThresholdAbove = "threshold_above"
	RuleThresholdBelow = "threshold_below"
	RuleZScore         = "zscore"
	RuleRate           = "rate"

	StateRaised  = "raised"
	StateCleared = "cleared"
)

// Drop is a reading the pipeline did not forward, and why.
type Drop struct {
	Reading Reading
	Reason  string
}

// Drop reasons, also the keys of Stats.Dropped.
const (
	ReasonDuplicate   = "duplicate"    // same value and timestamp as the previous reading (filters.dedup)
	ReasonOutOfRange  = "out_of_range" // outside filters.range
	ReasonDeadband    = "deadband"     // within filters.deadband of the last accepted number
	ReasonNotFinite   = "not_finite"   // NaN or ±Inf in a series with a rule
	ReasonLate        = "late"         // too old for its window, and forward is aggregates
	ReasonSeriesLimit = "series_limit" // a new series beyond Config.MaxSeries
)

// Output is what one Process or Flush call produced.
type Output struct {
	Forward    []Reading   // raw readings to send on
	Aggregates []Aggregate // closed windows to send on
	Alerts     []Alert     // detector state changes
	Dropped    []Drop      // readings filtered out or refused
}

// Stats are the pipeline's counters since New.
type Stats struct {
	Processed     uint64            // readings given to Process
	Forwarded     uint64            // raw readings forwarded
	Aggregates    uint64            // windows closed
	Late          uint64            // accepted readings too old for their series' window
	Dropped       map[string]uint64 // drops by reason
	AlertsRaised  uint64
	AlertsCleared uint64
	Series        int // series holding state now
}

// Pipeline is the per-(sensor, metric) processing state machine. It is
// not safe for concurrent use: one goroutine owns it.
type Pipeline struct {
	rules     []*rule
	maxSeries int
	series    map[seriesKey]*series
	stats     Stats
}

type seriesKey struct{ sensor, metric string }

// rule is a validated Rule in the form the hot path wants.
type rule struct {
	sensors, metrics []string
	hasRange         bool
	min, max         float64
	deadband         float64
	dedup            bool
	detectors        []detector
	window           int64 // nanoseconds; 0 means no window
	fields           []string
	forward          Forward
}

type series struct {
	sensor, metric string
	rule           *rule

	hasPrev bool // dedup: the previous reading received
	prevTS  time.Time
	prevVal payload.Value

	hasLast bool // deadband: the last accepted number
	last    float64

	hasRate bool // rate: the newest accepted sample
	rateTS  int64
	rateVal float64

	dets []detState

	open    bool  // a window is open
	win     agg   // the open window
	hasMark bool  // mark is set
	mark    int64 // readings before this are late
}

type agg struct {
	start, lastTS      int64
	count              int
	sum, min, max, val float64
}

// New validates cfg (after WithDefaults) and returns a pipeline.
func New(cfg Config) (*Pipeline, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	p := &Pipeline{
		maxSeries: cfg.MaxSeries,
		series:    map[seriesKey]*series{},
		stats:     Stats{Dropped: map[string]uint64{}},
	}
	for _, r := range cfg.Rules {
		p.rules = append(p.rules, compile(r))
	}
	return p, nil
}

func compile(r Rule) *rule {
	c := &rule{
		sensors:  r.Sensors,
		metrics:  r.Metrics,
		min:      math.Inf(-1),
		max:      math.Inf(1),
		deadband: r.Filters.Deadband,
		dedup:    r.Filters.Dedup,
		forward:  r.Forward,
	}
	if rg := r.Filters.Range; rg != nil {
		c.hasRange = true
		if rg.Min != nil {
			c.min = *rg.Min
		}
		if rg.Max != nil {
			c.max = *rg.Max
		}
	}
	for _, d := range r.Detect {
		c.detectors = append(c.detectors, compileDetector(d))
	}
	if r.Window != nil {
		c.window = int64(r.Window.Size)
		c.fields = r.Window.Aggregates
	}
	return c
}

func matchAny(pats []string, s string) bool {
	if len(pats) == 0 {
		return true
	}
	for _, p := range pats {
		if ok, _ := path.Match(p, s); ok {
			return true
		}
	}
	return false
}

// match returns the first rule for (sensor, metric), or nil.
func (p *Pipeline) match(sensor, metric string) *rule {
	for _, r := range p.rules {
		if matchAny(r.sensors, sensor) && matchAny(r.metrics, metric) {
			return r
		}
	}
	return nil
}

func (p *Pipeline) forward(out *Output, r Reading) {
	p.stats.Forwarded++
	out.Forward = append(out.Forward, r)
}

func (p *Pipeline) drop(out *Output, r Reading, reason string) {
	p.stats.Dropped[reason]++
	out.Dropped = append(out.Dropped, Drop{Reading: r, Reason: reason})
}

// Process runs one reading through its series' rule. A reading that falls
// in a later window than the series' open one closes that window first.
func (p *Pipeline) Process(r Reading) Output {
	var out Output
	p.stats.Processed++
	k := seriesKey{r.Sensor, r.Metric}
	s := p.series[k]
	if s == nil {
		ru := p.match(r.Sensor, r.Metric)
		if ru == nil {
			p.forward(&out, r)
			return out
		}
		if len(p.series) >= p.maxSeries {
			p.drop(&out, r, ReasonSeriesLimit)
			return out
		}
		s = &series{sensor: r.Sensor, metric: r.Metric, rule: ru, dets: make([]detState, len(ru.detectors))}
		p.series[k] = s
	}
	ru := s.rule

	if ru.dedup {
		if s.hasPrev && s.prevVal == r.Value && s.prevTS.Equal(r.TS) {
			p.drop(&out, r, ReasonDuplicate)
			return out
		}
		s.hasPrev, s.prevTS, s.prevVal = true, r.TS, r.Value
	}
	if r.Value.Kind != payload.Number {
		p.forward(&out, r)
		return out
	}
	v := r.Value.Num
	switch {
	case !finite(v):
		p.drop(&out, r, ReasonNotFinite)
		return out
	case ru.hasRange && (v < ru.min || v > ru.max):
		p.drop(&out, r, ReasonOutOfRange)
		return out
	case ru.deadband > 0 && s.hasLast && inDeadband(v, s.last, ru.deadband):
		p.drop(&out, r, ReasonDeadband)
		return out
	}
	s.hasLast, s.last = true, v

	ns := r.TS.UnixNano()
	p.detect(&out, s, r, ns, v)

	if s.hasMark && ns < s.mark {
		p.stats.Late++
		if ru.forward == ForwardAggregates {
			p.drop(&out, r, ReasonLate)
		} else {
			p.forward(&out, r)
		}
		return out
	}
	if ru.window > 0 {
		p.aggregate(&out, s, ns, v)
	}
	if ru.forward != ForwardAggregates {
		p.forward(&out, r)
	}
	return out
}

// inDeadband reports whether |v-last| < deadband. A difference within
// rounding error of the deadband counts as equal to it, so that with a
// deadband of 0.2 a step from 20 to 20.2 passes (20.2-20 is
// 0.19999999999999929 in float64).
func inDeadband(v, last, deadband float64) bool {
	tol := 1e-12 * max(math.Abs(v), math.Abs(last))
	return math.Abs(v-last) < deadband-tol
}

// floorTo returns the largest multiple of size ≤ ns.
func floorTo(ns, size int64) int64 {
	q := ns / size
	if ns%size != 0 && ns < 0 {
		q--
	}
	return q * size
}

func (p *Pipeline) aggregate(out *Output, s *series, ns int64, v float64) {
	start := floorTo(ns, s.rule.window)
	if s.open && start > s.win.start {
		p.close(out, s)
	}
	if !s.open {
		s.open = true
		s.win = agg{start: start, lastTS: ns, min: v, max: v, val: v}
		s.hasMark, s.mark = true, start
	}
	w := &s.win
	w.count++
	w.sum += v
	w.min = min(w.min, v)
	w.max = max(w.max, v)
	if ns >= w.lastTS {
		w.lastTS, w.val = ns, v
	}
}

// close emits the open window of s.
func (p *Pipeline) close(out *Output, s *series) {
	w := s.win
	end := w.start + s.rule.window
	out.Aggregates = append(out.Aggregates, Aggregate{
		Sensor: s.sensor, Metric: s.metric,
		Start: time.Unix(0, w.start).UTC(), End: time.Unix(0, end).UTC(),
		Count: w.count, Avg: w.sum / float64(w.count), Min: w.min, Max: w.max, Last: w.val,
		Fields: s.rule.fields,
	})
	p.stats.Aggregates++
	s.open = false
	s.hasMark, s.mark = true, end
}

// Flush closes every open window whose end is at or before now, in order
// of window start, then sensor, then metric. The edge calls it on a ticker
// (with a grace period for stragglers, if it wants one).
func (p *Pipeline) Flush(now time.Time) Output {
	var out Output
	t := now.UnixNano()
	for _, s := range p.series {
		if s.open && s.win.start+s.rule.window <= t {
			p.close(&out, s)
		}
	}
	slices.SortFunc(out.Aggregates, func(a, b Aggregate) int {
		return cmp.Or(a.Start.Compare(b.Start), cmp.Compare(a.Sensor, b.Sensor), cmp.Compare(a.Metric, b.Metric))
	})
	return out
}

// Stats returns a copy of the counters.
func (p *Pipeline) Stats() Stats {
	st := p.stats
	st.Dropped = maps.Clone(p.stats.Dropped)
	st.Series = len(p.series)
	return st
}
