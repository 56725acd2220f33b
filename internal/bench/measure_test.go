package bench

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMeasureIngest measures the generator against the bare mochi baseline
// and Mosquitto, each in its own process, with 10 devices and a window of
// 64: the figures the ingest benchmark is read beside. It runs only when
// FIELDHUB_BENCH_MEASURE=1 (it takes about 30 s):
//
//	FIELDHUB_BENCH_MEASURE=1 go test -run TestMeasureIngest -v ./internal/bench
//
// FIELDHUB_BENCH_DURATION (default 10s), FIELDHUB_BENCH_PROTOCOL (4 or 5),
// FIELDHUB_BENCH_DEVICES (default 10), FIELDHUB_BENCH_RATE (msgs/s, default
// unpaced), FIELDHUB_BENCH_WRITE_BATCH (default 0) and FIELDHUB_BENCH_TARGETS
// (default "mochi,mosquitto"; also "mosquitto-nodelay") change the run.
func TestMeasureIngest(t *testing.T) {
	if os.Getenv("FIELDHUB_BENCH_MEASURE") == "" {
		t.Skip("set FIELDHUB_BENCH_MEASURE=1 to measure")
	}
	duration := 10 * time.Second
	if s := os.Getenv("FIELDHUB_BENCH_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		duration = d
	}
	protocol := byte(4)
	if os.Getenv("FIELDHUB_BENCH_PROTOCOL") == "5" {
		protocol = 5
	}
	devices := 10
	if s := os.Getenv("FIELDHUB_BENCH_DEVICES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		devices = n
	}
	targets := "mochi,mosquitto"
	if s := os.Getenv("FIELDHUB_BENCH_TARGETS"); s != "" {
		targets = s
	}
	var rate float64
	if s := os.Getenv("FIELDHUB_BENCH_RATE"); s != "" {
		r, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatal(err)
		}
		rate = r
	}
	var batch int
	if s := os.Getenv("FIELDHUB_BENCH_WRITE_BATCH"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		batch = n
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*duration+time.Minute)
	defer cancel()

	run := func(label string, p *Process, devs []Device) IngestResult {
		defer p.Stop()
		res, err := RunIngest(ctx, IngestConfig{
			Label: label, Addr: p.Addr, Devices: devs, Protocol: protocol, Rate: rate, WriteBatch: batch,
			Warmup: 2 * time.Second, Duration: duration, ServerPID: p.PID, Logger: testLogger(t),
		})
		if err != nil {
			t.Fatalf("%s: %v", label, err)
		}
		var b strings.Builder
		res.Table(&b)
		j, _ := res.JSON()
		t.Logf("\n%s\n%s", b.String(), j)
		return res
	}
	var results []IngestResult
	for _, target := range strings.Split(targets, ",") {
		switch target {
		case "mochi":
			p, err := StartProcess(ctx, ProcessConfig{
				Path: os.Args[0], Args: []string{"-test.run=^$"}, Env: []string{childEnv + "=baseline"},
			})
			if err != nil {
				t.Fatal(err)
			}
			results = append(results, run("mochi", p, Devices(devices, "b")))
		case "mosquitto", "mosquitto-nodelay":
			needMosquitto(t)
			devs := authDevices(devices)
			p, err := StartMosquitto(ctx, MosquittoConfig{Devices: devs, NoDelay: target == "mosquitto-nodelay"})
			if err != nil {
				t.Fatal(err)
			}
			results = append(results, run(target, p, devs))
		default:
			t.Fatalf("unknown target %q", target)
		}
	}
	if len(results) == 2 {
		var b strings.Builder
		Compare(&b, results[0], results[1])
		t.Logf("\n%s", b.String())
	}
}
