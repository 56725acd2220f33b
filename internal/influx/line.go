package influx

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/fieldhub/fieldhub/payload"
)

// Line protocol, as InfluxDB 1.x parses it (and 2.x accepts):
//
//	measurement,device=ID field=value timestamp\n
//
// Names are escaped with a backslash before the characters that would end
// them: comma and space in the measurement; comma, equals sign and space
// in tag keys and values; those and the double quote in field keys. A
// backslash is otherwise literal: InfluxDB 1.x does not unescape "\\" in
// names, so a name with a backslash just before a comma, an equals sign
// or a space, or at its end, cannot be written and is refused
// (checkName). String values are quoted, with '\' and '"' escaped; they
// may hold line breaks. Booleans are true or false; numbers are floats
// (never the "i" integer suffix, so that a metric keeps one field type);
// timestamps are nanoseconds.

// Escaped characters of each kind of name.
const (
	measurementSpecials = ", "
	tagSpecials         = ",= "
	fieldKeySpecials    = ",= \""
)

// errName is wrapped by checkName's errors.
var errName = errors.New("not representable in line protocol")

// checkName returns an error when s cannot be written as a measurement,
// tag or field key or tag value.
func checkName(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty", errName)
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c == 0x7f:
			return fmt.Errorf("%w: control character %#02x", errName, c)
		case c == '\\' && (i == len(s)-1 || s[i+1] == ',' || s[i+1] == '=' || s[i+1] == ' '):
			return fmt.Errorf("%w: backslash before a comma, equals sign or space, or at the end", errName)
		}
	}
	return nil
}

// appendName appends s with a backslash before each byte of specials.
func appendName(b []byte, s, specials string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		for j := 0; j < len(specials); j++ {
			if c == specials[j] {
				b = append(b, '\\')
				break
			}
		}
		b = append(b, c)
	}
	return b
}

// appendString appends s as a quoted string field value.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

// lineEncoder writes one line per point. A point's metric becomes a field
// of its own line: InfluxDB merges the fields of one series and timestamp
// into one row, and a refused line (a type conflict) is then exactly one
// point, which keeps the counts exact.
type lineEncoder struct {
	prefix []byte // escaped measurement and ",device="
}

func newLineEncoder(measurement string) lineEncoder {
	b := appendName(nil, measurement, measurementSpecials)
	b = append(b, ",device="...)
	return lineEncoder{prefix: b}
}

// appendPoint appends the line of p of device, or returns b unchanged and
// an error when the point cannot be written (a name checkName refuses, a
// NaN or infinite number, an unknown kind).
func (e lineEncoder) appendPoint(b []byte, device string, p *payload.Point) ([]byte, error) {
	if err := checkName(device); err != nil {
		return b, fmt.Errorf("device %q: %w", device, err)
	}
	if err := checkName(p.Metric); err != nil {
		return b, fmt.Errorf("metric %q: %w", p.Metric, err)
	}
	start := len(b)
	b = append(b, e.prefix...)
	b = appendName(b, device, tagSpecials)
	b = append(b, ' ')
	b = appendName(b, p.Metric, fieldKeySpecials)
	b = append(b, '=')
	switch p.Value.Kind {
	case payload.Number:
		f := p.Value.Num
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return b[:start], fmt.Errorf("metric %q: %v cannot be stored in InfluxDB", p.Metric, f)
		}
		b = strconv.AppendFloat(b, f, 'g', -1, 64)
	case payload.Bool:
		b = strconv.AppendBool(b, p.Value.Num != 0)
	case payload.String:
		b = appendString(b, p.Value.Str)
	default:
		return b[:start], fmt.Errorf("metric %q: unknown value kind %v", p.Metric, p.Value.Kind)
	}
	b = append(b, ' ')
	b = strconv.AppendInt(b, p.TS, 10)
	return append(b, '\n'), nil
}
