package payload

import (
	"math"
	"unicode/utf8"
)

// Top-level keys of the object form, as bits for duplicate detection.
const (
	keyDeviceID = 1 << iota
	keyTS
	keySeq
	keyData
	keyDevice // a batch reading's "device"
)

// object decodes the JSON object form; d.i is at '{'. It stops after the
// closing '}': the caller checks what follows.
func (d *decoder) object(device string) error {
	d.i++
	d.ws()
	var seen int
	ts, hasTS := int64(0), false
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
		case "device_id":
			bit = keyDeviceID
		case "ts":
			bit = keyTS
		case "seq":
			bit = keySeq
		case "data":
			bit = keyData
		case "device":
			if d.batch {
				bit = keyDevice
			}
		}
		if bit == 0 {
			if high && !utf8.Valid(k) {
				return d.malformed("invalid UTF-8 in key")
			}
			if err := d.skipValue(1); err != nil {
				return err
			}
		} else {
			if seen&bit != 0 {
				return d.malformed("repeated key \"" + string(k) + "\"")
			}
			seen |= bit
		}
		switch bit {
		case keyDeviceID, keyDevice:
			err = d.deviceID(device)
		case keyTS:
			ts, err = d.ts()
			hasTS = true
		case keySeq:
			err = d.seq()
		case keyData:
			if d.peek() != '{' {
				return refuse(ReasonWrongType, "data is not an object")
			}
			err = d.flatten(1)
		}
		if err != nil {
			return err
		}
		if more, err = d.next('}'); err != nil {
			return err
		}
	}
	if !hasTS {
		ts = d.now
	}
	for i := d.base; i < len(d.leaves); i++ {
		d.leaves[i].ts = ts
	}
	return nil
}

// seq reads the sequence number.
func (d *decoder) seq() error {
	if c := d.peek(); c != '-' && (c < '0' || c > '9') {
		if err := d.skipValue(1); err != nil {
			return err
		}
		return refuse(ReasonWrongType, "seq is not a number")
	}
	lit, shape, err := d.scanNumber()
	if err != nil {
		return err
	}
	if shape != 0 {
		return refuse(ReasonWrongType, "seq %s is not a non-negative integer", clip(lit))
	}
	var n uint64
	if len(lit) <= 19 { // cannot wrap uint64
		for _, c := range lit {
			n = n*10 + uint64(c-'0')
		}
	}
	if len(lit) > 19 || n > math.MaxInt64 {
		return refuse(ReasonWrongType, "seq %s out of range", clip(lit))
	}
	d.seqN, d.hasSeq = n, true
	return nil
}

// deviceID reads device_id (or a batch reading's device) and checks it
// against the topic's device; when device is "" it keeps the first one and
// checks a second against it.
func (d *decoder) deviceID(device string) error {
	if d.peek() != '"' {
		return refuse(ReasonWrongType, "device_id is not a string")
	}
	s, high, err := d.readString()
	if err != nil {
		return err
	}
	if high && !utf8.Valid(s) {
		return d.malformed("invalid UTF-8 in string")
	}
	if device == "" && d.dev[0] >= 0 {
		if kept := d.strs[d.dev[0]:d.dev[1]]; string(s) != string(kept) {
			return refuse(ReasonDeviceMismatch, "device %q and device_id %q differ", clip(kept), clip(s))
		}
		return nil
	}
	if device == "" {
		d.dev[0] = len(d.strs)
		d.strs = append(d.strs, s...)
		d.dev[1] = len(d.strs)
		return nil
	}
	if string(s) != device {
		return refuse(ReasonDeviceMismatch, "device_id %q, topic device %q", clip(s), device)
	}
	return nil
}

// ts reads the object form's timestamp.
func (d *decoder) ts() (int64, error) {
	switch c := d.peek(); {
	case c == '"':
		s, _, err := d.readString()
		if err != nil {
			return 0, err
		}
		ns, ok := parseTime(s)
		if !ok {
			return 0, refuse(ReasonBadTimestamp, "ts %q is not an RFC 3339 time in range", clip(s))
		}
		return ns, nil
	case c == '-' || c >= '0' && c <= '9':
		lit, shape, err := d.scanNumber()
		if err != nil {
			return 0, err
		}
		ns, ok := epochMillis(lit, shape)
		if !ok {
			return 0, refuse(ReasonBadTimestamp, "ts %s is not Unix milliseconds in range", clip(lit))
		}
		return ns, nil
	}
	if err := d.skipValue(1); err != nil {
		return 0, err
	}
	return 0, refuse(ReasonWrongType, "ts is neither a string nor a number")
}

// flatten reads the data object at d.i (nesting depth) into leaves named
// d.path + "." + key.
func (d *decoder) flatten(depth int) error {
	if depth > d.lim.MaxDepth {
		return refuse(ReasonBadMetric, "data nested deeper than %d levels", d.lim.MaxDepth)
	}
	d.i++
	d.ws()
	if d.peek() == '}' {
		d.i++
		return nil
	}
	plen := len(d.path)
	defer func() { d.path = d.path[:plen] }()
	for {
		k, high, err := d.key()
		if err != nil {
			return err
		}
		if err := checkName(k, high); err != nil {
			return err
		}
		d.path = d.path[:plen]
		if plen > 0 {
			d.path = append(d.path, '.')
		}
		d.path = append(d.path, k...)
		if err := d.dataValue(depth); err != nil {
			return err
		}
		more, err := d.next('}')
		if err != nil || !more {
			return err
		}
	}
}

// dataValue reads the value of metric d.path.
func (d *decoder) dataValue(depth int) error {
	switch c := d.peek(); c {
	case '{':
		return d.flatten(depth + 1)
	case '"':
		s, high, err := d.readString()
		if err != nil {
			return err
		}
		l, err := d.addLeaf(d.path)
		if err != nil {
			return err
		}
		return d.setString(l, s, high)
	case 't', 'f':
		v, err := d.boolean()
		if err != nil {
			return err
		}
		l, err := d.addLeaf(d.path)
		if err != nil {
			return err
		}
		l.kind = Bool
		if v {
			l.num = 1
		}
		return nil
	case 'n', '[':
		if err := d.skipValue(depth); err != nil {
			return err
		}
		return refuse(ReasonWrongType, "metric %q is a JSON %s, want a number, boolean or string", clip(d.path), jsonKind(c))
	default:
		f, err := d.number()
		if err != nil {
			return err
		}
		l, err := d.addLeaf(d.path)
		if err != nil {
			return err
		}
		l.num = f
		return nil
	}
}
