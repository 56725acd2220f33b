package influx

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.yaml.in/yaml/v3"

	"github.com/fieldhub/fieldhub/internal/fhtest"
	"github.com/fieldhub/fieldhub/payload"
)

// request is what a fake server received.
type request struct {
	method, path string
	query        map[string]string
	header       http.Header
	body         string // decompressed
	gzipped      bool
}

// fakeServer records requests and answers with respond (204 when nil).
type fakeServer struct {
	*httptest.Server
	mu      sync.Mutex
	reqs    []request
	respond func(n int, w http.ResponseWriter) // n counts requests from 1
}

func newFakeServer(t *testing.T, respond func(n int, w http.ResponseWriter)) *fakeServer {
	f := &fakeServer{respond: respond}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rd io.Reader = r.Body
		gz := r.Header.Get("Content-Encoding") == "gzip"
		if gz {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			rd = zr
		}
		b, err := io.ReadAll(rd)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		q := map[string]string{}
		for k, v := range r.URL.Query() {
			q[k] = strings.Join(v, ",")
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, request{r.Method, r.URL.Path, q, r.Header.Clone(), string(b), gz})
		n := len(f.reqs)
		f.mu.Unlock()
		if f.respond != nil {
			f.respond(n, w)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeServer) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.reqs...)
}

func newSink(t *testing.T, c Config) *Sink {
	t.Helper()
	s, err := New(c, Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		s.Close(ctx)
	})
	return s
}

func closeSink(t *testing.T, s *Sink, d time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return s.Close(ctx)
}

// counts returns the sink's counters as one comparable string.
func counts(s *Sink) string {
	return fmt.Sprintf("points=%v buffer_full=%v rejected=%v shutdown=%v buffered=%v",
		testutil.ToFloat64(s.points),
		testutil.ToFloat64(s.dropped.WithLabelValues(ReasonBufferFull)),
		testutil.ToFloat64(s.dropped.WithLabelValues(ReasonRejected)),
		testutil.ToFloat64(s.dropped.WithLabelValues(ReasonShutdown)),
		testutil.ToFloat64(s.buffered))
}

func msg(device string, ts int64, metric string, v payload.Value) *payload.Message {
	return &payload.Message{Device: device, Points: []payload.Point{{Metric: metric, TS: ts, Value: v}}}
}

// TestV2Request checks the API version 2 request (InfluxDB 1.6, used by
// the integration tests, has no /api/v2/write): path under the URL's
// prefix, org, bucket, precision, token, body.
func TestV2Request(t *testing.T) {
	f := newFakeServer(t, nil)
	s := newSink(t, Config{URL: f.URL + "/influx/", APIVersion: 2, Org: "my org", Bucket: "b&1", Token: "s3cret"})
	s.Write(&payload.Message{Device: "dev-1", Points: []payload.Point{
		{Metric: "temp", TS: 10, Value: payload.NumberValue(1.5)},
		{Metric: "ok", TS: 10, Value: payload.BoolValue(true)},
	}})
	if err := closeSink(t, s, 5*time.Second); err != nil {
		t.Fatalf("Close: %v", err)
	}
	reqs := f.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	want := request{method: "POST", path: "/influx/api/v2/write", body: "telemetry,device=dev-1 temp=1.5 10\ntelemetry,device=dev-1 ok=true 10\n"}
	if r.method != want.method || r.path != want.path || r.body != want.body {
		t.Errorf("request = %s %s %q; want %s %s %q", r.method, r.path, r.body, want.method, want.path, want.body)
	}
	if got := fmt.Sprint(r.query); got != "map[bucket:b&1 org:my org precision:ns]" {
		t.Errorf("query = %s; want bucket, org and precision=ns", got)
	}
	if got := r.header.Get("Authorization"); got != "Token s3cret" {
		t.Errorf("Authorization = %q; want %q", got, "Token s3cret")
	}
	if got := r.header.Get("Content-Type"); got != "text/plain; charset=utf-8" {
		t.Errorf("Content-Type = %q", got)
	}
	if got := counts(s); got != "points=2 buffer_full=0 rejected=0 shutdown=0 buffered=0" {
		t.Errorf("counts = %s", got)
	}
	if testutil.ToFloat64(s.lastSuccess) == 0 {
		t.Error("last success time not set")
	}
}

func TestV1Request(t *testing.T) {
	f := newFakeServer(t, nil)
	s := newSink(t, Config{URL: f.URL, Database: "fh", RetentionPolicy: "weekly", Username: "u", Password: "p", Measurement: "m"})
	s.Write(msg("d", 1, "x", payload.StringValue("v")))
	if err := closeSink(t, s, 5*time.Second); err != nil {
		t.Fatalf("Close: %v", err)
	}
	r := f.requests()[0]
	if r.path != "/write" || fmt.Sprint(r.query) != "map[db:fh precision:ns rp:weekly]" || r.body != "m,device=d x=\"v\" 1\n" {
		t.Errorf("request = %s %v %q; want /write map[db:fh precision:ns rp:weekly] %q", r.path, r.query, r.body, "m,device=d x=\"v\" 1\n")
	}
	req := &http.Request{Header: r.header}
	if u, p, ok := req.BasicAuth(); !ok || u != "u" || p != "p" {
		t.Errorf("basic auth = %q %q %v; want u p", u, p, ok)
	}
}

// TestBatches checks batch sizes, splitting of messages across batches,
// gzip of large bodies, and the flush interval.
func TestBatches(t *testing.T) {
	f := newFakeServer(t, nil)
	s := newSink(t, Config{URL: f.URL, Database: "db", BatchSize: 100, FlushInterval: time.Hour})
	for i := range 25 { // 250 points: two full batches now, 50 at Close
		m := &payload.Message{Device: "dev", Points: make([]payload.Point, 10)}
		for j := range m.Points {
			m.Points[j] = payload.Point{Metric: fmt.Sprintf("m%d", j), TS: int64(i), Value: payload.NumberValue(float64(j))}
		}
		s.Write(m)
	}
	fhtest.Eventually(t, 5*time.Second, "two full batches", func() bool { return len(f.requests()) == 2 })
	if err := closeSink(t, s, 5*time.Second); err != nil {
		t.Fatalf("Close: %v", err)
	}
	reqs := f.requests()
	var lines []int
	for _, r := range reqs {
		lines = append(lines, strings.Count(r.body, "\n"))
		if !r.gzipped {
			t.Errorf("a %d-byte body was not gzipped", len(r.body))
		}
	}
	if fmt.Sprint(lines) != "[100 100 50]" {
		t.Errorf("lines per request = %v; want [100 100 50]", lines)
	}
	if got := counts(s); got != "points=250 buffer_full=0 rejected=0 shutdown=0 buffered=0" {
		t.Errorf("counts = %s", got)
	}

	// A lone point goes out after FlushInterval.
	f2 := newFakeServer(t, nil)
	s2 := newSink(t, Config{URL: f2.URL, Database: "db", FlushInterval: 20 * time.Millisecond})
	s2.Write(msg("d", 1, "x", payload.NumberValue(1)))
	fhtest.Eventually(t, 5*time.Second, "the flush", func() bool { return len(f2.requests()) == 1 })
	if r := f2.requests()[0]; r.gzipped {
		t.Error("a one-line body was gzipped")
	}
}

// TestRetry checks retries on 5xx, 429 with Retry-After, and network
// errors, without losing or duplicating the batch's points.
func TestRetry(t *testing.T) {
	f := newFakeServer(t, func(n int, w http.ResponseWriter) {
		switch n {
		case 1:
			http.Error(w, `{"error":"timeout"}`, http.StatusServiceUnavailable)
		case 2:
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"error":"slow down"}`, http.StatusTooManyRequests)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
	s := newSink(t, Config{URL: f.URL, Database: "db", FlushInterval: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	s.Write(msg("d", 1, "x", payload.NumberValue(1)))
	fhtest.Eventually(t, 5*time.Second, "the third attempt", func() bool { return testutil.ToFloat64(s.points) == 1 })
	reqs := f.requests()
	if len(reqs) != 3 || reqs[0].body != reqs[2].body {
		t.Fatalf("%d requests; want 3 with one body", len(reqs))
	}
	if got := testutil.ToFloat64(s.retries); got != 2 {
		t.Errorf("retries = %v; want 2", got)
	}
	if got := counts(s); got != "points=1 buffer_full=0 rejected=0 shutdown=0 buffered=0" {
		t.Errorf("counts = %s", got)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	var mu sync.Mutex
	var times []time.Time
	f := newFakeServer(t, func(n int, w http.ResponseWriter) {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	s := newSink(t, Config{URL: f.URL, Database: "db", FlushInterval: 10 * time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	s.Write(msg("d", 1, "x", payload.NumberValue(1)))
	fhtest.Eventually(t, 5*time.Second, "delivery", func() bool { return testutil.ToFloat64(s.points) == 1 })
	mu.Lock()
	defer mu.Unlock()
	if d := times[1].Sub(times[0]); d < 900*time.Millisecond {
		t.Errorf("retried after %s; want Retry-After's 1s", d)
	}
}

func TestNetworkErrorRetried(t *testing.T) {
	addr := fhtest.FreePort(t) // nothing listens there
	s := newSink(t, Config{URL: "http://" + addr, Database: "db", FlushInterval: 10 * time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	s.Write(msg("d", 1, "x", payload.NumberValue(1)))
	fhtest.Eventually(t, 5*time.Second, "retries", func() bool { return testutil.ToFloat64(s.retries) >= 3 })
	err := closeSink(t, s, 50*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v; want an error wrapping context.DeadlineExceeded", err)
	}
	if got := counts(s); got != "points=0 buffer_full=0 rejected=0 shutdown=1 buffered=0" {
		t.Errorf("counts = %s", got)
	}
}

// TestRejected checks that a 4xx drops the batch (counted, not retried)
// and that InfluxDB's partial writes count only the refused points.
func TestRejected(t *testing.T) {
	tests := []struct {
		status int
		body   string
		want   string
	}{
		{400, `{"error":"unable to parse 'x': invalid field format"}`, "points=0 buffer_full=0 rejected=3 shutdown=0 buffered=0"},
		{404, `{"error":"database not found: \"db\""}`, "points=0 buffer_full=0 rejected=3 shutdown=0 buffered=0"},
		{401, `{"error":"authorization failed"}`, "points=0 buffer_full=0 rejected=3 shutdown=0 buffered=0"},
		{400, `{"error":"partial write: field type conflict: input field \"x\" on measurement \"telemetry\" is type string, already exists as type float dropped=1"}`, "points=2 buffer_full=0 rejected=1 shutdown=0 buffered=0"},
		{400, `{"error":"partial write: unable to parse 'a': bad\nunable to parse 'b': bad dropped=0"}`, "points=1 buffer_full=0 rejected=2 shutdown=0 buffered=0"},
		{422, `{"code":"unprocessable entity","message":"failure writing points to database: partial write: field type conflict dropped=2"}`, "points=1 buffer_full=0 rejected=2 shutdown=0 buffered=0"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			f := newFakeServer(t, func(n int, w http.ResponseWriter) { http.Error(w, tt.body, tt.status) })
			s := newSink(t, Config{URL: f.URL, Database: "db", MaxBackoff: time.Millisecond})
			s.Write(&payload.Message{Device: "d", Points: []payload.Point{
				{Metric: "a", TS: 1, Value: payload.NumberValue(1)},
				{Metric: "b", TS: 1, Value: payload.NumberValue(2)},
				{Metric: "c", TS: 1, Value: payload.NumberValue(3)},
			}})
			if err := closeSink(t, s, 5*time.Second); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if n := len(f.requests()); n != 1 {
				t.Errorf("%d requests; want 1 (no retry)", n)
			}
			if got := counts(s); got != tt.want {
				t.Errorf("after %d %s: counts = %s; want %s", tt.status, tt.body, got, tt.want)
			}
		})
	}
}

// TestUnwritablePoints checks that points line protocol cannot carry are
// counted as rejected and the others are sent.
func TestUnwritablePoints(t *testing.T) {
	f := newFakeServer(t, nil)
	s := newSink(t, Config{URL: f.URL, Database: "db"})
	s.Write(&payload.Message{Device: "d", Points: []payload.Point{
		{Metric: "ok", TS: 1, Value: payload.NumberValue(1)},
		{Metric: `bad\`, TS: 1, Value: payload.NumberValue(1)},
	}})
	if err := closeSink(t, s, 5*time.Second); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := counts(s); got != "points=1 buffer_full=0 rejected=1 shutdown=0 buffered=0" {
		t.Errorf("counts = %s", got)
	}
}

// TestBufferFull checks that Write never blocks and drops whole messages
// beyond the buffer, counting the in-flight batch as buffered.
func TestBufferFull(t *testing.T) {
	release := make(chan struct{})
	f := newFakeServer(t, func(n int, w http.ResponseWriter) {
		<-release
		w.WriteHeader(http.StatusNoContent)
	})
	s := newSink(t, Config{URL: f.URL, Database: "db", BatchSize: 4, BufferSize: 10, FlushInterval: time.Hour})
	two := func(i int) *payload.Message {
		return &payload.Message{Device: "d", Points: []payload.Point{
			{Metric: "a", TS: int64(i), Value: payload.NumberValue(1)},
			{Metric: "b", TS: int64(i), Value: payload.NumberValue(2)},
		}}
	}
	start := time.Now()
	for i := range 8 { // 16 points: 5 messages fit (10 points), 3 do not
		s.Write(two(i))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Write blocked for %s", d)
	}
	if got := counts(s); got != "points=0 buffer_full=6 rejected=0 shutdown=0 buffered=10" {
		t.Errorf("counts = %s", got)
	}
	close(release)
	if err := closeSink(t, s, 5*time.Second); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := counts(s); got != "points=10 buffer_full=6 rejected=0 shutdown=0 buffered=0" {
		t.Errorf("counts = %s", got)
	}
	s.Write(two(9))
	if got := counts(s); got != "points=10 buffer_full=6 rejected=0 shutdown=2 buffered=0" {
		t.Errorf("after a Write after Close: counts = %s", got)
	}
	if err := closeSink(t, s, time.Second); err != nil {
		t.Errorf("second Close = %v; want the first result, nil", err)
	}
}

// TestCloseDeadline checks that Close gives up when its ctx ends and
// counts the in-flight batch and the queue as shutdown drops.
func TestCloseDeadline(t *testing.T) {
	f := newFakeServer(t, func(n int, w http.ResponseWriter) { w.WriteHeader(http.StatusInternalServerError) })
	s := newSink(t, Config{URL: f.URL, Database: "db", BatchSize: 2, FlushInterval: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	for i := range 7 {
		s.Write(msg("d", int64(i), "x", payload.NumberValue(1)))
	}
	fhtest.Eventually(t, 5*time.Second, "a retry", func() bool { return testutil.ToFloat64(s.retries) > 0 })
	start := time.Now()
	err := closeSink(t, s, 100*time.Millisecond)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %s with a 100ms deadline", d)
	}
	if err == nil || !strings.Contains(err.Error(), "7 points") || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v; want 7 points not delivered, wrapping the deadline", err)
	}
	if got := counts(s); got != "points=0 buffer_full=0 rejected=0 shutdown=7 buffered=0" {
		t.Errorf("counts = %s", got)
	}
}

func TestMetricsRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFakeServer(t, nil)
	s, err := New(Config{URL: f.URL, Database: "db"}, Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer closeSink(t, s, time.Second)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, fmt.Sprintf("%s%d", mf.GetName(), len(mf.GetMetric())))
		for _, m := range mf.GetMetric() {
			sink := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "sink" {
					sink = l.GetValue()
				}
			}
			if sink != "influxdb" {
				t.Errorf("%s has labels %v; want sink=influxdb", mf.GetName(), m.GetLabel())
			}
		}
	}
	want := "[fieldhub_export_buffered_points1 fieldhub_export_dropped_total3 fieldhub_export_last_success_timestamp_seconds1 fieldhub_export_points_total1 fieldhub_export_retries_total1]"
	if fmt.Sprint(names) != want {
		t.Errorf("metrics = %v; want %s", names, want)
	}
	if _, err := New(Config{URL: f.URL, Database: "db"}, Options{Registerer: reg}); err == nil {
		t.Error("a second sink on one registerer: no error")
	}
}

func TestRefusedPoints(t *testing.T) {
	tests := []struct {
		reason string
		sent   int
		want   int
	}{
		{"", 5, 5},
		{`{"error":"database not found"}`, 5, 5},
		{`partial write: field type conflict dropped=2`, 5, 2},
		{`partial write: unable to parse 'a'\nunable to parse 'b' dropped=1`, 5, 3},
		{`partial write: dropped=9`, 5, 5},
		{`partial write: something`, 5, 5},
	}
	for _, tt := range tests {
		if got := refusedPoints(tt.reason, tt.sent); got != tt.want {
			t.Errorf("refusedPoints(%q, %d) = %d; want %d", tt.reason, tt.sent, got, tt.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{"-1", 0},
		{"99999", maxRetryAfter},
		{now.Add(7 * time.Second).Format(http.TimeFormat), 7 * time.Second},
		{now.Add(-time.Second).Format(http.TimeFormat), 0},
		{"soon", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.v, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %s; want %s", tt.v, got, tt.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	for attempt, want := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		for range 100 {
			if got := backoff(attempt, time.Minute); got < want/2 || got > want {
				t.Fatalf("backoff(%d, 1m) = %s; want in [%s, %s]", attempt, got, want/2, want)
			}
		}
	}
	for range 100 {
		if got := backoff(1000, 3*time.Second); got < 1500*time.Millisecond || got > 3*time.Second {
			t.Fatalf("backoff(1000, 3s) = %s; want in [1.5s, 3s]", got)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		c    Config
		want string // substring of the error; "" for valid
	}{
		{"off", Config{}, ""},
		{"v1", Config{URL: "http://influx:8086", Database: "fh"}, ""},
		{"v1 auth", Config{URL: "https://influx/prefix", Database: "fh", Username: "u", Password: "p"}, ""},
		{"v2", Config{URL: "http://influx:8086", APIVersion: 2, Org: "o", Bucket: "b", Token: "t"}, ""},
		{"no url", Config{Database: "fh"}, "url: required"},
		{"bad scheme", Config{URL: "ftp://x", Database: "fh"}, "url:"},
		{"no host", Config{URL: "http://", Database: "fh"}, "url:"},
		{"query", Config{URL: "http://x/?db=a", Database: "fh"}, "url:"},
		{"user in url", Config{URL: "http://u:p@x", Database: "fh"}, "url:"},
		{"version", Config{URL: "http://x", APIVersion: 3, Database: "fh"}, "api_version:"},
		{"v1 no db", Config{URL: "http://x"}, "database: required"},
		{"v1 token", Config{URL: "http://x", Database: "fh", Token: "t"}, "org:"},
		{"v1 password alone", Config{URL: "http://x", Database: "fh", Password: "p"}, "username:"},
		{"v2 no org", Config{URL: "http://x", APIVersion: 2, Bucket: "b", Token: "t"}, "org: required"},
		{"v2 no bucket", Config{URL: "http://x", APIVersion: 2, Org: "o", Token: "t"}, "bucket: required"},
		{"v2 no token", Config{URL: "http://x", APIVersion: 2, Org: "o", Bucket: "b"}, "token: required with api_version 2: set FIELDHUB_INFLUXDB_TOKEN"},
		{"v2 database", Config{URL: "http://x", APIVersion: 2, Org: "o", Bucket: "b", Token: "t", Database: "d"}, "database:"},
		{"measurement", Config{URL: "http://x", Database: "fh", Measurement: `a\`}, "measurement:"},
		{"measurement comment", Config{URL: "http://x", Database: "fh", Measurement: "#m"}, "measurement:"},
		{"batch", Config{URL: "http://x", Database: "fh", BatchSize: -1}, "batch_size:"},
		{"buffer", Config{URL: "http://x", Database: "fh", BufferSize: -1}, "buffer_size:"},
		{"buffer < batch", Config{URL: "http://x", Database: "fh", BatchSize: 10, BufferSize: 5}, "buffer_size: 5 is smaller than batch_size 10"},
		{"flush", Config{URL: "http://x", Database: "fh", FlushInterval: 5}, "flush_interval:"},
		{"timeout", Config{URL: "http://x", Database: "fh", Timeout: -time.Second}, "timeout:"},
		{"backoff", Config{URL: "http://x", Database: "fh", MaxBackoff: 1}, "max_backoff:"},
	}
	for _, tt := range tests {
		err := tt.c.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: Validate() = %v; want nil", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalid)):
			t.Errorf("%s: Validate() = %v; want an ErrInvalid containing %q", tt.name, err, tt.want)
		}
	}
	if _, err := New(Config{}, Options{}); err == nil {
		t.Error("New(Config{}) = nil error; want url: required")
	}
}

// TestConfigYAML decodes the export.influxdb section as docs/export.md
// shows it.
func TestConfigYAML(t *testing.T) {
	const doc = `
url: http://influxdb:8086
api_version: 1
database: fieldhub
retention_policy: autogen
username: fieldhub
measurement: telemetry
batch_size: 5000
flush_interval: 1s
buffer_size: 100000
timeout: 10s
max_backoff: 30s
`
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	c.ApplyEnv(func(k string) string { return map[string]string{EnvPassword: "pw"}[k] })
	want := Config{URL: "http://influxdb:8086", APIVersion: 1, Database: "fieldhub", RetentionPolicy: "autogen",
		Username: "fieldhub", Password: "pw", Measurement: "telemetry", BatchSize: 5000, FlushInterval: time.Second,
		BufferSize: 100000, Timeout: 10 * time.Second, MaxBackoff: 30 * time.Second}
	if c != want {
		t.Errorf("decoded %+v\nwant    %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
	if c.WithDefaults() != want {
		t.Errorf("the documented values are not the defaults: %+v", c.WithDefaults())
	}
	var bad Config
	if err := yaml.Unmarshal([]byte("token: abc\n"), &bad); err != nil || bad.Token != "" {
		t.Errorf("token read from YAML: %q, %v; want it only from %s", bad.Token, err, EnvToken)
	}
	var logged bytes.Buffer
	fmt.Fprint(&logged, c.LogValue())
	if strings.Contains(logged.String(), "pw") {
		t.Errorf("LogValue shows the password: %s", logged.String())
	}
}
