package pipeline

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/payload"
)

var update = flag.Bool("update", false, "rewrite the expected output in testdata/*.txt")

// TestDataDriven replays testdata/*.txt in the style of Pebble's datadriven
// tests. Each case is a command line, input lines, "----", and the expected
// output up to a blank line; lines starting with # between cases are
// comments. Commands:
//
//	new [max_series=N]     input: YAML rule list; output: "ok" or the error
//	process                input: "sensor metric seconds value" per line,
//	                       value a number, true, false or a quoted string;
//	                       output: what each reading produced, in order
//	flush SECONDS          output: the windows closed
//	stats                  output: the counters
//
// Timestamps are seconds since the Unix epoch (decimals allowed). Run with
// -update to rewrite the expected output from the actual one.
func TestDataDriven(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) { runFile(t, file) })
	}
}

type ddCase struct {
	line     int // 1-based line of the command
	cmd      string
	input    []string
	want     []string
	wantFrom int // index in lines of the first expected line
	wantTo   int // index just past the last expected line
}

func parseDD(t *testing.T, file string, lines []string) []ddCase {
	var cases []ddCase
	for i := 0; i < len(lines); {
		l := lines[i]
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			i++
			continue
		}
		c := ddCase{line: i + 1, cmd: l}
		i++
		for i < len(lines) && lines[i] != "----" {
			c.input = append(c.input, lines[i])
			i++
		}
		if i == len(lines) {
			t.Fatalf("%s:%d: %q has no ---- line", file, c.line, c.cmd)
		}
		i++
		c.wantFrom = i
		for i < len(lines) && strings.TrimSpace(lines[i]) != "" {
			c.want = append(c.want, lines[i])
			i++
		}
		c.wantTo = i
		cases = append(cases, c)
	}
	return cases
}

func runFile(t *testing.T, file string) {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	cases := parseDD(t, file, lines)
	var p *Pipeline
	got := make([][]string, len(cases))
	for i, c := range cases {
		got[i] = runCase(t, file, c, &p)
		if !*update && !slices.Equal(got[i], c.want) {
			t.Errorf("%s:%d: %s =\n%s\nwant\n%s", file, c.line, c.cmd,
				strings.Join(got[i], "\n"), strings.Join(c.want, "\n"))
		}
	}
	if *update {
		var out []string
		prev := 0
		for i, c := range cases {
			out = append(out, lines[prev:c.wantFrom]...)
			out = append(out, got[i]...)
			prev = c.wantTo
		}
		out = append(out, lines[prev:]...)
		if err := os.WriteFile(file, []byte(strings.Join(out, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func runCase(t *testing.T, file string, c ddCase, p **Pipeline) []string {
	fields := strings.Fields(c.cmd)
	at := fmt.Sprintf("%s:%d", file, c.line)
	switch fields[0] {
	case "new":
		cfg, err := LoadYAML("config", []byte(strings.Join(c.input, "\n")))
		if err != nil {
			return []string{err.Error()}
		}
		for _, arg := range fields[1:] {
			v, ok := strings.CutPrefix(arg, "max_series=")
			n, err := strconv.Atoi(v)
			if !ok || err != nil {
				t.Fatalf("%s: bad argument %q", at, arg)
			}
			cfg.MaxSeries = n
		}
		np, err := New(cfg)
		if err != nil {
			return []string{err.Error()}
		}
		*p = np
		return []string{"ok"}
	case "process":
		if *p == nil {
			t.Fatalf("%s: process before new", at)
		}
		var out []string
		for _, l := range c.input {
			r, err := parseReading(l)
			if err != nil {
				t.Fatalf("%s: %v", at, err)
			}
			out = append(out, formatOutput((*p).Process(r))...)
		}
		return out
	case "flush":
		if *p == nil || len(fields) != 2 {
			t.Fatalf("%s: want new, then flush SECONDS", at)
		}
		ts, err := parseSeconds(fields[1])
		if err != nil {
			t.Fatalf("%s: %v", at, err)
		}
		return formatOutput((*p).Flush(ts))
	case "stats":
		if *p == nil {
			t.Fatalf("%s: stats before new", at)
		}
		return []string{formatStats((*p).Stats())}
	}
	t.Fatalf("%s: unknown command %q", at, fields[0])
	return nil
}

// parseSeconds reads "90" or "59.999" as a time that many seconds after
// the Unix epoch, exactly (no float rounding).
func parseSeconds(s string) (time.Time, error) {
	whole, frac, _ := strings.Cut(s, ".")
	sec, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || len(frac) > 9 {
		return time.Time{}, fmt.Errorf("bad seconds %q", s)
	}
	var ns int64
	if frac != "" {
		ns, err = strconv.ParseInt((frac + "000000000")[:9], 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("bad seconds %q", s)
		}
	}
	return time.Unix(sec, ns).UTC(), nil
}

func formatSeconds(t time.Time) string {
	s := strconv.FormatInt(t.Unix(), 10)
	if ns := t.Nanosecond(); ns != 0 {
		s += strings.TrimRight(fmt.Sprintf(".%09d", ns), "0")
	}
	return s
}

func parseReading(l string) (Reading, error) {
	f := strings.SplitN(l, " ", 4)
	if len(f) != 4 {
		return Reading{}, fmt.Errorf("want \"sensor metric seconds value\", got %q", l)
	}
	ts, err := parseSeconds(f[2])
	if err != nil {
		return Reading{}, err
	}
	r := Reading{Sensor: f[0], Metric: f[1], TS: ts}
	switch v := f[3]; {
	case v == "true" || v == "false":
		r.Value = payload.BoolValue(v == "true")
	case strings.HasPrefix(v, `"`):
		s, err := strconv.Unquote(v)
		if err != nil {
			return Reading{}, fmt.Errorf("bad string %s", v)
		}
		r.Value = payload.StringValue(s)
	default:
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return Reading{}, fmt.Errorf("bad number %q", v)
		}
		r.Value = payload.NumberValue(n)
	}
	return r, nil
}

func formatValue(v payload.Value) string {
	switch v.Kind {
	case payload.Bool:
		return strconv.FormatBool(v.Num != 0)
	case payload.String:
		return strconv.Quote(v.Str)
	}
	return num(v.Num)
}

func formatReading(r Reading) string {
	return fmt.Sprintf("%s %s @%s %s", r.Sensor, r.Metric, formatSeconds(r.TS), formatValue(r.Value))
}

// formatOutput lists drops, alerts, closed windows, then forwarded readings.
func formatOutput(o Output) []string {
	var out []string
	for _, d := range o.Dropped {
		out = append(out, "drop "+formatReading(d.Reading)+" "+d.Reason)
	}
	for _, a := range o.Alerts {
		out = append(out, fmt.Sprintf("alert %s %s @%s %s %s %s: %s",
			a.Sensor, a.Metric, formatSeconds(a.TS), a.Rule, a.State, a.Severity, a.Message))
	}
	for _, a := range o.Aggregates {
		s := fmt.Sprintf("aggregate %s %s [%s,%s)", a.Sensor, a.Metric, formatSeconds(a.Start), formatSeconds(a.End))
		for _, f := range a.Fields {
			v, _ := a.Value(f)
			s += " " + f + "=" + num(v)
		}
		out = append(out, s)
	}
	for _, r := range o.Forward {
		out = append(out, "forward "+formatReading(r))
	}
	return out
}

func formatStats(s Stats) string {
	out := fmt.Sprintf("processed=%d forwarded=%d aggregates=%d late=%d raised=%d cleared=%d series=%d",
		s.Processed, s.Forwarded, s.Aggregates, s.Late, s.AlertsRaised, s.AlertsCleared, s.Series)
	reasons := make([]string, 0, len(s.Dropped))
	for r := range s.Dropped {
		reasons = append(reasons, r)
	}
	slices.Sort(reasons)
	if len(reasons) > 0 {
		out += " dropped:"
	}
	for _, r := range reasons {
		out += fmt.Sprintf(" %s=%d", r, s.Dropped[r])
	}
	return out
}
