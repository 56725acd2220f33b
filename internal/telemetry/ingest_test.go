package telemetry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/payload"
)

var now = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

// memAppender stores messages in memory, deduplicating by (device, seq).
// Device "broken" fails; device "mismatch" has a type mismatch.
type memAppender struct {
	mu   sync.Mutex
	msgs []*payload.Message
	seqs map[string]bool
}

func (a *memAppender) Append(_ context.Context, m *payload.Message) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch m.Device {
	case "broken":
		return false, errors.New("disk on fire")
	case "mismatch":
		return false, fmt.Errorf("appending: %w", store.ErrTypeMismatch)
	}
	if a.seqs == nil {
		a.seqs = map[string]bool{}
	}
	if m.HasSeq {
		k := fmt.Sprint(m.Device, "/", m.Seq)
		if a.seqs[k] {
			return true, nil
		}
		a.seqs[k] = true
	}
	a.msgs = append(a.msgs, m)
	return false, nil
}

func (a *memAppender) devices() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, m := range a.msgs {
		out = append(out, m.Device)
	}
	return out
}

// memAlerts stores alerts in memory; fail makes AppendAlerts fail.
type memAlerts struct {
	mu     sync.Mutex
	alerts []store.Alert
	fail   bool
}

func (s *memAlerts) AppendAlerts(_ context.Context, as []store.Alert) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("database locked")
	}
	s.alerts = append(s.alerts, as...)
	return nil
}

func (s *memAlerts) ListAlerts(context.Context, store.AlertQuery) (store.AlertPage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return store.AlertPage{Alerts: slices.Clone(s.alerts)}, nil
}

// children maps a device to its gateway.
type children map[string]string

func (c children) IsChild(_ context.Context, gw, dev string) bool { return c[dev] == gw && gw != "" }

type fixture struct {
	in     *Ingester
	app    *memAppender
	alerts *memAlerts
	reg    *prometheus.Registry
	mu     sync.Mutex
	seen   map[string]bool
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{app: &memAppender{}, alerts: &memAlerts{}, reg: prometheus.NewRegistry(), seen: map[string]bool{}}
	f.in = New(f.app, Options{
		Registerer: f.reg,
		Now:        func() time.Time { return now },
		Seen: func(id string, _ time.Time) {
			f.mu.Lock()
			f.seen[id] = true
			f.mu.Unlock()
		},
		Gateways: children{"c1": "gw", "c2": "gw", "mismatch": "gw", "broken": "gw", "other": "gw2"},
		Alerts:   f.alerts,
	})
	t.Cleanup(func() {
		if err := f.in.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return f
}

// call runs fn(done) and waits for done.
func call(t *testing.T, fn func(done func(error))) error {
	t.Helper()
	ch := make(chan error, 1)
	fn(func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("done was not called")
		return nil
	}
}

func (f *fixture) seenList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id := range f.seen {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func TestIngestBatch(t *testing.T) {
	r := func(dev string, seq int) string {
		return fmt.Sprintf(`{"device":%q,"seq":%d,"data":{"t":%d}}`, dev, seq, seq)
	}
	al := func(dev string) string {
		return fmt.Sprintf(`{"device":%q,"rule":"threshold_above","severity":"critical"}`, dev)
	}
	tests := []struct {
		name     string
		batch    string
		reason   string   // refusal reason, "" for success
		failed   bool     // a storage failure
		stored   []string // devices of the stored messages, in order
		alerts   int
		seen     []string
		notChild bool
	}{
		{name: "children", batch: `{"readings":[` + r("c1", 1) + `,` + r("c2", 1) + `,` + r("c1", 2) + `]}`,
			stored: []string{"c1", "c2", "c1"}, seen: []string{"c1", "c2", "gw"}},
		{name: "own readings", batch: `{"readings":[` + r("gw", 1) + `,` + r("c1", 1) + `,` + r("gw", 2) + `]}`,
			stored: []string{"gw", "c1", "gw"}, seen: []string{"c1", "gw"}},
		{name: "alerts", batch: `{"readings":[` + r("c1", 1) + `],"alerts":[` + al("c2") + `,` + al("gw") + `]}`,
			stored: []string{"c1"}, alerts: 2, seen: []string{"c1", "c2", "gw"}},
		{name: "a non-child refuses the whole batch", batch: `{"readings":[` + r("c1", 1) + `,` + r("other", 1) + `]}`,
			reason: ReasonNotChild, notChild: true},
		{name: "an unknown device", batch: `{"readings":[` + r("c1", 1) + `,` + r("ghost", 1) + `]}`,
			reason: ReasonNotChild, notChild: true},
		{name: "an alert of a non-child", batch: `{"readings":[` + r("c1", 1) + `],"alerts":[` + al("other") + `]}`,
			reason: ReasonNotChild, notChild: true},
		{name: "malformed", batch: `{"readings":[` + r("c1", 1), reason: payload.ReasonMalformed},
		{name: "empty", batch: `{}`, reason: payload.ReasonEmpty},
		{name: "type mismatch is counted, not fatal", batch: `{"readings":[` + r("mismatch", 1) + `,` + r("c1", 1) + `]}`,
			stored: []string{"c1"}, seen: []string{"c1", "gw"}},
		{name: "storage failure", batch: `{"readings":[` + r("c1", 1) + `,` + r("broken", 1) + `]}`,
			failed: true, stored: []string{"c1"}, seen: []string{"c1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			for _, compress := range []bool{false, true} {
				in := []byte(tt.batch)
				if compress {
					b, err := payload.DecodeBatch(in, now, payload.BatchLimits{})
					if err != nil {
						continue // a refused payload has no compressed form to test
					}
					in = payload.EncodeBatch(b, true)
				}
				err := call(t, func(done func(error)) { f.in.IngestBatch("gw", in, done) })
				switch {
				case tt.reason != "":
					if !errors.Is(err, payload.ErrRefused) {
						t.Fatalf("IngestBatch(%s) = %v; want a refusal", tt.batch, err)
					}
					var nc *NotChildError
					if errors.As(err, &nc) != tt.notChild {
						t.Errorf("IngestBatch(%s) = %v; NotChildError %v, want %v", tt.batch, err, !tt.notChild, tt.notChild)
					}
					if got := testutil.ToFloat64(f.in.batchRefused.WithLabelValues(tt.reason)); got < 1 {
						t.Errorf("batch_refused_total{%s} = %v; want ≥ 1", tt.reason, got)
					}
				case tt.failed:
					if err == nil || errors.Is(err, payload.ErrRefused) {
						t.Fatalf("IngestBatch(%s) = %v; want a failure", tt.batch, err)
					}
				default:
					if err != nil {
						t.Fatalf("IngestBatch(%s) = %v", tt.batch, err)
					}
				}
			}
			// The second (compressed) ingest stored nothing new: dedup by seq.
			if got := f.app.devices(); !slices.Equal(got, tt.stored) {
				t.Errorf("stored messages of %v; want %v", got, tt.stored)
			}
			if got := len(f.alerts.alerts); got != tt.alerts*2 && got != tt.alerts {
				t.Errorf("%d alerts stored; want %d", got, tt.alerts)
			}
			if got := f.seenList(); !slices.Equal(got, tt.seen) {
				t.Errorf("seen %v; want %v", got, tt.seen)
			}
		})
	}
}

func TestIngestBatchMetrics(t *testing.T) {
	f := newFixture(t)
	b := []byte(`{"readings":[{"device":"c1","seq":1,"data":{"t":1}},{"device":"c2","seq":1,"data":{"t":1}}],"alerts":[{"device":"c1","message":"hot","severity":"critical"}]}`)
	if err := call(t, func(done func(error)) { f.in.IngestBatch("gw", b, done) }); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		c    prometheus.Collector
		want float64
	}{
		{f.in.batches.WithLabelValues(ResultStored), 1},
		{f.in.messages.WithLabelValues(ResultStored), 2},
		{f.in.points, 2},
		{f.in.alertsTotal.WithLabelValues("critical"), 1},
	} {
		if got := testutil.ToFloat64(tt.c); got != tt.want {
			t.Errorf("%v = %v; want %v", tt.c, got, tt.want)
		}
	}
	if n := testutil.CollectAndCount(f.in.batchReadings); n != 1 {
		t.Errorf("batch readings histogram has %d series", n)
	}
}

func TestIngestAlert(t *testing.T) {
	f := newFixture(t)
	err := call(t, func(done func(error)) {
		f.in.IngestAlert("c1", []byte(`{"ts":"2026-11-27T09:00:00Z","metric":"temperature","value":93.2,"rule":"threshold_above","severity":"critical","message":"hot"}`), done)
	})
	if err != nil {
		t.Fatal(err)
	}
	want := store.Alert{Device: "c1", TS: now.Add(-time.Hour), Received: now, Metric: "temperature", Value: 93.2,
		Rule: "threshold_above", Severity: "critical", Message: "hot", State: "raised"}
	if len(f.alerts.alerts) != 1 || f.alerts.alerts[0] != want {
		t.Errorf("stored %+v; want [%+v]", f.alerts.alerts, want)
	}
	err = call(t, func(done func(error)) { f.in.IngestAlert("c1", []byte(`{"severity":"fatal","rule":"x"}`), done) })
	if payload.Reason(err) != payload.ReasonWrongType {
		t.Errorf("IngestAlert(bad severity) = %v; want wrong_type", err)
	}
	if got := testutil.ToFloat64(f.in.alertsRefused.WithLabelValues(payload.ReasonWrongType)); got != 1 {
		t.Errorf("alerts_refused_total{wrong_type} = %v; want 1", got)
	}

	f.alerts.mu.Lock()
	f.alerts.fail = true
	f.alerts.mu.Unlock()
	err = call(t, func(done func(error)) { f.in.IngestAlert("c1", []byte(`{"rule":"x"}`), done) })
	if err == nil || errors.Is(err, payload.ErrRefused) {
		t.Errorf("IngestAlert with a failing store = %v; want a failure", err)
	}
}

// TestAlertWriterGroupsAndDrains: alerts queued concurrently all complete,
// and Close waits for the queue; later alerts fail with ErrClosed.
func TestAlertWriterGroupsAndDrains(t *testing.T) {
	f := newFixture(t)
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.in.IngestAlert("c1", []byte(fmt.Sprintf(`{"rule":"r%d"}`, i)), func(err error) { errs <- err })
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.in.Close(ctx); err != nil {
		t.Fatal(err)
	}
	close(errs)
	count := 0
	for err := range errs {
		if err != nil {
			t.Errorf("alert failed: %v", err)
		}
		count++
	}
	if count != n || len(f.alerts.alerts) != n {
		t.Errorf("%d completions, %d stored; want %d", count, len(f.alerts.alerts), n)
	}
	err := call(t, func(done func(error)) { f.in.IngestAlert("c1", []byte(`{"rule":"late"}`), done) })
	if !errors.Is(err, store.ErrClosed) {
		t.Errorf("IngestAlert after Close = %v; want ErrClosed", err)
	}
}

// TestCloseWithEndedContext: an idle alert writer stops even when the
// shutdown's context has already run out.
func TestCloseWithEndedContext(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.in.Close(ctx); err != nil {
		t.Errorf("Close(ended ctx) of an idle writer = %v; want nil", err)
	}
}

func TestStoredCallback(t *testing.T) {
	var mu sync.Mutex
	var got []string
	in := New(&memAppender{}, Options{
		Now: func() time.Time { return now },
		Stored: func(m *payload.Message) {
			mu.Lock()
			got = append(got, fmt.Sprint(m.Device, "/", m.Seq))
			mu.Unlock()
		},
	})
	for _, c := range []struct{ dev, body string }{
		{"d1", `{"seq":1,"data":{"t":1}}`},
		{"d1", `{"seq":1,"data":{"t":1}}`}, // duplicate: not handed on
		{"broken", `{"seq":2,"data":{"t":1}}`},
		{"d1", `not json`},
		{"d1", `{"seq":3,"data":{"t":2}}`},
	} {
		call(t, func(done func(error)) { in.Ingest(c.dev, []byte(c.body), done) })
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"d1/1", "d1/3"}; !slices.Equal(got, want) {
		t.Fatalf("Stored got %v, want %v", got, want)
	}
}
