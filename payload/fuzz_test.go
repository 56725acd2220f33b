package payload

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// fuzzSeeds are real payloads of both forms, as devices send them.
var fuzzSeeds = []string{
	`{"seq":123,"ts":"2026-11-27T10:00:00.123Z","data":{"temperature":21.53,"humidity":48.2,"vibration":0.0123}}`,
	`{"device_id":"sensor-1","ts":"2024-05-01T12:00:00.123456","data":{"temp":21.5,"door_open":false,"state":"idle"}}`,
	`{"ts":1795773600123,"seq":0,"data":{"env":{"t":21.5,"rh":40},"power":{"v":3.3,"ok":true}}}`,
	`{"ts":1795773600123.456,"data":{"a":-1.5e-3,"b":"\u00e9\ud83d\ude00"}}`,
	`{"data":{"x":1},"fw":"1.2.3","extra":[1,{"k":null}]}`,
	`{"ts":"2026-11-27T12:30:00+02:30","data":{"a.b":1}}`,
	`[{"bn":"urn:dev:mac:0024befffe804ff1:","bt":1.795773600e9,"n":"temp","u":"Cel","v":21.5},{"n":"hum","t":1,"v":48},{"n":"on","vb":true},{"n":"mode","vs":"auto"}]`,
	`[{"n":"a","t":-5,"v":1},{"n":"a","v":2}]`,
	`[{"bver":10,"bv":100,"n":"x","v":-1,"s":3}]`,
	`{"data":{"a":null}}`,
	`{"seq":-1,"data":{"a":1}}`,
	`[{"n":"a","vd":"aGk"}]`,
}

// fuzzLimits are the defaults and a tight set that makes limits easy to hit.
var fuzzLimits = []Limits{
	{},
	{MaxBytes: 512, MaxPoints: 3, MaxMetricLen: 12, MaxStringLen: 8, MaxDepth: 2},
}

func FuzzDecodeTelemetry(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, lim := range fuzzLimits {
			m, err := DecodeTelemetry(b, dev, now, lim)
			if err != nil {
				if Reason(err) == "" || m != nil {
					t.Fatalf("DecodeTelemetry(%q) = %v, %v; want nil and a refusal", b, m, err)
				}
				checkMalformed(t, b, err)
				continue
			}
			checkMessage(t, b, m, lim.WithDefaults())
			if !json.Valid(b) {
				t.Fatalf("DecodeTelemetry(%q) accepted what encoding/json says is invalid", b)
			}
			if b[skipWS(b)] == '{' {
				checkReference(t, b, m)
			}
			checkRoundTrip(t, b, m, lim)
		}
	})
}

// checkMessage checks that an accepted message satisfies every limit.
func checkMessage(t *testing.T, b []byte, m *Message, lim Limits) {
	t.Helper()
	if len(b) > lim.MaxBytes {
		t.Fatalf("DecodeTelemetry accepted %d bytes > %d", len(b), lim.MaxBytes)
	}
	if m.Device != dev {
		t.Fatalf("DecodeTelemetry(%q).Device = %q; want %q", b, m.Device, dev)
	}
	if m.HasSeq && (m.Seq > math.MaxInt64 || b[skipWS(b)] == '[') {
		t.Fatalf("DecodeTelemetry(%q).Seq = %d", b, m.Seq)
	}
	if n := len(m.Points); n < 1 || n > lim.MaxPoints {
		t.Fatalf("DecodeTelemetry(%q) has %d points; want 1..%d", b, n, lim.MaxPoints)
	}
	type key struct {
		metric string
		ts     int64
	}
	seen := map[key]bool{}
	for _, p := range m.Points {
		if p.Metric == "" || len(p.Metric) > lim.MaxMetricLen || !utf8.ValidString(p.Metric) ||
			containsFunc(p.Metric, unicode.IsControl) {
			t.Fatalf("DecodeTelemetry(%q) has metric %q", b, p.Metric)
		}
		if p.TS < 1 {
			t.Fatalf("DecodeTelemetry(%q) has time %d", b, p.TS)
		}
		k := key{p.Metric, p.TS}
		if seen[k] {
			t.Fatalf("DecodeTelemetry(%q) repeats %q at %d", b, p.Metric, p.TS)
		}
		seen[k] = true
		v := p.Value
		switch v.Kind {
		case Number:
			if math.IsNaN(v.Num) || math.IsInf(v.Num, 0) || v.Str != "" {
				t.Fatalf("DecodeTelemetry(%q) has number %v", b, v)
			}
		case Bool:
			if (v.Num != 0 && v.Num != 1) || v.Str != "" {
				t.Fatalf("DecodeTelemetry(%q) has bool %v", b, v)
			}
		case String:
			if len(v.Str) > lim.MaxStringLen || !utf8.ValidString(v.Str) || v.Num != 0 {
				t.Fatalf("DecodeTelemetry(%q) has string %v", b, v)
			}
		default:
			t.Fatalf("DecodeTelemetry(%q) has value kind %v", b, v.Kind)
		}
	}
}

func containsFunc(s string, f func(rune) bool) bool {
	for _, r := range s {
		if f(r) {
			return true
		}
	}
	return false
}

// checkRoundTrip encodes m (one message per distinct time, since the object
// form has one time) and decodes it back.
func checkRoundTrip(t *testing.T, b []byte, m *Message, lim Limits) {
	t.Helper()
	lim.MaxBytes = 1 << 30 // encoding can be longer than the input
	var groups []*Message
	byTS := map[int64]*Message{}
	for _, p := range m.Points {
		g := byTS[p.TS]
		if g == nil {
			g = &Message{Device: m.Device, Seq: m.Seq, HasSeq: m.HasSeq}
			byTS[p.TS] = g
			groups = append(groups, g)
		}
		g.Points = append(g.Points, p)
	}
	for _, g := range groups {
		enc := EncodeTelemetry(g, true)
		if !json.Valid(enc) {
			t.Fatalf("EncodeTelemetry(DecodeTelemetry(%q)) = %s, invalid JSON", b, enc)
		}
		back, err := DecodeTelemetry(enc, dev, now, lim)
		if err != nil {
			t.Fatalf("DecodeTelemetry(EncodeTelemetry(DecodeTelemetry(%q))) = %s: error %v", b, enc, err)
		}
		if !equalMessages(back, g) {
			t.Fatalf("round trip of %q through %s = %v; want %v", b, enc, fmtMessage(back), fmtMessage(g))
		}
	}
}

// checkReference decodes an accepted object-form payload with
// encoding/json's token stream and checks that it finds the same device,
// seq and points in the same order.
func checkReference(t *testing.T, b []byte, m *Message) {
	t.Helper()
	want, err := referenceDecode(b)
	if err != nil {
		t.Fatalf("DecodeTelemetry accepted %q; encoding/json: %v", b, err)
	}
	want.Device = dev
	// encoding/json knows nothing of our timestamps: take ours.
	for i := range want.Points {
		if i < len(m.Points) {
			want.Points[i].TS = m.Points[i].TS
		}
	}
	if !equalMessages(m, want) {
		t.Fatalf("DecodeTelemetry(%q) = %v; encoding/json reads %v", b, fmtMessage(m), fmtMessage(want))
	}
	for _, p := range m.Points {
		if p.TS != m.Points[0].TS {
			t.Fatalf("DecodeTelemetry(%q) has points at different times", b)
		}
	}
}

// referenceDecode is a slow, obviously correct reading of the object form
// with encoding/json.
func referenceDecode(b []byte) (*Message, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	m := &Message{}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("want an object, got %v, %v", tok, err)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		switch tok.(string) {
		case "seq":
			var n json.Number
			if err := dec.Decode(&n); err != nil {
				return nil, err
			}
			if m.Seq, err = strconv.ParseUint(n.String(), 10, 64); err != nil {
				return nil, err
			}
			m.HasSeq = true
		case "data":
			if err := referenceFlatten(dec, "", m); err != nil {
				return nil, err
			}
		default:
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, err
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	return m, nil
}

func referenceFlatten(dec *json.Decoder, prefix string, m *Message) error {
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return fmt.Errorf("data: want an object, got %v, %v", tok, err)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		name := tok.(string)
		if prefix != "" {
			name = prefix + "." + name
		}
		if !dec.More() {
			return fmt.Errorf("no value")
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		switch raw[0] {
		case '{':
			if err := referenceFlatten(json.NewDecoder(bytes.NewReader(raw)), name, m); err != nil {
				return err
			}
		case '"':
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return err
			}
			m.Points = append(m.Points, Point{Metric: name, Value: StringValue(s)})
		case 't', 'f':
			m.Points = append(m.Points, Point{Metric: name, Value: BoolValue(raw[0] == 't')})
		default:
			f, err := strconv.ParseFloat(string(raw), 64)
			if err != nil && !math.IsInf(f, 0) {
				err = nil // underflow to zero is fine
			}
			if err != nil {
				return err
			}
			m.Points = append(m.Points, Point{Metric: name, Value: NumberValue(f)})
		}
	}
	_, err := dec.Token()
	return err
}

// checkMalformed checks the converse of the differential: JSON that
// encoding/json accepts is malformed for us only for the documented
// stricter rules (lone surrogates, repeated keys, deep nesting, SenML
// must-understand fields and versions).
func checkMalformed(t *testing.T, b []byte, err error) {
	t.Helper()
	if Reason(err) != ReasonMalformed || !json.Valid(b) || !utf8.Valid(b) ||
		bytes.Contains(bytes.ToLower(b), []byte(`\ud`)) ||
		bytes.Count(b, []byte("{"))+bytes.Count(b, []byte("[")) >= maxSkipDepth {
		return
	}
	for _, ok := range []string{"repeated", "must-understand", "version"} {
		if strings.Contains(err.Error(), ok) {
			return
		}
	}
	t.Fatalf("DecodeTelemetry(%q) = %v, but encoding/json accepts it", b, err)
}
