package pipeline

import (
	"errors"
	"fmt"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config is the pipeline section of the edge configuration: an ordered list
// of rules. Its YAML form is the list itself (the value of the edge
// config's "pipeline:" key); see the package documentation for the schema.
// The zero value has no rules: every reading passes through raw.
type Config struct {
	// Rules are tried in order; the first rule whose sensor and metric
	// globs both match a (sensor, metric) series governs it.
	Rules []Rule
	// MaxSeries bounds the number of series that keep state (filters,
	// detectors, windows). A new series beyond it is refused: its readings
	// are dropped with ReasonSeriesLimit. 0 means DefaultMaxSeries. It is
	// not read from YAML; the edge sets it in code.
	MaxSeries int `yaml:"-"`
}

// Rule is the processing of the series it matches, applied in order:
// filters, anomaly detection, window aggregation, forwarding.
type Rule struct {
	// Sensors are globs (path.Match syntax) on the sensor id; nil matches
	// every sensor.
	Sensors []string `yaml:"sensors,omitempty"`
	// Metrics are globs on the metric name; nil matches every metric.
	Metrics []string `yaml:"metrics,omitempty"`
	// Filters drop readings before anything else sees them.
	Filters Filters `yaml:"filters,omitempty"`
	// Detect lists the anomaly detectors, each raising its own alerts.
	Detect []Detector `yaml:"detect,omitempty"`
	// Window aggregates accepted numbers in tumbling windows; nil means none.
	Window *Window `yaml:"window,omitempty"`
	// Forward says what leaves the pipeline. Default ForwardRaw.
	Forward Forward `yaml:"forward,omitempty"`
}

// Filters drop readings; each drop is reported with its reason.
type Filters struct {
	// Range drops numbers outside [Min, Max] (ReasonOutOfRange).
	Range *Range `yaml:"range,omitempty"`
	// Deadband drops a number closer than this to the last accepted number
	// of the series (ReasonDeadband). 0 turns it off.
	Deadband float64 `yaml:"deadband,omitempty"`
	// Dedup drops a reading whose value and timestamp both equal those of
	// the series' previous reading (ReasonDuplicate).
	Dedup bool `yaml:"dedup,omitempty"`
}

// Range is a closed interval; a nil bound is unbounded.
type Range struct {
	Min *float64 `yaml:"min,omitempty"` // lowest accepted value
	Max *float64 `yaml:"max,omitempty"` // highest accepted value
}

// Detector is one anomaly detector: exactly one field is set.
type Detector struct {
	Threshold *Threshold `yaml:"threshold,omitempty"` // fixed levels with hysteresis
	ZScore    *ZScore    `yaml:"zscore,omitempty"`    // rolling z-score
	Rate      *Rate      `yaml:"rate,omitempty"`      // rate of change
}

// Threshold raises an alert when a number goes above Above (rule
// "threshold_above") or below Below (rule "threshold_below"), and clears it
// when the number comes back past the clear level. The two sides are
// independent.
type Threshold struct {
	// Above raises when v > Above.
	Above *float64 `yaml:"above,omitempty"`
	// ClearBelow clears a raised "above" alert when v < ClearBelow. It
	// must be ≤ Above; nil means Above (no hysteresis band).
	ClearBelow *float64 `yaml:"clear_below,omitempty"`
	// Below raises when v < Below.
	Below *float64 `yaml:"below,omitempty"`
	// ClearAbove clears a raised "below" alert when v > ClearAbove. It
	// must be ≥ Below; nil means Below.
	ClearAbove *float64 `yaml:"clear_above,omitempty"`
	// Severity is info, warning or critical. Default warning.
	Severity string `yaml:"severity"`
}

// ZScore raises an alert (rule "zscore") when a number lies more than
// Threshold population standard deviations from the mean of the series'
// last Window accepted numbers.
type ZScore struct {
	// Window is the number of past samples, 2 to MaxZScoreWindow.
	// Default DefaultZScoreWindow.
	Window int `yaml:"window"`
	// Threshold is the |z| above which an alert is raised. Default
	// DefaultZScoreThreshold.
	Threshold float64 `yaml:"threshold"`
	// MinSamples is how many samples the window must hold before
	// scoring starts, 2 to Window. Default Window.
	MinSamples int `yaml:"min_samples"`
	// Severity is info, warning or critical. Default warning.
	Severity string `yaml:"severity"`
}

// Rate raises an alert (rule "rate") when |Δv/Δt| between consecutive
// accepted numbers of a series exceeds MaxPerSecond.
type Rate struct {
	// MaxPerSecond is the largest allowed change per second; required.
	MaxPerSecond float64 `yaml:"max_per_second"`
	// Severity is info, warning or critical. Default warning.
	Severity string `yaml:"severity"`
}

// Window is tumbling-window aggregation: windows of Size aligned to
// multiples of Size since the Unix epoch, assigned by reading timestamp.
type Window struct {
	// Size is the window length, at least 1ms; required.
	Size Duration `yaml:"size"`
	// Aggregates names the values forwarded per window: count, avg, min,
	// max, last. Default all five.
	Aggregates []string `yaml:"aggregates,omitempty"`
}

// Forward says what a rule sends on: raw readings, window aggregates, or both.
type Forward string

// Forward modes.
const (
	ForwardRaw        Forward = "raw"
	ForwardAggregates Forward = "aggregates"
	ForwardBoth       Forward = "both"
)

// Severities of alerts.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Aggregate names, as written in Window.Aggregates.
const (
	AggCount = "count"
	AggAvg   = "avg"
	AggMin   = "min"
	AggMax   = "max"
	AggLast  = "last"
)

// AllAggregates is the default Window.Aggregates, in canonical order.
var AllAggregates = []string{AggCount, AggAvg, AggMin, AggMax, AggLast}

// Defaults and limits.
const (
	DefaultMaxSeries       = 100_000
	DefaultZScoreWindow    = 60
	DefaultZScoreThreshold = 3.0
	DefaultSeverity        = SeverityWarning
	MaxZScoreWindow        = 10_000
	MinWindowSize          = time.Millisecond
)

// Duration is a time.Duration written in YAML as "90s", "1m", "1h" or
// "1d" (days).
type Duration time.Duration

// ParseDuration parses a Go duration ("1m30s") or a whole number of days ("7d").
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 32)
		if err != nil || n > 100_000 {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		return Duration(time.Duration(n) * 24 * time.Hour), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	return Duration(d), nil
}

// String formats d like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// ErrInvalidConfig matches every *FieldError with errors.Is.
var ErrInvalidConfig = errors.New("invalid pipeline config")

// FieldError is a configuration error about one field.
type FieldError struct {
	// Field is the path of the field, e.g. "pipeline[0].detect[1].zscore.window".
	Field string
	// Line is the 1-based line of the field in the YAML source; 0 when
	// the config did not come from YAML.
	Line int
	// Err says what is wrong.
	Err error
}

// Error returns "line N: field: problem" (or "field: problem" without a line).
func (e *FieldError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s: %v", e.Line, e.Field, e.Err)
	}
	return e.Field + ": " + e.Err.Error()
}

// Unwrap returns the underlying problem.
func (e *FieldError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrInvalidConfig) true for every *FieldError.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidConfig }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// WithDefaults returns a deep copy of c with every zero field that has a
// default set to it: Forward raw, severities warning, z-score window,
// threshold and min_samples, window aggregates, MaxSeries. The YAML loader
// fills the same defaults for omitted keys (an explicit zero in YAML is
// kept, and Validate then rejects it where zero is invalid).
func (c Config) WithDefaults() Config {
	out := Config{MaxSeries: c.MaxSeries}
	if out.MaxSeries == 0 {
		out.MaxSeries = DefaultMaxSeries
	}
	if c.Rules != nil {
		out.Rules = make([]Rule, len(c.Rules))
	}
	for i, r := range c.Rules {
		r.Sensors = slices.Clone(r.Sensors)
		r.Metrics = slices.Clone(r.Metrics)
		if r.Filters.Range != nil {
			rg := *r.Filters.Range
			r.Filters.Range = &rg
		}
		if r.Forward == "" {
			r.Forward = ForwardRaw
		}
		if r.Window != nil {
			w := *r.Window
			if w.Aggregates == nil {
				w.Aggregates = slices.Clone(AllAggregates)
			} else {
				w.Aggregates = slices.Clone(w.Aggregates)
			}
			r.Window = &w
		}
		if r.Detect != nil {
			dets := make([]Detector, len(r.Detect))
			for j, d := range r.Detect {
				if d.Threshold != nil {
					t := *d.Threshold
					t.Severity = orDefault(t.Severity)
					d.Threshold = &t
				}
				if d.ZScore != nil {
					z := *d.ZScore
					z.defaults()
					d.ZScore = &z
				}
				if d.Rate != nil {
					rt := *d.Rate
					rt.Severity = orDefault(rt.Severity)
					d.Rate = &rt
				}
				dets[j] = d
			}
			r.Detect = dets
		}
		out.Rules[i] = r
	}
	return out
}

func orDefault(sev string) string {
	if sev == "" {
		return DefaultSeverity
	}
	return sev
}

func (z *ZScore) defaults() {
	if z.Window == 0 {
		z.Window = DefaultZScoreWindow
	}
	if z.Threshold == 0 {
		z.Threshold = DefaultZScoreThreshold
	}
	if z.MinSamples == 0 {
		z.MinSamples = z.Window
	}
	z.Severity = orDefault(z.Severity)
}

// Validate checks every field and returns a *FieldError naming the first
// bad one, e.g. "pipeline[0].detect[1].zscore.window: must be ≥ 2". It
// checks c as it is: New validates c.WithDefaults().
func (c Config) Validate() error {
	if c.MaxSeries < 0 {
		return fieldErr("max_series", "must not be negative")
	}
	for i, r := range c.Rules {
		if err := r.validate(fmt.Sprintf("pipeline[%d]", i)); err != nil {
			return err
		}
	}
	return nil
}

func (r *Rule) validate(at string) error {
	for _, g := range []struct {
		name string
		pats []string
	}{{"sensors", r.Sensors}, {"metrics", r.Metrics}} {
		if g.pats != nil && len(g.pats) == 0 {
			return fieldErr(at+"."+g.name, "must not be empty (omit it to match everything)")
		}
		for j, p := range g.pats {
			if p == "" {
				return fieldErr(fmt.Sprintf("%s.%s[%d]", at, g.name, j), "empty pattern")
			}
			if _, err := path.Match(p, ""); err != nil {
				return fieldErr(fmt.Sprintf("%s.%s[%d]", at, g.name, j), "bad glob %q: %w", p, err)
			}
		}
	}
	if err := r.Filters.validate(at + ".filters"); err != nil {
		return err
	}
	for j, d := range r.Detect {
		if err := d.validate(fmt.Sprintf("%s.detect[%d]", at, j)); err != nil {
			return err
		}
	}
	if r.Window != nil {
		if err := r.Window.validate(at + ".window"); err != nil {
			return err
		}
	}
	switch r.Forward {
	case ForwardRaw:
		if r.Window != nil {
			return fieldErr(at+".window", "set, but forward is raw: say forward: aggregates or both")
		}
	case ForwardAggregates, ForwardBoth:
		if r.Window == nil {
			return fieldErr(at+".forward", "%s needs a window", r.Forward)
		}
	default:
		return fieldErr(at+".forward", "%q is not raw, aggregates or both", string(r.Forward))
	}
	return nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

func (f *Filters) validate(at string) error {
	if rg := f.Range; rg != nil {
		if rg.Min == nil && rg.Max == nil {
			return fieldErr(at+".range", "want min, max or both")
		}
		if rg.Min != nil && !finite(*rg.Min) {
			return fieldErr(at+".range.min", "must be a finite number")
		}
		if rg.Max != nil && !finite(*rg.Max) {
			return fieldErr(at+".range.max", "must be a finite number")
		}
		if rg.Min != nil && rg.Max != nil && *rg.Min > *rg.Max {
			return fieldErr(at+".range", "min %s is above max %s", num(*rg.Min), num(*rg.Max))
		}
	}
	if !finite(f.Deadband) || f.Deadband < 0 {
		return fieldErr(at+".deadband", "must be a finite number ≥ 0")
	}
	return nil
}

func (d *Detector) validate(at string) error {
	n := 0
	for _, set := range []bool{d.Threshold != nil, d.ZScore != nil, d.Rate != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fieldErr(at, "want exactly one of threshold, zscore or rate")
	}
	switch {
	case d.Threshold != nil:
		return d.Threshold.validate(at + ".threshold")
	case d.ZScore != nil:
		return d.ZScore.validate(at + ".zscore")
	default:
		return d.Rate.validate(at + ".rate")
	}
}

func (t *Threshold) validate(at string) error {
	if t.Above == nil && t.Below == nil {
		return fieldErr(at, "want above, below or both")
	}
	for _, f := range []struct {
		name string
		v    *float64
	}{{"above", t.Above}, {"clear_below", t.ClearBelow}, {"below", t.Below}, {"clear_above", t.ClearAbove}} {
		if f.v != nil && !finite(*f.v) {
			return fieldErr(at+"."+f.name, "must be a finite number")
		}
	}
	if t.ClearBelow != nil {
		if t.Above == nil {
			return fieldErr(at+".clear_below", "set without above")
		}
		if *t.ClearBelow > *t.Above {
			return fieldErr(at+".clear_below", "%s must be ≤ above (%s)", num(*t.ClearBelow), num(*t.Above))
		}
	}
	if t.ClearAbove != nil {
		if t.Below == nil {
			return fieldErr(at+".clear_above", "set without below")
		}
		if *t.ClearAbove < *t.Below {
			return fieldErr(at+".clear_above", "%s must be ≥ below (%s)", num(*t.ClearAbove), num(*t.Below))
		}
	}
	if t.Above != nil && t.Below != nil && *t.Below >= *t.Above {
		return fieldErr(at+".below", "%s must be less than above (%s)", num(*t.Below), num(*t.Above))
	}
	return validSeverity(at, t.Severity)
}

func (z *ZScore) validate(at string) error {
	if z.Window < 2 {
		return fieldErr(at+".window", "must be ≥ 2")
	}
	if z.Window > MaxZScoreWindow {
		return fieldErr(at+".window", "must be ≤ %d", MaxZScoreWindow)
	}
	if !finite(z.Threshold) || z.Threshold <= 0 {
		return fieldErr(at+".threshold", "must be a finite number > 0")
	}
	if z.MinSamples < 2 || z.MinSamples > z.Window {
		return fieldErr(at+".min_samples", "must be between 2 and window (%d)", z.Window)
	}
	return validSeverity(at, z.Severity)
}

func (r *Rate) validate(at string) error {
	if !finite(r.MaxPerSecond) || r.MaxPerSecond <= 0 {
		return fieldErr(at+".max_per_second", "must be a finite number > 0")
	}
	return validSeverity(at, r.Severity)
}

func validSeverity(at, s string) error {
	switch s {
	case SeverityInfo, SeverityWarning, SeverityCritical:
		return nil
	}
	return fieldErr(at+".severity", "%q is not info, warning or critical", s)
}

func (w *Window) validate(at string) error {
	if w.Size <= 0 {
		return fieldErr(at+".size", "required: a duration such as 10s, 1m or 1h")
	}
	if time.Duration(w.Size) < MinWindowSize {
		return fieldErr(at+".size", "%s is shorter than %s", w.Size, MinWindowSize)
	}
	if len(w.Aggregates) == 0 {
		return fieldErr(at+".aggregates", "must not be empty (omit it for all of count, avg, min, max, last)")
	}
	for k, a := range w.Aggregates {
		if !slices.Contains(AllAggregates, a) {
			return fieldErr(fmt.Sprintf("%s.aggregates[%d]", at, k), "%q is not count, avg, min, max or last", a)
		}
		if slices.Contains(w.Aggregates[:k], a) {
			return fieldErr(fmt.Sprintf("%s.aggregates[%d]", at, k), "%q listed twice", a)
		}
	}
	return nil
}
