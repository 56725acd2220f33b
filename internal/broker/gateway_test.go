package broker

import (
	"context"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fieldhub/fieldhub/payload"
	"github.com/fieldhub/fieldhub/topic"
)

// fakeGateways: child → gateway.
type fakeGateways map[string]string

func (g fakeGateways) IsGateway(_ context.Context, id string) bool {
	for _, gw := range g {
		if gw == id {
			return true
		}
	}
	return false
}

func (g fakeGateways) IsChild(_ context.Context, gw, dev string) bool {
	return gw != "" && g[dev] == gw
}

// notChildErr is a refusal that is an authorization decision, as the
// telemetry package's NotChildError.
type notChildErr struct{}

func (notChildErr) Error() string         { return "batch refused: not a child" }
func (notChildErr) Is(target error) bool  { return target == payload.ErrRefused }
func (notChildErr) RefusalReason() string { return "not_child" }
func (notChildErr) NotAuthorized() bool   { return true }

// gwIngester records batches and alerts and completes them with its mode's
// outcome: "ok", "not_child" or "refuse".
type gwIngester struct {
	mu      sync.Mutex
	mode    string
	batches []ingested
	alerts  []ingested
}

func (g *gwIngester) outcome() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch g.mode {
	case "not_child":
		return notChildErr{}
	case "refuse":
		return &payload.Error{Reason: payload.ReasonMalformed, Msg: "bad batch"}
	}
	return nil
}

func (g *gwIngester) setMode(m string) {
	g.mu.Lock()
	g.mode = m
	g.mu.Unlock()
}

func (g *gwIngester) IngestBatch(gw string, p []byte, done func(error)) {
	g.mu.Lock()
	g.batches = append(g.batches, ingested{device: gw, payload: string(p)})
	g.mu.Unlock()
	done(g.outcome())
}

func (g *gwIngester) IngestAlert(dev string, p []byte, done func(error)) {
	g.mu.Lock()
	g.alerts = append(g.alerts, ingested{device: dev, payload: string(p)})
	g.mu.Unlock()
	done(g.outcome())
}

func (g *gwIngester) got() (batches, alerts []ingested) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]ingested(nil), g.batches...), append([]ingested(nil), g.alerts...)
}

// withGateways installs gi as batch and alert ingester and dev-a as the
// gateway of dev-b (dev-c stands alone).
func withGateways(gi *gwIngester) func(*Broker) {
	return func(b *Broker) {
		b.ings.Batch, b.ings.Alerts, b.gateways = gi, gi, fakeGateways{"dev-b": "dev-a"}
	}
}

func TestGatewayACL(t *testing.T) {
	b := &Broker{ings: Ingesters{Batch: &gwIngester{}}, gateways: fakeGateways{"c1": "gw", "c2": "gw", "x": "other"}}
	pubs := []struct{ device, topic, want string }{
		{"gw", "devices/gw/batch", ""},
		{"gw", "devices/gw/telemetry", ""},
		{"c1", "devices/c1/batch", DenyNotGateway},
		{"gw", "devices/c1/batch", DenyForeignDevice},
		{"gw", "devices/c1/alerts", ""},
		{"gw", "devices/c1/status", ""},
		{"gw", "devices/c1/responses/cmd-1", ""},
		{"gw", "devices/c1/twin/reported", ""},
		{"gw", "devices/c1/telemetry", DenyForeignDevice},
		{"gw", "devices/c1/ota/progress", DenyForeignDevice},
		{"gw", "devices/c1/commands/reboot", DenyForeignDevice},
		{"gw", "devices/c1/nonsense", DenyForeignDevice},
		{"gw", "devices/x/alerts", DenyForeignDevice},
		{"gw", "devices/nobody/alerts", DenyForeignDevice},
		{"c1", "devices/c2/alerts", DenyForeignDevice},
		{"c1", "devices/gw/alerts", DenyForeignDevice},
		{"gw", "devices/+/alerts", DenyInvalid},
	}
	for _, tt := range pubs {
		if got := b.publishDenial(tt.device, tt.topic); got != tt.want {
			t.Errorf("publishDenial(%s, %s) = %q; want %q", tt.device, tt.topic, got, tt.want)
		}
	}
	reads := []struct{ device, filter, want string }{
		{"gw", "devices/c1/commands/+", ""},
		{"gw", "devices/c1/commands/#", ""},
		{"gw", "devices/c1/commands/reboot", ""},
		{"gw", "devices/c1/twin/desired", ""},
		{"gw", "devices/c1/#", ""},
		{"gw", "devices/c1/ota/#", DenyForeignDevice},
		{"gw", "devices/c1/ota/offer", DenyForeignDevice},
		{"gw", "devices/c1/telemetry", DenyForeignDevice},
		{"gw", "devices/c1/+", DenyForeignDevice},
		{"gw", "devices/x/commands/+", DenyForeignDevice},
		{"gw", "devices/+/commands/#", DenyOutsideDevice},
		{"c1", "devices/gw/commands/+", DenyForeignDevice},
	}
	for _, tt := range reads {
		if got := b.readDenial(tt.device, tt.filter); got != tt.want {
			t.Errorf("readDenial(%s, %s) = %q; want %q", tt.device, tt.filter, got, tt.want)
		}
	}
	// Without Gateways (or a BatchIngester) nobody is a gateway.
	plain := &Broker{}
	if got := plain.publishDenial("gw", "devices/gw/batch"); got != DenyNotGateway {
		t.Errorf("without gateways: publishDenial(gw, batch) = %q; want %q", got, DenyNotGateway)
	}
	if got := plain.publishDenial("gw", "devices/c1/alerts"); got != DenyForeignDevice {
		t.Errorf("without gateways: publishDenial(gw, c1 alerts) = %q; want %q", got, DenyForeignDevice)
	}
}

func TestGatewayBatchesAndAlerts(t *testing.T) {
	gi := &gwIngester{mode: "ok"}
	e := startEnv(t, Config{}, "ok", withGateways(gi))
	gw := connectV5(t, e.addr("tcp"), "dev-a")
	lone := connectV5(t, e.addr("tcp"), "dev-c")

	expect := func(c *v5client, name string, code byte) {
		t.Helper()
		pr, _ := c.publish(t, name, 1, `{"readings":[]}`)
		if pr == nil || pr.ReasonCode != code {
			t.Errorf("publish %s = %+v; want reason 0x%02x", name, pr, code)
		}
	}
	expect(gw, topic.Batch("dev-a"), 0)
	expect(gw, topic.Alerts("dev-b"), 0)
	expect(gw, topic.Alerts("dev-a"), 0)
	expect(gw, topic.Status("dev-b"), 0)
	expect(gw, topic.Alerts("dev-c"), 0x87)
	expect(gw, topic.Telemetry("dev-b"), 0x87)
	expect(lone, topic.Batch("dev-c"), 0x87)
	expect(lone, topic.Alerts("dev-b"), 0x87)
	batches, alerts := gi.got()
	if len(batches) != 1 || batches[0].device != "dev-a" {
		t.Errorf("batches ingested: %+v; want one of dev-a", batches)
	}
	if len(alerts) != 2 || alerts[0].device != "dev-b" || alerts[1].device != "dev-a" {
		t.Errorf("alerts ingested: %+v; want dev-b's then dev-a's", alerts)
	}
	if n := len(e.ing.messages()); n != 0 {
		t.Errorf("%d messages reached the telemetry ingester", n)
	}
	for _, tt := range []struct {
		reason string
		want   float64
	}{{DenyNotGateway, 1}, {DenyForeignDevice, 3}} {
		if got := testutil.ToFloat64(e.b.metrics.aclDenials.WithLabelValues("publish", tt.reason)); got != tt.want {
			t.Errorf("acl_denials_total{publish,%s} = %v; want %v", tt.reason, got, tt.want)
		}
	}

	// Subscriptions for the child, and its commands delivered.
	filters := []string{"devices/dev-b/commands/+", "devices/dev-b/twin/desired", "devices/dev-c/commands/+"}
	if got, want := gw.subscribe(t, filters...), []byte{1, 1, 0x87}; string(got) != string(want) {
		t.Errorf("SUBACK codes = %x; want %x", got, want)
	}
	if err := e.b.Publish(topic.Command("dev-b", "reboot"), []byte(`{"id":"1"}`), false, 1); err != nil {
		t.Fatal(err)
	}
	if err := e.b.Publish(topic.Command("dev-c", "reboot"), []byte(`{"id":"2"}`), false, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-gw.received:
		if p.Topic != topic.Command("dev-b", "reboot") {
			t.Errorf("gateway received %s", p.Topic)
		}
	case <-time.After(testTimeout):
		t.Fatal("the gateway did not receive its child's command")
	}

	// A batch refused as not_child: 0x87; a malformed one: 0x99.
	gi.setMode("not_child")
	expect(gw, topic.Batch("dev-a"), 0x87)
	gi.setMode("refuse")
	expect(gw, topic.Batch("dev-a"), 0x99)
	if got := testutil.ToFloat64(e.b.metrics.ingestRefused.WithLabelValues("not_child")); got != 1 {
		t.Errorf("ingest_refused_total{not_child} = %v; want 1", got)
	}
	// QoS 2: PUBREC 0x87.
	gi.setMode("not_child")
	pr, _ := gw.publish(t, topic.Batch("dev-a"), 2, `{}`)
	if pr == nil || pr.ReasonCode != 0x87 {
		t.Errorf("QoS 2 not_child batch = %+v; want PUBREC 0x87", pr)
	}
}

// TestGatewayNotChildV3 closes an MQTT 3.1.1 gateway's connection rather
// than acking a batch refused as not_child, after acking what came before.
func TestGatewayNotChildV3(t *testing.T) {
	gi := &gwIngester{mode: "ok"}
	e := startEnv(t, Config{}, "ok", withGateways(gi))
	c3 := connectV3(t, e.addr("tcp"), "dev-a")
	tok := c3.c.Publish(topic.Batch("dev-a"), 1, false, `{}`)
	if !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatalf("v3 batch not acked: %v", tok.Error())
	}
	gi.setMode("not_child")
	tok = c3.c.Publish(topic.Batch("dev-a"), 1, false, `{}`)
	c3.waitLost(t)
	if tok.WaitTimeout(100*time.Millisecond) && tok.Error() == nil {
		t.Fatal("v3 batch refused as not_child was acked")
	}
	// A v3 gateway's own refused payload is acked and dropped as telemetry is.
	gi.setMode("refuse")
	c3 = connectV3(t, e.addr("tcp"), "dev-a")
	tok = c3.c.Publish(topic.Batch("dev-a"), 1, false, `{}`)
	if !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatalf("v3 refused batch not acked: %v", tok.Error())
	}
}

// TestAlertWillRefusedWithAlertIngester: a will on alerts would bypass
// the alert store.
func TestAlertWillRefusedWithAlertIngester(t *testing.T) {
	e := startEnv(t, Config{}, "ok", withGateways(&gwIngester{mode: "ok"}))
	_, ca, err := dialV5(t, dialTCP(t, e.addr("tcp")), &paho.Connect{
		ClientID: "dev-a", CleanStart: true, Username: "dev-a", UsernameFlag: true,
		Password: []byte(testPasswords["dev-a"]), PasswordFlag: true,
		WillMessage: &paho.WillMessage{Topic: topic.Alerts("dev-a"), Payload: []byte(`{"rule":"x"}`)},
	})
	if err == nil || ca == nil || ca.ReasonCode != 0x87 {
		t.Fatalf("connect with an alerts will = %+v, %v; want 0x87", ca, err)
	}
}
