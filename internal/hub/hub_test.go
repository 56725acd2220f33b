package hub_test

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/fieldhub/fieldhub/topic"
)

var execLookPath = exec.LookPath

// publisher is one of the four ways a device reaches the hub in the tests.
type publisher struct {
	name    string
	publish func(t *testing.T, payload []byte) // QoS 1; returns after PUBACK
}

func TestClientsPublishAndQuery(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	mqttAddr := h.Addr("mqtt").String()
	mqttsAddr := h.Addr("mqtts").String()

	v5 := func(c *paho.Client, id string) func(*testing.T, []byte) {
		return func(t *testing.T, b []byte) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := c.Publish(ctx, &paho.Publish{Topic: topic.Telemetry(id), QoS: 1, Payload: b})
			if err != nil {
				t.Fatal(err)
			}
			if resp.ReasonCode != 0 {
				t.Fatalf("PUBACK reason 0x%02x", resp.ReasonCode)
			}
		}
	}
	v3 := func(c mqtt3.Client, id string) func(*testing.T, []byte) {
		return func(t *testing.T, b []byte) {
			tok := c.Publish(topic.Telemetry(id), 1, false, b)
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publish: %v", tok.Error())
			}
		}
	}

	var pubs []publisher
	{
		cr := h.addDevice("v5-password", "password")
		c, _, err := dial5(t, mqttAddr, nil, cr.ID, cr.ID, cr.Password)
		if err != nil {
			t.Fatal(err)
		}
		pubs = append(pubs, publisher{cr.ID, v5(c, cr.ID)})
	}
	{
		cr := h.addDevice("v3-password", "password")
		c, err := dial3(t, "tcp://"+mqttAddr, nil, cr.ID, cr.ID, cr.Password)
		if err != nil {
			t.Fatal(err)
		}
		pubs = append(pubs, publisher{cr.ID, v3(c, cr.ID)})
	}
	{
		cr := h.addDevice("v5-cert", "certificate")
		c, _, err := dial5(t, mqttsAddr, h.clientTLS(&cr), cr.ID, "", "")
		if err != nil {
			t.Fatal(err)
		}
		pubs = append(pubs, publisher{cr.ID, v5(c, cr.ID)})
	}
	{
		cr := h.addDevice("v3-cert", "certificate")
		c, err := dial3(t, "tls://"+mqttsAddr, h.clientTLS(&cr), cr.ID, "", "")
		if err != nil {
			t.Fatal(err)
		}
		pubs = append(pubs, publisher{cr.ID, v3(c, cr.ID)})
	}

	{
		cr := h.addDevice("v3-websocket", "password")
		c, err := dial3(t, "ws://"+h.Addr("ws").String()+"/mqtt", nil, cr.ID, cr.ID, cr.Password)
		if err != nil {
			t.Fatal(err)
		}
		pubs = append(pubs, publisher{cr.ID, v3(c, cr.ID)})
	}

	const n = 25
	base := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	for _, p := range pubs {
		for i := range n {
			p.publish(t, telemetryJSON(i+1, 20+float64(i)*0.25, base.Add(time.Duration(i)*time.Second)))
		}
	}
	// Acknowledged means durable and queryable.
	for _, p := range pubs {
		got := h.telemetry(p.name)
		temps := got["temperature"]
		if len(temps) != n || len(got["ok"]) != n || len(got["state"]) != n {
			t.Errorf("%s: stored %d/%d/%d points; want %d of each", p.name, len(temps), len(got["ok"]), len(got["state"]), n)
			continue
		}
		for i, pt := range temps {
			want := 20 + float64(i)*0.25
			if pt.Value != want || !pt.TS.Equal(base.Add(time.Duration(i)*time.Second)) {
				t.Errorf("%s: point %d = %v at %v; want %v at %v", p.name, i, pt.Value, pt.TS, want, base.Add(time.Duration(i)*time.Second))
			}
		}
		if got["ok"][0].Value != true || got["state"][0].Value != "run" {
			t.Errorf("%s: ok=%v state=%v; want true, run", p.name, got["ok"][0].Value, got["state"][0].Value)
		}
	}
	// The device list shows them online with a last-seen time.
	var list struct {
		Devices []struct {
			ID       string     `json:"id"`
			Online   bool       `json:"online"`
			LastSeen *time.Time `json:"last_seen"`
		} `json:"devices"`
	}
	h.api("GET", "/api/v1/devices", nil, &list)
	if len(list.Devices) != len(pubs) {
		t.Fatalf("listed %d devices; want %d", len(list.Devices), len(pubs))
	}
	for _, d := range list.Devices {
		if !d.Online || d.LastSeen == nil {
			t.Errorf("device %s: online=%v last_seen=%v; want online with a time", d.ID, d.Online, d.LastSeen)
		}
	}
	// Latest shows the last value of each metric.
	var latest struct {
		Metrics []struct {
			Metric string `json:"metric"`
			Value  any    `json:"value"`
		} `json:"metrics"`
	}
	h.api("GET", "/api/v1/devices/v5-password/telemetry/latest", nil, &latest)
	names := []string{}
	for _, m := range latest.Metrics {
		names = append(names, m.Metric)
		if m.Metric == "temperature" && m.Value != 20+float64(n-1)*0.25 {
			t.Errorf("latest temperature = %v; want %v", m.Value, 20+float64(n-1)*0.25)
		}
	}
	sort.Strings(names)
	if fmt.Sprint(names) != "[ok state temperature]" {
		t.Errorf("latest metrics = %v", names)
	}
	// Downsampled: 25 points at 1 s into 5 s buckets of avg.
	var ds struct {
		Series []series `json:"series"`
	}
	path := fmt.Sprintf("/api/v1/devices/v5-password/telemetry?metric=temperature&from=%d&to=%d&step=5s&agg=avg", base.UnixMilli(), base.Add(25*time.Second).UnixMilli())
	if code := h.api("GET", path, nil, &ds); code != 200 || len(ds.Series) != 1 || len(ds.Series[0].Points) != 5 {
		t.Fatalf("downsampled query = HTTP %d %+v; want 5 buckets", code, ds)
	}
	if v := ds.Series[0].Points[0].Value; v != 20.5 { // avg of 20, 20.25, 20.5, 20.75, 21
		t.Errorf("first bucket avg = %v; want 20.5", v)
	}
}

func TestDuplicateSeqStoredOnce(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	cr := h.addDevice("dup", "password")
	c, _, err := dial5(t, h.Addr("mqtt").String(), nil, cr.ID, cr.ID, cr.Password)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now().Add(-time.Minute)
	for range 3 { // the same message three times: acknowledged each time, stored once
		for i := 1; i <= 10; i++ {
			resp, err := c.Publish(context.Background(), &paho.Publish{Topic: topic.Telemetry(cr.ID), QoS: 1, Payload: telemetryJSON(i, float64(i), ts.Add(time.Duration(i)*time.Second))})
			if err != nil || resp.ReasonCode != 0 {
				t.Fatalf("publish: %v %v", err, resp)
			}
		}
	}
	if got := len(h.telemetry(cr.ID)["temperature"]); got != 10 {
		t.Errorf("stored %d points; want 10", got)
	}
	if got := h.counter("fieldhub_telemetry_messages_total", "result", "duplicate"); got != 20 {
		t.Errorf("duplicates counted = %v; want 20", got)
	}
}
