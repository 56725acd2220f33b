// Command sensor is a simulated sensor built on the fieldhub device SDK:
// it publishes a temperature and a humidity reading every interval,
// answers a "reboot" command (it disconnects, waits a moment and comes
// back), reports its firmware version and interval in the twin, and
// follows a desired "interval_s".
//
//	go run ./examples/sensor -server mqtts://localhost:8883 -id sensor-1 \
//	    -password-file sensor-1.password -cafile fieldhub-data/ca.pem
//
// See examples/README.md.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/fieldhub/fieldhub/device"
)

// firmware is the version this program reports in the twin.
const firmware = "1.0.0"

type options struct {
	cfg      device.Config
	interval time.Duration
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "sensor:", err)
		os.Exit(2)
	}
	opts.cfg.Logger = log
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts, log); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("sensor stopped", "err", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	var o options
	var passwordFile, certFile, keyFile string
	fs := flag.NewFlagSet("sensor", flag.ContinueOnError)
	fs.StringVar(&o.cfg.Server, "server", "mqtts://localhost:8883", "hub address: mqtts://host:port or mqtt://host:port")
	fs.StringVar(&o.cfg.DeviceID, "id", "", "device id (required)")
	fs.StringVar(&o.cfg.Password, "password", os.Getenv("DEVICE_PASSWORD"), "device password (default $DEVICE_PASSWORD)")
	fs.StringVar(&passwordFile, "password-file", "", "file holding the device password")
	fs.StringVar(&certFile, "cert", "", "client certificate (PEM) for certificate auth")
	fs.StringVar(&keyFile, "key", "", "private key (PEM) of -cert")
	fs.StringVar(&o.cfg.CAFile, "cafile", "", "CA certificates the hub's certificate must chain to (the hub's DIR/ca.pem)")
	fs.StringVar(&o.cfg.BufferDir, "buffer-dir", "", "keep unacknowledged readings on disk in this folder (default: memory)")
	fs.DurationVar(&o.interval, "interval", time.Second, "time between readings")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.cfg.DeviceID == "" {
		return o, errors.New("-id is required")
	}
	if o.interval <= 0 {
		return o, errors.New("-interval must be positive")
	}
	if passwordFile != "" {
		b, err := os.ReadFile(passwordFile)
		if err != nil {
			return o, err
		}
		o.cfg.Password = strings.TrimSpace(string(b))
	}
	if certFile != "" || keyFile != "" {
		kp, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return o, fmt.Errorf("-cert/-key: %w", err)
		}
		o.cfg.Certificate = kp
	}
	return o, nil
}

// run boots the sensor, and boots it again after each "reboot" command,
// until ctx ends.
func run(ctx context.Context, o options, log *slog.Logger) error {
	for {
		reboot, err := boot(ctx, o, log)
		if err != nil || !reboot {
			return err
		}
		log.Info("rebooting")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// boot runs one life of the sensor: connect, publish until ctx ends or a
// reboot is requested, close.
func boot(ctx context.Context, o options, log *slog.Logger) (reboot bool, err error) {
	c, err := device.Connect(ctx, o.cfg)
	if err != nil {
		return false, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if cerr := c.Close(cctx); cerr != nil {
			log.Warn("close", "err", cerr)
		}
	}()

	rebootCh := make(chan struct{}, 1)
	c.HandleCommand("reboot", func(ctx context.Context, params json.RawMessage) (any, error) {
		var p struct {
			Reason string `json:"reason"`
		}
		if params != nil {
			if err := json.Unmarshal(params, &p); err != nil {
				return nil, fmt.Errorf("params: %w", err)
			}
		}
		log.Info("reboot requested", "reason", p.Reason)
		select {
		case rebootCh <- struct{}{}:
		default:
		}
		return map[string]any{"rebooting": true, "firmware": firmware}, nil
	})
	intervalCh := make(chan time.Duration, 1)
	c.OnDesired(func(version int64, state map[string]any) {
		s, ok := state["interval_s"].(float64)
		if !ok || s <= 0 || s > 3600 {
			return
		}
		select {
		case <-intervalCh: // keep only the newest
		default:
		}
		intervalCh <- time.Duration(s * float64(time.Second))
	})
	interval := o.interval
	if err := c.ReportState(ctx, map[string]any{"firmware": firmware, "interval_s": interval.Seconds()}); err != nil {
		log.Warn("reporting state", "err", err)
	}

	t := time.NewTicker(interval)
	defer t.Stop()
	start := time.Now()
	humidity := 45.0
	for {
		select {
		case <-ctx.Done():
			return false, nil
		case <-rebootCh:
			return true, nil // Close sends the answer before disconnecting
		case d := <-intervalCh:
			if d != interval {
				interval = d
				t.Reset(d)
				log.Info("interval changed", "interval", d)
				if err := c.ReportState(ctx, map[string]any{"interval_s": d.Seconds()}); err != nil {
					log.Warn("reporting state", "err", err)
				}
			}
		case now := <-t.C:
			el := now.Sub(start).Seconds()
			temp := 21 + 2*math.Sin(2*math.Pi*el/600) + rand.NormFloat64()*0.1
			humidity = math.Max(20, math.Min(90, humidity+rand.NormFloat64()*0.3))
			err := c.Publish(ctx, map[string]any{
				"temperature": math.Round(temp*100) / 100,
				"humidity":    math.Round(humidity*10) / 10,
			})
			if err != nil && ctx.Err() == nil {
				log.Warn("publish", "err", err)
			}
		}
	}
}
