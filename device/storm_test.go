package device_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/device"
	"github.com/fieldhub/fieldhub/internal/registry"
	"github.com/fieldhub/fieldhub/internal/store"
)

// TestReconnectStorm drops 2,000 certificate devices at once (the hub
// restarts) and checks that they all come back within a bounded time,
// spread out by their backoff jitter, that the hub stays up, and that
// every telemetry message a device was told is stored (or buffered) is
// stored exactly once. `make test` runs it without the race detector
// (FIELDHUB_STORM_DEVICES overrides the size); under -race it is skipped,
// since 4,000 TLS handshakes would take minutes.
func TestReconnectStorm(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("the storm runs without -race: go test -run TestReconnectStorm ./device")
	}
	n := 2000
	if s := os.Getenv("FIELDHUB_STORM_DEVICES"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	h := newHub(t, false)
	ctx := context.Background()

	// Certificate devices: issuing one costs a signature, not an argon2id hash.
	certs := make([]tls.Certificate, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	next := atomic.Int64{}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				_, cr, err := h.h.Devices().Create(ctx, registry.CreateRequest{ID: fmt.Sprintf("storm-%05d", i), Auth: store.AuthCertificate})
				if err == nil {
					certs[i], err = tls.X509KeyPair([]byte(cr.CertificatePEM), []byte(cr.PrivateKeyPEM))
				}
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}

	clients := make([]*device.Client, n)
	quiet := slog.New(slog.DiscardHandler)
	next.Store(0)
	start := time.Now()
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				cctx, cancel := context.WithTimeout(ctx, time.Minute)
				c, err := device.Connect(cctx, device.Config{
					Server: h.mqttsURL(), CAFile: h.caFile(), ServerName: "localhost",
					DeviceID: fmt.Sprintf("storm-%05d", i), Certificate: certs[i],
					BackoffMin: 500 * time.Millisecond, BackoffMax: 10 * time.Second,
					Logger: quiet,
				})
				cancel()
				if err != nil {
					mu.Lock()
					firstErr = fmt.Errorf("device %d: %w", i, err)
					mu.Unlock()
					return
				}
				clients[i] = c
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, c := range clients {
			if c != nil {
				c.Close(cctx)
			}
		}
	})
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	t.Logf("%d devices connected in %v", n, time.Since(start).Round(time.Millisecond))

	// Each device publishes before, during and after the storm.
	publishAll := func(value float64) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for _, c := range clients {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				if err := c.Publish(pctx, map[string]any{"v": value}); err != nil {
					t.Errorf("publish %v: %v", value, err)
				}
			}()
		}
		wg.Wait()
	}
	publishAll(1)

	// The storm: every connection drops at once.
	h.stop()
	fhdown := time.Now()
	publishAll(2) // buffered by the SDK while the hub is down
	time.Sleep(time.Second)
	h.start()
	up := time.Now()

	// Record when each device is back.
	back := make([]time.Duration, n)
	deadline := up.Add(90 * time.Second)
	for left := n; left > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d devices not reconnected 90 s after the hub returned", left, n)
		}
		left = 0
		for i, c := range clients {
			if back[i] != 0 {
				continue
			}
			if st := c.Stats(); st.Connected && st.Reconnects > 0 {
				back[i] = time.Since(up)
			} else {
				left++
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	sorted := append([]time.Duration(nil), back...)
	sort.Slice(sorted, func(a, b int) bool { return sorted[a] < sorted[b] })
	p := func(q float64) time.Duration { return sorted[int(q*float64(n-1))].Round(time.Millisecond) }
	t.Logf("hub down %v; after it returned: first back %v, median %v, p99 %v, last %v", up.Sub(fhdown).Round(time.Millisecond), p(0), p(0.5), p(0.99), p(1))
	if spread := sorted[n-1] - sorted[0]; spread < 200*time.Millisecond {
		t.Errorf("all %d devices came back within %v: no jitter", n, spread)
	}
	publishAll(3)

	// Every message Publish accepted is stored exactly once.
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("storm-%05d", i)
		var got []float64
		eventually(t, 30*time.Second, id+"'s three messages", func() bool {
			got = h.values(id, "v")
			return len(got) >= 3
		})
		if fmt.Sprint(got) != "[1 2 3]" {
			t.Fatalf("%s stored %v; want [1 2 3] exactly once each", id, got)
		}
	}
}
