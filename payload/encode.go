package payload

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// EncodeTelemetry encodes m in the JSON object form that DecodeTelemetry
// reads: {"device_id", "ts", "seq", "data"}. device_id is written when
// m.Device is not empty, seq when m.HasSeq, and ts, as RFC 3339 with
// nanoseconds in UTC, when withTS is true and m has points. The object form
// carries one time per message, that of the first point: split a message
// whose points differ in time before encoding it. Metric names are written
// as flat keys ("a.b": 1), which decode back to the same names. Numbers are
// written in the shortest form that parses back to the same float64; NaN and
// infinities, which the decoder never produces, are written as null.
func EncodeTelemetry(m *Message, withTS bool) []byte {
	return AppendTelemetry(make([]byte, 0, 64+32*len(m.Points)), m, withTS)
}

// AppendTelemetry is EncodeTelemetry appending to dst.
func AppendTelemetry(dst []byte, m *Message, withTS bool) []byte {
	return appendObject(dst, m, withTS, `"device_id":`)
}

// appendObject writes m in the object form, its device under deviceKey
// (`"device_id":` or a batch reading's `"device":`).
func appendObject(dst []byte, m *Message, withTS bool, deviceKey string) []byte {
	dst = append(dst, '{')
	sep := false
	if m.Device != "" {
		dst = append(dst, deviceKey...)
		dst = appendString(dst, m.Device)
		sep = true
	}
	if withTS && len(m.Points) > 0 {
		if sep {
			dst = append(dst, ',')
		}
		dst = append(dst, `"ts":"`...)
		dst = time.Unix(0, m.Points[0].TS).UTC().AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, '"')
		sep = true
	}
	if m.HasSeq {
		if sep {
			dst = append(dst, ',')
		}
		dst = append(dst, `"seq":`...)
		dst = strconv.AppendUint(dst, m.Seq, 10)
		sep = true
	}
	if sep {
		dst = append(dst, ',')
	}
	dst = append(dst, `"data":{`...)
	for i, p := range m.Points {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, p.Metric)
		dst = append(dst, ':')
		dst = appendValue(dst, p.Value)
	}
	return append(dst, '}', '}')
}

func appendValue(dst []byte, v Value) []byte {
	switch v.Kind {
	case Bool:
		if v.Num != 0 {
			return append(dst, "true"...)
		}
		return append(dst, "false"...)
	case String:
		return appendString(dst, v.Str)
	}
	return appendFloat(dst, v.Num)
}

// appendFloat writes f as encoding/json does: plain decimal between 1e-6
// and 1e21, exponent notation outside.
func appendFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// Clean up e-09 to e-9.
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string. Invalid UTF-8 becomes U+FFFD;
// control characters, U+2028 and U+2029 are escaped.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
