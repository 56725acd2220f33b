package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldhub/fieldhub/internal/config"
	"github.com/fieldhub/fieldhub/internal/edge"
	"github.com/fieldhub/fieldhub/internal/hub"
	"github.com/fieldhub/fieldhub/internal/pipeline"
	"github.com/fieldhub/fieldhub/internal/registry"
	"github.com/fieldhub/fieldhub/internal/sim"
	"github.com/fieldhub/fieldhub/internal/store"
)

// demoGateway is the id of the demo's edge gateway at the hub.
const demoGateway = "demo-edge"

type demoFlags struct {
	data, httpAddr, mqttAddr, mqttsAddr, edgeAddr, edgeHTTP, logLevel string
	devices                                                           int
	interval, duration, spikeAt                                       time.Duration
}

func demoCmd(stdout, stderr io.Writer) *cobra.Command {
	var f demoFlags
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a hub and an edge gateway on loopback, with simulated sensors behind the edge",
		Long: `Starts, in one process and on loopback: a hub (embedded store in --data), an edge gateway
connected to it over MQTT/TLS with its own certificate, and simulated sensors (temperature,
humidity, vibration) publishing to the edge over real MQTT connections. One sensor's vibration
spikes after --spike-at: the edge's pipeline raises a critical alert that reaches the hub.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.Context(), f, stdout, stderr)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.data, "data", "./fieldhub-demo", "data folder of the demo (hub and edge)")
	fl.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:8080", "hub REST API and dashboard address")
	fl.StringVar(&f.mqttAddr, "mqtt-addr", "127.0.0.1:1883", "hub plain MQTT address (loopback)")
	fl.StringVar(&f.mqttsAddr, "mqtts-addr", "127.0.0.1:8883", "hub MQTT over TLS address (the edge's uplink)")
	fl.StringVar(&f.edgeAddr, "edge-mqtt-addr", "127.0.0.1:1884", "edge gateway's local MQTT address for the sensors")
	fl.StringVar(&f.edgeHTTP, "edge-http-addr", "127.0.0.1:9102", "edge gateway's health and metrics address")
	fl.IntVar(&f.devices, "devices", 5, "number of simulated sensors behind the edge")
	fl.DurationVar(&f.interval, "interval", time.Second, "time between two messages of a sensor")
	fl.DurationVar(&f.duration, "duration", 0, "stop after this long (0 runs until Ctrl-C)")
	fl.DurationVar(&f.spikeAt, "spike-at", 15*time.Second, "when the injected vibration anomaly happens")
	fl.StringVar(&f.logLevel, "log-level", "warn", "debug, info, warn or error")
	return cmd
}

func runDemo(ctx context.Context, f demoFlags, stdout, stderr io.Writer) error {
	if f.devices < 1 || f.devices > 1000 {
		return usageError{errors.New("--devices: want 1..1000")}
	}
	cfg := config.Default()
	if err := cfg.ApplyEnv(func(k string) string {
		if k == "FIELDHUB_MASTER_KEY" || k == "FIELDHUB_MASTER_KEY_FILE" {
			return envOr(k, "")
		}
		return "" // the demo's own flags decide the rest
	}); err != nil {
		return err
	}
	cfg.Data = filepath.Join(f.data, "hub")
	cfg.HTTPAddr, cfg.MQTTAddr, cfg.MQTTSAddr = f.httpAddr, f.mqttAddr, f.mqttsAddr
	cfg.LogLevel = f.logLevel
	cfg.CheckpointInterval = config.Duration(30 * time.Second)
	log := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	h, err := hub.New(cfg, log.With("role", "hub"))
	if err != nil {
		return err
	}
	if f.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.duration)
		defer cancel()
	}
	if err := h.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		h.Shutdown(sctx)
	}()

	ecfg, sims, err := demoEdgeConfig(ctx, h, f)
	if err != nil {
		return err
	}
	e, err := edge.New(ecfg, log.With("role", "edge"))
	if err != nil {
		return err
	}
	if err := e.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		e.Shutdown(sctx)
	}()

	var wg sync.WaitGroup
	simCfg := sim.Config{Addr: e.Addr("mqtt").String(), Interval: f.interval, Logger: log.With("component", "sim")}
	for _, d := range sims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sim.Run(ctx, simCfg, d)
		}()
	}
	api := "http://" + h.Addr("http").String()
	tok := h.AdminToken()
	fmt.Fprintf(stdout, `
fieldhub demo is running (data in %s):
  hub  ← edge gateway %q (MQTT/TLS, certificate) ← %d simulated sensors (MQTT, passwords)

  Dashboard:   %s/
  Admin token: %s
  Hub MQTT:    %s (plain, loopback)   MQTTS: %s
  Edge MQTT:   %s (sensors)           Edge metrics: http://%s/metrics

  Try:  curl -s -H "Authorization: Bearer %s" %s/api/v1/devices
        curl -s -H "Authorization: Bearer %s" %s/api/v1/devices/%s/telemetry/latest
        curl -s -H "Authorization: Bearer %s" %s/api/v1/alerts    # a vibration spike on %s at ~%s

Press Ctrl-C to stop.
`, f.data, demoGateway, len(sims), api, tok, h.Addr("mqtt"), h.Addr("mqtts"), e.Addr("mqtt"), addrOr(e, "http"),
		tok, api, tok, api, sims[0].ID, tok, api, sims[min(1, len(sims)-1)].ID, f.spikeAt)
	<-ctx.Done()
	wg.Wait()
	return nil
}

func addrOr(e *edge.Edge, name string) string {
	if a := e.Addr(name); a != nil {
		return a.String()
	}
	return "off"
}

// demoEdgeConfig registers the demo gateway and its sensors at the hub
// (re-keying them when the demo runs again) and returns the edge's
// configuration and the simulated sensors.
func demoEdgeConfig(ctx context.Context, h *hub.Hub, f demoFlags) (edge.Config, []sim.Device, error) {
	reg := h.Devices()
	var ecfg edge.Config
	dir := filepath.Join(f.data, "edge")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return ecfg, nil, err
	}
	_, gw, err := reg.Create(ctx, registry.CreateRequest{ID: demoGateway, Name: "Demo edge gateway", Auth: store.AuthCertificate,
		Labels: map[string]string{"site": "demo", "role": "gateway"}})
	if errors.Is(err, store.ErrExists) {
		gw, err = reg.Rotate(ctx, demoGateway, nil)
	}
	if err != nil {
		return ecfg, nil, fmt.Errorf("registering the demo gateway: %w", err)
	}
	files := map[string]string{"gateway.crt": gw.CertificatePEM, "gateway.key": gw.PrivateKeyPEM, "ca.pem": string(h.CAPEM())}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			return ecfg, nil, err
		}
	}
	var sims []sim.Device
	for i := range f.devices {
		id := fmt.Sprintf("demo-sensor-%d", i+1)
		_, _, err := reg.Create(ctx, registry.CreateRequest{ID: id, Name: fmt.Sprintf("Demo sensor %d", i+1), Gateway: demoGateway,
			Labels: map[string]string{"site": "demo", "line": fmt.Sprint(i%2 + 1)}})
		if err != nil && !errors.Is(err, store.ErrExists) {
			return ecfg, nil, fmt.Errorf("registering %s: %w", id, err)
		}
		raw := make([]byte, 18)
		rand.Read(raw)
		pw := hex.EncodeToString(raw)
		metrics := sim.DefaultMetrics(i)
		if i == 1 || f.devices == 1 {
			for _, m := range metrics {
				if v, ok := m.Wave.(*sim.Vibration); ok {
					v.SpikeAt, v.SpikeFor = f.spikeAt, 3*time.Second
				}
			}
		}
		sims = append(sims, sim.Device{ID: id, Password: pw, Metrics: metrics})
		ecfg.Sensors = append(ecfg.Sensors, edge.Sensor{ID: id, PasswordHash: registry.HashPassword([]byte(pw), registry.PasswordParams{})})
	}
	above, clearBelow := 0.5, 0.1
	tAbove, tClear := 40.0, 35.0
	ecfg.ID = demoGateway
	ecfg.Data = dir
	ecfg.Hub = edge.Hub{Addr: h.Addr("mqtts").String(), CAFile: filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "gateway.crt"), KeyFile: filepath.Join(dir, "gateway.key"), ServerName: "localhost"}
	ecfg.Listen = edge.Listen{MQTTAddr: f.edgeAddr}
	ecfg.HTTPAddr = f.edgeHTTP
	ecfg.Uplink.BatchMax = 200
	ecfg.Pipeline = pipeline.Config{Rules: []pipeline.Rule{
		{Metrics: []string{"vibration"}, Detect: []pipeline.Detector{{Threshold: &pipeline.Threshold{Above: &above, ClearBelow: &clearBelow, Severity: "critical"}}}},
		{Metrics: []string{"temperature"},
			Filters: pipeline.Filters{Deadband: 0.05},
			Detect:  []pipeline.Detector{{Threshold: &pipeline.Threshold{Above: &tAbove, ClearBelow: &tClear, Severity: "warning"}}},
			Window:  &pipeline.Window{Size: pipeline.Duration(time.Minute), Aggregates: []string{"avg", "min", "max"}},
			Forward: pipeline.ForwardBoth},
		{Metrics: []string{"humidity"}, Detect: []pipeline.Detector{{ZScore: &pipeline.ZScore{Window: 60, Threshold: 4, MinSamples: 30}}}},
	}}
	return ecfg, sims, nil
}
