package device_test

import (
	"context"
	"encoding/json"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"github.com/fieldhub/fieldhub/device"
)

// A sensor that publishes a reading every second, answers a "reboot"
// command, reports its firmware and follows a desired interval.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	c, err := device.Connect(ctx, device.Config{
		Server:    "mqtts://localhost:8883",
		DeviceID:  "sensor-1",
		Password:  os.Getenv("DEVICE_PASSWORD"),
		CAFile:    "fieldhub-data/ca.pem",
		BufferDir: "/var/lib/sensor/buffer", // survive reboots while offline
		Logger:    slog.Default(),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Close(cctx); err != nil {
			log.Print(err)
		}
	}()

	c.HandleCommand("reboot", func(ctx context.Context, params json.RawMessage) (any, error) {
		go stop() // answer first, then restart
		return map[string]any{"rebooting": true}, nil
	})
	interval := make(chan time.Duration, 1)
	c.OnDesired(func(version int64, state map[string]any) {
		if s, ok := state["interval_s"].(float64); ok && s > 0 {
			interval <- time.Duration(s * float64(time.Second))
		}
	})
	if err := c.ReportState(ctx, map[string]any{"firmware": "1.4.2"}); err != nil {
		log.Print(err)
	}

	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-interval:
			t.Reset(d)
			c.ReportState(ctx, map[string]any{"interval_s": d.Seconds()})
		case <-t.C:
			// While offline this returns at once: the reading is buffered
			// and sent, in order, after reconnecting.
			if err := c.Publish(ctx, map[string]any{"temperature": 21.5, "door_open": false}); err != nil {
				log.Print(err)
			}
		}
	}
}
