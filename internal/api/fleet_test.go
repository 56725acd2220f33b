package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/registry"
	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/twin"
)

// memRegistry is a registry in memory, listing in id order.
type memRegistry struct{ devs []store.Device }

func (r *memRegistry) Create(context.Context, registry.CreateRequest) (store.Device, registry.Credentials, error) {
	return store.Device{}, registry.Credentials{}, store.ErrInvalidQuery
}

func (r *memRegistry) Get(_ context.Context, id string) (store.Device, error) {
	for _, d := range r.devs {
		if d.ID == id {
			return d, nil
		}
	}
	return store.Device{}, store.ErrNotFound
}

func (r *memRegistry) List(_ context.Context, o store.ListOptions) ([]store.Device, error) {
	var out []store.Device
	for _, d := range r.devs {
		if d.ID > o.After && strings.HasPrefix(d.ID, o.Prefix) && (o.Limit == 0 || len(out) < o.Limit) {
			out = append(out, d)
		}
	}
	return out, nil
}

func (r *memRegistry) Delete(_ context.Context, id string) error {
	r.devs = slices.DeleteFunc(r.devs, func(d store.Device) bool { return d.ID == id })
	return nil
}

func (r *memRegistry) Rotate(context.Context, string, []byte) (registry.Credentials, error) {
	return registry.Credentials{}, store.ErrInvalidQuery
}

// memTwins holds reported states by device and counts ListTwins calls.
type memTwins struct {
	mu       sync.Mutex
	reported map[string]string
	lists    int
}

func (m *memTwins) ListTwins(_ context.Context, after string, limit int) ([]store.Twin, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lists++
	var ids []string
	for id := range m.reported {
		if id > after {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var out []store.Twin
	for _, id := range ids {
		if limit > 0 && len(out) == limit {
			break
		}
		out = append(out, store.Twin{Device: id, Reported: store.TwinDoc{Version: 1, State: json.RawMessage(m.reported[id])}})
	}
	return out, nil
}

func (m *memTwins) Get(_ context.Context, id string) (twin.View, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.reported[id]
	if st == "" {
		st = "{}"
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return twin.View{Device: id, Reported: twin.Doc{Version: 1, State: json.RawMessage(st), UpdatedAt: &at}}, nil
}

func (m *memTwins) PatchDesired(context.Context, string, []byte, int64) (twin.View, error) {
	return twin.View{}, store.ErrInvalidQuery
}

type fixedRates struct {
	mu     sync.Mutex
	r      map[string]float64
	forgot []string
}

func (f *fixedRates) MessageRate(id string) float64 { f.mu.Lock(); defer f.mu.Unlock(); return f.r[id] }
func (f *fixedRates) Forget(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgot = append(f.forgot, id)
}

type onlineSet map[string]bool

func (o onlineSet) Online(id string) bool        { return o[id] }
func (o onlineSet) LastSeen(id string) time.Time { return time.Time{} }

func TestFirmware(t *testing.T) {
	for _, c := range []struct{ reported, want string }{
		{`{"firmware":"1.2.3"}`, "1.2.3"},
		{`{"firmware":{"version":"2.0.0","channel":"beta"}}`, "2.0.0"},
		{`{"firmware_version":"9"}`, ""},
		{`{"firmware":42}`, ""},
		{`{}`, ""},
		{``, ""},
	} {
		if got := Firmware([]byte(c.reported)); got != c.want {
			t.Errorf("Firmware(%s) = %q; want %q", c.reported, got, c.want)
		}
	}
}

type fleetRow struct {
	ID       string  `json:"id"`
	MsgRate  float64 `json:"msg_rate"`
	Firmware string  `json:"firmware"`
	Online   bool    `json:"online"`
}

func newFleetAPI() (*API, *memRegistry, *memTwins, *fixedRates) {
	reg := &memRegistry{}
	for _, id := range []string{"a-1", "a-2", "a-3", "b-1", "gw", "gw2"} {
		d := store.Device{ID: id, Auth: store.AuthPassword}
		if strings.HasPrefix(id, "a-") {
			d.Gateway = "gw"
		}
		reg.devs = append(reg.devs, d)
	}
	tw := &memTwins{reported: map[string]string{
		"a-1":  `{"firmware":"1.0.0"}`,
		"a-2x": `{"firmware":"orphan"}`, // a twin without a device, inside a page's range
		"a-3":  `{"firmware":{"version":"1.1.0"}}`,
		"b-1":  `{"other":true}`,
		"gw":   `{"firmware":"v0.9.0","edge":{"spool":{"records":5,"bytes":100,"drops":{"overflow":1}}}}`,
	}}
	rates := &fixedRates{r: map[string]float64{"a-1": 12.34, "b-1": 0.5}}
	a := New(Options{AdminToken: "tok", Registry: reg, Twins: tw, TwinIndex: tw, Rates: rates, Presence: onlineSet{"gw": true}})
	return a, reg, tw, rates
}

func call(t *testing.T, a *API, method, path, token string, out any) int {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	a.ServeHTTP(w, req)
	if out != nil && w.Code == http.StatusOK {
		if err := json.Unmarshal(w.Body.Bytes(), out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, w.Body)
		}
	}
	return w.Code
}

// The device list carries each device's message rate and firmware
// version, the versions of a page read with one ListTwins call.
func TestDeviceListRateAndFirmware(t *testing.T) {
	a, _, tw, _ := newFleetAPI()
	for _, c := range []struct {
		query string
		want  map[string]fleetRow
	}{
		{"limit=2", map[string]fleetRow{"a-1": {MsgRate: 12.3, Firmware: "1.0.0"}, "a-2": {}}},
		{"limit=2&after=a-2", map[string]fleetRow{"a-3": {Firmware: "1.1.0"}, "b-1": {MsgRate: 0.5}}},
		{"limit=50&prefix=g", map[string]fleetRow{"gw": {Firmware: "v0.9.0", Online: true}, "gw2": {}}},
		{"limit=1&prefix=a-3", map[string]fleetRow{"a-3": {Firmware: "1.1.0"}}},
	} {
		var out struct {
			Devices []fleetRow `json:"devices"`
		}
		tw.lists = 0
		if code := call(t, a, "GET", "/api/v1/devices?"+c.query, "tok", &out); code != 200 {
			t.Fatalf("GET ?%s = %d", c.query, code)
		}
		got := map[string]fleetRow{}
		for _, d := range out.Devices {
			id := d.ID
			d.ID = ""
			got[id] = d
		}
		if len(got) != len(c.want) {
			t.Errorf("GET ?%s = %+v; want %+v", c.query, got, c.want)
		}
		for id, w := range c.want {
			if got[id] != w {
				t.Errorf("GET ?%s: %s = %+v; want %+v", c.query, id, got[id], w)
			}
		}
		if tw.lists != 1 {
			t.Errorf("GET ?%s read the twins with %d ListTwins calls; want 1", c.query, tw.lists)
		}
	}
	var one fleetRow
	if code := call(t, a, "GET", "/api/v1/devices/a-3", "tok", &one); code != 200 || one.Firmware != "1.1.0" {
		t.Errorf("GET /api/v1/devices/a-3 = %d %+v; want firmware 1.1.0", code, one)
	}
}

// GET /api/v1/gateways lists the devices with devices behind them and the
// spool state they report; it needs the token.
func TestGateways(t *testing.T) {
	a, _, _, _ := newFleetAPI()
	if code := call(t, a, "GET", "/api/v1/gateways", "", nil); code != http.StatusUnauthorized {
		t.Errorf("GET /api/v1/gateways without a token = %d; want 401", code)
	}
	var out struct {
		Gateways []struct {
			ID         string          `json:"id"`
			Online     bool            `json:"online"`
			Children   int             `json:"children"`
			Firmware   string          `json:"firmware"`
			Spool      json.RawMessage `json:"spool"`
			ReportedAt *time.Time      `json:"reported_at"`
		} `json:"gateways"`
	}
	if code := call(t, a, "GET", "/api/v1/gateways", "tok", &out); code != 200 {
		t.Fatalf("GET /api/v1/gateways = %d", code)
	}
	if len(out.Gateways) != 1 {
		t.Fatalf("gateways = %+v; want gw only", out.Gateways)
	}
	g := out.Gateways[0]
	if g.ID != "gw" || !g.Online || g.Children != 3 || g.Firmware != "v0.9.0" || g.ReportedAt == nil ||
		string(g.Spool) != `{"records":5,"bytes":100,"drops":{"overflow":1}}` {
		t.Errorf("gateway = %+v (spool %s)", g, g.Spool)
	}
}

// Deleting a device forgets its message rate.
func TestDeleteForgetsRate(t *testing.T) {
	a, _, _, rates := newFleetAPI()
	if code := call(t, a, "DELETE", "/api/v1/devices/a-1", "tok", nil); code != http.StatusNoContent {
		t.Fatalf("DELETE = %d", code)
	}
	if !slices.Equal(rates.forgot, []string{"a-1"}) {
		t.Errorf("Forget called for %v; want [a-1]", rates.forgot)
	}
}

func TestBefore(t *testing.T) {
	for _, id := range []string{"a", "a-1", "sensor-0001", "Z", "gw.1"} {
		b := before(id)
		if b >= id {
			t.Errorf("before(%q) = %q; not below", id, b)
		}
		// No valid id lies between b and id.
		for _, between := range []string{id[:len(id)-1], id[:len(id)-1] + "zzz", id[:len(id)-1] + string(id[len(id)-1]-1) + "zz"} {
			if between > b && between < id {
				t.Errorf("before(%q) = %q lets %q in", id, b, between)
			}
		}
	}
}
