package payload

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/fieldhub/fieldhub/topic"
)

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func rd(device string, seq int64, points ...Point) *Message {
	m := &Message{Device: device, Points: points}
	if seq >= 0 {
		m.Seq, m.HasSeq = uint64(seq), true
	}
	return m
}

func TestDecodeBatch(t *testing.T) {
	t0 := ns("2026-11-27T10:00:00.5Z")
	ms := int64(1795773600123) * 1e6
	n := now.UnixNano()
	tests := []struct {
		name   string
		in     string
		want   []*Message
		alerts []Alert
	}{
		{"readings",
			`{"readings":[{"device":"child-1","seq":17,"ts":"2026-11-27T10:00:00.5Z","data":{"temperature":21.5,"ok":true}},` +
				`{"device":"child-2","ts":1795773600123,"data":{"state":"run","env":{"rh":40}}}]}`,
			[]*Message{
				rd("child-1", 17, num("temperature", t0, 21.5), boolean("ok", t0, true)),
				rd("child-2", -1, str("state", ms, "run"), num("env.rh", ms, 40)),
			}, nil},
		{"no ts is now", `{"readings":[{"device":"c","data":{"x":1}}]}`,
			[]*Message{rd("c", -1, num("x", n, 1))}, nil},
		{"device_id alias", `{"readings":[{"device_id":"c","seq":0,"data":{"x":1}}]}`,
			[]*Message{rd("c", 0, num("x", n, 1))}, nil},
		{"device and device_id equal", `{"readings":[{"device":"c","device_id":"c","data":{"x":1}}]}`,
			[]*Message{rd("c", -1, num("x", n, 1))}, nil},
		{"same metric in two readings", `{"readings":[{"device":"c","seq":1,"data":{"x":1}},{"device":"c","seq":2,"data":{"x":2}}]}`,
			[]*Message{rd("c", 1, num("x", n, 1)), rd("c", 2, num("x", n, 2))}, nil},
		{"unknown keys ignored", `{"v":2,"readings":[{"device":"c","fw":"1.0","data":{"x":1}}],"extra":{"a":[1]}}`,
			[]*Message{rd("c", -1, num("x", n, 1))}, nil},
		{"alerts only", `{"readings":[],"alerts":[{"device":"c","ts":"2026-11-27T10:00:00.5Z","metric":"temperature","value":93.2,"rule":"threshold_above","severity":"critical","message":"hot","state":"raised"}]}`,
			nil, []Alert{{Device: "c", TS: t0, Metric: "temperature", Value: 93.2, Rule: "threshold_above", Severity: "critical", Message: "hot", State: "raised"}}},
		{"alert defaults", `{"alerts":[{"device":"c","rule":"zscore","value":null}]}`,
			nil, []Alert{{Device: "c", TS: n, Rule: "zscore", Severity: SeverityWarning, State: StateRaised}}},
		{"both", `{"alerts":[{"device":"b","message":"door open","state":"cleared","severity":"info"}],"readings":[{"device":"a","data":{"x":-1.5e-3}}]}`,
			[]*Message{rd("a", -1, num("x", n, -1.5e-3))},
			[]Alert{{Device: "b", TS: n, Message: "door open", Severity: SeverityInfo, State: StateCleared}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, in := range [][]byte{[]byte(tt.in), gz(t, []byte(tt.in))} {
				b, err := DecodeBatch(in, now, BatchLimits{})
				if err != nil {
					t.Fatalf("DecodeBatch(%s) = %v", tt.in, err)
				}
				checkBatch(t, tt.in, b, tt.want, tt.alerts)
			}
		})
	}
}

func checkBatch(t *testing.T, in string, b *Batch, want []*Message, alerts []Alert) {
	t.Helper()
	if len(b.Messages) != len(want) {
		t.Fatalf("DecodeBatch(%s) has %d readings; want %d", in, len(b.Messages), len(want))
	}
	for i := range want {
		if !equalMessages(b.Messages[i], want[i]) {
			t.Errorf("DecodeBatch(%s).Messages[%d] = %v; want %v", in, i, fmtMessage(b.Messages[i]), fmtMessage(want[i]))
		}
	}
	if len(b.Alerts) != len(alerts) {
		t.Fatalf("DecodeBatch(%s) has %d alerts; want %d", in, len(b.Alerts), len(alerts))
	}
	for i := range alerts {
		if b.Alerts[i] != alerts[i] {
			t.Errorf("DecodeBatch(%s).Alerts[%d] = %+v; want %+v", in, i, b.Alerts[i], alerts[i])
		}
	}
}

func TestDecodeBatchRefusals(t *testing.T) {
	tight := BatchLimits{MaxBytes: 300, MaxReadings: 2, MaxAlerts: 1, MaxPoints: 3, Reading: Limits{MaxBytes: 80, MaxPoints: 2}}
	r := func(dev string) string { return `{"device":"` + dev + `","data":{"x":1}}` }
	tests := []struct {
		name, in string
		lim      BatchLimits
		reason   string
	}{
		{"empty payload", "", BatchLimits{}, ReasonEmpty},
		{"white space", "  \n", BatchLimits{}, ReasonEmpty},
		{"empty object", `{}`, BatchLimits{}, ReasonEmpty},
		{"empty arrays", `{"readings":[],"alerts":[]}`, BatchLimits{}, ReasonEmpty},
		{"array", `[` + r("a") + `]`, BatchLimits{}, ReasonWrongType},
		{"string", `"x"`, BatchLimits{}, ReasonWrongType},
		{"not JSON", `{"readings":[`, BatchLimits{}, ReasonMalformed},
		{"trailing data", `{"readings":[` + r("a") + `]}x`, BatchLimits{}, ReasonMalformed},
		{"repeated readings", `{"readings":[` + r("a") + `],"readings":[]}`, BatchLimits{}, ReasonMalformed},
		{"readings not array", `{"readings":{}}`, BatchLimits{}, ReasonWrongType},
		{"reading not object", `{"readings":[1]}`, BatchLimits{}, ReasonWrongType},
		{"reading without device", `{"readings":[{"data":{"x":1}}]}`, BatchLimits{}, ReasonMalformed},
		{"invalid device", `{"readings":[{"device":"a/b","data":{"x":1}}]}`, BatchLimits{}, ReasonMalformed},
		{"empty device", `{"readings":[{"device":"","data":{"x":1}}]}`, BatchLimits{}, ReasonMalformed},
		{"device not string", `{"readings":[{"device":7,"data":{"x":1}}]}`, BatchLimits{}, ReasonWrongType},
		{"device and device_id differ", `{"readings":[{"device":"a","device_id":"b","data":{"x":1}}]}`, BatchLimits{}, ReasonDeviceMismatch},
		{"repeated device", `{"readings":[{"device":"a","device":"a","data":{"x":1}}]}`, BatchLimits{}, ReasonMalformed},
		{"reading without data", `{"readings":[{"device":"a"}]}`, BatchLimits{}, ReasonEmpty},
		{"bad value in second reading", `{"readings":[` + r("a") + `,{"device":"b","data":{"x":null}}]}`, BatchLimits{}, ReasonWrongType},
		{"bad seq", `{"readings":[{"device":"a","seq":-1,"data":{"x":1}}]}`, BatchLimits{}, ReasonWrongType},
		{"bad ts", `{"readings":[{"device":"a","ts":"yesterday","data":{"x":1}}]}`, BatchLimits{}, ReasonBadTimestamp},
		{"repeated metric", `{"readings":[{"device":"a","data":{"x":1,"x":2}}]}`, BatchLimits{}, ReasonBadMetric},
		{"too large", `{"readings":[` + r("a") + `],"pad":"` + strings.Repeat("x", 300) + `"}`, tight, ReasonTooLarge},
		{"reading too large", `{"readings":[{"device":"a","pad":"` + strings.Repeat("x", 80) + `","data":{"x":1}}]}`, tight, ReasonTooLarge},
		{"too many readings", `{"readings":[` + r("a") + `,` + r("b") + `,` + r("c") + `]}`, tight, ReasonTooManyPoints},
		{"too many points in a reading", `{"readings":[{"device":"a","data":{"x":1,"y":2,"z":3}}]}`, tight, ReasonTooManyPoints},
		{"too many points in the batch", `{"readings":[{"device":"a","data":{"x":1,"y":2}},{"device":"b","data":{"x":1,"y":2}}]}`, tight, ReasonTooManyPoints},
		{"too many alerts", `{"alerts":[{"device":"a","rule":"r"},{"device":"a","rule":"r"}]}`, tight, ReasonTooLarge},
		{"alert without device", `{"alerts":[{"rule":"r"}]}`, BatchLimits{}, ReasonMalformed},
		{"alert with bad severity", `{"alerts":[{"device":"a","rule":"r","severity":"fatal"}]}`, BatchLimits{}, ReasonWrongType},
		{"empty alert", `{"alerts":[{"device":"a","severity":"info"}]}`, BatchLimits{}, ReasonEmpty},
		{"gzip cut short", string(gz(t, []byte(`{"readings":[`+r("a")+`]}`))[:20]), BatchLimits{}, ReasonMalformed},
		{"gzip header only", "\x1f\x8b", BatchLimits{}, ReasonMalformed},
		{"gzip garbage after", string(gz(t, []byte(`{"readings":[`+r("a")+`]}`))) + "junk", BatchLimits{}, ReasonMalformed},
		{"gzip too large", string(gz(t, []byte(`{"readings":[`+r("a")+`],"pad":"`+strings.Repeat("x", 300)+`"}`))), tight, ReasonTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := DecodeBatch([]byte(tt.in), now, tt.lim)
			if got := Reason(err); got != tt.reason || b != nil {
				t.Errorf("DecodeBatch(%q) = %v, %v (reason %q); want reason %q", clip([]byte(tt.in)), b, err, got, tt.reason)
			}
		})
	}
}

// TestDecodeBatchErrorNamesElement checks that a refusal says which
// element was refused.
func TestDecodeBatchErrorNamesElement(t *testing.T) {
	_, err := DecodeBatch([]byte(`{"readings":[{"device":"a","data":{"x":1}},{"device":"b","data":{"x":[]}}]}`), now, BatchLimits{})
	if err == nil || !strings.Contains(err.Error(), "readings[1]:") {
		t.Errorf("DecodeBatch error = %v; want it to name readings[1]", err)
	}
}

// TestDecodeBatchZipBomb: a few KiB of gzip that inflate to far more than
// the limit are refused without inflating them all.
func TestDecodeBatchZipBomb(t *testing.T) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write([]byte(`{"readings":[],"pad":"`))
	zeros := make([]byte, 1<<20)
	for i := range zeros {
		zeros[i] = 'x'
	}
	for range 64 { // 64 MiB
		zw.Write(zeros)
	}
	zw.Write([]byte(`"}`))
	zw.Close()
	if buf.Len() > 256<<10 {
		t.Fatalf("bomb is %d bytes", buf.Len())
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := DecodeBatch(buf.Bytes(), now, BatchLimits{}); Reason(err) != ReasonTooLarge {
		t.Errorf("DecodeBatch(zip bomb) = %v; want too_large", err)
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 4*DefaultBatchMaxBytes {
		t.Errorf("DecodeBatch(zip bomb) allocated %d bytes; want at most %d", n, 4*DefaultBatchMaxBytes)
	}
}

func TestDecodeAlert(t *testing.T) {
	t0 := ns("2026-11-27T10:00:00.5Z")
	n := now.UnixNano()
	tests := []struct {
		in   string
		want Alert
	}{
		{`{"ts":"2026-11-27T10:00:00.5Z","metric":"temperature","value":93.2,"rule":"threshold_above","severity":"critical","message":"temperature 93.2 above 90","state":"raised"}`,
			Alert{Device: dev, TS: t0, Metric: "temperature", Value: 93.2, Rule: "threshold_above", Severity: "critical", Message: "temperature 93.2 above 90", State: "raised"}},
		{`{"message":"door open"}`, Alert{Device: dev, TS: n, Message: "door open", Severity: "warning", State: "raised"}},
		{`{"device":"sensor-1","device_id":"sensor-1","rule":"r","ts":1795773600123,"x":[1,{}]}`,
			Alert{Device: dev, TS: 1795773600123e6, Rule: "r", Severity: "warning", State: "raised"}},
		{` {"metric":"a.b","value":-0.5,"state":"cleared","severity":"info"} `,
			Alert{Device: dev, TS: n, Metric: "a.b", Value: -0.5, Severity: "info", State: "cleared"}},
	}
	for _, tt := range tests {
		got, err := DecodeAlert([]byte(tt.in), dev, now)
		if err != nil || *got != tt.want {
			t.Errorf("DecodeAlert(%s) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestDecodeAlertRefusals(t *testing.T) {
	tests := []struct{ in, reason string }{
		{``, ReasonEmpty},
		{`{}`, ReasonEmpty},
		{`{"severity":"critical","value":1}`, ReasonEmpty},
		{`[]`, ReasonWrongType},
		{`"alert"`, ReasonWrongType},
		{`{"rule":"r"`, ReasonMalformed},
		{`{"rule":"r"} {}`, ReasonMalformed},
		{`{"rule":"r","rule":"s"}`, ReasonMalformed},
		{`{"rule":"r","device":"other"}`, ReasonDeviceMismatch},
		{`{"rule":"r","device_id":"bad/id"}`, ReasonDeviceMismatch},
		{`{"rule":"r","ts":"soon"}`, ReasonBadTimestamp},
		{`{"rule":"r","ts":true}`, ReasonWrongType},
		{`{"rule":"r","value":"hot"}`, ReasonWrongType},
		{`{"rule":"r","value":1e400}`, ReasonWrongType},
		{`{"rule":7}`, ReasonWrongType},
		{`{"rule":""}`, ReasonWrongType},
		{`{"rule":"` + strings.Repeat("r", MaxRuleLen+1) + `"}`, ReasonWrongType},
		{`{"rule":"a\u0001b"}`, ReasonWrongType},
		{`{"rule":"r","severity":"CRITICAL"}`, ReasonWrongType},
		{`{"rule":"r","state":"open"}`, ReasonWrongType},
		{`{"metric":""}`, ReasonBadMetric},
		{`{"metric":"` + strings.Repeat("m", 129) + `"}`, ReasonBadMetric},
		{`{"message":"` + strings.Repeat("m", MaxAlertMessageLen+1) + `"}`, ReasonTooLarge},
		{`{"message":"` + strings.Repeat("m", DefaultMaxBytes) + `"}`, ReasonTooLarge},
		{"{\"message\":\"\xff\"}", ReasonMalformed},
	}
	for _, tt := range tests {
		a, err := DecodeAlert([]byte(tt.in), dev, now)
		if got := Reason(err); got != tt.reason || a != nil {
			t.Errorf("DecodeAlert(%q) = %+v, %v (reason %q); want reason %q", clip([]byte(tt.in)), a, err, got, tt.reason)
		}
	}
}

func TestEncodeBatchRoundTrip(t *testing.T) {
	t0 := ns("2026-11-27T10:00:00.123456789Z")
	b := &Batch{
		Messages: []*Message{
			rd("child-1", 17, num("temperature", t0, 21.5), boolean("ok", t0, true), str("s", t0, "a\"b\n")),
			rd("child-2", -1, num("x", t0+1, -1e-9)),
		},
		Alerts: []Alert{
			{Device: "child-1", TS: t0, Metric: "temperature", Value: 93.2, Rule: "threshold_above", Severity: "critical", Message: "hot", State: "raised"},
			{Device: "child-2", TS: t0, Rule: "rate", Severity: "info", State: "cleared"},
		},
	}
	for _, compress := range []bool{false, true} {
		enc := EncodeBatch(b, compress)
		if IsGzip(enc) != compress {
			t.Errorf("EncodeBatch(compress=%v) gzip = %v", compress, IsGzip(enc))
		}
		got, err := DecodeBatch(enc, now, BatchLimits{})
		if err != nil {
			t.Fatalf("DecodeBatch(EncodeBatch(compress=%v)) = %v", compress, err)
		}
		checkBatch(t, string(enc), got, b.Messages, b.Alerts)
	}
	// A single alert encodes to what DecodeAlert reads.
	a := b.Alerts[0]
	a.Device = dev
	got, err := DecodeAlert(AppendAlert(nil, &a), dev, now)
	if err != nil || *got != a {
		t.Errorf("DecodeAlert(AppendAlert(%+v)) = %+v, %v", a, got, err)
	}
}

// TestDecodeBatchAllocs keeps the batch decoder's allocations independent
// of the number of readings.
func TestDecodeBatchAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops objects at random under the race detector")
	}
	in := EncodeBatch(benchBatch(100), false)
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := DecodeBatch(in, now, BatchLimits{}); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 8 {
		t.Errorf("DecodeBatch of 100 readings: %v allocations; want at most 8", allocs)
	}
}

func benchBatch(n int) *Batch {
	b := &Batch{}
	t0 := now.UnixNano()
	for i := range n {
		ts := t0 + int64(i)*1e9
		b.Messages = append(b.Messages, rd(fmt.Sprintf("child-%d", i%20), int64(i),
			num("temperature", ts, 21.5+float64(i%7)/100), num("humidity", ts, 48.25), num("vibration", ts, 0.0123)))
	}
	return b
}

func BenchmarkDecodeBatch(b *testing.B) {
	for _, compress := range []bool{false, true} {
		in := EncodeBatch(benchBatch(100), compress)
		b.Run(fmt.Sprintf("100x3/gzip=%v", compress), func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeBatch(in, now, BatchLimits{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)*300/b.Elapsed().Seconds(), "points/s")
		})
	}
}

// batchFuzzLimits are the defaults and a tight set.
var batchFuzzLimits = []BatchLimits{
	{},
	{MaxBytes: 1024, MaxReadings: 3, MaxAlerts: 2, MaxPoints: 4, Reading: Limits{MaxBytes: 256, MaxPoints: 3, MaxMetricLen: 12, MaxStringLen: 8, MaxDepth: 2}},
}

func FuzzDecodeBatch(f *testing.F) {
	for _, s := range []string{
		`{"readings":[{"device":"child-1","seq":17,"ts":"2026-11-27T10:00:00.5Z","data":{"temperature":21.5}}]}`,
		`{"readings":[{"device":"a","ts":1795773600123,"data":{"x":1,"env":{"rh":40}}},{"device_id":"b","data":{"s":"on","b":false}}],"alerts":[{"device":"a","metric":"x","value":93.2,"rule":"threshold_above","severity":"critical","message":"hot","state":"raised"}]}`,
		`{"alerts":[{"device":"a","rule":"zscore","value":null,"state":"cleared"}],"v":[1,{"k":null}]}`,
		`{"readings":[]}`,
		`{"readings":[{"device":"a","device_id":"b","data":{"x":1}}]}`,
	} {
		f.Add([]byte(s))
		f.Add(gz(f, []byte(s)))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, lim := range batchFuzzLimits {
			b, err := DecodeBatch(in, now, lim)
			if err != nil {
				if Reason(err) == "" || b != nil {
					t.Fatalf("DecodeBatch(%q) = %v, %v; want nil and a refusal", in, b, err)
				}
				continue
			}
			checkDecodedBatch(t, in, b, lim.WithDefaults())
			for _, compress := range []bool{false, true} {
				enc := EncodeBatch(b, compress)
				back, err := DecodeBatch(enc, now, BatchLimits{MaxBytes: 1 << 30, Reading: Limits{MaxBytes: 1 << 30, MaxMetricLen: lim.Reading.MaxMetricLen, MaxStringLen: lim.Reading.MaxStringLen}})
				if err != nil {
					t.Fatalf("DecodeBatch(EncodeBatch(DecodeBatch(%q))) = %s: %v", in, enc, err)
				}
				if len(back.Messages) != len(b.Messages) || len(back.Alerts) != len(b.Alerts) {
					t.Fatalf("round trip of %q: %d readings, %d alerts; want %d, %d", in, len(back.Messages), len(back.Alerts), len(b.Messages), len(b.Alerts))
				}
				for i := range b.Messages {
					if !equalMessages(back.Messages[i], b.Messages[i]) {
						t.Fatalf("round trip of %q: reading %d = %v; want %v", in, i, fmtMessage(back.Messages[i]), fmtMessage(b.Messages[i]))
					}
				}
				for i := range b.Alerts {
					if back.Alerts[i] != b.Alerts[i] {
						t.Fatalf("round trip of %q: alert %d = %+v; want %+v", in, i, back.Alerts[i], b.Alerts[i])
					}
				}
			}
		}
		// A single alert decodes under the same rules.
		if a, err := DecodeAlert(in, dev, now); err == nil {
			checkAlert(t, in, a)
			if a.Device != dev {
				t.Fatalf("DecodeAlert(%q).Device = %q", in, a.Device)
			}
		} else if Reason(err) == "" || a != nil {
			t.Fatalf("DecodeAlert(%q) = %v, %v; want nil and a refusal", in, a, err)
		}
	})
}

// checkDecodedBatch checks every limit and rule on an accepted batch.
func checkDecodedBatch(t *testing.T, in []byte, b *Batch, lim BatchLimits) {
	t.Helper()
	if len(b.Messages)+len(b.Alerts) == 0 {
		t.Fatalf("DecodeBatch(%q) accepted an empty batch", in)
	}
	if len(b.Messages) > lim.MaxReadings || len(b.Alerts) > lim.MaxAlerts {
		t.Fatalf("DecodeBatch(%q): %d readings, %d alerts over the limits", in, len(b.Messages), len(b.Alerts))
	}
	plain := in
	if IsGzip(in) {
		zr, err := gzip.NewReader(bytes.NewReader(in))
		if err != nil {
			t.Fatalf("DecodeBatch accepted %q; gzip: %v", in, err)
		}
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(zr); err != nil {
			t.Fatalf("DecodeBatch accepted %q; gzip: %v", in, err)
		}
		plain = buf.Bytes()
	}
	if len(plain) > lim.MaxBytes || !json.Valid(plain) {
		t.Fatalf("DecodeBatch accepted %q (%d bytes of JSON, valid %v)", in, len(plain), json.Valid(plain))
	}
	total := 0
	for _, m := range b.Messages {
		if !topic.ValidDeviceID(m.Device) {
			t.Fatalf("DecodeBatch(%q) has a reading of device %q", in, m.Device)
		}
		total += len(m.Points)
		checkMessage(t, in, &Message{Device: dev, Seq: m.Seq, HasSeq: m.HasSeq, Points: m.Points}, Limits{MaxBytes: 1 << 30, MaxPoints: lim.Reading.MaxPoints,
			MaxMetricLen: lim.Reading.MaxMetricLen, MaxStringLen: lim.Reading.MaxStringLen, MaxDepth: lim.Reading.MaxDepth})
	}
	if total > lim.MaxPoints {
		t.Fatalf("DecodeBatch(%q) has %d points; at most %d", in, total, lim.MaxPoints)
	}
	for i := range b.Alerts {
		checkAlert(t, in, &b.Alerts[i])
	}
}

func checkAlert(t *testing.T, in []byte, a *Alert) {
	t.Helper()
	switch {
	case !topic.ValidDeviceID(a.Device),
		a.TS < 1,
		a.Metric == "" && a.Rule == "" && a.Message == "",
		len(a.Metric) > DefaultMaxMetricLen, len(a.Rule) > MaxRuleLen, len(a.Message) > MaxAlertMessageLen,
		!utf8.ValidString(a.Metric) || !utf8.ValidString(a.Rule) || !utf8.ValidString(a.Message),
		math.IsNaN(a.Value) || math.IsInf(a.Value, 0),
		a.Severity != SeverityInfo && a.Severity != SeverityWarning && a.Severity != SeverityCritical,
		a.State != StateRaised && a.State != StateCleared:
		t.Fatalf("alert decoded from %q breaks a rule: %+v", in, a)
	}
}
