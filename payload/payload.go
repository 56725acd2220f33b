// Package payload decodes and encodes fieldhub device payloads (DESIGN
// §3): telemetry as the JSON object {"device_id","ts","seq","data"} or
// SenML (RFC 8428) arrays, alerts, and the (optionally gzipped) batches of
// readings and alerts an edge gateway publishes for the devices behind it.
// Decoders treat their input as hostile: every refusal is an *Error whose
// Reason is a short, stable label used in metrics.
package payload

import (
	"errors"
	"fmt"
)

// ValueKind is the type of a metric value.
type ValueKind uint8

// Value kinds. A metric keeps one kind for its whole life.
const (
	Number ValueKind = iota
	Bool
	String
)

// String returns "number", "bool" or "string".
func (k ValueKind) String() string {
	switch k {
	case Number:
		return "number"
	case Bool:
		return "bool"
	case String:
		return "string"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Value is one metric value. Booleans are stored in Num as 0 or 1.
type Value struct {
	Kind ValueKind
	Num  float64
	Str  string
}

// NumberValue returns a numeric Value.
func NumberValue(f float64) Value { return Value{Kind: Number, Num: f} }

// BoolValue returns a boolean Value.
func BoolValue(b bool) Value {
	if b {
		return Value{Kind: Bool, Num: 1}
	}
	return Value{Kind: Bool}
}

// StringValue returns a string Value.
func StringValue(s string) Value { return Value{Kind: String, Str: s} }

// Any returns the value as float64, bool or string, for JSON encoding.
func (v Value) Any() any {
	switch v.Kind {
	case Bool:
		return v.Num != 0
	case String:
		return v.Str
	}
	return v.Num
}

// Point is one value of one metric at one time.
type Point struct {
	Metric string
	TS     int64 // Unix nanoseconds
	Value  Value
}

// Message is one decoded telemetry message of one device.
type Message struct {
	Device string
	Seq    uint64 // meaningful only when HasSeq
	HasSeq bool
	Points []Point
}

// Limits bound what a decoder accepts. The zero value means the defaults.
type Limits struct {
	MaxBytes     int // payload size; default 64 KiB
	MaxPoints    int // points per message; default 1,000
	MaxMetricLen int // bytes in a (flattened) metric name; default 128
	MaxStringLen int // bytes in a string value; default 1,024
	MaxDepth     int // nesting of data objects; default 8
}

// Default limits.
const (
	DefaultMaxBytes     = 64 << 10
	DefaultMaxPoints    = 1000
	DefaultMaxMetricLen = 128
	DefaultMaxStringLen = 1024
	DefaultMaxDepth     = 8
)

// WithDefaults returns l with zero fields set to their defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxPoints <= 0 {
		l.MaxPoints = DefaultMaxPoints
	}
	if l.MaxMetricLen <= 0 {
		l.MaxMetricLen = DefaultMaxMetricLen
	}
	if l.MaxStringLen <= 0 {
		l.MaxStringLen = DefaultMaxStringLen
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	return l
}

// Refusal reasons, used as the Reason of an *Error and as metric labels.
const (
	ReasonTooLarge       = "too_large"
	ReasonMalformed      = "malformed"
	ReasonWrongType      = "wrong_type"
	ReasonBadTimestamp   = "bad_timestamp"
	ReasonBadMetric      = "bad_metric"
	ReasonEmpty          = "empty"
	ReasonTooManyPoints  = "too_many_points"
	ReasonDeviceMismatch = "device_mismatch"
)

// Error is a refused payload.
type Error struct {
	Reason string // one of the Reason constants
	Msg    string // a human-readable detail
}

func (e *Error) Error() string { return "payload " + e.Reason + ": " + e.Msg }

// ErrRefused matches every *Error with errors.Is.
var ErrRefused = errors.New("payload refused")

// Is makes errors.Is(err, ErrRefused) true for every *Error.
func (e *Error) Is(target error) bool { return target == ErrRefused }

func refuse(reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// Reason returns the refusal reason of err, or "" when err is not a refusal.
func Reason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}
