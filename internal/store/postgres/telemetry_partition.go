package postgres

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// partitionLock is the advisory lock key (two-key form) held while
// creating a partition, so that hubs creating the same one take turns.
const partitionLock = 0x66687470 // "fhtp"

const (
	dayNs           = int64(24 * time.Hour)
	partitionPrefix = "telemetry_points_"
	minDay          = math.MinInt64/dayNs - 1 // dayOf(math.MinInt64)
	maxDay          = math.MaxInt64 / dayNs   // dayOf(math.MaxInt64)
)

// dayOf returns the UTC day number (days since 1970-01-01) of ts.
func dayOf(ts int64) int64 {
	d := ts / dayNs
	if ts%dayNs < 0 {
		d--
	}
	return d
}

// partitionName names the partition of day d: telemetry_points_YYYYMMDD.
func partitionName(d int64) string {
	return partitionPrefix + time.Unix(d*86400, 0).UTC().Format("20060102")
}

// parsePartitionName returns the day of a partition named by partitionName.
func parsePartitionName(name string) (int64, bool) {
	s, ok := strings.CutPrefix(name, partitionPrefix)
	if !ok || len(s) != 8 {
		return 0, false
	}
	tm, err := time.Parse("20060102", s)
	if err != nil {
		return 0, false
	}
	return dayOf(tm.UnixNano()), true
}

// dayBounds returns the bounds of day d's partition as SQL literals.
func dayBounds(d int64) (lo, hi string) {
	lo, hi = "MINVALUE", "MAXVALUE"
	if d > minDay {
		lo = strconv.FormatInt(d*dayNs, 10)
	}
	if d < maxDay {
		hi = strconv.FormatInt((d+1)*dayNs, 10)
	}
	return lo, hi
}

// ensurePartitions creates the partitions of days that this store has not
// yet seen to exist. Creating a partition locks telemetry_points
// exclusively for a moment, so it happens in its own short transaction,
// not in a batch's.
func (t *Telemetry) ensurePartitions(ctx context.Context, days []int64) error {
	t.pmu.Lock()
	var missing []int64
	for _, d := range days {
		if !t.parts[d] && !slices.Contains(missing, d) {
			missing = append(missing, d)
		}
	}
	t.pmu.Unlock()
	for _, d := range missing {
		lo, hi := dayBounds(d)
		name := partitionName(d)
		err := pgx.BeginFunc(ctx, t.db.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, 0)", partitionLock); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s PARTITION OF telemetry_points FOR VALUES FROM (%s) TO (%s)",
				pgx.Identifier{name}.Sanitize(), lo, hi))
			return err
		})
		if err != nil {
			return fmt.Errorf("postgres: creating partition %s: %w", name, err)
		}
		t.pmu.Lock()
		t.parts[d] = true
		t.pmu.Unlock()
	}
	return nil
}

// maintenanceLoop makes the partitions of today and tomorrow and applies
// retention every MaintenanceInterval until ctx ends.
func (t *Telemetry) maintenanceLoop(ctx context.Context) {
	defer t.wg.Done()
	tick := time.NewTicker(t.o.MaintenanceInterval)
	defer tick.Stop()
	for {
		if _, err := t.ApplyRetention(ctx); err != nil && ctx.Err() == nil {
			t.log.Warn("telemetry retention failed", "err", err)
		}
		today := dayOf(t.o.Now().UnixNano())
		if err := t.ensurePartitions(ctx, []int64{today, today + 1}); err != nil && ctx.Err() == nil {
			t.log.Warn("creating telemetry partitions failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// ApplyRetention drops the partitions whose whole day is older than
// now-Retention and deletes the dedup keys received before it. It returns
// the number of partitions dropped. Without Retention it does nothing.
// The maintenance loop calls it; hubs sharing the database may all run it.
func (t *Telemetry) ApplyRetention(ctx context.Context) (int, error) {
	if t.o.Retention <= 0 {
		return 0, nil
	}
	cutoffTime := t.o.Now().Add(-t.o.Retention)
	cutoff := cutoffTime.UnixNano()
	rows, err := t.db.pool.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'telemetry_points'::regclass`)
	if err != nil {
		return 0, fmt.Errorf("postgres: retention: listing partitions: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("postgres: retention: listing partitions: %w", err)
	}
	slices.Sort(names)
	dropped := 0
	for _, name := range names {
		d, ok := parsePartitionName(name)
		if !ok || d >= maxDay || (d+1)*dayNs > cutoff {
			continue
		}
		// Dropping a partition locks telemetry_points exclusively: give
		// up (until the next round) rather than queue every writer
		// behind a long query.
		err := pgx.BeginFunc(ctx, t.db.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '5s'"); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{name}.Sanitize())
			return err
		})
		if err != nil {
			return dropped, fmt.Errorf("postgres: retention: dropping %s: %w", name, err)
		}
		t.pmu.Lock()
		delete(t.parts, d)
		t.pmu.Unlock()
		dropped++
		t.m.partitionsDropped.Inc()
		t.log.Info("dropped telemetry partition", "partition", name)
	}
	if _, err := t.db.pool.Exec(ctx, "DELETE FROM telemetry_seqs WHERE received < $1", cutoffTime); err != nil {
		return dropped, fmt.Errorf("postgres: retention: pruning dedup keys: %w", err)
	}
	return dropped, nil
}
