package hub_test

import (
	"context"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/internal/config"
	"github.com/fieldhub/fieldhub/topic"
)

// TestParkedDevices: with mqtt_idle_after set, an idle device's connection
// parks, and commands, answers and telemetry still go through it; with 0,
// nothing parks.
func TestParkedDevices(t *testing.T) {
	cfg := hubConfig(t, t.TempDir())
	cfg.MQTTIdleAfter = config.Duration(50 * time.Millisecond)
	h := startHub(t, cfg)
	d := h.addDevice("parked-1", "password")
	c := dial5Handler(t, h.Addr("mqtt").String(), nil, d.ID, d.Password, func(c *paho.Client, p *paho.Publish) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = c.Publish(ctx, &paho.Publish{
			Topic: p.Properties.ResponseTopic, QoS: 1, Payload: []byte(`{"status":"ok"}`),
			Properties: &paho.PublishProperties{CorrelationData: p.Properties.CorrelationData},
		})
	})
	subscribe5(t, c, topic.Prefix+"/"+d.ID+"/commands/+")
	parked := func() bool { return h.counter("fieldhub_mqtt_connections_parked") == 1 }

	for i := range 3 {
		eventually(t, 5*time.Second, "the device's connection parked", parked)
		if cmd := h.sendCommand(d.ID, "ping", nil, "?wait=5s"); cmd.State != "succeeded" {
			t.Fatalf("command %d to a parked device: %s; want succeeded", i, cmd.State)
		}
		eventually(t, 5*time.Second, "parked again", parked)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := c.Publish(ctx, &paho.Publish{Topic: topic.Telemetry(d.ID), QoS: 1, Payload: telemetryJSON(i+1, 20+float64(i), time.Now())})
		cancel()
		if err != nil || resp.ReasonCode != 0 {
			t.Fatalf("telemetry %d from a parked device: %v, %+v", i, err, resp)
		}
	}
	if n := len(h.telemetry(d.ID)["temperature"]); n != 3 {
		t.Errorf("%d temperatures stored; want 3", n)
	}
	if r := h.counter("fieldhub_mqtt_connection_resumes_total", "cause", "readable"); r < 6 {
		t.Errorf("resumes{readable} = %v; want at least 6", r)
	}
}

func TestParkingDisabled(t *testing.T) {
	cfg := hubConfig(t, t.TempDir())
	cfg.MQTTIdleAfter = 0
	h := startHub(t, cfg)
	d := h.addDevice("awake-1", "password")
	dial5Handler(t, h.Addr("mqtt").String(), nil, d.ID, d.Password, func(*paho.Client, *paho.Publish) {})
	time.Sleep(300 * time.Millisecond)
	if p := h.counter("fieldhub_mqtt_connections_parked"); p != 0 {
		t.Errorf("parked = %v with mqtt_idle_after 0", p)
	}
}
