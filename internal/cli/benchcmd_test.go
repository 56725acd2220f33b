package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/fhtest"
)

// TestBenchCommands runs a small `fieldhub bench commands`: a hub in its
// own process, 20 certificate devices, one second at concurrency 1 and 4.
func TestBenchCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a hub process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	jsonOut := filepath.Join(t.TempDir(), "r.json")
	var out, errb bytes.Buffer
	err := runBenchCommands(ctx, cmdBenchFlags{devices: 20, concurrency: []int{1, 4}, duration: time.Second, warmup: 10,
		wait: 5 * time.Second, auth: "certificate", jsonOut: jsonOut}, fhtest.Binary(t), &out, &errb)
	if err != nil {
		t.Fatalf("%v\nstdout: %s\nstderr: %s", err, out.String(), errb.String())
	}
	for _, want := range []string{"20 devices registered (certificate auth)", "over TLS", "DESIGN §5", "(with 20 devices, not 1000"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	b, err := os.ReadFile(jsonOut)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Levels []cmdLevel `json:"levels"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Levels) != 2 {
		t.Fatalf("levels %+v", r.Levels)
	}
	for _, l := range r.Levels {
		if l.Commands < 10 || l.Failed != 0 || l.P50 <= 0 || l.P99 < l.P50 || l.Max < l.P99 || l.HubCPUPerCmd <= 0 || l.HubRSS <= 0 || l.HubP50 <= 0 {
			t.Errorf("level %+v", l)
		}
	}
}

// TestBenchCommandsUsage checks the refusals that come before any hub
// starts.
func TestBenchCommandsUsage(t *testing.T) {
	ok := cmdBenchFlags{devices: 10, concurrency: []int{1}, duration: time.Second, wait: 5 * time.Second, auth: "certificate"}
	for name, change := range map[string]func(*cmdBenchFlags){
		"no devices":    func(f *cmdBenchFlags) { f.devices = 0 },
		"too many":      func(f *cmdBenchFlags) { f.devices = 1 << 30 },
		"no levels":     func(f *cmdBenchFlags) { f.concurrency = nil },
		"concurrency 0": func(f *cmdBenchFlags) { f.concurrency = []int{0} },
		"no bound":      func(f *cmdBenchFlags) { f.duration, f.count = 0, 0 },
		"long wait":     func(f *cmdBenchFlags) { f.wait = time.Hour },
		"auth":          func(f *cmdBenchFlags) { f.auth = "psk" },
	} {
		f := ok
		change(&f)
		var ue usageError
		if err := runBenchCommands(context.Background(), f, "/nonexistent", &bytes.Buffer{}, &bytes.Buffer{}); err == nil || !errors.As(err, &ue) {
			t.Errorf("%s: %v; want a usage error", name, err)
		}
	}
}
