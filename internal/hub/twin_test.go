package hub_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/topic"
)

// twinJSON is the API's view of a twin.
type twinJSON struct {
	Device  string `json:"device"`
	Desired struct {
		Version int64           `json:"version"`
		State   json.RawMessage `json:"state"`
	} `json:"desired"`
	Reported struct {
		Version int64           `json:"version"`
		State   json.RawMessage `json:"state"`
	} `json:"reported"`
	Delta json.RawMessage `json:"delta"`
}

func (h *testHub) twin(id string) twinJSON {
	h.t.Helper()
	var tw twinJSON
	if code := h.api("GET", "/api/v1/devices/"+id+"/twin", nil, &tw); code != http.StatusOK {
		h.t.Fatalf("GET twin of %s: HTTP %d", id, code)
	}
	return tw
}

// patchTwin sends PATCH …/twin with body and an optional If-Match; it
// returns the status, the decoded twin (on success) and the error body.
func (h *testHub) patchTwin(id, body, ifMatch string) (int, twinJSON, string) {
	h.t.Helper()
	req, _ := http.NewRequest("PATCH", h.apiURL+"/api/v1/devices/"+id+"/twin", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+h.token())
	req.Header.Set("Content-Type", "application/json")
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var tw twinJSON
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &tw); err != nil {
			h.t.Fatal(err)
		}
		if et := resp.Header.Get("ETag"); et != `"`+jsonNumber(tw.Desired.Version)+`"` {
			h.t.Errorf("ETag %q; want the desired version %d", et, tw.Desired.Version)
		}
	}
	return resp.StatusCode, tw, string(b)
}

func jsonNumber(n int64) string { b, _ := json.Marshal(n); return string(b) }

// desiredMsg is the retained devices/{id}/twin/desired payload.
type desiredMsg struct {
	Version int64           `json:"version"`
	State   json.RawMessage `json:"state"`
	Retain  bool
}

// twinDevice connects an MQTT 5 device subscribed to its desired state.
func twinDevice(t *testing.T, h *testHub, c creds) (*paho.Client, chan desiredMsg) {
	t.Helper()
	ch := make(chan desiredMsg, 10)
	cl := dial5Handler(t, h.Addr("mqtt").String(), nil, c.ID, c.Password, func(_ *paho.Client, p *paho.Publish) {
		if p.Topic != topic.TwinDesired(c.ID) {
			return
		}
		var m desiredMsg
		if err := json.Unmarshal(p.Payload, &m); err != nil {
			t.Errorf("desired payload %q: %v", p.Payload, err)
		}
		m.Retain = p.Retain
		ch <- m
	})
	subscribe5(t, cl, topic.TwinDesired(c.ID))
	return cl, ch
}

func nextDesired(t *testing.T, ch chan desiredMsg) desiredMsg {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no desired state received")
	}
	return desiredMsg{}
}

// sameJSON compares two JSON texts as values.
func sameJSON(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

func TestTwin(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	d := h.addDevice("twin-dev", "password")

	tw := h.twin(d.ID)
	if tw.Desired.Version != 0 || tw.Reported.Version != 0 || string(tw.Desired.State) != "{}" || string(tw.Delta) != "{}" {
		t.Errorf("new twin = %+v; want versions 0 and empty states", tw)
	}
	code, tw, body := h.patchTwin(d.ID, `{"desired":{"interval":10,"led":{"color":"red","blink":true}}}`, "")
	if code != 200 || tw.Desired.Version != 1 || !sameJSON(string(tw.Delta), `{"interval":10,"led":{"color":"red","blink":true}}`) {
		t.Fatalf("first PATCH = %d %s", code, body)
	}

	// Retained: a device that subscribes later gets it.
	c, ch := twinDevice(t, h, d)
	if m := nextDesired(t, ch); m.Version != 1 || !sameJSON(string(m.State), `{"interval":10,"led":{"color":"red","blink":true}}`) {
		t.Errorf("desired on subscribe = %+v", m)
	}

	// Optimistic concurrency: a stale version is refused, by header or body.
	for _, tc := range []struct{ body, ifMatch string }{
		{`{"desired":{"interval":20}}`, `"0"`},
		{`{"desired":{"interval":20}}`, `W/"0"`},
		{`{"desired":{"interval":20},"version":0}`, ""},
	} {
		if code, _, body := h.patchTwin(d.ID, tc.body, tc.ifMatch); code != http.StatusPreconditionFailed || !strings.Contains(body, "version_mismatch") {
			t.Errorf("PATCH %s If-Match %s = %d %s; want 412", tc.body, tc.ifMatch, code, body)
		}
	}
	if n := h.counter("fieldhub_twin_version_conflicts_total"); n != 3 {
		t.Errorf("conflicts counted %v; want 3", n)
	}
	// The current version passes; null removes a key (RFC 7386).
	code, tw, body = h.patchTwin(d.ID, `{"desired":{"led":{"blink":null}},"version":1}`, `"1"`)
	if code != 200 || tw.Desired.Version != 2 || !sameJSON(string(tw.Desired.State), `{"interval":10,"led":{"color":"red"}}`) {
		t.Fatalf("PATCH at version 1 = %d %s", code, body)
	}
	if m := nextDesired(t, ch); m.Version != 2 || !sameJSON(string(m.State), `{"interval":10,"led":{"color":"red"}}`) {
		t.Errorf("desired after the change = %+v", m)
	}
	// A patch that changes nothing keeps the version and publishes nothing.
	if code, tw, _ = h.patchTwin(d.ID, `{"desired":{"interval":10}}`, ""); code != 200 || tw.Desired.Version != 2 {
		t.Errorf("no-op PATCH = %d, version %d; want 200, 2", code, tw.Desired.Version)
	}

	// Reported: merge patches from the device, versioned; the delta follows.
	if rc := publish5(t, c, topic.TwinReported(d.ID), []byte(`{"interval":10,"led":{"color":"blue"},"fw":"1.0"}`)); rc != 0 {
		t.Fatalf("reported: PUBACK 0x%02x", rc)
	}
	tw = h.twin(d.ID) // acked means stored
	if tw.Reported.Version != 1 || !sameJSON(string(tw.Delta), `{"led":{"color":"red"}}`) {
		t.Errorf("after a reported patch: reported v%d %s, delta %s; want v1 and delta led.color=red", tw.Reported.Version, tw.Reported.State, tw.Delta)
	}
	publish5(t, c, topic.TwinReported(d.ID), []byte(`{"led":{"color":"red"}}`))
	publish5(t, c, topic.TwinReported(d.ID), []byte(`{"led":{"color":"red"}}`)) // no change
	tw = h.twin(d.ID)
	if tw.Reported.Version != 2 || string(tw.Delta) != "{}" || !sameJSON(string(tw.Reported.State), `{"interval":10,"led":{"color":"red"},"fw":"1.0"}`) {
		t.Errorf("in sync: reported v%d %s, delta %s; want v2, empty delta", tw.Reported.Version, tw.Reported.State, tw.Delta)
	}

	// Reconnecting brings the retained desired state again.
	c.Disconnect(&paho.Disconnect{})
	_, ch2 := twinDevice(t, h, d)
	if m := nextDesired(t, ch2); m.Version != 2 || !m.Retain {
		t.Errorf("desired after reconnect = %+v; want version 2, retained", m)
	}
}

func TestTwinLimits(t *testing.T) {
	h := startHub(t, hubConfig(t, t.TempDir()))
	d := h.addDevice("twin-lim", "password")
	big := strings.Repeat("x", 33<<10)
	for _, tc := range []struct {
		name, body string
		want       int
		message    string
	}{
		{"over 32 KiB", `{"desired":{"blob":"` + big + `"}}`, 413, "32768 bytes (32 KiB)"},
		{"body over 64 KiB", `{"desired":{"blob":"` + big + big + `"}}`, 413, "32 KiB"},
		{"not an object", `{"desired":[1,2]}`, 400, "not a JSON object"},
		{"no desired", `{"version":1}`, 400, "desired"},
		{"unknown field", `{"desired":{},"reported":{}}`, 400, "reported"},
		{"too deep", `{"desired":` + strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40) + `}`, 400, "levels deep"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := h.patchTwin(d.ID, tc.body, "")
			if code != tc.want || !strings.Contains(body, tc.message) {
				t.Errorf("PATCH = %d %.200s; want %d naming %q", code, body, tc.want, tc.message)
			}
		})
	}
	if code, _, _ := h.patchTwin("nobody", `{"desired":{}}`, ""); code != 404 {
		t.Errorf("PATCH twin of an unknown device = %d; want 404", code)
	}
	if code, _, _ := h.patchTwin(d.ID, `{"desired":{}}`, `"x"`); code != 400 {
		t.Errorf("PATCH with If-Match x = %d; want 400", code)
	}
	// Reported patches over the limit or not objects are refused (0x99), counted, not stored.
	c, _, err := dial5(t, h.Addr("mqtt").String(), nil, d.ID, d.ID, d.Password)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ body, reason string }{
		{`{"blob":"` + big + `"}`, "too_large"},
		{`[1]`, "malformed"},
		{`{"a":`, "malformed"},
		{strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40), "too_deep"},
	} {
		if rc := publish5(t, c, topic.TwinReported(d.ID), []byte(tc.body)); rc != 0x99 {
			t.Errorf("reported %.40s…: PUBACK 0x%02x; want 0x99", tc.body, rc)
		}
		if n := h.counter("fieldhub_twin_reported_refused_total", "reason", tc.reason); n < 1 {
			t.Errorf("fieldhub_twin_reported_refused_total{reason=%s} = %v", tc.reason, n)
		}
	}
	// Patches that together grow past the limit: the last one is refused.
	half := strings.Repeat("y", 20<<10)
	if rc := publish5(t, c, topic.TwinReported(d.ID), []byte(`{"a":"`+half+`"}`)); rc != 0 {
		t.Errorf("first half: PUBACK 0x%02x", rc)
	}
	if rc := publish5(t, c, topic.TwinReported(d.ID), []byte(`{"b":"`+half+`"}`)); rc != 0x99 {
		t.Errorf("second half: PUBACK 0x%02x; want 0x99", rc)
	}
	if tw := h.twin(d.ID); tw.Reported.Version != 1 {
		t.Errorf("reported version %d; want 1 (only the first patch stored)", tw.Reported.Version)
	}
}

func TestTwinDesiredAfterRestart(t *testing.T) {
	cfg := hubConfig(t, t.TempDir())
	h := startHub(t, cfg)
	d := h.addDevice("twin-restart", "password")
	if code, _, body := h.patchTwin(d.ID, `{"desired":{"mode":"eco"}}`, ""); code != 200 {
		t.Fatalf("PATCH = %d %s", code, body)
	}
	h.stop()
	h2 := startHub(t, cfg)
	_, ch := twinDevice(t, h2, d)
	if m := nextDesired(t, ch); m.Version != 1 || !sameJSON(string(m.State), `{"mode":"eco"}`) {
		t.Errorf("desired after a hub restart = %+v", m)
	}
	// Versions go on from the stored one.
	if code, tw, _ := h2.patchTwin(d.ID, `{"desired":{"mode":"boost"}}`, `"1"`); code != 200 || tw.Desired.Version != 2 {
		t.Errorf("PATCH after restart = %d, version %d; want 2", code, tw.Desired.Version)
	}
	// Deleting the device clears its retained desired state and twin.
	if code := h2.api("DELETE", "/api/v1/devices/"+d.ID, nil, nil); code != 204 {
		t.Fatalf("DELETE = %d", code)
	}
	d2 := h2.addDevice(d.ID, "password")
	if tw := h2.twin(d2.ID); tw.Desired.Version != 0 {
		t.Errorf("twin of a re-created device: desired v%d; want 0", tw.Desired.Version)
	}
	var stale atomic.Int32
	cl := dial5Handler(t, h2.Addr("mqtt").String(), nil, d2.ID, d2.Password, func(_ *paho.Client, p *paho.Publish) {
		stale.Add(1)
	})
	subscribe5(t, cl, topic.TwinDesired(d2.ID))
	time.Sleep(300 * time.Millisecond)
	if n := stale.Load(); n != 0 {
		t.Errorf("a re-created device got %d retained desired messages of its predecessor", n)
	}
}
