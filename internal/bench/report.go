package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Table writes the result as an aligned two-column table.
func (r IngestResult) Table(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ingest\t%s (%s)\n", r.Label, r.Addr)
	fmt.Fprintf(tw, "load\t%s\n", r.loadLine())
	for _, row := range r.rows() {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	_ = tw.Flush()
}

// loadLine describes the load in one line.
func (r IngestResult) loadLine() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d devices, MQTT %s, QoS %d", r.Devices, protoName(r.Protocol), r.QoS)
	if r.QoS > 0 {
		fmt.Fprintf(&b, ", inflight %d", r.Inflight)
	}
	if r.WriteBatch > 0 {
		fmt.Fprintf(&b, ", ≤%d msgs per write", r.WriteBatch)
	}
	if r.Rate > 0 {
		fmt.Fprintf(&b, ", paced at %s msgs/s", count(int64(r.Rate)))
	} else {
		b.WriteString(", unpaced")
	}
	fmt.Fprintf(&b, ", %s %d metrics (%d B packets), %s", r.PayloadFormat, r.Metrics, r.PacketBytes, r.Duration)
	if r.Warmup > 0 {
		fmt.Fprintf(&b, " after %s warmup", r.Warmup)
	}
	return b.String()
}

// rows are the table's measurement rows.
func (r IngestResult) rows() [][2]string {
	rows := [][2]string{
		{"messages acked", count(r.Messages)},
		{"msgs/s", count(int64(r.MsgsPerSec))},
		{"points/s", count(int64(r.PointsPerSec))},
	}
	if r.QoS > 0 {
		rows = append(rows,
			[2]string{"latency p50", dur(r.P50)},
			[2]string{"latency p99", dur(r.P99)},
			[2]string{"latency p99.9", dur(r.P999)},
			[2]string{"latency max", dur(r.Max)},
		)
	}
	rows = append(rows, [2]string{"errors", r.errorsText()})
	if r.ServerPID != 0 {
		rows = append(rows,
			[2]string{"server CPU", fmt.Sprintf("%s (%.2f cores)", dur(r.ServerCPU), r.cores(r.ServerCPU))},
			[2]string{"server CPU / 1k msgs", cpuPer1k(r.ServerCPUPer1k)},
			[2]string{"server RSS", mib(r.ServerRSS)},
		)
	}
	rows = append(rows, [2]string{"generator CPU", fmt.Sprintf("%s (%.2f cores)", dur(r.GeneratorCPU), r.cores(r.GeneratorCPU))})
	return rows
}

func (r IngestResult) cores(d time.Duration) float64 {
	if r.Duration <= 0 {
		return 0
	}
	return d.Seconds() / r.Duration.Seconds()
}

// errorsText is the error count with its breakdown.
func (r IngestResult) errorsText() string {
	var parts []string
	codes := make([]int, 0, len(r.Refused))
	for c := range r.Refused {
		codes = append(codes, int(c))
	}
	sort.Ints(codes)
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%s × 0x%02x %s", count(r.Refused[byte(c)]), c, reasonText(5, byte(c))))
	}
	if r.Disconnects > 0 {
		parts = append(parts, fmt.Sprintf("%d disconnects", r.Disconnects))
	}
	if r.Unacked > 0 {
		parts = append(parts, fmt.Sprintf("%s unacked at the end", count(r.Unacked)))
	}
	s := count(r.Errors)
	if len(parts) > 0 {
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s
}

// Compare writes hub and baseline side by side, with the ratio
// hub/baseline for throughput and for the server's CPU per message.
func Compare(w io.Writer, hub, baseline IngestResult) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\t%s\t%s\t%s/%s\t\n", hub.Label, baseline.Label, hub.Label, baseline.Label)
	ratio := func(a, b float64) string {
		if b == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f×", a/b)
	}
	row := func(name, a, b, r string) { fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", name, a, b, r) }
	row("msgs/s", count(int64(hub.MsgsPerSec)), count(int64(baseline.MsgsPerSec)), ratio(hub.MsgsPerSec, baseline.MsgsPerSec))
	row("points/s", count(int64(hub.PointsPerSec)), count(int64(baseline.PointsPerSec)), "")
	if hub.QoS > 0 || baseline.QoS > 0 {
		row("latency p50", dur(hub.P50), dur(baseline.P50), "")
		row("latency p99", dur(hub.P99), dur(baseline.P99), "")
		row("latency max", dur(hub.Max), dur(baseline.Max), "")
	}
	row("errors", count(hub.Errors), count(baseline.Errors), "")
	if hub.ServerPID != 0 || baseline.ServerPID != 0 {
		row("server CPU / 1k msgs", cpuPer1k(hub.ServerCPUPer1k), cpuPer1k(baseline.ServerCPUPer1k),
			ratio(float64(hub.ServerCPUPer1k), float64(baseline.ServerCPUPer1k)))
		row("server RSS", mib(hub.ServerRSS), mib(baseline.ServerRSS), "")
	}
	row("generator CPU", dur(hub.GeneratorCPU), dur(baseline.GeneratorCPU), "")
	_ = tw.Flush()
	fmt.Fprintf(w, "load: %s\n", hub.loadLine())
	if b := baseline.loadLine(); b != hub.loadLine() {
		fmt.Fprintf(w, "baseline load: %s\n", b)
	}
}

// jsonResult is IngestResult as written for docs: durations in
// milliseconds, rates rounded, reason codes as hex strings.
type jsonResult struct {
	Label          string           `json:"label"`
	Addr           string           `json:"addr"`
	Devices        int              `json:"devices"`
	Protocol       string           `json:"protocol"`
	QoS            byte             `json:"qos"`
	Inflight       int              `json:"inflight"`
	Rate           float64          `json:"rate_target,omitempty"`
	WriteBatch     int              `json:"write_batch,omitempty"`
	Metrics        int              `json:"metrics"`
	PayloadFormat  string           `json:"payload_format"`
	PacketBytes    int              `json:"packet_bytes"`
	WarmupS        float64          `json:"warmup_s"`
	DurationS      float64          `json:"duration_s"`
	Messages       int64            `json:"messages"`
	Points         int64            `json:"points"`
	Published      int64            `json:"published"`
	MsgsPerSec     float64          `json:"msgs_per_sec"`
	PointsPerSec   float64          `json:"points_per_sec"`
	P50ms          float64          `json:"p50_ms"`
	P99ms          float64          `json:"p99_ms"`
	P999ms         float64          `json:"p999_ms"`
	MaxMs          float64          `json:"max_ms"`
	MeanMs         float64          `json:"mean_ms"`
	Errors         int64            `json:"errors"`
	Refused        map[string]int64 `json:"refused,omitempty"`
	Disconnects    int64            `json:"disconnects"`
	Unacked        int64            `json:"unacked"`
	ServerCPUS     *float64         `json:"server_cpu_s,omitempty"`
	ServerCPUPer1k *float64         `json:"server_cpu_ms_per_1k_msgs,omitempty"`
	ServerRSS      *int64           `json:"server_rss_bytes,omitempty"`
	GeneratorCPUS  float64          `json:"generator_cpu_s"`
}

// JSON returns the result as indented JSON for docs/benchmarks.md:
// durations in milliseconds (or seconds where the key says _s).
func (r IngestResult) JSON() ([]byte, error) {
	ms := func(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }
	j := jsonResult{
		Label: r.Label, Addr: r.Addr, Devices: r.Devices, Protocol: protoName(r.Protocol),
		QoS: r.QoS, Inflight: r.Inflight, Rate: r.Rate, WriteBatch: r.WriteBatch, Metrics: r.Metrics,
		PayloadFormat: r.PayloadFormat, PacketBytes: r.PacketBytes,
		WarmupS: r.Warmup.Seconds(), DurationS: r.Duration.Seconds(),
		Messages: r.Messages, Points: r.Points, Published: r.Published,
		MsgsPerSec: round3(r.MsgsPerSec), PointsPerSec: round3(r.PointsPerSec),
		P50ms: ms(r.P50), P99ms: ms(r.P99), P999ms: ms(r.P999), MaxMs: ms(r.Max), MeanMs: ms(r.Mean),
		Errors: r.Errors, Disconnects: r.Disconnects, Unacked: r.Unacked,
		GeneratorCPUS: round3(r.GeneratorCPU.Seconds()),
	}
	if len(r.Refused) > 0 {
		j.Refused = map[string]int64{}
		for c, n := range r.Refused {
			j.Refused[fmt.Sprintf("0x%02x", c)] = n
		}
	}
	if r.ServerPID != 0 {
		cpu, per, rss := round3(r.ServerCPU.Seconds()), ms(r.ServerCPUPer1k), r.ServerRSS
		j.ServerCPUS, j.ServerCPUPer1k, j.ServerRSS = &cpu, &per, &rss
	}
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding ingest result: %w", err)
	}
	return append(b, '\n'), nil
}

func round3(f float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'f', 3, 64), 64)
	return v
}

func protoName(p byte) string {
	switch p {
	case 4:
		return "3.1.1"
	case 5:
		return "5"
	}
	return strconv.Itoa(int(p))
}

// count formats n with thousands separators.
func count(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// dur formats a latency or CPU time with three significant digits.
func dur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Millisecond:
		return sig3(float64(d)/float64(time.Microsecond)) + " µs"
	case d < time.Second:
		return sig3(float64(d)/float64(time.Millisecond)) + " ms"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + " s"
}

// sig3 formats v (0 ≤ v < 1000) with about three significant digits.
func sig3(v float64) string {
	switch {
	case v >= 99.95:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 9.995:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// cpuPer1k formats CPU time per 1,000 messages, also as µs per message.
func cpuPer1k(d time.Duration) string {
	if d == 0 {
		return "–"
	}
	return fmt.Sprintf("%s (%.1f µs/msg)", dur(d), float64(d)/float64(time.Microsecond)/1000)
}

func mib(b int64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}
