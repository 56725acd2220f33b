package tsdb

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/payload"
)

// BenchmarkAppendParallel measures durable ingest of 3-point messages
// through AppendAsync from many goroutines (one device each, pipelined
// like MQTT QoS 1 publishers with an inflight window). Checkpoints run as
// by default.
//
//	go test -run '^$' -bench BenchmarkAppendParallel -benchtime 2000000x ./internal/tsdb/
func BenchmarkAppendParallel(b *testing.B) {
	db, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var ids atomic.Int64
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := ids.Add(1)
		dev := fmt.Sprintf("dev-%04d", id)
		const window = 256
		msgs := make([]payload.Message, window)
		pts := make([]payload.Point, 3*window)
		sem := make(chan struct{}, window)
		var wg sync.WaitGroup
		done := func(dup bool, err error) {
			if err != nil || dup {
				b.Errorf("append: %v, %v", dup, err)
			}
			<-sem
			wg.Done()
		}
		ts := time.Now().UnixNano()
		for seq := uint64(1); pb.Next(); seq++ {
			sem <- struct{}{}
			k := int(seq % window)
			p := pts[3*k : 3*k+3 : 3*k+3]
			ts += 1e6
			p[0] = payload.Point{Metric: "temperature", TS: ts, Value: payload.NumberValue(float64(seq%4000) / 100)}
			p[1] = payload.Point{Metric: "humidity", TS: ts, Value: payload.NumberValue(float64(seq%1000) / 10)}
			p[2] = payload.Point{Metric: "pressure", TS: ts, Value: payload.NumberValue(1013 + float64(seq%50)/10)}
			msgs[k] = payload.Message{Device: dev, Seq: seq, HasSeq: true, Points: p}
			wg.Add(1)
			db.AppendAsync(&msgs[k], done)
		}
		wg.Wait()
	})
	b.StopTimer()
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N)/sec, "msgs/s")
	b.ReportMetric(3*float64(b.N)/sec, "points/s")
}

// BenchmarkAppendSync measures durable ingest with blocking Append from
// many goroutines (one message in flight per publisher).
//
//	go test -run '^$' -bench BenchmarkAppendSync -benchtime 500000x ./internal/tsdb/
func BenchmarkAppendSync(b *testing.B) {
	db, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var ids atomic.Int64
	b.SetParallelism(64)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		dev := fmt.Sprintf("dev-%04d", ids.Add(1))
		ctx := context.Background()
		ts := time.Now().UnixNano()
		pts := make([]payload.Point, 3)
		for seq := uint64(1); pb.Next(); seq++ {
			ts += 1e6
			pts[0] = payload.Point{Metric: "temperature", TS: ts, Value: payload.NumberValue(float64(seq%4000) / 100)}
			pts[1] = payload.Point{Metric: "humidity", TS: ts, Value: payload.NumberValue(float64(seq%1000) / 10)}
			pts[2] = payload.Point{Metric: "pressure", TS: ts, Value: payload.NumberValue(1013 + float64(seq%50)/10)}
			msg := payload.Message{Device: dev, Seq: seq, HasSeq: true, Points: pts}
			if _, err := db.Append(ctx, &msg); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// walk returns one day of a 1 Hz random walk rounded to 0.01 (steps of
// standard deviation sigma), with timestamps jittered by up to jitter.
func walk(seed uint64, start int64, n int, sigma float64, jitter time.Duration) ([]int64, []float64) {
	r := rand.New(rand.NewPCG(seed, 99))
	ts := make([]int64, n)
	vs := make([]float64, n)
	x := 20.0
	for i := range n {
		x += r.NormFloat64() * sigma
		vs[i] = math.Round(x*100) / 100
		ts[i] = start + int64(i)*1e9
		if jitter > 0 {
			ts[i] += r.Int64N(int64(jitter)) / 1e6 * 1e6 // millisecond clocks
		}
	}
	return ts, vs
}

// ingestDay appends one day of the walk per series as 1-point messages,
// checkpointing every ten minutes of data like the default interval
// would (every minute gives the same size after compaction).
func ingestDay(tb testing.TB, db *DB, series int, start int64, sigma float64, jitter time.Duration) {
	ctx := context.Background()
	const n = 86400
	type col struct {
		ts []int64
		vs []float64
	}
	data := make([]col, series)
	for s := range series {
		ts, vs := walk(uint64(s+1), start, n, sigma, jitter)
		data[s] = col{ts, vs}
	}
	var wg sync.WaitGroup
	for i := range n {
		for s := range series {
			wg.Add(1)
			msg := &payload.Message{Device: fmt.Sprintf("dev-%d", s), Seq: uint64(i + 1), HasSeq: true,
				Points: []payload.Point{{Metric: "temperature", TS: data[s].ts[i], Value: payload.NumberValue(data[s].vs[i])}}}
			db.AppendAsync(msg, func(_ bool, err error) {
				if err != nil {
					tb.Error(err)
				}
				wg.Done()
			})
		}
		if i%600 == 599 {
			wg.Wait()
			if err := db.Checkpoint(ctx); err != nil {
				tb.Fatal(err)
			}
		}
	}
	wg.Wait()
	if err := db.Checkpoint(ctx); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkBytesPerPoint measures the size on disk of one day of a 1 Hz
// random walk rounded to 0.01: telemetry.db after compaction and VACUUM,
// divided by the points (DESIGN §5 target: ≤ 3 bytes/point).
//
//	go test -run '^$' -bench BenchmarkBytesPerPoint -benchtime 1x ./internal/tsdb/
func BenchmarkBytesPerPoint(b *testing.B) {
	day := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		series int
		sigma  float64
		jitter time.Duration
	}{
		{"series=1/sigma=0.1", 1, 0.1, 0},
		{"series=1/sigma=1", 1, 1, 0},
		{"series=1/sigma=0.1/jitter=50ms", 1, 0.1, 50 * time.Millisecond},
		{"series=10/sigma=0.1", 10, 0.1, 0},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var bpp float64
			for range b.N {
				dir := b.TempDir()
				db, err := Open(dir, Options{CheckpointInterval: -1, CompactInterval: -1,
					Now: func() time.Time { return day.Add(48 * time.Hour) }})
				if err != nil {
					b.Fatal(err)
				}
				ingestDay(b, db, c.series, day.UnixNano(), c.sigma, c.jitter)
				ctx := context.Background()
				if err := db.Compact(ctx); err != nil {
					b.Fatal(err)
				}
				if err := db.Vacuum(ctx); err != nil {
					b.Fatal(err)
				}
				size := fileSize(filepath.Join(dir, "telemetry.db")) + fileSize(filepath.Join(dir, "telemetry.db-wal"))
				if err := db.Close(); err != nil {
					b.Fatal(err)
				}
				bpp = float64(size) / float64(86400*c.series)
			}
			b.ReportMetric(bpp, "bytes/point")
		})
	}
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// BenchmarkQueryDay500Buckets queries the last 24 h of one 1 Hz metric
// downsampled to 500 buckets (avg). The data is laid out as in a running
// store: yesterday compacted into one chunk, today's closed hours into
// hour chunks, the current hour in checkpoint chunks and the head.
//
//	go test -run '^$' -bench BenchmarkQueryDay500Buckets ./internal/tsdb/
func BenchmarkQueryDay500Buckets(b *testing.B) {
	now := time.Date(2024, 5, 2, 13, 27, 30, 0, time.UTC)
	start := now.Add(-26 * time.Hour)
	db, err := Open(b.TempDir(), Options{CheckpointInterval: -1, CompactInterval: -1,
		Now: func() time.Time { return now }})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	n := int(26 * 3600)
	ts, vs := walk(1, start.UnixNano(), n, 0.1, 0)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		db.AppendAsync(&payload.Message{Device: "dev", Points: []payload.Point{{Metric: "temperature", TS: ts[i], Value: payload.NumberValue(vs[i])}}},
			func(_ bool, err error) {
				if err != nil {
					b.Error(err)
				}
				wg.Done()
			})
		if i%60 == 59 && i < n-300 { // the last five minutes stay in the head
			wg.Wait()
			if err := db.Checkpoint(ctx); err != nil {
				b.Fatal(err)
			}
			if i%3600 == 3599 {
				if err := db.Compact(ctx); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	wg.Wait()
	if err := db.Compact(ctx); err != nil {
		b.Fatal(err)
	}
	q := store.Query{Device: "dev", Metric: "temperature", From: now.Add(-24 * time.Hour).UnixNano(), To: now.UnixNano(),
		Step: int64(24*time.Hour) / 500, Agg: store.AggAvg}
	b.Logf("chunks: %d, head points: %d", db.Stats().Chunks, db.Stats().HeadPoints)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r, err := db.Query(ctx, q)
		if err != nil {
			b.Fatal(err)
		}
		if len(r.Series) != 1 || len(r.Series[0].Points) != 500 {
			b.Fatalf("got %d series / %d buckets", len(r.Series), len(r.Series[0].Points))
		}
	}
	b.StopTimer()
	b.ReportMetric(b.Elapsed().Seconds()*1000/float64(b.N), "ms/op")
}

// BenchmarkQueryRawHour reads one hour of raw points.
func BenchmarkQueryRawHour(b *testing.B) {
	now := time.Date(2024, 5, 2, 13, 0, 0, 0, time.UTC)
	db, err := Open(b.TempDir(), Options{CheckpointInterval: -1, CompactInterval: -1, Now: func() time.Time { return now }})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	ingestDay(b, db, 1, now.Add(-24*time.Hour).UnixNano(), 0.1, 0)
	if err := db.Compact(ctx); err != nil {
		b.Fatal(err)
	}
	q := store.Query{Device: "dev-0", Metric: "temperature", From: now.Add(-3 * time.Hour).UnixNano(), To: now.Add(-2 * time.Hour).UnixNano()}
	b.ReportAllocs()
	for b.Loop() {
		r, err := db.Query(ctx, q)
		if err != nil || len(r.Series) != 1 || len(r.Series[0].Points) != 3600 {
			b.Fatalf("query: %v", err)
		}
	}
}
