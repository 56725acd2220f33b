package edge

import (
	"context"
	"encoding/json"
	"runtime/debug"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/topic"
)

// SpoolReport is the section "edge.spool" of the gateway's reported twin
// at the hub: the state of its spool and uplink when it was sent. The
// counters are since the gateway started.
type SpoolReport struct {
	Records    int64   `json:"records"`      // unacknowledged records on disk
	Bytes      int64   `json:"bytes"`        // bytes of all segments
	MaxBytes   int64   `json:"max_bytes"`    // spool.max_bytes
	OldestAgeS float64 `json:"oldest_age_s"` // age of the oldest unacknowledged record, seconds (0: none)
	// Drops counts records dropped, by reason: overflow and age (deleted
	// by spool.overflow drop_oldest and spool.max_age), refused
	// (refuse_new), no_space (full disk), hub_refused (in batches the hub
	// refused for good).
	Drops  map[string]uint64 `json:"drops"`
	Uplink UplinkReport      `json:"uplink"`
	// ReportedAt is when the gateway sent this report.
	ReportedAt time.Time `json:"reported_at"`
}

// UplinkReport is the uplink's state in a SpoolReport.
type UplinkReport struct {
	State string    `json:"state"` // "connected" (a report travels only over a live uplink)
	Since time.Time `json:"since"` // when the uplink came up
	// Reconnects counts failed or lost connections to the hub.
	Reconnects uint64 `json:"reconnects"`
}

// spoolReport takes a snapshot of the spool and the uplink.
func (e *Edge) spoolReport(now time.Time) SpoolReport {
	st := e.spool.Stats()
	r := SpoolReport{
		Records: st.Records, Bytes: st.Bytes, MaxBytes: e.cfg.Spool.MaxBytes,
		OldestAgeS: st.OldestAge.Round(time.Millisecond).Seconds(),
		Drops: map[string]uint64{
			"overflow": st.Drops.Overflow, "age": st.Drops.Age, "refused": st.Drops.Refused,
			"no_space": st.Drops.NoSpace, "hub_refused": e.up.refused.Load(),
		},
		Uplink: UplinkReport{
			State:      "disconnected",
			Since:      time.Unix(0, e.up.since.Load()).UTC().Truncate(time.Millisecond),
			Reconnects: e.up.lost.Load(),
		},
		ReportedAt: now.UTC().Truncate(time.Millisecond),
	}
	if e.up.connected.Load() {
		r.Uplink.State = "connected"
	}
	return r
}

// reportLoop sends the gateway's firmware version and spool state to the
// hub as a reported twin patch ({"firmware": …, "edge": {"spool": …}}):
// at once on every new uplink connection, when a drop count changes or
// the spool turns empty or non-empty, and every uplink.report_interval.
// Checked every second; nothing is sent while the uplink is down (the
// hub sees the gateway offline then).
func (e *Edge) reportLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	every := time.Duration(e.cfg.Uplink.ReportInterval)
	var (
		conns    uint64
		last     time.Time
		lastSent SpoolReport
	)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if !e.up.connected.Load() {
				continue
			}
			r := e.spoolReport(now)
			c := e.up.conns.Load()
			if c == conns && now.Sub(last) < every && !reportChanged(lastSent, r) {
				continue
			}
			if err := e.report(ctx, r); err != nil {
				e.log.Debug("reporting the spool state failed", "err", err)
				continue
			}
			conns, last, lastSent = c, now, r
		}
	}
}

// reportChanged tells whether r differs from the last report in what is
// worth sending at once.
func reportChanged(prev, r SpoolReport) bool {
	if (prev.Records == 0) != (r.Records == 0) || prev.Uplink.State != r.Uplink.State {
		return true
	}
	for k, v := range r.Drops {
		if prev.Drops[k] != v {
			return true
		}
	}
	return false
}

// report publishes one reported twin patch and waits for the hub's PUBACK.
func (e *Edge) report(ctx context.Context, r SpoolReport) error {
	body, err := json.Marshal(map[string]any{"firmware": e.cfg.Version, "edge": map[string]any{"spool": r}})
	if err != nil {
		return err
	}
	return e.up.publish(ctx, &paho.Publish{Topic: topic.TwinReported(e.cfg.ID), QoS: 1, Payload: body})
}

// ldflagsVersion is the flag `make build` sets on the command package.
const ldflagsVersion = "github.com/fieldhub/fieldhub/internal/cli.Version="

// BuildVersion returns the fieldhub version of this binary: the one
// `make build` sets with -ldflags (what `fieldhub version` prints), else
// the module version or VCS revision the Go toolchain stamped, else "dev".
func BuildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "-ldflags":
			if i := strings.Index(s.Value, ldflagsVersion); i >= 0 {
				v := s.Value[i+len(ldflagsVersion):]
				if j := strings.IndexAny(v, " '\""); j >= 0 {
					v = v[:j]
				}
				if v != "" {
					return v
				}
			}
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	if len(rev) >= 12 {
		return rev[:12] + dirty
	}
	return "dev"
}
