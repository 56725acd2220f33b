package bench

import (
	"bytes"
	"errors"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// decodeWithMochi decodes one whole packet with mochi's packet library, the
// parser the hub itself runs, to check the hand encoding against it.
func decodeWithMochi(t *testing.T, raw []byte, protocol byte) packets.Packet {
	t.Helper()
	first, body, size, err := splitPacket(raw)
	if err != nil {
		t.Fatalf("splitPacket(% x) = %v", raw, err)
	}
	if size != len(raw) {
		t.Fatalf("splitPacket size = %d; want %d", size, len(raw))
	}
	var pk packets.Packet
	pk.ProtocolVersion = protocol
	if err := pk.FixedHeader.Decode(first); err != nil {
		t.Fatalf("FixedHeader.Decode(%#x) = %v", first, err)
	}
	pk.FixedHeader.Remaining = len(body)
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	case packets.Pingreq:
		err = pk.PingreqDecode(body)
	default:
		t.Fatalf("unexpected packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		t.Fatalf("mochi decode of % x: %v", raw, err)
	}
	return pk
}

func TestConnectEncoding(t *testing.T) {
	for _, tc := range []struct {
		name           string
		protocol       byte
		user, password string
	}{
		{"v4 anonymous", 4, "", ""},
		{"v4 password", 4, "dev-1", "s3cret"},
		{"v5 anonymous", 5, "", ""},
		{"v5 password", 5, "dev-1", "s3cret"},
		{"v5 password only", 5, "", "tok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := appendConnect(nil, tc.protocol, "dev-1", tc.user, tc.password, 60)
			pk := decodeWithMochi(t, raw, tc.protocol)
			if code := pk.ConnectValidate(); code != packets.CodeSuccess {
				t.Fatalf("ConnectValidate = %v", code)
			}
			c := pk.Connect
			if pk.ProtocolVersion != tc.protocol || string(c.ClientIdentifier) != "dev-1" || !c.Clean ||
				string(c.Username) != tc.user || string(c.Password) != tc.password || c.Keepalive != 60 {
				t.Fatalf("decoded connect = %+v (version %d)", c, pk.ProtocolVersion)
			}
		})
	}
}

func TestPublishEncoding(t *testing.T) {
	payload := bytes.Repeat([]byte("x"), 200) // a two-byte remaining length
	for _, protocol := range []byte{4, 5} {
		for _, qos := range []byte{0, 1} {
			raw := appendPublishHeader(nil, protocol, qos, []byte("devices/d1/telemetry"), 513, len(payload))
			raw = append(raw, payload...)
			if got, want := publishSize(protocol, qos, len("devices/d1/telemetry"), len(payload)), len(raw); got != want {
				t.Errorf("publishSize(v%d, qos %d) = %d; want %d", protocol, qos, got, want)
			}
			pk := decodeWithMochi(t, raw, protocol)
			if pk.TopicName != "devices/d1/telemetry" || !bytes.Equal(pk.Payload, payload) || pk.FixedHeader.Qos != qos {
				t.Errorf("v%d qos %d: decoded topic %q qos %d payload %d bytes", protocol, qos, pk.TopicName, pk.FixedHeader.Qos, len(pk.Payload))
			}
			if qos == 1 && pk.PacketID != 513 {
				t.Errorf("v%d: packet id = %d; want 513", protocol, pk.PacketID)
			}
		}
	}
}

func TestDisconnectAndPingEncoding(t *testing.T) {
	for _, protocol := range []byte{4, 5} {
		decodeWithMochi(t, appendDisconnect(nil, protocol), protocol)
	}
	decodeWithMochi(t, appendPingreq(nil), 4)
}

func TestVarint(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 16383, 16384, 2097151, 2097152, maxVarint} {
		b := appendVarint(nil, n)
		if len(b) != varintLen(n) {
			t.Errorf("len(appendVarint(%d)) = %d; varintLen = %d", n, len(b), varintLen(n))
		}
		got, size, err := readVarint(b)
		if err != nil || got != n || size != len(b) {
			t.Errorf("readVarint(appendVarint(%d)) = %d, %d, %v", n, got, size, err)
		}
		if len(b) > 1 {
			if _, _, err := readVarint(b[:len(b)-1]); !errors.Is(err, errIncomplete) {
				t.Errorf("readVarint(truncated %d) = %v; want errIncomplete", n, err)
			}
		}
	}
	if _, _, err := readVarint([]byte{0xff, 0xff, 0xff, 0xff, 0x01}); !errors.Is(err, errMalformed) {
		t.Errorf("readVarint(5 bytes) = %v; want errMalformed", err)
	}
}

func TestParseConnack(t *testing.T) {
	encode := func(pk packets.Packet) []byte {
		var buf bytes.Buffer
		pk.FixedHeader.Type = packets.Connack
		if err := pk.ConnackEncode(&buf); err != nil {
			t.Fatal(err)
		}
		_, body, _, err := splitPacket(buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		return body
	}
	v5 := packets.Packet{ProtocolVersion: 5, ReasonCode: 0}
	v5.Properties.ReceiveMaximum = 20
	v5.Properties.ServerKeepAlive = 30
	v5.Properties.ServerKeepAliveFlag = true
	v5.Properties.MaximumPacketSize = 4096
	v5.Properties.User = []packets.UserProperty{{Key: "k", Val: "v"}}
	v5.Properties.AssignedClientID = "x"
	ca, err := parseConnack(5, encode(v5))
	if err != nil || ca.refused() || ca.receiveMaximum != 20 || ca.serverKeep != 30 || ca.maxPacketSize != 4096 {
		t.Errorf("parseConnack(v5 accepted) = %+v, %v", ca, err)
	}

	refused := packets.Packet{ProtocolVersion: 5, ReasonCode: 0x86}
	refused.Properties.ReasonString = "nope"
	ca, err = parseConnack(5, encode(refused))
	if err != nil || !ca.refused() || ca.code != 0x86 || ca.reason != "nope" {
		t.Errorf("parseConnack(v5 refused) = %+v, %v", ca, err)
	}

	ca, err = parseConnack(4, encode(packets.Packet{ProtocolVersion: 4, ReasonCode: 5}))
	if err != nil || ca.code != 5 || ca.serverKeep != -1 {
		t.Errorf("parseConnack(v4 refused) = %+v, %v", ca, err)
	}
	if _, err := parseConnack(4, []byte{0}); !errors.Is(err, errMalformed) {
		t.Errorf("parseConnack(short) = %v; want errMalformed", err)
	}
}

func TestParseReason(t *testing.T) {
	pk := packets.Packet{ProtocolVersion: 5, ReasonCode: 0x87, PacketID: 7}
	pk.FixedHeader.Type = packets.Puback
	pk.Properties.ReasonString = "denied"
	var buf bytes.Buffer
	if err := pk.PubackEncode(&buf); err != nil {
		t.Fatal(err)
	}
	_, body, _, err := splitPacket(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	code, reason := parseReason(body[2:])
	if code != 0x87 || reason != "denied" {
		t.Errorf("parseReason = %#x, %q; want 0x87, denied", code, reason)
	}
}
