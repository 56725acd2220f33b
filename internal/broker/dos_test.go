package broker

import (
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fieldhub/fieldhub/topic"
)

// TestDeepFilterRefusedCheaply: a SUBSCRIBE whose filter has 60,000 levels
// (seconds of CPU in mochi's topic index) is refused at once, and the
// broker keeps acking another device meanwhile.
func TestDeepFilterRefusedCheaply(t *testing.T) {
	for _, policy := range []string{"device", "open"} {
		t.Run(policy, func(t *testing.T) {
			e := startEnv(t, Config{OpenPolicy: policy == "open"}, "ok")
			deep := strings.Repeat("/", 59999) // 60,000 levels
			other := connectV5(t, e.addr("tcp"), "dev-b")

			// MQTT 5: SUBACK 0x8F for the deep filter, the other one granted.
			v5 := rawConnect(t, e.addr("tcp"), "dev-a", 5)
			start := time.Now()
			v5.send(t, packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
				PacketID:    7,
				Filters: packets.Subscriptions{
					{Filter: deep, Qos: 1},
					{Filter: "devices/dev-a/commands/+", Qos: 1},
				},
			})
			pk, err := v5.read(t)
			elapsed := time.Since(start)
			if err != nil || pk.FixedHeader.Type != packets.Suback {
				t.Fatalf("v5: %+v, %v; want SUBACK", pk.FixedHeader, err)
			}
			if len(pk.ReasonCodes) != 2 || pk.ReasonCodes[0] != 0x8F || pk.ReasonCodes[1] != 1 {
				t.Fatalf("v5 SUBACK codes %x; want 8f 01", pk.ReasonCodes)
			}
			if elapsed > time.Second {
				t.Fatalf("v5 SUBACK took %v", elapsed)
			}
			if pr, err := other.publish(t, topic.Telemetry("dev-b"), 1, `{}`); err != nil || pr.ReasonCode != 0 {
				t.Fatalf("other device's publish = %+v, %v", pr, err)
			}

			// MQTT 3.1.1: no reason code to send; the connection is closed.
			v3 := rawConnect(t, e.addr("tcp"), "dev-c", 4)
			start = time.Now()
			v3.send(t, packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
				PacketID:    8,
				Filters:     packets.Subscriptions{{Filter: deep, Qos: 1}},
			})
			if pk, err := v3.read(t); err == nil {
				t.Fatalf("v3: got packet type %d; want the connection closed", pk.FixedHeader.Type)
			}
			if elapsed := time.Since(start); elapsed > time.Second {
				t.Fatalf("v3 close took %v", elapsed)
			}
			if pr, err := other.publish(t, topic.Telemetry("dev-b"), 1, `{}`); err != nil || pr.ReasonCode != 0 {
				t.Fatalf("other device's publish = %+v, %v", pr, err)
			}
			if got := testutil.ToFloat64(e.b.metrics.aclDenials.WithLabelValues("subscribe", DenyTooLong)); got != 2 {
				t.Errorf("acl_denials_total{subscribe,too_long} = %v; want 2", got)
			}
		})
	}
}

// TestDeepTopicPublishDenied: deep topic names are denied by the publish
// check (device ACL or open-policy bounds) before mochi's index sees them.
func TestDeepTopicPublishDenied(t *testing.T) {
	e := startEnv(t, Config{OpenPolicy: true}, "ok")
	rc := rawConnect(t, e.addr("tcp"), "dev-a", 5)
	start := time.Now()
	rc.publish(t, 1, "a"+strings.Repeat("/a", 30000), 1, "x")
	pk, err := rc.read(t)
	if err != nil || pk.FixedHeader.Type != packets.Puback || pk.ReasonCode != 0x87 {
		t.Fatalf("deep publish: %+v code %#x, %v; want PUBACK 0x87", pk.FixedHeader, pk.ReasonCode, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("took %v", d)
	}
	if got := testutil.ToFloat64(e.b.metrics.aclDenials.WithLabelValues("publish", DenyTooLong)); got != 1 {
		t.Errorf("acl_denials_total{publish,too_long} = %v; want 1", got)
	}
}
