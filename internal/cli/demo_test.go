package cli

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/fhtest"
)

// TestDemoShowsData runs `fieldhub demo` and reads the simulated devices'
// telemetry back through the API it prints, as a newcomer would.
func TestDemoShowsData(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("FIELDHUB_MASTER_KEY_FILE", filepath.Join(dir, "master.key"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb fhtest.Buffer
	done := make(chan int)
	go func() {
		done <- Main(ctx, []string{"demo", "--data", filepath.Join(dir, "demo"), "--http-addr", "127.0.0.1:0",
			"--mqtt-addr", "127.0.0.1:0", "--mqtts-addr", "127.0.0.1:0", "--edge-mqtt-addr", "127.0.0.1:0", "--edge-http-addr", "127.0.0.1:0",
			"--devices", "3", "--interval", "100ms", "--spike-at", "2s", "--duration", "1m"}, &out, &errb)
	}()
	urlRE := regexp.MustCompile(`Dashboard:\s+(http://\S+)/\n\s+Admin token:\s+(\S+)`)
	var m []string
	deadline := time.Now().Add(30 * time.Second)
	for m == nil {
		select {
		case code := <-done:
			t.Fatalf("demo exited with %d; stdout: %s\nstderr: %s", code, out.String(), errb.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo printed no URL; stdout: %s\nstderr: %s", out.String(), errb.String())
		}
		time.Sleep(50 * time.Millisecond)
		m = urlRE.FindStringSubmatch(out.String())
	}
	base, token := m[1], m[2]
	get := func(path string, v any) {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s = %d %s", path, resp.StatusCode, b)
		}
		json.Unmarshal(b, v)
	}
	var latest struct {
		Metrics []struct {
			Metric string `json:"metric"`
		} `json:"metrics"`
	}
	deadline = time.Now().Add(20 * time.Second)
	for len(latest.Metrics) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("no telemetry from the demo devices after 20 s: %+v\nstderr: %s", latest, errb.String())
		}
		time.Sleep(100 * time.Millisecond)
		get("/api/v1/devices/demo-sensor-3/telemetry/latest", &latest)
	}
	var list struct {
		Devices []struct {
			ID     string `json:"id"`
			Online bool   `json:"online"`
		} `json:"devices"`
	}
	get("/api/v1/devices", &list)
	if len(list.Devices) != 4 { // the gateway and its three sensors
		t.Errorf("demo lists %d devices; want 4", len(list.Devices))
	}
	// The injected vibration spike raises a critical alert at the edge,
	// which reaches the hub.
	var alerts struct {
		Alerts []struct {
			Device   string `json:"device"`
			Metric   string `json:"metric"`
			Severity string `json:"severity"`
		} `json:"alerts"`
	}
	injected := func() bool {
		for _, a := range alerts.Alerts {
			if a.Device == "demo-sensor-2" && a.Metric == "vibration" && a.Severity == "critical" {
				return true
			}
		}
		return false
	}
	deadline = time.Now().Add(30 * time.Second)
	for !injected() {
		if time.Now().After(deadline) {
			t.Fatalf("no alert at the hub 30 s into the demo\nstderr: %s", errb.String())
		}
		time.Sleep(200 * time.Millisecond)
		get("/api/v1/alerts?severity=critical", &alerts)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("demo exit code %d; stderr: %s", code, errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo did not stop within 30 s of cancel")
	}
}
