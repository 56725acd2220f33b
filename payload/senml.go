package payload

import (
	"math"
	"math/bits"
	"unicode/utf8"
)

// SenML record fields (RFC 8428 §4), as bits for duplicate detection.
const (
	fBN = 1 << iota
	fBT
	fBU
	fBV
	fBS
	fBVer
	fN
	fU
	fV
	fVS
	fVB
	fVD
	fS
	fT
	fUT
)

func senmlField(k []byte) int {
	switch string(k) {
	case "bn":
		return fBN
	case "bt":
		return fBT
	case "bu":
		return fBU
	case "bv":
		return fBV
	case "bs":
		return fBS
	case "bver":
		return fBVer
	case "n":
		return fN
	case "u":
		return fU
	case "v":
		return fV
	case "vs":
		return fVS
	case "vb":
		return fVB
	case "vd":
		return fVD
	case "s":
		return fS
	case "t":
		return fT
	case "ut":
		return fUT
	}
	return 0
}

// senmlVersion is the SenML version this decoder understands (RFC 8428).
const senmlVersion = 10

// relativeLimit is 2^28 seconds: smaller resolved times are relative to
// now (RFC 8428 §4.5.3).
const relativeLimit = 1 << 28

// senmlBase is the base state carried from record to record; the base name
// lives in decoder.path.
type senmlBase struct {
	bt, bv float64
}

// senml decodes a SenML pack; d.i is at '['.
func (d *decoder) senml() error {
	d.i++
	d.ws()
	var base senmlBase
	if d.peek() == ']' {
		d.i++
		return d.end()
	}
	for {
		if c := d.peek(); c != '{' {
			if err := d.skipValue(1); err != nil {
				return err
			}
			return refuse(ReasonWrongType, "SenML record %d is a JSON %s, want an object", len(d.leaves), jsonKind(c))
		}
		if err := d.record(&base); err != nil {
			return err
		}
		more, err := d.next(']')
		if err != nil {
			return err
		}
		if !more {
			return d.end()
		}
	}
}

// record decodes one SenML record into a leaf; d.i is at '{'.
func (d *decoder) record(base *senmlBase) error {
	d.i++
	d.ws()
	var (
		seen          int
		bt, bv, t, v  float64
		vb            bool
		vsHigh        bool
		more          = true
		recordNumber  = len(d.leaves)
		valueField    = 0
		valueFieldCnt = 0
	)
	d.name, d.bn = d.name[:0], d.bn[:0]
	if d.peek() == '}' {
		d.i++
		more = false
	}
	for more {
		k, high, err := d.key()
		if err != nil {
			return err
		}
		f := senmlField(k)
		if f == 0 {
			if high && !utf8.Valid(k) {
				return d.malformed("invalid UTF-8 in key")
			}
			if len(k) > 0 && k[len(k)-1] == '_' {
				return refuse(ReasonMalformed, "SenML record %d has must-understand field %q", recordNumber, clip(k))
			}
			if err := d.skipValue(1); err != nil {
				return err
			}
		} else if seen&f != 0 {
			return d.malformed("repeated SenML field \"" + string(k) + "\"")
		}
		seen |= f
		switch f {
		case fBN, fN, fU, fBU, fVS:
			if d.peek() != '"' {
				return refuse(ReasonWrongType, "SenML record %d: %s is not a string", recordNumber, senmlName(f))
			}
			s, high, err := d.readString()
			if err != nil {
				return err
			}
			switch f {
			case fBN:
				d.bn = append(d.bn, s...)
			case fN:
				d.name = append(d.name, s...)
			case fVS:
				d.vs, vsHigh = append(d.vs[:0], s...), high
			default:
				if high && !utf8.Valid(s) {
					return d.malformed("invalid UTF-8 in string")
				}
			}
		case fVB:
			if c := d.peek(); c != 't' && c != 'f' {
				return refuse(ReasonWrongType, "SenML record %d: vb is not a boolean", recordNumber)
			}
			if vb, err = d.boolean(); err != nil {
				return err
			}
		case fVD:
			return refuse(ReasonWrongType, "SenML record %d: data values (vd) are not supported", recordNumber)
		case fBT, fBV, fBS, fBVer, fV, fS, fT, fUT:
			if c := d.peek(); c != '-' && (c < '0' || c > '9') {
				return refuse(ReasonWrongType, "SenML record %d: %s is not a number", recordNumber, senmlName(f))
			}
			lit, shape, err := d.scanNumber()
			if err != nil {
				return err
			}
			x, ok := parseFloat(lit)
			if !ok {
				if f == fBT || f == fT {
					return refuse(ReasonBadTimestamp, "SenML record %d: %s %s out of range", recordNumber, senmlName(f), clip(lit))
				}
				return refuse(ReasonWrongType, "SenML record %d: %s %s out of range", recordNumber, senmlName(f), clip(lit))
			}
			switch f {
			case fBT:
				bt = x
			case fBV:
				bv = x
			case fT:
				t = x
			case fV:
				v = x
			case fBVer:
				if shape != 0 || x < 1 {
					return refuse(ReasonWrongType, "SenML record %d: bver %s is not a positive integer", recordNumber, clip(lit))
				}
				if x > senmlVersion {
					return refuse(ReasonMalformed, "SenML record %d: version %s is newer than %d", recordNumber, clip(lit), senmlVersion)
				}
			}
		}
		if f&(fV|fVS|fVB) != 0 {
			valueField = f
			valueFieldCnt++
		}
		if more, err = d.next('}'); err != nil {
			return err
		}
	}

	// Base fields apply to this record and the ones after it.
	if seen&fBN != 0 {
		d.path = append(d.path[:0], d.bn...)
	}
	if seen&fBT != 0 {
		base.bt = bt
	}
	if seen&fBV != 0 {
		base.bv = bv
	}
	if valueFieldCnt != 1 {
		return refuse(ReasonWrongType, "SenML record %d has %d of v, vs, vb; want exactly one", recordNumber, valueFieldCnt)
	}

	name := append(append(d.bn[:0], d.path...), d.name...)
	d.bn = name
	if err := checkName(name, hasHigh(name)); err != nil {
		return err
	}
	ts, err := d.senmlTime(base.bt + t)
	if err != nil {
		return refuse(ReasonBadTimestamp, "SenML record %d: time %v out of range", recordNumber, base.bt+t)
	}
	l, err := d.addLeaf(name)
	if err != nil {
		return err
	}
	l.ts = ts
	switch valueField {
	case fV:
		l.num = base.bv + v
		if math.IsInf(l.num, 0) {
			return refuse(ReasonWrongType, "SenML record %d: bv+v out of range", recordNumber)
		}
	case fVB:
		l.kind = Bool
		if vb {
			l.num = 1
		}
	case fVS:
		return d.setString(l, d.vs, vsHigh)
	}
	return nil
}

// senmlTime converts a resolved SenML time in seconds.
func (d *decoder) senmlTime(sec float64) (int64, error) {
	if math.IsNaN(sec) || math.IsInf(sec, 0) {
		return 0, errRange
	}
	if sec >= relativeLimit {
		if ns, ok := senmlNanos(sec); ok {
			return ns, nil
		}
		return 0, errRange
	}
	rel := math.Round(sec * 1e9)
	if rel <= math.MinInt64 {
		return 0, errRange
	}
	r := int64(rel) // |r| < 2^63 here: sec < 2^28
	ts := d.now + r
	if (r > 0 && ts < d.now) || (r < 0 && ts > d.now) || ts < minTS {
		return 0, errRange
	}
	return ts, nil
}

var errRange = refuse(ReasonBadTimestamp, "time out of range")

// senmlNames names the field bits, in bit order.
var senmlNames = [...]string{"bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut"}

func senmlName(f int) string { return senmlNames[bits.TrailingZeros(uint(f))] }

func hasHigh(s []byte) bool {
	for _, c := range s {
		if c >= 0x80 {
			return true
		}
	}
	return false
}
