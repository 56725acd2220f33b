package payload

import (
	"hash/maphash"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// DecodeTelemetry decodes a telemetry payload published on
// devices/{device}/telemetry (DESIGN §3). The first byte other than JSON
// white space picks the form: '{' is the JSON object form, '[' is a SenML
// pack (RFC 8428, JSON). now is the receive time: it stamps points of a
// message without a timestamp and anchors SenML relative times.
//
// Every refusal is an *Error (errors.Is(err, ErrRefused) holds) whose Reason
// is one of the Reason constants. Common rules of both forms:
//
//   - The payload must be exactly one JSON value, optionally surrounded by
//     white space, in valid UTF-8, at most lim.MaxBytes long (too_large).
//     An empty or all-white-space payload is refused as empty; any other
//     top-level JSON value than an object or array is wrong_type.
//   - Strings must be valid JSON strings; a lone UTF-16 surrogate escape
//     such as "\ud800" is malformed (encoding/json would silently replace
//     it).
//   - A key repeated in one object is malformed when it has a meaning
//     (device_id, ts, seq, data; any SenML field); repeated unknown keys are
//     skipped like every unknown key. Two points with the same metric and
//     time are refused as bad_metric, whatever produced them.
//   - Metric names are 1..lim.MaxMetricLen bytes of valid UTF-8 without
//     control characters (C0, DEL, C1) — bad_metric otherwise.
//   - Values are finite numbers (a literal that overflows float64, such as
//     1e400, is wrong_type), booleans, or strings of at most
//     lim.MaxStringLen bytes (too_large); null and arrays are wrong_type.
//   - Times must fall after 1970-01-01T00:00:00Z and no later than
//     2262-04-11T23:47:16.854775807Z (int64 nanoseconds), else
//     bad_timestamp. There is no window around now: replays of old data are
//     accepted.
//   - A message has 1..lim.MaxPoints points: empty, too_many_points.
//
// The JSON object form is {"device_id": "…", "ts": …, "seq": n, "data":
// {"metric": value, …}}, all keys optional except that a message without
// data has no points (empty). Unknown top-level keys are ignored, so that
// devices may send newer fields to an older hub. device_id, when present,
// must be a string (wrong_type) equal to device (device_mismatch). ts is an
// RFC 3339 string (1 to 9 fraction digits, 'T', 't' or ' ' between date and
// time, 'Z', 'z' or ±hh:mm offset; no leap second 60), the same without an
// offset read as UTC (what Python's datetime.utcnow().isoformat() writes,
// with or without microseconds), or a JSON number of Unix epoch
// milliseconds, integer or fractional (exact to the nanosecond when written
// without an exponent; digits below the nanosecond are dropped). Without ts
// every point gets now. seq is a JSON integer 0..2^63-1 written without
// sign, fraction or exponent (wrong_type otherwise). data is an object
// (wrong_type otherwise); nested objects flatten with "." ({"a": {"b": 1}}
// is metric "a.b", as is {"a.b": 1}), down to lim.MaxDepth levels counting
// data itself (deeper is bad_metric); every key must be non-empty. Points
// keep payload order and all carry the message's time.
//
// The SenML form is an array of records. Supported fields: bn, bt, bu, bv,
// bver, n, u, v, vs, vb, s, t, ut. Base fields apply to their record and all
// later ones; the metric name is bn+n kept verbatim (a "urn:dev:mac:…:"
// prefix stays in the name) and checked like any metric name; bv is added to
// v. Each record must have exactly one of v, vs, vb (wrong_type otherwise);
// vd (binary data) is refused as wrong_type since fieldhub stores no binary
// values. Units (u, bu), sums (s, bs) and update times (ut) are checked for
// type and ignored. bver must be an integer 1..10; newer versions are
// malformed, since they may use features this decoder does not know (RFC
// 9100). An unknown field whose name ends in "_" is "must understand" and
// refused as malformed; other unknown fields are ignored. Times are seconds:
// the resolved time bt+t (0 when both are absent) is absolute when ≥ 2^28
// and otherwise relative to now (RFC 8428 §4.5.3). Points keep record order.
// Records told apart only by unit, as in some RFC 8428 examples, resolve to
// the same metric and time and are refused as repeated. SenML has no
// sequence number, so HasSeq is false; there is no device_id to check.
//
// Message.Device is device. When device is "" (the caller does not know
// it), it is the object form's device_id instead, or "".
//
// To keep allocations low, the metric names and string values of one
// message share one backing string: clone one (strings.Clone) to keep it
// without keeping the others. DecodeTelemetry does not retain b and is safe
// for concurrent use.
func DecodeTelemetry(b []byte, device string, now time.Time, lim Limits) (*Message, error) {
	lim = lim.WithDefaults()
	if len(b) > lim.MaxBytes {
		return nil, refuse(ReasonTooLarge, "%d bytes, at most %d", len(b), lim.MaxBytes)
	}
	d := decoders.Get().(*decoder)
	defer d.release()
	d.reset(b, lim, now)
	d.ws()
	var err error
	switch d.peek() {
	case '{':
		if err = d.object(device); err == nil {
			err = d.end()
		}
	case '[':
		err = d.senml()
	case 0:
		if d.i >= len(d.b) {
			return nil, refuse(ReasonEmpty, "no payload")
		}
		return nil, d.malformed("unexpected byte")
	default:
		if err := d.skipValue(0); err != nil {
			return nil, err
		}
		if err := d.end(); err != nil {
			return nil, err
		}
		return nil, refuse(ReasonWrongType, "payload is a JSON %s, want an object or a SenML array", jsonKind(b[skipWS(b)]))
	}
	if err != nil {
		return nil, err
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	return d.message(device), nil
}

// decoder is the reusable state of one DecodeTelemetry call.
type decoder struct {
	b   []byte
	i   int
	lim Limits
	now int64 // Unix nanoseconds

	str    []byte // the last unescaped string
	path   []byte // the flattened key prefix (object form) or base name (SenML)
	name   []byte // a SenML record's n
	bn     []byte // a SenML record's bn, then its resolved name
	vs     []byte // a SenML record's vs
	strs   []byte // output names and string values, joined
	dev    [2]int // device_id in strs, when kept
	seqN   uint64
	hasSeq bool
	leaves []leaf
	table  []int32 // the duplicate check's hash set

	// batch is set while decoding a gateway batch: the object form also
	// reads a "device" key, and leaves[base:] are the current reading's.
	batch bool
	base  int
	rds   []reading // a batch's readings so far
}

// leaf is a decoded point whose strings are offsets into decoder.strs.
type leaf struct {
	name, nameEnd int
	str, strEnd   int
	ts            int64
	num           float64
	kind          ValueKind
}

var decoders = sync.Pool{New: func() any { return new(decoder) }}

// maxPooled bounds the scratch a pooled decoder keeps, so that one huge
// message does not pin its buffers forever.
const maxPooled = 256 << 10

func (d *decoder) reset(b []byte, lim Limits, now time.Time) {
	d.b, d.i, d.lim, d.now = b, 0, lim, now.UnixNano()
	d.path = d.path[:0]
	d.strs = d.strs[:0]
	d.leaves = d.leaves[:0]
	d.dev = [2]int{-1, -1}
	d.seqN, d.hasSeq = 0, false
	d.batch, d.base = false, 0
	d.rds = d.rds[:0]
}

func (d *decoder) release() {
	d.b = nil
	if cap(d.strs)+cap(d.str)+cap(d.leaves)*64+cap(d.table)*4+cap(d.rds)*48 > maxPooled {
		return
	}
	decoders.Put(d)
}

// message builds the output from the leaves.
func (d *decoder) message(device string) *Message {
	s := string(d.strs) // the one allocation for every string of the message
	m := newMessage(len(d.leaves))
	m.Device = device
	m.Seq, m.HasSeq = d.seqN, d.hasSeq
	if device == "" && d.dev[0] >= 0 {
		m.Device = s[d.dev[0]:d.dev[1]]
	}
	for i := range d.leaves {
		l := &d.leaves[i]
		p := &m.Points[i]
		p.Metric = s[l.name:l.nameEnd]
		p.TS = l.ts
		p.Value = Value{Kind: l.kind, Num: l.num}
		if l.kind == String {
			p.Value.Str = s[l.str:l.strEnd]
		}
	}
	return m
}

// Small messages are allocated together with their points: one allocation
// instead of two on the hot path.
type (
	message2 struct {
		m Message
		p [2]Point
	}
	message4 struct {
		m Message
		p [4]Point
	}
	message8 struct {
		m Message
		p [8]Point
	}
)

func newMessage(n int) *Message {
	switch {
	case n <= 2:
		x := new(message2)
		x.m.Points = x.p[:n:n]
		return &x.m
	case n <= 4:
		x := new(message4)
		x.m.Points = x.p[:n:n]
		return &x.m
	case n <= 8:
		x := new(message8)
		x.m.Points = x.p[:n:n]
		return &x.m
	}
	return &Message{Points: make([]Point, n)}
}

// finish checks the point count and refuses repeated (metric, time) pairs
// among the current message's leaves, d.leaves[d.base:].
func (d *decoder) finish() error {
	leaves := d.leaves[d.base:]
	n := len(leaves)
	if n == 0 {
		return refuse(ReasonEmpty, "no points")
	}
	name := func(l *leaf) []byte { return d.strs[l.name:l.nameEnd] }
	if n <= 16 {
		for i := 1; i < n; i++ {
			for j := range i {
				a, b := &leaves[i], &leaves[j]
				if a.ts == b.ts && string(name(a)) == string(name(b)) {
					return refuse(ReasonBadMetric, "metric %q repeated", clip(name(a)))
				}
			}
		}
		return nil
	}
	// Larger messages: an open-addressing hash set of leaf indexes, sized
	// to a power of two at least twice n. The seed is random, so crafted
	// names cannot force collisions.
	size := 32
	for size < 2*n {
		size <<= 1
	}
	d.table = slices.Grow(d.table[:0], size)[:size]
	for i := range d.table {
		d.table[i] = -1
	}
	mask := uint64(size - 1)
	for i := range leaves {
		l := &leaves[i]
		h := maphash.Bytes(hashSeed, name(l)) ^ uint64(l.ts)*0x9e3779b97f4a7c15
		for j := h & mask; ; j = (j + 1) & mask {
			k := d.table[j]
			if k < 0 {
				d.table[j] = int32(i)
				break
			}
			if o := &leaves[k]; o.ts == l.ts && string(name(o)) == string(name(l)) {
				return refuse(ReasonBadMetric, "metric %q repeated", clip(name(l)))
			}
		}
	}
	return nil
}

var hashSeed = maphash.MakeSeed()

// addLeaf appends a point named d.path (already checked key by key) and
// returns it for the caller to fill in.
func (d *decoder) addLeaf(name []byte) (*leaf, error) {
	if len(d.leaves)-d.base >= d.lim.MaxPoints {
		return nil, refuse(ReasonTooManyPoints, "more than %d points", d.lim.MaxPoints)
	}
	if len(name) > d.lim.MaxMetricLen {
		return nil, refuse(ReasonBadMetric, "metric %q is %d bytes, at most %d", clip(name), len(name), d.lim.MaxMetricLen)
	}
	start := len(d.strs)
	d.strs = append(d.strs, name...)
	d.leaves = append(d.leaves, leaf{name: start, nameEnd: len(d.strs)})
	return &d.leaves[len(d.leaves)-1], nil
}

// setString makes l a string value.
func (d *decoder) setString(l *leaf, s []byte, high bool) error {
	if high && !utf8.Valid(s) {
		return d.malformed("invalid UTF-8 in string")
	}
	if len(s) > d.lim.MaxStringLen {
		return refuse(ReasonTooLarge, "string value of metric %q is %d bytes, at most %d",
			clip(d.strs[l.name:l.nameEnd]), len(s), d.lim.MaxStringLen)
	}
	l.kind = String
	l.str = len(d.strs)
	d.strs = append(d.strs, s...)
	l.strEnd = len(d.strs)
	return nil
}

// checkName refuses an empty name, control characters and invalid UTF-8.
func checkName(s []byte, high bool) error {
	if len(s) == 0 {
		return refuse(ReasonBadMetric, "empty metric name")
	}
	if !high {
		for _, c := range s {
			if c < 0x20 || c == 0x7f {
				return refuse(ReasonBadMetric, "control character in metric %q", clip(s))
			}
		}
		return nil
	}
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRune(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			return refuse(ReasonBadMetric, "invalid UTF-8 in metric %q", clip(s))
		case r < 0x20, r >= 0x7f && r <= 0x9f:
			return refuse(ReasonBadMetric, "control character in metric %q", clip(s))
		}
		i += n
	}
	return nil
}

// clip shortens s for an error message.
func clip(s []byte) string {
	const max = 64
	if len(s) > max {
		return string(s[:max]) + "…"
	}
	return string(s)
}

// --- the JSON scanner shared by both forms ---

// maxSkipDepth bounds the nesting of ignored values.
const maxSkipDepth = 64

func (d *decoder) malformed(what string) error {
	return refuse(ReasonMalformed, "%s at offset %d", what, d.i)
}

// peek returns the byte at d.i, or 0 at the end of input.
func (d *decoder) peek() byte {
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

// ws skips JSON white space.
func (d *decoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func skipWS(b []byte) int {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// end refuses anything but white space after the top-level value.
func (d *decoder) end() error {
	d.ws()
	if d.i != len(d.b) {
		return d.malformed("data after the JSON value")
	}
	return nil
}

// colon consumes white space, ':' and white space.
func (d *decoder) colon() error {
	d.ws()
	if d.peek() != ':' {
		return d.malformed("expected ':'")
	}
	d.i++
	d.ws()
	return nil
}

// next consumes the separator after an object member or array element: it
// returns true after a ',' (with white space skipped) and false after the
// closing byte.
func (d *decoder) next(closing byte) (more bool, err error) {
	d.ws()
	switch d.peek() {
	case ',':
		d.i++
		d.ws()
		return true, nil
	case closing:
		d.i++
		return false, nil
	}
	return false, d.malformed("expected ',' or '" + string(closing) + "'")
}

// key reads an object key and the ':' after it. s is valid until the next
// string is read.
func (d *decoder) key() (s []byte, high bool, err error) {
	if d.peek() != '"' {
		return nil, false, d.malformed("expected a string key")
	}
	if s, high, err = d.readString(); err != nil {
		return nil, false, err
	}
	return s, high, d.colon()
}

// readString reads the JSON string at d.i, which must be '"'. It returns the
// unescaped bytes, aliasing the input or d.str (valid until the next call),
// and whether any byte is ≥ 0x80 (the caller checks UTF-8 then).
func (d *decoder) readString() (s []byte, high bool, err error) {
	b := d.b
	start := d.i + 1
	i := start
	for ; i < len(b); i++ {
		c := b[i]
		if c == '"' {
			d.i = i + 1
			return b[start:i], high, nil
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			d.i = i
			return nil, false, d.malformed("control character in string")
		}
		if c >= 0x80 {
			high = true
		}
	}
	d.str = append(d.str[:0], b[start:i]...)
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			d.i = i + 1
			return d.str, high, nil
		case c < 0x20:
			d.i = i
			return nil, false, d.malformed("control character in string")
		case c != '\\':
			if c >= 0x80 {
				high = true
			}
			d.str = append(d.str, c)
			i++
			continue
		}
		if i+1 >= len(b) {
			break
		}
		switch e := b[i+1]; e {
		case '"', '\\', '/':
			d.str = append(d.str, e)
		case 'b':
			d.str = append(d.str, '\b')
		case 'f':
			d.str = append(d.str, '\f')
		case 'n':
			d.str = append(d.str, '\n')
		case 'r':
			d.str = append(d.str, '\r')
		case 't':
			d.str = append(d.str, '\t')
		case 'u':
			r := hex4(b[i+2:])
			if r < 0 {
				d.i = i
				return nil, false, d.malformed("invalid \\u escape")
			}
			i += 6
			if r >= 0xd800 && r < 0xe000 {
				var r2 rune = -1
				if r < 0xdc00 && i+1 < len(b) && b[i] == '\\' && b[i+1] == 'u' {
					r2 = hex4(b[i+2:])
				}
				if r2 < 0xdc00 || r2 >= 0xe000 {
					d.i = i
					return nil, false, d.malformed("lone UTF-16 surrogate in string")
				}
				r = 0x10000 + (r-0xd800)<<10 + (r2 - 0xdc00)
				i += 6
			}
			if r >= 0x80 {
				high = true
			}
			d.str = utf8.AppendRune(d.str, r)
			continue
		default:
			d.i = i
			return nil, false, d.malformed("invalid escape in string")
		}
		i += 2
	}
	d.i = len(b)
	return nil, false, d.malformed("unterminated string")
}

// hex4 decodes four hex digits, or returns -1.
func hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// Number literal shapes reported by scanNumber.
const (
	numNeg  = 1 << iota // leading '-'
	numFrac             // has a fraction
	numExp              // has an exponent
)

// scanNumber checks the JSON number at d.i and returns its literal.
func (d *decoder) scanNumber() (lit []byte, shape int, err error) {
	b, i := d.b, d.i
	start := i
	if i < len(b) && b[i] == '-' {
		shape |= numNeg
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i++; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		}
	default:
		d.i = i
		return nil, 0, d.malformed("invalid number")
	}
	if i < len(b) && b[i] == '.' {
		shape |= numFrac
		i++
		j := i
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		}
		if i == j {
			d.i = i
			return nil, 0, d.malformed("invalid number")
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		shape |= numExp
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := i
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		}
		if i == j {
			d.i = i
			return nil, 0, d.malformed("invalid number")
		}
	}
	d.i = i
	return b[start:i], shape, nil
}

// pow10 holds the powers of ten that float64 represents exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
	1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// parseFloat converts a literal checked by scanNumber. ok is false when it
// overflows float64.
func parseFloat(lit []byte) (f float64, ok bool) {
	// Fast path for the common short decimal without exponent: an exact
	// integer divided by an exact power of ten is correctly rounded, so
	// the result is the one strconv.ParseFloat gives (Clinger's fast path).
	if len(lit) <= 18 {
		var mant uint64
		frac, neg, fast := -1, false, true
		for _, c := range lit {
			switch {
			case c >= '0' && c <= '9':
				mant = mant*10 + uint64(c-'0')
				if frac >= 0 {
					frac++
				}
			case c == '.':
				frac = 0
			case c == '-':
				neg = true
			default:
				fast = false
			}
		}
		if fast && mant < 1<<53 {
			f = float64(mant)
			if frac > 0 {
				f /= pow10[frac]
			}
			if neg {
				f = -f
			}
			return f, true
		}
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	return f, err == nil || !math.IsInf(f, 0)
}

// number reads a JSON number value.
func (d *decoder) number() (float64, error) {
	lit, _, err := d.scanNumber()
	if err != nil {
		return 0, err
	}
	f, ok := parseFloat(lit)
	if !ok {
		return 0, refuse(ReasonWrongType, "number %s out of range", clip(lit))
	}
	return f, nil
}

// literal consumes the literal word (true, false, null) at d.i.
func (d *decoder) literal(word string) error {
	if len(d.b)-d.i < len(word) || string(d.b[d.i:d.i+len(word)]) != word {
		return d.malformed("invalid literal")
	}
	d.i += len(word)
	return nil
}

// boolean reads true or false.
func (d *decoder) boolean() (bool, error) {
	if d.peek() == 't' {
		return true, d.literal("true")
	}
	return false, d.literal("false")
}

// skipValue checks and skips any JSON value; depth is its nesting.
func (d *decoder) skipValue(depth int) error {
	switch c := d.peek(); c {
	case '{', '[':
		if depth >= maxSkipDepth {
			return d.malformed("JSON nested too deep")
		}
		d.i++
		d.ws()
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		if d.peek() == closing {
			d.i++
			return nil
		}
		for {
			if c == '{' {
				s, high, err := d.key()
				if err != nil {
					return err
				}
				if high && !utf8.Valid(s) {
					return d.malformed("invalid UTF-8 in string")
				}
			}
			if err := d.skipValue(depth + 1); err != nil {
				return err
			}
			more, err := d.next(closing)
			if err != nil || !more {
				return err
			}
		}
	case '"':
		s, high, err := d.readString()
		if err == nil && high && !utf8.Valid(s) {
			err = d.malformed("invalid UTF-8 in string")
		}
		return err
	case 't':
		return d.literal("true")
	case 'f':
		return d.literal("false")
	case 'n':
		return d.literal("null")
	default:
		_, _, err := d.scanNumber()
		return err
	}
}

// jsonKind names the JSON type starting with c.
func jsonKind(c byte) string {
	switch c {
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	case '[':
		return "array"
	case '{':
		return "object"
	}
	return "number"
}
