package spool

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentOverflowAccounting runs appenders against a small spool
// with DropOldest while an uplink reads, sometimes "loses the connection"
// (Rewind without acknowledging) and otherwise acknowledges. At the end
// every appended record either reached the hub or is counted as dropped,
// exactly, and per key the hub saw records in append order.
func TestConcurrentOverflowAccounting(t *testing.T) {
	o := Options{SegmentBytes: 4 << 10, MaxBytes: 24 << 10, AckInterval: 10 * time.Millisecond}
	s := openT(t, t.TempDir(), o)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()

	var appended atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := "s" + strconv.Itoa(w)
			for i := 0; ctx.Err() == nil; i++ {
				data := []byte(key + " " + strconv.Itoa(i))
				if w%2 == 0 {
					if _, err := s.Append(context.Background(), key, data); err != nil {
						t.Error(err)
						return
					}
					appended.Add(1)
					continue
				}
				done := make(chan error, 1)
				s.AppendAsync(key, data, func(_ uint64, err error) { done <- err })
				if err := <-done; err != nil {
					t.Error(err)
					return
				}
				appended.Add(1)
			}
		}()
	}

	hub := map[uint64]bool{}
	lastSeq := map[string]int{}
	rng := rand.New(rand.NewPCG(1, 2))
	uplink := func(rctx context.Context) error {
		recs, err := s.Read(rctx, 1+rng.IntN(40), 0)
		if err != nil {
			return err
		}
		if rng.IntN(10) == 0 {
			time.Sleep(time.Millisecond)
			s.Rewind() // connection lost: this batch never arrived
			return nil
		}
		var prev uint64
		for _, r := range recs {
			if r.ID <= prev {
				t.Fatalf("IDs out of order in one batch")
			}
			prev = r.ID
			if hub[r.ID] {
				t.Fatalf("record %d delivered again after acknowledgement", r.ID)
			}
			hub[r.ID] = true
			key, num, _ := cutSpace(string(r.Data))
			n, _ := strconv.Atoi(num)
			if last, ok := lastSeq[key]; ok && n <= last {
				t.Fatalf("key %s: reading %d after %d", key, n, last)
			}
			lastSeq[key] = n
		}
		return s.Ack(prev)
	}
	for ctx.Err() == nil {
		// The hub is down for 150 ms every 300 ms: the spool overflows;
		// on reconnect the uplink rewinds.
		if time.Now().UnixMilli()%300 < 150 {
			time.Sleep(150 * time.Millisecond)
			s.Rewind()
			continue
		}
		if err := uplink(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for {
		dctx, dcancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err := uplink(dctx)
		dcancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	s.Rewind() // count in-flight records of dropped segments
	for {
		dctx, dcancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err := uplink(dctx)
		dcancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
	}
	st := s.Stats()
	missing := uint64(appended.Load()) - uint64(len(hub))
	t.Logf("appended %d, at the hub %d, dropped %+v", appended.Load(), len(hub), st.Drops)
	if st.Drops.Overflow == 0 {
		t.Fatal("no overflow happened; the test needs one")
	}
	if st.Drops.Total() != missing {
		t.Fatalf("Drops = %+v; want exactly the %d missing records", st.Drops, missing)
	}
	if st.Records != 0 {
		t.Fatalf("Records = %d after draining", st.Records)
	}
}

func cutSpace(s string) (string, string, bool) {
	for i := range len(s) {
		if s[i] == ' ' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
