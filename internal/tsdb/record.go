package tsdb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/fieldhub/fieldhub/payload"
)

// WAL record bodies. The first byte is the record type:
//
//	1 message: uvarint len + device, byte flags (1: has seq), [uvarint seq],
//	           uvarint points, per point: uvarint len + metric, varint ts,
//	           byte kind, value (number: 8 bytes IEEE 754 LE; bool: 1 byte;
//	           string: uvarint len + bytes)
//	2 delete device (tombstone): uvarint len + device
const (
	recMessage = 1
	recDelete  = 2
)

var errBadRecord = errors.New("tsdb: malformed wal record")

// appendMessageRecord appends the body of a message record.
func appendMessageRecord(dst []byte, m *payload.Message) []byte {
	dst = append(dst, recMessage)
	dst = binary.AppendUvarint(dst, uint64(len(m.Device)))
	dst = append(dst, m.Device...)
	if m.HasSeq {
		dst = append(dst, 1)
		dst = binary.AppendUvarint(dst, m.Seq)
	} else {
		dst = append(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(len(m.Points)))
	for i := range m.Points {
		p := &m.Points[i]
		dst = binary.AppendUvarint(dst, uint64(len(p.Metric)))
		dst = append(dst, p.Metric...)
		dst = binary.AppendVarint(dst, p.TS)
		dst = append(dst, byte(p.Value.Kind))
		switch p.Value.Kind {
		case payload.Bool:
			if p.Value.Num != 0 {
				dst = append(dst, 1)
			} else {
				dst = append(dst, 0)
			}
		case payload.String:
			dst = binary.AppendUvarint(dst, uint64(len(p.Value.Str)))
			dst = append(dst, p.Value.Str...)
		default:
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(p.Value.Num))
		}
	}
	return dst
}

// messageRecordSize is an upper bound of the encoded size of m.
func messageRecordSize(m *payload.Message) int {
	n := 1 + 10 + len(m.Device) + 1 + 10 + 10
	for i := range m.Points {
		n += 10 + len(m.Points[i].Metric) + 10 + 1 + 10 + len(m.Points[i].Value.Str)
	}
	return n
}

func appendDeleteRecord(dst []byte, device string) []byte {
	dst = append(dst, recDelete)
	dst = binary.AppendUvarint(dst, uint64(len(device)))
	return append(dst, device...)
}

// record is a decoded WAL record.
type record struct {
	typ byte
	msg payload.Message // recMessage; recDelete uses msg.Device
}

// decodeRecord decodes body into r, reusing r.msg.Points.
func decodeRecord(body []byte, r *record) error {
	d := reader{b: body, base: errBadRecord}
	r.typ = d.byte()
	r.msg.Device = string(d.bytes(d.uvarint()))
	r.msg.Points = r.msg.Points[:0]
	r.msg.Seq, r.msg.HasSeq = 0, false
	switch r.typ {
	case recDelete:
	case recMessage:
		switch d.byte() {
		case 0:
		case 1:
			r.msg.HasSeq = true
			r.msg.Seq = d.uvarint()
		default:
			d.fail("flags")
		}
		n := d.uvarint()
		if n > uint64(len(body)) {
			d.fail("point count")
		}
		for i := uint64(0); i < n && d.err == nil; i++ {
			var p payload.Point
			p.Metric = string(d.bytes(d.uvarint()))
			p.TS = d.varint()
			p.Value.Kind = payload.ValueKind(d.byte())
			switch p.Value.Kind {
			case payload.Number:
				if b := d.bytes(8); b != nil {
					p.Value.Num = math.Float64frombits(binary.LittleEndian.Uint64(b))
				}
			case payload.Bool:
				switch d.byte() {
				case 0:
				case 1:
					p.Value.Num = 1
				default:
					d.fail("bool")
				}
			case payload.String:
				p.Value.Str = string(d.bytes(d.uvarint()))
			default:
				d.fail("kind")
			}
			r.msg.Points = append(r.msg.Points, p)
		}
	default:
		return fmt.Errorf("%w: type %d", errBadRecord, r.typ)
	}
	if d.err != nil {
		return d.err
	}
	if d.off != len(body) {
		return fmt.Errorf("%w: %d trailing bytes", errBadRecord, len(body)-d.off)
	}
	return nil
}
