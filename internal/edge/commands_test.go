package edge_test

import (
	"context"
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
}
