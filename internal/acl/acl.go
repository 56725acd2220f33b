// Package acl holds the device topic ACL of DESIGN §3 as pure functions:
// which topics a device may publish to, which filters it may subscribe to
// and which topic names may be delivered to it, with the gateway rules on
// top. The embedded broker (internal/broker) asks it on every publish,
// subscribe and delivery; the external-broker endpoint (internal/brokerauth)
// asks it on the publish and subscribe checks EMQX forwards. Every answer
// is "" (allowed) or a denial reason, a stable metric label.
package acl

import (
	"context"
	"errors"
	"strings"

	"github.com/fieldhub/fieldhub/topic"
)

// Denial reasons (fieldhub_mqtt_acl_denials_total{action,reason}).
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
// responses). Deliveries are checked per topic name (Read with a name): a
// device receives only its own commands, twin/desired and ota messages,
// whatever it subscribed to — where the broker asks for deliveries at all
// (the embedded broker does; EMQX's HTTP authorization does not).

// Publish decides whether device may publish to name: only its own
// device → hub topics (telemetry, responses/{cid}, twin/reported, status,
// alerts, ota/…). It returns "" when allowed, else the denial reason.
// Gateway rules are in Rules.PublishDenial.
func Publish(device, name string) string {
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

// Read decides whether device may subscribe to a filter or receive a
// message on a topic name (one check serves both: a name is a filter
// without wildcards). It returns "" when allowed, else the denial reason.
// Gateway rules are in Rules.ReadDenial.
func Read(device, f string) string {
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
		return BoundsDenial(err)
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

// Gateways tells which devices a gateway may act for. The registry
// implements it (from a cache); both methods answer false when in doubt.
type Gateways interface {
	// IsGateway reports whether id is a gateway (has devices behind it).
	IsGateway(ctx context.Context, id string) bool
	// IsChild reports whether device is registered behind gateway.
	IsChild(ctx context.Context, gateway, device string) bool
}

// Rules are Publish and Read with the gateway rules of DESIGN §3. On top
// of its own topics, a gateway G may
//
//	publish    devices/G/batch (only G, only with Batch, and only when devices are behind it)
//	publish    devices/C/alerts, status, responses/{cid}, twin/reported
//	subscribe  devices/C/commands/{name}, commands/+, commands/#,
//	           twin/desired, and devices/C/# (delivering commands and
//	           twin/desired only)
//
// for each child C registered behind it. Wildcards in the id level stay
// denied ("devices/+/commands/#"): a gateway subscribes per child. Anything
// else of another device is denied as foreign_device, children included;
// a non-gateway's batch publish is not_gateway. The zero value has no
// gateways: it is Publish and Read, with every batch publish not_gateway.
type Rules struct {
	// Gateways answers the gateway questions; nil means no gateways.
	Gateways Gateways
	// Batch says whether gateway batches (devices/G/batch) are accepted
	// at all (the embedded broker: when its Ingester takes them).
	Batch bool
}

// PublishDenial is Publish with the gateway rules: "" when device may
// publish to name, else the denial reason. Gateways are asked only on the
// paths that Publish denies (a gateway's batch or child topics).
func (r Rules) PublishDenial(ctx context.Context, device, name string) string {
	d := Publish(device, name)
	if d != DenyWrongDirection && d != DenyForeignDevice {
		return d
	}
	t, err := topic.Parse(name)
	if err != nil {
		return d
	}
	if t.Device == device {
		if t.Kind != topic.KindBatch {
			return d
		}
		if !r.Batch || r.Gateways == nil || !r.Gateways.IsGateway(ctx, device) {
			return DenyNotGateway
		}
		return ""
	}
	switch t.Kind {
	case topic.KindAlerts, topic.KindStatus, topic.KindResponse, topic.KindTwinReported:
		if r.Gateways != nil && r.Gateways.IsChild(ctx, device, t.Device) {
			return ""
		}
	}
	return d
}

// ReadDenial is Read with the gateway rules, for a filter or a delivered
// topic name.
func (r Rules) ReadDenial(ctx context.Context, device, f string) string {
	d := Read(device, f)
	if d != DenyForeignDevice || r.Gateways == nil {
		return d
	}
	var child string
	if !strings.ContainsAny(f, "+#") {
		t, err := topic.Parse(f)
		if err != nil || (t.Kind != topic.KindCommand && t.Kind != topic.KindTwinDesired) {
			return d
		}
		child = t.Device
	} else {
		child = topic.FilterDevice(f)
		switch strings.TrimPrefix(f, topic.Prefix+"/"+child+"/") {
		case "#", "commands/+", "commands/#":
		default:
			return d
		}
	}
	if r.Gateways.IsChild(ctx, device, child) {
		return ""
	}
	return d
}

// nameDenial classifies a topic.Parse error for device.
func nameDenial(device, name string, err error) string {
	switch {
	case errors.Is(err, topic.ErrTooLong), errors.Is(err, topic.ErrTooManyLevels):
		return BoundsDenial(err)
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

// BoundsDenial classifies a topic shape error (topic.ErrTooLong,
// topic.ErrTooManyLevels, anything else: invalid).
func BoundsDenial(err error) string {
	switch {
	case errors.Is(err, topic.ErrTooLong):
		return DenyTooLong
	case errors.Is(err, topic.ErrTooManyLevels):
		return DenyTooManyLevels
	}
	return DenyInvalid
}
