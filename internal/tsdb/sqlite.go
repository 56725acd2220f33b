package tsdb

import (
	"compress/flate"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // the SQLite driver

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/payload"
)

// formatVersion is stored in meta and checked at open.
const formatVersion = 1

const schema = `
CREATE TABLE IF NOT EXISTS meta(
	key   TEXT PRIMARY KEY,
	value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series(
	id        INTEGER PRIMARY KEY,
	device    TEXT NOT NULL,
	metric    TEXT NOT NULL,
	kind      INTEGER NOT NULL,
	last_ts   INTEGER,
	last_bits INTEGER,
	last_str  TEXT,
	UNIQUE(device, metric)
);
CREATE TABLE IF NOT EXISTS chunks(
	series_id INTEGER NOT NULL,
	min_ts    INTEGER NOT NULL,
	max_ts    INTEGER NOT NULL,
	count     INTEGER NOT NULL,
	data      BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_series ON chunks(series_id, min_ts, max_ts, count);
CREATE TABLE IF NOT EXISTS dedup(
	device TEXT PRIMARY KEY,
	hwm    INTEGER NOT NULL,
	window BLOB NOT NULL -- small: fine without rowid
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta(key, value) VALUES ('format', 1), ('wal_start', 0);
`

const (
	hourNs = int64(time.Hour)
	dayNs  = 24 * hourNs
)

func (db *DB) openSQL(ctx context.Context) error {
	path := filepath.Join(db.dir, "telemetry.db")
	w, err := sql.Open("sqlite", path+"?_busy_timeout=10000&_auto_vacuum=INCREMENTAL"+
		"&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=cache_size(-16384)&_txlock=immediate")
	if err != nil {
		return fmt.Errorf("tsdb: opening %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	db.wdb = w
	if _, err := w.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("tsdb: creating schema in %s: %w", path, err)
	}
	var format int
	if err := w.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'format'`).Scan(&format); err != nil {
		return fmt.Errorf("tsdb: reading format: %w", err)
	}
	if format != formatVersion {
		return fmt.Errorf("tsdb: %s has format %d, this build reads %d", path, format, formatVersion)
	}
	r, err := sql.Open("sqlite", path+"?_busy_timeout=10000&_pragma=query_only(1)&_pragma=cache_size(-16384)")
	if err != nil {
		return fmt.Errorf("tsdb: opening %s: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	db.rdb = r
	return nil
}

// load reads the series, their latest points and the dedup state, and
// returns the first WAL segment to replay.
func (db *DB) load(ctx context.Context) (uint64, error) {
	var walStart int64
	if err := db.wdb.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'wal_start'`).Scan(&walStart); err != nil {
		return 0, fmt.Errorf("tsdb: reading checkpoint position: %w", err)
	}
	rows, err := db.wdb.QueryContext(ctx, `SELECT id, device, metric, kind, last_ts, last_bits, last_str FROM series`)
	if err != nil {
		return 0, fmt.Errorf("tsdb: loading series: %w", err)
	}
	var maxID int64
	for rows.Next() {
		var (
			id, kind        int64
			dev, metric     string
			lastTS, lastBit sql.NullInt64
			lastStr         sql.NullString
		)
		if err := rows.Scan(&id, &dev, &metric, &kind, &lastTS, &lastBit, &lastStr); err != nil {
			rows.Close()
			return 0, fmt.Errorf("tsdb: loading series: %w", err)
		}
		d := db.getDevice(dev)
		s := &series{id: id, device: dev, metric: metric, kind: payload.ValueKind(kind), applied: true, persisted: true}
		if lastTS.Valid {
			s.hasLast, s.lastTS = true, lastTS.Int64
			s.lastVal = payload.Value{Kind: s.kind, Num: math.Float64frombits(uint64(lastBit.Int64)), Str: lastStr.String}
		}
		d.series[metric] = s
		db.seriesCount.Add(1)
		maxID = max(maxID, id)
	}
	if err := rows.Close(); err != nil {
		return 0, fmt.Errorf("tsdb: loading series: %w", err)
	}
	var maxChunkID sql.NullInt64
	if err := db.wdb.QueryRowContext(ctx, `SELECT max(series_id) FROM chunks`).Scan(&maxChunkID); err != nil {
		return 0, fmt.Errorf("tsdb: loading chunks: %w", err)
	}
	db.nextSeriesID.Store(max(maxID, maxChunkID.Int64))
	var nchunks int64
	if err := db.wdb.QueryRowContext(ctx, `SELECT count(*) FROM chunks`).Scan(&nchunks); err != nil {
		return 0, fmt.Errorf("tsdb: counting chunks: %w", err)
	}
	db.chunks.Store(nchunks)

	rows, err = db.wdb.QueryContext(ctx, `SELECT device, hwm, window FROM dedup`)
	if err != nil {
		return 0, fmt.Errorf("tsdb: loading dedup state: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			dev string
			hwm int64
			b   []byte
		)
		if err := rows.Scan(&dev, &hwm, &b); err != nil {
			return 0, fmt.Errorf("tsdb: loading dedup state: %w", err)
		}
		w, err := unmarshalWindow(uint64(hwm), b, db.opts.DedupWindow)
		if err != nil {
			return 0, fmt.Errorf("tsdb: dedup state of %q: %w", dev, err)
		}
		d := db.getDevice(dev)
		d.durable = w
		d.admit = w.clone()
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("tsdb: loading dedup state: %w", err)
	}
	return uint64(walStart), nil
}

// cutSeries is one series' share of a checkpoint.
type cutSeries struct {
	s       *series
	frozen  []*cols
	row     bool // write the series row (new, or latest changed)
	hasLast bool
	lastTS  int64
	lastVal payload.Value
}

type cutDedup struct {
	device string
	w      window
}

// cut is what a checkpoint writes: everything applied before segment seg.
type cut struct {
	seg    uint64
	series []cutSeries
	dedup  []cutDedup
	dels   []deletion
}

// Checkpoint writes the in-memory head of every series to chunks in
// SQLite with the dedup state, commits (synchronous=FULL), and removes the
// WAL segments that the commit covers. It runs by itself every
// CheckpointInterval; calling it is useful before a backup or in tests.
func (db *DB) Checkpoint(ctx context.Context) error {
	if db.isClosed() {
		return fmt.Errorf("tsdb: checkpoint: %w", store.ErrClosed)
	}
	return db.checkpoint(ctx)
}

var errShut = fmt.Errorf("tsdb: %w", store.ErrClosed)

func (db *DB) checkpoint(ctx context.Context) error {
	db.ckMu.Lock()
	defer db.ckMu.Unlock()
	if db.shut {
		return errShut
	}
	start := time.Now()
	c, err := db.cut()
	if err != nil {
		db.m.checkpointErrs.Inc()
		return err
	}
	if err := db.writeCut(ctx, c); err != nil {
		db.applyMu.Lock()
		db.ckptFull = true
		db.applyMu.Unlock()
		db.m.checkpointErrs.Inc()
		db.log.Error("checkpoint failed; the WAL keeps the data", "err", err)
		return err
	}
	for i := range c.series {
		cs := &c.series[i]
		cs.s.mu.Lock()
		cs.s.frozen = cs.s.frozen[len(cs.frozen):]
		if len(cs.s.frozen) == 0 {
			cs.s.frozen = nil
		}
		cs.s.mu.Unlock()
		cs.s.persisted = true
	}
	db.applyMu.Lock()
	db.pendingDeletes = db.pendingDeletes[len(c.dels):]
	var old []uint64
	for idx := range db.wal.sizes {
		if idx < c.seg {
			old = append(old, idx)
			delete(db.wal.sizes, idx)
		}
	}
	db.updateWALStats()
	db.applyMu.Unlock()
	if len(old) > 0 {
		if err := removeSegments(db.wal.dir, old); err != nil {
			// Harmless: the next open removes them.
			db.log.Warn("removing checkpointed wal segments", "err", err)
		}
	}
	db.lastCkpt.Store(time.Now().UnixNano())
	db.m.checkpointSecs.Observe(time.Since(start).Seconds())
	return nil
}

// cut freezes every head under applyMu (no commit in progress, so the
// head holds exactly the records before the new segment).
func (db *DB) cut() (cut, error) {
	db.applyMu.Lock()
	defer db.applyMu.Unlock()
	if err := db.Err(); err != nil {
		return cut{}, err
	}
	if db.wal.size > segHeaderSize {
		if err := db.wal.create(db.wal.idx + 1); err != nil {
			return cut{}, db.fail(err)
		}
		db.updateWALStats()
	}
	c := cut{seg: db.wal.idx, dels: append([]deletion(nil), db.pendingDeletes...)}
	full := db.ckptFull
	db.ckptFull = false
	db.walSinceCkpt = 0
	var frozenPoints int64
	db.devMu.RLock()
	for _, d := range db.devices {
		d.mu.Lock()
		for _, s := range d.series {
			if !s.applied {
				continue
			}
			s.mu.Lock()
			if n := s.head.len(); n > 0 {
				s.normalizeHead()
				h := s.head
				s.frozen = append(s.frozen, &h)
				s.head = cols{}
				frozenPoints += int64(n)
			}
			if s.dirty || full || !s.persisted || len(s.frozen) > 0 {
				c.series = append(c.series, cutSeries{
					s: s, frozen: s.frozen, row: s.dirty || full || !s.persisted,
					hasLast: s.hasLast, lastTS: s.lastTS, lastVal: s.lastVal,
				})
				s.dirty = false
			}
			s.mu.Unlock()
		}
		if d.durable.init && (d.dedupDirty || full) {
			c.dedup = append(c.dedup, cutDedup{device: d.name, w: d.durable.clone()})
			d.dedupDirty = false
		}
		d.mu.Unlock()
	}
	db.devMu.RUnlock()
	db.headPoints.Add(-frozenPoints)
	return c, nil
}

func (db *DB) writeCut(ctx context.Context, c cut) (err error) {
	tx, err := db.wdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("tsdb: checkpoint: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	var deleted, added int64
	for _, del := range c.dels {
		for _, id := range del.ids {
			res, err := tx.ExecContext(ctx, `DELETE FROM chunks WHERE series_id = ?`, id)
			if err != nil {
				return fmt.Errorf("tsdb: checkpoint: deleting device: %w", err)
			}
			n, _ := res.RowsAffected()
			deleted += n
			if _, err := tx.ExecContext(ctx, `DELETE FROM series WHERE id = ?`, id); err != nil {
				return fmt.Errorf("tsdb: checkpoint: deleting device: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM dedup WHERE device = ?`, del.device); err != nil {
			return fmt.Errorf("tsdb: checkpoint: deleting device: %w", err)
		}
	}
	upSeries, err := tx.PrepareContext(ctx, `INSERT INTO series(id, device, metric, kind, last_ts, last_bits, last_str)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT(id) DO UPDATE SET last_ts = excluded.last_ts, last_bits = excluded.last_bits, last_str = excluded.last_str`)
	if err != nil {
		return fmt.Errorf("tsdb: checkpoint: %w", err)
	}
	defer upSeries.Close()
	insChunk, err := tx.PrepareContext(ctx, `INSERT INTO chunks(series_id, min_ts, max_ts, count, data) VALUES (?, ?, ?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("tsdb: checkpoint: %w", err)
	}
	defer insChunk.Close()
	enc := newChunkEncoder(flate.DefaultCompression)
	var blob []byte
	for i := range c.series {
		cs := &c.series[i]
		s := cs.s
		if cs.row {
			var lastTS, lastBits any
			var lastStr any
			if cs.hasLast {
				lastTS = cs.lastTS
				lastBits = int64(math.Float64bits(cs.lastVal.Num))
				if s.kind == payload.String {
					lastStr = cs.lastVal.Str
				}
			}
			if _, err := upSeries.ExecContext(ctx, s.id, s.device, s.metric, int64(s.kind), lastTS, lastBits, lastStr); err != nil {
				return fmt.Errorf("tsdb: checkpoint: writing series: %w", err)
			}
		}
		if len(cs.frozen) == 0 {
			continue
		}
		merged := mergeFrozen(cs.frozen)
		err := splitChunks(merged, hourNs, db.opts.MaxChunkPoints, func(p cols) error {
			blob = enc.encode(blob[:0], s.kind, &p)
			if _, err := insChunk.ExecContext(ctx, s.id, p.ts[0], p.ts[len(p.ts)-1], len(p.ts), blob); err != nil {
				return fmt.Errorf("tsdb: checkpoint: writing chunk: %w", err)
			}
			added++
			return nil
		})
		if err != nil {
			return err
		}
	}
	if len(c.dedup) > 0 {
		up, err := tx.PrepareContext(ctx, `INSERT INTO dedup(device, hwm, window) VALUES (?, ?, ?)
			ON CONFLICT(device) DO UPDATE SET hwm = excluded.hwm, window = excluded.window`)
		if err != nil {
			return fmt.Errorf("tsdb: checkpoint: %w", err)
		}
		defer up.Close()
		for _, dd := range c.dedup {
			if _, err := up.ExecContext(ctx, dd.device, int64(dd.w.hwm), dd.w.marshal()); err != nil {
				return fmt.Errorf("tsdb: checkpoint: writing dedup state: %w", err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE meta SET value = ? WHERE key = 'wal_start'`, int64(c.seg)); err != nil {
		return fmt.Errorf("tsdb: checkpoint: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("tsdb: checkpoint: commit: %w", err)
	}
	db.chunks.Add(added - deleted)
	return nil
}

// mergeFrozen merges the frozen heads of a series, later ones winning.
func mergeFrozen(fs []*cols) cols {
	if len(fs) == 1 {
		return *fs[0]
	}
	srcs := make([]src, len(fs))
	for i, f := range fs {
		srcs[i] = src{prio: int64(i), c: *f}
	}
	return merge(srcs)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// splitChunks cuts the normalized c into runs that stay within one period
// (aligned to the Unix epoch) and hold at most maxPts points.
func splitChunks(c cols, period int64, maxPts int, fn func(cols) error) error {
	n := c.len()
	for i := 0; i < n; {
		start := floorDiv(c.ts[i], period) * period
		j := i + 1
		for j < n && j-i < maxPts && uint64(c.ts[j]-start) < uint64(period) {
			j++
		}
		if err := fn(c.slice(i, j)); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// Compact merges the small chunks of each series: those of an hour that
// is over into one chunk, and those of a day that is over into one (or
// more, of at most MaxChunkPoints) chunk. It then applies Retention and
// returns free pages to the file system. The compaction loop runs it every
// CompactInterval.
func (db *DB) Compact(ctx context.Context) error {
	if db.isClosed() {
		return fmt.Errorf("tsdb: compact: %w", store.ErrClosed)
	}
	return db.compactAndRetain(ctx)
}

func (db *DB) compactAndRetain(ctx context.Context) error {
	start := time.Now()
	err := db.compact(ctx)
	if rerr := db.applyRetention(ctx); rerr != nil {
		err = errors.Join(err, rerr)
	}
	db.ckMu.Lock()
	if db.shut {
		err = errors.Join(err, errShut)
	} else if _, verr := db.wdb.ExecContext(ctx, `PRAGMA incremental_vacuum`); verr != nil {
		err = errors.Join(err, fmt.Errorf("tsdb: incremental vacuum: %w", verr))
	}
	db.ckMu.Unlock()
	db.m.compactionSecs.Observe(time.Since(start).Seconds())
	return err
}

// group is a set of chunks of one series within [from, to) to merge.
type group struct {
	sid      int64
	from, to int64
}

type chunkMeta struct{ minTS, maxTS, count int64 }

// plan finds the groups worth merging.
func (db *DB) plan(ctx context.Context) ([]group, error) {
	rows, err := db.rdb.QueryContext(ctx, `SELECT series_id, min_ts, max_ts, count FROM chunks ORDER BY series_id, min_ts`)
	if err != nil {
		return nil, fmt.Errorf("tsdb: compaction plan: %w", err)
	}
	defer rows.Close()
	now := db.opts.Now().UnixNano()
	grace := 2 * int64(max(db.opts.CheckpointInterval, time.Minute))
	maxPts := int64(db.opts.MaxChunkPoints)
	var out []group
	var cur int64 = -1
	var metas []chunkMeta
	flush := func() {
		out = planSeries(out, cur, metas, now, grace, maxPts)
		metas = metas[:0]
	}
	for rows.Next() {
		var sid int64
		var m chunkMeta
		if err := rows.Scan(&sid, &m.minTS, &m.maxTS, &m.count); err != nil {
			return nil, fmt.Errorf("tsdb: compaction plan: %w", err)
		}
		if sid != cur && len(metas) > 0 {
			flush()
		}
		cur = sid
		metas = append(metas, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("tsdb: compaction plan: %w", err)
	}
	if len(metas) > 0 {
		flush()
	}
	return out, nil
}

// planSeries adds the groups of one series (metas sorted by min_ts).
func planSeries(out []group, sid int64, metas []chunkMeta, now, grace, maxPts int64) []group {
	const margin = 2 * dayNs
	type acc struct{ n, pts int64 }
	days := map[int64]*acc{}
	hours := map[int64]*acc{}
	var dayOrder, hourOrder []int64
	for _, m := range metas {
		if m.minTS < math.MinInt64+margin || m.maxTS > math.MaxInt64-margin {
			continue
		}
		day := floorDiv(m.minTS, dayNs) * dayNs
		if m.maxTS >= day+dayNs {
			continue
		}
		if day+dayNs+grace <= now {
			a := days[day]
			if a == nil {
				a = &acc{}
				days[day] = a
				dayOrder = append(dayOrder, day)
			}
			a.n++
			a.pts += m.count
			continue
		}
		hour := floorDiv(m.minTS, hourNs) * hourNs
		if m.maxTS >= hour+hourNs || hour+hourNs+grace > now {
			continue
		}
		a := hours[hour]
		if a == nil {
			a = &acc{}
			hours[hour] = a
			hourOrder = append(hourOrder, hour)
		}
		a.n++
		a.pts += m.count
	}
	for _, day := range dayOrder {
		if a := days[day]; a.n > (a.pts+maxPts-1)/maxPts {
			out = append(out, group{sid: sid, from: day, to: day + dayNs})
		}
	}
	for _, hour := range hourOrder {
		if a := hours[hour]; a.n > (a.pts+maxPts-1)/maxPts {
			out = append(out, group{sid: sid, from: hour, to: hour + hourNs})
		}
	}
	return out
}

// compactBatchPoints bounds the points merged in one transaction.
const compactBatchPoints = 2_000_000

func (db *DB) compact(ctx context.Context) error {
	groups, err := db.plan(ctx)
	if err != nil {
		return err
	}
	enc := newChunkEncoder(flate.BestCompression)
	for len(groups) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := db.compactBatch(ctx, enc, groups)
		if err != nil {
			return err
		}
		groups = groups[n:]
	}
	return nil
}

// compactBatch merges groups in one transaction until enough points were
// rewritten; it returns how many groups it handled.
func (db *DB) compactBatch(ctx context.Context, enc *chunkEncoder, groups []group) (done int, err error) {
	db.ckMu.Lock()
	defer db.ckMu.Unlock()
	if db.shut {
		return 0, errShut
	}
	tx, err := db.wdb.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("tsdb: compaction: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	var cutoff int64 = math.MinInt64
	if db.opts.Retention > 0 {
		cutoff = db.opts.Now().Add(-db.opts.Retention).UnixNano()
	}
	var points, removed, added int64
	var blob []byte
	for _, g := range groups {
		if points >= compactBatchPoints {
			break
		}
		done++
		rows, err := tx.QueryContext(ctx, `SELECT rowid, data FROM chunks
			WHERE series_id = ? AND min_ts >= ? AND max_ts < ? ORDER BY rowid`, g.sid, g.from, g.to)
		if err != nil {
			return 0, fmt.Errorf("tsdb: compaction: %w", err)
		}
		var srcs []src
		var ids []int64
		var kind payload.ValueKind
		for rows.Next() {
			var id int64
			var data []byte
			if err := rows.Scan(&id, &data); err != nil {
				rows.Close()
				return 0, fmt.Errorf("tsdb: compaction: %w", err)
			}
			k, c, err := decodeChunk(data)
			if err != nil {
				rows.Close()
				return 0, fmt.Errorf("tsdb: compaction: series %d: %w", g.sid, err)
			}
			kind = k
			ids = append(ids, id)
			srcs = append(srcs, src{prio: id, c: c})
		}
		if err := rows.Close(); err != nil {
			return 0, fmt.Errorf("tsdb: compaction: %w", err)
		}
		if len(ids) < 2 {
			continue
		}
		merged := merge(srcs)
		if i, _ := merged.rangeIdx(cutoff, math.MaxInt64); i > 0 {
			merged = merged.slice(i, merged.len())
		}
		points += int64(merged.len())
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, `DELETE FROM chunks WHERE rowid = ?`, id); err != nil {
				return 0, fmt.Errorf("tsdb: compaction: %w", err)
			}
		}
		removed += int64(len(ids))
		err = splitChunks(merged, dayNs, db.opts.MaxChunkPoints, func(p cols) error {
			blob = enc.encode(blob[:0], kind, &p)
			if _, err := tx.ExecContext(ctx, `INSERT INTO chunks(series_id, min_ts, max_ts, count, data) VALUES (?, ?, ?, ?, ?)`,
				g.sid, p.ts[0], p.ts[len(p.ts)-1], len(p.ts), blob); err != nil {
				return fmt.Errorf("tsdb: compaction: %w", err)
			}
			added++
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("tsdb: compaction: commit: %w", err)
	}
	db.chunks.Add(added - removed)
	db.m.compactedChunks.Add(float64(removed - added))
	return done, nil
}

// applyRetention deletes chunks and head points older than now-Retention.
func (db *DB) applyRetention(ctx context.Context) error {
	if db.opts.Retention <= 0 {
		return nil
	}
	cutoff := db.opts.Now().Add(-db.opts.Retention).UnixNano()
	db.ckMu.Lock()
	if db.shut {
		db.ckMu.Unlock()
		return errShut
	}
	res, err := db.wdb.ExecContext(ctx, `DELETE FROM chunks WHERE max_ts < ?`, cutoff)
	db.ckMu.Unlock()
	if err != nil {
		return fmt.Errorf("tsdb: retention: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil {
		db.chunks.Add(-n)
		db.m.retentionChunks.Add(float64(n))
	}
	db.devMu.RLock()
	for _, d := range db.devices {
		d.mu.Lock()
		for _, s := range d.series {
			s.mu.Lock()
			if s.head.len() > 0 {
				s.normalizeHead()
				if i, _ := s.head.rangeIdx(cutoff, math.MaxInt64); i > 0 {
					s.head = s.head.slice(i, s.head.len())
					db.headPoints.Add(-int64(i))
				}
			}
			if s.hasLast && s.lastTS < cutoff {
				s.hasLast, s.lastVal, s.dirty = false, payload.Value{}, true
			}
			s.mu.Unlock()
		}
		d.mu.Unlock()
	}
	db.devMu.RUnlock()
	return nil
}

// Vacuum rewrites telemetry.db to its minimal size (SQLite VACUUM) and
// folds SQLite's own log into it. It can take a while on a big store.
func (db *DB) Vacuum(ctx context.Context) error {
	if db.isClosed() {
		return fmt.Errorf("tsdb: vacuum: %w", store.ErrClosed)
	}
	db.ckMu.Lock()
	defer db.ckMu.Unlock()
	if db.shut {
		return errShut
	}
	if _, err := db.wdb.ExecContext(ctx, `VACUUM`); err != nil {
		return fmt.Errorf("tsdb: vacuum: %w", err)
	}
	if _, err := db.wdb.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return fmt.Errorf("tsdb: vacuum: %w", err)
	}
	return nil
}

// maintain runs the periodic checkpoints, compactions and retention.
func (db *DB) maintain(ctx context.Context) {
	defer db.wg.Done()
	var ckC, cpC <-chan time.Time
	if db.opts.CheckpointInterval > 0 {
		t := time.NewTicker(db.opts.CheckpointInterval)
		defer t.Stop()
		ckC = t.C
	}
	if db.opts.CompactInterval > 0 {
		t := time.NewTicker(db.opts.CompactInterval)
		defer t.Stop()
		cpC = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-ckC:
			db.checkpoint(ctx)
		case <-db.ckptKick:
			db.checkpoint(ctx)
		case <-cpC:
			if err := db.compactAndRetain(ctx); err != nil && ctx.Err() == nil {
				db.log.Error("compaction", "err", err)
			}
		}
	}
}
