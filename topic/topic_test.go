package topic

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	long := strings.Repeat("a", MaxDeviceIDLength)
	tests := []struct {
		in   string
		want Topic
		err  error
	}{
		{"devices/d1/telemetry", Topic{Device: "d1", Kind: KindTelemetry}, nil},
		{"devices/d1/commands/reboot", Topic{Device: "d1", Kind: KindCommand, Rest: "reboot"}, nil},
		{"devices/d1/responses/c-42", Topic{Device: "d1", Kind: KindResponse, Rest: "c-42"}, nil},
		{"devices/d1/twin/reported", Topic{Device: "d1", Kind: KindTwinReported}, nil},
		{"devices/d1/twin/desired", Topic{Device: "d1", Kind: KindTwinDesired}, nil},
		{"devices/d1/status", Topic{Device: "d1", Kind: KindStatus}, nil},
		{"devices/d1/alerts", Topic{Device: "d1", Kind: KindAlerts}, nil},
		{"devices/d1/ota", Topic{Device: "d1", Kind: KindOTA}, nil},
		{"devices/d1/ota/offer", Topic{Device: "d1", Kind: KindOTA, Rest: "offer"}, nil},
		{"devices/d1/ota/progress/fw-2", Topic{Device: "d1", Kind: KindOTA, Rest: "progress/fw-2"}, nil},
		{"devices/A-z_0.9:x/telemetry", Topic{Device: "A-z_0.9:x", Kind: KindTelemetry}, nil},
		{"devices/" + long + "/telemetry", Topic{Device: long, Kind: KindTelemetry}, nil},
		{"devices/d1/commands/set temp", Topic{Device: "d1", Kind: KindCommand, Rest: "set temp"}, nil},
		{"devices/d1/commands/température", Topic{Device: "d1", Kind: KindCommand, Rest: "température"}, nil},
		{"devices/d1/commands/" + strings.Repeat("c", 128), Topic{Device: "d1", Kind: KindCommand, Rest: strings.Repeat("c", 128)}, nil},

		// Not device topics.
		{"", Topic{}, ErrNotDevice},
		{"devices", Topic{}, ErrNotDevice},
		{"Devices/d1/telemetry", Topic{}, ErrNotDevice},
		{"/devices/d1/telemetry", Topic{}, ErrNotDevice},
		{"$SYS/broker/uptime", Topic{}, ErrNotDevice},

		// Bad ids.
		{"devices//telemetry", Topic{}, ErrBadDeviceID},
		{"devices/", Topic{}, ErrBadDeviceID},
		{"devices/" + long + "a/telemetry", Topic{}, ErrBadDeviceID},
		{"devices/d 1/telemetry", Topic{}, ErrBadDeviceID},
		{"devices/dé/telemetry", Topic{}, ErrBadDeviceID},
		{"devices/d\x00/telemetry", Topic{}, ErrBadDeviceID},
		{"devices/d$1/telemetry", Topic{}, ErrBadDeviceID},

		// Wildcards.
		{"devices/+/telemetry", Topic{}, ErrWildcard},
		{"devices/d1/#", Topic{}, ErrWildcard},
		{"devices/d1/commands/a+b", Topic{}, ErrWildcard},
		{"#", Topic{}, ErrWildcard},

		// Size bounds.
		{"devices/d1/ota/" + strings.Repeat("x", MaxLength), Topic{}, ErrTooLong},
		{"devices/d1/ota" + strings.Repeat("/x", MaxLevels), Topic{}, ErrTooManyLevels},
		{strings.Repeat("/", 100000), Topic{}, ErrTooLong},

		// Unknown kinds and shapes.
		{"devices/d1", Topic{}, ErrUnknownTopic},
		{"devices/d1/", Topic{}, ErrUnknownTopic},
		{"devices/d1/metrics", Topic{}, ErrUnknownTopic},
		{"devices/d1/Telemetry", Topic{}, ErrUnknownTopic},
		{"devices/d1/telemetry/", Topic{}, ErrUnknownTopic},
		{"devices/d1/telemetry/x", Topic{}, ErrUnknownTopic},
		{"devices/d1/status/x", Topic{}, ErrUnknownTopic},
		{"devices/d1/alerts/x", Topic{}, ErrUnknownTopic},
		{"devices/d1/twin", Topic{}, ErrUnknownTopic},
		{"devices/d1/twin/", Topic{}, ErrUnknownTopic},
		{"devices/d1/twin/other", Topic{}, ErrUnknownTopic},
		{"devices/d1/twin/reported/x", Topic{}, ErrUnknownTopic},
		{"devices/d1/commands", Topic{}, ErrUnknownTopic},
		{"devices/d1/commands/", Topic{}, ErrUnknownTopic},
		{"devices/d1/commands/a/b", Topic{}, ErrUnknownTopic},
		{"devices/d1/commands/a\tb", Topic{}, ErrUnknownTopic},
		{"devices/d1/commands/" + strings.Repeat("c", 129), Topic{}, ErrUnknownTopic},
		{"devices/d1/responses", Topic{}, ErrUnknownTopic},
		{"devices/d1/responses/", Topic{}, ErrUnknownTopic},
		{"devices/d1/responses/x/y", Topic{}, ErrUnknownTopic},
		{"devices/d1/ota/", Topic{}, ErrUnknownTopic},
		{"devices/d1/ota/a//b", Topic{}, ErrUnknownTopic},
		{"devices/d1/ota/a/", Topic{}, ErrUnknownTopic},
		{"devices/d1/ota//a", Topic{}, ErrUnknownTopic},
		{"devices/d1/ota/a\x00b", Topic{}, ErrUnknownTopic},
		{"devices/d1/ota/a\x7fb", Topic{}, ErrUnknownTopic},
		{"devices/d1/commands/\xff", Topic{}, ErrUnknownTopic},
		{"devices/d1/responses/a\xc3", Topic{}, ErrUnknownTopic},
		{"devices/d1/ota/\xe6\xb8", Topic{}, ErrUnknownTopic},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("Parse(%.60q) = %#v, %v; want %#v, %v", tt.in, got, err, tt.want, tt.err)
		}
		if err == nil {
			if s := got.String(); s != tt.in {
				t.Errorf("Parse(%.60q).String() = %q; want the input", tt.in, s)
			}
		}
	}
}

func TestTopicString(t *testing.T) {
	tests := []struct {
		in   Topic
		want string
	}{
		{Topic{Device: "d", Kind: KindTelemetry}, "devices/d/telemetry"},
		{Topic{Device: "d", Kind: KindCommand, Rest: "reboot"}, "devices/d/commands/reboot"},
		{Topic{Device: "d", Kind: KindResponse, Rest: "c1"}, "devices/d/responses/c1"},
		{Topic{Device: "d", Kind: KindTwinReported}, "devices/d/twin/reported"},
		{Topic{Device: "d", Kind: KindTwinDesired}, "devices/d/twin/desired"},
		{Topic{Device: "d", Kind: KindStatus}, "devices/d/status"},
		{Topic{Device: "d", Kind: KindAlerts}, "devices/d/alerts"},
		{Topic{Device: "d", Kind: KindOTA}, "devices/d/ota"},
		{Topic{Device: "d", Kind: KindOTA, Rest: "offer"}, "devices/d/ota/offer"},
		{Topic{Device: "d", Kind: KindUnknown}, ""},
		{Topic{Device: "d", Kind: Kind(99)}, ""},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("%+v.String() = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestKindString(t *testing.T) {
	tests := []struct {
		in   Kind
		want string
	}{
		{KindUnknown, "unknown"},
		{KindTelemetry, "telemetry"},
		{KindCommand, "command"},
		{KindResponse, "response"},
		{KindTwinReported, "twin_reported"},
		{KindTwinDesired, "twin_desired"},
		{KindStatus, "status"},
		{KindAlerts, "alerts"},
		{KindOTA, "ota"},
		{Kind(-1), "unknown"},
		{Kind(99), "unknown"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("Kind(%d).String() = %q; want %q", int(tt.in), got, tt.want)
		}
	}
}

func TestValidateFilter(t *testing.T) {
	tests := []struct {
		in  string
		err error
	}{
		{"devices/d1/telemetry", nil},
		{"devices/+/telemetry", nil},
		{"devices/d1/#", nil},
		{"devices/#", nil},
		{"#", nil},
		{"+", nil},
		{"+/+/+", nil},
		{"/", nil},
		{"devices//x", nil},
		{"$SYS/#", nil},
		{"sport/tennis/+/player1/#", nil},
		{strings.Repeat("a/", MaxLevels-1) + "#", nil},

		{"", ErrBadFilter},
		{"devices/d1#", ErrBadFilter},
		{"devices/#/telemetry", ErrBadFilter},
		{"devices/##", ErrBadFilter},
		{"#/", ErrBadFilter},
		{"devices/d+/telemetry", ErrBadFilter},
		{"devices/++/telemetry", ErrBadFilter},
		{"+x", ErrBadFilter},
		{strings.Repeat("a", MaxLength+1), ErrTooLong},
		{strings.Repeat("+/", MaxLevels) + "#", ErrTooManyLevels},
		{strings.Repeat("/", 10000), ErrTooLong},
		{strings.Repeat("/", MaxLevels), ErrTooManyLevels},
	}
	for _, tt := range tests {
		if err := ValidateFilter(tt.in); !errors.Is(err, tt.err) {
			t.Errorf("ValidateFilter(%.60q) = %v; want %v", tt.in, err, tt.err)
		}
	}
}

func TestFilterDevice(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"devices/d1/telemetry", "d1"},
		{"devices/d1/#", "d1"},
		{"devices/d1/+", "d1"},
		{"devices/d1", "d1"},
		{"devices/d1/commands/+", "d1"},
		{"devices/+/telemetry", ""},
		{"devices/#", ""},
		{"devices/", ""},
		{"devices", ""},
		{"#", ""},
		{"+/d1/telemetry", ""},
		{"$share/g/devices/d1/telemetry", ""},
		{"other/d1/telemetry", ""},
		{"devices/d 1/telemetry", ""},
		{"devices/" + strings.Repeat("a", MaxDeviceIDLength+1) + "/x", ""},
	}
	for _, tt := range tests {
		if got := FilterDevice(tt.in); got != tt.want {
			t.Errorf("FilterDevice(%.60q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestValidDeviceID(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"d", true},
		{"sensor-0042", true},
		{"urn:dev:mac:0024befffe804ff1", true},
		{"A.b_C-9:z", true},
		{strings.Repeat("x", MaxDeviceIDLength), true},
		{"", false},
		{strings.Repeat("x", MaxDeviceIDLength+1), false},
		{"a/b", false},
		{"a+b", false},
		{"a#b", false},
		{"a b", false},
		{"a\x00", false},
		{"é", false},
		{"a@b", false},
		{"$SYS", false},
	}
	for _, tt := range tests {
		if got := ValidDeviceID(tt.in); got != tt.want {
			t.Errorf("ValidDeviceID(%.60q) = %v; want %v", tt.in, got, tt.want)
		}
	}
}

func TestBuilders(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{Telemetry("d"), "devices/d/telemetry"},
		{Command("d", "reboot"), "devices/d/commands/reboot"},
		{Response("d", "c1"), "devices/d/responses/c1"},
		{TwinReported("d"), "devices/d/twin/reported"},
		{TwinDesired("d"), "devices/d/twin/desired"},
		{Status("d"), "devices/d/status"},
		{Alerts("d"), "devices/d/alerts"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("builder = %q; want %q", tt.got, tt.want)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("devices/sensor-0042/telemetry"); err != nil {
			b.Fatal(err)
		}
	}
}
