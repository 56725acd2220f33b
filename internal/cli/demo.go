package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldhub/fieldhub/internal/config"
	"github.com/fieldhub/fieldhub/internal/hub"
	"github.com/fieldhub/fieldhub/internal/registry"
	"github.com/fieldhub/fieldhub/internal/sim"
	"github.com/fieldhub/fieldhub/internal/store"
)

func demoCmd(stdout, stderr io.Writer) *cobra.Command {
	var (
		data, httpAddr, mqttAddr, mqttsAddr, logLevel string
		devices                                       int
		interval, duration                            time.Duration
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a hub on loopback with simulated devices publishing over real MQTT",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if devices < 1 || devices > 1000 {
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
			cfg.Data, cfg.HTTPAddr, cfg.MQTTAddr, cfg.MQTTSAddr = data, httpAddr, mqttAddr, mqttsAddr
			cfg.LogLevel = logLevel
			cfg.CheckpointInterval = config.Duration(30 * time.Second)
			log := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
			h, err := hub.New(cfg, log)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, duration)
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
			sims, err := demoDevices(ctx, h.Devices(), devices)
			if err != nil {
				return err
			}
			var wg sync.WaitGroup
			simCfg := sim.Config{Addr: h.Addr("mqtt").String(), Interval: interval, Logger: log.With("component", "sim")}
			for _, d := range sims {
				wg.Add(1)
				go func() {
					defer wg.Done()
					sim.Run(ctx, simCfg, d)
				}()
			}
			api := "http://" + h.Addr("http").String()
			fmt.Fprintf(stdout, `
fieldhub demo is running with %d simulated devices (data in %s).

  Dashboard:   %s/
  Admin token: %s
  MQTT:        %s (plain, loopback)   MQTTS: %s

  Try:  curl -s -H "Authorization: Bearer %s" %s/api/v1/devices
        curl -s -H "Authorization: Bearer %s" %s/api/v1/devices/%s/telemetry/latest

Press Ctrl-C to stop.
`, devices, data, api, h.AdminToken(), h.Addr("mqtt"), h.Addr("mqtts"), h.AdminToken(), api, h.AdminToken(), api, sims[0].ID)
			<-ctx.Done()
			wg.Wait()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&data, "data", "./fieldhub-demo", "data folder of the demo hub")
	f.StringVar(&httpAddr, "http-addr", "127.0.0.1:8080", "REST API and dashboard address")
	f.StringVar(&mqttAddr, "mqtt-addr", "127.0.0.1:1883", "plain MQTT address (loopback)")
	f.StringVar(&mqttsAddr, "mqtts-addr", "127.0.0.1:8883", "MQTT over TLS address")
	f.IntVar(&devices, "devices", 5, "number of simulated devices")
	f.DurationVar(&interval, "interval", time.Second, "time between two messages of a device")
	f.DurationVar(&duration, "duration", 0, "stop after this long (0 runs until Ctrl-C)")
	f.StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	return cmd
}

// demoDevices registers (or re-keys) the demo devices and returns them
// with their passwords.
func demoDevices(ctx context.Context, reg *registry.Service, n int) ([]sim.Device, error) {
	var out []sim.Device
	for i := range n {
		id := fmt.Sprintf("demo-sensor-%d", i+1)
		var pw string
		_, creds, err := reg.Create(ctx, registry.CreateRequest{
			ID: id, Name: fmt.Sprintf("Demo sensor %d", i+1),
			Labels: map[string]string{"site": "demo", "line": fmt.Sprint(i%2 + 1)},
			Auth:   store.AuthPassword,
		})
		switch {
		case err == nil:
			pw = creds.Password
		case errors.Is(err, store.ErrExists):
			if creds, err = reg.Rotate(ctx, id, nil); err != nil {
				return nil, fmt.Errorf("re-keying %s: %w", id, err)
			}
			pw = creds.Password
		default:
			return nil, fmt.Errorf("creating %s: %w", id, err)
		}
		out = append(out, sim.Device{ID: id, Password: pw, Metrics: sim.DefaultMetrics(i)})
	}
	return out, nil
}
