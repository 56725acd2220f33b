package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestAppendReadAckOrder(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, testOptions())
	const writers, per = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			appendN(t, s, fmt.Sprintf("sensor-%d", w), per)
		}()
	}
	wg.Wait()
	recs := readN(t, s, writers*per)
	for i, r := range recs {
		if r.ID != uint64(i+1) {
			t.Fatalf("record %d has ID %d; want %d", i, r.ID, i+1)
		}
	}
	// Per key, records come back in append order.
	next := map[string]int{}
	for _, r := range recs {
		want := fmt.Sprintf("%s-%06d", r.Key, next[r.Key])
		if string(r.Data) != want {
			t.Fatalf("record %d of %s = %q; want %q", r.ID, r.Key, r.Data, want)
		}
		next[r.Key]++
	}
	if err := s.Ack(recs[len(recs)-1].ID); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Records != 0 || st.Appended != writers*per || st.Replayed != writers*per || st.Acked != writers*per ||
		st.Damage != (DamageStats{}) || st.Drops != (DropStats{}) {
		t.Fatalf("Stats() = %+v; want 0 records, %d appended, replayed and acked", st, writers*per)
	}
}

func TestReadBatchLimits(t *testing.T) {
	s := openT(t, t.TempDir(), testOptions())
	appendN(t, s, "k", 50)
	tests := []struct {
		max, maxBytes, want int
	}{
		{10, 0, 10},
		{1000, 25, 3}, // 9 bytes of key and data each: stops once 25 are reached
		{1000, 1, 1},  // at least one
	}
	for _, tc := range tests {
		s.Rewind()
		recs, err := s.Read(context.Background(), tc.max, tc.maxBytes)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != tc.want {
			t.Errorf("Read(max=%d, maxBytes=%d) returned %d records; want %d", tc.max, tc.maxBytes, len(recs), tc.want)
		}
	}
}

func TestRewind(t *testing.T) {
	s := openT(t, t.TempDir(), testOptions())
	appendN(t, s, "k", 100)
	first := readN(t, s, 60)
	if err := s.Ack(first[29].ID); err != nil { // 1..30 acknowledged
		t.Fatal(err)
	}
	s.Rewind()
	again := readN(t, s, 70)
	if again[0].ID != 31 || again[69].ID != 100 {
		t.Fatalf("after Rewind read IDs %d..%d; want 31..100", again[0].ID, again[69].ID)
	}
	if st := s.Stats(); st.Replayed != 130 {
		t.Fatalf("Replayed = %d; want 130", st.Replayed)
	}
}

func TestAckRules(t *testing.T) {
	s := openT(t, t.TempDir(), testOptions())
	appendN(t, s, "k", 10)
	readN(t, s, 5)
	if err := s.Ack(9); !errors.Is(err, ErrBadAck) {
		t.Fatalf("Ack(9) after reading 5 = %v; want ErrBadAck", err)
	}
	if err := s.Ack(5); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(3); err != nil {
		t.Fatalf("Ack(3) after Ack(5) = %v; want nil (ignored)", err)
	}
	if st := s.Stats(); st.AckedID != 5 || st.Records != 5 {
		t.Fatalf("Stats() AckedID=%d Records=%d; want 5, 5", st.AckedID, st.Records)
	}
}

func TestReadBlocksUntilAppend(t *testing.T) {
	s := openT(t, t.TempDir(), testOptions())
	got := make(chan []Record, 1)
	go func() {
		recs, _ := s.Read(context.Background(), 10, 0)
		got <- recs
	}()
	time.Sleep(20 * time.Millisecond)
	appendN(t, s, "k", 1)
	select {
	case recs := <-got:
		if len(recs) != 1 || recs[0].ID != 1 {
			t.Fatalf("Read = %v; want record 1", ids(recs))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not return after Append")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.Read(ctx, 10, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Read with nothing to read = %v; want DeadlineExceeded", err)
	}

	errc := make(chan error, 1)
	go func() {
		_, err := s.Read(context.Background(), 10, 0)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	s.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Read during Close = %v; want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
}

func TestRestart(t *testing.T) {
	tests := []struct {
		name     string
		appended int
		acked    int // acknowledged before Close
		key      []byte
	}{
		{"none acked", 300, 0, nil},
		{"some acked", 300, 120, nil},
		{"all acked", 300, 300, nil},
		{"encrypted some acked", 300, 120, bytes.Repeat([]byte{7}, 32)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o := testOptions()
			o.Key = tc.key
			s := openT(t, dir, o)
			appendN(t, s, "k", tc.appended)
			if tc.acked > 0 {
				readN(t, s, tc.acked)
				if err := s.Ack(uint64(tc.acked)); err != nil {
					t.Fatal(err)
				}
				if err := s.housekeep(); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openT(t, dir, o)
			st := s.Stats()
			if want := int64(tc.appended - tc.acked); st.Records != want || st.AckedID != uint64(tc.acked) {
				t.Fatalf("after restart Records=%d AckedID=%d; want %d, %d", st.Records, st.AckedID, want, tc.acked)
			}
			recs := readAvailable(t, s)
			if len(recs) != tc.appended-tc.acked {
				t.Fatalf("after restart read %d records; want %d", len(recs), tc.appended-tc.acked)
			}
			for i, r := range recs {
				if want := uint64(tc.acked + i + 1); r.ID != want || string(r.Data) != fmt.Sprintf("k-%06d", tc.acked+i) {
					t.Fatalf("record %d = %d %q; want ID %d", i, r.ID, r.Data, want)
				}
			}
			id, err := s.Append(context.Background(), "k", []byte("after"))
			if err != nil || id != uint64(tc.appended+1) {
				t.Fatalf("Append after restart = %d, %v; want ID %d", id, err, tc.appended+1)
			}
		})
	}
}

func TestIDsSurviveDeletingEverySegment(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	o := testOptions()
	o.Now = clock.Now
	o.MaxAge = time.Minute
	s := openT(t, dir, o)
	appendN(t, s, "k", 100)
	readN(t, s, 100)
	s.Ack(100)
	clock.Advance(time.Hour)
	if err := s.housekeep(); err != nil {
		t.Fatal(err)
	}
	if n := len(segFiles(t, dir)); n != 0 {
		t.Fatalf("%d segment files left; want 0", n)
	}
	s.Close()
	s = openT(t, dir, o)
	if id := appendN(t, s, "k", 1)[0]; id != 101 {
		t.Fatalf("first ID after every segment was deleted = %d; want 101", id)
	}
}

func TestAppendAsyncOrder(t *testing.T) {
	s := openT(t, t.TempDir(), testOptions())
	const n = 2000
	var (
		mu  sync.Mutex
		got []uint64
		wg  sync.WaitGroup
	)
	wg.Add(n)
	data := []byte("payload")
	for range n {
		s.AppendAsync("k", data, func(id uint64, err error) {
			if err != nil {
				t.Errorf("AppendAsync: %v", err)
			}
			mu.Lock()
			got = append(got, id)
			mu.Unlock()
			wg.Done()
		})
		data[0] ^= 1 // the spool copied it
	}
	wg.Wait()
	if !slices.IsSorted(got) || got[0] != 1 || got[n-1] != n {
		t.Fatalf("AppendAsync completions not in order 1..%d: first %d last %d", n, got[0], got[n-1])
	}
	recs := readN(t, s, n)
	if string(recs[0].Data) != "payload" || string(recs[1].Data) != "qayload" {
		t.Fatalf("data = %q, %q; want the bytes as passed", recs[0].Data, recs[1].Data)
	}
}

func TestLargeRecords(t *testing.T) {
	o := Options{SegmentBytes: 2 << 20, MaxBytes: 64 << 20, AckInterval: time.Hour}
	s := openT(t, t.TempDir(), o)
	big := bytes.Repeat([]byte("x"), 1<<20) // above the 256 KiB read chunk
	for range 3 {
		if _, err := s.Append(context.Background(), "k", big); err != nil {
			t.Fatal(err)
		}
	}
	recs := readN(t, s, 3)
	for _, r := range recs {
		if !bytes.Equal(r.Data, big) {
			t.Fatalf("record %d: %d bytes; want %d", r.ID, len(r.Data), len(big))
		}
	}
	if _, err := s.Append(context.Background(), "k", make([]byte, 2<<20)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append(2 MiB) with 2 MiB segments = %v; want ErrTooLarge", err)
	}
}

func TestCloseIdempotentAndAfterClose(t *testing.T) {
	s := openT(t, t.TempDir(), testOptions())
	appendN(t, s, "k", 3)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if _, err := s.Append(context.Background(), "k", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v; want ErrClosed", err)
	}
	done := make(chan error, 1)
	s.AppendAsync("k", nil, func(_ uint64, err error) { done <- err })
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("AppendAsync after Close = %v; want ErrClosed", err)
	}
	if _, err := s.Read(context.Background(), 1, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close = %v; want ErrClosed", err)
	}
	if err := s.Ack(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ack after Close = %v; want ErrClosed", err)
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	openT(t, dir, testOptions())
	if _, err := Open(dir, testOptions()); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v; want ErrLocked", err)
	}
}

func TestOptionsValidation(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		ok   bool
	}{
		{"zero value", Options{}, true},
		{"small MaxBytes shrinks default segments", Options{MaxBytes: 8 << 20}, true},
		{"MaxBytes below two segments", Options{SegmentBytes: 8 << 20, MaxBytes: 10 << 20}, false},
		{"tiny segments", Options{SegmentBytes: 100}, false},
		{"negative MaxAge", Options{MaxAge: -1}, false},
		{"short key", Options{Key: make([]byte, 16)}, false},
		{"unknown policy", Options{Overflow: Policy(7)}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.TempDir(), tc.o)
			if s != nil {
				s.Close()
			}
			if (err == nil) != tc.ok {
				t.Fatalf("Open(%+v) = %v; want ok=%v", tc.o, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("Open error %v; want ErrInvalidOptions", err)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	o := testOptions()
	o.Registerer = reg
	dir := t.TempDir()
	s := openT(t, dir, o)
	appendN(t, s, "k", 10)
	readN(t, s, 10)
	s.Ack(10)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "fieldhub_spool_") {
			t.Errorf("metric %s lacks the fieldhub_spool_ prefix", mf.GetName())
		}
	}
	if got := testutil.ToFloat64(s.m.appended); got != 10 {
		t.Errorf("appended = %v; want 10", got)
	}
	if got := testutil.ToFloat64(s.m.acked); got != 10 {
		t.Errorf("acked = %v; want 10", got)
	}
	if _, err := Open(t.TempDir(), o); err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Fatalf("second spool on one registerer = %v; want already registered", err)
	}
	s.Close()
	s2 := openT(t, dir, o) // Close unregistered: reopening works
	s2.Close()
}
