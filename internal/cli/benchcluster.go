package cli

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/fieldhub/fieldhub/internal/bench"
)

type clusterBenchFlags struct {
	hubs     []int
	devices  int
	duration time.Duration
	rate     float64
}

func benchClusterCmd(stdout, stderr io.Writer) *cobra.Command {
	var f clusterBenchFlags
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Ingest through Mosquitto into 1, 2, 3… hub instances on PostgreSQL, with CPU per message per component",
		Long: `Starts PostgreSQL (Debian's binaries, a temporary cluster) and, for each count in --hubs, a fresh
database, a Mosquitto broker and that many hub processes in external-broker mode (storage: postgres,
shared subscriptions). --devices publishers send QoS 1 JSON telemetry (3 metrics) to Mosquitto at
--rate messages/s for --duration; the run ends when the hubs have stored everything Mosquitto
acknowledged. Reports the stored rate and the CPU time per stored message of each component
(hubs, Mosquitto, PostgreSQL, load generator), from which docs/scaling.md projects capacity.
Everything listens on loopback and is stopped at the end.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBenchCluster(cmd.Context(), f, stdout, stderr)
		},
	}
	fl := cmd.Flags()
	fl.IntSliceVar(&f.hubs, "hubs", []int{1, 2, 3}, "hub instance counts to run, one run each")
	fl.IntVar(&f.devices, "devices", 50, "publishing devices, one connection each")
	fl.DurationVar(&f.duration, "duration", 10*time.Second, "publishing time per run")
	fl.Float64Var(&f.rate, "rate", 20000, "messages/s over all devices (0: as fast as Mosquitto acknowledges)")
	return cmd
}

// clusterRun is the outcome of one run.
type clusterRun struct {
	hubs               int
	published, stored  int64
	wall               time.Duration
	hubCPU, mqCPU      time.Duration
	pgCPU, genCPU      time.Duration
	publishRate        float64
	hubRSS             int64
	drainedAfterWindow time.Duration
	// PostgreSQL's disk per stored point: telemetry tables with their
	// indexes (and the dedup keys), over the points they hold.
	bytesPerPoint, seqBytesPerMsg float64
}

func runBenchCluster(ctx context.Context, f clusterBenchFlags, stdout, stderr io.Writer) error {
	log := newLogger(stderr, "warn", "text")
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if f.devices < 1 || f.duration <= 0 || len(f.hubs) == 0 {
		return fmt.Errorf("--devices, --duration and --hubs must be positive")
	}
	fmt.Fprintln(stderr, "starting PostgreSQL…")
	pg, err := bench.StartPostgres(ctx)
	if err != nil {
		return fmt.Errorf("starting PostgreSQL: %w", err)
	}
	defer pg.Stop()
	dir, err := os.MkdirTemp("", "fieldhub-bench-cluster-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	var runs []clusterRun
	for i, n := range f.hubs {
		if n < 1 {
			return fmt.Errorf("--hubs: %d is not a positive count", n)
		}
		fmt.Fprintf(stderr, "run %d: %d hub instance(s)…\n", i+1, n)
		r, err := clusterOnce(ctx, f, n, fmt.Sprintf("bench%d", i), pg, exe, filepath.Join(dir, strconv.Itoa(i)), log)
		if err != nil {
			return err
		}
		runs = append(runs, r)
	}
	fmt.Fprintf(stdout, "cluster ingest: %d devices, QoS 1 JSON with 3 metrics, publish rate %.0f/s for %s, through Mosquitto into PostgreSQL\n",
		f.devices, f.rate, f.duration)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "hubs\tpublished\tstored\tstored msgs/s\thub µs/msg\tmosquitto µs/msg\tpostgres µs/msg\tgenerator µs/msg\thub RSS MiB\tPG B/point\tPG dedup B/msg\t")
	for _, r := range runs {
		per := func(d time.Duration) string {
			if r.stored == 0 {
				return "-"
			}
			return fmt.Sprintf("%.1f", float64(d.Microseconds())/float64(r.stored))
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%.1f\t%.0f\t%.0f\t\n", r.hubs, r.published, r.stored,
			float64(r.stored)/r.wall.Seconds(), per(r.hubCPU), per(r.mqCPU), per(r.pgCPU), per(r.genCPU), float64(r.hubRSS)/float64(r.hubs)/(1<<20),
			r.bytesPerPoint, r.seqBytesPerMsg)
	}
	return tw.Flush()
}

const benchHubUser = "fieldhub-hub"

func clusterOnce(ctx context.Context, f clusterBenchFlags, n int, db string, pg *bench.PostgresServer, exe, dir string, log *slog.Logger) (clusterRun, error) {
	res := clusterRun{hubs: n}
	url, err := pg.CreateDatabase(ctx, db)
	if err != nil {
		return res, err
	}
	raw := make([]byte, 16)
	rand.Read(raw)
	hubPW := hex.EncodeToString(raw)
	devices := bench.Devices(f.devices, "cl")
	for i := range devices {
		devices[i].Username, devices[i].Password = devices[i].ID, "pw-"+devices[i].ID
	}
	withHub := append([]bench.Device{{ID: benchHubUser, Username: benchHubUser, Password: hubPW}}, devices...)
	mq, err := bench.StartMosquitto(ctx, bench.MosquittoConfig{
		Devices: withHub,
		NoDelay: true,
		// Shared subscriptions on persistent sessions: no queue limit (a
		// backlog must not be dropped) and a wide in-flight window.
		Conf: "max_queued_messages 0\nmax_inflight_messages 1000\n",
		ACL:  "\nuser " + benchHubUser + "\ntopic readwrite devices/#\n",
	})
	if err != nil {
		return res, fmt.Errorf("starting Mosquitto: %w", err)
	}
	defer mq.Stop()
	key := make([]byte, 32)
	rand.Read(key)
	var hubs []*bench.Process
	var apis []*apiClient
	defer func() {
		for _, h := range hubs {
			h.Stop()
		}
	}()
	token := ""
	for i := range n {
		hub, err := newBenchHub(filepath.Join(dir, fmt.Sprintf("hub%d", i)), log,
			"--storage", "postgres", "--broker", "external",
			"--external-broker-url", "mqtt://"+mq.Addr, "--external-broker-username", benchHubUser,
			"--external-broker-client-id", fmt.Sprintf("bench-hub-%d", i))
		if err != nil {
			return res, err
		}
		if token == "" {
			token = hub.Token
		}
		hub.Token, hub.Exe = token, exe // the instances share one admin token
		hub.Env = []string{"FIELDHUB_POSTGRES_URL=" + url,
			"FIELDHUB_MASTER_KEY=" + base64.StdEncoding.EncodeToString(key),
			"FIELDHUB_EXTERNAL_BROKER_PASSWORD=" + hubPW}
		p, err := hub.start(ctx)
		if err != nil {
			return res, fmt.Errorf("hub %d: %w", i, err)
		}
		hubs = append(hubs, p)
		apis = append(apis, hub.api())
	}
	for _, api := range apis {
		if _, err := waitFor(ctx, time.Minute, func() bool { return api.do(ctx, http.MethodGet, "/readyz", nil, nil) == nil }); err != nil {
			return res, fmt.Errorf("hub at %s not ready: %w", api.base, err)
		}
	}
	// The hubs store messages only for registered devices; Mosquitto has
	// its own password file here, so the registry's passwords go unused.
	for _, d := range devices {
		if err := apis[0].do(ctx, http.MethodPost, "/api/v1/devices", map[string]any{"id": d.ID, "auth": "password"}, nil); err != nil {
			return res, fmt.Errorf("registering %s: %w", d.ID, err)
		}
	}
	stored := func() int64 {
		var sum int64
		for _, api := range apis {
			// Absent until the first message is acknowledged: 0.
			n, _ := scrapeCounter(ctx, api, "fieldhub_extbroker_acked_total", `kind="telemetry"`)
			sum += int64(n)
		}
		return sum
	}
	cpu := func() (hub, mq2, pgc, gen time.Duration) {
		for _, h := range hubs {
			c, _ := bench.ProcCPU(h.PID)
			hub += c
		}
		mq2, _ = bench.ProcCPU(mq.PID)
		pgc = postgresCPU(pg.PID())
		gen, _ = bench.ProcCPU(os.Getpid())
		return
	}
	stored0 := stored()
	h0, m0, p0, g0 := cpu()
	start := time.Now()
	ir, err := bench.RunIngest(ctx, bench.IngestConfig{
		Label: "mosquitto", Addr: mq.Addr, Devices: devices, Protocol: 5,
		Duration: f.duration, Rate: f.rate, Metrics: 3, Inflight: 64,
	})
	if err != nil {
		return res, fmt.Errorf("publishing: %w", err)
	}
	// Everything written was acknowledged by Mosquitto unless counted
	// as unacknowledged or refused.
	res.published = ir.Published - ir.Unacked - ir.Errors
	res.publishRate = ir.MsgsPerSec
	windowEnd := time.Now()
	// Wait until the hubs have stored what Mosquitto acknowledged (or
	// stopped making progress for 30 s).
	last, lastChange := stored(), time.Now()
	for last-stored0 < res.published && time.Since(lastChange) < 30*time.Second {
		time.Sleep(100 * time.Millisecond)
		if s := stored(); s != last {
			last, lastChange = s, time.Now()
		}
	}
	res.wall = time.Since(start)
	res.drainedAfterWindow = time.Since(windowEnd)
	res.stored = last - stored0
	h1, m1, p1, g1 := cpu()
	res.hubCPU, res.mqCPU, res.pgCPU, res.genCPU = h1-h0, m1-m0, p1-p0, g1-g0
	for _, h := range hubs {
		rss, _ := bench.ProcRSS(h.PID)
		res.hubRSS += rss
	}
	res.bytesPerPoint, res.seqBytesPerMsg = pgFootprint(ctx, url)
	if res.stored < res.published {
		log.Warn("the hubs stored fewer messages than Mosquitto acknowledged", "stored", res.stored, "published", res.published)
	}
	return res, nil
}

// pgFootprint measures the telemetry tables' size on disk (heap, indexes,
// TOAST) per stored point, and the dedup table's per stored message.
func pgFootprint(ctx context.Context, url string) (perPoint, perSeq float64) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, 0
	}
	defer conn.Close(ctx)
	conn.Exec(ctx, "CHECKPOINT")
	var pointBytes, seqBytes, points, seqs float64
	conn.QueryRow(ctx, `SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::float8 FROM pg_class c
		WHERE c.relkind = 'r' AND c.relname LIKE 'telemetry\_points\_%'`).Scan(&pointBytes)
	conn.QueryRow(ctx, `SELECT pg_total_relation_size('telemetry_seqs')::float8`).Scan(&seqBytes)
	conn.QueryRow(ctx, `SELECT count(*)::float8 FROM telemetry_points`).Scan(&points)
	conn.QueryRow(ctx, `SELECT count(*)::float8 FROM telemetry_seqs`).Scan(&seqs)
	if points > 0 {
		perPoint = pointBytes / points
	}
	if seqs > 0 {
		perSeq = seqBytes / seqs
	}
	return perPoint, perSeq
}

// postgresCPU sums the CPU time of the postmaster and its children.
func postgresCPU(postmaster int) time.Duration {
	if postmaster == 0 {
		return 0
	}
	total, _ := bench.ProcCPU(postmaster)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command's closing parenthesis: state ppid …
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(s[i+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(postmaster) {
			c, _ := bench.ProcCPU(pid)
			total += c
		}
	}
	return total
}
