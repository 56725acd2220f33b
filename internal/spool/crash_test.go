package spool

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestHelperProcess is the child of TestKill9: it appends from several
// goroutines and prints "id N" after each Append returned (durable), while
// a reader acknowledges and prints "ack N". It runs until killed (at most
// 30 s).
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv("SPOOL_KILL_DIR")
	if dir == "" {
		t.Skip("helper process for TestKill9")
	}
	o := Options{SegmentBytes: 32 << 10, MaxBytes: 256 << 20, AckInterval: 5 * time.Millisecond}
	if os.Getenv("SPOOL_KILL_KEY") != "" {
		o.Key = make([]byte, 32)
	}
	s, err := Open(dir, o)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	var out sync.Mutex
	emit := func(line string) {
		out.Lock()
		os.Stdout.WriteString(line)
		out.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := "sensor-" + strconv.Itoa(w)
			for i := 0; ctx.Err() == nil; i++ {
				id, err := s.Append(ctx, key, fmt.Appendf(nil, "%s %d", key, i))
				if err != nil {
					return
				}
				emit("id " + strconv.FormatUint(id, 10) + "\n")
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			recs, err := s.Read(ctx, 50, 0)
			if err != nil {
				return
			}
			time.Sleep(time.Millisecond) // the uplink is slower than the sensors
			last := recs[len(recs)-1].ID
			if s.Ack(last) == nil {
				emit("ack " + strconv.FormatUint(last, 10) + "\n")
			}
		}
	}()
	wg.Wait()
	s.Close()
	os.Exit(0)
}

func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	for _, enc := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypted=%v", enc), func(t *testing.T) {
			dir := t.TempDir()
			printed := map[uint64]bool{}
			var maxPrinted uint64
			for round := range 3 {
				ids, acks := runAndKill(t, dir, enc, 300*time.Millisecond+time.Duration(round)*200*time.Millisecond)
				if len(ids) == 0 {
					t.Fatalf("round %d: the child printed no IDs", round)
				}
				for _, id := range ids {
					if printed[id] {
						t.Fatalf("round %d: ID %d handed out twice", round, id)
					}
					printed[id] = true
					maxPrinted = max(maxPrinted, id)
				}
				var maxAck uint64
				for _, a := range acks {
					maxAck = max(maxAck, a)
				}

				o := Options{SegmentBytes: 32 << 10, MaxBytes: 256 << 20, AckInterval: time.Hour}
				if enc {
					o.Key = make([]byte, 32)
				}
				s, err := Open(dir, o)
				if err != nil {
					t.Fatalf("round %d: reopening after kill -9: %v", round, err)
				}
				st := s.Stats()
				if st.AckedID > maxPrinted {
					t.Fatalf("round %d: recovered ack %d beyond every ID handed out", round, st.AckedID)
				}
				if st.NextID <= maxPrinted {
					t.Fatalf("round %d: NextID %d would reuse ID %d", round, st.NextID, maxPrinted)
				}
				recs := readAvailable(t, s)
				present := map[uint64]bool{}
				var prev uint64
				for _, r := range recs {
					if r.ID <= prev {
						t.Fatalf("round %d: IDs out of order: %d after %d", round, r.ID, prev)
					}
					prev = r.ID
					present[r.ID] = true
				}
				lost := 0
				for id := range printed {
					if id > st.AckedID && !present[id] {
						lost++
						if lost < 5 {
							t.Errorf("round %d: acknowledged append %d lost (recovered ack %d)", round, id, st.AckedID)
						}
					}
				}
				if lost > 0 {
					t.Fatalf("round %d: %d acknowledged appends lost", round, lost)
				}
				t.Logf("round %d: %d IDs printed, %d acks (max %d), recovered ack %d, %d records to resend, damage %+v",
					round, len(ids), len(acks), maxAck, st.AckedID, len(recs), st.Damage)
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// runAndKill runs the helper in dir, SIGKILLs it after d, and returns the
// IDs and acks it printed.
func runAndKill(t *testing.T, dir string, enc bool, d time.Duration) (ids, acks []uint64) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SPOOL_KILL_DIR="+dir)
	if enc {
		cmd.Env = append(cmd.Env, "SPOOL_KILL_KEY=1")
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(d, func() {
		cmd.Process.Kill() // SIGKILL
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		kind, num, ok := strings.Cut(line, " ")
		n, err := strconv.ParseUint(num, 10, 64)
		if !ok || err != nil {
			t.Fatalf("helper printed %q", line)
		}
		if kind == "id" {
			ids = append(ids, n)
		} else {
			acks = append(acks, n)
		}
	}
	cmd.Wait()
	// Stop reports true only when the kill had not started: then the
	// helper ended on its own.
	if timer.Stop() {
		t.Fatal("the helper exited before it was killed")
	}
	return ids, acks
}
