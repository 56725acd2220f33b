package spool

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// uplink reads and acknowledges like the edge's uplink, recording what
// the hub got.
type uplink struct {
	s   *Spool
	hub map[uint64]bool
}

func (u *uplink) drain(t *testing.T) {
	t.Helper()
	for _, r := range readAvailable(t, u.s) {
		if u.hub[r.ID] {
			t.Fatalf("record %d delivered twice after acknowledgement", r.ID)
		}
		u.hub[r.ID] = true
		if err := u.s.Ack(r.ID); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOverflowDropOldestCountsExactly(t *testing.T) {
	tests := []struct {
		name string
		// inflight reads records before the flood; then either the hub
		// acknowledges them (acked) or the uplink reconnects (Rewind).
		inflight int
		acked    bool
	}{
		{"nothing in flight", 0, false},
		{"in flight then reconnect", 30, false},
		{"in flight then acknowledged", 30, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			o := Options{SegmentBytes: 4 << 10, MaxBytes: 16 << 10, AckInterval: time.Hour, Registerer: reg}
			s := openT(t, t.TempDir(), o)
			u := &uplink{s: s, hub: map[uint64]bool{}}
			const n = 3000
			appended := 0
			var inflight []Record
			for i := range n {
				if _, err := s.Append(context.Background(), fmt.Sprintf("s%d", i%7), fmt.Appendf(nil, "reading %d", i)); err != nil {
					t.Fatalf("Append %d = %v", i, err)
				}
				appended++
				if st := s.Stats(); st.Bytes > o.MaxBytes {
					t.Fatalf("after %d appends Bytes = %d > MaxBytes %d", appended, st.Bytes, o.MaxBytes)
				}
				if i == 50 && tc.inflight > 0 {
					inflight = readN(t, s, tc.inflight)
				}
			}
			if tc.acked {
				for _, r := range inflight {
					u.hub[r.ID] = true
				}
				if err := s.Ack(inflight[len(inflight)-1].ID); err != nil {
					t.Fatal(err)
				}
			}
			s.Rewind()
			u.drain(t)
			st := s.Stats()
			missing := uint64(appended - len(u.hub))
			if missing == 0 {
				t.Fatal("nothing was dropped; the test needs an overflow")
			}
			if st.Drops.Overflow != missing || st.Drops.Total() != missing {
				t.Fatalf("Drops = %+v; want Overflow = missing records = %d", st.Drops, missing)
			}
			if got := testutil.ToFloat64(s.m.dropOverflow); got != float64(missing) {
				t.Fatalf("fieldhub_spool_dropped_total{reason=overflow} = %v; want %d", got, missing)
			}
			if st.Records != 0 {
				t.Fatalf("Records = %d after draining; want 0", st.Records)
			}
		})
	}
}

func TestRefuseNew(t *testing.T) {
	o := Options{SegmentBytes: 4 << 10, MaxBytes: 16 << 10, AckInterval: time.Hour, Overflow: RefuseNew}
	s := openT(t, t.TempDir(), o)
	ok, refused := 0, 0
	for i := range 2000 {
		_, err := s.Append(context.Background(), "k", fmt.Appendf(nil, "reading %d", i))
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrFull):
			refused++
		default:
			t.Fatalf("Append = %v", err)
		}
	}
	st := s.Stats()
	if refused == 0 || st.Drops.Refused != uint64(refused) || st.Drops.Overflow != 0 {
		t.Fatalf("refused %d; Drops = %+v", refused, st.Drops)
	}
	if st.Bytes > o.MaxBytes {
		t.Fatalf("Bytes = %d > MaxBytes", st.Bytes)
	}
	recs := readAvailable(t, s)
	if len(recs) != ok {
		t.Fatalf("read %d records; want the %d accepted", len(recs), ok)
	}
	// Once the hub has them, there is room again.
	s.Ack(recs[len(recs)-1].ID)
	if _, err := s.Append(context.Background(), "k", []byte("after")); err != nil {
		t.Fatalf("Append after acknowledging everything = %v", err)
	}
}

func TestMaxAge(t *testing.T) {
	clock := newFakeClock()
	reg := prometheus.NewRegistry()
	o := testOptions()
	o.MaxAge = time.Hour
	o.Now = clock.Now
	o.Registerer = reg
	dir := t.TempDir()
	s := openT(t, dir, o)
	appendN(t, s, "old", 300) // several segments at t0
	clock.Advance(30 * time.Minute)
	appendN(t, s, "new", 20) // t0+30m, in the newest segment
	clock.Advance(40 * time.Minute)
	if err := s.housekeep(); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	recs := readAvailable(t, s)
	if missing := uint64(320 - len(recs)); st.Drops.Age != missing || missing == 0 {
		t.Fatalf("Drops.Age = %d; want the %d missing records", st.Drops.Age, missing)
	}
	if got := testutil.ToFloat64(s.m.dropAge); got != float64(st.Drops.Age) {
		t.Fatalf("fieldhub_spool_dropped_total{reason=age} = %v; want %d", got, st.Drops.Age)
	}
	if recs[len(recs)-1].Key != "new" {
		t.Fatalf("the newest records were dropped")
	}
	s.Ack(recs[len(recs)-1].ID)
	// Everything ages out, the active segment too; IDs go on after a restart.
	clock.Advance(2 * time.Hour)
	if err := s.housekeep(); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Records != 0 || st.Segments != 0 || st.Drops.Age != uint64(320-len(recs)) {
		t.Fatalf("after 3h Stats = %+v; want no records, no segments, %d dropped by age", st, 320-len(recs))
	}
	if id := appendN(t, s, "k", 1)[0]; id != 321 {
		t.Fatalf("ID after everything aged out = %d; want 321", id)
	}
	s.Close()
	s = openT(t, dir, o)
	if id := appendN(t, s, "k", 1)[0]; id != 322 {
		t.Fatalf("ID after restart = %d; want 322", id)
	}
}

func TestOldestAge(t *testing.T) {
	clock := newFakeClock()
	o := testOptions()
	o.Now = clock.Now
	s := openT(t, t.TempDir(), o)
	if st := s.Stats(); st.OldestAge != 0 {
		t.Fatalf("empty spool OldestAge = %v", st.OldestAge)
	}
	appendN(t, s, "a", 10)
	clock.Advance(time.Minute)
	appendN(t, s, "b", 10)
	clock.Advance(time.Minute)
	if got := s.Stats().OldestAge; got != 2*time.Minute {
		t.Fatalf("OldestAge = %v; want 2m", got)
	}
	recs := readN(t, s, 10)
	if got := s.Stats().OldestAge; got != 2*time.Minute {
		t.Fatalf("OldestAge with records in flight = %v; want 2m", got)
	}
	s.Ack(recs[9].ID)
	if got := s.Stats().OldestAge; got != time.Minute {
		t.Fatalf("OldestAge after acknowledging the older ones = %v; want 1m", got)
	}
	s.Ack(readN(t, s, 10)[9].ID)
	if got := s.Stats().OldestAge; got != 0 {
		t.Fatalf("OldestAge with nothing unacknowledged = %v; want 0", got)
	}
}

func TestAckedSegmentsDeleted(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, testOptions())
	appendN(t, s, "k", 500)
	before := len(segFiles(t, dir))
	recs := readN(t, s, 250)
	s.Ack(recs[249].ID)
	if err := s.housekeep(); err != nil {
		t.Fatal(err)
	}
	after := len(segFiles(t, dir))
	if after >= before || after != s.Stats().Segments {
		t.Fatalf("segments %d before, %d after acknowledging half (Stats says %d)", before, after, s.Stats().Segments)
	}
	// Nothing unacknowledged was deleted.
	if rest := readAvailable(t, s); len(rest) != 250 || rest[0].ID != 251 {
		t.Fatalf("read %d records after deletion; want 251..500", len(rest))
	}
}
