package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/config"
	"github.com/fieldhub/fieldhub/internal/fhtest"
	"github.com/fieldhub/fieldhub/internal/hub"
)

// TestSensor runs the example against a real hub: readings are stored,
// the twin shows the firmware, a desired interval is applied and
// reported, and "reboot" is answered before the sensor comes back.
func TestSensor(t *testing.T) {
	dir := t.TempDir()
	c := config.Default()
	c.Data = filepath.Join(dir, "data")
	c.MasterKeyFile = filepath.Join(dir, "master.key")
	c.MQTTSAddr = fhtest.FreePort(t)
	c.HTTPAddr = fhtest.FreePort(t)
	c.WSAddr = "off"
	h, err := hub.New(c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Shutdown(context.Background())
	api := func(method, path string, body, out any) int {
		t.Helper()
		return fhtest.API(t, method, "http://"+c.HTTPAddr+path, h.AdminToken(), body, out)
	}
	var created struct {
		Credentials struct {
			Password string `json:"password"`
		} `json:"credentials"`
	}
	if code := api("POST", "/api/v1/devices", map[string]any{"id": "sensor-1", "auth": "password"}, &created); code != 201 {
		t.Fatalf("creating the device: HTTP %d", code)
	}

	opts, err := parseFlags([]string{"-server", "mqtts://" + c.MQTTSAddr, "-id", "sensor-1",
		"-password", created.Credentials.Password, "-cafile", filepath.Join(c.Data, "ca.pem"), "-interval", "50ms"})
	if err != nil {
		t.Fatal(err)
	}
	logs := &fhtest.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	opts.cfg.Logger = log
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, opts, log) }()
	defer func() {
		stop()
		if err := <-done; err != nil && err != context.Canceled {
			t.Errorf("run = %v", err)
		}
	}()

	type twin struct {
		Reported struct {
			State map[string]any `json:"state"`
		} `json:"reported"`
	}
	var tw twin
	fhtest.Eventually(t, 10*time.Second, "firmware in the twin", func() bool {
		api("GET", "/api/v1/devices/sensor-1/twin", nil, &tw)
		return tw.Reported.State["firmware"] == firmware
	})
	fhtest.Eventually(t, 10*time.Second, "readings", func() bool {
		var series struct {
			Series []struct {
				Metric string `json:"metric"`
			} `json:"series"`
		}
		api("GET", "/api/v1/devices/sensor-1/telemetry?from=0", nil, &series)
		return len(series.Series) == 2
	})

	if code := api("PATCH", "/api/v1/devices/sensor-1/twin", map[string]any{"desired": map[string]any{"interval_s": 0.2}}, nil); code != 200 {
		t.Fatalf("PATCH twin = %d", code)
	}
	fhtest.Eventually(t, 10*time.Second, "the new interval reported", func() bool {
		api("GET", "/api/v1/devices/sensor-1/twin", nil, &tw)
		return tw.Reported.State["interval_s"] == 0.2
	})

	var cmd struct {
		State  string          `json:"state"`
		Result json.RawMessage `json:"result"`
	}
	api("POST", "/api/v1/devices/sensor-1/commands?wait=10s", map[string]any{"name": "reboot", "params": map[string]any{"reason": "test"}, "expires_in": "30s"}, &cmd)
	if cmd.State != "succeeded" || !strings.Contains(string(cmd.Result), `"rebooting":true`) {
		t.Fatalf("reboot command = %+v", cmd)
	}
	fhtest.Eventually(t, 15*time.Second, "the sensor back after its reboot", func() bool {
		var d struct {
			Online bool `json:"online"`
		}
		api("GET", "/api/v1/devices/sensor-1", nil, &d)
		return d.Online && strings.Count(logs.String(), "msg=connected") >= 2
	})
}
