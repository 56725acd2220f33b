package payload

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func TestEncodeTelemetry(t *testing.T) {
	t0 := ns("2026-11-27T10:00:00.123Z")
	tests := []struct {
		name   string
		in     *Message
		withTS bool
		want   string
	}{
		{"typical", msg(123, num("temperature", t0, 21.53), num("humidity", t0, 48.2)), true,
			`{"device_id":"sensor-1","ts":"2026-11-27T10:00:00.123Z","seq":123,"data":{"temperature":21.53,"humidity":48.2}}`},
		{"without ts", msg(-1, num("a", t0, 1)), false, `{"device_id":"sensor-1","data":{"a":1}}`},
		{"without device", &Message{Points: []Point{num("a", t0, 1)}}, false, `{"data":{"a":1}}`},
		{"seq only", &Message{Seq: 0, HasSeq: true, Points: []Point{num("a", t0, 1)}}, false, `{"seq":0,"data":{"a":1}}`},
		{"kinds", msg(-1, boolean("on", t0, true), boolean("off", t0, false), str("s", t0, "x")), false,
			`{"device_id":"sensor-1","data":{"on":true,"off":false,"s":"x"}}`},
		{"flat names", msg(-1, num("a.b.c", t0, 1)), false, `{"device_id":"sensor-1","data":{"a.b.c":1}}`},
		{"numbers", msg(-1, num("a", t0, 1e21), num("b", t0, 1e-7), num("c", t0, math.Copysign(0, -1)), num("d", t0, 123456789), num("e", t0, 1e20)), false,
			`{"device_id":"sensor-1","data":{"a":1e+21,"b":1e-7,"c":-0,"d":123456789,"e":100000000000000000000}}`},
		{"non-finite", msg(-1, num("a", t0, math.NaN()), num("b", t0, math.Inf(-1))), false, `{"device_id":"sensor-1","data":{"a":null,"b":null}}`},
		{"escapes", msg(-1, str("q\"\\", t0, "\n\t\r\x01\u2028é😀\xff")), false,
			`{"device_id":"sensor-1","data":{"q\"\\":"\n\t\r\u0001\u2028é😀\ufffd"}}`},
		{"whole second", msg(-1, num("a", ns("2026-11-27T10:00:00Z"), 1)), true, `{"device_id":"sensor-1","ts":"2026-11-27T10:00:00Z","data":{"a":1}}`},
		{"no points", &Message{}, true, `{"data":{}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := EncodeTelemetry(tt.in, tt.withTS)
			if string(got) != tt.want {
				t.Errorf("EncodeTelemetry(%v, %v) = %s; want %s", fmtMessage(tt.in), tt.withTS, got, tt.want)
			}
			if !json.Valid(got) {
				t.Errorf("EncodeTelemetry(%v, %v) = %s, invalid JSON", fmtMessage(tt.in), tt.withTS, got)
			}
		})
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	t0 := ns("2026-11-27T10:00:00.123456789Z")
	tests := []*Message{
		msg(7, num("temperature", t0, 21.53), num("a.b", t0, -1e-300), num("z", t0, math.MaxFloat64)),
		msg(-1, boolean("on", t0, true), str("s", t0, strings.Repeat("é", 10)+"\u2028\x00")),
		msg(math.MaxInt64, num("x", 1, 0)),
		msg(0, num("温度", math.MaxInt64, math.SmallestNonzeroFloat64)),
	}
	for _, m := range tests {
		enc := EncodeTelemetry(m, true)
		got, err := DecodeTelemetry(enc, dev, now, Limits{})
		if err != nil {
			t.Errorf("DecodeTelemetry(EncodeTelemetry(%v) = %s) error %v", fmtMessage(m), enc, err)
			continue
		}
		if !equalMessages(got, m) {
			t.Errorf("DecodeTelemetry(EncodeTelemetry(%v) = %s) = %v", fmtMessage(m), enc, fmtMessage(got))
		}
	}
}

func TestAppendTelemetryAppends(t *testing.T) {
	m := msg(-1, num("a", 1, 1))
	got := AppendTelemetry([]byte("prefix:"), m, false)
	if want := `prefix:{"device_id":"sensor-1","data":{"a":1}}`; string(got) != want {
		t.Errorf("AppendTelemetry(prefix) = %s; want %s", got, want)
	}
}
