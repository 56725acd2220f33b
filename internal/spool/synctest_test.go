package spool

import (
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"
)

// TestHousekeeperTicks runs the spool in a synctest bubble: fake time
// drives the housekeeper's ticker (acks persisted, acknowledged segments
// deleted, MaxAge applied without calling housekeep), and the bubble
// fails the test if Close leaves a goroutine behind.
func TestHousekeeperTicks(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		o := Options{SegmentBytes: 4 << 10, MaxBytes: 1 << 20, AckInterval: time.Second, MaxAge: time.Hour}
		s, err := Open(dir, o)
		if err != nil {
			t.Fatal(err)
		}
		appendN(t, s, "k", 300)
		recs := readN(t, s, 200)
		if err := s.Ack(recs[199].ID); err != nil {
			t.Fatal(err)
		}
		segsBefore := s.Stats().Segments

		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		b, err := os.ReadFile(filepath.Join(dir, ackName))
		if err != nil {
			t.Fatal(err)
		}
		_, a0, _, ok0 := decodeAckSlot(b)
		_, a1, _, ok1 := decodeAckSlot(b[min(len(b), ackSlotGap):])
		if !(ok0 && a0 == 200) && !(ok1 && a1 == 200) {
			t.Fatalf("ack file after one AckInterval holds %d/%v, %d/%v; want 200", a0, ok0, a1, ok1)
		}
		if st := s.Stats(); st.Segments >= segsBefore {
			t.Fatalf("segments %d before, %d after the housekeeper ran; want fewer", segsBefore, st.Segments)
		}

		time.Sleep(2 * time.Hour)
		synctest.Wait()
		if st := s.Stats(); st.Records != 0 || st.Drops.Age != 100 {
			t.Fatalf("after 2h Stats = %+v; want the 100 unacknowledged records dropped by age", st)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	})
}
