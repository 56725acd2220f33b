package spool

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAppendParallel: about 50 goroutines append 100-byte records,
// each Append returning once durable.
func BenchmarkAppendParallel(b *testing.B) {
	for _, enc := range []bool{false, true} {
		name := "plain"
		if enc {
			name = "encrypted"
		}
		b.Run(name, func(b *testing.B) {
			o := Options{}
			if enc {
				o.Key = make([]byte, 32)
			}
			s := openT(b, b.TempDir(), o)
			data := make([]byte, 100)
			var w atomic.Int64
			b.SetParallelism(max(1, 50/runtime.GOMAXPROCS(0)))
			b.SetBytes(100)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				key := "sensor-" + strconv.FormatInt(w.Add(1), 10)
				for pb.Next() {
					if _, err := s.Append(context.Background(), key, data); err != nil {
						b.Error(err)
						return
					}
				}
			})
			el := time.Since(start)
			b.StopTimer()
			st := s.Stats()
			b.ReportMetric(float64(b.N)/el.Seconds(), "records/s")
			b.ReportMetric(float64(st.Appended)/float64(max(st.Syncs, 1)), "records/sync")
		})
	}
}

// BenchmarkReplay: Read and Ack b.N spooled 100-byte records.
func BenchmarkReplay(b *testing.B) {
	for _, enc := range []bool{false, true} {
		name := "plain"
		if enc {
			name = "encrypted"
		}
		b.Run(name, func(b *testing.B) {
			o := Options{MaxBytes: 4 << 30}
			if enc {
				o.Key = make([]byte, 32)
			}
			s := openT(b, b.TempDir(), o)
			data := make([]byte, 100)
			done := make(chan struct{})
			var n atomic.Int64
			for range b.N {
				s.AppendAsync("sensor-1", data, func(_ uint64, err error) {
					if err != nil {
						b.Error(err)
					}
					if n.Add(1) == int64(b.N) {
						close(done)
					}
				})
			}
			<-done
			b.SetBytes(100)
			b.ResetTimer()
			start := time.Now()
			for got := 0; got < b.N; {
				recs, err := s.Read(context.Background(), 1000, 1<<20)
				if err != nil {
					b.Fatal(err)
				}
				got += len(recs)
				if err := s.Ack(recs[len(recs)-1].ID); err != nil {
					b.Fatal(err)
				}
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "records/s")
		})
	}
}

func TestRunBench(t *testing.T) {
	res, err := RunBench(context.Background(), t.TempDir(), 5000, 100, 10)
	if err != nil {
		t.Fatal(err)
	}
	if res.AppendPerSec <= 0 || res.ReplayPerSec <= 0 || res.BytesOnDisk < 5000*100 ||
		res.AppendP50 <= 0 || res.AppendP99 < res.AppendP50 || res.Syncs == 0 {
		t.Fatalf("RunBench = %+v", res)
	}
}

func TestLatHist(t *testing.T) {
	var h latHist
	for i := 1; i <= 100; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}} {
		got := h.quantile(tc.q)
		if got > tc.want || float64(got) < 0.93*float64(tc.want) {
			t.Errorf("quantile(%v) = %v; want about %v", tc.q, got, tc.want)
		}
	}
}

// TestRunBenchReport prints RunBench figures when SPOOL_BENCH is set to
// "n,size,concurrency" (what `fieldhub bench spool` will run):
//
//	SPOOL_BENCH=200000,100,50 go test -run TestRunBenchReport -v ./internal/spool/
func TestRunBenchReport(t *testing.T) {
	spec := os.Getenv("SPOOL_BENCH")
	if spec == "" {
		t.Skip("set SPOOL_BENCH=n,size,concurrency")
	}
	var n, size, conc int
	if _, err := fmt.Sscanf(spec, "%d,%d,%d", &n, &size, &conc); err != nil {
		t.Fatalf("SPOOL_BENCH=%q: %v", spec, err)
	}
	res, err := RunBench(context.Background(), t.TempDir(), n, size, conc)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("n=%d size=%d concurrency=%d: append %.0f/s (p50 %v, p99 %v, %.1f records/sync), replay %.0f/s, %d bytes on disk",
		n, size, conc, res.AppendPerSec, res.AppendP50, res.AppendP99,
		float64(n)/float64(max(res.Syncs, 1)), res.ReplayPerSec, res.BytesOnDisk)
}
