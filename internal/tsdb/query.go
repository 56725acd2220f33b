package tsdb

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/telquery"
	"github.com/fieldhub/fieldhub/payload"
)

// src is a normalized run of points with a priority: on equal timestamps
// the higher priority (the later write) wins.
type src struct {
	prio int64
	c    cols
}

// Priorities of in-memory data: above every chunk rowid.
const (
	frozenPrio = int64(1) << 62
	headPrio   = frozenPrio + 1<<30
)

// merge merges normalized sources into one normalized run.
func merge(srcs []src) cols {
	switch len(srcs) {
	case 0:
		return cols{}
	case 1:
		return srcs[0].c
	}
	slices.SortFunc(srcs, func(a, b src) int {
		if c := cmp.Compare(a.c.ts[0], b.c.ts[0]); c != 0 {
			return c
		}
		return cmp.Compare(a.prio, b.prio)
	})
	total := 0
	disjoint := true
	for i, s := range srcs {
		total += s.c.len()
		if i > 0 && s.c.ts[0] <= srcs[i-1].c.ts[srcs[i-1].c.len()-1] {
			disjoint = false
		}
	}
	str := srcs[0].c.str != nil
	out := cols{ts: make([]int64, 0, total)}
	if str {
		out.str = make([]string, 0, total)
	} else {
		out.num = make([]float64, 0, total)
	}
	if disjoint {
		for _, s := range srcs {
			out.ts = append(out.ts, s.c.ts...)
			if str {
				out.str = append(out.str, s.c.str...)
			} else {
				out.num = append(out.num, s.c.num...)
			}
		}
		return out
	}
	type ref struct {
		ts   int64
		prio int64
		s, i int32
	}
	refs := make([]ref, 0, total)
	for si, s := range srcs {
		for i, t := range s.c.ts {
			refs = append(refs, ref{t, s.prio, int32(si), int32(i)})
		}
	}
	slices.SortFunc(refs, func(a, b ref) int {
		if c := cmp.Compare(a.ts, b.ts); c != 0 {
			return c
		}
		return cmp.Compare(a.prio, b.prio)
	})
	for k, r := range refs {
		if k+1 < len(refs) && refs[k+1].ts == r.ts {
			continue
		}
		out.ts = append(out.ts, r.ts)
		if str {
			out.str = append(out.str, srcs[r.s].c.str[r.i])
		} else {
			out.num = append(out.num, srcs[r.s].c.num[r.i])
		}
	}
	return out
}

// memSnapshot returns the in-memory points of s in [lo, hi) as sources.
// Taken before the chunks are read, it cannot miss points that a
// concurrent checkpoint moves from memory to SQLite (at worst it sees
// them twice, which merging absorbs).
func (s *series) memSnapshot(lo, hi int64) []src {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []src
	for i, f := range s.frozen {
		if a, b := f.rangeIdx(lo, hi); b > a {
			out = append(out, src{prio: frozenPrio + int64(i), c: f.slice(a, b)})
		}
	}
	if s.head.len() > 0 {
		s.normalizeHead()
		if a, b := s.head.rangeIdx(lo, hi); b > a {
			h := s.head.slice(a, b)
			out = append(out, src{prio: headPrio, c: h.clone()})
		}
	}
	return out
}

// readSeries returns the points of s in [lo, hi), merging chunks and
// memory (last write wins per timestamp). With need ≥ 0 it returns at most
// need points and reports whether more exist; it then stops reading
// chunks as soon as the first need points are settled.
func (db *DB) readSeries(ctx context.Context, s *series, mem []src, lo, hi int64, need int) (cols, bool, error) {
	srcs := mem
	rows, err := db.rdb.QueryContext(ctx, `SELECT rowid, min_ts, data FROM chunks
		WHERE series_id = ? AND min_ts < ? AND max_ts >= ? ORDER BY min_ts`, s.id, hi, lo)
	if err != nil {
		return cols{}, false, fmt.Errorf("tsdb: query: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var rowid, minTS int64
		var data sql.RawBytes
		if err := rows.Scan(&rowid, &minTS, &data); err != nil {
			return cols{}, false, fmt.Errorf("tsdb: query: %w", err)
		}
		if need >= 0 && settled(srcs, minTS) > need {
			// Every point below minTS is final; enough of them?
			m := merge(srcs)
			if k, _ := m.rangeIdx(math.MinInt64, minTS); k > need {
				return m.slice(0, need), true, nil
			}
		}
		kind, c, err := decodeChunk(data)
		if err != nil {
			return cols{}, false, fmt.Errorf("tsdb: query: series %d: %w", s.id, err)
		}
		if kind != s.kind {
			return cols{}, false, fmt.Errorf("tsdb: query: series %d: %w: chunk of kind %s", s.id, ErrCorruptChunk, kind)
		}
		if a, b := c.rangeIdx(lo, hi); b > a {
			srcs = append(srcs, src{prio: rowid, c: c.slice(a, b)})
		}
	}
	if err := rows.Err(); err != nil {
		return cols{}, false, fmt.Errorf("tsdb: query: %w", err)
	}
	m := merge(srcs)
	if need >= 0 && m.len() > need {
		return m.slice(0, need), true, nil
	}
	return m, false, nil
}

// settled is an upper bound of the distinct points below ts.
func settled(srcs []src, ts int64) int {
	n := 0
	for _, s := range srcs {
		k, _ := s.c.rangeIdx(math.MinInt64, ts)
		n += k
	}
	return n
}

// Query answers q (see store.Querier). Raw points come sorted by time with
// one point per timestamp: when a series was written twice at the same
// timestamp, the last write wins. Series without points in the range are
// omitted. Downsampled series carry the kind of their values: Number for
// avg, min, max, sum and count, the metric's kind for last. With Metric
// "" an aggregate that a metric's kind does not support skips that metric;
// with Metric set it fails with store.ErrTypeMismatch.
func (db *DB) Query(ctx context.Context, q store.Query) (store.Result, error) {
	var res store.Result
	if db.isClosed() {
		return res, fmt.Errorf("tsdb: query: %w", store.ErrClosed)
	}
	if err := telquery.Check(q, ErrInvalidQuery); err != nil {
		return res, err
	}
	agg := q.Agg != store.AggNone
	var cur telquery.Cursor
	if q.After != "" {
		var err error
		if cur, err = telquery.Decode(q.After, ErrInvalidQuery); err != nil {
			return res, err
		}
	}
	d := db.lookupDevice(q.Device)
	if d == nil || q.To <= q.From {
		return res, nil
	}
	d.mu.Lock()
	var list []*series
	if q.Metric != "" {
		if s := d.series[q.Metric]; s != nil {
			list = append(list, s)
		}
	} else {
		for _, s := range d.series {
			list = append(list, s)
		}
	}
	d.mu.Unlock()
	slices.SortFunc(list, func(a, b *series) int { return cmp.Compare(a.metric, b.metric) })
	if agg {
		kept := list[:0]
		for _, s := range list {
			if aggOK(q.Agg, s.kind) {
				kept = append(kept, s)
			} else if q.Metric != "" {
				return res, fmt.Errorf("tsdb: query: aggregate %s of %s metric %q: %w", q.Agg, s.kind, s.metric, store.ErrTypeMismatch)
			}
		}
		list = kept
	}
	from := q.From
	if db.opts.Retention > 0 {
		from = max(from, db.opts.Now().Add(-db.opts.Retention).UnixNano())
	}
	// Lower bound of each series, then every memory snapshot before any
	// chunk is read.
	los := make([]int64, 0, len(list))
	keep := list[:0]
	for _, s := range list {
		lo := from
		if q.After != "" {
			if s.metric < cur.Metric {
				continue
			}
			if s.metric == cur.Metric {
				next, ok := cur.Next(q)
				if !ok {
					continue
				}
				lo = max(lo, next)
			}
		}
		if lo >= q.To {
			continue
		}
		keep = append(keep, s)
		los = append(los, lo)
	}
	list = keep
	mems := make([][]src, len(list))
	for i, s := range list {
		mems[i] = s.memSnapshot(los[i], q.To)
	}
	remaining := q.Limit
	limited := q.Limit > 0
	var last telquery.Cursor
	for i, s := range list {
		if err := ctx.Err(); err != nil {
			return store.Result{}, err
		}
		if limited && remaining == 0 {
			_, more, err := db.readSeries(ctx, s, mems[i], los[i], q.To, 0)
			if err != nil {
				return store.Result{}, err
			}
			if more {
				res.Next = last.Encode()
				break
			}
			continue
		}
		need := -1
		if limited && !agg {
			need = remaining
		}
		c, more, err := db.readSeries(ctx, s, mems[i], los[i], q.To, need)
		if err != nil {
			return store.Result{}, err
		}
		var pts []payload.Point
		kind := s.kind
		if agg {
			pts = aggregate(&c, s, q.From, q.Step, q.Agg)
			if q.Agg != store.AggLast {
				kind = payload.Number
			}
			if limited && len(pts) > remaining {
				pts, more = pts[:remaining], true
			}
		} else {
			pts = make([]payload.Point, c.len())
			for k := range pts {
				pts[k] = payload.Point{Metric: s.metric, TS: c.ts[k], Value: c.value(s.kind, k)}
			}
		}
		if len(pts) > 0 {
			res.Series = append(res.Series, store.Series{Metric: s.metric, Kind: kind, Points: pts})
			last = telquery.Cursor{Metric: s.metric, TS: pts[len(pts)-1].TS}
			if limited {
				remaining -= len(pts)
			}
		}
		if more {
			res.Next = last.Encode()
			break
		}
	}
	return res, nil
}

func aggOK(a store.Agg, k payload.ValueKind) bool {
	return k == payload.Number || a == store.AggCount || a == store.AggLast
}

// aggregate downsamples the normalized c into buckets [from+k·step,
// from+(k+1)·step); empty buckets are omitted.
func aggregate(c *cols, s *series, from, step int64, a store.Agg) []payload.Point {
	var out []payload.Point
	n := c.len()
	for i := 0; i < n; {
		k := uint64(c.ts[i]-from) / uint64(step)
		start := from + int64(k)*step
		j := i
		var sum float64
		mn, mx := math.Inf(1), math.Inf(-1)
		for j < n && uint64(c.ts[j]-start) < uint64(step) {
			if c.num != nil {
				v := c.num[j]
				sum += v
				mn = min(mn, v)
				mx = max(mx, v)
			}
			j++
		}
		cnt := j - i
		var v payload.Value
		switch a {
		case store.AggAvg:
			v = payload.NumberValue(sum / float64(cnt))
		case store.AggMin:
			v = payload.NumberValue(mn)
		case store.AggMax:
			v = payload.NumberValue(mx)
		case store.AggSum:
			v = payload.NumberValue(sum)
		case store.AggCount:
			v = payload.NumberValue(float64(cnt))
		case store.AggLast:
			v = c.value(s.kind, j-1)
		}
		out = append(out, payload.Point{Metric: s.metric, TS: start, Value: v})
		i = j
	}
	return out
}

// Latest returns the last point (greatest timestamp; last write on a tie)
// of each metric of device, ordered by metric. It reads memory only.
func (db *DB) Latest(ctx context.Context, device string) ([]payload.Point, error) {
	if db.isClosed() {
		return nil, fmt.Errorf("tsdb: latest: %w", store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d := db.lookupDevice(device)
	if d == nil {
		return nil, nil
	}
	d.mu.Lock()
	list := make([]*series, 0, len(d.series))
	for _, s := range d.series {
		list = append(list, s)
	}
	d.mu.Unlock()
	slices.SortFunc(list, func(a, b *series) int { return cmp.Compare(a.metric, b.metric) })
	var out []payload.Point
	for _, s := range list {
		s.mu.Lock()
		if s.hasLast {
			out = append(out, payload.Point{Metric: s.metric, TS: s.lastTS, Value: s.lastVal})
		}
		s.mu.Unlock()
	}
	return out, nil
}
