package influx

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/fieldhub/fieldhub/payload"
)

func TestAppendPoint(t *testing.T) {
	enc := newLineEncoder("telemetry")
	tests := []struct {
		device string
		p      payload.Point
		want   string
	}{
		{"dev-1", payload.Point{Metric: "temp", TS: 1700000000123456789, Value: payload.NumberValue(21.5)}, "telemetry,device=dev-1 temp=21.5 1700000000123456789\n"},
		{"d", payload.Point{Metric: "n", TS: 1, Value: payload.NumberValue(3)}, "telemetry,device=d n=3 1\n"},
		{"d", payload.Point{Metric: "big", TS: 1, Value: payload.NumberValue(1.5e300)}, "telemetry,device=d big=1.5e+300 1\n"},
		{"d", payload.Point{Metric: "neg", TS: -5, Value: payload.NumberValue(-2e-7)}, "telemetry,device=d neg=-2e-07 -5\n"},
		{"d", payload.Point{Metric: "on", TS: 2, Value: payload.BoolValue(true)}, "telemetry,device=d on=true 2\n"},
		{"d", payload.Point{Metric: "off", TS: 2, Value: payload.BoolValue(false)}, "telemetry,device=d off=false 2\n"},
		{"d", payload.Point{Metric: "s", TS: 3, Value: payload.StringValue(`say "hi" \o/`)}, `telemetry,device=d s="say \"hi\" \\o/" 3` + "\n"},
		{"d", payload.Point{Metric: "s", TS: 3, Value: payload.StringValue("two\nlines")}, "telemetry,device=d s=\"two\nlines\" 3\n"},
		{"d", payload.Point{Metric: "s", TS: 3, Value: payload.StringValue(`ends\`)}, `telemetry,device=d s="ends\\" 3` + "\n"},
		{"d", payload.Point{Metric: "s", TS: 3, Value: payload.StringValue("")}, `telemetry,device=d s="" 3` + "\n"},
		{"d", payload.Point{Metric: "temp C,x=y", TS: 4, Value: payload.NumberValue(1)}, `telemetry,device=d temp\ C\,x\=y=1 4` + "\n"},
		{"d", payload.Point{Metric: `q"k`, TS: 4, Value: payload.NumberValue(1)}, `telemetry,device=d q\"k=1 4` + "\n"},
		{"d", payload.Point{Metric: `back\slash`, TS: 4, Value: payload.NumberValue(1)}, `telemetry,device=d back\slash=1 4` + "\n"},
		{"d", payload.Point{Metric: `k\"w`, TS: 4, Value: payload.NumberValue(1)}, `telemetry,device=d k\\"w=1 4` + "\n"},
		{"d", payload.Point{Metric: "héllo/ü.x", TS: 4, Value: payload.NumberValue(1)}, "telemetry,device=d héllo/ü.x=1 4\n"},
	}
	for _, tt := range tests {
		got, err := enc.appendPoint(nil, tt.device, &tt.p)
		if err != nil || string(got) != tt.want {
			t.Errorf("appendPoint(%q, %+v) = %q, %v; want %q", tt.device, tt.p, got, err, tt.want)
		}
	}
}

func TestAppendPointMeasurement(t *testing.T) {
	enc := newLineEncoder("my data,x=1")
	p := payload.Point{Metric: "v", TS: 1, Value: payload.NumberValue(1)}
	got, _ := enc.appendPoint(nil, "d", &p)
	if want := `my\ data\,x=1,device=d v=1 1` + "\n"; string(got) != want {
		t.Errorf("appendPoint with measurement %q = %q; want %q", "my data,x=1", got, want)
	}
}

func TestAppendPointRefused(t *testing.T) {
	enc := newLineEncoder("telemetry")
	tests := []struct {
		device string
		p      payload.Point
	}{
		{"d", payload.Point{Metric: "nan", Value: payload.NumberValue(math.NaN())}},
		{"d", payload.Point{Metric: "inf", Value: payload.NumberValue(math.Inf(-1))}},
		{"d", payload.Point{Metric: "", Value: payload.NumberValue(1)}},
		{"d", payload.Point{Metric: `ends\`, Value: payload.NumberValue(1)}},
		{"d", payload.Point{Metric: `a\,b`, Value: payload.NumberValue(1)}},
		{"d", payload.Point{Metric: `a\ b`, Value: payload.NumberValue(1)}},
		{"d", payload.Point{Metric: `a\=b`, Value: payload.NumberValue(1)}},
		{"d", payload.Point{Metric: "line\nbreak", Value: payload.NumberValue(1)}},
		{"d", payload.Point{Metric: "k", Value: payload.Value{Kind: 9}}},
		{"", payload.Point{Metric: "k", Value: payload.NumberValue(1)}},
	}
	for _, tt := range tests {
		prefix := []byte("before\n")
		got, err := enc.appendPoint(prefix, tt.device, &tt.p)
		if err == nil || string(got) != "before\n" {
			t.Errorf("appendPoint(%q, %q=%v) = %q, %v; want it unchanged and an error", tt.device, tt.p.Metric, tt.p.Value, got, err)
		}
	}
}

// parseLine parses one line the way InfluxDB 1.6 does (checked against
// influxd in TestInfluxDBRoundTrip): measurement and tags end at a comma,
// equals sign or space not preceded by a backslash; field keys and values
// are scanned skipping backslash pairs; names unescape only the escaped
// specials (a backslash is otherwise literal), strings unescape \\ and \".
func parseLine(line string) (meas, tagKey, tagValue, field string, v payload.Value, ts int64, err error) {
	if !strings.HasSuffix(line, "\n") {
		return "", "", "", "", v, 0, errors.New("no line end")
	}
	line = line[:len(line)-1]
	// endPrev returns the index of the first byte of stops in s[i:] not
	// preceded by a backslash.
	endPrev := func(s string, i int, stops string) int {
		for ; i < len(s); i++ {
			if strings.IndexByte(stops, s[i]) >= 0 && (i == 0 || s[i-1] != '\\') {
				return i
			}
		}
		return -1
	}
	unescape := func(s, codes string) string {
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			if s[i] == '\\' && i+1 < len(s) && strings.IndexByte(codes, s[i+1]) >= 0 {
				i++
			}
			b.WriteByte(s[i])
		}
		return b.String()
	}
	i := endPrev(line, 0, ", ")
	if i < 0 || line[i] != ',' {
		return "", "", "", "", v, 0, errors.New("no tag")
	}
	meas = unescape(line[:i], ", ")
	j := endPrev(line, i+1, "=")
	if j < 0 {
		return "", "", "", "", v, 0, errors.New("no tag value")
	}
	tagKey = unescape(line[i+1:j], ",= ")
	k := endPrev(line, j+1, ", ")
	if k < 0 || line[k] != ' ' {
		return "", "", "", "", v, 0, errors.New("not one tag")
	}
	tagValue = unescape(line[j+1:k], ",= ")
	// field key: skip backslash pairs up to '='
	f := k + 1
	for ; f < len(line) && line[f] != '='; f++ {
		if line[f] == '\\' {
			f++
		}
	}
	if f >= len(line) {
		return "", "", "", "", v, 0, errors.New("no field value")
	}
	field = unescape(line[k+1:f], ",= \"")
	rest := line[f+1:]
	var sp int
	if strings.HasPrefix(rest, `"`) {
		var b strings.Builder
		q := 1
		for ; q < len(rest) && rest[q] != '"'; q++ {
			if rest[q] == '\\' && q+1 < len(rest) && (rest[q+1] == '\\' || rest[q+1] == '"') {
				q++
			}
			b.WriteByte(rest[q])
		}
		if q >= len(rest) {
			return "", "", "", "", v, 0, errors.New("unterminated string")
		}
		v = payload.StringValue(b.String())
		sp = q + 1
	} else {
		sp = strings.IndexByte(rest, ' ')
		if sp < 0 {
			return "", "", "", "", v, 0, errors.New("no timestamp")
		}
		switch s := rest[:sp]; s {
		case "true":
			v = payload.BoolValue(true)
		case "false":
			v = payload.BoolValue(false)
		default:
			fv, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return "", "", "", "", v, 0, err
			}
			v = payload.NumberValue(fv)
		}
	}
	if sp >= len(rest) || rest[sp] != ' ' {
		return "", "", "", "", v, 0, errors.New("no space before the timestamp")
	}
	ts, err = strconv.ParseInt(rest[sp+1:], 10, 64)
	return meas, tagKey, tagValue, field, v, ts, err
}

// FuzzAppendPoint checks that every point the encoder writes parses back
// to itself, and that what it refuses leaves the buffer unchanged.
func FuzzAppendPoint(f *testing.F) {
	f.Add("telemetry", "dev-1", "temp", uint8(0), 21.5, "", int64(1))
	f.Add("my data,x", "d", "temp C,x=y", uint8(2), 0.0, `say "hi" \o/`+"\n", int64(-1))
	f.Add("m", "d.e:f_g", `q"k\"w`, uint8(1), 1.0, "", int64(math.MaxInt64))
	f.Add("m", "d", `back\slash`, uint8(2), 0.0, `ends\`, int64(0))
	f.Add("m", "d", `a\,b`, uint8(0), math.Inf(1), "", int64(0))
	f.Fuzz(func(t *testing.T, meas, device, metric string, kind uint8, num float64, str string, ts int64) {
		if checkName(meas) != nil || strings.HasPrefix(meas, "#") {
			return
		}
		var v payload.Value
		switch kind % 3 {
		case 0:
			v = payload.NumberValue(num)
		case 1:
			v = payload.BoolValue(num != 0)
		case 2:
			v = payload.StringValue(str)
		}
		p := payload.Point{Metric: metric, TS: ts, Value: v}
		b, err := newLineEncoder(meas).appendPoint([]byte("x\n"), device, &p)
		writable := checkName(device) == nil && checkName(metric) == nil && (v.Kind != payload.Number || !math.IsNaN(num) && !math.IsInf(num, 0))
		if !writable {
			if err == nil || string(b) != "x\n" {
				t.Fatalf("appendPoint(%q, %q, %v) = %q, %v; want an error and nothing written", device, metric, v, b, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("appendPoint(%q, %q, %v): %v", device, metric, v, err)
		}
		line := string(b[2:])
		gm, gk, gd, gf, gv, gts, err := parseLine(line)
		if err != nil {
			t.Fatalf("parsing %q: %v", line, err)
		}
		want := fmt.Sprint(meas, "|device|", device, "|", metric, "|", v, "|", ts)
		if got := fmt.Sprint(gm, "|", gk, "|", gd, "|", gf, "|", gv, "|", gts); got != want {
			t.Fatalf("parse(appendPoint) = %s\nwant %s\nline %q", got, want, line)
		}
	})
}
