package storetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/payload"
)

// TestTelemetry checks a store.Telemetry backend. open must return a new,
// empty store for each call and arrange its own cleanup (t.Cleanup); the
// suite closes nothing itself except in the "Close" subtest.
//
// What it holds every backend to, beyond the interface comments:
//   - values round-trip exactly (float64 bit for bit, strings byte for byte);
//   - raw points come in time order with one point per timestamp: writing a
//     series twice at the same timestamp keeps the last write;
//   - series without points in the range are left out of Result.Series;
//   - a downsampled series has Kind Number, except with last, which keeps
//     the metric's kind; bucket timestamps are bucket starts;
//   - a refused message (type mismatch) stores nothing and does not mark
//     its seq as seen;
//   - Latest is the point with the greatest timestamp of each metric;
//   - after DeleteDevice the device's seqs are new again;
//   - a device or metric never written reads as empty, not as an error.
func TestTelemetry(t *testing.T, open func(t *testing.T) store.Telemetry) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(ctx context.Context, t *testing.T, s store.Telemetry)
	}{
		{"AppendQueryAllKinds", telAppendQueryAllKinds},
		{"ValuesExact", telValuesExact},
		{"OutOfOrder", telOutOfOrder},
		{"SameTimestampLastWriteWins", telSameTimestamp},
		{"DuplicateSeq", telDuplicateSeq},
		{"ConcurrentDuplicates", telConcurrentDuplicates},
		{"NoSeqNeverDeduplicated", telNoSeq},
		{"TypeMismatch", telTypeMismatch},
		{"TypeMismatchWithinMessage", telTypeMismatchWithin},
		{"Range", telRange},
		{"LimitCursor", telLimitCursor},
		{"Aggregates", telAggregates},
		{"AggregateLimitCursor", telAggregateLimitCursor},
		{"AggregateKinds", telAggregateKinds},
		{"Latest", telLatest},
		{"DeleteDevice", telDeleteDevice},
		{"UnknownDevice", telUnknown},
		{"Async", telAsync},
		{"Close", telClose},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			tt.fn(ctx, t, open(t))
		})
	}
}

// telT0 is the time base of the telemetry tests (a whole second).
var telT0 = time.Date(2024, 5, 17, 13, 0, 0, 0, time.UTC).UnixNano()

const sec = int64(time.Second)

func num(metric string, ts int64, v float64) payload.Point {
	return payload.Point{Metric: metric, TS: ts, Value: payload.NumberValue(v)}
}

func boolean(metric string, ts int64, v bool) payload.Point {
	return payload.Point{Metric: metric, TS: ts, Value: payload.BoolValue(v)}
}

func str(metric string, ts int64, v string) payload.Point {
	return payload.Point{Metric: metric, TS: ts, Value: payload.StringValue(v)}
}

func msg(device string, seq uint64, pts ...payload.Point) *payload.Message {
	return &payload.Message{Device: device, Seq: seq, HasSeq: true, Points: pts}
}

func noSeq(device string, pts ...payload.Point) *payload.Message {
	return &payload.Message{Device: device, Points: pts}
}

func mustAppend(ctx context.Context, t *testing.T, s store.Telemetry, m *payload.Message) {
	t.Helper()
	dup, err := s.Append(ctx, m)
	if err != nil || dup {
		t.Fatalf("Append(%s seq %d) = %v, %v; want false, nil", m.Device, m.Seq, dup, err)
	}
}

func query(ctx context.Context, t *testing.T, s store.Telemetry, q store.Query) store.Result {
	t.Helper()
	r, err := s.Query(ctx, q)
	if err != nil {
		t.Fatalf("Query(%+v): %v", q, err)
	}
	return r
}

// allPoints flattens a result.
func allPoints(r store.Result) []payload.Point {
	var out []payload.Point
	for _, s := range r.Series {
		out = append(out, s.Points...)
	}
	return out
}

func samePoint(a, b payload.Point) bool {
	return a.Metric == b.Metric && a.TS == b.TS && a.Value.Kind == b.Value.Kind &&
		math.Float64bits(a.Value.Num) == math.Float64bits(b.Value.Num) && a.Value.Str == b.Value.Str
}

func checkPoints(t *testing.T, what string, got, want []payload.Point) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d points, want %d\ngot  %v\nwant %v", what, len(got), len(want), got, want)
	}
	for i := range got {
		if !samePoint(got[i], want[i]) {
			t.Fatalf("%s: point %d = %+v; want %+v", what, i, got[i], want[i])
		}
	}
}

func everything(device string) store.Query {
	return store.Query{Device: device, From: math.MinInt64, To: math.MaxInt64}
}

func telAppendQueryAllKinds(ctx context.Context, t *testing.T, s store.Telemetry) {
	const dev = "dev-kinds"
	var want []payload.Point
	for i := range 20 {
		ts := telT0 + int64(i)*sec
		m := msg(dev, uint64(i+1),
			num("temp", ts, 20+float64(i)/100),
			boolean("door", ts, i%3 == 0),
			str("state", ts, fmt.Sprintf("s%d", i%4)))
		mustAppend(ctx, t, s, m)
	}
	for i := range 20 {
		want = append(want, boolean("door", telT0+int64(i)*sec, i%3 == 0))
	}
	for i := range 20 {
		want = append(want, str("state", telT0+int64(i)*sec, fmt.Sprintf("s%d", i%4)))
	}
	for i := range 20 {
		want = append(want, num("temp", telT0+int64(i)*sec, 20+float64(i)/100))
	}
	r := query(ctx, t, s, everything(dev))
	if r.Next != "" {
		t.Errorf("Next = %q without a limit; want empty", r.Next)
	}
	var metrics []string
	for _, se := range r.Series {
		metrics = append(metrics, se.Metric)
	}
	if !slices.Equal(metrics, []string{"door", "state", "temp"}) {
		t.Fatalf("series = %v; want [door state temp] (ordered by metric)", metrics)
	}
	kinds := []payload.ValueKind{payload.Bool, payload.String, payload.Number}
	for i, se := range r.Series {
		if se.Kind != kinds[i] {
			t.Errorf("series %s Kind = %v; want %v", se.Metric, se.Kind, kinds[i])
		}
	}
	checkPoints(t, "all metrics", allPoints(r), want)

	r = query(ctx, t, s, store.Query{Device: dev, Metric: "temp", From: telT0, To: telT0 + 20*sec})
	if len(r.Series) != 1 || r.Series[0].Metric != "temp" {
		t.Fatalf("Query(temp) series = %+v; want one series temp", r.Series)
	}
	checkPoints(t, "temp", allPoints(r), want[40:])
}

func telValuesExact(ctx context.Context, t *testing.T, s store.Telemetry) {
	const dev = "dev-exact"
	vals := []float64{0, 1, -1, 0.1, 0.29, 1e-9, 123456.789, -2.5e-7, 1e300, -1e-300,
		math.MaxFloat64, math.SmallestNonzeroFloat64, math.Pi, 1.0 / 3, 9007199254740993, -0.5}
	strs := []string{"", "a", "héllo, wörld", "with\x00nul", "emoji 🚀", "a"}
	var want []payload.Point
	for i, v := range vals {
		mustAppend(ctx, t, s, msg(dev, uint64(i+1), num("n", telT0+int64(i)*sec, v)))
		want = append(want, num("n", telT0+int64(i)*sec, v))
	}
	var wantS []payload.Point
	for i, v := range strs {
		mustAppend(ctx, t, s, noSeq(dev, str("s", telT0+int64(i)*sec, v)))
		wantS = append(wantS, str("s", telT0+int64(i)*sec, v))
	}
	// Timestamps of any precision, including before 1970.
	tss := []int64{-5*sec - 1, -1, 0, 1, telT0 + 123, telT0 + 1_000_000_007}
	var wantT []payload.Point
	for i, ts := range tss {
		mustAppend(ctx, t, s, noSeq(dev, num("t", ts, float64(i))))
		wantT = append(wantT, num("t", ts, float64(i)))
	}
	checkPoints(t, "numbers", allPoints(query(ctx, t, s, store.Query{Device: dev, Metric: "n", From: math.MinInt64, To: math.MaxInt64})), want)
	checkPoints(t, "strings", allPoints(query(ctx, t, s, store.Query{Device: dev, Metric: "s", From: math.MinInt64, To: math.MaxInt64})), wantS)
	checkPoints(t, "timestamps", allPoints(query(ctx, t, s, store.Query{Device: dev, Metric: "t", From: math.MinInt64, To: math.MaxInt64})), wantT)
}

func telOutOfOrder(ctx context.Context, t *testing.T, s store.Telemetry) {
	const dev = "dev-ooo"
	order := []int{5, 1, 9, 0, 3, 7, 2, 8, 6, 4}
	for k, i := range order {
		mustAppend(ctx, t, s, msg(dev, uint64(k+1), num("v", telT0+int64(i)*sec, float64(i))))
	}
	var want []payload.Point
	for i := range 10 {
		want = append(want, num("v", telT0+int64(i)*sec, float64(i)))
	}
	checkPoints(t, "out of order", allPoints(query(ctx, t, s, everything(dev))), want)
}

func telSameTimestamp(ctx context.Context, t *testing.T, s store.Telemetry) {
	const dev = "dev-samets"
	mustAppend(ctx, t, s, msg(dev, 1, num("v", telT0, 1), num("w", telT0, 10)))
	mustAppend(ctx, t, s, msg(dev, 2, num("v", telT0, 2)))
	mustAppend(ctx, t, s, noSeq(dev, num("v", telT0+sec, 3)))
	mustAppend(ctx, t, s, noSeq(dev, num("v", telT0, 4)))
	want := []payload.Point{num("v", telT0, 4), num("v", telT0+sec, 3), num("w", telT0, 10)}
	checkPoints(t, "last write wins", allPoints(query(ctx, t, s, everything(dev))), want)
	r := query(ctx, t, s, store.Query{Device: dev, Metric: "v", From: telT0, To: telT0 + 2*sec, Step: 2 * sec, Agg: store.AggCount})
	checkPoints(t, "count after overwrite", allPoints(r), []payload.Point{num("v", telT0, 2)})
}

func telDuplicateSeq(ctx context.Context, t *testing.T, s store.Telemetry) {
	const dev = "dev-dup"
	mustAppend(ctx, t, s, msg(dev, 7, num("v", telT0, 1)))
	// Same seq, other content: still a duplicate, not stored.
	dup, err := s.Append(ctx, msg(dev, 7, num("v", telT0+sec, 2)))
	if err != nil || !dup {
		t.Fatalf("Append(dup seq 7) = %v, %v; want true, nil", dup, err)
	}
	// The same seq from another device is not a duplicate.
	mustAppend(ctx, t, s, msg(dev+"-other", 7, num("v", telT0, 3)))
	// Older seqs within the window are new until seen.
	mustAppend(ctx, t, s, msg(dev, 5, num("v", telT0+2*sec, 5)))
	dup, err = s.Append(ctx, msg(dev, 5, num("v", telT0+3*sec, 6)))
	if err != nil || !dup {
		t.Fatalf("Append(dup seq 5) = %v, %v; want true, nil", dup, err)
	}
	mustAppend(ctx, t, s, msg(dev, 8, num("v", telT0+4*sec, 8)))
	want := []payload.Point{num("v", telT0, 1), num("v", telT0+2*sec, 5), num("v", telT0+4*sec, 8)}
	checkPoints(t, "after duplicates", allPoints(query(ctx, t, s, everything(dev))), want)
}

func telConcurrentDuplicates(ctx context.Context, t *testing.T, s store.Telemetry) {
	const dev = "dev-conc"
	const seqs, writers = 20, 8
	var fresh [seqs]atomic.Int32
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range seqs {
				seq := (k + w) % seqs // writers collide in different orders
				dup, err := s.Append(ctx, msg(dev, uint64(seq+1), num("v", telT0+int64(seq)*sec, float64(seq))))
				if err != nil {
					errc <- err
					return
				}
				if !dup {
					fresh[seq].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("Append: %v", err)
	}
	for i := range fresh {
		if n := fresh[i].Load(); n != 1 {
			t.Errorf("seq %d reported new %d times; want exactly once", i+1, n)
		}
	}
	r := query(ctx, t, s, store.Query{Device: dev, From: telT0, To: telT0 + seqs*sec, Step: seqs * sec, Agg: store.AggCount})
	checkPoints(t, "count", allPoints(r), []payload.Point{num("v", telT0, seqs)})
}

func telNoSeq(ctx context.Context, t *testing.T, s store.Telemetry) {
	const dev = "dev-noseq"
	for i := range 5 {
		// Seq 0 without HasSeq means "no seq": never a duplicate.
		m := noSeq(dev, num("v", telT0+int64(i)*sec, float64(i)))
		dup, err := s.Append(ctx, m)
		if err != nil || dup {
			t.Fatalf("Append(no seq #%d) = %v, %v; want false, nil", i, dup, err)
		}
	}
	// A message with seq 0 is deduplicated like any other seq.
	mustAppend(ctx, t, s, msg(dev, 0, num("v", telT0+10*sec, 10)))
	if dup, err := s.Append(ctx, msg(dev, 0, num("v", telT0+11*sec, 11))); err != nil || !dup {
		t.Fatalf("Append(seq 0 again) = %v, %v; want true, nil", dup, err)
	}
	// Messages without seq do not disturb the window.
	mustAppend(ctx, t, s, noSeq(dev, num("v", telT0+12*sec, 12)))
	r := query(ctx, t, s, store.Query{Device: dev, From: telT0, To: telT0 + 20*sec, Step: 20 * sec, Agg: store.AggCount})
	checkPoints(t, "count", allPoints(r), []payload.Point{num("v", telT0, 7)})
}

func telTypeMismatch(ctx context.Context, t *testing.T, s store.Telemetry) {
	const dev = "dev-type"
	mustAppend(ctx, t, s, msg(dev, 1, num("temp", telT0, 20), str("mode", telT0, "auto")))
	bad := []*payload.Message{
		msg(dev, 2, num("other", telT0+sec, 1), boolean("temp", telT0+sec, true)),
		msg(dev, 2, str("temp", telT0+sec, "hot")),
		msg(dev, 2, num("mode", telT0+sec, 1), num("fresh", telT0+sec, 1)),
	}
	for _, m := range bad {
		dup, err := s.Append(ctx, m)
		if !errors.Is(err, store.ErrTypeMismatch) || dup {
			t.Fatalf("Append(%+v) = %v, %v; want false, ErrTypeMismatch", m.Points, dup, err)
		}
	}
	r := query(ctx, t, s, everything(dev))
	checkPoints(t, "after refusals", allPoints(r), []payload.Point{str("mode", telT0, "auto"), num("temp", telT0, 20)})
	// Nothing of the refused messages was kept: not their new metrics,
	// not their seq.
	mustAppend(ctx, t, s, msg(dev, 2, boolean("other", telT0+sec, true), num("temp", telT0+sec, 21)))
	r = query(ctx, t, s, everything(dev))
	want := []payload.Point{str("mode", telT0, "auto"), boolean("other", telT0+sec, true), num("temp", telT0, 20), num("temp", telT0+sec, 21)}
	checkPoints(t, "after a good retry", allPoints(r), want)
	// Another device may use the same metric name with another kind.
	mustAppend(ctx, t, s, msg(dev+"-b", 1, str("temp", telT0, "n/a")))
}

func telTypeMismatchWithin(ctx context.Context, t *testing.T, s store.Telemetry) {
	const dev = "dev-type-within"
	dup, err := s.Append(ctx, msg(dev, 1, num("x", telT0, 1), str("x", telT0+sec, "one")))
	if !errors.Is(err, store.ErrTypeMismatch) || dup {
		t.Fatalf("Append(mixed kinds for a new metric) = %v, %v; want false, ErrTypeMismatch", dup, err)
	}
	if r := query(ctx, t, s, everything(dev)); len(r.Series) != 0 {
		t.Fatalf("after refusal: series = %+v; want none", r.Series)
	}
	mustAppend(ctx, t, s, msg(dev, 1, str("x", telT0, "one")))
}

func telRange(ctx context.Context, t *testing.T, s store.Telemetry) {
	const dev = "dev-range"
	for i := range 10 {
		mustAppend(ctx, t, s, msg(dev, uint64(i+1), num("v", telT0+int64(i)*sec, float64(i)), num("w", telT0+int64(i)*sec+sec/2, float64(-i))))
	}
	tests := []struct {
		from, to int64
		metric   string
		want     int
	}{
		{telT0, telT0 + 10*sec, "v", 10},
		{telT0 + 2*sec, telT0 + 5*sec, "v", 3}, // [2,5): 2,3,4
		{telT0 + 2*sec + 1, telT0 + 5*sec + 1, "v", 3},
		{telT0 + 9*sec, telT0 + 9*sec + 1, "v", 1},
		{telT0 + 9*sec, telT0 + 9*sec, "v", 0},
		{telT0 + 5*sec, telT0 + 2*sec, "v", 0},
		{telT0 - 100*sec, telT0, "v", 0},
		{telT0 + 2*sec, telT0 + 5*sec, "", 6}, // v 2,3,4 and w 2.5,3.5,4.5
		{telT0 + 2*sec, telT0 + 5*sec, "nope", 0},
	}
	for _, tt := range tests {
		r := query(ctx, t, s, store.Query{Device: dev, Metric: tt.metric, From: tt.from, To: tt.to})
		pts := allPoints(r)
		if len(pts) != tt.want {
			t.Errorf("Query(%s, [%d, %d)) = %d points; want %d", tt.metric, tt.from-telT0, tt.to-telT0, len(pts), tt.want)
		}
		for _, p := range pts {
			if p.TS < tt.from || p.TS >= tt.to {
				t.Errorf("Query(%s, [%d, %d)) returned ts %d", tt.metric, tt.from-telT0, tt.to-telT0, p.TS-telT0)
			}
		}
		for _, se := range r.Series {
			if len(se.Points) == 0 {
				t.Errorf("Query(%s, [%d, %d)) returned empty series %s", tt.metric, tt.from-telT0, tt.to-telT0, se.Metric)
			}
		}
	}
}

func telLimitCursor(ctx context.Context, t *testing.T, s store.Telemetry) {
	const dev = "dev-page"
	var want []payload.Point
	for i := range 25 {
		ts := telT0 + int64(i)*sec
		mustAppend(ctx, t, s, msg(dev, uint64(i+1), num("a", ts, float64(i)), str("b", ts, fmt.Sprint(i))))
	}
	for i := range 25 {
		want = append(want, num("a", telT0+int64(i)*sec, float64(i)))
	}
	for i := range 25 {
		want = append(want, str("b", telT0+int64(i)*sec, fmt.Sprint(i)))
	}
	for _, limit := range []int{1, 7, 25, 26, 49, 50, 51} {
		q := everything(dev)
		q.Limit = limit
		var got []payload.Point
		for page := 0; ; page++ {
			if page > 100 {
				t.Fatalf("limit %d: no end of paging", limit)
			}
			r := query(ctx, t, s, q)
			pts := allPoints(r)
			if len(pts) > limit {
				t.Fatalf("limit %d: page of %d points", limit, len(pts))
			}
			got = append(got, pts...)
			if r.Next == "" {
				break
			}
			if len(pts) == 0 {
				t.Fatalf("limit %d: empty page with a cursor", limit)
			}
			q.After = r.Next
		}
		checkPoints(t, fmt.Sprintf("paged with limit %d", limit), got, want)
	}
	// A page that ends exactly at the last point has no cursor.
	q := store.Query{Device: dev, Metric: "a", From: telT0, To: telT0 + 5*sec, Limit: 5}
	if r := query(ctx, t, s, q); r.Next != "" || len(allPoints(r)) != 5 {
		t.Errorf("Query(limit = all 5) = %d points, Next %q; want 5, no cursor", len(allPoints(r)), r.Next)
	}
}

// aggCase is a hand-computed downsampling of telAggValues.
type aggCase struct {
	agg  store.Agg
	want []float64 // per non-empty bucket
}

// Values at telT0 + i s; i in 0..9 and 20..21 (buckets of 3 s from telT0:
// [0,3) [3,6) [6,9) [9,12) then nothing until [18,21) [21,24)).
var telAggIdx = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 21}
var telAggVals = []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, -4, 0.5}
var telAggBuckets = []int64{0, 3, 6, 9, 18, 21}

var telAggCases = []aggCase{
	{store.AggAvg, []float64{2, 5, 8, 10, -4, 0.5}},
	{store.AggMin, []float64{1, 4, 7, 10, -4, 0.5}},
	{store.AggMax, []float64{3, 6, 9, 10, -4, 0.5}},
	{store.AggSum, []float64{6, 15, 24, 10, -4, 0.5}},
	{store.AggCount, []float64{3, 3, 3, 1, 1, 1}},
	{store.AggLast, []float64{3, 6, 9, 10, -4, 0.5}},
}

func telAggregates(ctx context.Context, t *testing.T, s store.Telemetry) {
	const dev = "dev-agg"
	// Written out of order to check that last means last in time.
	for k := len(telAggIdx) - 1; k >= 0; k-- {
		mustAppend(ctx, t, s, msg(dev, uint64(k+1), num("v", telT0+int64(telAggIdx[k])*sec, telAggVals[k])))
	}
	for _, tt := range telAggCases {
		r := query(ctx, t, s, store.Query{Device: dev, Metric: "v", From: telT0, To: telT0 + 24*sec, Step: 3 * sec, Agg: tt.agg})
		if len(r.Series) != 1 || r.Series[0].Kind != payload.Number {
			t.Fatalf("%s: series = %+v; want one Number series", tt.agg, r.Series)
		}
		var want []payload.Point
		for i, b := range telAggBuckets {
			want = append(want, num("v", telT0+b*sec, tt.want[i]))
		}
		checkPoints(t, string(tt.agg), r.Series[0].Points, want)
	}
	// Buckets align to From, not to the epoch.
	r := query(ctx, t, s, store.Query{Device: dev, Metric: "v", From: telT0 + 1*sec, To: telT0 + 7*sec, Step: 3 * sec, Agg: store.AggSum})
	checkPoints(t, "sum from +1s", allPoints(r), []payload.Point{num("v", telT0+1*sec, 2+3+4), num("v", telT0+4*sec, 5+6+7)})
	// A step larger than the range makes one bucket.
	r = query(ctx, t, s, store.Query{Device: dev, Metric: "v", From: telT0, To: telT0 + 10*sec, Step: 24 * 3600 * sec, Agg: store.AggMax})
	checkPoints(t, "one bucket", allPoints(r), []payload.Point{num("v", telT0, 10)})
}

func telAggregateLimitCursor(ctx context.Context, t *testing.T, s store.Telemetry) {
	const dev = "dev-agg-page"
	for k := range telAggIdx {
		ts := telT0 + int64(telAggIdx[k])*sec
		mustAppend(ctx, t, s, msg(dev, uint64(k+1), num("a", ts, telAggVals[k]), num("b", ts, 2*telAggVals[k])))
	}
	q := store.Query{Device: dev, From: telT0, To: telT0 + 24*sec, Step: 3 * sec, Agg: store.AggSum, Limit: 4}
	var got []payload.Point
	for page := 0; ; page++ {
		if page > 10 {
			t.Fatal("no end of paging")
		}
		r := query(ctx, t, s, q)
		if n := len(allPoints(r)); n > 4 || n == 0 {
			t.Fatalf("page %d has %d buckets; want 1..4", page, n)
		}
		got = append(got, allPoints(r)...)
		if r.Next == "" {
			break
		}
		q.After = r.Next
	}
	sums := telAggCases[3].want
	var want []payload.Point
	for i, b := range telAggBuckets {
		want = append(want, num("a", telT0+b*sec, sums[i]))
	}
	for i, b := range telAggBuckets {
		want = append(want, num("b", telT0+b*sec, 2*sums[i]))
	}
	checkPoints(t, "paged sums", got, want)
}

func telAggregateKinds(ctx context.Context, t *testing.T, s store.Telemetry) {
	const dev = "dev-agg-kinds"
	for i := range 6 {
		ts := telT0 + int64(i)*sec
		mustAppend(ctx, t, s, msg(dev, uint64(i+1), boolean("on", ts, i%2 == 0), str("mode", ts, fmt.Sprint("m", i))))
	}
	for _, metric := range []string{"on", "mode"} {
		for _, agg := range []store.Agg{store.AggAvg, store.AggMin, store.AggMax, store.AggSum} {
			_, err := s.Query(ctx, store.Query{Device: dev, Metric: metric, From: telT0, To: telT0 + 6*sec, Step: 3 * sec, Agg: agg})
			if !errors.Is(err, store.ErrTypeMismatch) {
				t.Errorf("Query(%s of %s) err = %v; want ErrTypeMismatch", agg, metric, err)
			}
		}
	}
	r := query(ctx, t, s, store.Query{Device: dev, Metric: "on", From: telT0, To: telT0 + 6*sec, Step: 3 * sec, Agg: store.AggCount})
	checkPoints(t, "count of bool", allPoints(r), []payload.Point{num("on", telT0, 3), num("on", telT0+3*sec, 3)})
	r = query(ctx, t, s, store.Query{Device: dev, Metric: "on", From: telT0, To: telT0 + 6*sec, Step: 3 * sec, Agg: store.AggLast})
	if len(r.Series) != 1 || r.Series[0].Kind != payload.Bool {
		t.Fatalf("last of bool: series %+v; want one Bool series", r.Series)
	}
	checkPoints(t, "last of bool", allPoints(r), []payload.Point{boolean("on", telT0, true), boolean("on", telT0+3*sec, false)})
	r = query(ctx, t, s, store.Query{Device: dev, Metric: "mode", From: telT0, To: telT0 + 6*sec, Step: 3 * sec, Agg: store.AggLast})
	checkPoints(t, "last of string", allPoints(r), []payload.Point{str("mode", telT0, "m2"), str("mode", telT0+3*sec, "m5")})
	r = query(ctx, t, s, store.Query{Device: dev, Metric: "mode", From: telT0, To: telT0 + 6*sec, Step: 6 * sec, Agg: store.AggCount})
	checkPoints(t, "count of string", allPoints(r), []payload.Point{num("mode", telT0, 6)})
}

func telLatest(ctx context.Context, t *testing.T, s store.Telemetry) {
	const dev = "dev-latest"
	mustAppend(ctx, t, s, msg(dev, 1, num("t", telT0+5*sec, 5), str("s", telT0, "a"), boolean("b", telT0, true)))
	mustAppend(ctx, t, s, msg(dev, 2, num("t", telT0+3*sec, 3), str("s", telT0+sec, "b")))
	mustAppend(ctx, t, s, msg(dev, 3, num("t", telT0+5*sec, 6))) // same ts: last write wins
	got, err := s.Latest(ctx, dev)
	if err != nil {
		t.Fatalf("Latest: %v", err)
	}
	want := []payload.Point{boolean("b", telT0, true), str("s", telT0+sec, "b"), num("t", telT0+5*sec, 6)}
	checkPoints(t, "Latest", got, want)
	if got, err := s.Latest(ctx, "dev-never-seen"); err != nil || len(got) != 0 {
		t.Errorf("Latest(unknown) = %v, %v; want empty, nil", got, err)
	}
}

func telDeleteDevice(ctx context.Context, t *testing.T, s store.Telemetry) {
	const dev, other = "dev-del", "dev-keep"
	for i := range 10 {
		ts := telT0 + int64(i)*sec
		mustAppend(ctx, t, s, msg(dev, uint64(i+1), num("v", ts, float64(i)), str("s", ts, "x")))
		mustAppend(ctx, t, s, msg(other, uint64(i+1), num("v", ts, float64(i))))
	}
	if err := s.DeleteDevice(ctx, dev); err != nil {
		t.Fatalf("DeleteDevice: %v", err)
	}
	if r := query(ctx, t, s, everything(dev)); len(r.Series) != 0 {
		t.Fatalf("after DeleteDevice: series %+v; want none", r.Series)
	}
	if got, err := s.Latest(ctx, dev); err != nil || len(got) != 0 {
		t.Fatalf("Latest after DeleteDevice = %v, %v; want empty", got, err)
	}
	if n := len(allPoints(query(ctx, t, s, everything(other)))); n != 10 {
		t.Fatalf("other device has %d points; want 10", n)
	}
	// Seqs are new again, and the metrics may change kind.
	mustAppend(ctx, t, s, msg(dev, 1, str("v", telT0, "fresh")))
	checkPoints(t, "after re-create", allPoints(query(ctx, t, s, everything(dev))), []payload.Point{str("v", telT0, "fresh")})
	if err := s.DeleteDevice(ctx, "dev-never-seen"); err != nil {
		t.Errorf("DeleteDevice(unknown) = %v; want nil", err)
	}
}

func telUnknown(ctx context.Context, t *testing.T, s store.Telemetry) {
	r := query(ctx, t, s, everything("dev-nobody"))
	if len(r.Series) != 0 || r.Next != "" {
		t.Errorf("Query(unknown device) = %+v; want empty", r)
	}
	mustAppend(ctx, t, s, msg("dev-somebody", 1, num("v", telT0, 1)))
	r = query(ctx, t, s, store.Query{Device: "dev-somebody", Metric: "nope", From: math.MinInt64, To: math.MaxInt64})
	if len(r.Series) != 0 {
		t.Errorf("Query(unknown metric) = %+v; want empty", r)
	}
}

func telAsync(ctx context.Context, t *testing.T, s store.Telemetry) {
	a, ok := s.(store.AsyncAppender)
	if !ok {
		t.Skip("backend has no AppendAsync")
	}
	const dev, n = "dev-async", 500
	var mu sync.Mutex
	var order []int
	var dups atomic.Int32
	done := make(chan struct{})
	for i := range n {
		seq := uint64(i + 1)
		if i%10 == 9 {
			seq = uint64(i) // a duplicate of the previous message
		}
		a.AppendAsync(msg(dev, seq, num("v", telT0+int64(i)*sec, float64(i))), func(dup bool, err error) {
			if err != nil {
				t.Errorf("AppendAsync #%d: %v", i, err)
			}
			if dup {
				dups.Add(1)
			}
			mu.Lock()
			order = append(order, i)
			last := len(order) == n
			mu.Unlock()
			if last {
				close(done)
			}
		})
	}
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("AppendAsync completions did not all arrive")
	}
	if !slices.IsSorted(order) {
		t.Errorf("completions out of order: %v", order[:min(len(order), 20)])
	}
	if got := dups.Load(); got != n/10 {
		t.Errorf("duplicates = %d; want %d", got, n/10)
	}
	r := query(ctx, t, s, store.Query{Device: dev, From: telT0, To: telT0 + n*sec, Step: n * sec, Agg: store.AggCount})
	checkPoints(t, "count", allPoints(r), []payload.Point{num("v", telT0, n-n/10)})
}

func telClose(ctx context.Context, t *testing.T, s store.Telemetry) {
	mustAppend(ctx, t, s, msg("dev-close", 1, num("v", telT0, 1)))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.Append(ctx, msg("dev-close", 2, num("v", telT0+sec, 1))); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Append after Close = %v; want ErrClosed", err)
	}
	_ = s.Close() // a second Close must not panic or hang
}
