package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/payload"
)

// Telemetry is the PostgreSQL telemetry store (store.Telemetry and
// store.AsyncAppender), made for several hubs writing one database.
//
// # Write path
//
// Append and AppendAsync queue messages for one committer goroutine. It
// waits up to MaxDelay after the oldest queued message for more (or until
// MaxBatch points are queued) and writes them in one transaction on a
// connection it keeps for itself:
//
//  1. shared advisory locks on the batch's devices, hashed into 128 keys
//     (DeleteDevice takes its device's exclusively, so a deletion never
//     interleaves with a batch); the series (id and kind) of those
//     devices and the ids of those with seqs (telemetry_devices). They
//     are read in every batch, not cached: another hub's DeleteDevice
//     removes them, and a series made again gets a new id. Missing device
//     ids are created (if another hub created one meanwhile, the batch is
//     retried);
//  2. every (device id, seq) of the batch is inserted into telemetry_seqs
//     in sorted order: the keys that were not there are new, the others are
//     duplicates — also when another hub inserts the same key at the same
//     time, since the insert waits for that hub's transaction and sees its
//     outcome. A plain COPY under a savepoint is tried first; when it hits
//     a stored key it is rolled back and INSERT … ON CONFLICT DO NOTHING
//     RETURNING tells the new keys (see claimSeqs);
//  3. in queue order, each message is decided: duplicate, refused (a
//     point's kind differs from its series' kind) or accepted. The keys of
//     refused messages are deleted again, new series are inserted and
//     their ids returned (if another hub created one meanwhile, the batch
//     is retried);
//  4. the accepted points (last write wins within the batch), sorted by
//     (series id, ts), are
//     COPYed straight into telemetry_points under a savepoint; when one
//     hits a stored point, that is rolled back and they are COPYed into a
//     temporary staging table and moved with one INSERT … SELECT … ON
//     CONFLICT (series, ts) DO UPDATE (see writePoints).
//
// After the commit every caller is completed, in queue order. Deadlocks
// and serialization failures retry the whole batch; connection failures
// retry a few times, then fail the batch and set Err until a batch
// succeeds. Another server error fails only the message that causes it:
// the batch is written again one message at a time.
//
// # Partitions and retention
//
// telemetry_points is partitioned by UTC day of ts (telemetry_points_
// YYYYMMDD), created before a batch needs them. With Retention set, a
// background loop drops the partitions whose whole day is older than
// now-Retention and deletes the dedup keys received before it; points
// older than now-Retention are neither written nor returned.
type Telemetry struct {
	db  *DB
	o   TelemetryOptions
	log *slog.Logger
	m   *telMetrics

	mu      sync.Mutex
	space   *sync.Cond // signalled when the queue shrinks or on close
	queue   []*telEntry
	qpoints int       // points in queue
	firstAt time.Time // when queue[0] was queued
	closed  bool
	kick    chan struct{}

	failErr atomic.Pointer[error]

	pmu   sync.Mutex
	parts map[int64]bool // days whose partition exists

	// Owned by the committer goroutine.
	conn          *pgxpool.Conn
	stageOK       bool
	upsertLeft    int // batches to upsert points without trying a direct COPY first
	seqInsertLeft int // same for seqs

	cancel    context.CancelFunc // stops the maintenance loop
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// TelemetryOptions configure Telemetry. The zero value works.
type TelemetryOptions struct {
	// Retention drops points older than now-Retention (whole daily
	// partitions) and the dedup keys received before it; 0 keeps
	// everything.
	Retention time.Duration
	// MaintenanceInterval is how often partitions for today and tomorrow
	// are made and retention applied (default 1 hour; negative: never in
	// the background, call ApplyRetention).
	MaintenanceInterval time.Duration
	// MaxBatch bounds the points written by one transaction (default
	// 20,000). A message is never split.
	MaxBatch int
	// MaxDelay is how long the committer waits for more messages after
	// the oldest queued one before writing (default 2ms; negative: no
	// wait, write what is queued).
	MaxDelay time.Duration
	// MaxPending bounds the queued messages; Append and AppendAsync block
	// while it is reached (default 65,536).
	MaxPending int
	// WriteTimeout bounds one attempt at writing a batch (default 30s).
	WriteTimeout time.Duration
	// Registerer receives the store's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger receives the store's logs; default the DB's logger.
	Logger *slog.Logger
	// Now is the clock of retention (default time.Now).
	Now func() time.Time
}

// Default TelemetryOptions.
const (
	DefaultMaintenanceInterval = time.Hour
	DefaultMaxBatch            = 20000
	DefaultMaxDelay            = 2 * time.Millisecond
	DefaultMaxPending          = 65536
	DefaultWriteTimeout        = 30 * time.Second
)

func (o TelemetryOptions) withDefaults(db *DB) TelemetryOptions {
	if o.MaintenanceInterval == 0 {
		o.MaintenanceInterval = DefaultMaintenanceInterval
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.MaxDelay == 0 {
		o.MaxDelay = DefaultMaxDelay
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.Logger == nil {
		o.Logger = db.log
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Errors of the telemetry store besides those of package store.
var (
	// ErrInvalid: a message the store cannot take (no device, an empty
	// metric, an unknown kind, a name that is not UTF-8 or holds NUL).
	ErrInvalid = errors.New("postgres: invalid telemetry message")
	// ErrWriteFailed is wrapped by the errors of batches that could not be
	// written (the database is unreachable or refused the transaction).
	ErrWriteFailed = errors.New("postgres: telemetry write failed")
)

var (
	_ store.Telemetry     = (*Telemetry)(nil)
	_ store.AsyncAppender = (*Telemetry)(nil)
)

// telEntry is one queued message and its outcome.
type telEntry struct {
	m       *payload.Message
	done    func(bool, error)
	w       chan telResult // Append's; buffered
	decided bool           // refused at submission: dup and err are final
	dup     bool
	err     error
}

type telResult struct {
	dup bool
	err error
}

// Telemetry returns the telemetry store of db. It starts the committer and
// the maintenance loop; Close stops them (and leaves db open). ctx bounds
// the setup: a connection for the committer and today's partitions.
func (db *DB) Telemetry(ctx context.Context, o TelemetryOptions) (*Telemetry, error) {
	o = o.withDefaults(db)
	if n := db.pool.Config().MaxConns; n < 2 {
		return nil, fmt.Errorf("postgres: telemetry needs a pool of at least 2 connections (MaxConns is %d)", n)
	}
	t := &Telemetry{
		db:    db,
		o:     o,
		log:   o.Logger.With("component", "telemetry"),
		kick:  make(chan struct{}, 1),
		parts: map[int64]bool{},
	}
	t.space = sync.NewCond(&t.mu)
	t.m = newTelMetrics(t)
	if err := t.m.register(o.Registerer); err != nil {
		return nil, err
	}
	if err := t.ensureConn(ctx); err != nil {
		t.m.unregister(o.Registerer)
		return nil, fmt.Errorf("postgres: telemetry: %w", err)
	}
	now := o.Now().UnixNano()
	if err := t.ensurePartitions(ctx, []int64{dayOf(now), dayOf(now) + 1}); err != nil {
		t.conn.Release()
		t.m.unregister(o.Registerer)
		return nil, err
	}
	mctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	t.wg.Add(1)
	go t.commitLoop()
	if o.MaintenanceInterval > 0 {
		t.wg.Add(1)
		go t.maintenanceLoop(mctx)
	}
	return t, nil
}

// Err returns nil while writes succeed, or the error of the latest batch
// that could not be written for a reason other than its messages (the
// database unreachable, a server failure); it is cleared by the next
// batch written. Use it for readiness.
func (t *Telemetry) Err() error {
	if p := t.failErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (t *Telemetry) setFailed(err error) {
	if err == nil {
		if t.failErr.Swap(nil) != nil {
			t.m.failed.Set(0)
			t.log.Info("telemetry writes recovered")
		}
		return
	}
	if t.failErr.Swap(&err) == nil {
		t.m.failed.Set(1)
		t.log.Error("telemetry writes failing", "err", err)
	}
}

// Close writes what is queued, stops the background goroutines and
// returns; appends after Close fail with store.ErrClosed. It does not
// close the DB. Calling it again does nothing.
func (t *Telemetry) Close() error {
	t.closeOnce.Do(func() {
		t.mu.Lock()
		t.closed = true
		t.space.Broadcast()
		t.mu.Unlock()
		t.wake()
		t.cancel()
		t.wg.Wait()
		if t.conn != nil {
			t.conn.Release()
			t.conn = nil
		}
		t.m.unregister(t.o.Registerer)
	})
	return nil
}

func (t *Telemetry) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

func (t *Telemetry) wake() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// Append stores m (see store.Appender) and returns once its batch is
// committed. When ctx ends first it returns ctx's error and m may or may
// not be stored (appending it again is safe when it has a seq). m must
// not be modified until Append returns.
func (t *Telemetry) Append(ctx context.Context, m *payload.Message) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	e := &telEntry{m: m, w: make(chan telResult, 1)}
	if err := t.submit(e); err != nil {
		return false, err
	}
	select {
	case r := <-e.w:
		return r.dup, r.err
	case <-ctx.Done():
		return false, fmt.Errorf("postgres: append: %w (the message may still be stored)", ctx.Err())
	}
}

// AppendAsync queues m and calls done once m is committed, a duplicate, or
// refused (see store.AsyncAppender). done runs on the committer goroutine,
// in queue order, and must not block or call back into the store. m must
// not be modified until done is called. AppendAsync blocks while
// MaxPending messages are queued. After Close, done is called with
// store.ErrClosed from a new goroutine.
func (t *Telemetry) AppendAsync(m *payload.Message, done func(duplicate bool, err error)) {
	if done == nil {
		done = func(bool, error) {}
	}
	if err := t.submit(&telEntry{m: m, done: done}); err != nil {
		go done(false, err)
	}
}

// submit queues e, waiting for space. It fails only when closed.
func (t *Telemetry) submit(e *telEntry) error {
	if err := validateMessage(e.m); err != nil {
		e.decided, e.err = true, err
	} else if len(e.m.Points) == 0 && !e.m.HasSeq {
		e.decided = true // nothing to store
	}
	t.mu.Lock()
	for len(t.queue) >= t.o.MaxPending && !t.closed {
		t.space.Wait()
	}
	if t.closed {
		t.mu.Unlock()
		return fmt.Errorf("postgres: append: %w", store.ErrClosed)
	}
	if len(t.queue) == 0 {
		t.firstAt = time.Now()
	}
	t.queue = append(t.queue, e)
	before := t.qpoints
	if e.m != nil {
		t.qpoints += len(e.m.Points)
	}
	kick := len(t.queue) == 1 || (before < t.o.MaxBatch && t.qpoints >= t.o.MaxBatch)
	t.mu.Unlock()
	if kick {
		t.wake()
	}
	return nil
}

// commitLoop is the committer: it writes batches until closed and drained.
func (t *Telemetry) commitLoop() {
	defer t.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		batch, ok := t.nextBatch(timer)
		if !ok {
			return
		}
		t.commit(batch)
	}
}

// nextBatch waits for queued messages, then for up to MaxDelay after the
// oldest for more, and takes at most MaxBatch points (at least one
// message). It reports false when closed with nothing queued.
func (t *Telemetry) nextBatch(timer *time.Timer) ([]*telEntry, bool) {
	t.mu.Lock()
	for len(t.queue) == 0 {
		if t.closed {
			t.mu.Unlock()
			return nil, false
		}
		t.mu.Unlock()
		<-t.kick
		t.mu.Lock()
	}
	for t.o.MaxDelay > 0 && !t.closed && t.qpoints < t.o.MaxBatch {
		wait := t.o.MaxDelay - time.Since(t.firstAt)
		if wait <= 0 {
			break
		}
		t.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-t.kick:
			timer.Stop()
		}
		t.mu.Lock()
	}
	n, points := 0, 0
	for n < len(t.queue) {
		var k int
		if m := t.queue[n].m; m != nil {
			k = len(m.Points)
		}
		if n > 0 && points+k > t.o.MaxBatch {
			break
		}
		points += k
		n++
	}
	batch := make([]*telEntry, n)
	copy(batch, t.queue)
	rest := copy(t.queue, t.queue[n:])
	clear(t.queue[rest:])
	t.queue = t.queue[:rest]
	t.qpoints -= points
	if rest > 0 {
		t.firstAt = time.Now()
	}
	t.space.Broadcast()
	t.mu.Unlock()
	return batch, true
}

// commit writes batch and completes its entries in order.
func (t *Telemetry) commit(batch []*telEntry) {
	t.write(batch)
	for _, e := range batch {
		if e.w != nil {
			e.w <- telResult{e.dup, e.err}
		} else if e.done != nil {
			e.done(e.dup, e.err)
		}
	}
}

// validateMessage checks what PostgreSQL would refuse (and would fail the
// whole batch with).
func validateMessage(m *payload.Message) error {
	if m == nil || m.Device == "" {
		return fmt.Errorf("%w: no device", ErrInvalid)
	}
	if !validName(m.Device) {
		return fmt.Errorf("%w: device id is not UTF-8 or holds NUL", ErrInvalid)
	}
	for i := range m.Points {
		p := &m.Points[i]
		if p.Metric == "" {
			return fmt.Errorf("%w: empty metric name", ErrInvalid)
		}
		if !validName(p.Metric) {
			return fmt.Errorf("%w: metric name is not UTF-8 or holds NUL", ErrInvalid)
		}
		if p.Value.Kind > payload.String {
			return fmt.Errorf("%w: metric %q: unknown value kind %d", ErrInvalid, p.Metric, p.Value.Kind)
		}
	}
	return nil
}
