package bench

import (
	"errors"
	"fmt"
)

// This file hand-encodes the few MQTT packets the load generator sends and
// decodes the few it receives. A general packet library allocates a packet
// struct per message; here a PUBLISH is appended to a reused buffer and a
// PUBACK is read in place, so the generator costs far less per message than
// the broker it measures.

// MQTT control packet types, as the high nibble of the first byte.
const (
	pktConnect    = 0x10
	pktConnack    = 0x20
	pktPublish    = 0x30
	pktPuback     = 0x40
	pktPingreq    = 0xC0
	pktPingresp   = 0xD0
	pktDisconnect = 0xE0
)

// MQTT 5 property identifiers read from a CONNACK.
const (
	propReceiveMaximum    = 0x21
	propServerKeepAlive   = 0x13
	propMaximumPacketSize = 0x27
	propMaximumQoS        = 0x24
	propReasonString      = 0x1F
)

// maxVarint is the largest value of an MQTT variable byte integer.
const maxVarint = 268_435_455

var (
	errMalformed  = errors.New("malformed packet")
	errIncomplete = errors.New("incomplete packet")
)

// appendVarint appends n as an MQTT variable byte integer.
func appendVarint(b []byte, n int) []byte {
	for {
		d := byte(n & 0x7F)
		n >>= 7
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// varintLen is the number of bytes appendVarint writes for n.
func varintLen(n int) int {
	switch {
	case n < 128:
		return 1
	case n < 16_384:
		return 2
	case n < 2_097_152:
		return 3
	}
	return 4
}

// readVarint decodes a variable byte integer at the start of p. It returns
// errIncomplete when p ends inside the integer.
func readVarint(p []byte) (n, size int, err error) {
	shift := 0
	for i := 0; i < 4; i++ {
		if i >= len(p) {
			return 0, 0, errIncomplete
		}
		n |= int(p[i]&0x7F) << shift
		if p[i]&0x80 == 0 {
			return n, i + 1, nil
		}
		shift += 7
	}
	return 0, 0, fmt.Errorf("variable byte integer longer than 4 bytes: %w", errMalformed)
}

// appendString appends s with its two-byte length prefix.
func appendString(b []byte, s string) []byte {
	b = append(b, byte(len(s)>>8), byte(len(s)))
	return append(b, s...)
}

// appendConnect appends a CONNECT packet with a clean session, no will and
// no properties. protocol is 4 (MQTT 3.1.1) or 5.
func appendConnect(b []byte, protocol byte, clientID, username, password string, keepAlive uint16) []byte {
	flags := byte(0x02) // clean session / clean start
	n := 2 + 4 + 1 + 1 + 2 + 2 + len(clientID)
	if protocol == 5 {
		n++ // property length 0
	}
	if username != "" {
		flags |= 0x80
		n += 2 + len(username)
	}
	if password != "" {
		flags |= 0x40
		n += 2 + len(password)
	}
	b = append(b, pktConnect)
	b = appendVarint(b, n)
	b = appendString(b, "MQTT")
	b = append(b, protocol, flags, byte(keepAlive>>8), byte(keepAlive))
	if protocol == 5 {
		b = append(b, 0)
	}
	b = appendString(b, clientID)
	if username != "" {
		b = appendString(b, username)
	}
	if password != "" {
		b = appendString(b, password)
	}
	return b
}

// appendPublishHeader appends everything of a PUBLISH packet before its
// payload: fixed header, topic, packet id (QoS > 0) and, for MQTT 5, an
// empty property list.
func appendPublishHeader(b []byte, protocol, qos byte, topic []byte, id uint16, payloadLen int) []byte {
	n := 2 + len(topic) + payloadLen
	if qos > 0 {
		n += 2
	}
	if protocol == 5 {
		n++
	}
	b = append(b, pktPublish|qos<<1)
	b = appendVarint(b, n)
	b = append(b, byte(len(topic)>>8), byte(len(topic)))
	b = append(b, topic...)
	if qos > 0 {
		b = append(b, byte(id>>8), byte(id))
	}
	if protocol == 5 {
		b = append(b, 0)
	}
	return b
}

// publishSize is the size of a whole PUBLISH packet.
func publishSize(protocol, qos byte, topicLen, payloadLen int) int {
	n := 2 + topicLen + payloadLen
	if qos > 0 {
		n += 2
	}
	if protocol == 5 {
		n++
	}
	return 1 + varintLen(n) + n
}

// appendDisconnect appends a DISCONNECT with reason "normal disconnection".
func appendDisconnect(b []byte, protocol byte) []byte {
	if protocol == 5 {
		return append(b, pktDisconnect, 1, 0x00)
	}
	return append(b, pktDisconnect, 0)
}

// appendPingreq appends a PINGREQ.
func appendPingreq(b []byte) []byte { return append(b, pktPingreq, 0) }

// splitPacket finds the first whole packet in p. It returns the first
// byte, the body after the fixed header and the total packet size, or
// errIncomplete when p holds only part of a packet.
func splitPacket(p []byte) (first byte, body []byte, size int, err error) {
	if len(p) < 2 {
		return 0, nil, 0, errIncomplete
	}
	rl, n, err := readVarint(p[1:])
	if err != nil {
		return 0, nil, 0, err
	}
	size = 1 + n + rl
	if len(p) < size {
		return 0, nil, size, errIncomplete
	}
	return p[0], p[1+n : size], size, nil
}

// connack is what the generator takes from a CONNACK.
type connack struct {
	code           byte   // return code (3.1.1) or reason code (5)
	reason         string // MQTT 5 reason string, if any
	receiveMaximum int    // 0 when absent
	serverKeep     int    // server keep alive in seconds; -1 when absent
	maxPacketSize  int    // 0 when absent
	maxQoS         int    // -1 when absent
}

// refused reports whether the CONNACK refuses the connection.
func (c connack) refused() bool { return c.code != 0 }

// parseConnack decodes a CONNACK body.
func parseConnack(protocol byte, body []byte) (connack, error) {
	ca := connack{serverKeep: -1, maxQoS: -1}
	if len(body) < 2 {
		return ca, fmt.Errorf("connack of %d bytes: %w", len(body), errMalformed)
	}
	ca.code = body[1]
	if protocol != 5 || len(body) == 2 {
		return ca, nil
	}
	pl, n, err := readVarint(body[2:])
	if err != nil {
		return ca, fmt.Errorf("connack properties: %w", err)
	}
	props := body[2+n:]
	if len(props) < pl {
		return ca, fmt.Errorf("connack properties: %w", errMalformed)
	}
	err = walkProps(props[:pl], func(id byte, v []byte, num int) {
		switch id {
		case propReceiveMaximum:
			ca.receiveMaximum = num
		case propServerKeepAlive:
			ca.serverKeep = num
		case propMaximumPacketSize:
			ca.maxPacketSize = num
		case propMaximumQoS:
			ca.maxQoS = num
		case propReasonString:
			ca.reason = string(v)
		}
	})
	return ca, err
}

// parseReason reads the reason code and reason string of an MQTT 5 PUBACK
// or DISCONNECT body that starts at the reason code.
func parseReason(body []byte) (code byte, reason string) {
	if len(body) == 0 {
		return 0, ""
	}
	code = body[0]
	if len(body) == 1 {
		return code, ""
	}
	pl, n, err := readVarint(body[1:])
	if err != nil || len(body) < 1+n+pl {
		return code, ""
	}
	_ = walkProps(body[1+n:1+n+pl], func(id byte, v []byte, _ int) {
		if id == propReasonString {
			reason = string(v)
		}
	})
	return code, reason
}

// walkProps calls fn for each MQTT 5 property in p with its raw value and,
// for integer properties, the value as a number.
func walkProps(p []byte, fn func(id byte, v []byte, num int)) error {
	for len(p) > 0 {
		id := p[0]
		p = p[1:]
		var size int
		switch id {
		case 0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A: // byte
			size = 1
		case 0x13, 0x21, 0x22, 0x23: // two-byte integer
			size = 2
		case 0x02, 0x11, 0x18, 0x27: // four-byte integer
			size = 4
		case 0x0B: // variable byte integer
			v, n, err := readVarint(p)
			if err != nil {
				return fmt.Errorf("property 0x%02x: %w", id, errMalformed)
			}
			fn(id, p[:n], v)
			p = p[n:]
			continue
		case 0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F: // string or binary
			if len(p) < 2 {
				return fmt.Errorf("property 0x%02x: %w", id, errMalformed)
			}
			l := int(p[0])<<8 | int(p[1])
			if len(p) < 2+l {
				return fmt.Errorf("property 0x%02x: %w", id, errMalformed)
			}
			fn(id, p[2:2+l], 0)
			p = p[2+l:]
			continue
		case 0x26: // user property: a string pair
			for range 2 {
				if len(p) < 2 {
					return fmt.Errorf("user property: %w", errMalformed)
				}
				l := int(p[0])<<8 | int(p[1])
				if len(p) < 2+l {
					return fmt.Errorf("user property: %w", errMalformed)
				}
				p = p[2+l:]
			}
			continue
		default:
			return fmt.Errorf("unknown property 0x%02x: %w", id, errMalformed)
		}
		if len(p) < size {
			return fmt.Errorf("property 0x%02x: %w", id, errMalformed)
		}
		num := 0
		for _, c := range p[:size] {
			num = num<<8 | int(c)
		}
		fn(id, p[:size], num)
		p = p[size:]
	}
	return nil
}
