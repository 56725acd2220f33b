package tsdb

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/store/storetest"
	"github.com/fieldhub/fieldhub/payload"
)

// quiet are options for tests: no background loops, so tests decide when
// checkpoints and compactions happen.
func quiet() Options {
	return Options{CheckpointInterval: -1, CompactInterval: -1}
}

func openT(t *testing.T, dir string, o Options) *DB {
	t.Helper()
	db, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// crash abandons db as a kill would: no final checkpoint.
func crash(t *testing.T, db *DB) {
	t.Helper()
	db.closeOnce.Do(func() { db.closeErr = db.close(false) })
}

func TestConformance(t *testing.T) {
	storetest.TestTelemetry(t, func(t *testing.T) store.Telemetry {
		return openT(t, t.TempDir(), quiet())
	})
}

// churning checkpoints (and compacts, with a clock far in the future so
// every hour and day is over) after every few writes, so that queries read
// chunks, frozen heads and the head together.
type churning struct {
	*DB
	n       atomic.Int64
	compact bool
}

func (c *churning) churn(ctx context.Context) error {
	if c.n.Add(1)%3 != 0 {
		return nil
	}
	if err := c.Checkpoint(ctx); err != nil {
		return err
	}
	if c.compact {
		return c.Compact(ctx)
	}
	return nil
}

func (c *churning) Append(ctx context.Context, m *payload.Message) (bool, error) {
	dup, err := c.DB.Append(ctx, m)
	if err == nil {
		if cerr := c.churn(ctx); cerr != nil {
			return dup, cerr
		}
	}
	return dup, err
}

func (c *churning) DeleteDevice(ctx context.Context, device string) error {
	if err := c.DB.DeleteDevice(ctx, device); err != nil {
		return err
	}
	return c.Checkpoint(ctx)
}

func TestConformanceCheckpointed(t *testing.T) {
	storetest.TestTelemetry(t, func(t *testing.T) store.Telemetry {
		return &churning{DB: openT(t, t.TempDir(), quiet())}
	})
}

func TestConformanceCompacted(t *testing.T) {
	future := func() time.Time { return time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC) }
	storetest.TestTelemetry(t, func(t *testing.T) store.Telemetry {
		o := quiet()
		o.Now = future
		return &churning{DB: openT(t, t.TempDir(), o), compact: true}
	})
}

var t0 = time.Date(2024, 5, 17, 0, 0, 0, 0, time.UTC).UnixNano()

func m(device string, seq uint64, pts ...payload.Point) *payload.Message {
	return &payload.Message{Device: device, Seq: seq, HasSeq: true, Points: pts}
}

func np(metric string, ts int64, v float64) payload.Point {
	return payload.Point{Metric: metric, TS: ts, Value: payload.NumberValue(v)}
}

func appendOK(t *testing.T, db *DB, msg *payload.Message) {
	t.Helper()
	dup, err := db.Append(context.Background(), msg)
	if err != nil || dup {
		t.Fatalf("Append(%s/%d) = %v, %v; want false, nil", msg.Device, msg.Seq, dup, err)
	}
}

func appendDup(t *testing.T, db *DB, msg *payload.Message) {
	t.Helper()
	dup, err := db.Append(context.Background(), msg)
	if err != nil || !dup {
		t.Fatalf("Append(%s/%d) = %v, %v; want true, nil", msg.Device, msg.Seq, dup, err)
	}
}

func points(t *testing.T, db *DB, device, metric string) []payload.Point {
	t.Helper()
	r, err := db.Query(context.Background(), store.Query{Device: device, Metric: metric, From: math.MinInt64, To: math.MaxInt64})
	if err != nil {
		t.Fatalf("Query: %v", err)
	}
	var out []payload.Point
	for _, s := range r.Series {
		out = append(out, s.Points...)
	}
	return out
}

// TestReopen checks that data, kinds, dedup state and latest points
// survive a clean close, a crash after a checkpoint, and a crash with
// everything still in the WAL.
func TestReopen(t *testing.T) {
	for _, mode := range []string{"close", "crash-after-checkpoint", "crash-wal-only", "crash-mixed"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			db := openT(t, dir, quiet())
			ctx := context.Background()
			for i := range 100 {
				ts := t0 + int64(i)*1e9
				appendOK(t, db, m("d1", uint64(i+1), np("v", ts, float64(i)/10),
					payload.Point{Metric: "s", TS: ts, Value: payload.StringValue(fmt.Sprint("x", i%3))}))
				if mode == "crash-mixed" && i == 60 {
					if err := db.Checkpoint(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
			appendOK(t, db, m("d2", 5000, np("v", t0, 1)))
			appendOK(t, db, m("d2", 10, np("v", t0+1e9, 2))) // restart below the window
			switch mode {
			case "close":
				if err := db.Close(); err != nil {
					t.Fatal(err)
				}
			case "crash-after-checkpoint":
				if err := db.Checkpoint(ctx); err != nil {
					t.Fatal(err)
				}
				crash(t, db)
			default:
				crash(t, db)
			}
			db = openT(t, dir, quiet())
			got := points(t, db, "d1", "v")
			if len(got) != 100 {
				t.Fatalf("after reopen: %d points of d1/v; want 100", len(got))
			}
			for i, p := range got {
				if p.TS != t0+int64(i)*1e9 || p.Value.Num != float64(i)/10 {
					t.Fatalf("point %d = %+v", i, p)
				}
			}
			for i := range 100 {
				appendDup(t, db, m("d1", uint64(i+1), np("v", 0, 0)))
			}
			appendDup(t, db, m("d2", 10, np("v", 0, 0)))
			appendOK(t, db, m("d2", 5000, np("v", t0+2e9, 3))) // the window restarted at 10
			_, err := db.Append(ctx, m("d1", 1000, payload.Point{Metric: "v", TS: t0, Value: payload.BoolValue(true)}))
			if !errors.Is(err, store.ErrTypeMismatch) {
				t.Fatalf("type mismatch after reopen: err = %v", err)
			}
			lat, err := db.Latest(ctx, "d1")
			if err != nil || len(lat) != 2 || lat[0].Metric != "s" || lat[1].Value.Num != 9.9 || lat[0].Value.Str != "x0" {
				t.Fatalf("Latest after reopen = %+v, %v", lat, err)
			}
		})
	}
}

// TestDeleteDeviceDurable checks that a deletion survives a crash whether
// or not a checkpoint followed it, and that a re-created device keeps
// only its new data.
func TestDeleteDeviceDurable(t *testing.T) {
	for _, mode := range []string{"wal-only", "checkpointed-before", "checkpointed-after", "reopen-twice"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			ctx := context.Background()
			db := openT(t, dir, quiet())
			for i := range 10 {
				appendOK(t, db, m("gone", uint64(i+1), np("v", t0+int64(i)*1e9, 1)))
				appendOK(t, db, m("kept", uint64(i+1), np("v", t0+int64(i)*1e9, 1)))
			}
			if mode != "wal-only" {
				if err := db.Checkpoint(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.DeleteDevice(ctx, "gone"); err != nil {
				t.Fatal(err)
			}
			appendOK(t, db, m("gone", 3, payload.Point{Metric: "v", TS: t0 + 100e9, Value: payload.StringValue("new")}))
			if mode == "checkpointed-after" {
				if err := db.Checkpoint(ctx); err != nil {
					t.Fatal(err)
				}
			}
			crash(t, db)
			db = openT(t, dir, quiet())
			if mode == "reopen-twice" {
				if err := db.Close(); err != nil {
					t.Fatal(err)
				}
				db = openT(t, dir, quiet())
			}
			got := points(t, db, "gone", "")
			if len(got) != 1 || got[0].Value.Str != "new" {
				t.Fatalf("after delete and reopen: %+v; want only the new point", got)
			}
			if n := len(points(t, db, "kept", "")); n != 10 {
				t.Fatalf("kept device has %d points; want 10", n)
			}
			appendDup(t, db, m("gone", 3, np("v", 0, 0)))
			appendOK(t, db, m("gone", 4, payload.Point{Metric: "v", TS: t0, Value: payload.StringValue("x")}))
			if err := db.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := db.rdb.QueryRow(`SELECT count(*) FROM series WHERE device = 'gone'`).Scan(&n); err != nil || n != 1 {
				t.Fatalf("series rows of the re-created device = %d, %v; want 1", n, err)
			}
		})
	}
}

func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	segs, err := listSegments(filepath.Join(dir, walDirName))
	if err != nil || len(segs) == 0 {
		t.Fatalf("listSegments: %v, %v", segs, err)
	}
	return filepath.Join(dir, walDirName, segName(segs[len(segs)-1]))
}

func TestTornTail(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, path string)
		want   int // points left of 10
	}{
		{"garbage appended", func(t *testing.T, path string) {
			f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			f.Write([]byte{0x30, 0, 0, 0, 1, 2, 3})
			f.Close()
		}, 10},
		{"zeros appended", func(t *testing.T, path string) {
			f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			f.Write(make([]byte, 4096))
			f.Close()
		}, 10},
		{"last record cut", func(t *testing.T, path string) {
			fi, _ := os.Stat(path)
			os.Truncate(path, fi.Size()-3)
		}, 9},
		{"last record header cut", func(t *testing.T, path string) {
			data, _ := os.ReadFile(path)
			// Find the start of the last record by scanning.
			var starts []int
			scanSegment(data, false, func(body []byte) error { return nil })
			off := segHeaderSize
			for off < len(data) {
				starts = append(starts, off)
				_, next, ok := parseRecord(data, off)
				if !ok {
					break
				}
				off = next
			}
			os.Truncate(path, int64(starts[len(starts)-1]+5))
		}, 9},
		{"last record flipped", func(t *testing.T, path string) {
			data, _ := os.ReadFile(path)
			data[len(data)-2] ^= 0xff
			os.WriteFile(path, data, 0o644)
		}, 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			db := openT(t, dir, quiet())
			for i := range 10 {
				appendOK(t, db, m("d", uint64(i+1), np("v", t0+int64(i)*1e9, float64(i))))
			}
			crash(t, db)
			tt.damage(t, lastSegment(t, dir))
			reg := prometheus.NewRegistry()
			o := quiet()
			o.Registerer = reg
			db = openT(t, dir, o)
			if n := len(points(t, db, "d", "v")); n != tt.want {
				t.Fatalf("points after torn tail = %d; want %d", n, tt.want)
			}
			if got := testutil.ToFloat64(db.m.walCorrupt.WithLabelValues("torn")); got != 1 {
				t.Errorf("torn counter = %v; want 1", got)
			}
			// Appends continue and survive another reopen.
			appendOK(t, db, m("d", 100, np("v", t0+100e9, 1)))
			crash(t, db)
			db = openT(t, dir, quiet())
			if n := len(points(t, db, "d", "v")); n != tt.want+1 {
				t.Fatalf("points after second reopen = %d; want %d", n, tt.want+1)
			}
		})
	}
}

func TestCorruptMiddle(t *testing.T) {
	dir := t.TempDir()
	db := openT(t, dir, quiet())
	for i := range 10 {
		appendOK(t, db, m("d", uint64(i+1), np("v", t0+int64(i)*1e9, float64(i))))
	}
	crash(t, db)
	path := lastSegment(t, dir)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Damage the third record's body.
	off := segHeaderSize
	for range 2 {
		_, off, _ = parseRecord(data, off)
	}
	data[off+recHeaderSize+3] ^= 0x55
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, quiet()); !errors.Is(err, ErrCorruptWAL) {
		t.Fatalf("Open(corrupt wal) err = %v; want ErrCorruptWAL", err)
	}
	o := quiet()
	o.SalvageCorruptWAL = true
	reg := prometheus.NewRegistry()
	o.Registerer = reg
	db = openT(t, dir, o)
	got := points(t, db, "d", "v")
	if len(got) != 9 {
		t.Fatalf("salvaged %d points; want 9 (all but the damaged record)", len(got))
	}
	if got := testutil.ToFloat64(db.m.walCorrupt.WithLabelValues("corrupt")); got != 1 {
		t.Errorf("corrupt counter = %v; want 1", got)
	}
	if _, err := os.Stat(filepath.Join(dir, walDirName, corruptDirName, filepath.Base(path))); err != nil {
		t.Errorf("damaged segment not kept: %v", err)
	}
	db.Close()
	// The salvage was checkpointed: a plain open works now.
	db = openT(t, dir, quiet())
	if n := len(points(t, db, "d", "v")); n != 9 {
		t.Fatalf("after salvage and reopen: %d points; want 9", n)
	}
}

// failingFile fails every write after the first n.
type failingFile struct {
	segFile
	n atomic.Int32
}

func (f *failingFile) Write(p []byte) (int, error) {
	if f.n.Add(-1) < 0 {
		return 0, errors.New("injected write error")
	}
	return f.segFile.Write(p)
}

func (f *failingFile) Sync() error { return f.segFile.Sync() }

func TestFailStop(t *testing.T) {
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	o := quiet()
	o.Registerer = reg
	db := openT(t, dir, o)
	appendOK(t, db, m("d", 1, np("v", t0, 1)))
	db.applyMu.Lock()
	ff := &failingFile{segFile: db.wal.f}
	db.wal.f = ff
	db.applyMu.Unlock()
	ctx := context.Background()
	if _, err := db.Append(ctx, m("d", 2, np("v", t0+1e9, 2))); !errors.Is(err, ErrFailed) {
		t.Fatalf("Append with failing wal = %v; want ErrFailed", err)
	}
	// Everything after fails too, even if the disk came back, and even
	// a duplicate of a stored message.
	ff.n.Store(1 << 20)
	for _, msg := range []*payload.Message{m("d", 3, np("v", t0+2e9, 3)), m("d", 1, np("v", t0, 1)), m("e", 1, np("v", t0, 1))} {
		if _, err := db.Append(ctx, msg); !errors.Is(err, ErrFailed) {
			t.Fatalf("Append after failure = %v; want ErrFailed", err)
		}
	}
	done := make(chan error, 1)
	db.AppendAsync(m("d", 4, np("v", t0, 1)), func(_ bool, err error) { done <- err })
	if err := <-done; !errors.Is(err, ErrFailed) {
		t.Fatalf("AppendAsync after failure = %v; want ErrFailed", err)
	}
	if !errors.Is(db.Err(), ErrFailed) || !errors.Is(db.Stats().Err, ErrFailed) {
		t.Fatalf("Err() = %v; want ErrFailed", db.Err())
	}
	if got := testutil.ToFloat64(db.m.failed); got != 1 {
		t.Errorf("failed gauge = %v; want 1", got)
	}
	if err := db.Checkpoint(ctx); !errors.Is(err, ErrFailed) {
		t.Errorf("Checkpoint after failure = %v; want ErrFailed", err)
	}
	db.Close()
	// Reopening recovers what was acknowledged.
	db = openT(t, dir, quiet())
	if got := points(t, db, "d", "v"); len(got) != 1 || got[0].Value.Num != 1 {
		t.Fatalf("after reopen: %+v; want the one acknowledged point", got)
	}
	appendOK(t, db, m("d", 2, np("v", t0+1e9, 2)))
}

func TestRetention(t *testing.T) {
	now := time.Unix(0, t0).Add(10 * 24 * time.Hour)
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	o := quiet()
	o.Retention = 48 * time.Hour
	o.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	db := openT(t, t.TempDir(), o)
	ctx := context.Background()
	// One point per hour for 5 days before now.
	for h := range 5 * 24 {
		ts := now.Add(-time.Duration(5*24-h) * time.Hour).UnixNano()
		appendOK(t, db, m("d", uint64(h+1), np("v", ts, float64(h))))
		if h%24 == 0 {
			if err := db.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := db.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	got := points(t, db, "d", "v")
	cutoff := now.Add(-48 * time.Hour).UnixNano()
	if len(got) != 48 {
		t.Fatalf("after retention: %d points; want 48", len(got))
	}
	for _, p := range got {
		if p.TS < cutoff {
			t.Fatalf("point at %v older than the cutoff", time.Unix(0, p.TS))
		}
	}
	var minTS int64
	if err := db.rdb.QueryRow(`SELECT min(min_ts) FROM chunks`).Scan(&minTS); err != nil {
		t.Fatal(err)
	}
	if minTS < cutoff-dayNs {
		t.Errorf("chunks older than the retention remain: %v", time.Unix(0, minTS))
	}
	// Everything expires; Latest goes empty.
	clock.Store(now.Add(30 * 24 * time.Hour).UnixNano())
	if err := db.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(points(t, db, "d", "v")); n != 0 {
		t.Fatalf("after full expiry: %d points", n)
	}
	if lat, _ := db.Latest(ctx, "d"); len(lat) != 0 {
		t.Fatalf("Latest after expiry = %+v", lat)
	}
}

// TestCompaction writes three days of minute data with overwrites and out
// of order points across many checkpoints, and checks that compaction
// changes nothing visible while reducing chunks to one per closed day.
func TestCompaction(t *testing.T) {
	now := time.Unix(0, t0).Add(3*24*time.Hour + 30*time.Minute)
	o := quiet()
	o.Now = func() time.Time { return now }
	dir := t.TempDir()
	db := openT(t, dir, o)
	ctx := context.Background()
	seq := uint64(0)
	for i := range 3 * 24 * 60 {
		ts := t0 + int64(i)*60e9
		seq++
		appendOK(t, db, m("d", seq, np("v", ts, float64(i)), np("late", ts-3600e9, float64(-i))))
		if i%500 == 0 {
			seq++
			appendOK(t, db, m("d", seq, np("v", t0+int64(i/2)*60e9, 0.5))) // overwrite an old point
		}
		if i%97 == 0 {
			if err := db.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := db.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	before := points(t, db, "d", "")
	chunksBefore := db.Stats().Chunks
	if err := db.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	after := points(t, db, "d", "")
	if !slices.Equal(before, after) {
		t.Fatalf("compaction changed the data: %d points before, %d after", len(before), len(after))
	}
	chunksAfter := db.Stats().Chunks
	var rows int64
	db.rdb.QueryRow(`SELECT count(*) FROM chunks`).Scan(&rows)
	if rows != chunksAfter {
		t.Errorf("Stats().Chunks = %d; table has %d", chunksAfter, rows)
	}
	// Closed days (3 per series, the late series has 4 days of data with
	// day 4 open) are one chunk each; the open day keeps hour chunks.
	t.Logf("chunks: %d before compaction, %d after", chunksBefore, chunksAfter)
	if chunksAfter > 2*3+2*24 {
		t.Errorf("%d chunks after compaction; want at most %d", chunksAfter, 2*3+2*24)
	}
	// Compacting again changes nothing.
	if err := db.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if db.Stats().Chunks != chunksAfter {
		t.Errorf("second compaction: %d chunks; want %d", db.Stats().Chunks, chunksAfter)
	}
	db.Close()
	db = openT(t, dir, o)
	if got := points(t, db, "d", ""); !slices.Equal(before, got) {
		t.Fatalf("after reopen: %d points; want %d", len(got), len(before))
	}
}

// TestConcurrentCheckpointQuery races appends, checkpoints, compactions
// and queries: a query must never miss an acknowledged point.
func TestConcurrentCheckpointQuery(t *testing.T) {
	o := quiet()
	o.Now = func() time.Time { return time.Unix(0, t0).Add(365 * 24 * time.Hour) }
	db := openT(t, t.TempDir(), o)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var acked atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := db.Append(ctx, m("d", uint64(i+1), np("v", t0+int64(i)*1e9, float64(i)))); err != nil {
				t.Error(err)
				return
			}
			acked.Store(int64(i + 1))
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := db.Checkpoint(ctx); err != nil {
				t.Error(err)
				return
			}
			if err := db.Compact(ctx); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		n := acked.Load()
		r, err := db.Query(ctx, store.Query{Device: "d", Metric: "v", From: t0, To: t0 + n*1e9, Step: 1 << 50, Agg: store.AggCount})
		if err != nil {
			t.Fatal(err)
		}
		var got float64
		if len(r.Series) == 1 {
			got = r.Series[0].Points[0].Value.Num
		}
		if int64(got) != n {
			t.Fatalf("query saw %v points; %d were acknowledged", got, n)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d appends raced with checkpoints", acked.Load())
}

func TestQueryErrors(t *testing.T) {
	db := openT(t, t.TempDir(), quiet())
	appendOK(t, db, m("d", 1, np("v", t0, 1)))
	ctx := context.Background()
	bad := []store.Query{
		{Device: "d", From: 0, To: 1, Agg: "median", Step: 1},
		{Device: "d", From: 0, To: 1, Agg: store.AggAvg},
		{Device: "d", From: 0, To: 1, Limit: -1},
		{Device: "d", From: 0, To: 1, After: "!!"},
		{Device: "d", From: 0, To: 1, After: "AQ"},
	}
	for _, q := range bad {
		if _, err := db.Query(ctx, q); !errors.Is(err, ErrInvalidQuery) {
			t.Errorf("Query(%+v) err = %v; want ErrInvalidQuery", q, err)
		}
	}
	for _, msg := range []*payload.Message{nil, {}, {Device: "d", Points: []payload.Point{{TS: 1}}},
		{Device: "d", Points: []payload.Point{{Metric: "x", Value: payload.Value{Kind: 9}}}}} {
		if _, err := db.Append(ctx, msg); !errors.Is(err, ErrInvalid) {
			t.Errorf("Append(%+v) err = %v; want ErrInvalid", msg, err)
		}
	}
}

func TestMetricsAndStats(t *testing.T) {
	reg := prometheus.NewRegistry()
	o := quiet()
	o.Registerer = reg
	dir := t.TempDir()
	db := openT(t, dir, o)
	if _, err := Open(t.TempDir(), o); err == nil {
		t.Error("a second store on the same registerer opened; want an error")
	}
	appendOK(t, db, m("d", 1, np("a", t0, 1), np("b", t0, 2)))
	appendDup(t, db, m("d", 1, np("a", t0, 1)))
	appendOK(t, db, m("d", 5000, np("a", t0+1, 1)))
	appendOK(t, db, m("d", 1, np("a", t0+2, 1))) // below the window: a reset
	for name, want := range map[string]float64{
		"fieldhub_dedup_duplicates_total":    1,
		"fieldhub_dedup_window_resets_total": 1,
		"fieldhub_tsdb_points_stored_total":  4,
		"fieldhub_tsdb_series":               2,
	} {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, mf := range mfs {
			if mf.GetName() == name {
				found = true
				mm := mf.GetMetric()[0]
				got := mm.GetCounter().GetValue() + mm.GetGauge().GetValue()
				if got != want {
					t.Errorf("%s = %v; want %v", name, got, want)
				}
			}
		}
		if !found {
			t.Errorf("metric %s not registered", name)
		}
	}
	if n := testutil.CollectAndCount(reg, "fieldhub_tsdb_wal_fsyncs_total"); n != 1 {
		t.Errorf("fsync counter missing")
	}
	st := db.Stats()
	if st.Series != 2 || st.Devices != 1 || st.HeadPoints != 4 || st.WALBytes <= segHeaderSize || st.Err != nil {
		t.Errorf("Stats = %+v", st)
	}
	if err := db.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	st = db.Stats()
	if st.HeadPoints != 0 || st.Chunks != 2 || st.LastCheckpoint.IsZero() || st.WALSegments != 1 {
		t.Errorf("Stats after checkpoint = %+v", st)
	}
	db.Close()
	if n := testutil.CollectAndCount(reg); n != 0 {
		t.Errorf("%d metrics still registered after Close", n)
	}
}

func TestLockedDir(t *testing.T) {
	dir := t.TempDir()
	openT(t, dir, quiet())
	if _, err := Open(dir, quiet()); err == nil {
		t.Fatal("second Open of the same dir succeeded")
	}
}

func TestSegmentRotation(t *testing.T) {
	dir := t.TempDir()
	o := quiet()
	o.SegmentSize = 4096
	db := openT(t, dir, o)
	for i := range 500 {
		appendOK(t, db, m("d", uint64(i+1), np("v", t0+int64(i)*1e9, float64(i))))
	}
	if segs := db.Stats().WALSegments; segs < 5 {
		t.Fatalf("%d segments; want several with 4 KiB segments", segs)
	}
	crash(t, db)
	db = openT(t, dir, o)
	if n := len(points(t, db, "d", "v")); n != 500 {
		t.Fatalf("after reopen: %d points; want 500", n)
	}
	if err := db.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if segs := db.Stats().WALSegments; segs != 1 {
		t.Fatalf("after checkpoint: %d segments; want 1", segs)
	}
}

// TestBackpressure fills the queue with a tiny MaxPending.
func TestBackpressure(t *testing.T) {
	o := quiet()
	o.MaxPending = 4
	db := openT(t, t.TempDir(), o)
	var wg sync.WaitGroup
	var n atomic.Int64
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				seq := uint64(g*1000 + i + 1)
				if _, err := db.Append(context.Background(), m("d", seq, np("v", int64(seq), 1))); err != nil {
					t.Error(err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	if got := len(points(t, db, "d", "v")); got != 1600 || n.Load() != 1600 {
		t.Fatalf("stored %d, acked %d; want 1600", got, n.Load())
	}
	// The committer releases a batch's slots just after completing it.
	deadline := time.Now().Add(5 * time.Second)
	for db.inflight.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if p := db.inflight.Load(); p != 0 {
		t.Errorf("inflight = %d after all completed", p)
	}
}

func TestCloseDrainsAndRefuses(t *testing.T) {
	dir := t.TempDir()
	db := openT(t, dir, quiet())
	var done sync.WaitGroup
	var ok atomic.Int64
	for i := range 1000 {
		done.Add(1)
		db.AppendAsync(m("d", uint64(i+1), np("v", t0+int64(i), 1)), func(_ bool, err error) {
			if err == nil {
				ok.Add(1)
			}
			done.Done()
		})
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	done.Add(1)
	var lateErr error
	db.AppendAsync(m("d", 5000, np("v", t0, 1)), func(_ bool, err error) { lateErr = err; done.Done() })
	done.Wait()
	if !errors.Is(lateErr, store.ErrClosed) {
		t.Errorf("AppendAsync after Close: %v; want ErrClosed", lateErr)
	}
	if _, err := db.Query(context.Background(), store.Query{Device: "d", To: 1}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Query after Close: %v; want ErrClosed", err)
	}
	db = openT(t, dir, quiet())
	if n := len(points(t, db, "d", "v")); int64(n) != ok.Load() {
		t.Fatalf("%d stored; %d acknowledged", n, ok.Load())
	}
}

// TestCloseWhileBusy closes the store while appends, checkpoints,
// compactions and queries are running: nothing may panic or hang, and
// every call made after Close fails cleanly.
func TestCloseWhileBusy(t *testing.T) {
	db := openT(t, t.TempDir(), Options{CheckpointInterval: time.Millisecond, CompactInterval: 2 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				var err error
				switch g {
				case 0:
					_, err = db.Append(ctx, m("d", uint64(i+1), np("v", t0+int64(i), 1)))
				case 1:
					err = db.Checkpoint(ctx)
				case 2:
					err = db.Compact(ctx)
				case 3:
					_, err = db.Query(ctx, store.Query{Device: "d", From: 0, To: math.MaxInt64, Step: 1e12, Agg: store.AggCount})
				}
				if err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	if err := db.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	wg.Wait()
}
