package pipeline

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

type detKind uint8

const (
	detThreshold detKind = iota
	detZScore
	detRate
)

// detector is a validated Detector.
type detector struct {
	kind     detKind
	severity string

	hasAbove, hasBelow bool // threshold
	above, clearBelow  float64
	below, clearAbove  float64

	window, minSamples int // zscore
	z                  float64

	maxRate float64 // rate
}

// detState is one detector's state for one series.
type detState struct {
	raised      bool      // the alert is raised (threshold: the "above" side)
	raisedBelow bool      // threshold: the "below" side is raised
	ring        []float64 // zscore: the last samples, len ≤ window
	next        int       // zscore: where the next sample goes once ring is full
}

func compileDetector(d Detector) detector {
	switch {
	case d.Threshold != nil:
		t := d.Threshold
		c := detector{kind: detThreshold, severity: t.Severity}
		if t.Above != nil {
			c.hasAbove, c.above, c.clearBelow = true, *t.Above, *t.Above
			if t.ClearBelow != nil {
				c.clearBelow = *t.ClearBelow
			}
		}
		if t.Below != nil {
			c.hasBelow, c.below, c.clearAbove = true, *t.Below, *t.Below
			if t.ClearAbove != nil {
				c.clearAbove = *t.ClearAbove
			}
		}
		return c
	case d.ZScore != nil:
		z := d.ZScore
		return detector{kind: detZScore, severity: z.Severity, window: z.Window, minSamples: z.MinSamples, z: z.Threshold}
	default:
		return detector{kind: detRate, severity: d.Rate.Severity, maxRate: d.Rate.MaxPerSecond}
	}
}

// num formats a number read or configured, exactly.
func num(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// score formats a computed number for a message: two decimals (trailing
// zeros trimmed) from 1 up, three significant digits below.
func score(f float64) string {
	if a := math.Abs(f); a != 0 && a < 1 {
		return strconv.FormatFloat(f, 'g', 3, 64)
	}
	s := strconv.FormatFloat(f, 'f', 2, 64)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// detect runs every detector of s's rule on the accepted number v.
func (p *Pipeline) detect(out *Output, s *series, r Reading, ns int64, v float64) {
	var sev string // the severity of the detector being run
	alert := func(rule, state, format string, args ...any) {
		a := Alert{Sensor: r.Sensor, Metric: r.Metric, TS: r.TS, Value: v, Rule: rule, Severity: sev, State: state}
		a.Message = fmt.Sprintf(format, args...)
		if state == StateRaised {
			p.stats.AlertsRaised++
		} else {
			p.stats.AlertsCleared++
		}
		out.Alerts = append(out.Alerts, a)
	}
	m := r.Metric
	for i := range s.rule.detectors {
		d := &s.rule.detectors[i]
		st := &s.dets[i]
		sev = d.severity
		switch d.kind {
		case detThreshold:
			if d.hasAbove {
				switch {
				case !st.raised && v > d.above:
					st.raised = true
					alert(RuleThresholdAbove, StateRaised, "%s %s above %s (%s)", m, num(v), num(d.above), sev)
				case st.raised && v < d.clearBelow:
					st.raised = false
					alert(RuleThresholdAbove, StateCleared, "%s %s below %s, cleared (%s)", m, num(v), num(d.clearBelow), sev)
				}
			}
			if d.hasBelow {
				switch {
				case !st.raisedBelow && v < d.below:
					st.raisedBelow = true
					alert(RuleThresholdBelow, StateRaised, "%s %s below %s (%s)", m, num(v), num(d.below), sev)
				case st.raisedBelow && v > d.clearAbove:
					st.raisedBelow = false
					alert(RuleThresholdBelow, StateCleared, "%s %s above %s, cleared (%s)", m, num(v), num(d.clearAbove), sev)
				}
			}
		case detZScore:
			if z, ok := st.zscore(v, d.minSamples); ok {
				switch {
				case !st.raised && math.Abs(z) > d.z:
					st.raised = true
					alert(RuleZScore, StateRaised, "%s %s z-score %s beyond ±%s (%s)", m, num(v), score(z), num(d.z), sev)
				case st.raised && math.Abs(z) <= d.z:
					st.raised = false
					alert(RuleZScore, StateCleared, "%s %s z-score %s within ±%s, cleared (%s)", m, num(v), score(z), num(d.z), sev)
				}
			}
			st.push(v, d.window)
		case detRate:
			if !s.hasRate || ns <= s.rateTS {
				continue // no earlier sample to compare with
			}
			rate := (v - s.rateVal) / (float64(ns-s.rateTS) / 1e9)
			switch {
			case !st.raised && math.Abs(rate) > d.maxRate:
				st.raised = true
				alert(RuleRate, StateRaised, "%s %s changing at %s/s, faster than %s/s (%s)", m, num(v), score(rate), num(d.maxRate), sev)
			case st.raised && math.Abs(rate) <= d.maxRate:
				st.raised = false
				alert(RuleRate, StateCleared, "%s %s changing at %s/s, within %s/s, cleared (%s)", m, num(v), score(rate), num(d.maxRate), sev)
			}
		}
	}
	if !s.hasRate || ns > s.rateTS {
		s.hasRate, s.rateTS, s.rateVal = true, ns, v
	}
}

// zscore scores v against the samples in the ring (population standard
// deviation, two passes). It reports false when the ring holds fewer than
// minSamples samples or they are all equal (the score is undefined).
func (st *detState) zscore(v float64, minSamples int) (float64, bool) {
	n := len(st.ring)
	if n < minSamples {
		return 0, false
	}
	var sum float64
	for _, x := range st.ring {
		sum += x
	}
	mean := sum / float64(n)
	var ss float64
	for _, x := range st.ring {
		ss += (x - mean) * (x - mean)
	}
	sd := math.Sqrt(ss / float64(n))
	if sd == 0 || !finite(sd) {
		return 0, false
	}
	return (v - mean) / sd, true
}

// push adds v to the ring, dropping the oldest sample once it holds window.
func (st *detState) push(v float64, window int) {
	if n := len(st.ring); n < window {
		if n == cap(st.ring) { // grow by hand so that cap never exceeds window
			ring := make([]float64, n, min(max(2*n, 8), window))
			copy(ring, st.ring)
			st.ring = ring
		}
		st.ring = append(st.ring, v)
		return
	}
	st.ring[st.next] = v
	st.next = (st.next + 1) % window
}
