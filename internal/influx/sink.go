// Package influx exports stored telemetry to InfluxDB: a Sink takes each
// message the hub has stored, without ever blocking the caller, and writes
// it in batches of line protocol to the HTTP API of InfluxDB 1.x (/write)
// or 2.x (/api/v2/write), retrying with backoff while the server is down
// or busy. It is best effort with exact accounting: every point is either
// acknowledged by the server or dropped and counted by reason (buffer
// full, refused by the server, not sent before shutdown). See
// docs/export.md.
package influx

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/promutil"
	"github.com/fieldhub/fieldhub/payload"
)

// Options are a Sink's collaborators. The zero value works.
type Options struct {
	// Logger receives drops, refusals and retries, each kind at most once
	// per 10 s with the number of events not logged since; default
	// discard.
	Logger *slog.Logger
	// Registerer receives the fieldhub_export_* metrics (label
	// sink="influxdb"); nil keeps them unregistered.
	Registerer prometheus.Registerer
}

// Drop reasons, the reason label of fieldhub_export_dropped_total.
const (
	ReasonBufferFull = "buffer_full" // the buffer held BufferSize points
	ReasonRejected   = "rejected"    // refused by the server (4xx) or not writable as line protocol
	ReasonShutdown   = "shutdown"    // not delivered when Close's ctx ended, or written after Close
)

const (
	// gzipMin is the smallest body worth compressing.
	gzipMin = 1024
	// maxRetryAfter caps the wait a server may ask for with Retry-After.
	maxRetryAfter = 5 * time.Minute
	// logEvery is the least time between two log lines of one kind.
	logEvery = 10 * time.Second
	// maxReason bounds the server's error body kept for logs.
	maxReason = 1024
)

// Sink exports telemetry messages to InfluxDB. Write hands a message over;
// a goroutine owned by the Sink, started by New and stopped by Close,
// batches, encodes and posts. Its methods are safe for concurrent use.
type Sink struct {
	cfg      Config
	log      *slog.Logger
	enc      lineEncoder
	endpoint string // write URL with its query
	auth     string // Authorization header, or ""
	client   *http.Client

	mu     sync.Mutex
	queue  []*payload.Message // not yet taken by the run loop
	head   int                // points of queue[0] already taken
	queued int                // points in queue, not taken
	held   int                // queued plus the batch being sent
	closed bool

	kick    chan struct{} // a full batch is queued
	closing chan struct{} // closed by Close: drain, then stop
	cancel  context.CancelFunc
	done    chan struct{} // closed when the run loop has returned

	closeOnce sync.Once
	closeErr  error
	shutdown  int // points dropped as shutdown by the run loop (read after done)

	// owned by the run loop
	body []byte
	zbuf bytes.Buffer
	zw   *gzip.Writer

	points      prometheus.Counter
	dropped     *prometheus.CounterVec
	retries     prometheus.Counter
	buffered    prometheus.Gauge
	lastSuccess prometheus.Gauge

	dropLogs  map[string]*logLimiter // by reason; the map is never written after New
	retryLogs logLimiter
}

// New validates cfg (which must be Enabled), registers the metrics and
// starts the sink's goroutine. Stop it with Close.
func New(cfg Config, o Options) (*Sink, error) {
	if !cfg.Enabled() {
		return nil, invalid("url", "required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	base, _ := url.Parse(cfg.URL) // checked by Validate
	q := url.Values{"precision": {"ns"}}
	var endpoint *url.URL
	var auth string
	if cfg.APIVersion == 1 {
		endpoint = base.JoinPath("write")
		q.Set("db", cfg.Database)
		if cfg.RetentionPolicy != "" {
			q.Set("rp", cfg.RetentionPolicy)
		}
		if cfg.Username != "" {
			r := &http.Request{Header: http.Header{}}
			r.SetBasicAuth(cfg.Username, cfg.Password)
			auth = r.Header.Get("Authorization")
		}
	} else {
		endpoint = base.JoinPath("api", "v2", "write")
		q.Set("org", cfg.Org)
		q.Set("bucket", cfg.Bucket)
		auth = "Token " + cfg.Token
	}
	endpoint.RawQuery = q.Encode()

	labels := prometheus.Labels{"sink": "influxdb"}
	s := &Sink{
		cfg:      cfg,
		log:      o.Logger.With("sink", "influxdb"),
		enc:      newLineEncoder(cfg.Measurement),
		endpoint: endpoint.String(),
		auth:     auth,
		client:   &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()},
		kick:     make(chan struct{}, 1),
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
		zw:       gzip.NewWriter(io.Discard),
		points: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "fieldhub_export_points_total",
			Help:        "Points the export sink delivered, acknowledged by the server.",
			ConstLabels: labels,
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "fieldhub_export_dropped_total",
			Help:        "Points the export sink dropped, by reason: buffer_full, rejected (refused by the server or not writable), shutdown (not delivered before Close's deadline).",
			ConstLabels: labels,
		}, []string{"reason"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "fieldhub_export_retries_total",
			Help:        "Export requests that failed (network error, timeout, 5xx, 408 or 429) and were retried.",
			ConstLabels: labels,
		}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "fieldhub_export_buffered_points",
			Help:        "Points held by the export sink, the batch being sent included.",
			ConstLabels: labels,
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "fieldhub_export_last_success_timestamp_seconds",
			Help:        "Unix time of the export sink's last request the server acknowledged (0: none yet).",
			ConstLabels: labels,
		}),
		dropLogs: map[string]*logLimiter{},
	}
	for _, r := range []string{ReasonBufferFull, ReasonRejected, ReasonShutdown} {
		s.dropped.WithLabelValues(r)
		s.dropLogs[r] = &logLimiter{}
	}
	if err := promutil.Register(o.Registerer, []prometheus.Collector{s.points, s.dropped, s.retries, s.buffered, s.lastSuccess}); err != nil {
		return nil, fmt.Errorf("influxdb export: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.run(ctx)
	return s, nil
}

// Write hands m over for export. It never blocks: when the buffer cannot
// take all of m's points, or after Close, m is dropped and counted. m must
// not be changed afterwards (the hub's stored messages never are).
func (s *Sink) Write(m *payload.Message) {
	if m == nil || len(m.Points) == 0 {
		return
	}
	n := len(m.Points)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.drop(ReasonShutdown, n, "device", m.Device, "err", "written after Close")
		return
	}
	if s.held+n > s.cfg.BufferSize {
		held := s.held
		s.mu.Unlock()
		s.drop(ReasonBufferFull, n, "device", m.Device, "buffered", held, "buffer_size", s.cfg.BufferSize)
		return
	}
	s.queue = append(s.queue, m)
	s.queued += n
	s.held += n
	s.buffered.Set(float64(s.held))
	full := s.queued >= s.cfg.BatchSize
	s.mu.Unlock()
	if full {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// Close stops taking messages (later ones are dropped as shutdown), sends
// what is buffered until ctx ends, then stops the goroutine and counts
// what was not delivered as dropped. It returns an error saying how many
// points were not delivered, wrapping ctx's error, or nil. Calling it
// again returns the first result.
func (s *Sink) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.closing)
		select {
		case <-s.done:
		case <-ctx.Done():
			s.cancel()
			<-s.done
		}
		s.cancel()
		s.client.CloseIdleConnections()
		if s.shutdown > 0 {
			s.closeErr = fmt.Errorf("influxdb export: %d points not delivered before shutdown: %w", s.shutdown, ctx.Err())
			s.log.Warn("influxdb export closed with points not delivered", "points", s.shutdown, "err", ctx.Err())
		}
	})
	return s.closeErr
}

// run is the sink's goroutine: it sends full batches as soon as they are
// queued and everything queued every FlushInterval, and drains on Close.
func (s *Sink) run(ctx context.Context) {
	defer close(s.done)
	tick := time.NewTicker(s.cfg.FlushInterval)
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-s.closing:
			s.sendQueued(ctx, true)
			if ctx.Err() == nil {
				return
			}
		case <-s.kick:
			s.sendQueued(ctx, false)
		case <-tick.C:
			s.sendQueued(ctx, true)
		}
	}
	// Close's ctx ended: what is still queued will not be sent.
	s.mu.Lock()
	n := s.queued
	s.queue, s.head, s.queued = nil, 0, 0
	s.held -= n
	s.buffered.Set(float64(s.held))
	s.mu.Unlock()
	if n > 0 {
		s.shutdown += n
		s.drop(ReasonShutdown, n, "err", "not sent before Close's deadline")
	}
}

// span is points [from, to) of a message.
type span struct {
	m        *payload.Message
	from, to int
}

// sendQueued sends full batches, and with all the last partial one too,
// until the queue has none or ctx ends.
func (s *Sink) sendQueued(ctx context.Context, all bool) {
	var spans []span
	for ctx.Err() == nil {
		spans = s.take(spans[:0], all)
		if len(spans) == 0 {
			return
		}
		s.send(ctx, spans)
		clear(spans)
	}
}

// take appends to spans the next batch of at most BatchSize points, or
// nothing when the queue is empty, or holds less than a batch and not all.
func (s *Sink) take(spans []span, all bool) []span {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queued == 0 || !all && s.queued < s.cfg.BatchSize {
		return spans
	}
	want := min(s.queued, s.cfg.BatchSize)
	s.queued -= want
	for want > 0 {
		m := s.queue[0]
		k := min(len(m.Points)-s.head, want)
		spans = append(spans, span{m, s.head, s.head + k})
		want -= k
		if s.head += k; s.head == len(m.Points) {
			s.queue[0] = nil
			s.queue = s.queue[1:]
			s.head = 0
		}
	}
	if len(s.queue) == 0 {
		s.queue = s.queue[:0:0] // let the emptied array go
	}
	return spans
}

// release forgets n points of the batch sent.
func (s *Sink) release(n int) {
	s.mu.Lock()
	s.held -= n
	s.buffered.Set(float64(s.held))
	s.mu.Unlock()
}

// send encodes spans and posts them until the server acknowledges or
// refuses them or ctx ends, counting every point's fate.
func (s *Sink) send(ctx context.Context, spans []span) {
	body := s.body[:0]
	sent, total := 0, 0
	for _, sp := range spans {
		for i := sp.from; i < sp.to; i++ {
			total++
			var err error
			if body, err = s.enc.appendPoint(body, sp.m.Device, &sp.m.Points[i]); err != nil {
				s.drop(ReasonRejected, 1, "device", sp.m.Device, "err", err)
				continue
			}
			sent++
		}
	}
	s.body = body
	defer s.release(total)
	if sent == 0 {
		return
	}
	req, gz := s.compress(body)
	for attempt := 0; ; attempt++ {
		res := s.post(ctx, req, gz)
		switch {
		case res.status >= 200 && res.status < 300:
			s.points.Add(float64(sent))
			s.lastSuccess.SetToCurrentTime()
			return
		case !res.retry:
			rejected := refusedPoints(res.reason, sent)
			if rejected < sent {
				s.points.Add(float64(sent - rejected))
				s.lastSuccess.SetToCurrentTime()
			}
			s.drop(ReasonRejected, rejected, "status", res.status, "reason", res.reason, "batch", sent)
			return
		}
		if ctx.Err() != nil {
			s.shutdown += sent
			s.drop(ReasonShutdown, sent, "err", "not sent before Close's deadline")
			return
		}
		s.retries.Inc()
		wait := backoff(attempt, s.cfg.MaxBackoff)
		if res.retryAfter > wait {
			wait = min(res.retryAfter, maxRetryAfter)
		}
		if ok, suppressed := s.retryLogs.allow(); ok {
			s.log.Warn("influxdb export failed, retrying", "status", res.status, "reason", res.reason,
				"err", res.err, "attempt", attempt+1, "wait", wait, "points", sent, "suppressed", suppressed)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

// compress returns body gzipped when it is large enough to be worth it.
func (s *Sink) compress(body []byte) ([]byte, bool) {
	if len(body) < gzipMin {
		return body, false
	}
	s.zbuf.Reset()
	s.zw.Reset(&s.zbuf)
	s.zw.Write(body) // writes to a bytes.Buffer do not fail
	s.zw.Close()
	return s.zbuf.Bytes(), true
}

// result is the outcome of one request.
type result struct {
	status     int // 0 on a network error
	err        error
	reason     string // the server's error body, clipped
	retry      bool
	retryAfter time.Duration
}

// post sends one write request.
func (s *Sink) post(ctx context.Context, body []byte, gz bool) result {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint, bytes.NewReader(body))
	if err != nil {
		return result{err: err, retry: true}
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	if gz {
		req.Header.Set("Content-Encoding", "gzip")
	}
	if s.auth != "" {
		req.Header.Set("Authorization", s.auth)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return result{err: err, retry: true}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxReason))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // let the connection be reused
	r := result{status: resp.StatusCode, reason: strings.TrimSpace(string(b))}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
	case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode >= 500:
		r.retry = true
		r.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return r
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, int64(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// backoff returns the wait before attempt+1: exponential from 100 ms (or
// max when smaller), capped at max, with jitter over its upper half.
func backoff(attempt int, max time.Duration) time.Duration {
	d := min(100*time.Millisecond, max)
	for range min(attempt, 32) {
		if d *= 2; d >= max {
			d = max
			break
		}
	}
	return d/2 + rand.N(d/2+1)
}

var droppedRE = regexp.MustCompile(`dropped=(\d+)`)

// refusedPoints returns how many of the sent points a refusal with this
// error body lost. InfluxDB writes the valid points of a batch and says
// "partial write: … dropped=N", not counting lines it could not parse,
// which it names one "unable to parse" each; any other refusal loses the
// whole batch.
func refusedPoints(reason string, sent int) int {
	if !strings.Contains(reason, "partial write") {
		return sent
	}
	n := strings.Count(reason, "unable to parse")
	if m := droppedRE.FindAllStringSubmatch(reason, -1); len(m) > 0 {
		d, err := strconv.Atoi(m[len(m)-1][1])
		if err != nil {
			return sent
		}
		n += d
	}
	if n == 0 { // says partial, counts nothing: trust neither
		return sent
	}
	return min(n, sent)
}

// drop counts n dropped points and logs it, at most once per logEvery
// per reason.
func (s *Sink) drop(reason string, n int, attrs ...any) {
	if n <= 0 {
		return
	}
	s.dropped.WithLabelValues(reason).Add(float64(n))
	if ok, suppressed := s.dropLogs[reason].allow(); ok {
		s.log.Warn("influxdb export dropped points", append([]any{"reason", reason, "points", n, "suppressed", suppressed}, attrs...)...)
	}
}

// logLimiter allows one event per logEvery and counts the others.
type logLimiter struct {
	mu         sync.Mutex
	next       time.Time
	suppressed int
}

// allow reports whether to log now and how many events were not logged
// since the last one that was.
func (l *logLimiter) allow() (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Before(l.next) {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.suppressed = 0
	l.next = now.Add(logEvery)
	return true, n
}
