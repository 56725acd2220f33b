package hub_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/internal/fhtest"
	"github.com/fieldhub/fieldhub/topic"
)

var freePort = fhtest.FreePort

// startServe starts `fieldhub serve` in a child process on dir.
func startServe(t *testing.T, dir, mqttAddr, httpAddr, token string) *fhtest.Serve {
	t.Helper()
	p := &fhtest.Serve{
		HTTPAddr: httpAddr,
		Args: []string{"--data", filepath.Join(dir, "data"),
			"--master-key-file", filepath.Join(dir, "master.key"),
			"--mqtt-addr", mqttAddr, "--mqtts-addr", "off", "--http-addr", httpAddr,
			"--checkpoint-interval", "2s", "--log-level", "warn"},
		Env: []string{"FIELDHUB_ADMIN_TOKEN=" + token},
	}
	p.Start(t)
	p.WaitReady(t)
	return p
}

// TestKill9DuringIngest kills the hub with SIGKILL while devices publish
// QoS 1 telemetry, restarts it, lets the devices resend what was not
// acknowledged (same seq), and checks that every acknowledged message is
// stored exactly once.
func TestKill9DuringIngest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a hub process")
	}
	dir := t.TempDir()
	mqttAddr, httpAddr := freePort(t), freePort(t)
	token := "kill9-test-token-0123456789"
	p := startServe(t, dir, mqttAddr, httpAddr, token)
	h := &testHub{t: t, apiURL: "http://" + httpAddr}
	h.tokenOverride = token

	const devices, perDevice, window = 4, 5000, 8
	var ackedTotal atomic.Int64
	type dev struct {
		creds
		acked   map[int]bool
		pending map[int]bool // sent, not acknowledged
		next    int
	}
	devs := make([]*dev, devices)
	for i := range devs {
		devs[i] = &dev{creds: h.addDevice(fmt.Sprintf("k9-%d", i), "password"), acked: map[int]bool{}, pending: map[int]bool{}, next: 1}
	}
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	payloadFor := func(seq int) []byte {
		return []byte(fmt.Sprintf(`{"seq":%d,"ts":%d,"data":{"n":%d}}`, seq, base.Add(time.Duration(seq)*time.Millisecond).UnixMilli(), seq))
	}
	// session publishes until the connection breaks or everything is acked.
	session := func(d *dev) {
		c, _, err := dial5(t, mqttAddr, nil, d.ID, d.ID, d.Password)
		if err != nil {
			return
		}
		defer c.Disconnect(&paho.Disconnect{})
		for {
			var batch []int
			for s := range d.pending { // resend the unacknowledged first
				batch = append(batch, s)
			}
			for len(batch) < window && d.next <= perDevice {
				batch = append(batch, d.next)
				d.pending[d.next] = true
				d.next++
			}
			if len(batch) == 0 {
				return
			}
			var mu sync.Mutex
			var wg sync.WaitGroup
			failed := false
			for _, s := range batch {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					resp, err := c.Publish(ctx, &paho.Publish{Topic: topic.Telemetry(d.ID), QoS: 1, Payload: payloadFor(s)})
					mu.Lock()
					defer mu.Unlock()
					if err == nil && resp.ReasonCode == 0 {
						d.acked[s] = true
						delete(d.pending, s)
						ackedTotal.Add(1)
					} else {
						failed = true
					}
				}()
			}
			wg.Wait()
			if failed {
				return
			}
		}
	}
	run := func(killAt int64) {
		var wg sync.WaitGroup
		for _, d := range devs {
			wg.Add(1)
			go func() { defer wg.Done(); session(d) }()
		}
		if killAt > 0 {
			eventually(t, time.Minute, "messages acknowledged before the kill", func() bool { return ackedTotal.Load() >= killAt })
			p.Kill()
		}
		wg.Wait()
	}
	run(devices * perDevice / 3) // kill -9 mid-stream
	ackedBefore := 0
	for _, d := range devs {
		ackedBefore += len(d.acked)
	}
	if ackedBefore == 0 || ackedBefore == devices*perDevice {
		t.Fatalf("acked %d of %d before the kill; want some but not all", ackedBefore, devices*perDevice)
	}
	t.Logf("acknowledged before kill -9: %d of %d", ackedBefore, devices*perDevice)

	startServe(t, dir, mqttAddr, httpAddr, token)
	for round := 0; round < 5; round++ {
		run(0)
	}
	for _, d := range devs {
		if len(d.acked) != perDevice {
			t.Fatalf("%s: %d of %d acknowledged after restart", d.ID, len(d.acked), perDevice)
		}
		got := h.telemetry(d.ID)["n"]
		seen := map[int]int{}
		for _, pt := range got {
			seen[int(pt.Value.(float64))]++
		}
		for s := 1; s <= perDevice; s++ {
			if seen[s] != 1 {
				t.Errorf("%s: seq %d stored %d times; want exactly once", d.ID, s, seen[s])
			}
		}
		if len(got) != perDevice {
			t.Errorf("%s: stored %d points; want %d", d.ID, len(got), perDevice)
		}
	}
}
