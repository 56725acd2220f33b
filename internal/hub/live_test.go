package hub_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/topic"
)

// openLive opens the live telemetry stream of id with the admin token.
func openLive(t *testing.T, h *testHub, id string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", h.apiURL+"/api/v1/devices/"+id+"/telemetry/live", nil)
	req.Header.Set("Authorization", "Bearer "+h.token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("live stream: HTTP %d %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q", cc)
	}
	return resp
}

type liveEvent struct {
	Metric string `json:"metric"`
	TS     string `json:"ts"`
	Value  any    `json:"value"`
}

// readEvents sends the data of every event of body to the channel, closed
// when the body ends.
func readEvents(body io.Reader) <-chan liveEvent {
	ch := make(chan liveEvent, 64)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(body)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var e liveEvent
			if json.Unmarshal([]byte(line), &e) == nil {
				ch <- e
			}
		}
	}()
	return ch
}

func TestLiveTelemetryStream(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	cr := h.addDevice("live-dev", "password")

	// Without a token: 401, nothing of the stream.
	resp, err := http.Get(h.apiURL + "/api/v1/devices/live-dev/telemetry/live")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || strings.Contains(string(b), "data:") || resp.Header.Get("Content-Type") == "text/event-stream" {
		t.Fatalf("without token: HTTP %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	if code := h.api("GET", "/api/v1/devices/ghost/telemetry/live", nil, nil); code != http.StatusNotFound {
		t.Fatalf("unknown device: HTTP %d, want 404", code)
	}

	events := readEvents(openLive(t, h, "live-dev").Body)
	c, _, err := dial5(t, h.Addr("mqtt").String(), nil, cr.ID, cr.ID, cr.Password)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now().UTC().Truncate(time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Publish(ctx, &paho.Publish{Topic: topic.Telemetry(cr.ID), QoS: 1, Payload: telemetryJSON(1, 21.5, ts)}); err != nil {
		t.Fatal(err)
	}
	got := map[string]liveEvent{}
	timeout := time.After(5 * time.Second)
	for len(got) < 3 {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("stream ended; got %v", got)
			}
			got[e.Metric] = e
		case <-timeout:
			t.Fatalf("no events within 5 s; got %v", got)
		}
	}
	if e := got["temperature"]; e.Value != 21.5 {
		t.Fatalf("temperature event %+v, want 21.5", e)
	}
	if e := got["temperature"]; e.TS != ts.Format(time.RFC3339Nano) {
		t.Fatalf("temperature ts %q, want %q", e.TS, ts.Format(time.RFC3339Nano))
	}
	if got["ok"].Value != true || got["state"].Value != "run" {
		t.Fatalf("events %v", got)
	}
}

func TestShutdownEndsLiveStreams(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	h.addDevice("live-dev", "password")
	events := readEvents(openLive(t, h, "live-dev").Body)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Shutdown took %s with an open live stream", d)
	}
	select {
	case _, ok := <-events:
		for ok {
			_, ok = <-events
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the live stream did not end at shutdown")
	}
}
