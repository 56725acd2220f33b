package pipeline

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func f64(f float64) *float64 { return &f }

const fullYAML = `pipeline:
  - sensors: ["boiler-*"]
    metrics: ["temperature"]
    filters:
      range: {min: -40, max: 125}
      deadband: 0.2
      dedup: true
    detect:
      - threshold: {above: 90, clear_below: 85, severity: critical}
      - threshold: {below: 5, clear_above: 8, severity: warning}
      - zscore: {window: 60, threshold: 3.0, min_samples: 20, severity: warning}
      - rate: {max_per_second: 2.0, severity: warning}
    window: {size: 1m, aggregates: [count, avg, min, max, last]}
    forward: both
  - sensors: pump-7
    detect:
      - zscore:
      - threshold: {above: 1}
    window: {size: 1d, aggregates: [avg]}
    forward: aggregates
  - {}
`

func TestLoadGood(t *testing.T) {
	got, err := LoadYAML("edge.yml", []byte(fullYAML))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Rules: []Rule{
		{
			Sensors: []string{"boiler-*"},
			Metrics: []string{"temperature"},
			Filters: Filters{Range: &Range{Min: f64(-40), Max: f64(125)}, Deadband: 0.2, Dedup: true},
			Detect: []Detector{
				{Threshold: &Threshold{Above: f64(90), ClearBelow: f64(85), Severity: "critical"}},
				{Threshold: &Threshold{Below: f64(5), ClearAbove: f64(8), Severity: "warning"}},
				{ZScore: &ZScore{Window: 60, Threshold: 3, MinSamples: 20, Severity: "warning"}},
				{Rate: &Rate{MaxPerSecond: 2, Severity: "warning"}},
			},
			Window:  &Window{Size: Duration(time.Minute), Aggregates: []string{"count", "avg", "min", "max", "last"}},
			Forward: ForwardBoth,
		},
		{
			Sensors: []string{"pump-7"}, // a single string is a one-element list
			Detect: []Detector{
				{ZScore: &ZScore{Window: 60, Threshold: 3, MinSamples: 60, Severity: "warning"}}, // all defaults
				{Threshold: &Threshold{Above: f64(1), Severity: "warning"}},
			},
			Window:  &Window{Size: Duration(24 * time.Hour), Aggregates: []string{"avg"}},
			Forward: ForwardAggregates,
		},
		{Forward: ForwardRaw},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadYAML(full) =\n%#v\nwant\n%#v", got, want)
	}
	if d := got.WithDefaults(); d.MaxSeries != DefaultMaxSeries || !reflect.DeepEqual(d.Rules, got.Rules) {
		t.Errorf("WithDefaults of a loaded config changed it: %#v", d)
	}
	if _, err := New(got); err != nil {
		t.Errorf("New(LoadYAML(full)) = %v; want nil", err)
	}
}

func TestLoadForms(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		rules      int
	}{
		{"empty document", "", 0},
		{"comment only", "# nothing\n", 0},
		{"bare list", "- {}\n- {}\n", 2},
		{"pipeline key", "pipeline:\n  - {}\n", 1},
		{"null pipeline", "pipeline:\n", 0},
		{"empty list", "[]", 0},
		{"merge key", "common: &c {filters: {dedup: true}}\n", -1}, // unknown top-level key
		{"anchors and merge", "- &r {metrics: [a], filters: {deadband: 1}}\n- <<: *r\n  metrics: [b]\n", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := LoadYAML("x.yml", []byte(tc.yaml))
			if tc.rules < 0 {
				if err == nil {
					t.Errorf("LoadYAML(%q) = nil error; want one", tc.yaml)
				}
				return
			}
			if err != nil || len(cfg.Rules) != tc.rules {
				t.Errorf("LoadYAML(%q) = %d rules, %v; want %d, nil", tc.yaml, len(cfg.Rules), err, tc.rules)
			}
		})
	}
	cfg, err := LoadYAML("x.yml", []byte("- &r {metrics: [a], filters: {deadband: 1}}\n- <<: *r\n  metrics: [b]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Rules[1]; !reflect.DeepEqual(r.Metrics, []string{"b"}) || r.Filters.Deadband != 1 {
		t.Errorf("merged rule = %+v; want metrics [b] (own key wins) and deadband 1 (merged)", r)
	}
}

// TestLoadBad checks that each broken config fails with an error naming
// the field (and its line, when it came from YAML).
func TestLoadBad(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"syntax", "- {", "x.yml: yaml:"},
		{"top level scalar", "42", `line 1: pipeline: want a list, got "42"`},
		{"unknown top key", "pipelines: []", `line 1: (top level): unknown field "pipelines"`},
		{"rule not a mapping", "- 1", "line 1: pipeline[0]: want a mapping"},
		{"unknown rule field", "- sensor: [a]", `line 1: pipeline[0]: unknown field "sensor"`},
		{"unknown filter", "- filters: {rnage: {}}", `pipeline[0].filters: unknown field "rnage"`},
		{"duplicate key", "- forward: raw\n  forward: both", `line 2: pipeline[0]: field "forward" given twice`},
		{"empty sensors", "- sensors: []", "pipeline[0].sensors: must not be empty"},
		{"null sensors", "- sensors:", "pipeline[0].sensors: must not be empty"},
		{"bad glob", "- metrics: [ok, 'x[']", "line 1: pipeline[0].metrics[1]: bad glob"},
		{"glob not a string", "- metrics: [{a: 1}]", "pipeline[0].metrics[0]: want a string"},
		{"range empty", "- filters: {range: {}}", "pipeline[0].filters.range: want min, max or both"},
		{"range type", "- filters: {range: {min: low}}", `pipeline[0].filters.range.min: want a number, got "low"`},
		{"range null", "- filters: {range: {min: ~}}", "pipeline[0].filters.range.min: want a number"},
		{"range nan", "- filters: {range: {max: .nan}}", "pipeline[0].filters.range.max: must be a finite number"},
		{"range order", "- filters: {range: {min: 10, max: 5}}", "pipeline[0].filters.range: min 10 is above max 5"},
		{"deadband negative", "- filters: {deadband: -1}", "pipeline[0].filters.deadband: must be a finite number ≥ 0"},
		{"dedup type", "- filters: {dedup: yes please}", "pipeline[0].filters.dedup: want true or false"},
		{"detect not a list", "- detect: {threshold: {above: 1}}", "pipeline[0].detect: want a list"},
		{"detector empty", "- detect: [{}]", "pipeline[0].detect[0]: want exactly one of threshold, zscore or rate"},
		{"detector two", "- detect: [{rate: {max_per_second: 1}, zscore: {}}]", "pipeline[0].detect[0]: want exactly one"},
		{"unknown detector", "- detect: [{median: {}}]", `pipeline[0].detect[0]: unknown field "median"`},
		{"threshold empty", "- detect: [{threshold: {severity: info}}]", "pipeline[0].detect[0].threshold: want above, below or both"},
		{"clear_below above", "- detect: [{threshold: {above: 90, clear_below: 95}}]", "pipeline[0].detect[0].threshold.clear_below: 95 must be ≤ above (90)"},
		{"clear_below alone", "- detect: [{threshold: {below: 1, clear_below: 0}}]", "threshold.clear_below: set without above"},
		{"clear_above below", "- detect: [{threshold: {below: 5, clear_above: 4}}]", "threshold.clear_above: 4 must be ≥ below (5)"},
		{"below over above", "- detect: [{threshold: {above: 5, below: 5}}]", "threshold.below: 5 must be less than above (5)"},
		{"severity", "- detect: [{threshold: {above: 1, severity: critcal}}]", `pipeline[0].detect[0].threshold.severity: "critcal" is not info, warning or critical`},
		{"zscore window", "- {}\n- detect:\n  - rate: {max_per_second: 1}\n  - zscore: {window: 1}", "line 4: pipeline[1].detect[1].zscore.window: must be ≥ 2"},
		{"zscore window big", "- detect: [{zscore: {window: 10001}}]", "zscore.window: must be ≤ 10000"},
		{"zscore window float", "- detect: [{zscore: {window: 60.5}}]", `zscore.window: want a whole number, got "60.5"`},
		{"zscore threshold", "- detect: [{zscore: {threshold: 0}}]", "zscore.threshold: must be a finite number > 0"},
		{"zscore min_samples", "- detect: [{zscore: {window: 5, min_samples: 6}}]", "zscore.min_samples: must be between 2 and window (5)"},
		{"zscore min_samples default", "- detect: [{zscore: {window: 5, min_samples: 1}}]", "zscore.min_samples"},
		{"rate missing", "- detect: [{rate: {}}]", "pipeline[0].detect[0].rate.max_per_second: must be a finite number > 0"},
		{"rate inf", "- detect: [{rate: {max_per_second: .inf}}]", "rate.max_per_second: must be a finite number > 0"},
		{"window size missing", "- window: {}\n  forward: both", "line 1: pipeline[0].window.size: required"},
		{"window size number", "- window: {size: 60}\n  forward: both", `pipeline[0].window.size: want a duration such as 10s, 1m or 1h, got "60"`},
		{"window size bad", "- window: {size: soon}\n  forward: both", `pipeline[0].window.size: invalid duration "soon"`},
		{"window size tiny", "- window: {size: 1us}\n  forward: both", "pipeline[0].window.size: 1µs is shorter than 1ms"},
		{"window size negative", "- window: {size: -1m}\n  forward: both", "pipeline[0].window.size: required"},
		{"aggregates empty", "- window: {size: 1m, aggregates: []}\n  forward: both", "pipeline[0].window.aggregates: must not be empty"},
		{"aggregate unknown", "- window: {size: 1m, aggregates: [avg, median]}\n  forward: both", `pipeline[0].window.aggregates[1]: "median" is not count, avg, min, max or last`},
		{"aggregate twice", "- window: {size: 1m, aggregates: [avg, avg]}\n  forward: both", `pipeline[0].window.aggregates[1]: "avg" listed twice`},
		{"window with raw", "- window: {size: 1m}", "line 1: pipeline[0].window: set, but forward is raw"},
		{"aggregates without window", "- forward: aggregates", "line 1: pipeline[0].forward: aggregates needs a window"},
		{"forward unknown", "- forward: everything", `pipeline[0].forward: "everything" is not raw, aggregates or both`},
		{"forward null", "- forward:", "pipeline[0].forward: want a string"},
		{"merge not a mapping", "- <<: 1", "pipeline[0]: merge key wants a mapping"},
		{"merge cycle", "- &a {<<: *a}", "merge keys nested too deep"},
		{"alias cycle", "&a [*a]", "pipeline[0]: want a mapping, got a list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadYAML("x.yml", []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadYAML(%q) = %v; want an error containing %q", tc.yaml, err, tc.want)
			}
		})
	}
}

func TestValidateProgrammatic(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" for valid
	}{
		{"zero", Config{}, ""},
		{"defaults filled", Config{Rules: []Rule{{Detect: []Detector{{ZScore: &ZScore{}}, {Threshold: &Threshold{Above: f64(1)}}}}}}, ""},
		{"rate needs a limit", Config{Rules: []Rule{{}, {Detect: []Detector{{Rate: &Rate{}}}}}}, "pipeline[1].detect[0].rate.max_per_second: must be a finite number > 0"},
		{"window needs a size", Config{Rules: []Rule{{Window: &Window{}, Forward: ForwardBoth}}}, "pipeline[0].window.size: required"},
		{"negative max series", Config{MaxSeries: -1}, "max_series: must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("New(%+v) = %v; want nil", tc.cfg, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("New(%+v) = %v; want an error containing %q", tc.cfg, err, tc.want)
			case tc.want != "" && !errors.Is(err, ErrInvalidConfig):
				t.Errorf("New(%+v) = %v; want errors.Is(err, ErrInvalidConfig)", tc.cfg, err)
			}
		})
	}
}

func TestFieldError(t *testing.T) {
	_, err := LoadYAML("edge.yml", []byte("- detect:\n  - zscore: {window: 1}\n"))
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("LoadYAML error %v is not a *FieldError", err)
	}
	want := FieldError{Field: "pipeline[0].detect[0].zscore.window", Line: 2}
	if fe.Field != want.Field || fe.Line != want.Line {
		t.Errorf("FieldError = {%s, line %d}; want {%s, line %d}", fe.Field, fe.Line, want.Field, want.Line)
	}
	if got, w := err.Error(), "edge.yml: line 2: pipeline[0].detect[0].zscore.window: must be ≥ 2"; got != w {
		t.Errorf("LoadYAML error = %q; want %q", got, w)
	}
}

// TestEmbedded decodes a Config as part of a larger file (the edge config).
func TestEmbedded(t *testing.T) {
	var edge struct {
		Name     string `yaml:"name"`
		Pipeline Config `yaml:"pipeline"`
	}
	if err := yaml.Unmarshal([]byte("name: e1\npipeline:\n  - detect: [{rate: {max_per_second: 3}}]\n"), &edge); err != nil {
		t.Fatal(err)
	}
	if d := edge.Pipeline.Rules[0].Detect[0].Rate; d.MaxPerSecond != 3 || d.Severity != SeverityWarning {
		t.Errorf("embedded rate = %+v; want max 3, severity warning", d)
	}
	err := yaml.Unmarshal([]byte("name: e1\npipeline:\n  - detect: [{rate: {}}]\n"), &edge)
	if err == nil || !strings.Contains(err.Error(), "line 3: pipeline[0].detect[0].rate.max_per_second") {
		t.Errorf("embedded bad config = %v; want an error naming line 3 and the field", err)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	cfg, err := LoadYAML("full", []byte(fullYAML))
	if err != nil {
		t.Fatal(err)
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadYAML("marshalled", b)
	if err != nil {
		t.Fatalf("LoadYAML(Marshal(cfg)) = %v\n%s", err, b)
	}
	if !reflect.DeepEqual(again, cfg) {
		t.Errorf("LoadYAML(Marshal(cfg)) =\n%#v\nwant\n%#v", again, cfg)
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1m", time.Minute, true},
		{"90s", 90 * time.Second, true},
		{"1h30m", 90 * time.Minute, true},
		{"7d", 7 * 24 * time.Hour, true},
		{"1.5d", 0, false},
		{"d", 0, false},
		{"-1d", 0, false},
		{"999999d", 0, false},
		{"", 0, false},
	} {
		got, err := ParseDuration(tc.in)
		if (err == nil) != tc.ok || time.Duration(got) != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestLoadAliasBudget(t *testing.T) {
	// 1,000 sensor globs in one anchored rule, aliased by 2,000 rules:
	// 14 KB of YAML that would have the loader walk 2,000,000 nodes.
	var b strings.Builder
	b.WriteString("- &r\n  sensors: [")
	for i := 0; i < 1000; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("s")
	}
	b.WriteString("]\n")
	for i := 0; i < 2000; i++ {
		b.WriteString("- *r\n")
	}
	_, err := LoadYAML("big", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "config too large") {
		t.Errorf("LoadYAML(2,000 aliases of a 1,000-glob rule) = %v; want \"config too large\"", err)
	}
	// A long list of aliased small rules is within the budget.
	var many strings.Builder
	many.WriteString("- &r {sensors: [a, b, c], detect: [{rate: {max_per_second: 1}}]}\n")
	for i := 0; i < 2000; i++ {
		many.WriteString("- *r\n")
	}
	cfg, err := LoadYAML("many", []byte(many.String()))
	if err != nil || len(cfg.Rules) != 2001 {
		t.Errorf("LoadYAML(2001 aliased rules) = %d rules, %v; want 2001, nil", len(cfg.Rules), err)
	}
}
