package acl

import (
	"strings"
	"testing"
)

// TestPublishAndRead pins the table of DESIGN §3 for a device "d": what it
// may publish and what it may subscribe to or receive.
func TestPublishAndRead(t *testing.T) {
	pub := []struct{ name, want string }{
		{"devices/d/telemetry", ""},
		{"devices/d/responses/c1", ""},
		{"devices/d/twin/reported", ""},
		{"devices/d/status", ""},
		{"devices/d/alerts", ""},
		{"devices/d/ota/progress", ""},
		{"devices/e/telemetry", DenyForeignDevice},
		{"devices/d/commands/reboot", DenyWrongDirection},
		{"devices/d/twin/desired", DenyWrongDirection},
		{"devices/d/other", DenyUnknownTopic},
		{"other", DenyOutsideDevice},
		{"devices/" + strings.Repeat("x", 2000) + "/telemetry", DenyTooLong},
	}
	for _, c := range pub {
		if got := Publish("d", c.name); got != c.want {
			t.Errorf("Publish(d, %.40q) = %q; want %q", c.name, got, c.want)
		}
	}
	read := []struct{ f, want string }{
		{"devices/d/commands/reboot", ""},
		{"devices/d/commands/+", ""},
		{"devices/d/commands/#", ""},
		{"devices/d/twin/desired", ""},
		{"devices/d/#", ""},
		{"devices/d/ota/#", ""},
		{"devices/d/telemetry", DenyWrongDirection},
		{"devices/e/commands/+", DenyForeignDevice},
		{"devices/e/commands/reboot", DenyForeignDevice},
		{"devices/+/commands/+", DenyOutsideDevice},
		{"#", DenyOutsideDevice},
		{"devices/d/+", DenyNotAllowed},
		{"devices/d/" + strings.Repeat("a/", 40) + "#", DenyTooManyLevels},
	}
	for _, c := range read {
		if got := Read("d", c.f); got != c.want {
			t.Errorf("Read(d, %.40q) = %q; want %q", c.f, got, c.want)
		}
	}
}
