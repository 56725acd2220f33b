package postgres

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/fhtest"
	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/store/storetest"
	"github.com/fieldhub/fieldhub/payload"
)

// openDB opens a DB on url, closed at the end of the test.
func openDB(t testing.TB, url string) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := Open(ctx, url, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// openTelemetry returns the telemetry store of db, closed at the end of
// the test (before db).
func openTelemetry(t testing.TB, db *DB, o TelemetryOptions) *Telemetry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tel, err := db.Telemetry(ctx, o)
	if err != nil {
		t.Fatalf("Telemetry: %v", err)
	}
	t.Cleanup(func() { tel.Close() })
	return tel
}

func TestTelemetry(t *testing.T) {
	storetest.TestTelemetry(t, func(t *testing.T) store.Telemetry {
		return openTelemetry(t, openDB(t, fhtest.Postgres(t)), TelemetryOptions{})
	})
}

func numMsg(device string, seq uint64, ts int64, v float64) *payload.Message {
	return &payload.Message{Device: device, Seq: seq, HasSeq: true, Points: []payload.Point{
		{Metric: "v", TS: ts, Value: payload.NumberValue(v)},
	}}
}

// TestTelemetryTwoHubs runs two stores on two pools of one database, as
// two hub processes to which the broker redelivers overlapping messages:
// each (device, seq) must be stored exactly once.
func TestTelemetryTwoHubs(t *testing.T) {
	url := fhtest.Postgres(t)
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	hubs := []*Telemetry{
		openTelemetry(t, openDB(t, url), TelemetryOptions{Registerer: regs[0]}),
		openTelemetry(t, openDB(t, url), TelemetryOptions{Registerer: regs[1]}),
	}
	const devices, perHub, overlap = 20, 300, 150
	// Hub 0 gets seqs [1, perHub], hub 1 [perHub-overlap+1, 2·perHub-overlap]:
	// overlap seqs of each device reach both.
	t0 := time.Date(2024, 5, 17, 0, 0, 0, 0, time.UTC).UnixNano()
	var fresh sync.Map // seqKey → *atomic.Int32
	var dups atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	for h, tel := range hubs {
		for d := range devices {
			dev := fmt.Sprintf("dev-%02d", d)
			first := uint64(1 + h*(perHub-overlap))
			// Half the writers go through Append, half through AppendAsync;
			// hub 1 writes its seqs backwards so that the hubs cross.
			wg.Add(1)
			go func() {
				defer wg.Done()
				var inner sync.WaitGroup
				for i := range perHub {
					seq := first + uint64(i)
					if h == 1 {
						seq = first + uint64(perHub-1-i)
					}
					m := numMsg(dev, seq, t0+int64(seq)*int64(time.Second), float64(seq))
					record := func(dup bool, err error) {
						if err != nil {
							select {
							case errc <- fmt.Errorf("hub %d %s seq %d: %w", h, dev, seq, err):
							default:
							}
							return
						}
						if dup {
							dups.Add(1)
							return
						}
						c, _ := fresh.LoadOrStore(seqKey{dev, seq}, new(atomic.Int32))
						c.(*atomic.Int32).Add(1)
					}
					if d%2 == 0 {
						record(tel.Append(context.Background(), m))
					} else {
						inner.Add(1)
						tel.AppendAsync(m, func(dup bool, err error) { record(dup, err); inner.Done() })
					}
				}
				inner.Wait()
			}()
		}
	}
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	unique := devices * (2*perHub - overlap)
	n := 0
	fresh.Range(func(k, v any) bool {
		n++
		if c := v.(*atomic.Int32).Load(); c != 1 {
			t.Errorf("%v reported new %d times; want 1", k, c)
		}
		return true
	})
	if n != unique {
		t.Errorf("%d (device, seq) reported new; want %d", n, unique)
	}
	if got := dups.Load(); got != devices*overlap {
		t.Errorf("duplicates = %d; want %d", got, devices*overlap)
	}
	var metricDups float64
	for _, reg := range regs {
		metricDups += counterValue(t, reg, "fieldhub_pg_telemetry_duplicates_total")
	}
	if metricDups != devices*overlap {
		t.Errorf("fieldhub_pg_telemetry_duplicates_total of both hubs = %v; want %d", metricDups, devices*overlap)
	}
	ctx := context.Background()
	var points, seqs int
	pool := hubs[0].db.pool
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM telemetry_points").Scan(&points); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM telemetry_seqs").Scan(&seqs); err != nil {
		t.Fatal(err)
	}
	if points != unique || seqs != unique {
		t.Errorf("stored %d points and %d seqs; want %d of each", points, seqs, unique)
	}
	// Both hubs read the same data.
	for h, tel := range hubs {
		r, err := tel.Query(ctx, store.Query{Device: "dev-03", From: math.MinInt64, To: math.MaxInt64, Step: math.MaxInt64, Agg: store.AggCount})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Series) != 1 || r.Series[0].Points[0].Value.Num != 2*perHub-overlap {
			t.Errorf("hub %d: count = %+v; want %d", h, r.Series, 2*perHub-overlap)
		}
	}
}

// counterValue returns the value of the counter name in reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestTelemetryRetention drops whole daily partitions and old dedup keys.
func TestTelemetryRetention(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, fhtest.Postgres(t))
	day := int64(24 * time.Hour)
	now := time.Date(2024, 5, 17, 12, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	clock.Store(now.Add(-6 * 24 * time.Hour).UnixNano())
	tel := openTelemetry(t, db, TelemetryOptions{
		Retention:           48 * time.Hour,
		MaintenanceInterval: -1,
		Now:                 func() time.Time { return time.Unix(0, clock.Load()) },
	})
	const dev = "dev-ret"
	t5 := now.UnixNano() - 5*day
	// Six days ago: points five days before now, seq 1.
	if dup, err := tel.Append(ctx, numMsg(dev, 1, t5, 1)); err != nil || dup {
		t.Fatalf("Append(old) = %v, %v", dup, err)
	}
	clock.Store(now.UnixNano())
	for i, ts := range []int64{now.UnixNano() - day, now.UnixNano()} {
		if dup, err := tel.Append(ctx, numMsg(dev, uint64(i+2), ts, float64(i+2))); err != nil || dup {
			t.Fatalf("Append(recent) = %v, %v", dup, err)
		}
	}
	// Now older than retention: refused silently (not written), hidden.
	if dup, err := tel.Append(ctx, numMsg(dev, 9, now.UnixNano()-4*day, 9)); err != nil || dup {
		t.Fatalf("Append(too old) = %v, %v", dup, err)
	}
	parts := func() []string {
		t.Helper()
		rows, err := db.pool.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
			WHERE i.inhparent = 'telemetry_points'::regclass ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var s string
			rows.Scan(&s)
			out = append(out, s)
		}
		return out
	}
	old := partitionName(dayOf(t5))
	if !slices.Contains(parts(), old) {
		t.Fatalf("partitions %v; want %s among them", parts(), old)
	}
	n, err := tel.ApplyRetention(ctx)
	if err != nil {
		t.Fatalf("ApplyRetention: %v", err)
	}
	// The partitions made at open (6 days ago and the day after) and the
	// one of t5 are older than two days.
	if got := parts(); slices.Contains(got, old) || n < 1 {
		t.Fatalf("after retention (%d dropped): partitions %v; want %s gone", n, got, old)
	}
	for _, p := range parts() {
		d, ok := parsePartitionName(p)
		if !ok || (d+1)*day <= now.UnixNano()-2*day {
			t.Errorf("partition %s older than retention kept", p)
		}
	}
	r, err := tel.Query(ctx, store.Query{Device: dev, From: math.MinInt64, To: math.MaxInt64})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Series) != 1 || len(r.Series[0].Points) != 2 {
		t.Fatalf("after retention: %+v; want the 2 recent points", r.Series)
	}
	// Seq 1 was received six days ago: forgotten, new again; seq 2 not.
	if dup, err := tel.Append(ctx, numMsg(dev, 1, now.UnixNano(), 1)); err != nil || dup {
		t.Errorf("Append(seq 1 after retention) = %v, %v; want new", dup, err)
	}
	if dup, err := tel.Append(ctx, numMsg(dev, 2, now.UnixNano(), 1)); err != nil || !dup {
		t.Errorf("Append(seq 2 after retention) = %v, %v; want duplicate", dup, err)
	}
	if again, err := tel.ApplyRetention(ctx); err != nil || again != 0 {
		t.Errorf("ApplyRetention again = %d, %v; want 0, nil", again, err)
	}
}

// TestTelemetryRefusedInBatch: in one batch, a refused message fails alone
// and gives its seq back to a later message.
func TestTelemetryRefusedInBatch(t *testing.T) {
	tel := openTelemetry(t, openDB(t, fhtest.Postgres(t)), TelemetryOptions{MaxDelay: 50 * time.Millisecond})
	const dev = "dev-batch"
	ts := time.Date(2024, 5, 17, 0, 0, 0, 0, time.UTC).UnixNano()
	msgs := []*payload.Message{
		numMsg(dev, 1, ts, 1),
		{Device: dev, Seq: 2, HasSeq: true, Points: []payload.Point{{Metric: "v", TS: ts + 1, Value: payload.StringValue("x")}}},
		numMsg(dev, 2, ts+2, 2),
		numMsg(dev, 2, ts+3, 3),
		{Device: "bad\x00dev", Points: []payload.Point{{Metric: "v", TS: ts, Value: payload.NumberValue(1)}}},
	}
	type outcome struct {
		dup bool
		err error
	}
	got := make([]outcome, len(msgs))
	var wg sync.WaitGroup
	for i, m := range msgs {
		wg.Add(1)
		tel.AppendAsync(m, func(dup bool, err error) { got[i] = outcome{dup, err}; wg.Done() })
	}
	wg.Wait()
	if got[0].err != nil || got[0].dup {
		t.Errorf("#0 = %+v; want stored", got[0])
	}
	if got[1].err == nil {
		t.Errorf("#1 = %+v; want a type mismatch", got[1])
	}
	if got[2].err != nil || got[2].dup {
		t.Errorf("#2 = %+v; want stored", got[2])
	}
	if got[3].err != nil || !got[3].dup {
		t.Errorf("#3 = %+v; want a duplicate", got[3])
	}
	if got[4].err == nil {
		t.Errorf("#4 = %+v; want invalid", got[4])
	}
}

// BenchmarkAppend measures concurrent AppendAsync of 3-metric messages
// from 100 devices.
func BenchmarkAppend(b *testing.B) {
	tel := openTelemetry(b, openDB(b, fhtest.Postgres(b)), TelemetryOptions{})
	const devices = 100
	base := time.Now().Truncate(time.Second).UnixNano()
	var seq atomic.Uint64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	per := (b.N + devices - 1) / devices
	for d := range devices {
		dev := fmt.Sprintf("bench-%03d", d)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var done sync.WaitGroup
			for i := range per {
				ts := base + int64(i)*int64(time.Millisecond)
				m := &payload.Message{Device: dev, Seq: seq.Add(1), HasSeq: true, Points: []payload.Point{
					{Metric: "temp", TS: ts, Value: payload.NumberValue(20 + float64(i%100)/10)},
					{Metric: "hum", TS: ts, Value: payload.NumberValue(40 + float64(i%50))},
					{Metric: "door", TS: ts, Value: payload.BoolValue(i%7 == 0)},
				}}
				done.Add(1)
				tel.AppendAsync(m, func(_ bool, err error) {
					if err != nil {
						b.Error(err)
					}
					done.Done()
				})
			}
			done.Wait()
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	msgs := per * devices
	b.ReportMetric(float64(msgs*3)/el.Seconds(), "points/s")
	b.ReportMetric(float64(msgs)/el.Seconds(), "msgs/s")
}

// BenchmarkTelemetrySize appends about a million points (100 devices × 3
// numeric metrics × 3,334 timestamps a minute apart, random walks rounded
// to 0.01, one sequenced message per device and timestamp) and reports
// the bytes on disk per point (telemetry_points' partitions, with their
// indexes; heap-bytes/point without them) and per message
// (telemetry_seqs, with its indexes). It writes once whatever b.N:
// run it with -benchtime 1x.
func BenchmarkTelemetrySize(b *testing.B) {
	ctx := context.Background()
	db := openDB(b, fhtest.Postgres(b))
	tel := openTelemetry(b, db, TelemetryOptions{})
	const devices, steps = 100, 3334
	metrics := []string{"temp", "hum", "volt"}
	base := time.Date(2024, 5, 17, 0, 0, 0, 0, time.UTC).UnixNano()
	rng := rand.New(rand.NewPCG(1, 2))
	walks := make([][3]float64, devices)
	for d := range walks {
		walks[d] = [3]float64{20, 50, 3.3}
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	var seq uint64
	for i := range steps {
		ts := base + int64(i)*int64(time.Minute)
		for d := range devices {
			m := &payload.Message{Device: fmt.Sprintf("dev-%06d", d), Seq: seq, HasSeq: true}
			seq++
			for k, name := range metrics {
				walks[d][k] += rng.Float64()*0.2 - 0.1
				v := math.Round(walks[d][k]*100) / 100
				m.Points = append(m.Points, payload.Point{Metric: name, TS: ts, Value: payload.NumberValue(v)})
			}
			wg.Add(1)
			tel.AppendAsync(m, func(_ bool, err error) {
				if err != nil {
					failed.CompareAndSwap(nil, &err)
				}
				wg.Done()
			})
		}
	}
	wg.Wait()
	b.StopTimer()
	if p := failed.Load(); p != nil {
		b.Fatal(*p)
	}
	var points, msgs, pointBytes, heapBytes, seqBytes int64
	if _, err := db.pool.Exec(ctx, "CHECKPOINT"); err != nil {
		b.Fatal(err)
	}
	if err := db.pool.QueryRow(ctx, "SELECT count(*) FROM telemetry_points").Scan(&points); err != nil {
		b.Fatal(err)
	}
	if err := db.pool.QueryRow(ctx, "SELECT count(*) FROM telemetry_seqs").Scan(&msgs); err != nil {
		b.Fatal(err)
	}
	if err := db.pool.QueryRow(ctx, `SELECT sum(pg_total_relation_size(oid))::bigint, sum(pg_relation_size(oid))::bigint
		FROM pg_class WHERE relname LIKE 'telemetry\_points\_%' AND relkind = 'r'`).Scan(&pointBytes, &heapBytes); err != nil {
		b.Fatal(err)
	}
	if err := db.pool.QueryRow(ctx, "SELECT pg_total_relation_size('telemetry_seqs')").Scan(&seqBytes); err != nil {
		b.Fatal(err)
	}
	if want := int64(devices * steps * len(metrics)); points != want {
		b.Fatalf("%d points stored; want %d", points, want)
	}
	b.ReportMetric(float64(pointBytes)/float64(points), "bytes/point")
	b.ReportMetric(float64(heapBytes)/float64(points), "heap-bytes/point")
	b.ReportMetric(float64(seqBytes)/float64(msgs), "dedup-bytes/msg")
	b.ReportMetric(0, "ns/op")
}
