package payload

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// now is the receive time used by the tests.
var now = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

const dev = "sensor-1"

// ns returns the Unix nanoseconds of an RFC 3339 time.
func ns(s string) int64 {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UnixNano()
}

func num(metric string, ts int64, f float64) Point {
	return Point{Metric: metric, TS: ts, Value: NumberValue(f)}
}

func boolean(metric string, ts int64, b bool) Point {
	return Point{Metric: metric, TS: ts, Value: BoolValue(b)}
}

func str(metric string, ts int64, s string) Point {
	return Point{Metric: metric, TS: ts, Value: StringValue(s)}
}

func msg(seq int64, points ...Point) *Message {
	m := &Message{Device: dev, Points: points}
	if seq >= 0 {
		m.Seq, m.HasSeq = uint64(seq), true
	}
	return m
}

func TestDecodeTelemetryObject(t *testing.T) {
	t0 := ns("2026-11-27T10:00:00.123Z")
	n := now.UnixNano()
	tests := []struct {
		name string
		in   string
		want *Message
	}{
		{"minimal", `{"data":{"t":1}}`, msg(-1, num("t", n, 1))},
		{"typical", `{"seq":123,"ts":"2026-11-27T10:00:00.123Z","data":{"temperature":21.53,"humidity":48.2,"vibration":0.0123}}`,
			msg(123, num("temperature", t0, 21.53), num("humidity", t0, 48.2), num("vibration", t0, 0.0123))},
		{"device_id matches", `{"device_id":"sensor-1","data":{"t":1}}`, msg(-1, num("t", n, 1))},
		{"white space", " \t\r\n{ \"data\" : { \"t\" : 1 } , \"seq\" : 0 } \n", msg(0, num("t", n, 1))},
		{"key order", `{"data":{"t":1},"ts":"2026-11-27T10:00:00.123Z","seq":9}`, msg(9, num("t", t0, 1))},
		{"seq max", `{"seq":9223372036854775807,"data":{"t":1}}`, msg(math.MaxInt64, num("t", n, 1))},
		{"unknown keys ignored", `{"fw":"1.2","extra":{"a":[1,{"b":null}],"c":true},"data":{"t":1},"z":null}`, msg(-1, num("t", n, 1))},
		{"repeated unknown key", `{"x":1,"x":2,"data":{"t":1}}`, msg(-1, num("t", n, 1))},
		{"escaped key names", `{"d\u0061ta":{"t\u00e9mp\"\\\/":1}}`, msg(-1, num("témp\"\\/", n, 1))},

		// Timestamps.
		{"RFC 3339 Z", `{"ts":"2026-11-27T10:00:00Z","data":{"t":1}}`, msg(-1, num("t", ns("2026-11-27T10:00:00Z"), 1))},
		{"RFC 3339 nanos", `{"ts":"2026-11-27T10:00:00.123456789Z","data":{"t":1}}`, msg(-1, num("t", ns("2026-11-27T10:00:00.123456789Z"), 1))},
		{"RFC 3339 offset", `{"ts":"2026-11-27T12:30:00.5+02:30","data":{"t":1}}`, msg(-1, num("t", ns("2026-11-27T10:00:00.5Z"), 1))},
		{"RFC 3339 negative offset", `{"ts":"2026-11-27T05:00:00-05:00","data":{"t":1}}`, msg(-1, num("t", ns("2026-11-27T10:00:00Z"), 1))},
		{"RFC 3339 lower case", `{"ts":"2026-11-27t10:00:00z","data":{"t":1}}`, msg(-1, num("t", ns("2026-11-27T10:00:00Z"), 1))},
		{"RFC 3339 space", `{"ts":"2026-11-27 10:00:00Z","data":{"t":1}}`, msg(-1, num("t", ns("2026-11-27T10:00:00Z"), 1))},
		{"Python isoformat micros", `{"ts":"2024-05-01T12:00:00.123456","data":{"t":1}}`, msg(-1, num("t", ns("2024-05-01T12:00:00.123456Z"), 1))},
		{"Python isoformat whole seconds", `{"ts":"2024-05-01T12:00:00","data":{"t":1}}`, msg(-1, num("t", ns("2024-05-01T12:00:00Z"), 1))},
		{"Python aware isoformat", `{"ts":"2024-05-01T12:00:00.123456+00:00","data":{"t":1}}`, msg(-1, num("t", ns("2024-05-01T12:00:00.123456Z"), 1))},
		{"leap day", `{"ts":"2024-02-29T00:00:00Z","data":{"t":1}}`, msg(-1, num("t", ns("2024-02-29T00:00:00Z"), 1))},
		{"first nanosecond", `{"ts":"1970-01-01T00:00:00.000000001Z","data":{"t":1}}`, msg(-1, num("t", 1, 1))},
		{"last nanosecond", `{"ts":"2262-04-11T23:47:16.854775807Z","data":{"t":1}}`, msg(-1, num("t", math.MaxInt64, 1))},
		{"epoch ms", `{"ts":1795773600123,"data":{"t":1}}`, msg(-1, num("t", t0, 1))},
		{"epoch ms fraction", `{"ts":1795773600123.456789,"data":{"t":1}}`, msg(-1, num("t", t0+456789, 1))},
		{"epoch ms fraction below ns dropped", `{"ts":1795773600123.4567899,"data":{"t":1}}`, msg(-1, num("t", t0+456789, 1))},
		{"epoch ms exponent", `{"ts":1.795773600123e12,"data":{"t":1}}`, msg(-1, num("t", t0, 1))},
		{"epoch ms exponent fraction", `{"ts":17957736001234567e-4,"data":{"t":1}}`, msg(-1, num("t", t0+456700, 1))},
		{"epoch ms negative exponent", `{"ts":1795773600123000e-3,"data":{"t":1}}`, msg(-1, num("t", t0, 1))},
		{"epoch ms many digits", `{"ts":1795773600123.000000000000000000000000001,"data":{"t":1}}`, msg(-1, num("t", t0, 1))},
		{"epoch ms leading zeros in fraction", `{"ts":0.000001e3,"data":{"t":1}}`, msg(-1, num("t", 1000, 1))},
		{"epoch ms max", `{"ts":9223372036854.775807,"data":{"t":1}}`, msg(-1, num("t", math.MaxInt64, 1))},
		{"epoch ms tiny", `{"ts":0.000001,"data":{"t":1}}`, msg(-1, num("t", 1, 1))},

		// Values.
		{"flatten", `{"data":{"a":{"b":1,"c":{"d":"x"}},"e":true}}`, msg(-1, num("a.b", n, 1), str("a.c.d", n, "x"), boolean("e", n, true))},
		{"flat dotted key", `{"data":{"a.b":1}}`, msg(-1, num("a.b", n, 1))},
		{"merged objects", `{"data":{"a":{"b":1},"a":{"c":2}}}`, msg(-1, num("a.b", n, 1), num("a.c", n, 2))},
		{"empty nested object skipped", `{"data":{"a":{},"b":1}}`, msg(-1, num("b", n, 1))},
		{"booleans", `{"data":{"on":true,"off":false}}`, msg(-1, boolean("on", n, true), boolean("off", n, false))},
		{"strings", `{"data":{"s":"run","e":"","u":"\u00e9\ud83d\ude00\n\t"}}`, msg(-1, str("s", n, "run"), str("e", n, ""), str("u", n, "é😀\n\t"))},
		{"numbers", `{"data":{"a":0,"b":-0,"c":-1.5e-3,"d":1E+2,"e":1e308,"f":1e-400,"g":123456789012345678901234567890}}`,
			msg(-1, num("a", n, 0), num("b", n, math.Copysign(0, -1)), num("c", n, -1.5e-3), num("d", n, 100), num("e", n, 1e308), num("f", n, 0), num("g", n, 123456789012345678901234567890))},
		{"utf-8 metric", `{"data":{"température":1,"温度":2}}`, msg(-1, num("température", n, 1), num("温度", n, 2))},
		{"same metric twice in separate messages is fine", `{"data":{"a":1,"b":1}}`, msg(-1, num("a", n, 1), num("b", n, 1))},
		{"max depth", `{"data":{"1":{"2":{"3":{"4":{"5":{"6":{"7":{"8":1}}}}}}}}}`, msg(-1, num("1.2.3.4.5.6.7.8", n, 1))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeTelemetry([]byte(tt.in), dev, now, Limits{})
			if err != nil {
				t.Fatalf("DecodeTelemetry(%s) error %v; want %v", tt.in, err, tt.want)
			}
			if !equalMessages(got, tt.want) {
				t.Errorf("DecodeTelemetry(%s) = %v; want %v", tt.in, fmtMessage(got), fmtMessage(tt.want))
			}
		})
	}
}

func TestDecodeTelemetrySenML(t *testing.T) {
	n := now.UnixNano()
	abs := ns("2026-11-27T10:00:00.25Z")
	tests := []struct {
		name string
		in   string
		want *Message
	}{
		{"single", `[{"n":"temp","v":21.5}]`, msg(-1, num("temp", n, 21.5))},
		{"base name and time", `[{"bn":"urn:dev:mac:0024befffe804ff1:","bt":1795773600.25,"n":"temp","v":21.5},{"n":"hum","v":48,"t":1},{"n":"on","vb":true},{"n":"state","vs":"run"}]`,
			msg(-1, num("urn:dev:mac:0024befffe804ff1:temp", abs, 21.5), num("urn:dev:mac:0024befffe804ff1:hum", abs+1e9, 48), boolean("urn:dev:mac:0024befffe804ff1:on", abs, true), str("urn:dev:mac:0024befffe804ff1:state", abs, "run"))},
		{"absolute t", `[{"n":"a","t":1795773600.25,"v":1}]`, msg(-1, num("a", abs, 1))},
		{"relative t", `[{"n":"a","t":-5,"v":1},{"n":"a","t":0,"v":2},{"n":"a","t":2.5,"v":3},{"n":"a","v":4,"t":-0.001}]`,
			msg(-1, num("a", n-5e9, 1), num("a", n, 2), num("a", n+2.5e9, 3), num("a", n-1e6, 4))},
		{"relative bt", `[{"bt":-60,"n":"a","v":1},{"n":"b","t":30,"v":2}]`, msg(-1, num("a", n-60e9, 1), num("b", n-30e9, 2))},
		{"just below 2^28 is relative", `[{"n":"a","t":268435455,"v":1}]`, msg(-1, num("a", n+268435455e9, 1))},
		{"2^28 is absolute", `[{"n":"a","t":268435456,"v":1}]`, msg(-1, num("a", 268435456e9, 1))},
		{"base name replaced", `[{"bn":"a.","n":"x","v":1},{"bn":"b.","n":"x","v":2},{"n":"y","v":3}]`, msg(-1, num("a.x", n, 1), num("b.x", n, 2), num("b.y", n, 3))},
		{"bn alone is the name", `[{"bn":"dev:temp","v":1}]`, msg(-1, num("dev:temp", n, 1))},
		{"base value", `[{"bv":100,"n":"a","v":1},{"n":"b","v":-1}]`, msg(-1, num("a", n, 101), num("b", n, 99))},
		{"ignored fields", `[{"bver":10,"n":"a","u":"Cel","bu":"K","s":5,"bs":1,"ut":10,"v":1,"x":{"y":[1]}}]`, msg(-1, num("a", n, 1))},
		{"same name at other times", `[{"n":"a","t":1,"v":1},{"n":"a","t":2,"v":2}]`, msg(-1, num("a", n+1e9, 1), num("a", n+2e9, 2))},
		{"white space", " [ { \"n\" : \"a\" , \"v\" : 1 } ] ", msg(-1, num("a", n, 1))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeTelemetry([]byte(tt.in), dev, now, Limits{})
			if err != nil {
				t.Fatalf("DecodeTelemetry(%s) error %v; want %v", tt.in, err, fmtMessage(tt.want))
			}
			if tt.want == nil { // only checks that it decodes
				return
			}
			if !equalMessages(got, tt.want) {
				t.Errorf("DecodeTelemetry(%s) = %v; want %v", tt.in, fmtMessage(got), fmtMessage(tt.want))
			}
		})
	}
}

func TestDecodeTelemetryRFC8428Example(t *testing.T) {
	// RFC 8428 §5.1.2, multiple datapoints: times are absolute.
	in := `[{"bn":"urn:dev:ow:10e2073a01080063:","bt":1.320067464e+09,"bu":"%RH","v":20},{"u":"lon","v":24.30621},{"t":60,"v":20.3}]`
	m, err := DecodeTelemetry([]byte(in), dev, now, Limits{})
	if err == nil {
		t.Fatalf("DecodeTelemetry(%s) = %v; want a repeated-metric refusal (lon and %%RH share the name)", in, fmtMessage(m))
	}
	in = `[{"bn":"urn:dev:ow:10e2073a01080063:","bt":1.320067464e+09,"bu":"%RH","v":20},{"t":60,"v":20.3}]`
	m, err = DecodeTelemetry([]byte(in), dev, now, Limits{})
	if err != nil {
		t.Fatalf("DecodeTelemetry(%s) error %v", in, err)
	}
	want := msg(-1, num("urn:dev:ow:10e2073a01080063:", 1320067464e9, 20), num("urn:dev:ow:10e2073a01080063:", 1320067524e9, 20.3))
	if !equalMessages(m, want) {
		t.Errorf("DecodeTelemetry(%s) = %v; want %v", in, fmtMessage(m), fmtMessage(want))
	}
}

func TestDecodeTelemetryRefusals(t *testing.T) {
	deep := `{"data":` + strings.Repeat(`{"a":`, 9) + "1" + strings.Repeat("}", 9) + "}"
	deepSkip := `{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `,"data":{"a":1}}`
	many := `{"data":{` + strings.Repeat(`"a":1,`, 0)
	for i := range 1001 {
		if i > 0 {
			many += ","
		}
		many += fmt.Sprintf(`"m%d":%d`, i, i)
	}
	many += "}}"
	tests := []struct {
		name string
		in   string
		lim  Limits
		want string
	}{
		{"too large", `{"data":{"a":1}}`, Limits{MaxBytes: 10}, ReasonTooLarge},
		{"empty payload", ``, Limits{}, ReasonEmpty},
		{"blank payload", " \n\t", Limits{}, ReasonEmpty},
		{"no data", `{"seq":1}`, Limits{}, ReasonEmpty},
		{"empty object", `{}`, Limits{}, ReasonEmpty},
		{"empty data", `{"data":{}}`, Limits{}, ReasonEmpty},
		{"only empty objects", `{"data":{"a":{}}}`, Limits{}, ReasonEmpty},
		{"empty SenML", `[]`, Limits{}, ReasonEmpty},
		{"too many points", many, Limits{}, ReasonTooManyPoints},
		{"too many points custom", `{"data":{"a":1,"b":2,"c":3}}`, Limits{MaxPoints: 2}, ReasonTooManyPoints},
		{"too many SenML points", `[{"n":"a","v":1},{"n":"b","v":1}]`, Limits{MaxPoints: 1}, ReasonTooManyPoints},
		{"device mismatch", `{"device_id":"other","data":{"a":1}}`, Limits{}, ReasonDeviceMismatch},
		{"device mismatch empty", `{"device_id":"","data":{"a":1}}`, Limits{}, ReasonDeviceMismatch},

		// malformed
		{"not JSON", `hello`, Limits{}, ReasonMalformed},
		{"NUL", "\x00", Limits{}, ReasonMalformed},
		{"truncated", `{"data":{"a":1}`, Limits{}, ReasonMalformed},
		{"trailing garbage", `{"data":{"a":1}}x`, Limits{}, ReasonMalformed},
		{"two values", `{"data":{"a":1}} {}`, Limits{}, ReasonMalformed},
		{"trailing comma", `{"data":{"a":1},}`, Limits{}, ReasonMalformed},
		{"trailing comma in data", `{"data":{"a":1,}}`, Limits{}, ReasonMalformed},
		{"missing colon", `{"data" {"a":1}}`, Limits{}, ReasonMalformed},
		{"single quotes", `{'data':{'a':1}}`, Limits{}, ReasonMalformed},
		{"unquoted key", `{data:{"a":1}}`, Limits{}, ReasonMalformed},
		{"leading zero", `{"data":{"a":01}}`, Limits{}, ReasonMalformed},
		{"leading plus", `{"data":{"a":+1}}`, Limits{}, ReasonMalformed},
		{"bare dot", `{"data":{"a":1.}}`, Limits{}, ReasonMalformed},
		{"dot first", `{"data":{"a":.5}}`, Limits{}, ReasonMalformed},
		{"empty exponent", `{"data":{"a":1e}}`, Limits{}, ReasonMalformed},
		{"hex", `{"data":{"a":0x10}}`, Limits{}, ReasonMalformed},
		{"NaN literal", `{"data":{"a":NaN}}`, Limits{}, ReasonMalformed},
		{"Infinity literal", `{"data":{"a":Infinity}}`, Limits{}, ReasonMalformed},
		{"bad literal", `{"data":{"a":tru}}`, Limits{}, ReasonMalformed},
		{"raw newline in string", "{\"data\":{\"a\":\"x\ny\"}}", Limits{}, ReasonMalformed},
		{"bad escape", `{"data":{"a":"\x"}}`, Limits{}, ReasonMalformed},
		{"short unicode escape", `{"data":{"a":"\u12"}}`, Limits{}, ReasonMalformed},
		{"lone high surrogate", `{"data":{"a":"\ud83d"}}`, Limits{}, ReasonMalformed},
		{"lone low surrogate", `{"data":{"a":"\ude00"}}`, Limits{}, ReasonMalformed},
		{"high surrogate then letter", `{"data":{"a":"\ud83dx"}}`, Limits{}, ReasonMalformed},
		{"two high surrogates", `{"data":{"a":"\ud83d\ud83d"}}`, Limits{}, ReasonMalformed},
		{"invalid UTF-8 value", "{\"data\":{\"a\":\"\xff\"}}", Limits{}, ReasonMalformed},
		{"invalid UTF-8 unknown key", "{\"\xff\":1,\"data\":{\"a\":1}}", Limits{}, ReasonMalformed},
		{"invalid UTF-8 skipped value", "{\"x\":[\"\xc3\"],\"data\":{\"a\":1}}", Limits{}, ReasonMalformed},
		{"unterminated string", `{"data":{"a":"abc`, Limits{}, ReasonMalformed},
		{"repeated data", `{"data":{"a":1},"data":{"b":1}}`, Limits{}, ReasonMalformed},
		{"repeated ts", `{"ts":1,"ts":2,"data":{"a":1}}`, Limits{}, ReasonMalformed},
		{"repeated seq", `{"seq":1,"seq":1,"data":{"a":1}}`, Limits{}, ReasonMalformed},
		{"repeated device_id", `{"device_id":"sensor-1","device_id":"sensor-1","data":{"a":1}}`, Limits{}, ReasonMalformed},
		{"unknown value too deep", deepSkip, Limits{}, ReasonMalformed},
		{"bad unknown value", `{"x":[1,],"data":{"a":1}}`, Limits{}, ReasonMalformed},

		// wrong_type
		{"top-level string", `"hello"`, Limits{}, ReasonWrongType},
		{"top-level number", `42`, Limits{}, ReasonWrongType},
		{"top-level null", `null`, Limits{}, ReasonWrongType},
		{"data array", `{"data":[1,2]}`, Limits{}, ReasonWrongType},
		{"data string", `{"data":"a"}`, Limits{}, ReasonWrongType},
		{"data null", `{"data":null}`, Limits{}, ReasonWrongType},
		{"null value", `{"data":{"a":null}}`, Limits{}, ReasonWrongType},
		{"array value", `{"data":{"a":[1]}}`, Limits{}, ReasonWrongType},
		{"overflowing number", `{"data":{"a":1e400}}`, Limits{}, ReasonWrongType},
		{"overflowing negative number", `{"data":{"a":-1e400}}`, Limits{}, ReasonWrongType},
		{"seq negative", `{"seq":-1,"data":{"a":1}}`, Limits{}, ReasonWrongType},
		{"seq negative zero", `{"seq":-0,"data":{"a":1}}`, Limits{}, ReasonWrongType},
		{"seq fraction", `{"seq":1.5,"data":{"a":1}}`, Limits{}, ReasonWrongType},
		{"seq integral fraction", `{"seq":1.0,"data":{"a":1}}`, Limits{}, ReasonWrongType},
		{"seq exponent", `{"seq":1e3,"data":{"a":1}}`, Limits{}, ReasonWrongType},
		{"seq string", `{"seq":"1","data":{"a":1}}`, Limits{}, ReasonWrongType},
		{"seq null", `{"seq":null,"data":{"a":1}}`, Limits{}, ReasonWrongType},
		{"seq too big", `{"seq":9223372036854775808,"data":{"a":1}}`, Limits{}, ReasonWrongType},
		{"seq far too big", `{"seq":184467440737095516160,"data":{"a":1}}`, Limits{}, ReasonWrongType},
		{"device_id number", `{"device_id":1,"data":{"a":1}}`, Limits{}, ReasonWrongType},
		{"device_id null", `{"device_id":null,"data":{"a":1}}`, Limits{}, ReasonWrongType},
		{"ts bool", `{"ts":true,"data":{"a":1}}`, Limits{}, ReasonWrongType},
		{"ts object", `{"ts":{},"data":{"a":1}}`, Limits{}, ReasonWrongType},

		// bad_timestamp
		{"ts garbage", `{"ts":"yesterday","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts empty", `{"ts":"","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts date only", `{"ts":"2024-05-01","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts no seconds", `{"ts":"2024-05-01T12:00Z","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts month 13", `{"ts":"2024-13-01T12:00:00Z","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts Feb 30", `{"ts":"2024-02-30T12:00:00Z","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts Feb 29 not leap", `{"ts":"2023-02-29T12:00:00Z","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts hour 24", `{"ts":"2024-05-01T24:00:00Z","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts leap second", `{"ts":"2016-12-31T23:59:60Z","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts empty fraction", `{"ts":"2024-05-01T12:00:00.Z","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts ten fraction digits", `{"ts":"2024-05-01T12:00:00.1234567890Z","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts bad offset", `{"ts":"2024-05-01T12:00:00+0200","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts offset hours 24", `{"ts":"2024-05-01T12:00:00+24:00","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts trailing", `{"ts":"2024-05-01T12:00:00Zx","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts epoch", `{"ts":"1970-01-01T00:00:00Z","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts before epoch", `{"ts":"1969-12-31T23:59:59Z","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts before epoch by offset", `{"ts":"1970-01-01T00:30:00+01:00","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts year 0", `{"ts":"0000-01-01T00:00:00Z","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts after int64", `{"ts":"2262-04-11T23:47:16.854775808Z","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts year 9999", `{"ts":"9999-12-31T23:59:59Z","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts unicode digits", `{"ts":"２０２４-05-01T12:00:00Z","data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts ms zero", `{"ts":0,"data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts ms negative", `{"ts":-1,"data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts ms too large", `{"ts":9223372036855,"data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts ms far too large", `{"ts":92233720368547758070000,"data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts ms just too large", `{"ts":9223372036854.775808,"data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts ms exponent too large", `{"ts":1e13,"data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts ms overflow", `{"ts":1e400,"data":{"a":1}}`, Limits{}, ReasonBadTimestamp},
		{"ts ms below a nanosecond", `{"ts":0.0000001,"data":{"a":1}}`, Limits{}, ReasonBadTimestamp},

		// bad_metric
		{"empty metric", `{"data":{"":1}}`, Limits{}, ReasonBadMetric},
		{"empty nested key", `{"data":{"a":{"":1}}}`, Limits{}, ReasonBadMetric},
		{"control char in metric", `{"data":{"a\u0001":1}}`, Limits{}, ReasonBadMetric},
		{"newline in metric", `{"data":{"a\nb":1}}`, Limits{}, ReasonBadMetric},
		{"DEL in metric", "{\"data\":{\"a\x7f\":1}}", Limits{}, ReasonBadMetric},
		{"C1 control in metric", `{"data":{"a\u0085":1}}`, Limits{}, ReasonBadMetric},
		{"invalid UTF-8 metric", "{\"data\":{\"a\xff\":1}}", Limits{}, ReasonBadMetric},
		{"truncated UTF-8 metric", "{\"data\":{\"\xe6\xb8\":1}}", Limits{}, ReasonBadMetric},
		{"metric too long", `{"data":{"` + strings.Repeat("m", 129) + `":1}}`, Limits{}, ReasonBadMetric},
		{"flattened metric too long", `{"data":{"` + strings.Repeat("m", 64) + `":{"` + strings.Repeat("m", 64) + `":1}}}`, Limits{}, ReasonBadMetric},
		{"metric too long custom", `{"data":{"abcd":1}}`, Limits{MaxMetricLen: 3}, ReasonBadMetric},
		{"too deep", deep, Limits{}, ReasonBadMetric},
		{"too deep custom", `{"data":{"a":{"b":1}}}`, Limits{MaxDepth: 1}, ReasonBadMetric},
		{"repeated metric", `{"data":{"a":1,"a":2}}`, Limits{}, ReasonBadMetric},
		{"repeated flattened metric", `{"data":{"a.b":1,"a":{"b":2}}}`, Limits{}, ReasonBadMetric},

		// too_large string values
		{"string too long", `{"data":{"a":"` + strings.Repeat("x", 1025) + `"}}`, Limits{}, ReasonTooLarge},
		{"string too long custom", `{"data":{"a":"abcd"}}`, Limits{MaxStringLen: 3}, ReasonTooLarge},

		// SenML
		{"SenML malformed", `[{"n":"a","v":1}`, Limits{}, ReasonMalformed},
		{"SenML trailing", `[{"n":"a","v":1}]]`, Limits{}, ReasonMalformed},
		{"SenML repeated field", `[{"n":"a","n":"b","v":1}]`, Limits{}, ReasonMalformed},
		{"SenML must understand", `[{"n":"a","v":1,"foo_":1}]`, Limits{}, ReasonMalformed},
		{"SenML newer version", `[{"bver":11,"n":"a","v":1}]`, Limits{}, ReasonMalformed},
		{"SenML bad bver", `[{"bver":1.5,"n":"a","v":1}]`, Limits{}, ReasonWrongType},
		{"SenML zero bver", `[{"bver":0,"n":"a","v":1}]`, Limits{}, ReasonWrongType},
		{"SenML record not object", `[1]`, Limits{}, ReasonWrongType},
		{"SenML nested array", `[[{"n":"a","v":1}]]`, Limits{}, ReasonWrongType},
		{"SenML no value", `[{"n":"a"}]`, Limits{}, ReasonWrongType},
		{"SenML base only record", `[{"bn":"x:"},{"n":"a","v":1}]`, Limits{}, ReasonWrongType},
		{"SenML sum only", `[{"n":"a","s":1}]`, Limits{}, ReasonWrongType},
		{"SenML two values", `[{"n":"a","v":1,"vs":"x"}]`, Limits{}, ReasonWrongType},
		{"SenML three values", `[{"n":"a","v":1,"vs":"x","vb":true}]`, Limits{}, ReasonWrongType},
		{"SenML data value", `[{"n":"a","vd":"aGk"}]`, Limits{}, ReasonWrongType},
		{"SenML v string", `[{"n":"a","v":"1"}]`, Limits{}, ReasonWrongType},
		{"SenML v null", `[{"n":"a","v":null}]`, Limits{}, ReasonWrongType},
		{"SenML vs number", `[{"n":"a","vs":1}]`, Limits{}, ReasonWrongType},
		{"SenML vb string", `[{"n":"a","vb":"true"}]`, Limits{}, ReasonWrongType},
		{"SenML n number", `[{"n":1,"v":1}]`, Limits{}, ReasonWrongType},
		{"SenML u number", `[{"n":"a","u":1,"v":1}]`, Limits{}, ReasonWrongType},
		{"SenML t string", `[{"n":"a","t":"1","v":1}]`, Limits{}, ReasonWrongType},
		{"SenML v overflow", `[{"n":"a","v":1e400}]`, Limits{}, ReasonWrongType},
		{"SenML bv+v overflow", `[{"bv":1e308,"n":"a","v":1e308}]`, Limits{}, ReasonWrongType},
		{"SenML no name", `[{"v":1}]`, Limits{}, ReasonBadMetric},
		{"SenML control char name", `[{"n":"a\u0000","v":1}]`, Limits{}, ReasonBadMetric},
		{"SenML invalid UTF-8 name", "[{\"n\":\"\xff\",\"v\":1}]", Limits{}, ReasonBadMetric},
		{"SenML name too long", `[{"bn":"` + strings.Repeat("b", 100) + `","n":"` + strings.Repeat("n", 29) + `","v":1}]`, Limits{}, ReasonBadMetric},
		{"SenML repeated metric and time", `[{"n":"a","v":1},{"n":"a","v":2}]`, Limits{}, ReasonBadMetric},
		{"SenML repeated metric and time, many", `[` + strings.Repeat(`{"n":"x","t":1,"v":1},`, 19) + `{"n":"x","t":1,"v":1}]`, Limits{}, ReasonBadMetric},
		{"SenML t overflow", `[{"n":"a","t":1e400,"v":1}]`, Limits{}, ReasonBadTimestamp},
		{"SenML bt overflow", `[{"bt":-1e400,"n":"a","v":1}]`, Limits{}, ReasonBadTimestamp},
		{"SenML before epoch", `[{"n":"a","t":-1e10,"v":1}]`, Limits{}, ReasonBadTimestamp},
		{"SenML far past", `[{"n":"a","t":-1e300,"v":1}]`, Limits{}, ReasonBadTimestamp},
		{"SenML after 2262", `[{"n":"a","t":1e10,"v":1}]`, Limits{}, ReasonBadTimestamp},
		{"SenML string too long", `[{"n":"a","vs":"abcd"}]`, Limits{MaxStringLen: 3}, ReasonTooLarge},
		{"SenML invalid UTF-8 vs", "[{\"n\":\"a\",\"vs\":\"\xff\"}]", Limits{}, ReasonMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := DecodeTelemetry([]byte(tt.in), dev, now, tt.lim)
			if got := Reason(err); got != tt.want {
				t.Errorf("DecodeTelemetry(%.80q) = %v, %v; want reason %s", tt.in, fmtMessage(m), err, tt.want)
			}
			if err != nil && !errors.Is(err, ErrRefused) {
				t.Errorf("DecodeTelemetry(%.80q) error %v does not match ErrRefused", tt.in, err)
			}
		})
	}
}

func TestDecodeTelemetryUnknownDevice(t *testing.T) {
	in := `{"device_id":"gw-7","data":{"a":1}}`
	m, err := DecodeTelemetry([]byte(in), "", now, Limits{})
	if err != nil || m.Device != "gw-7" {
		t.Errorf("DecodeTelemetry(%s, device \"\") = %v, %v; want device gw-7", in, fmtMessage(m), err)
	}
	in = `{"data":{"a":1}}`
	m, err = DecodeTelemetry([]byte(in), "", now, Limits{})
	if err != nil || m.Device != "" {
		t.Errorf("DecodeTelemetry(%s, device \"\") = %v, %v; want device \"\"", in, fmtMessage(m), err)
	}
}

// TestDecodeTelemetryDoesNotRetainInput checks that the message does not
// alias the payload buffer, which the broker reuses.
func TestDecodeTelemetryDoesNotRetainInput(t *testing.T) {
	b := []byte(`{"device_id":"sensor-1","data":{"metric":"value"}}`)
	m, err := DecodeTelemetry(b, "", now, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 'X'
	}
	if m.Device != "sensor-1" || m.Points[0].Metric != "metric" || m.Points[0].Value.Str != "value" {
		t.Errorf("after overwriting the input, message = %v", fmtMessage(m))
	}
}

func TestDecodeTelemetryManyPoints(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"data":{`)
	for i := range 1000 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"m%d":%d`, i, i)
	}
	b.WriteString(`}}`)
	m, err := DecodeTelemetry([]byte(b.String()), dev, now, Limits{})
	if err != nil {
		t.Fatalf("DecodeTelemetry(1000 points) error %v", err)
	}
	if len(m.Points) != 1000 || m.Points[999].Metric != "m999" || m.Points[999].Value.Num != 999 {
		t.Errorf("DecodeTelemetry(1000 points) = %d points, last %v", len(m.Points), m.Points[len(m.Points)-1])
	}
}

func equalMessages(a, b *Message) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Device != b.Device || a.HasSeq != b.HasSeq || a.Seq != b.Seq || len(a.Points) != len(b.Points) {
		return false
	}
	for i, p := range a.Points {
		q := b.Points[i]
		if p.Metric != q.Metric || p.TS != q.TS || p.Value.Kind != q.Value.Kind || p.Value.Str != q.Value.Str ||
			math.Float64bits(p.Value.Num) != math.Float64bits(q.Value.Num) {
			return false
		}
	}
	return true
}

func fmtMessage(m *Message) string {
	if m == nil {
		return "<nil>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "{Device:%q", m.Device)
	if m.HasSeq {
		fmt.Fprintf(&b, " Seq:%d", m.Seq)
	}
	for _, p := range m.Points {
		fmt.Fprintf(&b, " %q@%s=%s:%v", p.Metric, time.Unix(0, p.TS).UTC().Format(time.RFC3339Nano), p.Value.Kind, p.Value.Any())
	}
	b.WriteString("}")
	return b.String()
}

func TestParseFloatMatchesStrconv(t *testing.T) {
	for _, s := range []string{"0", "-0", "1", "-1", "0.1", "21.53", "48.2", "0.0123", "-1.5", "123456789012345678",
		"9007199254740992", "9007199254740993", "0.30000000000000004", "1.7976931348623157", "12345.678901234567",
		"0.00000000000000001", "-0.000", "99999999999999999", "4.35", "1e5", "1E-5"} {
		want, _ := strconv.ParseFloat(s, 64)
		got, ok := parseFloat([]byte(s))
		if !ok || math.Float64bits(got) != math.Float64bits(want) {
			t.Errorf("parseFloat(%s) = %v, %v; want %v", s, got, ok, want)
		}
	}
}

func TestDecodeTelemetrySenMLSeries(t *testing.T) {
	// More than 16 points takes the sorting duplicate check.
	var b strings.Builder
	b.WriteString(`[{"bt":1795773600`)
	var want []Point
	for i := range 40 {
		if i > 0 {
			b.WriteString(`},{`)
		} else {
			b.WriteString(`,`)
		}
		fmt.Fprintf(&b, `"n":"m%d","t":%d,"v":%d`, i%3, i/3, i)
		want = append(want, num(fmt.Sprintf("m%d", i%3), 1795773600e9+int64(i/3)*1e9, float64(i)))
	}
	b.WriteString(`}]`)
	got, err := DecodeTelemetry([]byte(b.String()), dev, now, Limits{})
	if err != nil {
		t.Fatalf("DecodeTelemetry(%s) error %v", b.String(), err)
	}
	if w := msg(-1, want...); !equalMessages(got, w) {
		t.Errorf("DecodeTelemetry(%s) = %v; want %v", b.String(), fmtMessage(got), fmtMessage(w))
	}
}

// TestDecodeTelemetryConcurrent shares pooled decoders between goroutines;
// run it with -race.
func TestDecodeTelemetryConcurrent(t *testing.T) {
	inputs := []string{
		`{"seq":1,"data":{"a":1,"b":"x"}}`,
		`[{"bn":"p:","n":"a","v":2},{"n":"b","vs":"yy"}]`,
		`{"data":{"a":null}}`,
		`{"device_id":"sensor-1","data":{"n":{"a":true,"b":"zzz"}}}`,
	}
	want := make([]string, len(inputs))
	for i, in := range inputs {
		m, err := DecodeTelemetry([]byte(in), dev, now, Limits{})
		want[i] = fmt.Sprint(fmtMessage(m), err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for k := range 500 {
				i := (g + k) % len(inputs)
				m, err := DecodeTelemetry([]byte(inputs[i]), dev, now, Limits{})
				if got := fmt.Sprint(fmtMessage(m), err); got != want[i] {
					t.Errorf("DecodeTelemetry(%s) = %s; want %s", inputs[i], got, want[i])
					return
				}
			}
		})
	}
	wg.Wait()
}
