package api

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
)

// Rates tells how many messages a device had stored in the last minute
// (the telemetry ingester implements it). When it also has a
// Forget(device string) method, deleting a device through the API calls it.
type Rates interface {
	MessageRate(device string) float64
}

// TwinIndex lists stored twins in device order; the device list reads the
// firmware versions of a whole page with one call instead of one per row.
type TwinIndex interface {
	ListTwins(ctx context.Context, after string, limit int) ([]store.Twin, error)
}

// Firmware returns the firmware version in a reported twin state: the
// reported property "firmware" when it is a string, or "firmware.version"
// when "firmware" is an object; "" when absent.
func Firmware(reported []byte) string {
	var doc struct {
		Firmware json.RawMessage `json:"firmware"`
	}
	if json.Unmarshal(reported, &doc) != nil || len(doc.Firmware) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(doc.Firmware, &s) == nil {
		return s
	}
	var o struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(doc.Firmware, &o) == nil {
		return o.Version
	}
	return ""
}

// firmwareOfPage returns the firmware version of each device of a page of
// the device list (ids ascending), read with one ListTwins call in the
// usual case: the twins stored between the page's first and last id.
func (a *API) firmwareOfPage(ctx context.Context, ds []store.Device) map[string]string {
	out := map[string]string{}
	if a.o.TwinIndex == nil || len(ds) == 0 {
		return out
	}
	want := make(map[string]bool, len(ds))
	for _, d := range ds {
		want[d.ID] = true
	}
	after, last := before(ds[0].ID), ds[len(ds)-1].ID
	for range 10 { // bounded: twins of unregistered ids could sit in the range
		page, err := a.o.TwinIndex.ListTwins(ctx, after, len(ds)+1)
		if err != nil {
			a.o.Logger.Warn("reading firmware versions failed", "err", err)
			return out
		}
		for _, tw := range page {
			if tw.Device > last {
				return out
			}
			if want[tw.Device] {
				if fw := Firmware(tw.Reported.State); fw != "" {
					out[tw.Device] = fw
				}
			}
		}
		if len(page) <= len(ds) {
			return out
		}
		after = page[len(page)-1].Device
	}
	return out
}

// before returns a string below id and above every valid device id
// smaller than id (device ids are [A-Za-z0-9._:-], so no valid id sorts
// between id minus its last byte plus "~" and id).
func before(id string) string {
	if id == "" {
		return ""
	}
	b := []byte(id)
	b[len(b)-1]--
	return string(b) + "~"
}

// Gateway is one entry of GET /api/v1/gateways.
type Gateway struct {
	Device
	// Children counts the devices registered behind the gateway.
	Children int `json:"children"`
	// Spool is the gateway's reported "edge.spool" section as it sent
	// it (see docs/edge.md), absent when it reported none.
	Spool json.RawMessage `json:"spool,omitempty"`
	// ReportedAt is when the gateway's reported twin last changed.
	ReportedAt *time.Time `json:"reported_at,omitempty"`
}

// maxGateways bounds the answer of GET /api/v1/gateways.
const maxGateways = 1000

// listGateways serves GET /api/v1/gateways: the devices that have devices
// registered behind them, in id order, with their online state and the
// spool state they report in their twin. It reads the registry page by
// page (never all of it in memory) and one twin per gateway.
func (a *API) listGateways(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	children := map[string]int{}
	after := ""
	for {
		page, err := a.o.Registry.List(ctx, store.ListOptions{After: after, Limit: 1000})
		if err != nil {
			a.storeError(w, err)
			return
		}
		for _, d := range page {
			if d.Gateway != "" && (len(children) < maxGateways || children[d.Gateway] > 0) {
				children[d.Gateway]++
			}
		}
		if len(page) < 1000 {
			break
		}
		after = page[len(page)-1].ID
	}
	ids := make([]string, 0, len(children))
	for id := range children {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := struct {
		Gateways []Gateway `json:"gateways"`
	}{Gateways: []Gateway{}}
	for _, id := range ids {
		d, err := a.o.Registry.Get(ctx, id)
		if err != nil {
			continue // deleted meanwhile
		}
		g := Gateway{Device: a.view(d), Children: children[id]}
		if a.o.Twins != nil {
			if tv, err := a.o.Twins.Get(ctx, id); err == nil {
				g.Firmware = Firmware(tv.Reported.State)
				g.Spool = spoolSection(tv.Reported.State)
				if tv.Reported.UpdatedAt != nil {
					t := tv.Reported.UpdatedAt.UTC()
					g.ReportedAt = &t
				}
			}
		}
		out.Gateways = append(out.Gateways, g)
	}
	writeJSON(w, http.StatusOK, out)
}

// spoolSection returns reported["edge"]["spool"] when it is an object.
func spoolSection(reported []byte) json.RawMessage {
	var doc struct {
		Edge struct {
			Spool json.RawMessage `json:"spool"`
		} `json:"edge"`
	}
	if json.Unmarshal(reported, &doc) != nil || !strings.HasPrefix(strings.TrimSpace(string(doc.Edge.Spool)), "{") {
		return nil
	}
	return doc.Edge.Spool
}
