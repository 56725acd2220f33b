package pipeline

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/payload"
)

// at returns the time sec seconds after the Unix epoch.
func at(sec float64) time.Time {
	return time.Unix(0, int64(math.Round(sec*1e9))).UTC()
}

func numAt(sensor, metric string, sec, v float64) Reading {
	return Reading{Sensor: sensor, Metric: metric, TS: at(sec), Value: payload.NumberValue(v)}
}

func mustNew(t *testing.T, yml string) *Pipeline {
	t.Helper()
	cfg, err := LoadYAML("test", []byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// fate says what became of the single reading given to Process:
// "forward", the drop reason, or "none" (kept for aggregation only).
func fate(o Output) string {
	switch {
	case len(o.Dropped) > 0:
		return o.Dropped[0].Reason
	case len(o.Forward) > 0:
		return "forward"
	}
	return "none"
}

// alerts summarises o's alerts as "rule state" lines joined by "; ".
func alerts(o Output) string {
	var s []string
	for _, a := range o.Alerts {
		s = append(s, a.Rule+" "+a.State)
	}
	return strings.Join(s, "; ")
}

type step struct {
	sec, v float64
	want   string
}

func TestFilters(t *testing.T) {
	for _, tc := range []struct {
		name, cfg string
		steps     []step
	}{
		{"range", `[{filters: {range: {min: -40, max: 125}}}]`, []step{
			{0, -40, "forward"}, // bounds are inside
			{1, 125, "forward"},
			{2, 125.5, "out_of_range"},
			{3, -40.1, "out_of_range"},
			{4, 20, "forward"},
		}},
		{"range min only", `[{filters: {range: {min: 0}}}]`, []step{
			{0, -1, "out_of_range"},
			{1, 1e300, "forward"},
		}},
		{"deadband", `[{filters: {deadband: 0.5}}]`, []step{
			{0, 10, "forward"},    // first value always passes
			{1, 10.4, "deadband"}, // |10.4-10| = 0.4 < 0.5
			{2, 9.6, "deadband"},  // |9.6-10| = 0.4 < 0.5
			{3, 10.5, "forward"},  // |10.5-10| = 0.5, not < 0.5
			{4, 10.9, "deadband"}, // compared with 10.5 now: 0.4
			{5, 11.1, "forward"},  // 0.6
		}},
		{"deadband rounding", `[{filters: {deadband: 0.2}}]`, []step{
			{0, 20, "forward"},
			{1, 20.2, "forward"}, // 20.2-20 = 0.19999999999999929 in float64; counts as 0.2
			{2, 20.39, "deadband"},
		}},
		{"dedup", `[{filters: {dedup: true}}]`, []step{
			{0, 1, "forward"},
			{0, 1, "duplicate"}, // same value, same time
			{0, 2, "forward"},   // same time, new value
			{1, 2, "forward"},   // same value, new time
			{1, 2, "duplicate"},
		}},
		{"no dedup", `[{}]`, []step{
			{0, 1, "forward"},
			{0, 1, "forward"},
		}},
		{"order: dedup before range", `[{filters: {dedup: true, range: {max: 10}}}]`, []step{
			{0, 11, "out_of_range"},
			{0, 11, "duplicate"},
		}},
		{"out of range does not move the deadband", `[{filters: {range: {max: 100}, deadband: 5}}]`, []step{
			{0, 50, "forward"},
			{1, 200, "out_of_range"},
			{2, 52, "deadband"}, // still compared with 50
		}},
		{"non-finite", `[{}]`, []step{
			{0, math.NaN(), "not_finite"},
			{1, math.Inf(1), "not_finite"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mustNew(t, tc.cfg)
			for _, s := range tc.steps {
				if got := fate(p.Process(numAt("s", "m", s.sec, s.v))); got != s.want {
					t.Errorf("Process(%v @%vs) = %s; want %s", s.v, s.sec, got, s.want)
				}
			}
		})
	}
}

func TestNonNumbers(t *testing.T) {
	p := mustNew(t, `[{filters: {dedup: true, range: {min: 0, max: 1}}, window: {size: 1m}, forward: aggregates}]`)
	for _, tc := range []struct {
		v    payload.Value
		sec  float64
		want string
	}{
		{payload.StringValue("open"), 0, "forward"}, // strings skip range and are forwarded raw under forward: aggregates
		{payload.StringValue("open"), 0, "duplicate"},
		{payload.BoolValue(true), 0, "forward"},
		{payload.BoolValue(true), 0, "duplicate"},
		{payload.BoolValue(false), 0, "forward"},
		{payload.NumberValue(0), 0, "none"}, // Bool false is Num 0 too, but kinds differ: not a duplicate
	} {
		if got := fate(p.Process(Reading{Sensor: "s", Metric: "m", TS: at(tc.sec), Value: tc.v})); got != tc.want {
			t.Errorf("Process(%v) = %s; want %s", tc.v.Any(), got, tc.want)
		}
	}
}

func TestThresholdHysteresis(t *testing.T) {
	p := mustNew(t, `
- detect:
    - threshold: {above: 90, clear_below: 85, severity: critical}
    - threshold: {below: 5, clear_above: 8}
`)
	for i, s := range []step{
		{0, 80, ""},
		{1, 91, "threshold_above raised"},  // 91 > 90
		{2, 88, ""},                        // 88 is not < 85: still raised
		{3, 90.5, ""},                      // raised once, not again
		{4, 85, ""},                        // 85 is not < 85
		{5, 84, "threshold_above cleared"}, // 84 < 85
		{6, 90, ""},                        // 90 is not > 90
		{7, 92, "threshold_above raised"},  // raised again after the clear
		{8, 4, "threshold_above cleared; threshold_below raised"}, // 4 < 85 and 4 < 5, in detector order
		{9, 5, ""},  // 5 is not > 8
		{10, 8, ""}, // 8 is not > 8
		{11, 8.5, "threshold_below cleared"},
	} {
		if got := alerts(p.Process(numAt("s", "m", float64(i), s.v))); got != s.want {
			t.Errorf("Process(%v) alerts = %q; want %q", s.v, got, s.want)
		}
	}
	if st := p.Stats(); st.AlertsRaised != 3 || st.AlertsCleared != 3 {
		t.Errorf("Stats() raised, cleared = %d, %d; want 3, 3", st.AlertsRaised, st.AlertsCleared)
	}
}

func TestThresholdBothSidesDefaultClear(t *testing.T) {
	// One threshold with both sides and no clear levels: clear_below =
	// above = 10, clear_above = below = 0.
	p := mustNew(t, `[{detect: [{threshold: {above: 10, below: 0}}]}]`)
	for i, s := range []step{
		{0, 11, "threshold_above raised"},
		{0, 10, ""}, // not < 10
		{0, 9.99, "threshold_above cleared"},
		{0, -0.01, "threshold_below raised"},
		{0, 0, ""},
		{0, 0.01, "threshold_below cleared"},
	} {
		if got := alerts(p.Process(numAt("s", "m", float64(i), s.v))); got != s.want {
			t.Errorf("Process(%v) alerts = %q; want %q", s.v, got, s.want)
		}
	}
}

func TestAlertFields(t *testing.T) {
	p := mustNew(t, `[{metrics: [temperature], detect: [{threshold: {above: 90, clear_below: 85, severity: critical}}]}]`)
	o := p.Process(numAt("boiler-1", "temperature", 10, 93.2))
	want := []Alert{{
		Sensor: "boiler-1", Metric: "temperature", TS: at(10), Value: 93.2,
		Rule: RuleThresholdAbove, Severity: SeverityCritical, State: StateRaised,
		Message: "temperature 93.2 above 90 (critical)",
	}}
	if !reflect.DeepEqual(o.Alerts, want) {
		t.Errorf("Process(93.2).Alerts = %+v; want %+v", o.Alerts, want)
	}
	o = p.Process(numAt("boiler-1", "temperature", 11, 84))
	if len(o.Alerts) != 1 || o.Alerts[0].Message != "temperature 84 below 85, cleared (critical)" || o.Alerts[0].State != StateCleared {
		t.Errorf("Process(84).Alerts = %+v; want one cleared alert", o.Alerts)
	}
}

// TestZScoreArithmetic checks the score against hand-computed values
// (population standard deviation, the sample scored before it joins).
func TestZScoreArithmetic(t *testing.T) {
	for _, tc := range []struct {
		window     []float64
		minSamples int
		v          float64
		want       float64
		ok         bool
	}{
		// mean 11; deviations -1 1 0 2 -2, squares sum 10; σ = √(10/5) = √2;
		// z = (20-11)/√2 = 9/1.41421356… = 6.36396103067893.
		{[]float64{10, 12, 11, 13, 9}, 5, 20, 9 / math.Sqrt2, true},
		{[]float64{10, 12, 11, 13, 9}, 5, 2, -9 / math.Sqrt2, true},
		// mean 13; deviations -1 -2 0 -4 7, squares 1+4+0+16+49 = 70; σ = √14.
		{[]float64{12, 11, 13, 9, 20}, 5, 13, 0, true},
		{[]float64{12, 11, 13, 9, 20}, 5, 20, 7 / math.Sqrt(14), true}, // 1.8708
		// mean 2, σ = √((1+1)/2) = 1: z = (5-2)/1 = 3.
		{[]float64{1, 3}, 2, 5, 3, true},
		{[]float64{4, 4, 4}, 3, 5, 0, false}, // σ = 0: no score
		{[]float64{1, 2}, 3, 5, 0, false},    // fewer than min_samples
	} {
		st := detState{ring: tc.window}
		got, ok := st.zscore(tc.v, tc.minSamples)
		if ok != tc.ok || math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("zscore(%v, %v) = %.15g, %v; want %.15g, %v", tc.window, tc.v, got, ok, tc.want, tc.ok)
		}
	}
}

func TestZScoreSequence(t *testing.T) {
	p := mustNew(t, `[{detect: [{zscore: {window: 5, threshold: 3, min_samples: 5}}]}]`)
	for i, s := range []step{
		{0, 10, ""}, {0, 12, ""}, {0, 11, ""}, {0, 13, ""},
		{0, 9, ""},                // 4 samples held < 5: not scored
		{0, 20, "zscore raised"},  // z = 6.364 against [10 12 11 13 9]
		{0, 25, ""},               // against [12 11 13 9 20]: mean 13, σ √14 = 3.742, z = 3.207 > 3, already raised
		{0, 13, "zscore cleared"}, // against [11 13 9 20 25]: mean 15.6, squares 21.16+6.76+43.56+19.36+88.36 = 179.2, σ = √35.84 = 5.987, z = -0.434
		{0, 13, ""},
	} {
		o := p.Process(numAt("s", "m", float64(i), s.v))
		if got := alerts(o); got != s.want {
			t.Errorf("Process(#%d %v) alerts = %q; want %q", i, s.v, got, s.want)
		}
	}
	// The raised message shows the score to two decimals.
	p = mustNew(t, `[{metrics: [temperature], detect: [{zscore: {window: 5, min_samples: 5}}]}]`)
	var o Output
	for i, v := range []float64{10, 12, 11, 13, 9, 20} {
		o = p.Process(numAt("s", "temperature", float64(i), v))
	}
	if len(o.Alerts) != 1 || o.Alerts[0].Message != "temperature 20 z-score 6.36 beyond ±3 (warning)" {
		t.Errorf("Process(20).Alerts = %+v; want the message \"temperature 20 z-score 6.36 beyond ±3 (warning)\"", o.Alerts)
	}
}

func TestZScoreWindowSlides(t *testing.T) {
	// window 3: after 1 2 3 100 the window is [2 3 100]: mean 35,
	// squares 1089+1024+4225 = 6338, σ = √2112.67 = 45.96; 110 → z = 1.63.
	p := mustNew(t, `[{detect: [{zscore: {window: 3, threshold: 1.5, min_samples: 3}}]}]`)
	var got []string
	for i, v := range []float64{1, 2, 3, 100, 110} {
		if a := alerts(p.Process(numAt("s", "m", float64(i), v))); a != "" {
			got = append(got, fmt.Sprintf("%v:%s", v, a))
		}
	}
	// 100 against [1 2 3]: mean 2, σ = √(2/3) = 0.816, z = 120 > 1.5: raised.
	// 110 against [2 3 100]: z = (110-35)/45.96 = 1.63 > 1.5: still raised.
	want := []string{"100:zscore raised"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("alerts = %v; want %v", got, want)
	}
}

func TestRate(t *testing.T) {
	p := mustNew(t, `[{detect: [{rate: {max_per_second: 2}}]}]`)
	for _, s := range []step{
		{0, 10, ""},
		{1, 11, ""},                      // (11-10)/1 = 1/s
		{2, 14, "rate raised"},           // (14-11)/1 = 3/s > 2
		{3, 20, ""},                      // 6/s, already raised
		{7, 24, "rate cleared"},          // 4/4 = 1/s ≤ 2
		{7.5, 23, ""},                    // -1/0.5 = -2/s: |-2| is not > 2
		{8, 21, "rate raised"},           // -2/0.5 = -4/s
		{8, 30, ""},                      // Δt = 0: not scored
		{6, 0, ""},                       // older than 8 s: not scored
		{10, 22, "rate cleared"},         // against 21 @8: 1/2 = 0.5/s
		{10.001, 22.0021, "rate raised"}, // 0.0021/0.001 = 2.1/s > 2
	} {
		if got := alerts(p.Process(numAt("s", "m", s.sec, s.v))); got != s.want {
			t.Errorf("Process(%v @%vs) alerts = %q; want %q", s.v, s.sec, got, s.want)
		}
	}
	p = mustNew(t, `[{metrics: [level], detect: [{rate: {max_per_second: 2}}]}]`)
	p.Process(numAt("s", "level", 0, 10))
	o := p.Process(numAt("s", "level", 0.5, 12.5)) // 2.5/0.5 = 5/s
	if len(o.Alerts) != 1 || o.Alerts[0].Message != "level 12.5 changing at 5/s, faster than 2/s (warning)" {
		t.Errorf("Process(12.5).Alerts = %+v; want \"level 12.5 changing at 5/s, faster than 2/s (warning)\"", o.Alerts)
	}
}

func TestWindowAggregates(t *testing.T) {
	p := mustNew(t, `[{window: {size: 1m}, forward: both}]`)
	var got []Aggregate
	for _, s := range []step{
		{0, 1, ""},      // [0,60)
		{30, 5, ""},     // [0,60)
		{59.999, 3, ""}, // [0,60)
		{60, 10, ""},    // exactly on the boundary: [60,120), closes [0,60)
		{119, 6, ""},    // [60,120)
		{90, 20, ""},    // [60,120), older than 119 but not late
	} {
		got = append(got, p.Process(numAt("s", "m", s.sec, s.v)).Aggregates...)
	}
	got = append(got, p.Flush(at(120)).Aggregates...)
	want := []Aggregate{
		// 1+5+3 = 9, /3 = 3; last is 3 (@59.999, the latest)
		{Sensor: "s", Metric: "m", Start: at(0), End: at(60), Count: 3, Avg: 3, Min: 1, Max: 5, Last: 3, Fields: AllAggregates},
		// 10+6+20 = 36, /3 = 12; last is 6 (@119, the latest timestamp)
		{Sensor: "s", Metric: "m", Start: at(60), End: at(120), Count: 3, Avg: 12, Min: 6, Max: 20, Last: 6, Fields: AllAggregates},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("aggregates = %+v\nwant %+v", got, want)
	}
}

func TestWindowAlignment(t *testing.T) {
	for _, tc := range []struct {
		ns, size, want int64
	}{
		{0, 60, 0},
		{59, 60, 0},
		{60, 60, 60},
		{61, 60, 60},
		{-1, 60, -60}, // before the epoch: floor, not truncation toward zero
		{-60, 60, -60},
		{-61, 60, -120},
		{1_700_000_123_456_789_000, int64(time.Minute), 1_700_000_100_000_000_000},
	} {
		if got := floorTo(tc.ns, tc.size); got != tc.want {
			t.Errorf("floorTo(%d, %d) = %d; want %d", tc.ns, tc.size, got, tc.want)
		}
	}
}

func TestForwardModes(t *testing.T) {
	for _, tc := range []struct {
		cfg                string
		forwarded, windows int
	}{
		{`[{}]`, 3, 0},
		{`[{window: {size: 1m}, forward: aggregates}]`, 1, 2}, // only the string is forwarded raw
		{`[{window: {size: 1m}, forward: both}]`, 3, 2},
	} {
		p := mustNew(t, tc.cfg)
		var forwarded, windows int
		for _, r := range []Reading{
			numAt("s", "m", 0, 1),
			numAt("s", "m", 60, 2),
			{Sensor: "s", Metric: "m", TS: at(61), Value: payload.StringValue("x")},
		} {
			o := p.Process(r)
			forwarded += len(o.Forward)
			windows += len(o.Aggregates)
		}
		windows += len(p.Flush(at(1e6)).Aggregates)
		if forwarded != tc.forwarded || windows != tc.windows {
			t.Errorf("%s: forwarded, windows = %d, %d; want %d, %d", tc.cfg, forwarded, windows, tc.forwarded, tc.windows)
		}
	}
}

func TestFlush(t *testing.T) {
	p := mustNew(t, `[{window: {size: 10s}, forward: aggregates}]`)
	p.Process(numAt("b", "m", 5, 1))  // [0,10)
	p.Process(numAt("a", "m", 12, 2)) // [10,20)
	p.Process(numAt("a", "k", 3, 3))  // [0,10)
	for _, tc := range []struct {
		now  float64
		want string // windows closed, "sensor metric start"
	}{
		{9.999, ""},
		{10, "a k 0, b m 0"}, // ordered by start, then sensor, then metric
		{15, ""},
		{20, "a m 10"},
		{1000, ""},
	} {
		var got []string
		for _, a := range p.Flush(at(tc.now)).Aggregates {
			got = append(got, fmt.Sprintf("%s %s %d", a.Sensor, a.Metric, a.Start.Unix()))
		}
		if g := strings.Join(got, ", "); g != tc.want {
			t.Errorf("Flush(%vs) = %q; want %q", tc.now, g, tc.want)
		}
	}
	// b m closed [0,10): a reading at 9 is late and, under forward:
	// aggregates, dropped; one at 10 opens the next window.
	if got := fate(p.Process(numAt("b", "m", 9, 1))); got != ReasonLate {
		t.Errorf("Process(@9 after Flush(10)) = %s; want late", got)
	}
	if got := fate(p.Process(numAt("b", "m", 10, 1))); got != "none" {
		t.Errorf("Process(@10 after Flush(10)) = %s; want none", got)
	}
	if st := p.Stats(); st.Late != 1 || st.Dropped[ReasonLate] != 1 || st.Aggregates != 3 {
		t.Errorf("Stats() = %+v; want Late 1, Dropped[late] 1, Aggregates 3", st)
	}
}

func TestRuleMatching(t *testing.T) {
	p := mustNew(t, `
- sensors: ["boiler-*"]
  metrics: [temperature]
  filters: {range: {max: 100}}
- sensors: ["boiler-*"]
  filters: {range: {max: 10}}
- metrics: ["temp?"]
  filters: {range: {max: 1}}
`)
	for _, tc := range []struct {
		sensor, metric string
		v              float64
		want           string
	}{
		{"boiler-1", "temperature", 50, "forward"},     // rule 0 (first match wins over rule 1)
		{"boiler-1", "pressure", 50, "out_of_range"},   // rule 1
		{"pump", "temp1", 5, "out_of_range"},           // rule 2
		{"pump", "temperature", 5000, "forward"},       // no rule
		{"boiler", "temperature", 5000, "forward"},     // "boiler-*" needs the dash
		{"boiler-2", "temp1", 5, "forward"},            // rule 1, max 10
		{"boiler-2/x", "temperature", 5000, "forward"}, // * does not cross /
	} {
		if got := fate(p.Process(numAt(tc.sensor, tc.metric, 0, tc.v))); got != tc.want {
			t.Errorf("Process(%s %s %v) = %s; want %s", tc.sensor, tc.metric, tc.v, got, tc.want)
		}
	}
}

func TestSeriesLimit(t *testing.T) {
	cfg, err := LoadYAML("test", []byte(`[{}]`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxSeries = 2
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ sensor, want string }{
		{"a", "forward"}, {"b", "forward"}, {"c", ReasonSeriesLimit}, {"a", "forward"}, {"c", ReasonSeriesLimit},
	} {
		if got := fate(p.Process(numAt(tc.sensor, "m", 0, 1))); got != tc.want {
			t.Errorf("Process(%s) = %s; want %s", tc.sensor, got, tc.want)
		}
	}
	want := Stats{Processed: 5, Forwarded: 3, Dropped: map[string]uint64{ReasonSeriesLimit: 2}, Series: 2}
	if got := p.Stats(); !reflect.DeepEqual(got, want) {
		t.Errorf("Stats() = %+v; want %+v", got, want)
	}
}

func TestStatsIsACopy(t *testing.T) {
	p := mustNew(t, `[{filters: {range: {max: 0}}}]`)
	p.Process(numAt("s", "m", 0, 1))
	st := p.Stats()
	st.Dropped[ReasonOutOfRange] = 100
	if got := p.Stats().Dropped[ReasonOutOfRange]; got != 1 {
		t.Errorf("Stats().Dropped[out_of_range] = %d after changing a copy; want 1", got)
	}
}

func TestNewDoesNotAliasConfig(t *testing.T) {
	cfg := Config{Rules: []Rule{{Detect: []Detector{{ZScore: &ZScore{Window: 5}}}}}}
	if _, err := New(cfg); err != nil {
		t.Fatal(err)
	}
	if z := cfg.Rules[0].Detect[0].ZScore; z.Threshold != 0 || z.Severity != "" || cfg.Rules[0].Forward != "" {
		t.Errorf("New changed its argument: %+v, forward %q", *z, cfg.Rules[0].Forward)
	}
}

func TestProcessAllocs(t *testing.T) {
	p := mustNew(t, `[{filters: {deadband: 0.1}, detect: [{threshold: {above: 1000}}, {zscore: {window: 10}}, {rate: {max_per_second: 1e9}}], window: {size: 1m}, forward: both}]`)
	i := 0
	n := testing.AllocsPerRun(1000, func() {
		i++
		p.Process(numAt("s", "m", float64(i), float64(i%7)))
	})
	if n > 2 { // the Forward slice, occasionally an Aggregates slice
		t.Errorf("Process allocs = %v; want ≤ 2", n)
	}
}
