package influx

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fieldhub/fieldhub/internal/fhtest"
	"github.com/fieldhub/fieldhub/payload"
)

// These tests run against a real InfluxDB 1.6 (Debian's influxd) through
// API version 1; API version 2 is checked against a fake in TestV2Request.

var dbSeq int

// newDB creates a database of its own on the shared server.
func newDB(t *testing.T, srv *fhtest.InfluxServer) string {
	t.Helper()
	dbSeq++
	db := fmt.Sprintf("%s_%d", strings.ReplaceAll(t.Name(), "/", "_"), dbSeq)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := srv.Query(ctx, "", fmt.Sprintf("CREATE DATABASE %q", db)); err != nil {
		t.Fatal(err)
	}
	return db
}

// row is one stored value: series (device), time, field.
type row struct {
	device string
	ts     int64
	field  string
}

// readAll returns every value of measurement in db, by device, time and
// field, with times in nanoseconds.
func readAll(t *testing.T, srv *fhtest.InfluxServer, db, measurement string) map[row]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body, err := srv.Query(ctx, db, fmt.Sprintf(`SELECT * FROM %q GROUP BY "device"`, measurement))
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Results []struct {
			Error  string
			Series []struct {
				Tags    map[string]string
				Columns []string
				Values  [][]any
			}
		}
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	if err := dec.Decode(&res); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	got := map[row]any{}
	for _, r := range res.Results {
		if r.Error != "" {
			t.Fatalf("query: %s", r.Error)
		}
		for _, s := range r.Series {
			for _, vals := range s.Values {
				ts, err := vals[0].(json.Number).Int64()
				if err != nil {
					t.Fatal(err)
				}
				for i, c := range s.Columns[1:] {
					if v := vals[i+1]; v != nil {
						if n, ok := v.(json.Number); ok {
							f, _ := n.Float64()
							v = f
						}
						got[row{s.Tags["device"], ts, c}] = v
					}
				}
			}
		}
	}
	return got
}

// want returns the rows messages should produce.
func want(ms []*payload.Message) map[row]any {
	w := map[row]any{}
	for _, m := range ms {
		for _, p := range m.Points {
			w[row{m.Device, p.TS, p.Metric}] = p.Value.Any()
		}
	}
	return w
}

func diff(got, want map[row]any) string {
	var out []string
	for k, v := range want {
		if g, ok := got[k]; !ok {
			out = append(out, fmt.Sprintf("missing %v = %v", k, v))
		} else if g != v {
			out = append(out, fmt.Sprintf("%v = %#v; want %#v", k, g, v))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			out = append(out, fmt.Sprintf("unexpected %v = %v", k, v))
		}
	}
	sort.Strings(out)
	if len(out) > 10 {
		out = append(out[:10], fmt.Sprintf("… %d more", len(out)-10))
	}
	return strings.Join(out, "\n")
}

// messages returns n messages of several devices with numbers, booleans
// and strings under names that need escaping.
func messages(n int, base int64) []*payload.Message {
	devices := []string{"dev-1", "dev.2", "gw:3_x"}
	var ms []*payload.Message
	for i := range n {
		ts := base + int64(i)*1_000_000
		ms = append(ms, &payload.Message{Device: devices[i%len(devices)], Points: []payload.Point{
			{Metric: "temp C", TS: ts, Value: payload.NumberValue(20 + float64(i)/8)},
			{Metric: "a,b=c", TS: ts, Value: payload.NumberValue(-float64(i) * 1e-3)},
			{Metric: `q"uote\back`, TS: ts, Value: payload.BoolValue(i%2 == 0)},
			{Metric: `k\"w`, TS: ts, Value: payload.NumberValue(math.MaxFloat64 / float64(i+1))},
			{Metric: "status/é", TS: ts, Value: payload.StringValue(fmt.Sprintf("say \"hi\" %d\\\nline 2 ends\\", i))},
			{Metric: "later", TS: ts + 500, Value: payload.NumberValue(float64(i))}, // another timestamp in one message
		}})
	}
	return ms
}

// TestInfluxDBRoundTrip writes messages through the sink and reads every
// value back from influxd.
func TestInfluxDBRoundTrip(t *testing.T) {
	srv := fhtest.InfluxDB(t)
	db := newDB(t, srv)
	s := newSink(t, Config{URL: srv.URL(), Database: db, BatchSize: 500, FlushInterval: 20 * time.Millisecond})
	ms := messages(1000, 1_700_000_000_000_000_000)
	for _, m := range ms {
		s.Write(m)
	}
	if err := closeSink(t, s, 30*time.Second); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := counts(s); got != "points=6000 buffer_full=0 rejected=0 shutdown=0 buffered=0" {
		t.Errorf("counts = %s", got)
	}
	got := readAll(t, srv, db, DefaultMeasurement)
	if d := diff(got, want(ms)); d != "" {
		t.Errorf("read back differs:\n%s", d)
	}
	if len(got) != 6000 {
		t.Errorf("read back %d values; want 6000", len(got))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body, err := srv.Query(ctx, db, `SELECT COUNT("temp C") FROM telemetry WHERE device = 'dev.2'`)
	if err != nil || !strings.Contains(string(body), `,333]`) {
		t.Errorf("COUNT(temp C) for dev.2 = %s, %v; want 333", body, err)
	}
}

// TestInfluxDBOutage stops a server of its own: writes beyond the buffer
// are dropped and counted exactly, and the buffered ones arrive once the
// server is back.
func TestInfluxDBOutage(t *testing.T) {
	fhtest.InfluxDB(t) // skips without influxd
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := fhtest.StartInfluxDB(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	db := newDB(t, srv)
	srv.Halt()

	s := newSink(t, Config{URL: srv.URL(), Database: db, BatchSize: 4, BufferSize: 12,
		FlushInterval: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Timeout: time.Second})
	ms := messages(10, 1_700_000_000_000_000_000) // 6 points each: 2 fit
	for i, m := range ms {
		if i == 1 { // let the first batch go out and fail while the rest are written
			fhtest.Eventually(t, 5*time.Second, "a retry", func() bool { return testutil.ToFloat64(s.retries) > 0 })
		}
		s.Write(m)
	}
	if got := counts(s); got != "points=0 buffer_full=48 rejected=0 shutdown=0 buffered=12" {
		t.Errorf("while down: counts = %s", got)
	}
	if err := srv.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	fhtest.Eventually(t, 20*time.Second, "delivery after restart", func() bool { return testutil.ToFloat64(s.points) == 12 })
	if got := counts(s); got != "points=12 buffer_full=48 rejected=0 shutdown=0 buffered=0" {
		t.Errorf("after restart: counts = %s", got)
	}
	if d := diff(readAll(t, srv, db, DefaultMeasurement), want(ms[:2])); d != "" {
		t.Errorf("read back differs:\n%s", d)
	}
}

// TestInfluxDBRejected makes influxd refuse points with a field type
// conflict: they are counted as rejected, the rest of the batch is
// stored, and nothing is retried.
func TestInfluxDBRejected(t *testing.T) {
	srv := fhtest.InfluxDB(t)
	db := newDB(t, srv)
	s := newSink(t, Config{URL: srv.URL(), Database: db, FlushInterval: 10 * time.Millisecond})
	s.Write(msg("d1", 1, "mode", payload.StringValue("auto")))
	fhtest.Eventually(t, 10*time.Second, "the string", func() bool { return testutil.ToFloat64(s.points) == 1 })
	// One batch: two points conflicting with the string field, one fine.
	s.Write(&payload.Message{Device: "d2", Points: []payload.Point{
		{Metric: "mode", TS: 2, Value: payload.NumberValue(1.5)},
		{Metric: "temp", TS: 2, Value: payload.NumberValue(20)},
	}})
	s.Write(msg("d1", 3, "mode", payload.BoolValue(true)))
	if err := closeSink(t, s, 10*time.Second); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := counts(s); got != "points=2 buffer_full=0 rejected=2 shutdown=0 buffered=0" {
		t.Errorf("counts = %s", got)
	}
	if got := testutil.ToFloat64(s.retries); got != 0 {
		t.Errorf("retries = %v; want 0", got)
	}
	w := map[row]any{{"d1", 1, "mode"}: "auto", {"d2", 2, "temp"}: 20.0}
	if d := diff(readAll(t, srv, db, DefaultMeasurement), w); d != "" {
		t.Errorf("read back differs:\n%s", d)
	}
}
