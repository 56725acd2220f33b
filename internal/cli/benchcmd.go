package cli

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldhub/fieldhub/device"
	"github.com/fieldhub/fieldhub/internal/bench"
	"github.com/fieldhub/fieldhub/internal/sim"
)

// cmdBenchFlags are the flags of `fieldhub bench commands`.
type cmdBenchFlags struct {
	devices, count, warmup int
	concurrency            []int
	duration, wait         time.Duration
	auth, jsonOut          string
}

// commandsTarget is DESIGN §5's command round trip target: p99 with 1,000
// devices connected, one command at a time.
const (
	commandsTargetP99     = 25 * time.Millisecond
	commandsTargetDevices = 1000
)

func benchCommandsCmd(stdout, stderr io.Writer) *cobra.Command {
	var f cmdBenchFlags
	cmd := &cobra.Command{
		Use:   "commands",
		Short: "Command round trip (API → device → response → API) with N devices connected: p50/p99, commands/s, hub CPU",
		Long: `Starts a hub (fieldhub serve) in its own process on loopback with a fresh data folder, registers
--devices devices (certificate auth by default: no argon2id hash per device), connects every one of them
with the device SDK from this process over TLS (each answers any command at once), then, for each
--concurrency level, sends commands through the REST API (POST /api/v1/devices/{id}/commands?wait=5s)
to random devices for --duration (or --count commands) and measures the API round trip: p50, p99, max,
commands/s, the hub's CPU per command and its RSS. The hub's own created→completed time is shown
beside it. DESIGN §5: p99 ≤ 25 ms with 1,000 devices connected (concurrency 1).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			return runBenchCommands(cmd.Context(), f, exe, stdout, stderr)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&f.devices, "devices", commandsTargetDevices, "devices connected (one SDK client and connection each)")
	fl.IntSliceVar(&f.concurrency, "concurrency", []int{1, 8}, "commands in flight; one measured run per value")
	fl.DurationVar(&f.duration, "duration", 10*time.Second, "measured time per concurrency level")
	fl.IntVar(&f.count, "count", 0, "stop a level after this many commands (0: --duration only)")
	fl.IntVar(&f.warmup, "warmup", 200, "unmeasured commands first")
	fl.DurationVar(&f.wait, "wait", 5*time.Second, "the ?wait= of each command (an answer later than this is a failure)")
	fl.StringVar(&f.auth, "auth", sim.AuthCertificate, "device credentials: certificate (TLS) or password (plain MQTT; argon2id per registration and connect)")
	fl.StringVar(&f.jsonOut, "json", "", "also write the results as JSON to this file")
	return cmd
}

// cmdLevel is the result of one concurrency level.
type cmdLevel struct {
	Concurrency    int           `json:"concurrency"`
	Commands       int           `json:"commands"`
	Failed         int           `json:"failed"`
	Elapsed        time.Duration `json:"elapsed_ns"`
	PerSec         float64       `json:"commands_per_sec"`
	P50            time.Duration `json:"p50_ns"`
	P99            time.Duration `json:"p99_ns"`
	Max            time.Duration `json:"max_ns"`
	HubP50         time.Duration `json:"hub_p50_ns"` // created_at → completed_at, as the hub records them
	HubP99         time.Duration `json:"hub_p99_ns"`
	HubCPUPerCmd   time.Duration `json:"hub_cpu_per_command_ns"`
	BenchCPUPerCmd time.Duration `json:"bench_cpu_per_command_ns"`
	HubRSS         int64         `json:"hub_rss_bytes"`
	FirstError     string        `json:"first_error,omitempty"`
}

func runBenchCommands(ctx context.Context, f cmdBenchFlags, exe string, stdout, stderr io.Writer) error {
	if f.devices < 1 {
		return usageError{errors.New("--devices: want at least 1")}
	}
	if err := checkDescriptors(f.devices); err != nil {
		return err
	}
	if len(f.concurrency) == 0 {
		return usageError{errors.New("--concurrency: want at least one level")}
	}
	for _, c := range f.concurrency {
		if c < 1 || c > 256 {
			return usageError{fmt.Errorf("--concurrency %d: want 1..256", c)}
		}
	}
	if f.duration <= 0 && f.count <= 0 {
		return usageError{errors.New("want a positive --duration or --count")}
	}
	if f.wait <= 0 || f.wait > maxCmdWait {
		return usageError{fmt.Errorf("--wait %v: want up to %v", f.wait, maxCmdWait)}
	}
	if f.auth != sim.AuthCertificate && f.auth != sim.AuthPassword {
		return usageError{fmt.Errorf("--auth %q: want certificate or password", f.auth)}
	}
	log := newLogger(stderr, "warn", "text")
	dir, err := os.MkdirTemp("", "fieldhub-bench-commands-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	mqttsAddr, err := bench.FreePort()
	if err != nil {
		return err
	}
	hub, err := newBenchHub(dir, log, "--mqtts-addr", mqttsAddr)
	if err != nil {
		return err
	}
	server, wait := "mqtts://"+mqttsAddr, mqttsAddr
	if f.auth == sim.AuthPassword {
		mqttAddr, err := bench.FreePort()
		if err != nil {
			return err
		}
		hub.Args = append(hub.Args, "--mqtt-addr", mqttAddr)
		server, wait = "mqtt://"+mqttAddr, mqttAddr
	}
	hub.Exe, hub.Wait = exe, wait
	hubProc, err := hub.start(ctx)
	if err != nil {
		return err
	}
	defer hubProc.Stop()
	api := hub.api()

	// Register the devices.
	sc := sim.DefaultScenario()
	sc.Devices, sc.IDPrefix, sc.Auth, sc.Server = f.devices, "cmdbench-", f.auth, server
	fmt.Fprintf(stderr, "registering %d devices (%s auth)…\n", f.devices, f.auth)
	regStart := time.Now()
	creds, roots, err := provisionDevices(ctx, api, sc, 8)
	if err != nil {
		return err
	}
	regTime := time.Since(regStart)

	// Connect them, each answering any command at once.
	fmt.Fprintf(stderr, "connecting %d devices…\n", f.devices)
	connStart := time.Now()
	// Devices log errors only: a command in flight when a level ends is
	// answered after its API call was cancelled, which is no news.
	clients, err := connectCommandDevices(ctx, server, creds, roots, newLogger(stderr, "error", "text"))
	defer closeAll(clients)
	if err != nil {
		return err
	}
	connTime := time.Since(connStart)
	rssIdle, _ := bench.ProcRSS(hubProc.PID)

	maxConc := slices.Max(f.concurrency)
	hc := &http.Client{Timeout: f.wait + 10*time.Second, Transport: &http.Transport{
		MaxIdleConns: maxConc, MaxIdleConnsPerHost: maxConc, IdleConnTimeout: time.Minute}}
	capi := &apiClient{base: api.base, token: hub.Token, http: hc}
	ids := make([]string, len(creds))
	for i, c := range creds {
		ids[i] = c.ID
	}
	if f.warmup > 0 {
		fmt.Fprintf(stderr, "warm-up: %d commands…\n", f.warmup)
		if _, err := runCommandLevel(ctx, capi, ids, min(maxConc, 8), 0, f.warmup, f.wait, hubProc.PID); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	var levels []cmdLevel
	for _, c := range f.concurrency {
		fmt.Fprintf(stderr, "concurrency %d: %v…\n", c, f.duration)
		lv, err := runCommandLevel(ctx, capi, ids, c, f.duration, f.count, f.wait, hubProc.PID)
		if err != nil {
			return fmt.Errorf("concurrency %d: %w", c, err)
		}
		levels = append(levels, lv)
	}

	host, _ := os.Hostname()
	fmt.Fprintf(stdout, "fieldhub bench commands — %s, %d cores, %s\n", host, numCPU(), time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(stdout, "%d devices registered (%s auth) in %v (%.1f ms each); connected with the SDK over %s in %v; hub RSS %.1f MiB with them idle\n",
		f.devices, f.auth, regTime.Round(time.Millisecond), float64(regTime.Microseconds())/1000/float64(f.devices),
		map[bool]string{true: "TLS", false: "plain TCP"}[f.auth == sim.AuthCertificate], connTime.Round(time.Millisecond), float64(rssIdle)/(1<<20))
	fmt.Fprintln(stdout, "API round trip: POST /api/v1/devices/{id}/commands?wait → device → response → API answer")
	fmt.Fprintf(stdout, "%-11s %9s %8s %11s %9s %9s %9s %17s %12s %13s %9s\n",
		"concurrency", "commands", "failed", "commands/s", "p50", "p99", "max", "hub p50/p99", "hub CPU/cmd", "bench CPU/cmd", "hub RSS")
	for _, l := range levels {
		fmt.Fprintf(stdout, "%-11d %9d %8d %11.0f %9s %9s %9s %17s %12s %13s %7.1f M\n",
			l.Concurrency, l.Commands, l.Failed, l.PerSec, ms(l.P50), ms(l.P99), ms(l.Max), ms(l.HubP50)+"/"+ms(l.HubP99),
			us(l.HubCPUPerCmd), us(l.BenchCPUPerCmd), float64(l.HubRSS)/(1<<20))
		if l.FirstError != "" {
			fmt.Fprintf(stdout, "  first failure at concurrency %d: %s\n", l.Concurrency, l.FirstError)
		}
	}
	for _, l := range levels {
		if l.Concurrency != 1 {
			continue
		}
		verdict := "met"
		if l.P99 > commandsTargetP99 || l.Failed > 0 {
			verdict = "NOT met"
		}
		note := ""
		if f.devices < commandsTargetDevices {
			note = fmt.Sprintf(" (with %d devices, not %d: not the target's setting)", f.devices, commandsTargetDevices)
		}
		fmt.Fprintf(stdout, "DESIGN §5 (p99 ≤ %d ms with %d devices connected, concurrency 1): p99 %s — %s%s\n",
			commandsTargetP99.Milliseconds(), commandsTargetDevices, ms(l.P99), verdict, note)
	}
	if f.jsonOut != "" {
		b, err := jsonIndent(map[string]any{"devices": f.devices, "auth": f.auth, "register_ns": regTime, "connect_ns": connTime, "levels": levels})
		if err != nil {
			return err
		}
		if err := os.WriteFile(f.jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	for _, l := range levels {
		if l.Commands == 0 || l.Failed*100 > l.Commands {
			return fmt.Errorf("concurrency %d: %d of %d commands failed", l.Concurrency, l.Failed, l.Commands+l.Failed)
		}
	}
	return nil
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) + " ms" }
func us(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e3, 'f', 0, 64) + " µs" }

// connectCommandDevices connects one SDK client per credential, at most 64
// connects at a time; every client answers any command with {"ok":true}
// at once. It returns the clients connected so far with its error.
func connectCommandDevices(ctx context.Context, server string, creds []sim.Credential, roots *x509.CertPool, log *slog.Logger) ([]*device.Client, error) {
	clients := make([]*device.Client, len(creds))
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for range min(64, len(creds)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(creds) || cctx.Err() != nil {
					return
				}
				c, err := device.Connect(cctx, device.Config{Server: server, DeviceID: creds[i].ID, Password: creds[i].Password,
					Certificate: creds[i].Certificate, RootCAs: roots, Logger: log})
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("connecting %s: %w", creds[i].ID, err); cancel() })
					return
				}
				c.HandleCommand("*", func(context.Context, json.RawMessage) (any, error) {
					return map[string]bool{"ok": true}, nil
				})
				clients[i] = c
			}
		}()
	}
	wg.Wait()
	return clients, firstErr
}

// closeAll closes the clients in parallel, each within a few seconds.
func closeAll(clients []*device.Client) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range clients {
		if c == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = c.Close(ctx)
		}()
	}
	wg.Wait()
}

// runCommandLevel sends commands to random devices from conc workers
// until d passes (when > 0) or count commands were sent (when > 0).
func runCommandLevel(ctx context.Context, api *apiClient, ids []string, conc int, d time.Duration, count int, wait time.Duration, hubPID int) (cmdLevel, error) {
	lv := cmdLevel{Concurrency: conc}
	var (
		sent     atomic.Int64
		mu       sync.Mutex
		lat, hub []time.Duration
		failed   int
		firstErr string
		wg       sync.WaitGroup
	)
	lctx := ctx
	if d > 0 {
		var cancel context.CancelFunc
		lctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	path := "/commands?wait=" + url.QueryEscape(wait.String())
	cpu0, err := bench.ProcCPU(hubPID)
	if err != nil {
		return lv, err
	}
	self0, _ := bench.ProcCPU(os.Getpid())
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
			var myLat, myHub []time.Duration
			defer func() {
				mu.Lock()
				lat, hub = append(lat, myLat...), append(hub, myHub...)
				mu.Unlock()
			}()
			for lctx.Err() == nil {
				n := sent.Add(1)
				if count > 0 && n > int64(count) {
					return
				}
				id := ids[rng.IntN(len(ids))]
				t0 := time.Now()
				c, err := sendBenchCommand(lctx, api, "/api/v1/devices/"+url.PathEscape(id)+path, n)
				el := time.Since(t0)
				if lctx.Err() != nil && err != nil {
					return // the level ended during this command: not counted
				}
				if err == nil && c.State != "succeeded" {
					err = fmt.Errorf("command %s to %s: state %s %s", c.ID, id, c.State, c.Error)
				}
				if err != nil {
					mu.Lock()
					failed++
					if firstErr == "" {
						firstErr = err.Error()
					}
					mu.Unlock()
					continue
				}
				myLat = append(myLat, el)
				if c.CompletedAt != nil {
					myHub = append(myHub, c.CompletedAt.Sub(c.CreatedAt))
				}
			}
		}()
	}
	wg.Wait()
	lv.Elapsed = time.Since(start)
	cpu1, err := bench.ProcCPU(hubPID)
	if err != nil {
		return lv, err
	}
	self1, _ := bench.ProcCPU(os.Getpid())
	lv.HubRSS, _ = bench.ProcRSS(hubPID)
	lv.Commands, lv.Failed, lv.FirstError = len(lat), failed, firstErr
	lv.PerSec = float64(len(lat)) / lv.Elapsed.Seconds()
	if len(lat) > 0 {
		lv.HubCPUPerCmd = (cpu1 - cpu0) / time.Duration(len(lat))
		lv.BenchCPUPerCmd = (self1 - self0) / time.Duration(len(lat))
		lv.P50, lv.P99, lv.Max = quantile(lat, 0.50), quantile(lat, 0.99), slices.Max(lat)
	}
	if len(hub) > 0 {
		lv.HubP50, lv.HubP99 = quantile(hub, 0.50), quantile(hub, 0.99)
	}
	return lv, nil
}

// benchCommand is what the benchmark reads of the API's command.
type benchCommand struct {
	ID          string     `json:"id"`
	State       string     `json:"state"`
	Error       string     `json:"error"`
	CreatedAt   time.Time  `json:"created_at"`
	CompletedAt *time.Time `json:"completed_at"`
}

// sendBenchCommand posts one "ping" command and decodes the answer.
func sendBenchCommand(ctx context.Context, api *apiClient, path string, n int64) (benchCommand, error) {
	var c benchCommand
	body := []byte(`{"name":"ping","params":{"n":` + strconv.FormatInt(n, 10) + `},"expires_in":"30s"}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, api.base+path, bytes.NewReader(body))
	if err != nil {
		return c, err
	}
	req.Header.Set("Authorization", "Bearer "+api.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := api.http.Do(req)
	if err != nil {
		return c, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return c, err
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return c, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("decoding the answer: %w", err)
	}
	return c, nil
}

// quantile returns the q-quantile of ds (sorting ds).
func quantile(ds []time.Duration, q float64) time.Duration {
	slices.Sort(ds)
	i := int(q*float64(len(ds))+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}
