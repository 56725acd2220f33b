package hub_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/payload"
	"github.com/fieldhub/fieldhub/topic"
)

// addChild registers a password device behind gateway gw.
func (h *testHub) addChild(id, gw string) creds {
	h.t.Helper()
	var out struct {
		Gateway     string `json:"gateway"`
		Credentials creds  `json:"credentials"`
	}
	code := h.api("POST", "/api/v1/devices", map[string]any{"id": id, "auth": "password", "gateway": gw}, &out)
	if code != http.StatusCreated || out.Gateway != gw {
		h.t.Fatalf("creating %s behind %s: HTTP %d, gateway %q", id, gw, code, out.Gateway)
	}
	out.Credentials.ID = id
	return out.Credentials
}

type apiAlert struct {
	Device   string    `json:"device"`
	TS       time.Time `json:"ts"`
	Received time.Time `json:"received"`
	Metric   string    `json:"metric"`
	Value    float64   `json:"value"`
	Rule     string    `json:"rule"`
	Severity string    `json:"severity"`
	Message  string    `json:"message"`
	State    string    `json:"state"`
}

// alerts lists alerts through the API with query q ("" or "?device=…").
func (h *testHub) alerts(q string) ([]apiAlert, string) {
	h.t.Helper()
	var out struct {
		Alerts []apiAlert `json:"alerts"`
		Next   string     `json:"next"`
	}
	if code := h.api("GET", "/api/v1/alerts"+q, nil, &out); code != 200 {
		h.t.Fatalf("GET /api/v1/alerts%s: HTTP %d", q, code)
	}
	return out.Alerts, out.Next
}

// publish5 publishes at QoS 1 and returns the PUBACK reason code.
func publish5(t *testing.T, c *paho.Client, name string, body []byte) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Publish(ctx, &paho.Publish{Topic: name, QoS: 1, Payload: body})
	if resp == nil {
		t.Fatalf("publish %s: no PUBACK: %v", name, err)
	}
	return resp.ReasonCode
}

func countPoints(m map[string][]point) int {
	n := 0
	for _, ps := range m {
		n += len(ps)
	}
	return n
}

// TestGatewayBatches drives the hub side of the edge uplink with real
// clients: a gateway with two children publishes gzip batches, alerts for
// its children, and is refused for devices that are not behind it.
func TestGatewayBatches(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	addr := h.Addr("mqtt").String()
	gwCreds := h.addDevice("gw-1", "password")
	h.addChild("child-1", "gw-1")
	h.addChild("child-2", "gw-1")
	h.addDevice("stranger", "password")
	lone := h.addDevice("lone", "password")

	gw, _, err := dial5(t, addr, nil, gwCreds.ID, gwCreds.ID, gwCreds.Password)
	if err != nil {
		t.Fatal(err)
	}

	// A gzip batch of both children: acked, stored under each child's id.
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	var readings []string
	for i := range 5 {
		dev := []string{"child-1", "child-2"}[i%2]
		readings = append(readings, fmt.Sprintf(`{"device":%q,"seq":%d,"ts":%q,"data":{"temperature":%g,"door":{"open":%v}}}`,
			dev, 100+i, t0.Add(time.Duration(i)*time.Second).UTC().Format(time.RFC3339Nano), 20.5+float64(i), i%2 == 0))
	}
	plain := []byte(`{"readings":[` + strings.Join(readings, ",") + `]}`)
	batch := gzipBytes(t, plain)
	if code := publish5(t, gw, topic.Batch("gw-1"), batch); code != 0 {
		t.Fatalf("batch PUBACK 0x%02x; want success", code)
	}
	c1, c2 := h.telemetry("child-1"), h.telemetry("child-2")
	if n := len(c1["temperature"]); n != 3 || len(c1["door.open"]) != 3 {
		t.Errorf("child-1 has %d temperature points (%v); want 3", n, c1)
	}
	if n := len(c2["temperature"]); n != 2 {
		t.Errorf("child-2 has %d temperature points; want 2", n)
	}
	if len(c1["temperature"]) > 0 {
		if p := c1["temperature"][0]; !p.TS.Equal(t0) || p.Value != 20.5 {
			t.Errorf("child-1's first point = %+v; want 20.5 at %v", p, t0)
		}
	}
	if n := countPoints(h.telemetry("gw-1")); n != 0 {
		t.Errorf("the gateway has %d points of its own", n)
	}

	// The same batch again (a resend after a lost PUBACK): acked, nothing new.
	if code := publish5(t, gw, topic.Batch("gw-1"), batch); code != 0 {
		t.Fatalf("resent batch PUBACK 0x%02x; want success", code)
	}
	if n1, n2 := countPoints(h.telemetry("child-1")), countPoints(h.telemetry("child-2")); n1 != 6 || n2 != 4 {
		t.Errorf("after a resend: %d and %d points; want 6 and 4", n1, n2)
	}
	if got := h.counter("fieldhub_telemetry_messages_total", "result", "duplicate"); got != 5 {
		t.Errorf("telemetry_messages_total{duplicate} = %v; want 5", got)
	}

	// A batch with one reading of a device not behind the gateway is
	// refused whole (0x87), and nothing of it is stored.
	bad := []byte(fmt.Sprintf(`{"readings":[{"device":"child-1","seq":200,"data":{"temperature":1}},{"device":"stranger","seq":1,"data":{"temperature":2}}]}`))
	if code := publish5(t, gw, topic.Batch("gw-1"), gzipBytes(t, bad)); code != 0x87 {
		t.Errorf("batch with a foreign reading: PUBACK 0x%02x; want 0x87", code)
	}
	if n := countPoints(h.telemetry("child-1")); n != 6 {
		t.Errorf("child-1 has %d points after a refused batch; want 6", n)
	}
	if n := countPoints(h.telemetry("stranger")); n != 0 {
		t.Errorf("stranger has %d points", n)
	}
	if got := h.counter("fieldhub_telemetry_batch_refused_total", "reason", "not_child"); got != 1 {
		t.Errorf("batch_refused_total{not_child} = %v; want 1", got)
	}
	// A malformed batch: 0x99.
	if code := publish5(t, gw, topic.Batch("gw-1"), []byte(`{"readings":[{"data":{}}]}`)); code != 0x99 {
		t.Errorf("malformed batch: PUBACK 0x%02x; want 0x99", code)
	}

	// A device with nobody behind it may not publish batches.
	lc, _, err := dial5(t, addr, nil, lone.ID, lone.ID, lone.Password)
	if err != nil {
		t.Fatal(err)
	}
	if code := publish5(t, lc, topic.Batch("lone"), plain); code != 0x87 {
		t.Errorf("non-gateway batch: PUBACK 0x%02x; want 0x87", code)
	}
	if got := h.counter("fieldhub_mqtt_acl_denials_total", "action", "publish", "reason", "not_gateway"); got != 1 {
		t.Errorf("acl_denials_total{publish,not_gateway} = %v; want 1", got)
	}
	if n := countPoints(h.telemetry("child-1")); n != 6 {
		t.Errorf("child-1 has %d points after lone's batch; want 6", n)
	}

	// The gateway publishes an alert for a child on the child's topic.
	alertTS := time.Now().Add(-30 * time.Second).Truncate(time.Millisecond).UTC()
	alert := fmt.Sprintf(`{"ts":%q,"metric":"temperature","value":93.2,"rule":"threshold_above","severity":"critical","message":"temperature 93.2 above 90","state":"raised"}`, alertTS.Format(time.RFC3339Nano))
	if code := publish5(t, gw, topic.Alerts("child-1"), []byte(alert)); code != 0 {
		t.Fatalf("alert for child-1: PUBACK 0x%02x; want success", code)
	}
	as, _ := h.alerts("")
	want := apiAlert{Device: "child-1", TS: alertTS, Metric: "temperature", Value: 93.2, Rule: "threshold_above",
		Severity: "critical", Message: "temperature 93.2 above 90", State: "raised"}
	if len(as) != 1 {
		t.Fatalf("alerts = %+v; want one", as)
	}
	as[0].Received = time.Time{}
	if !as[0].TS.Equal(want.TS) {
		t.Errorf("alert ts = %v; want %v", as[0].TS, want.TS)
	}
	as[0].TS = want.TS
	if as[0] != want {
		t.Errorf("alert = %+v; want %+v", as[0], want)
	}

	// An alert inside a batch (with a reading), for the other child.
	inBatch := payload.EncodeBatch(&payload.Batch{
		Messages: []*payload.Message{{Device: "child-2", Seq: 300, HasSeq: true,
			Points: []payload.Point{{Metric: "temperature", TS: time.Now().UnixNano(), Value: payload.NumberValue(-3)}}}},
		Alerts: []payload.Alert{{Device: "child-2", TS: time.Now().UnixNano(), Metric: "temperature", Value: -3,
			Rule: "threshold_below", Severity: payload.SeverityWarning, Message: "cold", State: payload.StateRaised}},
	}, true)
	if code := publish5(t, gw, topic.Batch("gw-1"), inBatch); code != 0 {
		t.Fatalf("batch with an alert: PUBACK 0x%02x; want success", code)
	}
	as, _ = h.alerts("?device=child-2")
	if len(as) != 1 || as[0].Rule != "threshold_below" || as[0].Message != "cold" || as[0].Severity != "warning" {
		t.Errorf("child-2's alerts = %+v; want the batch's one", as)
	}
	as, _ = h.alerts("")
	if len(as) != 2 || as[0].Device != "child-2" || as[1].Device != "child-1" {
		t.Errorf("all alerts = %+v; want child-2's (newer) then child-1's", as)
	}
	if as, next := h.alerts("?limit=1"); len(as) != 1 || as[0].Device != "child-2" || next == "" {
		t.Errorf("first page of 1 = %+v, next %q", as, next)
	} else if as, next := h.alerts("?limit=1&before=" + next); len(as) != 1 || as[0].Device != "child-1" || next != "" {
		t.Errorf("second page of 1 = %+v, next %q", as, next)
	}
	if as, _ := h.alerts("?severity=critical"); len(as) != 1 || as[0].Device != "child-1" {
		t.Errorf("critical alerts = %+v; want child-1's", as)
	}
	if got := h.counter("fieldhub_alerts_total", "severity", "critical"); got != 1 {
		t.Errorf("alerts_total{critical} = %v; want 1", got)
	}

	// The gateway may not raise an alert for a device that is not its child.
	if code := publish5(t, gw, topic.Alerts("stranger"), []byte(alert)); code != 0x87 {
		t.Errorf("alert for stranger: PUBACK 0x%02x; want 0x87", code)
	}
	if as, _ := h.alerts("?device=stranger"); len(as) != 0 {
		t.Errorf("stranger's alerts = %+v; want none", as)
	}
	// A device raises its own alert; it is marked seen.
	if code := publish5(t, lc, topic.Alerts("lone"), []byte(`{"message":"battery low","severity":"info"}`)); code != 0 {
		t.Errorf("own alert: PUBACK 0x%02x; want success", code)
	}
	if as, _ := h.alerts("?device=lone"); len(as) != 1 || as[0].Severity != "info" || as[0].State != "raised" {
		t.Errorf("lone's alerts = %+v", as)
	}

	// Children are seen through their gateway.
	var dev struct {
		LastSeen *time.Time `json:"last_seen"`
	}
	if code := h.api("GET", "/api/v1/devices/child-1", nil, &dev); code != 200 || dev.LastSeen == nil {
		t.Errorf("child-1: HTTP %d, last_seen %v; want a time", code, dev.LastSeen)
	}
}

func gzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
