package bench

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// needMosquitto skips the test when mosquitto is not installed, unless the
// CI environment variable is set: CI must have it.
func needMosquitto(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("mosquitto"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mosquitto is required in CI: %v", err)
		}
		t.Skipf("mosquitto not installed (apt-get install mosquitto): %v", err)
	}
}

// authDevices returns n devices whose user name is their id.
func authDevices(n int) []Device {
	devs := Devices(n, "m")
	for i := range devs {
		devs[i].Username = devs[i].ID
		devs[i].Password = "pw-" + devs[i].ID
	}
	return devs
}

func TestIngestAgainstMosquitto(t *testing.T) {
	needMosquitto(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	devs := authDevices(4)
	p, err := StartMosquitto(ctx, MosquittoConfig{Devices: devs, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()

	for _, protocol := range []byte{4, 5} {
		t.Run("v"+strconv.Itoa(int(protocol)), func(t *testing.T) {
			res, err := RunIngest(ctx, IngestConfig{
				Label: "mosquitto", Addr: p.Addr, Devices: devs, Protocol: protocol,
				Warmup: 200 * time.Millisecond, Duration: time.Second, ServerPID: p.PID,
				Logger: testLogger(t),
			})
			if err != nil {
				t.Fatalf("RunIngest: %v (mosquitto output: %s)", err, p.Output())
			}
			checkSane(t, res)
			if res.ServerCPU <= 0 || res.ServerRSS <= 0 {
				t.Errorf("mosquitto cpu %v rss %d; want positive", res.ServerCPU, res.ServerRSS)
			}
			var buf bytes.Buffer
			res.Table(&buf)
			t.Logf("\n%s", buf.String())
		})
	}

	t.Run("wrong password", func(t *testing.T) {
		bad := authDevices(2)
		bad[1].Password = "wrong"
		_, err := RunIngest(ctx, IngestConfig{Addr: p.Addr, Devices: bad, Protocol: 5, Duration: 5 * time.Second})
		var ce *ConnectError
		if !errors.As(err, &ce) || ce.Device != bad[1].ID || ce.Code < 0x80 {
			t.Errorf("RunIngest with a wrong password = %v; want a ConnectError for %s", err, bad[1].ID)
		}
	})

	if err := p.Stop(); err != nil {
		t.Errorf("Stop: %v (output: %s)", err, p.Output())
	}
}

func TestMosquittoAnonymous(t *testing.T) {
	needMosquitto(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	p, err := StartMosquitto(ctx, MosquittoConfig{NoDelay: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	res, err := RunIngest(ctx, IngestConfig{Addr: p.Addr, Devices: Devices(2, ""), Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	checkSane(t, res)
}
