package broker

import (
	"context"
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
	DenyNotGateway     = "not_gateway"     // own batch topic, but no device is behind this one
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

// Gateways (DESIGN §3, Config.Gateways). On top of its own topics, a
// gateway G may
//
//	publish    devices/G/batch (only G, and only when devices are behind it)
//	publish    devices/C/alerts, status, responses/{cid}, twin/reported
//	subscribe  devices/C/commands/{name}, commands/+, commands/#,
//	           twin/desired, and devices/C/# (delivering commands and
//	           twin/desired only)
//
// for each child C registered behind it. Wildcards in the id level stay
// denied ("devices/+/commands/#"): a gateway subscribes per child. Anything
// else of another device is denied as foreign_device, children included;
// a non-gateway's batch publish is not_gateway.

// publishDenial is publishACL with the gateway rules: "" when device may
// publish to name, else the denial reason. Registry lookups happen only
// on the paths that publishACL denies (a gateway's batch or child topics).
func (b *Broker) publishDenial(device, name string) string {
	r := publishACL(device, name)
	if r != DenyWrongDirection && r != DenyForeignDevice {
		return r
	}
	t, err := topic.Parse(name)
	if err != nil {
		return r
	}
	if t.Device == device {
		if t.Kind != topic.KindBatch {
			return r
		}
		if b.batch == nil || !b.isGateway(device) {
			return DenyNotGateway
		}
		return ""
	}
	switch t.Kind {
	case topic.KindAlerts, topic.KindStatus, topic.KindResponse, topic.KindTwinReported:
		if b.isChild(device, t.Device) {
			return ""
		}
	}
	return r
}

// readDenial is readACL with the gateway rules, for a filter or a
// delivered topic name.
func (b *Broker) readDenial(device, f string) string {
	r := readACL(device, f)
	if r != DenyForeignDevice || b.gateways == nil {
		return r
	}
	var child string
	if !strings.ContainsAny(f, "+#") {
		t, err := topic.Parse(f)
		if err != nil || (t.Kind != topic.KindCommand && t.Kind != topic.KindTwinDesired) {
			return r
		}
		child = t.Device
	} else {
		child = topic.FilterDevice(f)
		switch strings.TrimPrefix(f, topic.Prefix+"/"+child+"/") {
		case "#", "commands/+", "commands/#":
		default:
			return r
		}
	}
	if b.isChild(device, child) {
		return ""
	}
	return r
}

func (b *Broker) isGateway(id string) bool {
	if b.gateways == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), gatewayCheckTimeout)
	defer cancel()
	return b.gateways.IsGateway(ctx, id)
}

func (b *Broker) isChild(gateway, device string) bool {
	if b.gateways == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), gatewayCheckTimeout)
	defer cancel()
	return b.gateways.IsChild(ctx, gateway, device)
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
