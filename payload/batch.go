package payload

import (
	"bytes"
	"compress/gzip"
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/fieldhub/fieldhub/topic"
)

// Batch is what an edge gateway publishes on devices/{gateway}/batch: the
// readings and alerts of the devices behind it.
type Batch struct {
	// Messages are the readings, in payload order; each Message.Device is
	// the reading's device.
	Messages []*Message
	// Alerts are the alerts, in payload order.
	Alerts []Alert
}

// Alert is one alert of one device (DESIGN §3 devices/{id}/alerts).
type Alert struct {
	Device   string
	TS       int64 // Unix nanoseconds; the receive time when the payload has none
	Metric   string
	Value    float64 // 0 when the payload has none
	Rule     string
	Severity string // SeverityInfo, SeverityWarning or SeverityCritical
	Message  string
	State    string // StateRaised or StateCleared
}

// Alert severities and states. A payload without severity is a warning;
// one without state is raised.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"

	StateRaised  = "raised"
	StateCleared = "cleared"
)

// Bounds of alert fields.
const (
	// MaxRuleLen bounds an alert's rule, in bytes.
	MaxRuleLen = 64
	// MaxAlertMessageLen bounds an alert's message, in bytes.
	MaxAlertMessageLen = 1024
)

// BatchLimits bound what DecodeBatch accepts. The zero value means the
// defaults.
type BatchLimits struct {
	MaxBytes    int // the JSON after decompression; default 8 MiB
	MaxReadings int // readings per batch; default 10,000
	MaxAlerts   int // alerts per batch; default 1,000
	MaxPoints   int // points of all readings together; default 100,000
	// Reading bounds each reading as a telemetry message (its MaxBytes is
	// the reading object's length); zero fields mean the Limits defaults.
	Reading Limits
}

// Default batch limits.
const (
	DefaultBatchMaxBytes    = 8 << 20
	DefaultBatchMaxReadings = 10000
	DefaultBatchMaxAlerts   = 1000
	DefaultBatchMaxPoints   = 100000
)

// WithDefaults returns l with zero fields set to their defaults.
func (l BatchLimits) WithDefaults() BatchLimits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultBatchMaxBytes
	}
	if l.MaxReadings <= 0 {
		l.MaxReadings = DefaultBatchMaxReadings
	}
	if l.MaxAlerts <= 0 {
		l.MaxAlerts = DefaultBatchMaxAlerts
	}
	if l.MaxPoints <= 0 {
		l.MaxPoints = DefaultBatchMaxPoints
	}
	l.Reading = l.Reading.WithDefaults()
	return l
}

// gzipMagic starts every gzip stream (RFC 1952).
var gzipMagic = []byte{0x1f, 0x8b}

// IsGzip reports whether b starts with the gzip magic bytes, which is how
// DecodeBatch tells a compressed batch from plain JSON (which never starts
// with 0x1f).
func IsGzip(b []byte) bool { return bytes.HasPrefix(b, gzipMagic) }

// DecodeBatch decodes a gateway batch published on devices/{gateway}/batch:
//
//	{"readings": [{"device": "child-1", "seq": 17, "ts": "…", "data": {"temperature": 21.5}}, …],
//	 "alerts":   [{"device": "child-1", "ts": …, "metric": "temperature", "value": 93.2,
//	               "rule": "threshold_above", "severity": "critical", "message": "…", "state": "raised"}, …]}
//
// optionally gzip-compressed: a payload starting with the gzip magic bytes
// 0x1f 0x8b is decompressed first (several concatenated members are read as
// one stream). Both keys are optional but a batch with neither readings nor
// alerts is refused as empty; other top-level keys are ignored.
//
// Each reading is a DESIGN §3 telemetry object with the rules and limits
// of DecodeTelemetry (lim.Reading), plus a required "device": a valid
// device id (malformed when missing or invalid, wrong_type when not a
// string). "device_id" is accepted in its place; when both are present they
// must be equal (device_mismatch). Each alert follows DecodeAlert's rules
// and also needs a "device". A refusal of any reading or alert refuses the
// whole batch; its message names the element ("readings[3]: …").
//
// Limits: lim.MaxBytes of JSON, compressed or not (too_large; decompression
// stops there, so a small zip bomb costs at most that much memory),
// lim.MaxReadings readings and lim.MaxPoints points in all (too_many_points),
// lim.MaxAlerts alerts (too_large). A gzip stream that is corrupt or cut
// short is malformed.
//
// The Messages share a few allocations: every name and string of the batch
// lives in one backing string, and the Messages and Points in one array
// each. DecodeBatch does not retain b and is safe for concurrent use.
func DecodeBatch(b []byte, now time.Time, lim BatchLimits) (*Batch, error) {
	lim = lim.WithDefaults()
	if IsGzip(b) {
		buf := inflaters.Get().(*inflater)
		defer buf.release()
		var err error
		if b, err = buf.inflate(b, lim.MaxBytes); err != nil {
			return nil, err
		}
	} else if len(b) > lim.MaxBytes {
		return nil, refuse(ReasonTooLarge, "%d bytes, at most %d", len(b), lim.MaxBytes)
	}
	d := decoders.Get().(*decoder)
	defer d.release()
	d.reset(b, lim.Reading, now)
	d.batch = true
	bd := batchDecoder{d: d, lim: lim}
	return bd.decode()
}

// batchDecoder is the state of one DecodeBatch call.
type batchDecoder struct {
	d      *decoder
	lim    BatchLimits
	alerts []Alert
}

// reading is a decoded reading: its leaves and device in the decoder.
type reading struct {
	from, to int    // d.leaves[from:to]
	dev      [2]int // in d.strs
	seq      uint64
	hasSeq   bool
}

// Top-level keys of a batch, as bits for duplicate detection.
const (
	keyReadings = 1 << iota
	keyAlerts
)

func (bd *batchDecoder) decode() (*Batch, error) {
	d := bd.d
	d.ws()
	switch c := d.peek(); {
	case c == 0 && d.i >= len(d.b):
		return nil, refuse(ReasonEmpty, "no payload")
	case c != '{':
		if err := d.skipValue(0); err != nil {
			return nil, err
		}
		if err := d.end(); err != nil {
			return nil, err
		}
		return nil, refuse(ReasonWrongType, "batch is a JSON %s, want an object", jsonKind(c))
	}
	d.i++
	d.ws()
	seen := 0
	more := true
	if d.peek() == '}' {
		d.i++
		more = false
	}
	for more {
		k, high, err := d.key()
		if err != nil {
			return nil, err
		}
		bit := 0
		switch string(k) {
		case "readings":
			bit = keyReadings
		case "alerts":
			bit = keyAlerts
		default:
			if high && !utf8.Valid(k) {
				return nil, d.malformed("invalid UTF-8 in key")
			}
			if err := d.skipValue(1); err != nil {
				return nil, err
			}
		}
		if bit != 0 {
			if seen&bit != 0 {
				return nil, d.malformed("repeated key \"" + string(k) + "\"")
			}
			seen |= bit
			name := "readings"
			elem := bd.reading
			if bit == keyAlerts {
				name, elem = "alerts", bd.alert
			}
			if err := bd.array(name, elem); err != nil {
				return nil, err
			}
		}
		if more, err = d.next('}'); err != nil {
			return nil, err
		}
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	if len(bd.d.rds) == 0 && len(bd.alerts) == 0 {
		return nil, refuse(ReasonEmpty, "no readings and no alerts")
	}
	return bd.build(), nil
}

// array reads the JSON array of objects at d.i, calling elem at each '{'.
func (bd *batchDecoder) array(name string, elem func(i int) error) error {
	d := bd.d
	if d.peek() != '[' {
		c := d.peek()
		if err := d.skipValue(1); err != nil {
			return err
		}
		return refuse(ReasonWrongType, "%s is a JSON %s, want an array", name, jsonKind(c))
	}
	d.i++
	d.ws()
	if d.peek() == ']' {
		d.i++
		return nil
	}
	for i := 0; ; i++ {
		if c := d.peek(); c != '{' {
			if err := d.skipValue(2); err != nil {
				return err
			}
			return refuse(ReasonWrongType, "%s[%d] is a JSON %s, want an object", name, i, jsonKind(c))
		}
		if err := elem(i); err != nil {
			if e, ok := err.(*Error); ok {
				return &Error{Reason: e.Reason, Msg: name + "[" + strconv.Itoa(i) + "]: " + e.Msg}
			}
			return err
		}
		more, err := d.next(']')
		if err != nil || !more {
			return err
		}
	}
}

// reading decodes one reading object at d.i.
func (bd *batchDecoder) reading(int) error {
	d := bd.d
	if len(bd.d.rds) >= bd.lim.MaxReadings {
		return refuse(ReasonTooManyPoints, "more than %d readings", bd.lim.MaxReadings)
	}
	start := d.i
	d.base = len(d.leaves)
	d.path = d.path[:0]
	d.dev = [2]int{-1, -1}
	d.seqN, d.hasSeq = 0, false
	if err := d.object(""); err != nil {
		return err
	}
	if n := d.i - start; n > d.lim.MaxBytes {
		return refuse(ReasonTooLarge, "reading is %d bytes, at most %d", n, d.lim.MaxBytes)
	}
	if err := d.finish(); err != nil {
		return err
	}
	if d.dev[0] < 0 {
		return refuse(ReasonMalformed, "reading has no device")
	}
	if dev := d.strs[d.dev[0]:d.dev[1]]; !topic.ValidDeviceID(string(dev)) {
		return refuse(ReasonMalformed, "device %q is not a valid device id", clip(dev))
	}
	if len(d.leaves) > bd.lim.MaxPoints {
		return refuse(ReasonTooManyPoints, "more than %d points in the batch", bd.lim.MaxPoints)
	}
	d.rds = append(d.rds, reading{from: d.base, to: len(d.leaves), dev: d.dev, seq: d.seqN, hasSeq: d.hasSeq})
	return nil
}

// alert decodes one alert object at d.i.
func (bd *batchDecoder) alert(int) error {
	if len(bd.alerts) >= bd.lim.MaxAlerts {
		return refuse(ReasonTooLarge, "more than %d alerts", bd.lim.MaxAlerts)
	}
	var a Alert
	if err := bd.d.alert(&a, ""); err != nil {
		return err
	}
	bd.alerts = append(bd.alerts, a)
	return nil
}

// build makes the Batch: one string for every name and string value, one
// array of Messages, one of Points.
func (bd *batchDecoder) build() *Batch {
	d := bd.d
	s := string(d.strs)
	out := &Batch{Alerts: bd.alerts}
	if len(bd.d.rds) == 0 {
		return out
	}
	msgs := make([]Message, len(bd.d.rds))
	ptrs := make([]*Message, len(bd.d.rds))
	points := make([]Point, len(d.leaves))
	for i, r := range d.rds {
		m := &msgs[i]
		m.Device = s[r.dev[0]:r.dev[1]]
		m.Seq, m.HasSeq = r.seq, r.hasSeq
		m.Points = points[r.from:r.to:r.to]
		for j := r.from; j < r.to; j++ {
			l := &d.leaves[j]
			p := &points[j]
			p.Metric = s[l.name:l.nameEnd]
			p.TS = l.ts
			p.Value = Value{Kind: l.kind, Num: l.num}
			if l.kind == String {
				p.Value.Str = s[l.str:l.strEnd]
			}
		}
		ptrs[i] = m
	}
	out.Messages = ptrs
	return out
}

// DecodeAlert decodes an alert published by device on devices/{id}/alerts
// (DESIGN §3):
//
//	{"ts": "…", "metric": "temperature", "value": 93.2, "rule": "threshold_above",
//	 "severity": "critical", "message": "temperature 93.2 above 90", "state": "raised"}
//
// At most DefaultMaxBytes long (too_large), one JSON object (wrong_type
// otherwise). Every key is optional, but an alert needs a metric, a rule or
// a non-empty message (empty otherwise); unknown keys are ignored.
//
//   - ts: as in telemetry (RFC 3339, ISO 8601 without offset as UTC, or
//     Unix epoch milliseconds); the receive time now when missing.
//   - metric: a metric name, checked like telemetry metric names (bad_metric).
//   - value: a finite number, or null for none (wrong_type otherwise).
//   - rule: 1..MaxRuleLen bytes of text without control characters.
//   - severity: "info", "warning" or "critical"; default "warning".
//   - message: at most MaxAlertMessageLen bytes of text (too_large).
//   - state: "raised" or "cleared"; default "raised".
//   - device or device_id: when present, must be device (device_mismatch).
//
// A string field of another JSON type, or a rule, severity or state outside
// the rules above, is wrong_type.
func DecodeAlert(b []byte, device string, now time.Time) (*Alert, error) {
	if len(b) > DefaultMaxBytes {
		return nil, refuse(ReasonTooLarge, "%d bytes, at most %d", len(b), DefaultMaxBytes)
	}
	d := decoders.Get().(*decoder)
	defer d.release()
	d.reset(b, Limits{}.WithDefaults(), now)
	d.ws()
	switch c := d.peek(); {
	case c == 0 && d.i >= len(d.b):
		return nil, refuse(ReasonEmpty, "no payload")
	case c != '{':
		if err := d.skipValue(0); err != nil {
			return nil, err
		}
		if err := d.end(); err != nil {
			return nil, err
		}
		return nil, refuse(ReasonWrongType, "alert is a JSON %s, want an object", jsonKind(c))
	}
	a := new(Alert)
	if err := d.alert(a, device); err != nil {
		return nil, err
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return a, nil
}

// Keys of an alert object, as bits for duplicate detection.
const (
	akDevice = 1 << iota
	akDeviceID
	akTS
	akMetric
	akValue
	akRule
	akSeverity
	akMessage
	akState
)

// alert decodes the alert object at d.i into a. device is the topic's
// device, or "" in a batch, where the alert must name its own.
func (d *decoder) alert(a *Alert, device string) error {
	d.i++
	d.ws()
	seen := 0
	hasTS := false
	more := true
	if d.peek() == '}' {
		d.i++
		more = false
	}
	for more {
		k, high, err := d.key()
		if err != nil {
			return err
		}
		bit := 0
		switch string(k) {
		case "device":
			bit = akDevice
		case "device_id":
			bit = akDeviceID
		case "ts":
			bit = akTS
		case "metric":
			bit = akMetric
		case "value":
			bit = akValue
		case "rule":
			bit = akRule
		case "severity":
			bit = akSeverity
		case "message":
			bit = akMessage
		case "state":
			bit = akState
		default:
			if high && !utf8.Valid(k) {
				return d.malformed("invalid UTF-8 in key")
			}
			if err := d.skipValue(1); err != nil {
				return err
			}
		}
		if bit != 0 {
			if seen&bit != 0 {
				return d.malformed("repeated key \"" + string(k) + "\"")
			}
			seen |= bit
			if err := d.alertField(a, bit, device); err != nil {
				return err
			}
			hasTS = hasTS || bit == akTS
		}
		if more, err = d.next('}'); err != nil {
			return err
		}
	}
	if device != "" {
		a.Device = device
	} else if a.Device == "" {
		return refuse(ReasonMalformed, "alert has no device")
	}
	if !hasTS {
		a.TS = d.now
	}
	if a.Metric == "" && a.Rule == "" && a.Message == "" {
		return refuse(ReasonEmpty, "an alert needs a metric, a rule or a message")
	}
	if a.Severity == "" {
		a.Severity = SeverityWarning
	}
	if a.State == "" {
		a.State = StateRaised
	}
	return nil
}

// alertField reads the value of one alert key.
func (d *decoder) alertField(a *Alert, bit int, device string) error {
	switch bit {
	case akTS:
		ts, err := d.ts()
		a.TS = ts
		return err
	case akValue:
		switch c := d.peek(); {
		case c == 'n':
			return d.literal("null")
		case c == '-' || c >= '0' && c <= '9':
			f, err := d.number()
			a.Value = f
			return err
		default:
			if err := d.skipValue(1); err != nil {
				return err
			}
			return refuse(ReasonWrongType, "value is a JSON %s, want a number", jsonKind(c))
		}
	}
	name := alertKeyName(bit)
	if c := d.peek(); c != '"' {
		if err := d.skipValue(1); err != nil {
			return err
		}
		return refuse(ReasonWrongType, "%s is a JSON %s, want a string", name, jsonKind(c))
	}
	s, high, err := d.readString()
	if err != nil {
		return err
	}
	if high && !utf8.Valid(s) {
		return d.malformed("invalid UTF-8 in string")
	}
	switch bit {
	case akDevice, akDeviceID:
		if !topic.ValidDeviceID(string(s)) {
			if device != "" {
				return refuse(ReasonDeviceMismatch, "%s %q, topic device %q", name, clip(s), device)
			}
			return refuse(ReasonMalformed, "%s %q is not a valid device id", name, clip(s))
		}
		switch {
		case device != "" && string(s) != device:
			return refuse(ReasonDeviceMismatch, "%s %q, topic device %q", name, clip(s), device)
		case a.Device != "" && string(s) != a.Device:
			return refuse(ReasonDeviceMismatch, "device %q and device_id %q differ", a.Device, clip(s))
		case a.Device == "":
			a.Device = string(s)
		}
	case akMetric:
		if err := checkName(s, high); err != nil {
			return err
		}
		if len(s) > d.lim.MaxMetricLen {
			return refuse(ReasonBadMetric, "metric %q is %d bytes, at most %d", clip(s), len(s), d.lim.MaxMetricLen)
		}
		a.Metric = string(s)
	case akRule:
		if len(s) == 0 || len(s) > MaxRuleLen || checkName(s, high) != nil {
			return refuse(ReasonWrongType, "rule %q is not 1..%d bytes of text", clip(s), MaxRuleLen)
		}
		a.Rule = string(s)
	case akSeverity:
		switch string(s) {
		case SeverityInfo:
			a.Severity = SeverityInfo
		case SeverityWarning:
			a.Severity = SeverityWarning
		case SeverityCritical:
			a.Severity = SeverityCritical
		default:
			return refuse(ReasonWrongType, "severity %q is not info, warning or critical", clip(s))
		}
	case akState:
		switch string(s) {
		case StateRaised:
			a.State = StateRaised
		case StateCleared:
			a.State = StateCleared
		default:
			return refuse(ReasonWrongType, "state %q is not raised or cleared", clip(s))
		}
	case akMessage:
		if len(s) > MaxAlertMessageLen {
			return refuse(ReasonTooLarge, "message is %d bytes, at most %d", len(s), MaxAlertMessageLen)
		}
		a.Message = string(s)
	}
	return nil
}

func alertKeyName(bit int) string {
	switch bit {
	case akDevice:
		return "device"
	case akDeviceID:
		return "device_id"
	case akMetric:
		return "metric"
	case akRule:
		return "rule"
	case akSeverity:
		return "severity"
	case akMessage:
		return "message"
	case akState:
		return "state"
	}
	return "field"
}

// EncodeBatch encodes b in the form DecodeBatch reads, gzip-compressed
// (at gzip.BestSpeed) when compress is set. Each reading is written as
// {"device","seq","ts","data"} with the time of its first point, as
// EncodeTelemetry does: split a message whose points differ in time. An
// alert's empty strings and zero time are left out (so they decode to the
// defaults); a NaN or infinite value is written as null.
func EncodeBatch(b *Batch, compress bool) []byte {
	n := 32
	for _, m := range b.Messages {
		n += 64 + 32*len(m.Points)
	}
	n += 192 * len(b.Alerts)
	dst := make([]byte, 0, n)
	dst = append(dst, `{"readings":[`...)
	for i, m := range b.Messages {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendObject(dst, m, true, `"device":`)
	}
	dst = append(dst, `],"alerts":[`...)
	for i := range b.Alerts {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendAlert(dst, &b.Alerts[i])
	}
	dst = append(dst, "]}"...)
	if !compress {
		return dst
	}
	var out bytes.Buffer
	out.Grow(len(dst)/4 + 64)
	zw, _ := gzip.NewWriterLevel(&out, gzip.BestSpeed) // the level is valid
	zw.Write(dst)                                      // a bytes.Buffer does not fail
	zw.Close()
	return out.Bytes()
}

// AppendAlert appends a as a JSON alert object, with its device when
// a.Device is not empty (DecodeAlert accepts a device equal to the topic's).
func AppendAlert(dst []byte, a *Alert) []byte {
	dst = append(dst, '{')
	sep := false
	field := func(key string) {
		if sep {
			dst = append(dst, ',')
		}
		dst = append(dst, key...)
		sep = true
	}
	str := func(key, v string) {
		if v != "" {
			field(key)
			dst = appendString(dst, v)
		}
	}
	str(`"device":`, a.Device)
	if a.TS > 0 {
		field(`"ts":"`)
		dst = time.Unix(0, a.TS).UTC().AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, '"')
	}
	str(`"metric":`, a.Metric)
	field(`"value":`)
	dst = appendFloat(dst, a.Value)
	str(`"rule":`, a.Rule)
	str(`"severity":`, a.Severity)
	str(`"message":`, a.Message)
	str(`"state":`, a.State)
	return append(dst, '}')
}

// inflater decompresses gzip batches; pooled with its reader and buffer.
type inflater struct {
	zr  *gzip.Reader
	src bytes.Reader
	buf []byte
}

var inflaters = sync.Pool{New: func() any { return new(inflater) }}

// maxPooledInflate bounds the buffer a pooled inflater keeps.
const maxPooledInflate = 1 << 20

func (f *inflater) release() {
	if cap(f.buf) > maxPooledInflate {
		f.buf = nil
	}
	f.src.Reset(nil)
	inflaters.Put(f)
}

// inflate decompresses b, refusing more than limit bytes of output. The
// result aliases f.buf.
func (f *inflater) inflate(b []byte, limit int) ([]byte, error) {
	f.src.Reset(b)
	var err error
	if f.zr == nil {
		f.zr, err = gzip.NewReader(&f.src)
	} else {
		err = f.zr.Reset(&f.src)
	}
	if err != nil {
		return nil, refuse(ReasonMalformed, "gzip: %v", err)
	}
	buf := f.buf[:0]
	for {
		if len(buf) == cap(buf) {
			if len(buf) > limit {
				f.buf = buf
				return nil, refuse(ReasonTooLarge, "more than %d bytes after decompression", limit)
			}
			// Grow by doubling, but never past max+1: the +1 byte is how
			// an oversized stream is detected.
			c := min(max(2*cap(buf), 4*len(b), 4096), limit+1)
			nb := make([]byte, len(buf), c)
			copy(nb, buf)
			buf = nb
		}
		n, rerr := f.zr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			f.buf = buf
			return nil, refuse(ReasonMalformed, "gzip: %v", rerr)
		}
	}
	f.buf = buf
	if len(buf) > limit {
		return nil, refuse(ReasonTooLarge, "more than %d bytes after decompression", limit)
	}
	return buf, nil
}
