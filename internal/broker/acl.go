package broker

import (
	"errors"
	"strings"

	"github.com/fieldhub/fieldhub/topic"
)

// ACL denial reasons (fieldhub_mqtt_acl_denials_total{action,reason}).
const (
	DenyForeignDevice  = "foreign_device"  // another device's topic
	DenyOutsideDevice  = "outside_device"  // not confined to one literal device id: "#", "devices/+/…", "$SYS/…", "other"
	DenyWrongDirection = "wrong_direction" // own topic, other direction (publishing a command, subscribing to telemetry)
	DenyUnknownTopic   = "unknown_topic"   // own prefix, not a topic of DESIGN §3
	DenyNotAllowed     = "not_allowed"     // own prefix, a wildcard filter outside the subscribe table
	DenyTooLong        = "too_long"        // longer than topic.MaxLength
	DenyTooManyLevels  = "too_many_levels" // more levels than topic.MaxLevels
	DenyInvalid        = "invalid"         // malformed name or filter
)

// Subscribe ACL for a device D (DESIGN §3: hub → device topics only). A
// filter must have D's id as a literal second level; after "devices/D/" it
// may be:
//
//	#                       everything of D (only commands, twin/desired and ota are delivered)
//	commands/+, commands/#  all commands
//	commands/{name}         one command
//	twin/desired            desired state
//	ota, ota/#, ota/…       OTA offers (any valid filter under ota/)
//
// Everything else is denied: other devices, "devices/+/…", "#", "$share/…",
// and D's device → hub topics (telemetry, status, alerts, twin/reported,
// responses). Deliveries are checked per topic name: a device receives only
// its own commands, twin/desired and ota messages, whatever it subscribed to.

// publishACL decides whether device may publish to name: only its own
// device → hub topics (telemetry, responses/{cid}, twin/reported, status,
// alerts, ota/…). It returns "" when allowed, else the denial reason.
func publishACL(device, name string) string {
	t, err := topic.Parse(name)
	if err != nil {
		return nameDenial(device, name, err)
	}
	if t.Device != device {
		return DenyForeignDevice
	}
	switch t.Kind {
	case topic.KindTelemetry, topic.KindResponse, topic.KindTwinReported,
		topic.KindStatus, topic.KindAlerts, topic.KindOTA:
		return ""
	}
	return DenyWrongDirection
}

// readACL decides whether device may subscribe to a filter or receive a
// message on a topic name (mochi asks the same hook for both). It returns ""
// when allowed, else the denial reason.
func readACL(device, f string) string {
	if !strings.ContainsAny(f, "+#") {
		// A topic name, or a literal filter: the hub → device kinds.
		t, err := topic.Parse(f)
		if err != nil {
			return nameDenial(device, f, err)
		}
		if t.Device != device {
			return DenyForeignDevice
		}
		switch t.Kind {
		case topic.KindCommand, topic.KindTwinDesired, topic.KindOTA:
			return ""
		}
		return DenyWrongDirection
	}
	if err := topic.ValidateFilter(f); err != nil {
		return boundsDenial(err)
	}
	id := topic.FilterDevice(f)
	if id == "" {
		return DenyOutsideDevice
	}
	if id != device {
		return DenyForeignDevice
	}
	rest, _ := strings.CutPrefix(f, topic.Prefix+"/"+id+"/")
	switch {
	case rest == "#", rest == "commands/+", rest == "commands/#",
		rest == "ota/#", strings.HasPrefix(rest, "ota/"):
		return ""
	}
	// devices/D/+, twin/+, +/desired, commands/x/#…: they match device → hub
	// topics or nothing useful; the table stays short and explicit.
	return DenyNotAllowed
}

// nameDenial classifies a topic.Parse error for device.
func nameDenial(device, name string, err error) string {
	switch {
	case errors.Is(err, topic.ErrTooLong), errors.Is(err, topic.ErrTooManyLevels):
		return boundsDenial(err)
	case errors.Is(err, topic.ErrWildcard):
		return DenyInvalid
	case errors.Is(err, topic.ErrUnknownTopic):
		if own := topic.Prefix + "/" + device; name == own || strings.HasPrefix(name, own+"/") {
			return DenyUnknownTopic
		}
		return DenyForeignDevice
	}
	return DenyOutsideDevice // ErrNotDevice, ErrBadDeviceID
}

// boundsDenial classifies a topic shape error.
func boundsDenial(err error) string {
	switch {
	case errors.Is(err, topic.ErrTooLong):
		return DenyTooLong
	case errors.Is(err, topic.ErrTooManyLevels):
		return DenyTooManyLevels
	}
	return DenyInvalid
}

// checkTopicShape bounds a topic name's length and levels (the open
// policy's only publish check), without allocating.
func checkTopicShape(name string) error {
	if len(name) > topic.MaxLength {
		return topic.ErrTooLong
	}
	if strings.Count(name, "/")+1 > topic.MaxLevels {
		return topic.ErrTooManyLevels
	}
	return nil
}
