package pipeline

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxNodes bounds the YAML nodes the loader visits, counting every alias
// expansion, so that a small file of nested aliases cannot cost much.
const maxNodes = 1_000_000

// maxMergeDepth bounds nested YAML merge keys ("<<: *base").
const maxMergeDepth = 8

// LoadYAML decodes and validates a pipeline config; name labels errors.
// The document is either the rule list itself or a mapping whose only key
// is "pipeline" holding it; an empty document has no rules. Omitted keys
// get their defaults, unknown keys are errors, and every error names the
// field and its line, e.g.
// "edge.yml: line 9: pipeline[0].detect[1].zscore.window: must be ≥ 2".
func LoadYAML(name string, b []byte) (Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	if len(doc.Content) == 0 {
		return Config{}, nil
	}
	d := newDecoder()
	root := d.resolve(doc.Content[0])
	seq := root
	if root.Kind == yaml.MappingNode {
		seq = nil
		err := d.mapping(root, "", map[string]decodeFunc{
			"pipeline": func(v *yaml.Node, _ string) error { seq = v; return nil },
		}, nil)
		if err != nil {
			return Config{}, fmt.Errorf("%s: %w", name, err)
		}
	}
	cfg, err := d.config(seq)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", name, err)
	}
	return cfg, nil
}

// UnmarshalYAML implements yaml.Unmarshaler for a Config embedded in a
// larger file: n is the rule list. It fills defaults and validates like
// LoadYAML; MaxSeries is kept.
func (c *Config) UnmarshalYAML(n *yaml.Node) error {
	cfg, err := newDecoder().config(n)
	if err != nil {
		return err
	}
	c.Rules = cfg.Rules
	return nil
}

// MarshalYAML implements yaml.Marshaler: a Config is written as its rule list.
func (c Config) MarshalYAML() (any, error) {
	if c.Rules == nil {
		return []Rule{}, nil
	}
	return c.Rules, nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("want a duration such as 10s, 1m or 1h")
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// decoder walks a yaml.Node tree by hand so that every key is checked
// against the schema and every field's line is known.
type decoder struct {
	budget int // nodes left to visit
}

type decodeFunc func(v *yaml.Node, at string) error

func newDecoder() *decoder { return &decoder{budget: maxNodes} }

// config decodes the rule list n, validates it and attaches line numbers
// to validation errors.
func (d *decoder) config(n *yaml.Node) (Config, error) {
	var cfg Config
	err := d.list(n, "pipeline", func(v *yaml.Node, at string) error {
		r, err := d.rule(v, at)
		cfg.Rules = append(cfg.Rules, r)
		return err
	})
	if err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			fe.Line = d.line(n, fe.Field)
		}
		return Config{}, err
	}
	return cfg, nil
}

// line finds the line of field ("pipeline[0].detect[1].zscore.window")
// by walking the rule list seq, or of the nearest ancestor it can reach.
// Only errors need it, so decoding keeps no map of lines.
func (d *decoder) line(seq *yaml.Node, field string) int {
	rest, ok := strings.CutPrefix(field, "pipeline")
	if !ok || seq == nil {
		return 0
	}
	d.budget = maxNodes
	n := d.resolve(seq)
	line := n.Line
	for rest != "" {
		if rest[0] == '[' {
			j := strings.IndexByte(rest, ']')
			i, err := strconv.Atoi(rest[1:max(j, 1)])
			if j < 0 || err != nil || n.Kind != yaml.SequenceNode || i < 0 || i >= len(n.Content) {
				return line
			}
			rest = rest[j+1:]
			n = d.resolve(n.Content[i])
			line = n.Line
			continue
		}
		name := rest[1:]
		if j := strings.IndexAny(name, ".["); j >= 0 {
			name = name[:j]
		}
		rest = rest[1+len(name):]
		if n.Kind != yaml.MappingNode {
			return line
		}
		pairs, err := d.pairs(n, "", 0)
		if err != nil {
			return line
		}
		found := false
		for _, p := range pairs {
			if p.k.Value == name {
				line, n, found = p.k.Line, d.resolve(p.v), true
				break
			}
		}
		if !found {
			return line
		}
	}
	return line
}

func (d *decoder) resolve(n *yaml.Node) *yaml.Node {
	if n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

func (d *decoder) spend(n *yaml.Node, at string) error {
	d.budget--
	if d.budget < 0 {
		return &FieldError{Field: at, Line: n.Line, Err: fmt.Errorf("config too large (more than %d YAML nodes, counting aliases)", maxNodes)}
	}
	return nil
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

func errAt(at string, n *yaml.Node, format string, args ...any) *FieldError {
	if at == "" {
		at = "(top level)"
	}
	return &FieldError{Field: at, Line: n.Line, Err: fmt.Errorf(format, args...)}
}

func kind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

// list calls each for every element of the sequence n; null is an empty list.
func (d *decoder) list(n *yaml.Node, at string, each decodeFunc) error {
	if n == nil {
		return nil
	}
	n = d.resolve(n)
	if err := d.spend(n, at); err != nil {
		return err
	}
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return errAt(at, n, "want a list, got %s", kind(n))
	}
	for i, v := range n.Content {
		if err := each(v, at+"["+strconv.Itoa(i)+"]"); err != nil {
			return err
		}
	}
	return nil
}

type pair struct{ k, v *yaml.Node }

// mapping decodes the mapping n (null is an empty mapping) through fields;
// unknown keys are errors. seen, when not nil, records the keys present.
func (d *decoder) mapping(n *yaml.Node, at string, fields map[string]decodeFunc, seen map[string]bool) error {
	n = d.resolve(n)
	if err := d.spend(n, at); err != nil {
		return err
	}
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return errAt(at, n, "want a mapping, got %s", kind(n))
	}
	pairs, err := d.pairs(n, at, 0)
	if err != nil {
		return err
	}
	for _, kv := range pairs {
		name := kv.k.Value
		dec, ok := fields[name]
		if !ok {
			return errAt(at, kv.k, "unknown field %q", name)
		}
		p := name
		if at != "" {
			p = at + "." + name
		}
		if seen != nil {
			seen[name] = true
		}
		if err := dec(kv.v, p); err != nil {
			return err
		}
	}
	return nil
}

// pairs returns the key/value pairs of n with YAML merge keys ("<<")
// expanded; the mapping's own keys win over merged ones, and earlier
// merged mappings win over later ones.
func (d *decoder) pairs(n *yaml.Node, at string, depth int) ([]pair, error) {
	if depth > maxMergeDepth {
		return nil, errAt(at, n, "merge keys nested too deep")
	}
	var own []pair
	var merged [][]pair
	have := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := d.resolve(n.Content[i]), n.Content[i+1]
		if err := d.spend(k, at); err != nil {
			return nil, err
		}
		if k.Kind != yaml.ScalarNode {
			return nil, errAt(at, k, "want a field name, got %s", kind(k))
		}
		if k.ShortTag() == "!!merge" {
			v = d.resolve(v)
			srcs := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				srcs = v.Content
			}
			for _, src := range srcs {
				src = d.resolve(src)
				if src.Kind != yaml.MappingNode {
					return nil, errAt(at, k, "merge key wants a mapping or a list of mappings, got %s", kind(src))
				}
				ps, err := d.pairs(src, at, depth+1)
				if err != nil {
					return nil, err
				}
				merged = append(merged, ps)
			}
			continue
		}
		if have[k.Value] {
			return nil, errAt(at, k, "field %q given twice", k.Value)
		}
		have[k.Value] = true
		own = append(own, pair{k, v})
	}
	for _, ps := range merged {
		for _, p := range ps {
			if !have[p.k.Value] {
				have[p.k.Value] = true
				own = append(own, p)
			}
		}
	}
	return own, nil
}

func (d *decoder) scalar(n *yaml.Node, at, want string) (*yaml.Node, error) {
	n = d.resolve(n)
	if err := d.spend(n, at); err != nil {
		return nil, err
	}
	if n.Kind != yaml.ScalarNode || isNull(n) {
		return nil, errAt(at, n, "want %s, got %s", want, kind(n))
	}
	return n, nil
}

func (d *decoder) float(n *yaml.Node, at string, out *float64) error {
	s, err := d.scalar(n, at, "a number")
	if err != nil {
		return err
	}
	if t := s.ShortTag(); t != "!!int" && t != "!!float" {
		return errAt(at, s, "want a number, got %q", s.Value)
	}
	if err := s.Decode(out); err != nil {
		return errAt(at, s, "want a number, got %q", s.Value)
	}
	return nil
}

func (d *decoder) floatPtr(n *yaml.Node, at string, out **float64) error {
	var f float64
	if err := d.float(n, at, &f); err != nil {
		return err
	}
	*out = &f
	return nil
}

func (d *decoder) integer(n *yaml.Node, at string, out *int) error {
	s, err := d.scalar(n, at, "a whole number")
	if err != nil {
		return err
	}
	if s.ShortTag() != "!!int" || s.Decode(out) != nil {
		return errAt(at, s, "want a whole number, got %q", s.Value)
	}
	return nil
}

func (d *decoder) boolean(n *yaml.Node, at string, out *bool) error {
	s, err := d.scalar(n, at, "true or false")
	if err != nil {
		return err
	}
	if s.ShortTag() != "!!bool" || s.Decode(out) != nil {
		return errAt(at, s, "want true or false, got %q", s.Value)
	}
	return nil
}

func (d *decoder) str(n *yaml.Node, at string, out *string) error {
	s, err := d.scalar(n, at, "a string")
	if err != nil {
		return err
	}
	*out = s.Value
	return nil
}

// strs decodes a list of strings; a single string is a one-element list.
func (d *decoder) strs(n *yaml.Node, at string, out *[]string) error {
	r := d.resolve(n)
	if r.Kind == yaml.ScalarNode && !isNull(r) {
		var s string
		if err := d.str(r, at, &s); err != nil {
			return err
		}
		*out = []string{s}
		return nil
	}
	*out = []string{} // present but empty: Validate reports it
	if isNull(r) {
		return d.spend(r, at)
	}
	return d.list(r, at, func(v *yaml.Node, p string) error {
		var s string
		err := d.str(v, p, &s)
		*out = append(*out, s)
		return err
	})
}

func (d *decoder) duration(n *yaml.Node, at string, out *Duration) error {
	s, err := d.scalar(n, at, "a duration such as 10s, 1m or 1h")
	if err != nil {
		return err
	}
	if s.ShortTag() != "!!str" {
		return errAt(at, s, "want a duration such as 10s, 1m or 1h, got %q", s.Value)
	}
	v, err := ParseDuration(s.Value)
	if err != nil {
		return errAt(at, s, "%w", err)
	}
	*out = v
	return nil
}

func (d *decoder) rule(n *yaml.Node, at string) (Rule, error) {
	var r Rule
	seen := map[string]bool{}
	err := d.mapping(n, at, map[string]decodeFunc{
		"sensors": func(v *yaml.Node, p string) error { return d.strs(v, p, &r.Sensors) },
		"metrics": func(v *yaml.Node, p string) error { return d.strs(v, p, &r.Metrics) },
		"filters": func(v *yaml.Node, p string) error { return d.filters(v, p, &r.Filters) },
		"detect": func(v *yaml.Node, p string) error {
			return d.list(v, p, func(v *yaml.Node, p string) error {
				det, err := d.detector(v, p)
				r.Detect = append(r.Detect, det)
				return err
			})
		},
		"window": func(v *yaml.Node, p string) error {
			w, err := d.window(v, p)
			r.Window = w
			return err
		},
		"forward": func(v *yaml.Node, p string) error {
			var s string
			err := d.str(v, p, &s)
			r.Forward = Forward(s)
			return err
		},
	}, seen)
	if !seen["forward"] {
		r.Forward = ForwardRaw
	}
	return r, err
}

func (d *decoder) filters(n *yaml.Node, at string, f *Filters) error {
	return d.mapping(n, at, map[string]decodeFunc{
		"range": func(v *yaml.Node, p string) error {
			f.Range = &Range{}
			return d.mapping(v, p, map[string]decodeFunc{
				"min": func(v *yaml.Node, p string) error { return d.floatPtr(v, p, &f.Range.Min) },
				"max": func(v *yaml.Node, p string) error { return d.floatPtr(v, p, &f.Range.Max) },
			}, nil)
		},
		"deadband": func(v *yaml.Node, p string) error { return d.float(v, p, &f.Deadband) },
		"dedup":    func(v *yaml.Node, p string) error { return d.boolean(v, p, &f.Dedup) },
	}, nil)
}

func (d *decoder) detector(n *yaml.Node, at string) (Detector, error) {
	var det Detector
	err := d.mapping(n, at, map[string]decodeFunc{
		"threshold": func(v *yaml.Node, p string) error {
			t := &Threshold{Severity: DefaultSeverity}
			det.Threshold = t
			return d.mapping(v, p, map[string]decodeFunc{
				"above":       func(v *yaml.Node, p string) error { return d.floatPtr(v, p, &t.Above) },
				"clear_below": func(v *yaml.Node, p string) error { return d.floatPtr(v, p, &t.ClearBelow) },
				"below":       func(v *yaml.Node, p string) error { return d.floatPtr(v, p, &t.Below) },
				"clear_above": func(v *yaml.Node, p string) error { return d.floatPtr(v, p, &t.ClearAbove) },
				"severity":    func(v *yaml.Node, p string) error { return d.str(v, p, &t.Severity) },
			}, nil)
		},
		"zscore": func(v *yaml.Node, p string) error {
			z := &ZScore{Window: DefaultZScoreWindow, Threshold: DefaultZScoreThreshold, Severity: DefaultSeverity}
			det.ZScore = z
			seen := map[string]bool{}
			err := d.mapping(v, p, map[string]decodeFunc{
				"window":      func(v *yaml.Node, p string) error { return d.integer(v, p, &z.Window) },
				"threshold":   func(v *yaml.Node, p string) error { return d.float(v, p, &z.Threshold) },
				"min_samples": func(v *yaml.Node, p string) error { return d.integer(v, p, &z.MinSamples) },
				"severity":    func(v *yaml.Node, p string) error { return d.str(v, p, &z.Severity) },
			}, seen)
			if !seen["min_samples"] {
				z.MinSamples = z.Window
			}
			return err
		},
		"rate": func(v *yaml.Node, p string) error {
			r := &Rate{Severity: DefaultSeverity}
			det.Rate = r
			return d.mapping(v, p, map[string]decodeFunc{
				"max_per_second": func(v *yaml.Node, p string) error { return d.float(v, p, &r.MaxPerSecond) },
				"severity":       func(v *yaml.Node, p string) error { return d.str(v, p, &r.Severity) },
			}, nil)
		},
	}, nil)
	return det, err
}

func (d *decoder) window(n *yaml.Node, at string) (*Window, error) {
	w := &Window{}
	seen := map[string]bool{}
	err := d.mapping(n, at, map[string]decodeFunc{
		"size":       func(v *yaml.Node, p string) error { return d.duration(v, p, &w.Size) },
		"aggregates": func(v *yaml.Node, p string) error { return d.strs(v, p, &w.Aggregates) },
	}, seen)
	if !seen["aggregates"] {
		w.Aggregates = append([]string(nil), AllAggregates...)
	}
	return w, err
}
