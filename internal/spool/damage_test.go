package spool

import (
	"context"
	"os"
	"testing"
)

// writeSpool appends n records to a fresh spool in dir and closes it.
func writeSpool(t *testing.T, dir string, o Options, n int) {
	t.Helper()
	s := openT(t, dir, o)
	appendN(t, s, "k", n)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// recordOffsets returns the offsets of the records of a segment file.
func recordOffsets(t *testing.T, path string) ([]int, []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int
	res := scanRecords(data, segHeaderSize, 0, func(off int, _ rawRecord) { offs = append(offs, off) })
	if len(res.damaged) != 0 {
		t.Fatalf("%s already damaged: %+v", path, res.damaged)
	}
	return offs, data
}

func TestTornTail(t *testing.T) {
	for _, cut := range []int{1, 10, recHeaderSize, recHeaderSize + 3} {
		dir := t.TempDir()
		o := testOptions()
		writeSpool(t, dir, o, 100)
		path := lastSeg(t, dir)
		offs, _ := recordOffsets(t, path)
		// Cut the last record: keep cut bytes of it.
		end := offs[len(offs)-1] + cut
		if err := os.Truncate(path, int64(end)); err != nil {
			t.Fatal(err)
		}
		s := openT(t, dir, o)
		st := s.Stats()
		if st.Damage.Torn != 1 || st.Damage.Corrupt != 0 {
			t.Fatalf("cut %d: Damage = %+v; want 1 torn", cut, st.Damage)
		}
		recs := readAvailable(t, s)
		if len(recs) != 99 || recs[98].ID != 99 {
			t.Fatalf("cut %d: read %d records; want 1..99", cut, len(recs))
		}
		fi, _ := os.Stat(path)
		if fi.Size() != int64(offs[len(offs)-1]) {
			t.Fatalf("cut %d: segment is %d bytes after open; want truncated to %d", cut, fi.Size(), offs[len(offs)-1])
		}
		// The spool goes on: IDs continue and a reopen finds no damage.
		if id := appendN(t, s, "k", 1)[0]; id != 100 && id != 101 {
			t.Fatalf("next ID = %d", id)
		}
		s.Close()
		s = openT(t, dir, o)
		if st := s.Stats(); st.Damage != (DamageStats{}) {
			t.Fatalf("cut %d: second open Damage = %+v; want none", cut, st.Damage)
		}
		s.Close()
	}
}

func TestFlippedByte(t *testing.T) {
	tests := []struct {
		name  string
		where func(off int, data []byte) int // byte to flip, given the target record's offset
	}{
		{"marker", func(off int, _ []byte) int { return off }},
		{"length", func(off int, _ []byte) int { return off + 5 }},
		{"id", func(off int, _ []byte) int { return off + 9 }},
		{"flags", func(off int, _ []byte) int { return off + 16 }},
		{"crc", func(off int, _ []byte) int { return off + 21 }},
		{"time", func(off int, _ []byte) int { return off + recHeaderSize + 2 }},
		{"data", func(off int, _ []byte) int { return off + recHeaderSize + 12 }},
	}
	for _, tc := range tests {
		for _, enc := range []bool{false, true} {
			name := tc.name
			if enc {
				name += "/encrypted"
			}
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				o := testOptions()
				if enc {
					o.Key = make([]byte, 32)
				}
				writeSpool(t, dir, o, 100)
				segs := segFiles(t, dir)
				if len(segs) < 2 {
					t.Fatalf("want several segments, got %d", len(segs))
				}
				path := segs[0] // a full, earlier segment
				offs, data := recordOffsets(t, path)
				victim := len(offs) / 2
				firstID := uint64(1)
				p := tc.where(offs[victim], data)
				data[p] ^= 0x40
				if err := os.WriteFile(path, data, 0o600); err != nil {
					t.Fatal(err)
				}
				s := openT(t, dir, o)
				if st := s.Stats(); st.Damage.Corrupt != 1 || st.Damage.Torn != 0 {
					t.Fatalf("Damage = %+v; want 1 corrupt", st.Damage)
				}
				recs := readAvailable(t, s)
				if len(recs) != 99 {
					t.Fatalf("read %d records; want 99 (all but the damaged one)", len(recs))
				}
				lost := firstID + uint64(victim)
				for i, r := range recs {
					want := uint64(i + 1)
					if want >= lost {
						want++
					}
					if r.ID != want {
						t.Fatalf("record %d has ID %d; want %d (lost %d)", i, r.ID, want, lost)
					}
				}
				// Reading past the damage, and again after a rewind,
				// does not count it again.
				s.Rewind()
				if again := readAvailable(t, s); len(again) != 99 {
					t.Fatalf("after Rewind read %d; want 99", len(again))
				}
				if st := s.Stats(); st.Damage.Corrupt != 1 {
					t.Fatalf("after reading twice Damage = %+v; want 1 corrupt", st.Damage)
				}
			})
		}
	}
}

func TestDamagedSegmentHeader(t *testing.T) {
	dir := t.TempDir()
	o := testOptions()
	writeSpool(t, dir, o, 100)
	path := segFiles(t, dir)[0]
	data, _ := os.ReadFile(path)
	data[20] ^= 1 // inside the header
	os.WriteFile(path, data, 0o600)
	s := openT(t, dir, o)
	if recs := readAvailable(t, s); len(recs) != 100 {
		t.Fatalf("read %d records after a damaged segment header; want 100", len(recs))
	}
	if _, err := s.Append(context.Background(), "k", []byte("more")); err != nil {
		t.Fatal(err)
	}
}

func TestHalfCreatedSegmentRemoved(t *testing.T) {
	dir := t.TempDir()
	o := testOptions()
	writeSpool(t, dir, o, 10)
	// A crash right after creating the next segment file.
	if err := os.WriteFile(dir+"/"+segName(99), []byte("FHSP"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openT(t, dir, o)
	if recs := readAvailable(t, s); len(recs) != 10 {
		t.Fatalf("read %d; want 10", len(recs))
	}
	if _, err := os.Stat(dir + "/" + segName(99)); !os.IsNotExist(err) {
		t.Fatalf("half-created segment still there: %v", err)
	}
}

func TestDamageFoundWhileReading(t *testing.T) {
	dir := t.TempDir()
	o := testOptions()
	s := openT(t, dir, o)
	appendN(t, s, "k", 100)
	path := segFiles(t, dir)[0]
	offs, data := recordOffsets(t, path)
	// Damage a durable record after Open, as a failing disk would.
	f, _ := os.OpenFile(path, os.O_WRONLY, 0)
	f.WriteAt([]byte{data[offs[3]+30] ^ 0xff}, int64(offs[3]+30))
	f.Close()
	for range 2 {
		recs := readAvailable(t, s)
		if len(recs) != 99 {
			t.Fatalf("read %d; want 99", len(recs))
		}
		if st := s.Stats(); st.Damage.Corrupt != 1 {
			t.Fatalf("Damage = %+v; want 1 corrupt", st.Damage)
		}
		s.Rewind()
	}
}
