package postgres

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/telquery"
	"github.com/fieldhub/fieldhub/payload"
)

var errInvalidQuery = fmt.Errorf("postgres: %w", store.ErrInvalidQuery)

// Query answers q (see store.Querier): raw points in (metric, ts) order
// with one point per timestamp, or buckets [From+k·Step, From+(k+1)·Step)
// computed in SQL. With Metric "" an aggregate that a metric's kind does
// not support skips that metric; with Metric set it fails with
// store.ErrTypeMismatch. With Retention set, points older than
// now-Retention are not returned.
func (t *Telemetry) Query(ctx context.Context, q store.Query) (store.Result, error) {
	var res store.Result
	if t.isClosed() {
		return res, fmt.Errorf("postgres: query: %w", store.ErrClosed)
	}
	if err := telquery.Check(q, errInvalidQuery); err != nil {
		return res, err
	}
	agg := q.Agg != store.AggNone
	// Without a cursor, (metric, ts) >= ("", MinInt64) holds for every row.
	// With one, cur.TS becomes where its metric resumes.
	cur := telquery.Cursor{TS: math.MinInt64}
	if q.After != "" {
		var err error
		if cur, err = telquery.Decode(q.After, errInvalidQuery); err != nil {
			return res, err
		}
		next, ok := cur.Next(q)
		if !ok {
			// Nothing after in this metric (ts < To ≤ MaxInt64).
			next = math.MaxInt64
		}
		cur.TS = next
	}
	if q.To <= q.From {
		return res, nil
	}
	from := q.From
	if t.o.Retention > 0 {
		from = max(from, t.o.Now().Add(-t.o.Retention).UnixNano())
	}

	series, err := t.series(ctx, q.Device, q.Metric)
	if err != nil {
		return res, err
	}
	// The series to read, in metric order, from the cursor's on.
	var metrics []string
	for metric, si := range series {
		if agg && si.kind != payload.Number && q.Agg != store.AggCount && q.Agg != store.AggLast {
			if q.Metric != "" {
				return res, fmt.Errorf("postgres: query: aggregate %s of %s metric %q: %w", q.Agg, si.kind, metric, store.ErrTypeMismatch)
			}
			continue // skipped
		}
		if metric >= cur.Metric {
			metrics = append(metrics, metric)
		}
	}
	if len(metrics) == 0 {
		return res, nil
	}
	slices.Sort(metrics)

	// One query per series ($1), on its primary key: points (or buckets)
	// with $2 <= ts < $3 in ts order, at most $4.
	const where = `series = $1 AND ts >= $2 AND ts < $3`
	var sql string
	switch {
	case !agg:
		sql = `SELECT ts, num, str FROM telemetry_points WHERE ` + where + ` ORDER BY ts LIMIT $4`
	case q.Agg == store.AggLast:
		sql = `SELECT DISTINCT ON (b) b, num, str FROM (
			SELECT ts, num, str, ` + bucketExpr(q, "$5") + ` AS b FROM telemetry_points WHERE ` + where + `
		) s ORDER BY b, ts DESC LIMIT $4`
	default:
		fn := map[store.Agg]string{
			store.AggAvg:   "avg(num)",
			store.AggMin:   "min(num)",
			store.AggMax:   "max(num)",
			store.AggSum:   "sum(num)",
			store.AggCount: "count(*)::double precision",
		}[q.Agg]
		sql = `SELECT b, ` + fn + `, NULL::bytea FROM (
			SELECT num, ` + bucketExpr(q, "$5") + ` AS b FROM telemetry_points WHERE ` + where + `
		) s GROUP BY b ORDER BY b LIMIT $4`
	}
	args := func(metric string, limit *int64) []any {
		lo := from
		if metric == cur.Metric {
			lo = max(lo, cur.TS)
		}
		a := []any{series[metric].id, lo, q.To, limit}
		if agg {
			a = append(a, q.Step)
		}
		return a
	}

	var (
		metric string
		ts     int64
		num    pgtype.Float8
		str    []byte
		n      int
		last   telquery.Cursor
	)
	scan := []any{&ts, &num, &str}
	row := func() error {
		n++
		if q.Limit > 0 && n > q.Limit {
			res.Next = last.Encode()
			return nil
		}
		kind := series[metric].kind
		if agg && q.Agg != store.AggLast {
			kind = payload.Number
		}
		var v payload.Value
		switch kind {
		case payload.Number:
			v = payload.NumberValue(num.Float64)
		case payload.Bool:
			v = payload.BoolValue(num.Float64 != 0)
		case payload.String:
			v = payload.StringValue(string(str))
		}
		if k := len(res.Series); k == 0 || res.Series[k-1].Metric != metric {
			res.Series = append(res.Series, store.Series{Metric: metric, Kind: kind})
		}
		s := &res.Series[len(res.Series)-1]
		s.Points = append(s.Points, payload.Point{Metric: metric, TS: ts, Value: v})
		last = telquery.Cursor{Metric: metric, TS: ts}
		return nil
	}

	if q.Limit == 0 {
		// Everything: all the series' queries in one round trip.
		b := &pgx.Batch{}
		for _, m := range metrics {
			b.Queue(sql, args(m, nil)...).Query(func(rows pgx.Rows) error {
				metric = m
				_, err := pgx.ForEachRow(rows, scan, row)
				return err
			})
		}
		if err := t.db.pool.SendBatch(ctx, b).Close(); err != nil {
			return store.Result{}, fmt.Errorf("postgres: query: %w", err)
		}
		return res, nil
	}
	// A page: series after series until one more than the limit (which
	// tells that more remain) is read.
	for _, m := range metrics {
		left := int64(q.Limit + 1 - n)
		if left <= 0 {
			break
		}
		rows, err := t.db.pool.Query(ctx, sql, args(m, &left)...)
		if err != nil {
			return store.Result{}, fmt.Errorf("postgres: query: %w", err)
		}
		metric = m
		if _, err := pgx.ForEachRow(rows, scan, row); err != nil {
			return store.Result{}, fmt.Errorf("postgres: query: %w", err)
		}
	}
	return res, nil
}

// bucketExpr is the SQL of a row's bucket start, From + k·Step (step is
// the parameter holding Step): in bigint when ts - From cannot overflow in
// [From, To), else in numeric.
func bucketExpr(q store.Query, step string) string {
	if uint64(q.To-1)-uint64(q.From) <= math.MaxInt64 {
		return fmt.Sprintf("('%d'::bigint + ((ts - '%d'::bigint) / %s::bigint) * %[3]s::bigint)", q.From, q.From, step)
	}
	return fmt.Sprintf("('%d'::numeric + trunc((ts::numeric - '%d'::numeric) / %s::bigint) * %[3]s::bigint)::bigint", q.From, q.From, step)
}

// series returns the ids and kinds of the device's series by metric (one
// when metric is set).
func (t *Telemetry) series(ctx context.Context, device, metric string) (map[string]seriesInfo, error) {
	rows, err := t.db.pool.Query(ctx, `SELECT metric, kind, id FROM telemetry_series
		WHERE device = $1 AND ($2 = '' OR metric = $2)`, device, metric)
	if err != nil {
		return nil, fmt.Errorf("postgres: query: %w", err)
	}
	out := map[string]seriesInfo{}
	var m string
	var k int16
	var id int64
	if _, err := pgx.ForEachRow(rows, []any{&m, &k, &id}, func() error {
		out[m] = seriesInfo{id: id, kind: payload.ValueKind(k)}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("postgres: query: %w", err)
	}
	return out, nil
}

// Latest returns the point with the greatest timestamp of each metric of
// device, ordered by metric: one backward index probe per series.
func (t *Telemetry) Latest(ctx context.Context, device string) ([]payload.Point, error) {
	if t.isClosed() {
		return nil, fmt.Errorf("postgres: latest: %w", store.ErrClosed)
	}
	rows, err := t.db.pool.Query(ctx, `SELECT s.metric, s.kind, l.ts, l.num, l.str
		FROM telemetry_series s CROSS JOIN LATERAL (
			SELECT ts, num, str FROM telemetry_points p
			WHERE p.series = s.id ORDER BY ts DESC LIMIT 1
		) l
		WHERE s.device = $1 ORDER BY s.metric`, device)
	if err != nil {
		return nil, fmt.Errorf("postgres: latest: %w", err)
	}
	var (
		out    []payload.Point
		metric string
		kind   int16
		ts     int64
		num    pgtype.Float8
		str    []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&metric, &kind, &ts, &num, &str}, func() error {
		var v payload.Value
		switch payload.ValueKind(kind) {
		case payload.Bool:
			v = payload.BoolValue(num.Float64 != 0)
		case payload.String:
			v = payload.StringValue(string(str))
		default:
			v = payload.NumberValue(num.Float64)
		}
		out = append(out, payload.Point{Metric: metric, TS: ts, Value: v})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: latest: %w", err)
	}
	return out, nil
}

// DeleteDevice removes the device's points, series and dedup keys in one
// transaction, holding the device's advisory lock exclusively so that no
// batch (of any hub) writes the device meanwhile.
func (t *Telemetry) DeleteDevice(ctx context.Context, device string) error {
	if t.isClosed() {
		return fmt.Errorf("postgres: delete device: %w", store.ErrClosed)
	}
	err := pgx.BeginFunc(ctx, t.db.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue("SELECT pg_advisory_xact_lock($1, $2)", deviceLockClass, deviceBucket(device))
		b.Queue(`DELETE FROM telemetry_points
			WHERE series = ANY(ARRAY(SELECT id FROM telemetry_series WHERE device = $1))`, device)
		b.Queue("DELETE FROM telemetry_series WHERE device = $1", device)
		b.Queue(`DELETE FROM telemetry_seqs
			WHERE device = (SELECT id FROM telemetry_devices WHERE device = $1)`, device)
		b.Queue("DELETE FROM telemetry_devices WHERE device = $1", device)
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("postgres: delete device %q: %w", device, err)
	}
	return nil
}
