package spool

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"
)

func TestWriteFaults(t *testing.T) {
	tests := []struct {
		name   string
		policy Policy
		inject func(f *faultFS)
		full   bool // the failed append reports ErrFull
		// fillSegment fills the active segment first.
		fillSegment bool
		check       func(st Stats) error
	}{
		{
			name:   "write error",
			inject: func(f *faultFS) { f.writeErr, f.writeFails = syscall.EIO, 1 },
			check:  wantStat("WriteErrors", func(st Stats) uint64 { return st.WriteErrors }, 1),
		},
		{
			name:   "short write",
			inject: func(f *faultFS) { f.writeErr, f.writeFails, f.short = syscall.EIO, 1, true },
			check:  wantStat("WriteErrors", func(st Stats) uint64 { return st.WriteErrors }, 1),
		},
		{
			name:   "sync error",
			inject: func(f *faultFS) { f.syncErr, f.syncFails = syscall.EIO, 1 },
			check:  wantStat("WriteErrors", func(st Stats) uint64 { return st.WriteErrors }, 1),
		},
		{
			name:   "disk full, refuse new",
			policy: RefuseNew,
			inject: func(f *faultFS) { f.writeErr, f.writeFails, f.short = syscall.ENOSPC, 1, true },
			full:   true,
			check:  wantStat("Drops.NoSpace", func(st Stats) uint64 { return st.Drops.NoSpace }, 1),
		},
		{
			name:        "disk full creating a segment",
			policy:      RefuseNew,
			inject:      func(f *faultFS) { f.createErr, f.createFail = syscall.ENOSPC, 1 },
			fillSegment: true,
			full:        true,
			check:       wantStat("Drops.NoSpace", func(st Stats) uint64 { return st.Drops.NoSpace }, 1),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ffs := &faultFS{}
			o := testOptions()
			o.Overflow = tc.policy
			o.fs = ffs
			s := openT(t, dir, o)
			good := appendN(t, s, "k", 20)
			if tc.fillSegment {
				// Fill the active segment so that the next append needs a new one.
				s.commitMu.Lock()
				room := int(o.SegmentBytes - s.wseg.size)
				s.commitMu.Unlock()
				id, err := s.Append(context.Background(), "k", make([]byte, room-recHeaderSize-8-1-1-5))
				if err != nil {
					t.Fatal(err)
				}
				good = append(good, id)
			}
			tc.inject(ffs)
			_, err := s.Append(context.Background(), "k", []byte("doomed"))
			if err == nil {
				t.Fatal("Append succeeded despite the injected fault")
			}
			if errors.Is(err, ErrFull) != tc.full {
				t.Fatalf("Append = %v; ErrFull = %v, want %v", err, errors.Is(err, ErrFull), tc.full)
			}
			if err := tc.check(s.Stats()); err != nil {
				t.Fatal(err)
			}
			more := appendN(t, s, "k", 20)
			if more[0] <= good[len(good)-1] {
				t.Fatalf("ID after the fault %d not above %d", more[0], good[len(good)-1])
			}
			s.Close()

			s = openT(t, dir, testOptions())
			recs := readAvailable(t, s)
			var got []uint64
			for _, r := range recs {
				if string(r.Data) == "doomed" {
					t.Fatalf("the failed append (ID %d) came back after restart", r.ID)
				}
				got = append(got, r.ID)
			}
			want := append(append([]uint64{}, good...), more...)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("after restart IDs %v\nwant %v", got, want)
			}
			if st := s.Stats(); st.Damage != (DamageStats{}) {
				t.Fatalf("after restart Damage = %+v; want none (the failed write was cut back)", st.Damage)
			}
		})
	}
}

func wantStat(name string, get func(Stats) uint64, want uint64) func(Stats) error {
	return func(st Stats) error {
		if got := get(st); got != want {
			return fmt.Errorf("%s = %d; want %d (Stats %+v)", name, got, want, st)
		}
		return nil
	}
}

func TestDiskFullDropOldest(t *testing.T) {
	dir := t.TempDir()
	ffs := &faultFS{}
	o := testOptions()
	o.fs = ffs
	s := openT(t, dir, o)
	appendN(t, s, "k", 300) // several segments, far below MaxBytes
	before := s.Stats()
	ffs.mu.Lock()
	ffs.writeErr, ffs.writeFails = syscall.ENOSPC, 1
	ffs.mu.Unlock()
	id, err := s.Append(context.Background(), "k", []byte("fits after a drop"))
	if err != nil {
		t.Fatalf("Append on a full disk under DropOldest = %v; want success after dropping the oldest segment", err)
	}
	st := s.Stats()
	if st.Segments >= before.Segments+1 || st.Drops.Overflow == 0 {
		t.Fatalf("Stats = %+v; want the oldest segment dropped and counted", st)
	}
	recs := readAvailable(t, s)
	if missing := uint64(301 - len(recs)); st.Drops.Overflow != missing {
		t.Fatalf("Drops.Overflow = %d; want %d missing", st.Drops.Overflow, missing)
	}
	if recs[len(recs)-1].ID != id {
		t.Fatalf("last record %d; want %d", recs[len(recs)-1].ID, id)
	}
}

func TestAppendContext(t *testing.T) {
	o := testOptions()
	o.SyncInterval = 200 * time.Millisecond
	s := openT(t, t.TempDir(), o)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Append(ctx, "k", nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a cancelled context = %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.Append(ctx, "k", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Append timing out while the committer lingers = %v", err)
	}
}
