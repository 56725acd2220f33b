// Package topic defines fieldhub's MQTT topic scheme (DESIGN §3): the
// topics a device publishes and subscribes to under devices/{id}/…, how to
// build them, and how to parse and bound untrusted topic names and filters.
package topic

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Prefix is the first level of every device topic.
const Prefix = "devices"

// Limits on untrusted topic names and filters. They are checked before the
// broker indexes a subscription, so that a filter with tens of thousands of
// levels costs nothing.
const (
	// MaxDeviceIDLength is the longest device id.
	MaxDeviceIDLength = 128
	// MaxLength is the longest topic name or filter accepted, in bytes.
	MaxLength = 1024
	// MaxLevels is the largest number of levels in a topic name or filter.
	MaxLevels = 16
)

// Kind says what a device topic carries.
type Kind int

// The kinds of device topics.
const (
	KindUnknown      Kind = iota
	KindTelemetry         // devices/{id}/telemetry, device → hub
	KindCommand           // devices/{id}/commands/{name}, hub → device
	KindResponse          // devices/{id}/responses/{command-id}, device → hub
	KindTwinReported      // devices/{id}/twin/reported, device → hub
	KindTwinDesired       // devices/{id}/twin/desired, hub → device
	KindStatus            // devices/{id}/status, device → hub (retained, last will)
	KindAlerts            // devices/{id}/alerts, device or edge → hub
	KindOTA               // devices/{id}/ota/…, both directions
	KindBatch             // devices/{gateway}/batch, gateway → hub: readings and alerts of its child devices
)

var kindNames = [...]string{"unknown", "telemetry", "command", "response", "twin_reported", "twin_desired", "status", "alerts", "ota", "batch"}

// String returns the kind's name as used in metrics labels.
func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return "unknown"
	}
	return kindNames[k]
}

// Errors returned by Parse and ValidateFilter.
var (
	ErrTooLong       = errors.New("topic too long")
	ErrTooManyLevels = errors.New("topic has too many levels")
	ErrNotDevice     = errors.New("not a device topic")
	ErrBadDeviceID   = errors.New("invalid device id")
	ErrUnknownTopic  = errors.New("unknown device topic")
	ErrWildcard      = errors.New("wildcard in topic name")
	ErrBadFilter     = errors.New("invalid topic filter")
)

// Topic is a parsed device topic.
type Topic struct {
	Device string // the device id
	Kind   Kind
	// Rest is what follows the kind: the command name for KindCommand, the
	// command id for KindResponse, the sub-path for KindOTA; empty otherwise.
	Rest string
}

// String builds the topic name back.
func (t Topic) String() string {
	switch t.Kind {
	case KindTelemetry:
		return Telemetry(t.Device)
	case KindCommand:
		return Command(t.Device, t.Rest)
	case KindResponse:
		return Response(t.Device, t.Rest)
	case KindTwinReported:
		return TwinReported(t.Device)
	case KindTwinDesired:
		return TwinDesired(t.Device)
	case KindStatus:
		return Status(t.Device)
	case KindAlerts:
		return Alerts(t.Device)
	case KindBatch:
		return Batch(t.Device)
	case KindOTA:
		if t.Rest == "" {
			return Prefix + "/" + t.Device + "/ota"
		}
		return Prefix + "/" + t.Device + "/ota/" + t.Rest
	}
	return ""
}

// Telemetry returns devices/{id}/telemetry.
func Telemetry(id string) string { return Prefix + "/" + id + "/telemetry" }

// Command returns devices/{id}/commands/{name}.
func Command(id, name string) string { return Prefix + "/" + id + "/commands/" + name }

// Response returns devices/{id}/responses/{commandID}.
func Response(id, commandID string) string { return Prefix + "/" + id + "/responses/" + commandID }

// TwinReported returns devices/{id}/twin/reported.
func TwinReported(id string) string { return Prefix + "/" + id + "/twin/reported" }

// TwinDesired returns devices/{id}/twin/desired.
func TwinDesired(id string) string { return Prefix + "/" + id + "/twin/desired" }

// Batch returns devices/{gateway}/batch, where an edge gateway publishes
// the readings and alerts of the devices behind it.
func Batch(gateway string) string { return Prefix + "/" + gateway + "/batch" }

// Status returns devices/{id}/status.
func Status(id string) string { return Prefix + "/" + id + "/status" }

// Alerts returns devices/{id}/alerts.
func Alerts(id string) string { return Prefix + "/" + id + "/alerts" }

// ValidDeviceID reports whether id is 1–128 characters of [A-Za-z0-9._:-].
func ValidDeviceID(id string) bool {
	if len(id) == 0 || len(id) > MaxDeviceIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// validName reports whether a command name or id level is usable: non-empty,
// at most 128 bytes of valid UTF-8, no wildcard, no control character.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c == '+' || c == '#' || c == '/' {
			return false
		}
	}
	return utf8.ValidString(s)
}

// validPath reports whether every level of an OTA sub-path is a validName:
// no empty level anywhere (a//b, /a, a/), no control character.
func validPath(s string) bool {
	for {
		level, rest, more := strings.Cut(s, "/")
		if !validName(level) {
			return false
		}
		if !more {
			return true
		}
		s = rest
	}
}

// checkShape bounds length and level count without allocating.
func checkShape(s string) error {
	if len(s) > MaxLength {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTooLong, len(s), MaxLength)
	}
	if n := strings.Count(s, "/") + 1; n > MaxLevels {
		return fmt.Errorf("%w: %d levels, at most %d", ErrTooManyLevels, n, MaxLevels)
	}
	return nil
}

// Parse parses a topic name (no wildcards) under devices/{id}/….
func Parse(s string) (Topic, error) {
	if err := checkShape(s); err != nil {
		return Topic{}, err
	}
	if strings.ContainsAny(s, "+#") {
		return Topic{}, fmt.Errorf("%w: %q", ErrWildcard, s)
	}
	rest, ok := strings.CutPrefix(s, Prefix+"/")
	if !ok {
		return Topic{}, fmt.Errorf("%w: %q", ErrNotDevice, s)
	}
	id, rest, _ := strings.Cut(rest, "/")
	if !ValidDeviceID(id) {
		return Topic{}, fmt.Errorf("%w: %q", ErrBadDeviceID, id)
	}
	t := Topic{Device: id}
	kind, arg, hasArg := strings.Cut(rest, "/")
	switch {
	case kind == "telemetry" && !hasArg:
		t.Kind = KindTelemetry
	case kind == "status" && !hasArg:
		t.Kind = KindStatus
	case kind == "batch" && !hasArg:
		t.Kind = KindBatch
	case kind == "alerts" && !hasArg:
		t.Kind = KindAlerts
	case kind == "twin" && arg == "reported":
		t.Kind = KindTwinReported
	case kind == "twin" && arg == "desired":
		t.Kind = KindTwinDesired
	case kind == "commands" && validName(arg):
		t.Kind, t.Rest = KindCommand, arg
	case kind == "responses" && validName(arg):
		t.Kind, t.Rest = KindResponse, arg
	case kind == "ota":
		if hasArg && !validPath(arg) {
			return Topic{}, fmt.Errorf("%w: %q", ErrUnknownTopic, s)
		}
		t.Kind, t.Rest = KindOTA, arg
	default:
		return Topic{}, fmt.Errorf("%w: %q", ErrUnknownTopic, s)
	}
	return t, nil
}

// ValidateFilter checks an MQTT topic filter's shape (MQTT 3.1.1 §4.7 plus
// fieldhub's length and level bounds). It does not decide authorization.
func ValidateFilter(f string) error {
	if f == "" {
		return fmt.Errorf("%w: empty", ErrBadFilter)
	}
	if err := checkShape(f); err != nil {
		return err
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return fmt.Errorf("%w: %q: # must be a whole last level", ErrBadFilter, f)
		}
		if strings.Contains(l, "+") && l != "+" {
			return fmt.Errorf("%w: %q: + must be a whole level", ErrBadFilter, f)
		}
	}
	return nil
}

// FilterDevice returns the device id of a filter of the form
// devices/{id}/… whose id level is literal, or "" when the filter is not
// confined to a single device.
func FilterDevice(f string) string {
	rest, ok := strings.CutPrefix(f, Prefix+"/")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, "/")
	if !ValidDeviceID(id) {
		return ""
	}
	return id
}
