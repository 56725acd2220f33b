package topic

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"devices/sensor-0042/telemetry",
		"devices/d1/commands/reboot",
		"devices/d1/responses/c-42",
		"devices/d1/twin/reported",
		"devices/d1/twin/desired",
		"devices/d1/status",
		"devices/d1/alerts",
		"devices/d1/ota/progress/fw-2",
		"devices/+/telemetry",
		"devices/d1/#",
		"$SYS/broker/uptime",
		"devices//telemetry",
		"devices/d1/ota//x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tp, err := Parse(s)
		if err == nil {
			if got := tp.String(); got != s {
				t.Fatalf("Parse(%q).String() = %q; want the input", s, got)
			}
			if !ValidDeviceID(tp.Device) || tp.Kind == KindUnknown {
				t.Fatalf("Parse(%q) = %#v", s, tp)
			}
			if err := ValidateFilter(s); err != nil {
				t.Fatalf("ValidateFilter(%q) = %v for a valid topic name", s, err)
			}
			if got := FilterDevice(s); got != tp.Device {
				t.Fatalf("FilterDevice(%q) = %q; want %q", s, got, tp.Device)
			}
			if !utf8.ValidString(s) {
				t.Fatalf("Parse(%q) accepted invalid UTF-8", s)
			}
			for _, level := range strings.Split(s, "/") {
				if level == "" || strings.ContainsFunc(level, isC0OrDEL) {
					t.Fatalf("Parse(%q) accepted level %q", s, level)
				}
			}
		} else if tp != (Topic{}) {
			t.Fatalf("Parse(%q) = %#v, %v; want a zero Topic with the error", s, tp, err)
		}
		if err := ValidateFilter(s); err == nil {
			if len(s) > MaxLength || strings.Count(s, "/")+1 > MaxLevels {
				t.Fatalf("ValidateFilter(%q) accepted an oversized filter", s)
			}
		}
		if id := FilterDevice(s); id != "" && !ValidDeviceID(id) {
			t.Fatalf("FilterDevice(%q) = %q, not a valid id", s, id)
		}
	})
}

func isC0OrDEL(r rune) bool { return r < 0x20 || r == 0x7f }
