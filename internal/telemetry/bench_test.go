package telemetry

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/tsdb"
	"github.com/fieldhub/fieldhub/payload"
)

// BenchmarkIngestBatch stores gzip batches of 100 readings × 3 metrics of
// 20 children into the embedded store, 64 batches in flight as the broker
// allows a gateway (DESIGN §5: ≥ 1,000,000 points/s of batched uplinks).
func BenchmarkIngestBatch(b *testing.B) {
	db, err := tsdb.Open(b.TempDir(), tsdb.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	gws := children{}
	for i := range 20 {
		gws[fmt.Sprintf("child-%d", i)] = "gw"
	}
	in := New(db, Options{Registerer: prometheus.NewRegistry(), Gateways: gws})
	const readings, inflight = 100, 64
	t0 := time.Now().Add(-time.Hour).UnixNano()
	batches := make([][]byte, 4096)
	seq := 0
	for i := range batches {
		bt := &payload.Batch{}
		for j := range readings {
			ts := t0 + int64(seq)*1e6
			bt.Messages = append(bt.Messages, &payload.Message{Device: fmt.Sprintf("child-%d", j%20), Seq: uint64(seq), HasSeq: true,
				Points: []payload.Point{
					{Metric: "temperature", TS: ts, Value: payload.NumberValue(21.5 + float64(seq%100)/100)},
					{Metric: "humidity", TS: ts, Value: payload.NumberValue(48.25)},
					{Metric: "vibration", TS: ts, Value: payload.NumberValue(0.0123)},
				}})
			seq++
		}
		batches[i] = payload.EncodeBatch(bt, true)
	}
	sem := make(chan struct{}, inflight)
	var wg sync.WaitGroup
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		// Past the 4,096 prepared batches readings are duplicates: run
		// with -benchtime 4000x for fresh data only.
		sem <- struct{}{}
		wg.Add(1)
		in.IngestBatch("gw", batches[i%len(batches)], func(err error) {
			if err != nil {
				b.Error(err)
			}
			<-sem
			wg.Done()
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)*readings*3/b.Elapsed().Seconds(), "points/s")
}
