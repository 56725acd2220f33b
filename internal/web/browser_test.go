package web_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
)

const xssName = `<script>alert(1)</script><img src=x onerror="document.title='pwned'">`

// A real browser against a real hub: log in, see the fleet (a hostile
// name renders as text), open a device, watch its chart grow, send a
// command that a paho device answers, edit the desired twin and see the
// delta, and meet a 412 when the version moved on.
func TestBrowserDashboard(t *testing.T) {
	chromium(t)
	requireUPlot(t, true)
	h := startHub(t)
	dir := artifacts(t)
	pw := h.addDevice("sensor-1", "Boiler room", map[string]string{"site": "plant-2"})
	xpw := h.addDevice("xss-1", xssName, map[string]string{"note": xssName})
	h.addDevice("idle-1", "", nil)
	gwpw := h.addDevice("gw-1", "Edge gateway", nil)
	if code := h.api("POST", "/api/v1/devices", map[string]any{"id": "child-1", "gateway": "gw-1"}, nil); code != http.StatusCreated {
		t.Fatalf("creating child-1: HTTP %d", code)
	}
	gw := h.dial("gw-1", gwpw)
	// The gateway reports its firmware and spool state, as fieldhub edge does.
	publish(t, gw, "devices/gw-1/twin/reported", `{"firmware":"fieldhub-test","edge":{"spool":{"records":12,"bytes":4096,"max_bytes":1073741824,"oldest_age_s":3.5,`+
		`"drops":{"overflow":2,"age":0,"refused":0,"no_space":0,"hub_refused":0},"uplink":{"state":"connected","since":"2026-01-02T03:04:05Z","reconnects":1},"reported_at":"2026-01-02T03:04:06Z"}}}`)

	dev := h.dial("sensor-1", pw)
	publish(t, dev, "devices/sensor-1/twin/reported", `{"firmware":{"version":"2.7.1"}}`)
	// The device answers every command with success.
	if tok := dev.Subscribe("devices/sensor-1/commands/#", 1, func(c mqtt3.Client, m mqtt3.Message) {
		var cmd struct {
			ID string `json:"id"`
		}
		json.Unmarshal(m.Payload(), &cmd)
		go c.Publish("devices/sensor-1/responses/"+cmd.ID, 1, false, `{"status":"ok","result":{"uptime":0}}`)
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	// It publishes a temperature every 500 ms until the test ends.
	var seq atomic.Int64
	pub := func() {
		n := seq.Add(1)
		payload := fmt.Sprintf(`{"seq":%d,"data":{"temperature":%.2f,"humidity":%d}}`, n, 20+float64(n%10)/3, 40+n%5)
		dev.Publish("devices/sensor-1/telemetry", 1, false, payload).WaitTimeout(5 * time.Second)
	}
	for range 5 {
		pub()
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(500 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				pub()
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	// The hostile device raises an alert.
	xd := h.dial("xss-1", xpw)
	publish(t, xd, "devices/xss-1/alerts", `{"metric":"temperature","value":99,"rule":"threshold_above","severity":"critical","message":"hot","state":"raised"}`)

	ctx := browser(t)
	run := func(what string, a chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, a); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(what, js string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js)); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// Login: a wrong token is refused, the right one lets in.
	run("open", chromedp.Navigate(h.url+"/"))
	waitJS(t, ctx, "the login form", `!document.getElementById("login-view").hidden`)
	screenshot(t, ctx, dir, "01-login")
	if _, err := chromedp.Run(ctx, setInput("#token", "wrong")); err != nil {
		t.Fatal(err)
	}
	eval("submit", `(document.getElementById("login-form").requestSubmit(), true)`)
	waitJS(t, ctx, "the refusal", `document.getElementById("login-error").textContent.includes("401")`)
	if _, err := chromedp.Run(ctx, setInput("#token", h.AdminToken())); err != nil {
		t.Fatal(err)
	}
	eval("submit", `(document.getElementById("login-form").requestSubmit(), true)`)

	// Fleet.
	waitJS(t, ctx, "five devices", `document.querySelectorAll("#fleet-rows tr").length === 5`)
	waitJS(t, ctx, "counts", `document.getElementById("count-online").textContent === "4" && document.getElementById("count-via-gateway").textContent === " (1 via gateway)" && document.getElementById("count-offline").textContent === "1" && document.getElementById("count-alerting").textContent === "1"`)
	waitJS(t, ctx, "child-1 online via its gateway", `document.querySelector('#fleet-rows tr[data-id="child-1"] td:nth-child(4)').textContent === "online via gw-1"`)
	waitJS(t, ctx, "sensor-1 online", `document.querySelector('#fleet-rows tr[data-id="sensor-1"] td:nth-child(4)').textContent.startsWith("online")`)
	waitJS(t, ctx, "the hostile name as text", `document.querySelector('#fleet-rows tr[data-id="xss-1"] td:nth-child(2)').textContent === `+jsString(xssName))
	waitJS(t, ctx, "the hostile label as text", `document.querySelector('#fleet-rows tr[data-id="xss-1"] .label').textContent === `+jsString("note="+xssName))
	// Firmware from the twins, message rate from the ingester.
	waitJS(t, ctx, "firmware versions", `document.querySelector('#fleet-rows tr[data-id="sensor-1"] .firmware').textContent === "2.7.1" && document.querySelector('#fleet-rows tr[data-id="gw-1"] .firmware').textContent === "fieldhub-test" && document.querySelector('#fleet-rows tr[data-id="idle-1"] .firmware').textContent === "—"`)
	waitJS(t, ctx, "sensor-1's message rate", `Number(document.querySelector('#fleet-rows tr[data-id="sensor-1"] .rate').textContent) >= 5 && document.querySelector('#fleet-rows tr[data-id="idle-1"] .rate').textContent === "0.0"`)
	screenshot(t, ctx, dir, "02-fleet")
	if bad, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.title === "pwned" || document.querySelectorAll("#app script, #app img").length > 0`)); bad {
		t.Fatal("a device-provided string was rendered as HTML")
	}
	// Search by prefix.
	if _, err := chromedp.Run(ctx, setInput("#search", "xss")); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the filtered list", `document.querySelectorAll("#fleet-rows tr").length === 1 && !!document.querySelector('#fleet-rows tr[data-id="xss-1"]')`)

	// Device view: the chart receives new points without a reload.
	eval("open the device", `(location.hash = "#/device/sensor-1", true)`)
	waitJS(t, ctx, "the temperature chart", `!!document.querySelector('.chart[data-metric="temperature"] canvas') && Number(document.querySelector('.chart[data-metric="temperature"]').dataset.points) >= 5`)
	// The raw range follows the live stream (and polls only while it is down).
	waitJS(t, ctx, "the live stream", `document.getElementById("charts").dataset.live === "streaming"`)
	n0, err := chromedp.Run(ctx, chromedp.Evaluate[int](`Number(document.querySelector('.chart[data-metric="temperature"]').dataset.points)`))
	if err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "new points from the stream", fmt.Sprintf(`Number(document.querySelector('.chart[data-metric="temperature"]').dataset.points) >= %d && document.getElementById("charts").dataset.live === "streaming"`, n0+3))
	waitJS(t, ctx, "latest values", `document.getElementById("latest").textContent.includes("temperature")`)
	waitJS(t, ctx, "the device's firmware and rate", `document.getElementById("device-firmware").textContent === "2.7.1" && Number(document.getElementById("device-rate").textContent) > 0`)
	screenshot(t, ctx, dir, "03-device")

	// Command: sent, answered by the device, shown as succeeded.
	if _, err := chromedp.Run(ctx, setInput("#cmd-name", "reboot")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, setInput("#cmd-params", `{"delay":1}`)); err != nil {
		t.Fatal(err)
	}
	eval("send", `(document.getElementById("cmd-send").click(), true)`)
	waitJS(t, ctx, "the command to succeed", `document.getElementById("cmd-result").textContent.startsWith("succeeded")`)
	waitJS(t, ctx, "the command history", `[...document.querySelectorAll("#cmd-history .cmd-state")].some(e => e.textContent === "succeeded")`)

	// Twin: edit desired, see the delta.
	if _, err := chromedp.Run(ctx, setInput("#twin-patch", `{"interval":10,"led":{"color":"red"}}`)); err != nil {
		t.Fatal(err)
	}
	eval("apply", `(document.getElementById("twin-save").click(), true)`)
	waitJS(t, ctx, "the delta", `(()=>{try{const d=JSON.parse(document.getElementById("twin-delta").textContent);return d.interval===10&&d.led.color==="red"}catch(e){return false}})()`)
	waitJS(t, ctx, "desired version 1", `document.getElementById("twin-version").textContent === "1"`)
	screenshot(t, ctx, dir, "04-command-twin")
	// Someone else moves the version on: the next apply shows 412.
	if _, err := chromedp.Run(ctx, setInput("#twin-patch", `{"interval":20}`)); err != nil {
		t.Fatal(err)
	}
	if code := h.api("PATCH", "/api/v1/devices/sensor-1/twin", map[string]any{"desired": map[string]any{"mode": "eco"}}, nil); code != http.StatusOK {
		t.Fatalf("PATCH twin = %d", code)
	}
	eval("apply", `(document.getElementById("twin-save").click(), true)`)
	waitJS(t, ctx, "the 412", `document.getElementById("twin-msg").textContent.startsWith("412")`)

	// Alerts view.
	eval("alerts", `(location.hash = "#/alerts", true)`)
	waitJS(t, ctx, "the alert", `document.querySelectorAll("#alert-rows tr").length === 1 && document.querySelector("#alert-rows .critical").textContent === "critical"`)
	screenshot(t, ctx, dir, "05-alerts")
	// Hub health.
	eval("health", `(location.hash = "#/health", true)`)
	waitJS(t, ctx, "connections", `document.getElementById("health-rows").textContent.includes("fieldhub_mqtt_connections")`)
	waitJS(t, ctx, "the gateway's spool", `(()=>{const r=document.querySelector('#gateway-rows tr[data-id="gw-1"]'); return !!r && document.querySelectorAll("#gateway-rows tr").length === 1 &&
		r.querySelector(".spool-records").textContent === "12" && r.querySelector(".spool-bytes").textContent === "4.0 KiB of 1.0 GiB" && r.querySelector(".spool-age").textContent === "4 s" &&
		r.querySelector(".spool-drops").textContent === "overflow=2" && r.querySelector(".spool-uplink").textContent.startsWith("connected since") && r.querySelector(".firmware").textContent === "fieldhub-test" &&
		r.children[1].textContent === "online" && r.children[3].textContent === "1"})()`)
	screenshot(t, ctx, dir, "06-health")
	if bad, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.title === "pwned"`)); bad {
		t.Fatal("a device-provided string ran as HTML")
	}
}
