package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/internal/fhtest"
	"github.com/fieldhub/fieldhub/internal/influx"
	"github.com/fieldhub/fieldhub/topic"
)

func TestMain(m *testing.M) { fhtest.Main(m) }

// TestExportInfluxDB runs a hub with export.influxdb pointing at a real
// InfluxDB: every point a device publishes, once stored, is in InfluxDB.
func TestExportInfluxDB(t *testing.T) {
	srv := fhtest.InfluxDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := srv.Query(ctx, "", `CREATE DATABASE "hubexport"`); err != nil {
		t.Fatal(err)
	}
	cfg := hubConfig(t, t.TempDir())
	cfg.Export.InfluxDB = influx.Config{URL: srv.URL(), Database: "hubexport", FlushInterval: 100 * time.Millisecond}
	h := startHub(t, cfg)
	c := h.addDevice("exp-1", "password")
	cl, _, err := dial5(t, h.Addr("mqtt").String(), nil, "exp-1", "exp-1", c.Password)
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	base := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	for i := 1; i <= n; i++ {
		if _, err := cl.Publish(ctx, &paho.Publish{Topic: topic.Telemetry("exp-1"), QoS: 1,
			Payload: telemetryJSON(i, float64(i), base.Add(time.Duration(i)*time.Millisecond))}); err != nil {
			t.Fatal(err)
		}
	}
	// telemetryJSON has three metrics: temperature, ok, state.
	fhtest.Eventually(t, 20*time.Second, "every point in InfluxDB", func() bool {
		body, err := srv.Query(ctx, "hubexport", `SELECT count("temperature"), count("ok"), count("state") FROM "telemetry" WHERE "device" = 'exp-1'`)
		if err != nil {
			return false
		}
		var res struct {
			Results []struct {
				Series []struct {
					Values [][]any `json:"values"`
				} `json:"series"`
			} `json:"results"`
		}
		if json.Unmarshal(body, &res) != nil || len(res.Results) == 0 || len(res.Results[0].Series) == 0 {
			return false
		}
		v := res.Results[0].Series[0].Values[0]
		return fmt.Sprint(v[1:]) == fmt.Sprintf("[%d %d %d]", n, n, n)
	})
	if got := h.counter("fieldhub_export_points_total", "sink", "influxdb"); got != 3*n {
		t.Errorf("fieldhub_export_points_total = %v; want %d", got, 3*n)
	}
}
