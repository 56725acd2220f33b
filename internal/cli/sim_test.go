package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/bench"
	"github.com/fieldhub/fieldhub/internal/fhtest"
	"github.com/fieldhub/fieldhub/internal/sim"
)

// testHub is `fieldhub serve` in a child process on loopback.
type testHub struct {
	mqtt, mqtts, api, token string
}

func startTestHub(t *testing.T) testHub {
	t.Helper()
	dir := t.TempDir()
	h := testHub{mqtt: fhtest.FreePort(t), mqtts: fhtest.FreePort(t), api: "http://" + fhtest.FreePort(t), token: "sim-test-token-0123456789"}
	p, err := bench.StartProcess(context.Background(), bench.ProcessConfig{
		Path: fhtest.Binary(t),
		Args: []string{"serve", "--data", filepath.Join(dir, "data"), "--master-key-file", filepath.Join(dir, "master.key"),
			"--mqtt-addr", h.mqtt, "--mqtts-addr", h.mqtts, "--http-addr", strings.TrimPrefix(h.api, "http://"), "--log-level", "warn"},
		Env: []string{"FIELDHUB_ADMIN_TOKEN=" + h.token}, Addr: h.mqtt, StartTimeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	return h
}

// call sends a request to the hub's API and decodes the JSON answer.
func (h testHub) call(t *testing.T, method, path, body string, out any) int {
	t.Helper()
	var b any
	if body != "" {
		b = json.RawMessage(body)
	}
	return fhtest.API(t, method, h.api+path, h.token, b, out)
}

// onlineWithPrefix counts the devices whose id starts with prefix that the
// hub lists as online.
func (h testHub) onlineWithPrefix(t *testing.T, prefix string) int {
	var list struct {
		Devices []struct {
			ID     string `json:"id"`
			Online bool   `json:"online"`
		} `json:"devices"`
	}
	h.call(t, "GET", "/api/v1/devices?limit=1000&prefix="+prefix, "", &list)
	n := 0
	for _, d := range list.Devices {
		if d.Online {
			n++
		}
	}
	return n
}

// latestMetrics returns the metrics the hub holds a latest value of.
func (h testHub) latestMetrics(t *testing.T, id string) map[string]float64 {
	var latest struct {
		Metrics []struct {
			Metric string  `json:"metric"`
			Value  float64 `json:"value"`
		} `json:"metrics"`
	}
	h.call(t, "GET", "/api/v1/devices/"+id+"/telemetry/latest", "", &latest)
	m := map[string]float64{}
	for _, p := range latest.Metrics {
		m[p.Metric] = p.Value
	}
	return m
}

// runSimMain runs `fieldhub sim args…` in the background; the channel
// gets its exit code.
func runSimMain(ctx context.Context, args ...string) (*fhtest.Buffer, *fhtest.Buffer, <-chan int) {
	var out, errb fhtest.Buffer
	done := make(chan int, 1)
	go func() { done <- Main(ctx, append([]string{"sim"}, args...), &out, &errb) }()
	return &out, &errb, done
}

func waitExit(t *testing.T, done <-chan int, out, errb *fhtest.Buffer) {
	t.Helper()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("sim exit code %d\nstdout: %s\nstderr: %s", code, out, errb)
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("sim did not end\nstdout: %s\nstderr: %s", out, errb)
	}
}

// TestSim runs fleets against a real hub in its own process: 50 devices
// provisioned with passwords over plain MQTT (every one connects, the hub
// stores their telemetry, they answer commands sent through the API and
// follow a desired interval); the saved credentials file run again with
// SenML; and certificate devices over TLS.
func TestSim(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a hub process")
	}
	h := startTestHub(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	creds := filepath.Join(t.TempDir(), "fleet.csv")
	const n = 50
	out, errb, done := runSimMain(ctx, "--provision", "--server", "mqtt://"+h.mqtt, "--server-api", h.api, "--token", h.token,
		"--devices", "50", "--id-prefix", "t-", "--interval", "200ms", "--duration", "8s", "--status-every", "1s",
		"--save-credentials", creds)
	fhtest.Eventually(t, 30*time.Second, "50 sim devices online", func() bool {
		select {
		case code := <-done:
			t.Fatalf("sim exited early with %d\nstdout: %s\nstderr: %s", code, out, errb)
		default:
		}
		return h.onlineWithPrefix(t, "t-") == n
	})

	// A command sent through the API reaches a sim device and its answer
	// comes back.
	var cmd struct {
		State  string `json:"state"`
		Result struct {
			Command string         `json:"command"`
			Params  map[string]any `json:"params"`
		} `json:"result"`
	}
	if code := h.call(t, "POST", "/api/v1/devices/t-7/commands?wait=5s", `{"name":"hello","params":{"x":1}}`, &cmd); code != 201 ||
		cmd.State != "succeeded" || cmd.Result.Command != "hello" || cmd.Result.Params["x"] != 1.0 {
		t.Errorf("echo command = %d %+v", code, cmd)
	}
	if h.call(t, "POST", "/api/v1/devices/t-8/commands?wait=5s", `{"name":"set_interval","params":{"interval":"1s"}}`, &cmd); cmd.State != "succeeded" {
		t.Errorf("set_interval = %+v", cmd)
	}
	if h.call(t, "POST", "/api/v1/devices/t-8/commands?wait=5s", `{"name":"set_interval","params":{"interval":"often"}}`, &cmd); cmd.State != "failed" {
		t.Errorf("set_interval with a bad interval = %+v; want failed", cmd)
	}
	// A reboot: the device answers, disconnects, and comes back with its
	// boot count up.
	if h.call(t, "POST", "/api/v1/devices/t-10/commands?wait=5s", `{"name":"reboot","params":{"delay":0.2}}`, &cmd); cmd.State != "succeeded" {
		t.Errorf("reboot = %+v", cmd)
	}
	fhtest.Eventually(t, 10*time.Second, "t-10 rebooted", func() bool {
		var tw struct {
			Reported struct {
				State map[string]any `json:"state"`
			} `json:"reported"`
		}
		h.call(t, "GET", "/api/v1/devices/t-10/twin", "", &tw)
		return tw.Reported.State["boots"] == 2.0
	})
	// The twin: firmware and interval reported; a desired interval applied
	// and reported back.
	if code := h.call(t, "PATCH", "/api/v1/devices/t-9/twin", `{"desired":{"interval":"2s"}}`, nil); code != 200 {
		t.Errorf("PATCH twin = %d", code)
	}
	var tw struct {
		Reported struct {
			State map[string]any `json:"state"`
		} `json:"reported"`
		Delta map[string]any `json:"delta"`
	}
	fhtest.Eventually(t, 10*time.Second, "the desired interval reported back", func() bool {
		tw.Reported.State, tw.Delta = nil, nil // json.Unmarshal adds to a map it is given
		h.call(t, "GET", "/api/v1/devices/t-9/twin", "", &tw)
		return tw.Reported.State["interval"] == "2s" && len(tw.Delta) == 0
	})
	if tw.Reported.State["firmware"] != "1.0.0" {
		t.Errorf("reported %v", tw.Reported.State)
	}
	tw.Reported.State = nil
	h.call(t, "GET", "/api/v1/devices/t-8/twin", "", &tw)
	if tw.Reported.State["interval"] != "1s" {
		t.Errorf("after set_interval the twin reports %v", tw.Reported.State)
	}
	waitExit(t, done, out, errb)
	o := out.String()
	for _, want := range []string{"provisioned 50 devices (password auth)", "connected 50/50", "50 connected at least once", "0 refused by the hub", "0 dropped"} {
		if !strings.Contains(o, want) {
			t.Errorf("output lacks %q:\n%s", want, o)
		}
	}
	// Every device's telemetry is stored, all four default metrics.
	for i := 1; i <= n; i++ {
		id := "t-" + strconv.Itoa(i)
		if m := h.latestMetrics(t, id); len(m) != len(sim.DefaultMetricSpecs()) {
			t.Errorf("%s: the hub holds %v", id, m)
		}
	}

	// The saved credentials, SenML this time.
	before := h.latestMetrics(t, "t-3")
	out, errb, done = runSimMain(ctx, "--credentials", creds, "--devices", "5", "--server", "mqtt://"+h.mqtt,
		"--format", "senml", "--interval", "100ms", "--duration", "2s")
	waitExit(t, done, out, errb)
	if !strings.Contains(out.String(), "5 connected at least once") {
		t.Errorf("senml run:\n%s", out)
	}
	if after := h.latestMetrics(t, "t-3"); len(after) != 4 || after["humidity"] == before["humidity"] && after["temperature"] == before["temperature"] {
		t.Errorf("no new SenML readings of t-3: before %v, after %v\n%s", before, after, errb)
	}

	// Certificate devices over TLS (the CA comes with the credentials).
	out, errb, done = runSimMain(ctx, "--provision", "--auth", "certificate", "--server", "mqtts://"+h.mqtts, "--server-api", h.api,
		"--token", h.token, "--devices", "5", "--id-prefix", "c-", "--interval", "100ms", "--duration", "2s")
	waitExit(t, done, out, errb)
	if !strings.Contains(out.String(), "5 connected at least once") {
		t.Errorf("certificate run:\n%s", out)
	}
	if m := h.latestMetrics(t, "c-5"); len(m) != 4 {
		t.Errorf("c-5: the hub holds %v", m)
	}
}

// TestSimUsage checks that unusable settings are refused before anything
// connects, with exit code 2.
func TestSimUsage(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yml")
	os.WriteFile(bad, []byte("devices: 3\nintervall: 1s\n"), 0o600)
	for _, args := range [][]string{
		{}, // no credential source
		{"--provision", "--format", "cbor"},
		{"--provision", "--auth", "certificate"}, // over mqtt://
		{"--provision", "--devices", "1000001"},  // beyond sim.MaxDevices
		{"--scenario", bad, "--provision"},
		{"--scenario", filepath.Join(dir, "missing.yml")},
		{"--credentials", filepath.Join(dir, "missing.csv")},
		{"--provision", "--interval", "0s"},
	} {
		var out, errb bytes.Buffer
		code := Main(context.Background(), append([]string{"sim"}, args...), &out, &errb)
		if code == 0 {
			t.Errorf("sim %v = exit 0; want a refusal", args)
		}
		if len(args) > 0 && args[0] == "--credentials" {
			continue // a missing file is exit 1
		}
		if code != 2 {
			t.Errorf("sim %v = exit %d (%s); want 2", args, code, errb.String())
		}
	}
}

// TestCheckDescriptors checks that a fleet bigger than the process's
// descriptor limit is refused before it starts.
func TestCheckDescriptors(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Skip(err)
	}
	var ue usageError
	if err := checkDescriptors(int(min(rl.Cur, 1<<40))); !errors.As(err, &ue) || !strings.Contains(err.Error(), "--first") {
		t.Errorf("checkDescriptors(limit) = %v; want a usage error suggesting --first", err)
	}
	if err := checkDescriptors(10); err != nil {
		t.Errorf("checkDescriptors(10) = %v", err)
	}
}

// TestSimScenarioFlags checks that flags that are set override the
// scenario file and the others leave it alone.
func TestSimScenarioFlags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.yml")
	os.WriteFile(path, []byte("devices: 3\ninterval: 2s\nformat: senml\nramp: 1m\nmetrics:\n  - {name: level, wave: constant, value: 4}\n"), 0o600)
	cmd, f := newSimCmd(io.Discard, io.Discard)
	if err := cmd.ParseFlags([]string{"--scenario", path, "--interval", "500ms", "--id-prefix", "x-"}); err != nil {
		t.Fatal(err)
	}
	sc, err := simScenario(cmd.Flags(), *f)
	if err != nil {
		t.Fatal(err)
	}
	if sc.Devices != 3 || sc.Interval != 500*time.Millisecond || sc.Format != sim.FormatSenML || sc.Ramp != time.Minute ||
		sc.IDPrefix != "x-" || len(sc.Metrics) != 1 || sc.Metrics[0].Name != "level" {
		t.Errorf("scenario %+v", sc)
	}
}
