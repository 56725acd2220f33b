package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/payload"
)

// deviceLockClass is the first key of the two-key advisory locks on
// devices (the second is deviceBucket): batches take them shared,
// DeleteDevice exclusive. Two-key locks never collide with the one-key
// migration lock.
const deviceLockClass = 0x66687464 // "fhtd"

// deviceBuckets is the number of device lock keys: a batch takes at most
// this many advisory locks, whatever its number of devices, which keeps
// PostgreSQL's shared lock table safe; a deletion holds up the writes of
// 1/deviceBuckets of the devices for its duration.
const deviceBuckets = 128

// deviceBucket returns the second key of device's advisory lock (FNV-1a,
// the same in every hub).
func deviceBucket(device string) int32 {
	h := uint32(2166136261)
	for i := 0; i < len(device); i++ {
		h ^= uint32(device[i])
		h *= 16777619
	}
	return int32(h % deviceBuckets)
}

// stageTable is the committer's temporary staging table.
const stageTable = "fh_telemetry_stage"

// errRace: another hub created a series or device id this batch wants to
// create.
var errRace = errors.New("postgres: concurrent series creation")

func validName(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

type seqKey struct {
	device string
	seq    uint64
}

type seriesKey struct {
	device, metric string
}

// seriesInfo is what telemetry_series holds about a series.
type seriesInfo struct {
	id   int64 // 0 until created
	kind payload.ValueKind
}

type pointKey struct {
	device, metric string
	ts             int64
}

// pointRow is one point to write.
type pointRow struct {
	key    seriesKey
	series int64 // its id, known once the new series are created
	ts     int64
	v      payload.Value
}

// write writes the undecided entries of batch and records each outcome.
func (t *Telemetry) write(batch []*telEntry) {
	todo := make([]*telEntry, 0, len(batch))
	for _, e := range batch {
		if !e.decided {
			todo = append(todo, e)
		}
	}
	if len(todo) == 0 {
		return
	}
	err := t.writeRetrying(todo)
	if err == nil {
		t.setFailed(nil)
		return
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && !infraError(pe) && len(todo) > 1 {
		// A server error not about the connection or the server itself:
		// find the message(s) that cause it.
		t.log.Warn("telemetry batch refused; writing its messages one by one", "messages", len(todo), "err", err)
		for _, e := range todo {
			if err := t.writeRetrying([]*telEntry{e}); err != nil {
				e.dup, e.err = false, fmt.Errorf("%w: %w", ErrWriteFailed, err)
			}
		}
		return
	}
	if !errors.As(err, &pe) || infraError(pe) {
		t.setFailed(err)
	}
	for _, e := range todo {
		e.dup, e.err = false, fmt.Errorf("%w: %w", ErrWriteFailed, err)
	}
}

// infraError reports whether pe is about the connection or the server
// rather than the statement: connection exceptions, insufficient
// resources, operator intervention, system and internal errors.
func infraError(pe *pgconn.PgError) bool {
	switch pe.Code[:2] {
	case "08", "53", "57", "58", "XX":
		return true
	}
	return false
}

// retry limits.
const (
	maxConflictRetries = 20 // deadlocks, serialization failures, races
	maxConnRetries     = 4  // connection failures
)

// writeRetrying writes todo in one transaction, retrying it on deadlocks,
// serialization failures, series races and connection failures.
func (t *Telemetry) writeRetrying(todo []*telEntry) error {
	conflicts, connFails := 0, 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), t.o.WriteTimeout)
		err := t.tryWrite(ctx, todo)
		cancel()
		if err == nil {
			return nil
		}
		if t.conn != nil && t.conn.Conn().IsClosed() {
			t.conn.Release()
			t.conn = nil
		}
		var pe *pgconn.PgError
		var backoff time.Duration
		switch {
		case errors.Is(err, errRace) || errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001"):
			if conflicts++; conflicts > maxConflictRetries {
				return err
			}
			backoff = time.Duration(rand.Int64N(int64(time.Millisecond) << min(conflicts, 7)))
		case errors.As(err, &pe) && pe.Code == "23514":
			// No partition for a row: dropped by another hub's retention
			// (clock skew) or by hand. Forget what we know and retry.
			if conflicts++; conflicts > maxConflictRetries {
				return err
			}
			t.pmu.Lock()
			clear(t.parts)
			t.pmu.Unlock()
		case errors.As(err, &pe) && !infraError(pe):
			return err
		default:
			if connFails++; connFails > maxConnRetries {
				return err
			}
			backoff = 100 * time.Millisecond << connFails
		}
		t.m.retries.Inc()
		t.log.Debug("retrying telemetry batch", "err", err, "backoff", backoff)
		time.Sleep(backoff)
	}
}

// ensureConn acquires the committer's connection and its staging table.
func (t *Telemetry) ensureConn(ctx context.Context) error {
	if t.conn == nil {
		c, err := t.db.pool.Acquire(ctx)
		if err != nil {
			return err
		}
		t.conn, t.stageOK = c, false
	}
	if !t.stageOK {
		_, err := t.conn.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS `+stageTable+` (
			series bigint NOT NULL,
			ts bigint NOT NULL,
			num double precision,
			str bytea
		) ON COMMIT DELETE ROWS`)
		if err != nil {
			return fmt.Errorf("creating the staging table: %w", err)
		}
		t.stageOK = true
	}
	return nil
}

// tryWrite makes one attempt at writing todo in one transaction, deciding
// each entry's outcome. The outcomes hold only when it returns nil.
func (t *Telemetry) tryWrite(ctx context.Context, todo []*telEntry) error {
	if err := t.ensureConn(ctx); err != nil {
		return err
	}
	var cutoff int64 = -1 << 63
	if t.o.Retention > 0 {
		cutoff = t.o.Now().Add(-t.o.Retention).UnixNano()
	}
	devSet := map[string]struct{}{}
	var buckets [deviceBuckets]bool
	seqSet := map[seqKey]struct{}{}
	var days []int64
	lastDay := int64(-1 << 63)
	for _, e := range todo {
		e.dup, e.err = false, nil
		devSet[e.m.Device] = struct{}{}
		buckets[deviceBucket(e.m.Device)] = true
		if e.m.HasSeq {
			seqSet[seqKey{e.m.Device, e.m.Seq}] = struct{}{}
		}
		for i := range e.m.Points {
			if ts := e.m.Points[i].TS; ts >= cutoff {
				if d := dayOf(ts); d != lastDay {
					days, lastDay = append(days, d), d
				}
			}
		}
	}
	if err := t.ensurePartitions(ctx, days); err != nil {
		return err
	}
	devices := sortedKeys(devSet, strings.Compare)
	var locks []int32
	for i, ok := range buckets {
		if ok {
			locks = append(locks, int32(i))
		}
	}
	var seqDevs []string
	if len(seqSet) > 0 {
		ds := map[string]struct{}{}
		for k := range seqSet {
			ds[k.device] = struct{}{}
		}
		seqDevs = sortedKeys(ds, strings.Compare)
	}

	t0 := time.Now()
	tx, err := t.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	// Lock the devices and read their series and the ids of those with
	// seqs (one round trip), then claim the seqs. The ids are read in the
	// transaction, under the device locks, rather than cached: another
	// hub's DeleteDevice removes them (and a series made again gets a new
	// id and maybe another kind).
	b := &pgx.Batch{}
	b.Queue(`SELECT count(pg_advisory_xact_lock_shared($1, k)) FROM unnest($2::integer[]) AS k`, deviceLockClass, locks)
	b.Queue(`SELECT device, metric, kind, id FROM telemetry_series WHERE device = ANY($1::text[])`, devices)
	if len(seqDevs) > 0 {
		b.Queue(`SELECT device, id FROM telemetry_devices WHERE device = ANY($1::text[])`, seqDevs)
	}
	br := tx.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close()
		return err
	}
	kinds := map[seriesKey]seriesInfo{}
	rows, err := br.Query()
	if err != nil {
		br.Close()
		return err
	}
	var sk seriesKey
	var kind int16
	var sid int64
	_, err = pgx.ForEachRow(rows, []any{&sk.device, &sk.metric, &kind, &sid}, func() error {
		kinds[sk] = seriesInfo{id: sid, kind: payload.ValueKind(kind)}
		return nil
	})
	if err != nil {
		br.Close()
		return err
	}
	devIDs := make(map[string]int32, len(seqDevs))
	if len(seqDevs) > 0 {
		rows, err := br.Query()
		if err != nil {
			br.Close()
			return err
		}
		var dev string
		var id int32
		_, err = pgx.ForEachRow(rows, []any{&dev, &id}, func() error {
			devIDs[dev] = id
			return nil
		})
		if err != nil {
			br.Close()
			return err
		}
	}
	if err := br.Close(); err != nil {
		return err
	}
	if err := createDeviceIDs(ctx, tx, seqDevs, devIDs); err != nil {
		return err
	}
	seqs := sortedKeys(seqSet, func(a, b seqKey) int {
		return cmp.Or(cmp.Compare(devIDs[a.device], devIDs[b.device]), cmp.Compare(a.seq, b.seq))
	})
	fresh, err := t.claimSeqs(ctx, tx, seqs, devIDs)
	if err != nil {
		return err
	}

	// Decide, in queue order.
	var newSeries []seriesKey
	var newKinds []int16
	var pts []pointRow
	idx := map[pointKey]int{}
	messages, dups, refused := 0, 0, 0
	for _, e := range todo {
		m := e.m
		if m.HasSeq {
			k := seqKey{m.Device, m.Seq}
			if used, ok := fresh[k]; !ok || used {
				e.dup = true
				dups++
				continue
			}
		}
		if err := checkKinds(m, kinds); err != nil {
			e.err = err
			refused++
			continue
		}
		if m.HasSeq {
			fresh[seqKey{m.Device, m.Seq}] = true
		}
		messages++
		for i := range m.Points {
			p := &m.Points[i]
			sk := seriesKey{m.Device, p.Metric}
			si, ok := kinds[sk]
			if !ok {
				si.kind = p.Value.Kind
				kinds[sk] = si
				newSeries = append(newSeries, sk)
				newKinds = append(newKinds, int16(p.Value.Kind))
			}
			if p.TS < cutoff {
				continue
			}
			pk := pointKey{m.Device, p.Metric, p.TS}
			if j, ok := idx[pk]; ok {
				pts[j].v = p.Value // last write wins
				continue
			}
			idx[pk] = len(pts)
			pts = append(pts, pointRow{key: sk, series: si.id, ts: p.TS, v: p.Value})
		}
	}

	// Give back the seqs of refused messages; create the new series.
	b = &pgx.Batch{}
	var unusedDevs []int32
	var unusedSeqs []int64
	for k, used := range fresh {
		if !used {
			unusedDevs = append(unusedDevs, devIDs[k.device])
			unusedSeqs = append(unusedSeqs, int64(k.seq))
		}
	}
	if len(unusedDevs) > 0 {
		b.Queue(`DELETE FROM telemetry_seqs s USING unnest($1::integer[], $2::bigint[]) AS k(d, q)
			WHERE s.device = k.d AND s.seq = k.q`, unusedDevs, unusedSeqs)
	}
	if len(newSeries) > 0 {
		order := make([]int, len(newSeries))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int {
			x, y := newSeries[a], newSeries[b]
			return cmp.Or(strings.Compare(x.device, y.device), strings.Compare(x.metric, y.metric))
		})
		devs, mets, knds := make([]string, len(order)), make([]string, len(order)), make([]int16, len(order))
		for i, j := range order {
			devs[i], mets[i], knds[i] = newSeries[j].device, newSeries[j].metric, newKinds[j]
		}
		// A series another hub created meanwhile is not returned: the
		// batch is retried and then reads it.
		b.Queue(`INSERT INTO telemetry_series (device, metric, kind)
			SELECT * FROM unnest($1::text[], $2::text[], $3::smallint[])
			ON CONFLICT DO NOTHING RETURNING device, metric, id`, devs, mets, knds).Query(func(rows pgx.Rows) error {
			n := 0
			var sk seriesKey
			var id int64
			_, err := pgx.ForEachRow(rows, []any{&sk.device, &sk.metric, &id}, func() error {
				si := kinds[sk]
				si.id = id
				kinds[sk] = si
				n++
				return nil
			})
			if err == nil && n != len(devs) {
				err = errRace
			}
			return err
		})
	}
	if b.Len() > 0 {
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
	}

	// Points: COPY into the staging table, then upsert.
	if len(pts) > 0 {
		if len(newSeries) > 0 {
			for i := range pts {
				if pts[i].series == 0 {
					pts[i].series = kinds[pts[i].key].id
				}
			}
		}
		slices.SortFunc(pts, func(a, b pointRow) int {
			return cmp.Or(cmp.Compare(a.series, b.series), cmp.Compare(a.ts, b.ts))
		})
		if err := t.writePoints(ctx, tx, pts); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	t.m.commitSeconds.Observe(time.Since(t0).Seconds())
	t.m.batches.Inc()
	t.m.batchMessages.Observe(float64(len(todo)))
	t.m.messages.Add(float64(messages))
	t.m.points.Add(float64(len(pts)))
	t.m.duplicates.Add(float64(dups))
	t.m.typeMismatches.Add(float64(refused))
	return nil
}

// createDeviceIDs gives the devices that lack one (in ids) an id in
// telemetry_devices, in sorted order (devs is sorted), and adds them to
// ids. When another hub created one meanwhile, it returns errRace: the
// batch is retried and then reads it.
func createDeviceIDs(ctx context.Context, tx pgx.Tx, devs []string, ids map[string]int32) error {
	var missing []string
	for _, d := range devs {
		if _, ok := ids[d]; !ok {
			missing = append(missing, d)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, `INSERT INTO telemetry_devices (device)
		SELECT * FROM unnest($1::text[]) ON CONFLICT DO NOTHING RETURNING device, id`, missing)
	if err != nil {
		return err
	}
	n := 0
	var dev string
	var id int32
	if _, err := pgx.ForEachRow(rows, []any{&dev, &id}, func() error {
		ids[dev] = id
		n++
		return nil
	}); err != nil {
		return err
	}
	if n != len(missing) {
		return errRace
	}
	return nil
}

// claimSeqs inserts the keys (sorted by device id and seq; ids maps their
// devices to their ids) into telemetry_seqs and returns those that were
// not there (mapped to false). Like writePoints, it first tries
// a plain COPY under a savepoint (all keys new: the common case) and falls
// back to INSERT … ON CONFLICT DO NOTHING RETURNING when a key exists,
// for this batch and the next upsertBatches.
func (t *Telemetry) claimSeqs(ctx context.Context, tx pgx.Tx, seqs []seqKey, ids map[string]int32) (map[seqKey]bool, error) {
	fresh := make(map[seqKey]bool, len(seqs))
	if len(seqs) == 0 {
		return fresh, nil
	}
	received := t.o.Now()
	if t.seqInsertLeft == 0 {
		if _, err := tx.Exec(ctx, "SAVEPOINT fh_seqs"); err != nil {
			return nil, err
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"telemetry_seqs"}, []string{"device", "seq", "received"},
			seqSource(seqs, ids, received))
		var pe *pgconn.PgError
		if err == nil {
			for _, k := range seqs {
				fresh[k] = false
			}
			return fresh, nil
		}
		if !errors.As(err, &pe) || pe.Code != "23505" {
			return nil, err
		}
		if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT fh_seqs"); err != nil {
			return nil, err
		}
		t.seqInsertLeft = upsertBatches
	} else {
		t.seqInsertLeft--
	}
	devs := make([]int32, len(seqs))
	nums := make([]int64, len(seqs))
	names := make(map[int32]string, len(ids))
	for i, k := range seqs {
		devs[i], nums[i] = ids[k.device], int64(k.seq)
		names[devs[i]] = k.device
	}
	rows, err := tx.Query(ctx, `INSERT INTO telemetry_seqs (device, seq, received)
		SELECT d, s, $3 FROM unnest($1::integer[], $2::bigint[]) AS k(d, s)
		ON CONFLICT DO NOTHING RETURNING device, seq`, devs, nums, received)
	if err != nil {
		return nil, err
	}
	var dev int32
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&dev, &n}, func() error {
		fresh[seqKey{names[dev], uint64(n)}] = false
		return nil
	})
	return fresh, err
}

// seqSource feeds seqs to CopyFrom as telemetry_seqs rows.
func seqSource(seqs []seqKey, ids map[string]int32, received time.Time) pgx.CopyFromSource {
	var vals [3]any // reused: CopyFrom encodes a row before asking for the next
	return pgx.CopyFromSlice(len(seqs), func(i int) ([]any, error) {
		k := seqs[i]
		vals[0], vals[1], vals[2] = ids[k.device], int64(k.seq), received
		return vals[:], nil
	})
}

var pointColumns = []string{"series", "ts", "num", "str"}

// writePoints writes pts (sorted, one per key) into telemetry_points,
// replacing the points stored at the same keys.
//
// COPY cannot replace rows, and INSERT … ON CONFLICT DO UPDATE from a
// staging table costs about three times a plain COPY into the partitions
// (speculative insertion, per-row routing). Rewrites of a stored
// (series, ts) are rare, so the points are first COPYed straight
// into telemetry_points under a savepoint; only when that hits a stored
// key (unique violation) is it rolled back and done the slow way, which
// the next upsertBatches batches then use directly.
func (t *Telemetry) writePoints(ctx context.Context, tx pgx.Tx, pts []pointRow) error {
	if t.upsertLeft == 0 {
		if _, err := tx.Exec(ctx, "SAVEPOINT fh_points"); err != nil {
			return err
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"telemetry_points"}, pointColumns, pointSource(pts))
		var pe *pgconn.PgError
		if err == nil || !errors.As(err, &pe) || pe.Code != "23505" {
			return err
		}
		if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT fh_points"); err != nil {
			return err
		}
		t.upsertLeft = upsertBatches
		t.m.upserts.Inc()
	} else {
		t.upsertLeft--
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{stageTable}, pointColumns, pointSource(pts)); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO telemetry_points (series, ts, num, str)
		SELECT series, ts, num, str FROM `+stageTable+` ORDER BY series, ts
		ON CONFLICT (series, ts) DO UPDATE SET num = excluded.num, str = excluded.str`)
	return err
}

// upsertBatches is how many batches go straight to the upsert after a
// direct COPY hit a stored key.
const upsertBatches = 8

// checkKinds refuses m when a point's kind differs from its series' kind
// or, for a new series, from an earlier point of m.
func checkKinds(m *payload.Message, kinds map[seriesKey]seriesInfo) error {
	for i := range m.Points {
		p := &m.Points[i]
		si, ok := kinds[seriesKey{m.Device, p.Metric}]
		have := si.kind
		if !ok {
			for j := range i {
				if q := &m.Points[j]; q.Metric == p.Metric {
					have, ok = q.Value.Kind, true
					break
				}
			}
		}
		if ok && have != p.Value.Kind {
			return fmt.Errorf("postgres: metric %q of device %q is a %s, got a %s: %w",
				p.Metric, m.Device, have, p.Value.Kind, store.ErrTypeMismatch)
		}
	}
	return nil
}

func sortedKeys[K comparable](m map[K]struct{}, cmp func(a, b K) int) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, cmp)
	return out
}

// pointSource feeds rows to CopyFrom as telemetry_points rows.
func pointSource(rows []pointRow) pgx.CopyFromSource {
	var vals [4]any // reused: CopyFrom encodes a row before asking for the next
	return pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
		r := &rows[i]
		vals[0], vals[1] = r.series, r.ts
		if r.v.Kind == payload.String {
			vals[2], vals[3] = nil, []byte(r.v.Str)
		} else {
			vals[2], vals[3] = r.v.Num, nil
		}
		return vals[:], nil
	})
}
