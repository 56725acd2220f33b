package payload

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

var benchNow = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func BenchmarkDecodeTelemetry(b *testing.B) {
	cases := []struct{ name, in string }{
		{"object", `{"seq":123,"ts":"2026-11-27T10:00:00.123Z","data":{"temperature":21.53,"humidity":48.2,"vibration":0.0123}}`},
		{"object_device_id", `{"device_id":"sensor-0042","seq":123,"ts":1795773600123,"data":{"temperature":21.53,"humidity":48.2,"vibration":0.0123}}`},
		{"object_nested", `{"seq":123,"data":{"env":{"temperature":21.53,"humidity":48.2},"ok":true,"state":"run"}}`},
		{"senml", `[{"bn":"sensor-0042:","bt":1795773600.123,"n":"temperature","v":21.53},{"n":"humidity","v":48.2},{"n":"vibration","v":0.0123}]`},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			in := []byte(c.in)
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeTelemetry(in, "sensor-0042", benchNow, Limits{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncodeTelemetry(b *testing.B) {
	m, err := DecodeTelemetry([]byte(`{"seq":123,"ts":"2026-11-27T10:00:00.123Z","data":{"temperature":21.53,"humidity":48.2,"vibration":0.0123}}`), "sensor-0042", benchNow, Limits{})
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendTelemetry(buf[:0], m, true)
	}
}

// BenchmarkDecodeTelemetryLarge is a batched uplink: 1,000 points in one
// SenML pack, the default MaxPoints.
func BenchmarkDecodeTelemetryLarge(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`[{"bn":"sensor-0042:","bt":1795773600`)
	for i := range 1000 {
		if i > 0 {
			sb.WriteString(`},{`)
		} else {
			sb.WriteString(`,`)
		}
		fmt.Fprintf(&sb, `"n":"m%d","t":%d,"v":%d.25`, i%10, i/10, i)
	}
	sb.WriteString(`}]`)
	in := []byte(sb.String())
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeTelemetry(in, "sensor-0042", benchNow, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}
