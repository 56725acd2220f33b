package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldhub/fieldhub/internal/bench"
	"github.com/fieldhub/fieldhub/internal/spool"
)

func benchCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Reproducible benchmarks that print figures"}
	cmd.AddCommand(benchIngestCmd(stdout, stderr), benchConnectionsCmd(stdout, stderr), benchSpoolCmd(stdout), benchEdgeCmd(stdout, stderr), baselineBrokerCmd(stdout, stderr), benchCommandsCmd(stdout, stderr), benchClusterCmd(stdout, stderr))
	return cmd
}

type ingestFlags struct {
	devices, inflight, writeBatch, protocol, qos, batchReadings int
	duration, warmup                                            time.Duration
	rate                                                        float64
	format, baseline, baselineAddr, jsonOut                     string
	baselineUser, baselinePassword                              string
}

func benchIngestCmd(stdout, stderr io.Writer) *cobra.Command {
	var f ingestFlags
	cmd := &cobra.Command{
		Use:   "ingest",
		Short: "Durable QoS 1 ingest: N devices on real MQTT connections, beside a baseline broker in the same run",
		Long: `Starts a hub (fieldhub serve) in its own process on loopback with a fresh data folder,
registers N devices, and has them publish QoS 1 telemetry as fast as the acks allow (or at --rate)
for --duration. Prints messages/s, points/s, publish→ack p50/p99 and the hub's CPU per 1,000 messages.

--baseline runs the same load against a broker with no ingest behind it, in the same run:
  mochi      the bare embedded broker (mochi-mqtt) in its own process
  mosquitto  a local Mosquitto with the same devices' passwords and a per-device ACL
  none       no baseline
or --baseline-addr HOST:PORT for an external broker (with --baseline-user/--baseline-password,
else anonymous), and prints the ratio.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBenchIngest(cmd.Context(), f, stdout, stderr)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&f.devices, "devices", 10, "simulated devices, one connection each")
	fl.DurationVar(&f.duration, "duration", 10*time.Second, "measured time")
	fl.DurationVar(&f.warmup, "warmup", 2*time.Second, "unmeasured time before")
	fl.IntVar(&f.inflight, "inflight", 64, "unacknowledged messages per connection")
	fl.IntVar(&f.writeBatch, "write-batch", 0, "messages per socket write (0: the free window; 1: one write per message)")
	fl.Float64Var(&f.rate, "rate", 0, "total messages/s to send (0: as fast as acks allow)")
	fl.IntVar(&f.protocol, "protocol", 4, "MQTT protocol level: 4 (3.1.1) or 5")
	fl.IntVar(&f.qos, "qos", 1, "0 or 1")
	fl.StringVar(&f.format, "format", "json", "payload format: json, senml, or batch (an edge gateway's uplink: --batch-readings readings per message)")
	fl.IntVar(&f.batchReadings, "batch-readings", 100, "readings per message with --format batch")
	fl.StringVar(&f.baseline, "baseline", "mosquitto", "baseline broker: mochi, mosquitto or none")
	fl.StringVar(&f.baselineAddr, "baseline-addr", "", "an external baseline broker at HOST:PORT (overrides --baseline)")
	fl.StringVar(&f.baselineUser, "baseline-user", "", "username for --baseline-addr")
	fl.StringVar(&f.baselinePassword, "baseline-password", "", "password for --baseline-addr")
	fl.StringVar(&f.jsonOut, "json", "", "also write the results as JSON to this file")
	return cmd
}

func runBenchIngest(ctx context.Context, f ingestFlags, stdout, stderr io.Writer) error {
	if f.devices < 1 || f.devices > 10000 {
		return usageError{errors.New("--devices: want 1..10000")}
	}
	if f.protocol != 4 && f.protocol != 5 {
		return usageError{errors.New("--protocol: want 4 or 5")}
	}
	qos := byte(1)
	switch f.qos {
	case 0:
		qos = bench.QoSAtMostOnce
	case 1:
	default:
		return usageError{errors.New("--qos: want 0 or 1")}
	}
	log := newLogger(stderr, "warn", "text")
	dir, err := os.MkdirTemp("", "fieldhub-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	mqttAddr, err := bench.FreePort()
	if err != nil {
		return err
	}
	hub, err := newBenchHub(dir, log, "--mqtt-addr", mqttAddr, "--mqtts-addr", "off")
	if err != nil {
		return err
	}
	hub.Wait = mqttAddr
	hubProc, err := hub.start(ctx)
	if err != nil {
		return err
	}
	defer hubProc.Stop()

	devs := bench.Devices(f.devices, "bench")
	api := hub.api()
	for i := range devs {
		var d deviceJSON
		if err := api.do(ctx, http.MethodPost, "/api/v1/devices", map[string]any{"id": devs[i].ID}, &d); err != nil {
			return fmt.Errorf("registering %s: %w", devs[i].ID, err)
		}
		devs[i].Username, devs[i].Password = devs[i].ID, d.Credentials.Password
		if f.format == bench.FormatBatch {
			// A device is a gateway once another device sits behind it.
			if err := api.do(ctx, http.MethodPost, "/api/v1/devices", map[string]any{"id": devs[i].ID + "-child", "gateway": devs[i].ID}, nil); err != nil {
				return fmt.Errorf("registering a child of %s: %w", devs[i].ID, err)
			}
		}
	}
	run := func(label, addr string, pid int, devices []bench.Device) (bench.IngestResult, error) {
		fmt.Fprintf(stderr, "running %s: %d devices, %s after %s warm-up…\n", label, len(devices), f.duration, f.warmup)
		return bench.RunIngest(ctx, bench.IngestConfig{
			Label: label, Addr: addr, Devices: devices, Protocol: byte(f.protocol),
			Warmup: f.warmup, Duration: f.duration, Inflight: f.inflight, WriteBatch: f.writeBatch,
			Rate: f.rate, QoS: qos, PayloadFormat: f.format, BatchReadings: f.batchReadings, ServerPID: pid, Logger: log,
		})
	}
	hubRes, err := run("fieldhub (durable)", mqttAddr, hubProc.PID, devs)
	if err != nil {
		return fmt.Errorf("fieldhub run: %w", err)
	}
	// Cross-check with the hub's own counters: everything acknowledged in
	// the window (and the warm-up before it) must have been stored.
	stored, err := scrapeCounter(ctx, api, "fieldhub_telemetry_points_stored_total", "")
	if err != nil {
		return fmt.Errorf("reading the hub's metrics: %w", err)
	}
	hubProc.Stop()
	if int64(stored) < hubRes.Points {
		return fmt.Errorf("the hub counts %d stored points but acknowledged %d in the window: acknowledged data is missing", int64(stored), hubRes.Points)
	}

	var base *bench.IngestResult
	switch {
	case f.baselineAddr != "":
		bd := bench.Devices(f.devices, "bench")
		for i := range bd {
			bd[i].Username, bd[i].Password = f.baselineUser, f.baselinePassword
		}
		r, err := run("baseline "+f.baselineAddr, f.baselineAddr, 0, bd)
		if err != nil {
			return fmt.Errorf("baseline run: %w", err)
		}
		base = &r
	case f.baseline == "mochi":
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		p, err := bench.StartProcess(ctx, bench.ProcessConfig{Path: exe, Args: []string{"bench", "baseline-broker", "--addr", "127.0.0.1:0"}, Logger: log})
		if err != nil {
			return fmt.Errorf("starting the baseline broker: %w", err)
		}
		defer p.Stop()
		r, err := run("mochi-mqtt (no ingest)", p.Addr, p.PID, bench.Devices(f.devices, "bench"))
		if err != nil {
			return fmt.Errorf("baseline run: %w", err)
		}
		base = &r
	case f.baseline == "mosquitto":
		p, err := bench.StartMosquitto(ctx, bench.MosquittoConfig{Devices: devs, NoDelay: true, Logger: log})
		if err != nil {
			return fmt.Errorf("starting mosquitto (install Debian's mosquitto, or --baseline mochi|none): %w", err)
		}
		defer p.Stop()
		r, err := run("mosquitto (in memory)", p.Addr, p.PID, devs)
		if err != nil {
			return fmt.Errorf("baseline run: %w", err)
		}
		base = &r
	case f.baseline == "none":
	default:
		return usageError{fmt.Errorf("--baseline: want mochi, mosquitto or none, got %q", f.baseline)}
	}
	host, _ := os.Hostname()
	fmt.Fprintf(stdout, "fieldhub bench ingest — %s, %d cores, %s\n", host, numCPU(), time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(stdout, "hub stored %d points in all (warm-up included); %d acknowledged in the measured window\n", int64(stored), hubRes.Points)
	if base != nil {
		bench.Compare(stdout, hubRes, *base)
	} else {
		hubRes.Table(stdout)
	}
	if f.jsonOut != "" {
		out := map[string]any{"fieldhub": hubRes}
		if base != nil {
			out["baseline"] = base
		}
		b, err := jsonIndent(out)
		if err != nil {
			return err
		}
		if err := os.WriteFile(f.jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func baselineBrokerCmd(stdout, stderr io.Writer) *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:    "baseline-broker",
		Short:  "A bare mochi-mqtt broker with no ingest (the ingest benchmark's baseline)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return bench.RunBaselineBroker(cmd.Context(), addr, stdout, newLogger(stderr, "warn", "text"))
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:0", "listen address (loopback)")
	return cmd
}

// scrapeCounter reads one counter from the hub's /metrics text.
func scrapeCounter(ctx context.Context, c *apiClient, name, labels string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	prefix := name + " "
	if labels != "" {
		prefix = name + "{" + labels + "} "
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("%s{%s} not found", name, labels)
}

func benchConnectionsCmd(stdout, stderr io.Writer) *cobra.Command {
	var (
		conns, concurrency  int
		settle              time.Duration
		withTLS, mtls, bare bool
	)
	cmd := &cobra.Command{
		Use:   "connections",
		Short: "Idle connections one hub holds: RSS per connection and connects/s (plain TCP, TLS, TLS with client certificates)",
		Long: `Starts a hub in its own process (open policy, loopback) and opens --conns idle MQTT
connections to it over plain TCP, then over TLS (--tls), then over TLS with a client certificate
(--mtls), reporting the hub's RSS growth per connection and the connect rate. A process here is
capped near 20,000 descriptors, so measure at 10,000 and project.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			log := newLogger(stderr, "warn", "text")
			host, _ := os.Hostname()
			fmt.Fprintf(stdout, "fieldhub bench connections — %s, %d cores, %s\n", host, numCPU(), time.Now().UTC().Format(time.RFC3339))
			kinds := []string{"tcp"}
			if withTLS {
				kinds = append(kinds, "tls")
			}
			if mtls {
				kinds = append(kinds, "mtls")
			}
			// Each kind gets a fresh hub process, so that one measurement's
			// memory is not counted in the next.
			for _, kind := range kinds {
				if err := benchHubConnections(ctx, kind, conns, concurrency, settle, stdout, log); err != nil {
					return err
				}
			}
			if bare {
				b, err := bench.StartProcess(ctx, bench.ProcessConfig{Path: exe, Args: []string{"bench", "baseline-broker", "--addr", "127.0.0.1:0"}, Logger: log})
				if err != nil {
					return err
				}
				defer b.Stop()
				r, err := bench.RunConnections(ctx, bench.ConnConfig{Addr: b.Addr, Conns: conns, Concurrency: concurrency, Settle: settle, ServerPID: b.PID})
				if err != nil {
					return fmt.Errorf("bare mochi: %w", err)
				}
				r.Table(stdout, "bare mochi, no parking, TCP")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&conns, "conns", 10000, "idle connections to open")
	f.IntVar(&concurrency, "concurrency", 64, "connects in flight")
	f.DurationVar(&settle, "settle", 3*time.Second, "wait before reading RSS")
	f.BoolVar(&withTLS, "tls", true, "also measure TLS connections (server certificate only)")
	f.BoolVar(&mtls, "mtls", true, "also measure TLS connections with a client certificate (one device's, for all)")
	f.BoolVar(&bare, "baseline", true, "also measure the bare mochi-mqtt broker (fieldhub's copy; its own listener, so connections never park)")
	return cmd
}

func benchHubConnections(ctx context.Context, kind string, conns, concurrency int, settle time.Duration, stdout io.Writer, log *slog.Logger) error {
	dir, err := os.MkdirTemp("", "fieldhub-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	mqttAddr, _ := bench.FreePort()
	mqttsAddr, _ := bench.FreePort()
	hub, err := newBenchHub(dir, log, "--insecure-open-policy", "--mqtt-addr", mqttAddr, "--mqtts-addr", mqttsAddr)
	if err != nil {
		return err
	}
	hub.Wait, hub.LogLevel = mqttAddr, "error"
	p, err := hub.start(ctx)
	if err != nil {
		return err
	}
	defer p.Stop()
	// Devices have a keepalive, so each parked connection holds a timer.
	ka := uint16(min(max(2*settle/time.Second, 300), 65535))
	cfg := bench.ConnConfig{Addr: mqttAddr, Conns: conns, Concurrency: concurrency, Settle: settle, ServerPID: p.PID, Keepalive: ka}
	label := "hub, plain TCP"
	api := hub.api()
	if kind != "tcp" {
		pem, err := os.ReadFile(filepath.Join(dir, "data", "ca.pem"))
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		cfg.Addr, cfg.TLS, label = mqttsAddr, &tls.Config{RootCAs: pool, ServerName: "localhost"}, "hub, TLS"
	}
	if kind == "mtls" {
		// Every connection presents the same device certificate (the hub
		// runs an open policy); each still parses and verifies its own copy.
		var d deviceJSON
		if err := api.do(ctx, "POST", "/api/v1/devices", map[string]any{"id": "bench-mtls", "auth": "certificate"}, &d); err != nil {
			return fmt.Errorf("registering the certificate device: %w", err)
		}
		if d.Credentials == nil {
			return errors.New("registering the certificate device: no credentials in the answer")
		}
		cert, err := tls.X509KeyPair([]byte(d.Credentials.Certificate), []byte(d.Credentials.PrivateKey))
		if err != nil {
			return fmt.Errorf("the certificate device's credentials: %w", err)
		}
		cfg.TLS.Certificates, label = []tls.Certificate{cert}, "hub, TLS + client cert"
	}
	before, err := scrapeMem(ctx, api)
	if err != nil {
		return err
	}
	var after hubMem
	cfg.Settled = func(ctx context.Context) error {
		after, err = scrapeMem(ctx, api)
		return err
	}
	r, err := bench.RunConnections(ctx, cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	r.Table(stdout, label)
	n := float64(conns) * 1024
	fmt.Fprintf(stdout, "%-28s heap in use %.2f KiB/conn, stacks %.2f KiB/conn, heap goal %.1f MiB; %d goroutines, %d connections parked\n",
		"", (after.heap-before.heap)/n, (after.stack-before.stack)/n, after.goal/(1<<20), int(after.goroutines), int(after.parked))
	return nil
}

// hubMem is the hub's Go runtime memory, from its /metrics.
type hubMem struct{ heap, stack, goal, goroutines, parked float64 }

func scrapeMem(ctx context.Context, api *apiClient) (hubMem, error) {
	var m hubMem
	for _, f := range []struct {
		name string
		v    *float64
	}{
		{"go_memstats_heap_inuse_bytes", &m.heap},
		{"go_memstats_stack_inuse_bytes", &m.stack},
		{"go_memstats_next_gc_bytes", &m.goal},
		{"go_goroutines", &m.goroutines},
		{"fieldhub_mqtt_connections_parked", &m.parked},
	} {
		v, err := scrapeCounter(ctx, api, f.name, "")
		if err != nil {
			return m, fmt.Errorf("hub metrics: %w", err)
		}
		*f.v = v
	}
	return m, nil
}

func benchSpoolCmd(stdout io.Writer) *cobra.Command {
	var (
		n, size, concurrency int
		dir                  string
	)
	cmd := &cobra.Command{
		Use:   "spool",
		Short: "The edge spool: durable (fsynced) appends/s and replay (read + ack)/s",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := os.MkdirTemp(dir, "fieldhub-spool-bench-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(d)
			r, err := spool.RunBench(cmd.Context(), d, n, size, concurrency)
			if err != nil {
				return err
			}
			host, _ := os.Hostname()
			fmt.Fprintf(stdout, "fieldhub bench spool — %s, %d cores, %s, folder %s\n", host, numCPU(), time.Now().UTC().Format(time.RFC3339), dir)
			fmt.Fprintf(stdout, "%d records × %d B, %d concurrent appenders\n", r.Records, r.RecordBytes, r.Concurrency)
			fmt.Fprintf(stdout, "  durable append  %10.0f records/s   p50 %v  p99 %v   (%d group commits, %.1f records each)\n",
				r.AppendPerSec, r.AppendP50, r.AppendP99, r.Syncs, float64(r.Records)/float64(max(r.Syncs, 1)))
			fmt.Fprintf(stdout, "  replay + ack    %10.0f records/s\n", r.ReplayPerSec)
			fmt.Fprintf(stdout, "  on disk         %10.1f MiB (%.1f B/record)\n", float64(r.BytesOnDisk)/(1<<20), float64(r.BytesOnDisk)/float64(r.Records))
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&n, "records", 500000, "records to append and replay")
	f.IntVar(&size, "size", 100, "bytes per record")
	f.IntVar(&concurrency, "concurrency", 50, "concurrent appenders (each waits for its append to be durable)")
	f.StringVar(&dir, "dir", os.TempDir(), "folder on the disk to measure")
	return cmd
}
