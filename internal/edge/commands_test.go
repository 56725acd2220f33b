package edge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/internal/edge"
	"github.com/fieldhub/fieldhub/internal/registry"
	"github.com/fieldhub/fieldhub/topic"
)

// TestCommandRelay: a command sent through the hub's API to a sensor
// behind the edge is relayed on the edge's local broker, and the sensor's
// answer travels back to the hub; a sensor that is not connected to the
// edge fails at once.
func TestCommandRelay(t *testing.T) {
	dir := t.TempDir()
	hb := newHubEnv(t, dir)
	var gw struct {
		Credentials struct {
			Certificate string `json:"certificate"`
			PrivateKey  string `json:"private_key"`
		} `json:"credentials"`
	}
	if code := hb.api("POST", "/api/v1/devices", map[string]any{"id": "gw", "auth": "certificate"}, &gw); code != 201 {
		t.Fatalf("creating the gateway: %d", code)
	}
	for _, id := range []string{"s1", "s2"} {
		if code := hb.api("POST", "/api/v1/devices", map[string]any{"id": id, "gateway": "gw"}, nil); code != 201 {
			t.Fatalf("creating %s: %d", id, code)
		}
	}
	os.WriteFile(filepath.Join(dir, "gw.crt"), []byte(gw.Credentials.Certificate), 0o600)
	os.WriteFile(filepath.Join(dir, "gw.key"), []byte(gw.Credentials.PrivateKey), 0o600)
	os.WriteFile(filepath.Join(dir, "ca.pem"), hb.h.CAPEM(), 0o600)
	hash := registry.HashPassword([]byte("sensor-password-1"), registry.PasswordParams{Memory: 1024, Iterations: 1})
	cfg := edge.Config{
		ID:   "gw",
		Data: filepath.Join(dir, "edge"),
		Hub: edge.Hub{Addr: hb.cfg.MQTTSAddr, CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "gw.crt"),
			KeyFile: filepath.Join(dir, "gw.key"), ServerName: "localhost"},
		Listen:   edge.Listen{MQTTAddr: "127.0.0.1:0"},
		HTTPAddr: "off",
		Sensors:  []edge.Sensor{{ID: "s1", PasswordHash: hash}, {ID: "s2", PasswordHash: hash}},
		Version:  "9.9.9-test",
	}
	e, err := edge.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Shutdown(context.Background()) })
	eventually(t, 20*time.Second, "the uplink", e.UplinkConnected)

	// Sensor s1 answers "blink" commands on the response topic it is given.
	conn, err := net.Dial("tcp", e.Addr("mqtt").String())
	if err != nil {
		t.Fatal(err)
	}
	var c *paho.Client
	c = paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			p := pr.Packet
			if p.Properties == nil || p.Properties.ResponseTopic == "" {
				t.Errorf("command without a response topic: %+v", p)
				return true, nil
			}
			go c.Publish(context.Background(), &paho.Publish{Topic: p.Properties.ResponseTopic, QoS: 1,
				Properties: &paho.PublishProperties{CorrelationData: p.Properties.CorrelationData},
				Payload:    []byte(`{"status":"ok","result":{"blinked":3}}`)})
			return true, nil
		},
	}})
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "s1", Username: "s1", UsernameFlag: true, Password: []byte("sensor-password-1"), PasswordFlag: true, KeepAlive: 30, CleanStart: true}); err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(&paho.Disconnect{})
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic.Command("s1", "+"), QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	type cmdState struct {
		State  string         `json:"state"`
		Result map[string]any `json:"result"`
		Error  string         `json:"error"`
	}
	var got cmdState
	if code := hb.api("POST", "/api/v1/devices/s1/commands?wait=15s", map[string]any{"name": "blink", "params": map[string]any{"times": 3}}, &got); code >= 300 {
		t.Fatalf("sending the command: HTTP %d", code)
	}
	if got.State != "succeeded" || fmt.Sprint(got.Result["blinked"]) != "3" {
		t.Errorf("command through the edge = %+v; want succeeded with blinked 3", got)
	}

	// s2 is behind the gateway but not connected to it.
	got = cmdState{}
	hb.api("POST", "/api/v1/devices/s2/commands?wait=15s", map[string]any{"name": "blink"}, &got)
	if got.State != "failed" || !strings.Contains(got.Error, "not connected") {
		t.Errorf("command to an absent sensor = %+v; want failed, not connected", got)
	}

	checkGatewayReport(t, hb, c)
}

// checkGatewayReport: the gateway reports its firmware and spool state in
// its twin at the hub, the hub lists it among the gateways with that
// state, a sensor's firmware report travels through it, and readings sent
// through it give the sensor a message rate.
func checkGatewayReport(t *testing.T, hb *hubEnv, s1 *paho.Client) {
	t.Helper()
	var tw struct {
		Reported struct {
			State struct {
				Firmware string `json:"firmware"`
				Edge     struct {
					Spool *edge.SpoolReport `json:"spool"`
				} `json:"edge"`
			} `json:"state"`
		} `json:"reported"`
	}
	eventually(t, 20*time.Second, "the spool state in the gateway's reported twin", func() bool {
		hb.api("GET", "/api/v1/devices/gw/twin", nil, &tw)
		return tw.Reported.State.Edge.Spool != nil
	})
	sp := tw.Reported.State.Edge.Spool
	if tw.Reported.State.Firmware != "9.9.9-test" {
		t.Errorf("reported firmware = %q; want 9.9.9-test", tw.Reported.State.Firmware)
	}
	if sp.MaxBytes != 1<<30 || sp.Uplink.State != "connected" || sp.Uplink.Since.IsZero() || sp.ReportedAt.IsZero() || sp.Records < 0 || sp.Bytes < 0 {
		t.Errorf("spool report = %+v; want max_bytes 1 GiB, a connected uplink, times and sizes", *sp)
	}
	for _, k := range []string{"overflow", "age", "refused", "no_space", "hub_refused"} {
		if v, ok := sp.Drops[k]; !ok || v != 0 {
			t.Errorf("drops[%s] = %d, %v; want 0, present", k, v, ok)
		}
	}

	var gws struct {
		Gateways []struct {
			ID       string          `json:"id"`
			Online   bool            `json:"online"`
			Firmware string          `json:"firmware"`
			Children int             `json:"children"`
			Spool    json.RawMessage `json:"spool"`
		} `json:"gateways"`
	}
	if code := hb.api("GET", "/api/v1/gateways", nil, &gws); code != 200 {
		t.Fatalf("GET /api/v1/gateways = %d", code)
	}
	if len(gws.Gateways) != 1 || gws.Gateways[0].ID != "gw" || !gws.Gateways[0].Online || gws.Gateways[0].Firmware != "9.9.9-test" ||
		gws.Gateways[0].Children != 2 || !strings.Contains(string(gws.Gateways[0].Spool), `"max_bytes":1073741824`) {
		t.Errorf("GET /api/v1/gateways = %+v; want gw online, firmware 9.9.9-test, 2 children, its spool", gws.Gateways)
	}

	// Six readings of s1 through the gateway: s1's rate at the hub.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// s1 reports its firmware through the gateway.
	if resp, err := s1.Publish(ctx, &paho.Publish{Topic: topic.TwinReported("s1"), QoS: 1, Payload: []byte(`{"firmware":{"version":"3.1.4"}}`)}); err != nil || resp.ReasonCode != 0 {
		t.Fatalf("reporting s1's firmware through the gateway: %v %+v", err, resp)
	}
	for i := 1; i <= 6; i++ {
		if _, err := s1.Publish(ctx, &paho.Publish{Topic: topic.Telemetry("s1"), QoS: 1, Payload: []byte(fmt.Sprintf(`{"seq":%d,"data":{"t":%d}}`, i, i))}); err != nil {
			t.Fatal(err)
		}
	}
	type row struct {
		ID       string  `json:"id"`
		MsgRate  float64 `json:"msg_rate"`
		Firmware string  `json:"firmware"`
	}
	var list struct {
		Devices []row `json:"devices"`
	}
	byID := map[string]row{}
	eventually(t, 20*time.Second, "s1's message rate", func() bool {
		hb.api("GET", "/api/v1/devices?limit=50", nil, &list)
		for _, d := range list.Devices {
			byID[d.ID] = d
		}
		return byID["s1"].MsgRate >= 6
	})
	if byID["gw"].Firmware != "9.9.9-test" || byID["s1"].Firmware != "3.1.4" || byID["s2"].MsgRate != 0 || byID["s2"].Firmware != "" {
		t.Errorf("device list = %+v; want gw with firmware 9.9.9-test, s1 with 3.1.4, s2 with rate 0 and no firmware", list.Devices)
	}
}
