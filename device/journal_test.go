package device

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func openTestJournal(t *testing.T, dir string) (*journal, []record) {
	t.Helper()
	j, recs, err := openJournal(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("openJournal = %v", err)
	}
	t.Cleanup(func() { j.close() })
	return j, recs
}

func appendN(t *testing.T, j *journal, from, to int) []uint64 {
	t.Helper()
	var idx []uint64
	for i := from; i < to; i++ {
		n, err := j.append(uint64(1000+i), int64(i), fmt.Appendf(nil, "msg-%d", i))
		if err != nil {
			t.Fatalf("append(%d) = %v", i, err)
		}
		idx = append(idx, n)
	}
	return idx
}

// seqs returns the seqs of recs after checking that each record's payload
// and ts match its seq as appendN wrote them.
func seqs(t *testing.T, recs []record) []uint64 {
	t.Helper()
	var out []uint64
	for _, r := range recs {
		i := int(r.seq) - 1000
		if string(r.payload) != fmt.Sprintf("msg-%d", i) || r.ts != int64(i) {
			t.Errorf("record %+v does not match seq %d", r, r.seq)
		}
		out = append(out, r.seq)
	}
	return out
}

func seqRange(from, to int) []uint64 {
	var out []uint64
	for i := from; i < to; i++ {
		out = append(out, uint64(1000+i))
	}
	return out
}

func TestJournalReplay(t *testing.T) {
	tests := []struct {
		name   string
		n      int
		doneAt int // markDone of the doneAt-th message (1-based), 0: none
		want   []uint64
	}{
		{"empty", 0, 0, nil},
		{"nothing done", 5, 0, seqRange(0, 5)},
		{"some done", 5, 3, seqRange(3, 5)},
		{"all done", 5, 5, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			j, recs := openTestJournal(t, dir)
			if len(recs) != 0 {
				t.Fatalf("new journal replayed %d records", len(recs))
			}
			idx := appendN(t, j, 0, tt.n)
			if tt.doneAt > 0 {
				if err := j.markDone(idx[tt.doneAt-1]); err != nil {
					t.Fatal(err)
				}
			}
			j.close()
			j2, recs := openTestJournal(t, dir)
			if got := seqs(t, recs); !slices.Equal(got, tt.want) {
				t.Errorf("replayed seqs = %v; want %v", got, tt.want)
			}
			// Indexes keep growing after a reopen.
			more := appendN(t, j2, tt.n, tt.n+1)
			if len(idx) > 0 && more[0] <= idx[len(idx)-1] {
				t.Errorf("index after reopen = %d; want above %d", more[0], idx[len(idx)-1])
			}
		})
	}
}

// TestJournalTornTail cuts the last record at every length, and flips a
// byte in it: the intact records replay, the damage is truncated away, and
// appending afterwards works.
func TestJournalTornTail(t *testing.T) {
	dir := t.TempDir()
	j, _ := openTestJournal(t, dir)
	appendN(t, j, 0, 3)
	j.close()
	seg := j.segs[0].path
	full, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	recLen := headerSize + 25 + len("msg-2")
	intact := len(full) - recLen
	type damage struct {
		name string
		data []byte
		want []uint64
	}
	var cases []damage
	for cut := intact; cut < len(full); cut++ {
		cases = append(cases, damage{fmt.Sprintf("cut at %d", cut), full[:cut], seqRange(0, 2)})
	}
	for _, off := range []int{intact + 2, intact + 6, intact + headerSize + 3, len(full) - 1} {
		b := slices.Clone(full)
		b[off] ^= 0x40
		cases = append(cases, damage{fmt.Sprintf("byte %d flipped", off), b, seqRange(0, 2)})
	}
	cases = append(cases, damage{"intact", full, seqRange(0, 3)})
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			d := t.TempDir()
			if err := os.WriteFile(filepath.Join(d, filepath.Base(seg)), tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			j, recs := openTestJournal(t, d)
			if got := seqs(t, recs); !slices.Equal(got, tt.want) {
				t.Fatalf("replayed seqs = %v; want %v", got, tt.want)
			}
			appendN(t, j, 10, 11)
			j.close()
			_, recs = openTestJournal(t, d)
			if got, want := seqs(t, recs), append(slices.Clone(tt.want), 1010); !slices.Equal(got, want) {
				t.Errorf("after appending past the damage, replayed seqs = %v; want %v", got, want)
			}
		})
	}
}

// TestJournalSegments rotates segments, deletes those fully done, and
// replays across the rest.
func TestJournalSegments(t *testing.T) {
	defer func(s int64) { segmentSize = s }(segmentSize)
	segmentSize = 200 // a few records per segment
	dir := t.TempDir()
	j, _ := openTestJournal(t, dir)
	idx := appendN(t, j, 0, 40)
	countSegs := func() int {
		m, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
		return len(m)
	}
	all := countSegs()
	if all < 5 {
		t.Fatalf("%d segments for 40 records; want rotation", all)
	}
	if err := j.markDone(idx[29]); err != nil {
		t.Fatal(err)
	}
	if n := countSegs(); n >= all-3 {
		t.Errorf("%d segments after 30 of 40 records are done; want fewer than %d", n, all-3)
	}
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not a segment"), 0o600)
	j.close()
	j2, recs := openTestJournal(t, dir)
	if got := seqs(t, recs); !slices.Equal(got, seqRange(30, 40)) {
		t.Errorf("replayed seqs = %v; want 30..39", got)
	}
	if err := j2.markDone(idx[39]); err != nil {
		t.Fatal(err)
	}
	more := appendN(t, j2, 40, 41)
	if more[0] <= idx[39] {
		t.Errorf("index %d after %d", more[0], idx[39])
	}
	j2.close()
	_, recs = openTestJournal(t, dir)
	if got := seqs(t, recs); !slices.Equal(got, seqRange(40, 41)) {
		t.Errorf("replayed seqs = %v; want [1040]", got)
	}
}

// TestJournalDamagedMiddleSegment: damage inside an older segment loses
// the rest of that segment only.
func TestJournalDamagedMiddleSegment(t *testing.T) {
	defer func(s int64) { segmentSize = s }(segmentSize)
	segmentSize = 200
	dir := t.TempDir()
	j, _ := openTestJournal(t, dir)
	appendN(t, j, 0, 30)
	j.close()
	if len(j.segs) < 3 {
		t.Fatalf("%d segments; want 3 or more", len(j.segs))
	}
	f, err := os.OpenFile(j.segs[0].path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var hdr [headerSize]byte
	io.ReadFull(f, hdr[:])
	f.WriteAt([]byte{0xff}, headerSize+5) // the first record's body
	f.Close()
	_, recs := openTestJournal(t, dir)
	got := seqs(t, recs)
	if len(got) == 0 || got[len(got)-1] != 1029 || slices.Contains(got, 1000) {
		t.Errorf("replayed seqs = %v; want the first segment lost, the rest kept", got)
	}
}
