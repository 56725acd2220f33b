package pipeline

import (
	"reflect"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzConfig checks that the YAML loader never panics, that every config
// it accepts is accepted by New and runs, and that an accepted config
// round-trips through yaml.Marshal unchanged. Seeds are in
// testdata/fuzz/FuzzConfig and below.
func FuzzConfig(f *testing.F) {
	for _, s := range []string{
		fullYAML,
		"",
		"- {}",
		"pipeline:\n  - sensors: [a]\n    filters: {range: {min: 0}}\n",
		"- detect: [{zscore: {window: 5, min_samples: 2}}, {rate: {max_per_second: 0.5}}]",
		"- &r {metrics: [x]}\n- <<: *r\n  window: {size: 10s}\n  forward: both",
		"- window: {size: 1ms, aggregates: [last]}\n  forward: aggregates",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := LoadYAML("fuzz", b)
		if err != nil {
			return
		}
		p, err := New(cfg)
		if err != nil {
			t.Fatalf("New(LoadYAML(%q)) = %v; want nil", b, err)
		}
		for i, v := range []float64{1, 100, -5, 1, 1e9, 0} {
			p.Process(numAt("a", "m", float64(i*7), v))
		}
		p.Flush(at(1e9))
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("Marshal(LoadYAML(%q)) = %v", b, err)
		}
		again, err := LoadYAML("again", out)
		if err != nil {
			t.Fatalf("LoadYAML(Marshal(LoadYAML(%q))) = %v\n%s", b, err, out)
		}
		if !reflect.DeepEqual(again, cfg) {
			t.Fatalf("round trip of %q =\n%#v\nwant\n%#v\nvia\n%s", b, again, cfg, out)
		}
	})
}
