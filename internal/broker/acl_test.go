package broker

import (
	"strings"
	"testing"
	"time"
)

func TestPublishACL(t *testing.T) {
	tests := []struct {
		topic, want string
	}{
		{"devices/d1/telemetry", ""},
		{"devices/d1/responses/c-42", ""},
		{"devices/d1/twin/reported", ""},
		{"devices/d1/status", ""},
		{"devices/d1/alerts", ""},
		{"devices/d1/ota", ""},
		{"devices/d1/ota/progress", ""},
		{"devices/d2/telemetry", DenyForeignDevice},
		{"devices/d2/whatever", DenyForeignDevice},
		{"devices/d1/commands/reboot", DenyWrongDirection},
		{"devices/d1/twin/desired", DenyWrongDirection},
		{"devices/d1/nonsense", DenyUnknownTopic},
		{"devices/d1/responses", DenyUnknownTopic},
		{"devices/d1", DenyUnknownTopic},
		{"devices/+/telemetry", DenyInvalid},
		{"devices/bad id/telemetry", DenyOutsideDevice},
		{"$SYS/broker/uptime", DenyOutsideDevice},
		{"other", DenyOutsideDevice},
		{"", DenyOutsideDevice},
		{"devices/d1/ota/" + strings.Repeat("x/", 20), DenyTooManyLevels},
		{"devices/d1/ota/" + strings.Repeat("x", 2000), DenyTooLong},
	}
	for _, tt := range tests {
		if got := publishACL("d1", tt.topic); got != tt.want {
			t.Errorf("publishACL(d1, %q) = %q; want %q", tt.topic, got, tt.want)
		}
	}
}

func TestReadACL(t *testing.T) {
	tests := []struct {
		filter, want string
	}{
		// filters
		{"devices/d1/#", ""},
		{"devices/d1/commands/+", ""},
		{"devices/d1/commands/#", ""},
		{"devices/d1/ota/#", ""},
		{"devices/d1/ota/+/offer", ""},
		{"devices/d1/+", DenyNotAllowed},
		{"devices/d1/twin/+", DenyNotAllowed},
		{"devices/d1/+/desired", DenyNotAllowed},
		{"devices/d1/commands/x/#", DenyNotAllowed},
		{"devices/d2/#", DenyForeignDevice},
		{"devices/+/commands/#", DenyOutsideDevice},
		{"devices/#", DenyOutsideDevice},
		{"#", DenyOutsideDevice},
		{"+/d1/commands/+", DenyOutsideDevice},
		{"$share/g/devices/d1/commands/+", DenyOutsideDevice},
		{"devices/d1/commands/a+", DenyInvalid},
		{"devices/d1/#/x", DenyInvalid},
		{strings.Repeat("/", 60000), DenyTooLong},
		{"devices/d1/ota/" + strings.Repeat("+/", 20) + "#", DenyTooManyLevels},
		// literal filters and delivered topic names
		{"devices/d1/commands/reboot", ""},
		{"devices/d1/twin/desired", ""},
		{"devices/d1/ota", ""},
		{"devices/d1/ota/offer", ""},
		{"devices/d1/telemetry", DenyWrongDirection},
		{"devices/d1/status", DenyWrongDirection},
		{"devices/d1/twin/reported", DenyWrongDirection},
		{"devices/d1/responses/c1", DenyWrongDirection},
		{"devices/d2/commands/reboot", DenyForeignDevice},
		{"devices/d1/foo", DenyUnknownTopic},
		{"$SYS/broker/uptime", DenyOutsideDevice},
	}
	for _, tt := range tests {
		if got := readACL("d1", tt.filter); got != tt.want {
			t.Errorf("readACL(d1, %.60q) = %q; want %q", tt.filter, got, tt.want)
		}
	}
}

func TestIsLoopbackAddr(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:1883", true},
		{"127.9.9.9:1883", true},
		{"[::1]:1883", true},
		{"localhost:1883", true},
		{"[::ffff:127.0.0.1]:1883", true},
		{":1883", false},
		{"0.0.0.0:1883", false},
		{"[::]:1883", false},
		{"10.0.0.1:1883", false},
		{"example.com:1883", false},
		{"127.0.0.1", false},
	}
	for _, tt := range tests {
		if got := isLoopbackAddr(tt.addr); got != tt.want {
			t.Errorf("isLoopbackAddr(%q) = %v; want %v", tt.addr, got, tt.want)
		}
	}
}

func TestRateLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	r := newRateLimiter(time.Minute, func() time.Time { return now })
	steps := []struct {
		advance time.Duration
		key     string
		want    bool
	}{
		{0, "acl|publish|foreign_device|d1", true},
		{time.Second, "acl|publish|foreign_device|d1", false},
		{0, "acl|publish|foreign_device|d2", true},
		{0, "acl|subscribe|foreign_device|d1", true},
		{58 * time.Second, "acl|publish|foreign_device|d1", false},
		{time.Second, "acl|publish|foreign_device|d1", true},
		{time.Second, "acl|publish|foreign_device|d1", false},
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		if got := r.allow(s.key); got != s.want {
			t.Errorf("step %d: allow(%q) = %v; want %v", i, s.key, got, s.want)
		}
	}
	now = now.Add(time.Hour)
	r.allow("x")
	if n := len(r.last); n != 1 {
		t.Errorf("%d keys kept after an hour; want 1 (old ones swept)", n)
	}
}
