package web_test

import (
	"bytes"
	"io/fs"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/fieldhub/fieldhub/internal/fhtest"
	"github.com/fieldhub/fieldhub/internal/web"
)

func get(t *testing.T, url, token string) (int, http.Header, []byte) {
	t.Helper()
	return fhtest.Do(t, "GET", url, token, "")
}

// Every embedded file is served, byte for byte, with the page's security
// headers; the shell is at "/".
func TestAssetsServed(t *testing.T) {
	h := startHub(t)
	n := 0
	err := fs.WalkDir(web.Assets(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		want, _ := fs.ReadFile(web.Assets(), p)
		code, hdr, got := get(t, h.url+"/ui/"+p, "")
		if code != 200 || !bytes.Equal(got, want) {
			t.Errorf("GET /ui/%s = %d, %d bytes; want 200, %d bytes", p, code, len(got), len(want))
		}
		if hdr.Get("Content-Security-Policy") == "" {
			t.Errorf("GET /ui/%s: no Content-Security-Policy", p)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"index.html", "app.js", "app.css", "vendor/README.md"}
	if requireUPlot(t, false) {
		want = append(want, "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css", "vendor/uPlot.LICENSE")
	}
	for _, want := range want {
		if _, err := fs.Stat(web.Assets(), want); err != nil {
			t.Errorf("asset %s missing: %v", want, err)
		}
	}
	code, hdr, body := get(t, h.url+"/", "")
	if code != 200 || !bytes.Contains(body, []byte(`id="login-form"`)) || !strings.HasPrefix(hdr.Get("Content-Type"), "text/html") {
		t.Errorf("GET / = %d %q", code, hdr.Get("Content-Type"))
	}
	if !strings.Contains(hdr.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Errorf("GET /: CSP %q", hdr.Get("Content-Security-Policy"))
	}
	t.Logf("%d assets", n)
}

// The pages carry no data: no inline script, nothing from the registry,
// no URL outside the hub.
func TestPagesHoldNoData(t *testing.T) {
	h := startHub(t)
	h.addDevice("secret-device-1", "Secret name", map[string]string{"site": "hidden-site"})
	inline := regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`)
	for _, p := range []string{"/", "/ui/index.html", "/ui/app.js", "/ui/app.css"} {
		_, _, body := get(t, h.url+p, "")
		for _, leak := range []string{"secret-device-1", "Secret name", "hidden-site", h.AdminToken()} {
			if bytes.Contains(body, []byte(leak)) {
				t.Errorf("GET %s contains %q", p, leak)
			}
		}
		if strings.HasSuffix(p, "/") || strings.HasSuffix(p, ".html") {
			if inline.Match(body) {
				t.Errorf("GET %s has an inline script", p)
			}
			if bytes.Contains(body, []byte("http://")) || bytes.Contains(body, []byte("https://")) {
				t.Errorf("GET %s refers to an address outside the hub", p)
			}
		}
	}
	// app.js never assigns HTML.
	js, _ := fs.ReadFile(web.Assets(), "app.js")
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"} {
		if bytes.Contains(js, []byte(bad)) {
			t.Errorf("app.js uses %s", bad)
		}
	}
}

// Every data route the dashboard calls answers 401 without a token or with
// a wrong one, and the answer names no device.
func TestDataRoutesRefuseWithoutToken(t *testing.T) {
	h := startHub(t)
	h.addDevice("leaky-1", "Leaky name", map[string]string{"k": "leaky-label"})
	routes := []struct{ method, path, body string }{
		{"GET", "/api/v1/devices?limit=50", ""},
		{"GET", "/api/v1/devices?limit=50&prefix=leaky", ""},
		{"GET", "/api/v1/devices/leaky-1", ""},
		{"POST", "/api/v1/devices/leaky-1/credentials", "{}"},
		{"GET", "/api/v1/devices/leaky-1/telemetry?from=0", ""},
		{"GET", "/api/v1/devices/leaky-1/telemetry/latest", ""},
		{"GET", "/api/v1/devices/leaky-1/twin", ""},
		{"PATCH", "/api/v1/devices/leaky-1/twin", `{"desired":{"a":1}}`},
		{"GET", "/api/v1/devices/leaky-1/commands?limit=20", ""},
		{"POST", "/api/v1/devices/leaky-1/commands?wait=10s", `{"name":"reboot"}`},
		{"GET", "/api/v1/alerts?limit=1000", ""},
		{"GET", "/api/v1/dashboard/summary", ""},
		{"GET", "/api/v1/gateways", ""},
	}
	for _, tok := range []string{"", "wrong-token"} {
		for _, r := range routes {
			code, hdr, body := fhtest.Do(t, r.method, h.url+r.path, tok, r.body)
			if code != http.StatusUnauthorized {
				t.Errorf("%s %s (token %q) = %d; want 401", r.method, r.path, tok, code)
			}
			if hdr.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s: no WWW-Authenticate", r.method, r.path)
			}
			for _, leak := range []string{"leaky-1", "Leaky name", "leaky-label"} {
				if bytes.Contains(body, []byte(leak)) {
					t.Errorf("%s %s (401) leaks %q: %s", r.method, r.path, leak, body)
				}
			}
		}
	}
	// Nothing changed: still one device, credentials version 1 (or 0), no command, no twin.
	var d struct {
		CredentialsVersion int `json:"credentials_version"`
	}
	h.api("GET", "/api/v1/devices/leaky-1", nil, &d)
	var cmds struct {
		Commands []any `json:"commands"`
	}
	h.api("GET", "/api/v1/devices/leaky-1/commands", nil, &cmds)
	if len(cmds.Commands) != 0 {
		t.Errorf("%d commands after refused requests", len(cmds.Commands))
	}
	var s web.Summary
	if code := h.api("GET", "/api/v1/dashboard/summary", nil, &s); code != 200 || s.Devices != 1 || s.Offline != 1 {
		t.Errorf("summary = %d %+v; want 1 device, offline", code, s)
	}
}
