package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldhub/fieldhub/internal/bench"
	"github.com/fieldhub/fieldhub/internal/registry"
)

type edgeBenchFlags struct {
	sensors, batchMax int
	duration, outage  time.Duration
	rate, uplinkRate  float64
}

func benchEdgeCmd(stdout, stderr io.Writer) *cobra.Command {
	var f edgeBenchFlags
	cmd := &cobra.Command{
		Use:   "edge",
		Short: "Sensor → edge → hub end to end: throughput, edge RSS, and the drain of an outage's backlog",
		Long: `Starts a hub and an edge gateway, each in its own process on loopback, registers the gateway
(certificate) and --sensors sensors behind it, then:
  1. steady load: the sensors publish QoS 1 telemetry to the edge at --rate (0: as fast as acks allow)
     for --duration; prints the edge's acked rate, the end-to-end rate into the hub and the edge's RSS;
  2. outage: stops the hub, has the sensors publish --outage worth of readings at 1 Hz each (sent
     faster, with their original timestamps), restarts the hub, and times the drain of the backlog.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBenchEdge(cmd.Context(), f, stdout, stderr)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&f.sensors, "sensors", 20, "sensors behind the edge, one connection each")
	fl.DurationVar(&f.duration, "duration", 10*time.Second, "steady-load phase")
	fl.Float64Var(&f.rate, "rate", 20, "total sensor messages/s in the steady phase (0: as fast as acks allow)")
	fl.DurationVar(&f.outage, "outage", time.Hour, "simulated hub outage (its backlog: sensors × 1 Hz × outage)")
	fl.Float64Var(&f.uplinkRate, "uplink-rate", 5000, "the edge's uplink.rate (readings/s during the drain; 0 unlimited)")
	fl.IntVar(&f.batchMax, "batch-max", 500, "the edge's uplink.batch_max")
	return cmd
}

func runBenchEdge(ctx context.Context, f edgeBenchFlags, stdout, stderr io.Writer) error {
	log := newLogger(stderr, "warn", "text")
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "fieldhub-bench-edge-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	hubMQTTS, _ := bench.FreePort()
	edgeMQTT, _ := bench.FreePort()
	hub, err := newBenchHub(filepath.Join(dir, "hub"), log, "--mqtts-addr", hubMQTTS)
	if err != nil {
		return err
	}
	hub.Wait = hubMQTTS
	hubProc, err := hub.start(ctx)
	if err != nil {
		return err
	}
	defer func() { hubProc.Stop() }()
	api := hub.api()
	var gw deviceJSON
	if err := api.do(ctx, http.MethodPost, "/api/v1/devices", map[string]any{"id": "bench-gw", "auth": "certificate"}, &gw); err != nil {
		return fmt.Errorf("registering the gateway: %w", err)
	}
	for name, data := range map[string]string{"gw.crt": gw.Credentials.Certificate, "gw.key": gw.Credentials.PrivateKey, "ca.pem": gw.Credentials.CA} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			return err
		}
	}
	devs := bench.Devices(f.sensors, "sensor")
	var sensors strings.Builder
	for i := range devs {
		if err := api.do(ctx, http.MethodPost, "/api/v1/devices", map[string]any{"id": devs[i].ID, "gateway": "bench-gw"}, nil); err != nil {
			return fmt.Errorf("registering %s: %w", devs[i].ID, err)
		}
		devs[i].Username, devs[i].Password = devs[i].ID, "password-"+devs[i].ID
		fmt.Fprintf(&sensors, "  - id: %s\n    password_hash: %q\n", devs[i].ID, registry.HashPassword([]byte(devs[i].Password), registry.PasswordParams{}))
	}
	cfgPath := filepath.Join(dir, "edge.yml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("id: bench-gw\ndata: %s\nhub:\n  addr: %s\n  ca_file: %s\n  cert_file: %s\n  key_file: %s\n  server_name: localhost\nlisten:\n  mqtt_addr: %s\nhttp_addr: \"off\"\nsensors:\n%suplink:\n  rate: %g\n  batch_max: %d\n  backoff_min: 100ms\n  backoff_max: 1s\nlog_level: warn\n",
		filepath.Join(dir, "edge"), hubMQTTS, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "gw.crt"), filepath.Join(dir, "gw.key"), edgeMQTT, sensors.String(), uplinkRateYAML(f.uplinkRate), f.batchMax)), 0o600); err != nil {
		return err
	}
	edgeProc, err := bench.StartProcess(ctx, bench.ProcessConfig{Path: exe, Args: []string{"edge", "--config", cfgPath}, Addr: edgeMQTT, StartTimeout: 30 * time.Second, Logger: log})
	if err != nil {
		return fmt.Errorf("starting the edge: %w", err)
	}
	defer edgeProc.Stop()

	host, _ := os.Hostname()
	fmt.Fprintf(stdout, "fieldhub bench edge — %s, %d cores, %s; %d sensors → edge → hub\n", host, numCPU(), time.Now().UTC().Format(time.RFC3339), f.sensors)
	storedPoints := func() float64 {
		v, err := scrapeCounter(ctx, api, "fieldhub_telemetry_points_stored_total", "")
		if err != nil {
			return -1
		}
		return v
	}
	// 1. Steady load.
	before := storedPoints()
	start := time.Now()
	r, err := bench.RunIngest(ctx, bench.IngestConfig{Label: "sensors → edge", Addr: edgeMQTT, Devices: devs, Warmup: time.Second,
		Duration: f.duration, Rate: f.rate, ServerPID: edgeProc.PID, Logger: log})
	if err != nil {
		return fmt.Errorf("steady load: %w", err)
	}
	want := before + float64(r.Messages*3)
	drained, err := waitFor(ctx, time.Minute, func() bool { return storedPoints() >= want*0.999 })
	if err != nil {
		return err
	}
	e2e := (storedPoints() - before) / time.Since(start).Seconds()
	rss, _ := bench.ProcRSS(edgeProc.PID)
	fmt.Fprintf(stdout, "steady: edge acked %.0f msgs/s (p50 %v, p99 %v, edge CPU %.2f ms per 1k msgs); hub stored %.0f points/s end to end (drained %v after the load)\n",
		r.MsgsPerSec, r.P50, r.P99, float64(r.ServerCPUPer1k)/1e6, e2e, drained.Round(time.Millisecond))
	fmt.Fprintf(stdout, "edge RSS with %d connected sensors after the steady phase: %.1f MiB\n", f.sensors, float64(rss)/(1<<20))

	// 2. Outage and drain.
	// The backlog of the outage is published faster than real time: at
	// fillRate for as long as it takes to reach sensors × 1 Hz × outage.
	const fillRate = 20000.0
	backlog := float64(f.sensors) * f.outage.Seconds()
	hubProc.Stop()
	pr, err := bench.RunIngest(ctx, bench.IngestConfig{Label: "outage", Addr: edgeMQTT, Devices: devs,
		Duration: time.Duration(backlog / fillRate * float64(time.Second)), Rate: fillRate, Logger: log})
	if err != nil {
		return fmt.Errorf("filling the backlog: %w", err)
	}
	if hubProc, err = hub.start(ctx); err != nil {
		return fmt.Errorf("restarting the hub: %w", err)
	}
	// The restarted hub's counter starts at zero and counts each point once.
	target := float64(pr.Messages * 3)
	d, err := waitFor(ctx, 30*time.Minute, func() bool { return storedPoints() >= target })
	if err != nil {
		return fmt.Errorf("draining the backlog: %w", err)
	}
	fmt.Fprintf(stdout, "outage: %d readings (%d sensors × 1 Hz × %v) spooled at %.0f msgs/s; after the hub returned, drained in %v (%.0f readings/s; uplink.rate %g)\n",
		pr.Messages, f.sensors, f.outage, pr.MsgsPerSec, d.Round(time.Millisecond), float64(pr.Messages)/d.Seconds(), f.uplinkRate)
	return nil
}

func uplinkRateYAML(r float64) float64 {
	if r <= 0 {
		return 1e9 // unlimited in practice
	}
	return r
}

func waitFor(ctx context.Context, limit time.Duration, cond func() bool) (time.Duration, error) {
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			return 0, fmt.Errorf("not done after %v", limit)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return time.Since(start), nil
}
