package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/api"
	"github.com/fieldhub/fieldhub/internal/registry"
	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/web"
)

// bigRegistry is an in-memory registry of n devices, listed in id order.
type bigRegistry struct{ ids []string }

func (r *bigRegistry) Create(context.Context, registry.CreateRequest) (store.Device, registry.Credentials, error) {
	return store.Device{}, registry.Credentials{}, store.ErrExists
}
func (r *bigRegistry) Get(_ context.Context, id string) (store.Device, error) {
	return store.Device{ID: id, Auth: store.AuthPassword}, nil
}
func (r *bigRegistry) Delete(context.Context, string) error { return nil }
func (r *bigRegistry) Rotate(context.Context, string, []byte) (registry.Credentials, error) {
	return registry.Credentials{}, nil
}
func (r *bigRegistry) List(_ context.Context, o store.ListOptions) ([]store.Device, error) {
	i := sort.SearchStrings(r.ids, o.After)
	if i < len(r.ids) && r.ids[i] == o.After {
		i++
	}
	var out []store.Device
	for ; i < len(r.ids) && (o.Limit == 0 || len(out) < o.Limit); i++ {
		if strings.HasPrefix(r.ids[i], o.Prefix) {
			out = append(out, store.Device{ID: r.ids[i], Name: "device " + r.ids[i], Auth: store.AuthPassword})
		}
	}
	return out, nil
}

type noPresence struct{}

func (noPresence) Online(string) bool        { return false }
func (noPresence) LastSeen(string) time.Time { return time.Time{} }

// recorder counts the device rows the server sends to the browser.
type recorder struct {
	mu    sync.Mutex
	pages []int // rows in each answer of GET /api/v1/devices
}

type teeWriter struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (w *teeWriter) Write(b []byte) (int, error) { w.buf.Write(b); return w.ResponseWriter.Write(b) }

func (rc *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/devices" {
			h.ServeHTTP(w, r)
			return
		}
		tw := &teeWriter{ResponseWriter: w}
		h.ServeHTTP(tw, r)
		var page struct {
			Devices []json.RawMessage `json:"devices"`
		}
		json.Unmarshal(tw.buf.Bytes(), &page)
		rc.mu.Lock()
		rc.pages = append(rc.pages, len(page.Devices))
		rc.mu.Unlock()
	})
}

func (rc *recorder) snapshot() []int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]int(nil), rc.pages...)
}

// With 10,000 devices in the registry, the fleet page asks for one page of
// 50 at a time and renders 50 rows; the counts come from the server.
func TestFleetWith10000Devices(t *testing.T) {
	chromium(t)
	const n = 10000
	reg := &bigRegistry{}
	for i := range n {
		reg.ids = append(reg.ids, fmt.Sprintf("dev-%05d", i))
	}
	const token = "scale-test-token"
	a := api.New(api.Options{AdminToken: token, Registry: reg, Presence: noPresence{}})
	web.Mount(a, web.Options{Registry: reg, Presence: noPresence{}})
	rc := &recorder{}
	srv := httptest.NewServer(rc.wrap(a))
	t.Cleanup(srv.Close)

	ctx := browser(t)
	dir := artifacts(t)
	eval := func(js string) {
		t.Helper()
		if _, err := chromedpRunBool(ctx, js); err != nil {
			t.Fatal(err)
		}
	}
	if err := navigate(ctx, srv.URL+"/"); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the login form", `!document.getElementById("login-view").hidden`)
	eval(`(document.getElementById("token").value = ` + jsString(token) + `, document.getElementById("login-form").requestSubmit(), true)`)
	waitJS(t, ctx, "50 rows", `document.querySelectorAll("#fleet-rows tr").length === 50 && document.querySelector("#fleet-rows tr").dataset.id === "dev-00000"`)
	waitJS(t, ctx, "the counts", `document.getElementById("count-offline").textContent === "10000" && document.getElementById("count-online").textContent === "0"`)
	screenshot(t, ctx, dir, "fleet-10000")
	eval(`(document.getElementById("next").click(), true)`)
	waitJS(t, ctx, "the second page", `document.querySelectorAll("#fleet-rows tr").length === 50 && document.querySelector("#fleet-rows tr").dataset.id === "dev-00050"`)

	pages := rc.snapshot()
	total := 0
	for _, p := range pages {
		total += p
		// The login probe asks for 1; the fleet view for 50.
		if p > 50 {
			t.Errorf("an answer carried %d devices; want at most 50 (pages %v)", p, pages)
		}
	}
	if total > 4*50+1 {
		t.Errorf("%d device rows sent in %d answers; want a few pages of 50", total, len(pages))
	}
	t.Logf("device rows sent: %d in %d answers %v", total, len(pages), pages)
}
