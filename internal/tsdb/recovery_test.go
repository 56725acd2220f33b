package tsdb

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/payload"
)

// Environment of the helper process.
const (
	envHelperDir    = "FIELDHUB_TSDB_HELPER_DIR"
	envHelperStart  = "FIELDHUB_TSDB_HELPER_START"
	envHelperResend = "FIELDHUB_TSDB_HELPER_RESEND"
)

var killDevices = []string{"sync-a", "sync-b", "async-a", "async-b"}

// killMsg is the deterministic message of (device, seq).
func killMsg(device string, seq uint64) *payload.Message {
	ts := t0 + int64(seq)*1e6
	return &payload.Message{Device: device, Seq: seq, HasSeq: true, Points: []payload.Point{
		{Metric: "a", TS: ts, Value: payload.NumberValue(float64(seq))},
		{Metric: "b", TS: ts, Value: payload.NumberValue(float64(seq) / 100)},
		{Metric: "c", TS: ts, Value: payload.StringValue(strconv.FormatUint(seq, 36))},
	}}
}

// TestHelperProcess is the child of TestKillRecovery: it appends until it
// is killed, printing "ack DEVICE SEQ DUP" after each acknowledgement.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(envHelperDir)
	if dir == "" {
		t.Skip("run by TestKillRecovery")
	}
	start, _ := strconv.ParseUint(os.Getenv(envHelperStart), 10, 64)
	db, err := Open(dir, Options{
		CheckpointInterval: 15 * time.Millisecond,
		CheckpointWALBytes: 128 << 10,
		CompactInterval:    40 * time.Millisecond,
		SegmentSize:        64 << 10,
		Now:                func() time.Time { return time.Unix(0, t0).Add(30 * 24 * time.Hour) },
	})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	var outMu sync.Mutex
	ack := func(dev string, seq uint64, dup bool, err error) {
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(3)
		}
		outMu.Lock()
		fmt.Fprintf(os.Stdout, "ack %s %d %v\n", dev, seq, dup)
		outMu.Unlock()
	}
	ctx := context.Background()
	// A device resends what it had in flight before the crash.
	if s := os.Getenv(envHelperResend); s != "" {
		from, _ := strconv.ParseUint(s, 10, 64)
		for _, dev := range killDevices {
			for seq := from; seq < from+400; seq++ {
				dup, err := db.Append(ctx, killMsg(dev, seq))
				ack(dev, seq, dup, err)
			}
		}
	}
	fmt.Println("ready")
	var wg sync.WaitGroup
	for _, dev := range killDevices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem := make(chan struct{}, 64)
			for seq := start; ; seq++ {
				if strings.HasPrefix(dev, "sync") {
					dup, err := db.Append(ctx, killMsg(dev, seq))
					ack(dev, seq, dup, err)
					continue
				}
				sem <- struct{}{}
				db.AppendAsync(killMsg(dev, seq), func(dup bool, err error) {
					ack(dev, seq, dup, err)
					<-sem
				})
			}
		}()
	}
	wg.Wait()
}

// TestKillRecovery runs a child process that appends, SIGKILLs it at a
// random moment (during group commits, checkpoints and compactions),
// restarts it several times, and checks that every acknowledged message
// is stored exactly once and is a duplicate when sent again.
func TestKillRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	acked := map[string]map[uint64]bool{}
	for _, d := range killDevices {
		acked[d] = map[uint64]bool{}
	}
	const rounds = 4
	const span = 1_000_000
	var maxSeq uint64
	for round := range rounds {
		start := uint64(round*span + 1)
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1", "-test.timeout=60s")
		cmd.Env = append(os.Environ(), envHelperDir+"="+dir, envHelperStart+"="+strconv.FormatUint(start, 10))
		if round > 0 {
			// Resend around the last acknowledged seqs of the previous run:
			// some acknowledged, some stored but not acknowledged, some lost.
			from := max(start-span, maxSeq-200)
			cmd.Env = append(cmd.Env, envHelperResend+"="+strconv.FormatUint(from, 10))
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAfter := 200 + r.IntN(4000)
		n := 0
		ready := false
		timer := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
		sc := bufio.NewScanner(out)
		killed := false
		for sc.Scan() {
			line := sc.Text()
			if line == "ready" {
				ready = true
				continue
			}
			var dev string
			var seq uint64
			var dup bool
			if _, err := fmt.Sscanf(line, "ack %s %d %t", &dev, &seq, &dup); err != nil {
				t.Fatalf("child said %q", line)
			}
			if acked[dev][seq] && !dup {
				t.Fatalf("round %d: %s seq %d was acknowledged before the kill but stored again", round, dev, seq)
			}
			acked[dev][seq] = true
			maxSeq = max(maxSeq, seq)
			if ready {
				n++
			}
			if n == killAfter && !killed {
				// Keep reading: what the child printed before dying
				// was acknowledged too.
				cmd.Process.Signal(syscall.SIGKILL)
				killed = true
			}
		}
		timer.Stop()
		err = cmd.Wait()
		if n < killAfter {
			t.Fatalf("round %d: child ended after %d acks: %v", round, n, err)
		}
		t.Logf("round %d: killed after %d acks", round, n)
	}

	db := openT(t, dir, quiet())
	ctx := context.Background()
	total := 0
	for _, dev := range killDevices {
		res, err := db.Query(ctx, store.Query{Device: dev, From: math.MinInt64, To: math.MaxInt64})
		if err != nil {
			t.Fatal(err)
		}
		stored := map[string]map[int64]payload.Value{}
		for _, s := range res.Series {
			stored[s.Metric] = map[int64]payload.Value{}
			for _, p := range s.Points {
				stored[s.Metric][p.TS] = p.Value
			}
		}
		seqs := slices.Sorted(maps.Keys(acked[dev]))
		for _, seq := range seqs {
			want := killMsg(dev, seq)
			for _, p := range want.Points {
				if v, ok := stored[p.Metric][p.TS]; !ok || v != p.Value {
					t.Fatalf("%s seq %d: %s = %+v, %v; want %+v (acknowledged, lost)", dev, seq, p.Metric, v, ok, p.Value)
				}
			}
			total++
		}
		// Sent again, those within the dedup window of the device's
		// highest stored seq are duplicates (older ones read as a counter
		// restart; the resends at each start checked those).
		var hwm uint64
		for ts := range stored["a"] {
			hwm = max(hwm, uint64((ts-t0)/1e6))
		}
		for _, seq := range seqs {
			if hwm-seq >= DefaultDedupWindow {
				continue
			}
			dup, err := db.Append(ctx, killMsg(dev, seq))
			if err != nil || !dup {
				t.Fatalf("%s seq %d again: %v, %v; want duplicate", dev, seq, dup, err)
			}
		}
		// Stored at most once per seq: one point per metric and timestamp,
		// and no point that was not sent.
		for metric, pts := range stored {
			for ts := range pts {
				if (ts-t0)%1e6 != 0 {
					t.Fatalf("%s/%s: unexpected point at %d", dev, metric, ts)
				}
			}
		}
	}
	t.Logf("%d acknowledged messages verified after %d kills", total, rounds)
}
