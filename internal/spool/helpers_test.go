package spool

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testOptions are small, fast options: 4 KiB segments, a long
// AckInterval so that tests drive the housekeeper themselves.
func testOptions() Options {
	return Options{SegmentBytes: 4 << 10, MaxBytes: 1 << 20, AckInterval: time.Hour}
}

func openT(t testing.TB, dir string, o Options) *Spool {
	t.Helper()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func appendN(t testing.TB, s *Spool, key string, n int) []uint64 {
	t.Helper()
	ids := make([]uint64, 0, n)
	for i := range n {
		id, err := s.Append(context.Background(), key, fmt.Appendf(nil, "%s-%06d", key, i))
		if err != nil {
			t.Fatalf("Append(%s, %d) = %v", key, i, err)
		}
		ids = append(ids, id)
	}
	return ids
}

// readN reads until n records arrived (or fails after a few seconds).
func readN(t testing.TB, s *Spool, n int) []Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []Record
	for len(out) < n {
		recs, err := s.Read(ctx, n-len(out), 0)
		if err != nil {
			t.Fatalf("Read after %d of %d records = %v", len(out), n, err)
		}
		out = append(out, recs...)
	}
	return out
}

// readAvailable reads every record available now.
func readAvailable(t testing.TB, s *Spool) []Record {
	t.Helper()
	var out []Record
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		recs, err := s.Read(ctx, 1000, 0)
		cancel()
		if err != nil {
			return out
		}
		out = append(out, recs...)
	}
}

func ids(recs []Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func lastSeg(t testing.TB, dir string) string {
	t.Helper()
	m := segFiles(t, dir)
	if len(m) == 0 {
		t.Fatal("no segment files")
	}
	return m[len(m)-1]
}

// faultFS wraps the real file system and injects errors into segment
// writes, syncs and creation.
type faultFS struct {
	osFS
	mu         sync.Mutex
	writeErr   error // returned by the next writeFails segment writes
	writeFails int
	short      bool // a failing write first writes half its bytes
	syncErr    error
	syncFails  int
	createErr  error
	createFail int
}

func (f *faultFS) take(err *error, n *int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if *n == 0 || *err == nil {
		return nil
	}
	*n--
	return *err
}

func (f *faultFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	isSeg := strings.HasSuffix(name, ".seg")
	if isSeg && flag&os.O_CREATE != 0 {
		if err := f.take(&f.createErr, &f.createFail); err != nil {
			return nil, &os.PathError{Op: "open", Path: name, Err: err}
		}
	}
	inner, err := f.osFS.OpenFile(name, flag, perm)
	if err != nil || !isSeg {
		return inner, err
	}
	return &faultFile{file: inner, fs: f}, nil
}

type faultFile struct {
	file
	fs *faultFS
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.fs.take(&f.fs.writeErr, &f.fs.writeFails); err != nil {
		n := 0
		f.fs.mu.Lock()
		short := f.fs.short
		f.fs.mu.Unlock()
		if short {
			n, _ = f.file.WriteAt(p[:len(p)/2], off)
		}
		return n, err
	}
	return f.file.WriteAt(p, off)
}

func (f *faultFile) Sync() error {
	if err := f.fs.take(&f.fs.syncErr, &f.fs.syncFails); err != nil {
		return err
	}
	return f.file.Sync()
}
