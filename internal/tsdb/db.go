package tsdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/payload"
)

// Errors returned by the store besides those of package store.
var (
	// ErrFailed: a WAL write or sync failed. The store is fail-stop: that
	// append and every later one return an error wrapping ErrFailed, since
	// nothing can be acknowledged as durable any more. Reopen to recover.
	ErrFailed = errors.New("tsdb: store failed")
	// ErrInvalid: a message the store cannot take (no device, empty metric,
	// unknown value kind, too large).
	ErrInvalid = errors.New("tsdb: invalid message")
	// ErrInvalidQuery: a malformed query or cursor.
	ErrInvalidQuery = fmt.Errorf("tsdb: %w", store.ErrInvalidQuery)
)

// Defaults of Options.
const (
	DefaultSegmentSize        = 64 << 20
	DefaultCheckpointInterval = time.Minute
	DefaultCheckpointWALBytes = 64 << 20
	DefaultCompactInterval    = 5 * time.Minute
	DefaultMaxPending         = 1 << 16
	DefaultMaxChunkPoints     = 100_000
	maxDedupWindow            = 1 << 16
	// closeCheckpointTimeout bounds the checkpoint Close makes; the WAL
	// keeps whatever it does not finish.
	closeCheckpointTimeout = 30 * time.Second
)

// Options configure a DB. The zero value works: every zero field means the
// documented default.
type Options struct {
	// Logger receives the store's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the store's metrics (fieldhub_tsdb_*,
	// fieldhub_dedup_*); nil registers nothing.
	Registerer prometheus.Registerer
	// SegmentSize is the size at which a new WAL segment is started
	// (default 64 MiB).
	SegmentSize int64
	// CheckpointInterval is how often the in-memory head is written to
	// chunks (default 1 minute; negative: only when the WAL grows past
	// CheckpointWALBytes, and at Close).
	CheckpointInterval time.Duration
	// CheckpointWALBytes triggers a checkpoint when this much WAL was
	// written since the last one (default 64 MiB).
	CheckpointWALBytes int64
	// CompactInterval is how often small chunks of closed hours and days
	// are merged and retention applied (default 5 minutes; negative
	// disables the background loop: call Compact yourself).
	CompactInterval time.Duration
	// Retention deletes points older than now-Retention (0 keeps them
	// forever). Applied by the compaction loop and by Compact.
	Retention time.Duration
	// DedupWindow is the number of sequence numbers per device remembered
	// below the highest (default 1024, rounded up to a multiple of 64, at
	// most 65536). It costs DedupWindow/4 bytes of memory per device.
	DedupWindow int
	// MaxPending bounds the messages queued for the committer; appends
	// block when it is reached (default 65536).
	MaxPending int
	// MaxChunkPoints bounds the points of one chunk (default 100,000).
	MaxChunkPoints int
	// SalvageCorruptWAL makes Open skip damaged regions in the middle of
	// the WAL (losing the records in them) instead of refusing to open.
	// Damage is always logged at error level and counted; the damaged
	// segments are kept in dir/wal/corrupt/ for inspection.
	SalvageCorruptWAL bool
	// Now is the clock for retention and compaction (default time.Now).
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.SegmentSize <= 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.CheckpointInterval == 0 {
		o.CheckpointInterval = DefaultCheckpointInterval
	}
	if o.CheckpointWALBytes <= 0 {
		o.CheckpointWALBytes = DefaultCheckpointWALBytes
	}
	if o.CompactInterval == 0 {
		o.CompactInterval = DefaultCompactInterval
	}
	if o.DedupWindow <= 0 {
		o.DedupWindow = DefaultDedupWindow
	}
	o.DedupWindow = min(o.DedupWindow, maxDedupWindow)
	o.DedupWindow = windowWords(o.DedupWindow) * 64
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.MaxChunkPoints <= 0 {
		o.MaxChunkPoints = DefaultMaxChunkPoints
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// device is the in-memory state of one device.
type device struct {
	name string

	mu      sync.Mutex // guards series (map), admit and deleted
	series  map[string]*series
	admit   window // state at admission: decides duplicates
	deleted bool

	// Updated by the committer (under DB.applyMu) as records become
	// durable, so that a checkpoint stores exactly the state of the
	// records it covers.
	durable    window
	dedupDirty bool
}

func newDevice(name string, dedupWindow int) *device {
	return &device{
		name:    name,
		series:  make(map[string]*series),
		admit:   newWindow(dedupWindow),
		durable: newWindow(dedupWindow),
	}
}

// series is one (device, metric).
type series struct {
	id     int64
	device string
	metric string
	kind   payload.ValueKind

	applied   bool // a point reached the WAL (under applyMu)
	persisted bool // its row is in SQLite (under ckMu)

	mu       sync.Mutex
	head     cols    // durable points not yet cut, in arrival order
	unsorted bool    // head is not sorted/unique
	frozen   []*cols // cut but not yet committed to SQLite; immutable
	hasLast  bool
	lastTS   int64
	lastVal  payload.Value
	dirty    bool // latest changed since the last checkpoint
}

// add appends a durable point to the head. s.mu must be held.
func (s *series) add(ts int64, v payload.Value) {
	if s.kind == payload.Bool && v.Num != 0 {
		v.Num = 1
	}
	v.Kind = s.kind
	if n := len(s.head.ts); n > 0 && ts <= s.head.ts[n-1] {
		s.unsorted = true
	}
	s.head.appendPoint(s.kind, ts, v)
	if !s.hasLast || ts >= s.lastTS {
		s.hasLast, s.lastTS, s.lastVal = true, ts, v
	}
	s.dirty = true
}

// normalizeHead sorts the head. s.mu must be held.
func (s *series) normalizeHead() {
	if s.unsorted {
		s.head.normalize()
		s.unsorted = false
	}
}

// deletion is a device deletion whose SQLite rows are removed by the next
// checkpoint.
type deletion struct {
	device string
	ids    []int64
}

// DB is the embedded telemetry store. It implements store.Telemetry and
// store.AsyncAppender. All methods are safe for concurrent use.
type DB struct {
	dir  string
	opts Options
	log  *slog.Logger
	m    *metrics
	lock *os.File

	wdb *sql.DB // one writer connection (checkpoint, compaction, retention)
	rdb *sql.DB // readers

	devMu   sync.RWMutex
	devices map[string]*device

	nextSeriesID atomic.Int64
	seriesCount  atomic.Int64
	chunks       atomic.Int64
	headPoints   atomic.Int64
	walBytes     atomic.Int64
	walSegments  atomic.Int64
	lastCkpt     atomic.Int64 // unix ns of the last successful checkpoint

	q        queue
	inflight atomic.Int64
	waiting  atomic.Int32 // appenders blocked on MaxPending

	// applyMu is held by the committer while it writes and applies a batch
	// and by a checkpoint while it cuts the head.
	applyMu        sync.Mutex
	wal            *walWriter
	wbuf           []byte
	walSinceCkpt   int64
	pendingDeletes []deletion
	ckptFull       bool // the last checkpoint failed: rewrite every row
	spare          []entry
	spareSlab      []*series

	// ckMu serializes writers of SQLite.
	ckMu sync.Mutex
	shut bool // files closed (under ckMu)

	failErr atomic.Pointer[error]
	closed  atomic.Bool // Close has begun

	ckptKick    chan struct{}
	stopMaint   context.CancelFunc
	wg          sync.WaitGroup
	closeOnce   sync.Once
	closeErr    error
	corruptSegs []uint64 // segments salvaged at open
}

// Stats are cheap counters for the hub's status pages.
type Stats struct {
	Devices        int
	Series         int64
	Chunks         int64     // rows in SQLite
	HeadPoints     int64     // points in memory not yet checkpointed
	WALBytes       int64     // on disk
	WALSegments    int64     // on disk
	Pending        int64     // messages queued for the committer
	LastCheckpoint time.Time // zero before the first
	Err            error     // non-nil once fail-stop
}

// Stats returns the current counters.
func (db *DB) Stats() Stats {
	db.devMu.RLock()
	n := len(db.devices)
	db.devMu.RUnlock()
	st := Stats{
		Devices:     n,
		Series:      db.seriesCount.Load(),
		Chunks:      db.chunks.Load(),
		HeadPoints:  db.headPoints.Load(),
		WALBytes:    db.walBytes.Load(),
		WALSegments: db.walSegments.Load(),
		Pending:     db.inflight.Load(),
		Err:         db.Err(),
	}
	if ns := db.lastCkpt.Load(); ns != 0 {
		st.LastCheckpoint = time.Unix(0, ns)
	}
	return st
}

// Err returns nil while the store accepts writes, or the error that made
// it fail-stop (wrapping ErrFailed). Use it for health checks.
func (db *DB) Err() error {
	if p := db.failErr.Load(); p != nil {
		return *p
	}
	return nil
}

// fail makes the store fail-stop with cause.
func (db *DB) fail(cause error) error {
	err := fmt.Errorf("%w: %w", ErrFailed, cause)
	if db.failErr.CompareAndSwap(nil, &err) {
		db.m.failed.Set(1)
		db.log.Error("telemetry store failed; refusing writes until reopened", "err", cause)
		return err
	}
	return db.Err()
}

// Open opens (creating if needed) the store in dir, replays its WAL and
// starts its committer and maintenance goroutines. Close releases it.
func Open(dir string, opts Options) (*DB, error) {
	opts = opts.withDefaults()
	walDir := filepath.Join(dir, walDirName)
	if err := os.MkdirAll(walDir, 0o755); err != nil {
		return nil, fmt.Errorf("tsdb: creating %s: %w", walDir, err)
	}
	lock, err := lockDir(filepath.Join(dir, "LOCK"))
	if err != nil {
		return nil, fmt.Errorf("tsdb: locking %s (is another process using it?): %w", dir, err)
	}
	db := &DB{
		dir:      dir,
		opts:     opts,
		log:      opts.Logger.With("component", "tsdb"),
		lock:     lock,
		devices:  make(map[string]*device),
		ckptKick: make(chan struct{}, 1),
	}
	db.q.init()
	db.m = newMetrics(db)
	ok := false
	defer func() {
		if !ok {
			if db.wal != nil {
				db.wal.close()
			}
			if db.wdb != nil {
				db.wdb.Close()
			}
			if db.rdb != nil {
				db.rdb.Close()
			}
			lock.Close()
		}
	}()
	ctx := context.Background()
	if err := db.openSQL(ctx); err != nil {
		return nil, err
	}
	walStart, err := db.load(ctx)
	if err != nil {
		return nil, err
	}
	next, err := db.replay(walDir, walStart)
	if err != nil {
		return nil, err
	}
	db.wal = &walWriter{dir: walDir, segSize: opts.SegmentSize, sizes: db.walSizes(walDir, walStart)}
	if err := db.wal.create(next); err != nil {
		return nil, err
	}
	db.updateWALStats()
	if err := db.m.register(opts.Registerer); err != nil {
		return nil, err
	}
	if len(db.corruptSegs) > 0 {
		// Move the salvaged records out of the damaged segments now, so
		// that the next open does not trip over the same damage.
		if err := db.quarantine(walDir); err != nil {
			db.m.unregister(opts.Registerer)
			return nil, err
		}
		if err := db.checkpoint(ctx); err != nil {
			db.m.unregister(opts.Registerer)
			return nil, err
		}
	}
	mctx, cancel := context.WithCancel(context.Background())
	db.stopMaint = cancel
	db.wg.Add(2)
	go db.commitLoop()
	go db.maintain(mctx)
	ok = true
	return db, nil
}

// walSizes lists the sizes of the segments kept after replay.
func (db *DB) walSizes(walDir string, from uint64) map[uint64]int64 {
	sizes := make(map[uint64]int64)
	segs, _ := listSegments(walDir)
	for _, idx := range segs {
		if idx < from {
			continue
		}
		if fi, err := os.Stat(filepath.Join(walDir, segName(idx))); err == nil {
			sizes[idx] = fi.Size()
		}
	}
	return sizes
}

// updateWALStats refreshes the WAL gauges; the caller holds applyMu (or
// owns the writer exclusively).
func (db *DB) updateWALStats() {
	n, segs := db.wal.bytes()
	db.walBytes.Store(n)
	db.walSegments.Store(int64(segs))
}

// Close drains queued appends, stops the background work, writes a final
// checkpoint (bounded to 30 s; the WAL keeps anything it does not finish)
// and releases the files. It is safe to call more than once; later calls
// return the first call's result. Appends after Close fail with
// store.ErrClosed.
func (db *DB) Close() error {
	db.closeOnce.Do(func() { db.closeErr = db.close(true) })
	return db.closeErr
}

// isClosed reports whether Close has begun.
func (db *DB) isClosed() bool { return db.closed.Load() }

// close shuts down; without checkpoint it leaves the head to the WAL, as
// a crash would (tests use it).
func (db *DB) close(checkpoint bool) error {
	db.closed.Store(true)
	db.stopMaint()
	db.q.mu.Lock()
	db.q.closed = true
	db.q.space.Broadcast()
	db.q.mu.Unlock()
	db.q.wake()
	db.wg.Wait()

	var errs []error
	if checkpoint && db.Err() == nil {
		ctx, cancel := context.WithTimeout(context.Background(), closeCheckpointTimeout)
		if err := db.checkpoint(ctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	db.ckMu.Lock()
	db.shut = true
	db.ckMu.Unlock()
	db.applyMu.Lock()
	if err := db.wal.close(); err != nil {
		errs = append(errs, fmt.Errorf("tsdb: closing wal: %w", err))
	}
	db.applyMu.Unlock()
	if err := db.rdb.Close(); err != nil {
		errs = append(errs, fmt.Errorf("tsdb: closing sqlite: %w", err))
	}
	if err := db.wdb.Close(); err != nil {
		errs = append(errs, fmt.Errorf("tsdb: closing sqlite: %w", err))
	}
	db.m.unregister(db.opts.Registerer)
	if err := db.lock.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// lookupDevice returns the device or nil.
func (db *DB) lookupDevice(name string) *device {
	db.devMu.RLock()
	d := db.devices[name]
	db.devMu.RUnlock()
	return d
}

// getDevice returns the device, creating it.
func (db *DB) getDevice(name string) *device {
	if d := db.lookupDevice(name); d != nil {
		return d
	}
	db.devMu.Lock()
	d := db.devices[name]
	if d == nil {
		d = newDevice(name, db.opts.DedupWindow)
		db.devices[name] = d
	}
	db.devMu.Unlock()
	return d
}

// newSeries creates a series of d; d.mu must be held (or replay).
func (db *DB) newSeries(d *device, metric string, kind payload.ValueKind) *series {
	s := &series{id: db.nextSeriesID.Add(1), device: d.name, metric: metric, kind: kind}
	d.series[metric] = s
	db.seriesCount.Add(1)
	return s
}

func validate(m *payload.Message) error {
	if m == nil || m.Device == "" {
		return fmt.Errorf("%w: no device", ErrInvalid)
	}
	for i := range m.Points {
		p := &m.Points[i]
		if p.Metric == "" {
			return fmt.Errorf("%w: empty metric name", ErrInvalid)
		}
		if p.Value.Kind > payload.String {
			return fmt.Errorf("%w: metric %q: unknown value kind %d", ErrInvalid, p.Metric, p.Value.Kind)
		}
	}
	if n := messageRecordSize(m); n > maxRecordSize {
		return fmt.Errorf("%w: %d bytes encoded, at most %d", ErrInvalid, n, maxRecordSize)
	}
	return nil
}

// Append stores m durably (see store.Appender). It returns once m is in a
// synced WAL commit, shared with concurrent appends. When ctx ends first
// Append returns ctx's error, and m may or may not be stored (appending it
// again is safe when it has a seq). m must not be modified until Append
// returns.
func (db *DB) Append(ctx context.Context, m *payload.Message) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	w := waiterPool.Get().(*waiter)
	if err := db.submit(m, nil, w); err != nil {
		waiterPool.Put(w)
		return false, err
	}
	select {
	case r := <-w.ch:
		waiterPool.Put(w)
		return r.dup, r.err
	case <-ctx.Done():
		// The committer still completes w; it is not reused.
		return false, fmt.Errorf("tsdb: append: %w (the message may still be stored)", ctx.Err())
	}
}

// AppendAsync queues m and calls done once m is durable, a duplicate, or
// refused (see store.AsyncAppender). done runs on the committer goroutine,
// in queue order, and must not block or call back into the store's write
// methods. m must not be modified until done is called. AppendAsync
// blocks while MaxPending messages are queued. After Close, done is called
// with store.ErrClosed from a new goroutine.
func (db *DB) AppendAsync(m *payload.Message, done func(duplicate bool, err error)) {
	if done == nil {
		done = func(bool, error) {}
	}
	if err := db.submit(m, done, nil); err != nil {
		go done(false, err)
	}
}

// submit admits m into the commit queue. It fails only when the store is
// closed; every other outcome is delivered through done or w, in order.
func (db *DB) submit(m *payload.Message, done func(bool, error), w *waiter) error {
	if err := db.reserve(); err != nil {
		return err
	}
	e := entry{m: m, done: done, w: w}
	if err := validate(m); err != nil {
		e.kind, e.err = entDone, err
		return db.push(&e, nil)
	}
	if len(m.Points) == 0 && !m.HasSeq {
		e.kind = entDone // nothing to store
		return db.push(&e, nil)
	}
	for {
		d := db.getDevice(m.Device)
		d.mu.Lock()
		if d.deleted {
			d.mu.Unlock()
			continue
		}
		err := db.admitLocked(d, &e)
		d.mu.Unlock()
		return err
	}
}

// admitLocked decides m's fate and queues it; d.mu is held, which makes
// the duplicate check, the type check and the queueing atomic per device.
func (db *DB) admitLocked(d *device, e *entry) error {
	m := e.m
	if m.HasSeq && d.admit.seen(m.Seq) {
		db.m.duplicates.Inc()
		e.kind, e.dup = entDone, true
		return db.push(e, nil)
	}
	var buf [16]*series
	ser := buf[:0]
	for i := range m.Points {
		p := &m.Points[i]
		s := d.series[p.Metric]
		if s != nil {
			if s.kind != p.Value.Kind {
				return db.refuseType(e, p.Metric, s.kind, p.Value.Kind)
			}
		} else {
			for j := range i {
				q := &m.Points[j]
				if q.Metric == p.Metric && q.Value.Kind != p.Value.Kind {
					return db.refuseType(e, p.Metric, q.Value.Kind, p.Value.Kind)
				}
			}
		}
		ser = append(ser, s)
	}
	for i, s := range ser {
		if s == nil {
			p := &m.Points[i]
			if s = d.series[p.Metric]; s == nil {
				s = db.newSeries(d, p.Metric, p.Value.Kind)
			}
			ser[i] = s
		}
	}
	if m.HasSeq && d.admit.accept(m.Seq) {
		db.m.windowResets.Inc()
		db.log.Info("device sequence restarted below the dedup window", "device", d.name, "seq", m.Seq)
	}
	e.kind, e.dev = entMessage, d
	return db.push(e, ser)
}

func (db *DB) refuseType(e *entry, metric string, have, got payload.ValueKind) error {
	db.m.typeMismatches.Inc()
	e.kind = entDone
	e.err = fmt.Errorf("tsdb: metric %q of device %q is a %s, got a %s: %w",
		metric, e.m.Device, have, got, store.ErrTypeMismatch)
	return db.push(e, nil)
}

// DeleteDevice removes every point, series and the dedup state of device.
// It writes a tombstone to the WAL first, so the deletion survives a crash;
// the SQLite rows go at the next checkpoint, and are invisible before.
// Appends after DeleteDevice start a new, empty device.
func (db *DB) DeleteDevice(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := db.reserve(); err != nil {
		return err
	}
	w := waiterPool.Get().(*waiter)
	e := entry{kind: entDelete, w: w}
	db.devMu.Lock()
	d := db.devices[name]
	if d == nil {
		db.devMu.Unlock()
		db.release(1)
		waiterPool.Put(w)
		return nil
	}
	delete(db.devices, name)
	d.mu.Lock()
	d.deleted = true
	e.dev = d
	for _, s := range d.series {
		e.delIDs = append(e.delIDs, s.id)
	}
	db.seriesCount.Add(-int64(len(d.series)))
	d.mu.Unlock()
	err := db.push(&e, nil)
	db.devMu.Unlock()
	if err != nil {
		return err
	}
	select {
	case r := <-w.ch:
		waiterPool.Put(w)
		return r.err
	case <-ctx.Done():
		return fmt.Errorf("tsdb: delete device: %w (the deletion may still happen)", ctx.Err())
	}
}
