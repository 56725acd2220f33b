package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/fieldhub/fieldhub/internal/config"
	"github.com/fieldhub/fieldhub/internal/fhtest"
	"github.com/fieldhub/fieldhub/internal/hub"
	"github.com/fieldhub/fieldhub/internal/web"
)

// testHub is a real hub on loopback ports in a temporary folder.
type testHub struct {
	*hub.Hub
	t   *testing.T
	url string
}

func startHub(t *testing.T) *testHub {
	t.Helper()
	dir := t.TempDir()
	c := config.Default()
	c.Data = filepath.Join(dir, "data")
	c.MasterKeyFile = filepath.Join(dir, "master.key")
	c.MQTTAddr = "127.0.0.1:0"
	c.MQTTSAddr = "127.0.0.1:0"
	c.WSAddr = "127.0.0.1:0"
	c.HTTPAddr = "127.0.0.1:0"
	c.LogLevel = "warn"
	h, err := hub.New(c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return &testHub{Hub: h, t: t, url: "http://" + h.Addr("http").String()}
}

// api calls the REST API with the admin token.
func (h *testHub) api(method, path string, body, out any) int {
	h.t.Helper()
	return fhtest.API(h.t, method, h.url+path, h.AdminToken(), body, out)
}

// addDevice registers a password device and returns its password.
func (h *testHub) addDevice(id, name string, labels map[string]string) string {
	h.t.Helper()
	var out struct {
		Credentials struct {
			Password string `json:"password"`
		} `json:"credentials"`
	}
	if code := h.api("POST", "/api/v1/devices", map[string]any{"id": id, "name": name, "labels": labels}, &out); code != http.StatusCreated {
		h.t.Fatalf("creating %s: HTTP %d", id, code)
	}
	return out.Credentials.Password
}

// dial connects an MQTT 3.1.1 device over plain TCP.
func (h *testHub) dial(id, password string) mqtt3.Client {
	h.t.Helper()
	o := mqtt3.NewClientOptions().AddBroker("tcp://" + h.Addr("mqtt").String()).SetClientID(id).
		SetUsername(id).SetPassword(password).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(10 * time.Second)
	c := mqtt3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		h.t.Fatalf("connecting %s: %v", id, tok.Error())
	}
	h.t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func publish(t *testing.T, c mqtt3.Client, topic string, payload string) {
	t.Helper()
	if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// chromium finds Debian's Chromium: a test skips without it, or fails
// when CI is set.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed (scripts/test-deps.sh installs it)")
	}
	t.Skip("chromium is not installed; skipping the browser test")
	return ""
}

// requireUPlot tells whether the charting library is embedded (`make ui`
// copies it from npm). Without it a test fails when CI is set; otherwise
// it is skipped when skip is set, or goes on without charts.
func requireUPlot(t *testing.T, skip bool) bool {
	t.Helper()
	if web.ChartsAvailable() {
		return true
	}
	if os.Getenv("CI") != "" {
		t.Fatal("uPlot is not embedded: run `make ui` (make test does) before go test")
	}
	if skip {
		t.Skip("uPlot is not embedded (run `make ui`); skipping")
	}
	t.Log("uPlot is not embedded (run `make ui`)")
	return false
}

// browser starts headless Chromium with the flags this machine needs and
// a fresh profile; the context lives until the test ends.
func browser(t *testing.T) context.Context {
	t.Helper()
	exe := chromium(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 1600),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	// The first Run starts the browser; it lives as long as ctx.
	if err := chromedp.Do(ctx); err != nil {
		cancelC()
		cancelA()
		t.Fatalf("starting chromium: %v", err)
	}
	tctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	return tctx
}

// artifacts is where screenshots go: $FIELDHUB_ARTIFACTS or a temporary folder.
func artifacts(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("FIELDHUB_ARTIFACTS"); d != "" {
		d = filepath.Join(d, strings.ReplaceAll(t.Name(), "/", "_"))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		t.Error(err)
	}
	t.Logf("screenshot: %s", p)
}

// setInput sets a field's value and fires its input event.
func setInput(sel, value string) chromedp.Action[bool] {
	s, _ := json.Marshal(sel)
	v, _ := json.Marshal(value)
	return chromedp.Evaluate[bool](fmt.Sprintf(`(()=>{const e=document.querySelector(%s); e.value=%s; e.dispatchEvent(new Event("input")); e.dispatchEvent(new Event("change")); return true})()`, s, v))
}

// waitJS polls a JavaScript expression until it is true.
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("waiting for %s: %v; page text:\n%s", what, err, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func jsString(s string) string { b, _ := json.Marshal(s); return string(b) }

func chromedpRunBool(ctx context.Context, js string) (bool, error) {
	return chromedp.Run(ctx, chromedp.Evaluate[bool](js))
}

func navigate(ctx context.Context, url string) error { return chromedp.Do(ctx, chromedp.Navigate(url)) }
