package device_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/device"
)

// checkStoredOnce fails unless the stored values of metric "n" are
// exactly want, each once; values in maybe (a Publish whose ctx ended
// first: the message stayed buffered) may be stored too, at most once.
func checkStoredOnce(t *testing.T, h *testHub, id string, want []float64, maybe ...float64) {
	t.Helper()
	got := h.values(id, "n")
	slices.Sort(got)
	want = slices.Clone(want)
	slices.Sort(want)
	extra, missing := diff(got, want)
	for i, v := range extra {
		if (i > 0 && extra[i-1] == v) || !slices.Contains(maybe, v) || slices.Contains(want, v) {
			t.Fatalf("stored %d values, want %d; duplicated or unexpected %v, missing %v", len(got), len(want), extra, missing)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("stored %d values, want %d; missing %v", len(got), len(want), missing)
	}
}

// diff returns what is in got but not in want (duplicates included) and
// what is in want but not in got; both sorted.
func diff(got, want []float64) (extra, missing []float64) {
	i, j := 0, 0
	for i < len(got) || j < len(want) {
		switch {
		case j == len(want) || (i < len(got) && got[i] < want[j]):
			extra = append(extra, got[i])
			i++
		case i == len(got) || got[i] > want[j]:
			missing = append(missing, want[j])
			j++
		default:
			i++
			j++
		}
	}
	return extra, missing
}

// checkInOrder fails unless, on every connection, telemetry went out in
// increasing seq order (a new connection starts again from the oldest
// unacknowledged message).
func checkInOrder(t *testing.T, px *proxy) {
	t.Helper()
	for i, seqs := range px.sentSeqs() {
		for k := 1; k < len(seqs); k++ {
			if seqs[k] <= seqs[k-1] {
				t.Fatalf("connection %d sent seq %d after %d", i, seqs[k], seqs[k-1])
			}
		}
	}
}

// TestHubRestart publishes while the hub is stopped and started again on
// the same data and ports: every Publish that returned nil is stored
// exactly once and the buffer is flushed in order. (TestThroughHub checks
// that commands and desired state flow again after a restart.)
func TestHubRestart(t *testing.T) {
	h := newHub(t, false)
	const id = "restart-dev"
	cr := h.addDevice(id, "password")
	px := newProxy(t, h.cfg.MQTTAddr)
	c := connect(t, device.Config{Server: px.url(), DeviceID: id, Password: cr.Password})

	var (
		mu          sync.Mutex
		okNs, maybe []float64
	)
	// Four publishers keep several messages in flight (the client
	// pipelines them) when the hub goes away.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for n := g; ctx.Err() == nil; n += 4 {
				pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
				err := c.Publish(pctx, map[string]any{"n": n})
				pcancel()
				if err == nil {
					mu.Lock()
					okNs = append(okNs, float64(n))
					mu.Unlock()
				} else if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
					mu.Lock()
					maybe = append(maybe, float64(n))
					mu.Unlock()
				} else {
					t.Errorf("Publish(%d) = %v", n, err)
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(okNs)
	}
	eventually(t, 10*time.Second, "publishing online", func() bool { return count() >= 200 })
	h.stop()
	before := count()
	eventually(t, 10*time.Second, "publishing offline", func() bool { return count() >= before+400 })
	if s := c.Stats(); s.Connected || s.Buffered == 0 {
		t.Errorf("Stats() while the hub is down = %+v; want disconnected with a backlog", s)
	}
	h.start()
	if err := c.WaitConnected(ctxFor(t, 15*time.Second)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "publishing after the restart", func() bool { return count() >= before+800 })
	cancel()
	wg.Wait()
	eventually(t, 15*time.Second, "the buffer to drain", func() bool { return c.Stats().Buffered == 0 })

	mu.Lock()
	want := slices.Clone(okNs)
	mu.Unlock()
	checkStoredOnce(t, h, id, want, maybe...)
	checkInOrder(t, px)
	s := c.Stats()
	if s.Reconnects < 1 || s.Dropped != 0 || s.Refused != 0 {
		t.Errorf("Stats() = %+v; want a reconnect, nothing dropped or refused", s)
	}
	t.Logf("%d messages stored once across the restart; %d connections; %+v", len(want), len(px.sentSeqs()), s)
}

// TestOfflineBufferOverflow: a full buffer drops the oldest messages,
// counts them, and flushes the rest in order.
func TestOfflineBufferOverflow(t *testing.T) {
	h := newHub(t, true)
	const id = "ovf-dev"
	h.addDevice(id, "password")
	px := newProxy(t, h.cfg.MQTTAddr)
	px.setRefuse(true)
	c := connect(t, device.Config{Server: px.url(), DeviceID: id, OfflineBuffer: 10, NoWait: true, Logger: testLogger(t, slog.LevelError)})
	ctx := ctxFor(t, 10*time.Second)
	for n := range 25 {
		if err := c.Publish(ctx, map[string]any{"n": n}); err != nil {
			t.Fatalf("offline Publish(%d) = %v", n, err)
		}
	}
	if s := c.Stats(); s.Dropped != 15 || s.Buffered != 10 || s.Connected {
		t.Fatalf("Stats() = %+v; want 15 dropped, 10 buffered", s)
	}
	px.setRefuse(false)
	eventually(t, 15*time.Second, "the buffer to drain", func() bool { return c.Stats().Buffered == 0 })
	var want []float64
	for n := 15; n < 25; n++ {
		want = append(want, float64(n))
	}
	checkStoredOnce(t, h, id, want)
	checkInOrder(t, px)
}

// TestBufferDir: messages buffered on disk while the hub is unreachable
// survive the client (a reboot) and are delivered, with their seq, by the
// next client with the same folder; new messages follow with higher seqs.
func TestBufferDir(t *testing.T) {
	h := newHub(t, true)
	const id = "disk-dev"
	h.addDevice(id, "password")
	px := newProxy(t, h.cfg.MQTTAddr)
	px.setRefuse(true)
	dir := t.TempDir()
	cfg := device.Config{Server: px.url(), DeviceID: id, BufferDir: dir, NoWait: true, Logger: testLogger(t, slog.LevelError),
		BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond}

	c1, err := device.Connect(ctxFor(t, 5*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, 20*time.Second)
	for n := range 40 {
		if err := c1.Publish(ctx, map[string]any{"n": n}); err != nil {
			t.Fatalf("Publish(%d) = %v", n, err)
		}
	}
	if err := c1.Close(ctx); err == nil {
		t.Error("Close with 40 unacknowledged messages = nil; want an error saying so")
	}

	px.setRefuse(false)
	cfg.NoWait = false
	c2 := connect(t, cfg)
	for n := 40; n < 50; n++ {
		if err := c2.Publish(ctx, map[string]any{"n": n}); err != nil {
			t.Fatalf("Publish(%d) = %v", n, err)
		}
	}
	eventually(t, 15*time.Second, "the buffer to drain", func() bool { return c2.Stats().Buffered == 0 })
	var want []float64
	for n := range 50 {
		want = append(want, float64(n))
	}
	checkStoredOnce(t, h, id, want)
	checkInOrder(t, px)
	if err := c2.Close(ctx); err != nil {
		t.Errorf("Close = %v", err)
	}

	// A third client finds nothing left to send.
	cfg.Server = h.mqttURL()
	c3 := connect(t, cfg)
	if s := c3.Stats(); s.Buffered != 0 {
		t.Errorf("Stats().Buffered after everything was acknowledged = %d; want 0", s.Buffered)
	}
}
