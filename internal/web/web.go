// Package web is the hub's dashboard: static, embedded assets (an HTML
// shell, its script and style, and the uPlot charting library that `make
// ui` installs with npm into static/vendor) that read all their data from
// the REST API with the admin token the operator types in. The assets hold
// no data; every data route they call is behind the API's bearer-token
// check.
package web

import (
	"context"
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"

	"github.com/fieldhub/fieldhub/internal/api"
	"github.com/fieldhub/fieldhub/internal/store"
)

// The folder always holds the committed files (the shell, its script and
// style, static/vendor/README.md); uPlot is there only after `make ui`.
//
//go:embed static
var static embed.FS

// UPlotFile is the charting library's script among the assets.
const UPlotFile = "vendor/uPlot.iife.min.js"

// ChartsAvailable reports whether the binary embeds uPlot (built with
// `make`); without it the dashboard works but says "charts unavailable:
// build with make" where the charts would be.
func ChartsAvailable() bool {
	_, err := fs.Stat(Assets(), UPlotFile)
	return err == nil
}

// Assets returns the embedded files, rooted at the static folder.
func Assets() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err)
	}
	return sub
}

// Options configure the dashboard's own JSON route.
type Options struct {
	Registry api.Registry // to count devices
	Presence api.Presence // to count those online
}

// Mount adds the dashboard to the API's mux: the shell at "/", the assets
// under "/ui/", and GET /api/v1/dashboard/summary (behind the token).
func Mount(a *api.API, o Options) {
	assets := Assets()
	index, err := fs.ReadFile(assets, "index.html")
	if err != nil {
		panic(err)
	}
	a.Handle("GET /{$}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secure(w)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(index)
	}))
	files := http.StripPrefix("/ui/", http.FileServerFS(assets))
	a.Handle("GET /ui/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secure(w)
		files.ServeHTTP(w, r)
	}))
	if o.Registry != nil && o.Presence != nil {
		a.Handle("GET /api/v1/dashboard/summary", a.Authenticated(func(w http.ResponseWriter, r *http.Request) {
			s, err := summarize(r.Context(), o)
			if err != nil {
				http.Error(w, `{"error":{"code":"internal","message":"internal error; see the hub's log"}}`, http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			writeJSON(w, s)
		}))
	}
}

// secure sets headers that keep the pages from loading anything but
// their own assets and from being framed.
func secure(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

// Summary is the answer of GET /api/v1/dashboard/summary.
type Summary struct {
	Devices int `json:"devices"`
	Online  int `json:"online"` // with a live MQTT session of their own
	// ViaGateway counts devices without a session of their own whose
	// gateway has one (sensors behind an edge gateway).
	ViaGateway int `json:"via_gateway"`
	Offline    int `json:"offline"`
}

// summarize counts the registry page by page (never all ids in memory).
func summarize(ctx context.Context, o Options) (Summary, error) {
	var s Summary
	after := ""
	for {
		page, err := o.Registry.List(ctx, store.ListOptions{After: after, Limit: 1000})
		if err != nil {
			return s, err
		}
		for _, d := range page {
			s.Devices++
			switch {
			case o.Presence.Online(d.ID):
				s.Online++
			case d.Gateway != "" && o.Presence.Online(d.Gateway):
				s.ViaGateway++
			}
		}
		if len(page) < 1000 {
			break
		}
		after = page[len(page)-1].ID
	}
	s.Offline = s.Devices - s.Online - s.ViaGateway
	return s, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	enc.Encode(v)
}
