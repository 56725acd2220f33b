package tsdb

import (
	"fmt"
	"sync"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/payload"
)

type entryKind uint8

const (
	entMessage entryKind = iota // a record to write and apply
	entDone                     // nothing to write (duplicate or refused); completes in order
	entDelete                   // a device tombstone
)

// entry is one queued operation.
type entry struct {
	kind   entryKind
	dup    bool
	err    error
	m      *payload.Message
	dev    *device
	ser    []*series // entMessage: the series of each point
	delIDs []int64   // entDelete: the deleted device's series
	done   func(bool, error)
	w      *waiter
}

type result struct {
	dup bool
	err error
}

// waiter is how a synchronous caller waits for its entry.
type waiter struct{ ch chan result }

var waiterPool = sync.Pool{New: func() any { return &waiter{ch: make(chan result, 1)} }}

// queue is the committer's input.
type queue struct {
	mu      sync.Mutex
	space   *sync.Cond // signalled when entries complete or on close
	pending []entry
	slab    []*series // backing store of pending entries' ser
	closed  bool
	kick    chan struct{}
}

func (q *queue) init() {
	q.space = sync.NewCond(&q.mu)
	q.kick = make(chan struct{}, 1)
}

func (q *queue) wake() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// reserve takes a slot among MaxPending, waiting while none is free.
func (db *DB) reserve() error {
	max := int64(db.opts.MaxPending)
	for {
		if db.inflight.Add(1) <= max {
			return nil
		}
		db.inflight.Add(-1)
		db.q.mu.Lock()
		db.waiting.Add(1)
		for db.inflight.Load() >= max && !db.q.closed {
			db.q.space.Wait()
		}
		db.waiting.Add(-1)
		closed := db.q.closed
		db.q.mu.Unlock()
		if closed {
			return fmt.Errorf("tsdb: append: %w", store.ErrClosed)
		}
	}
}

// release frees n slots.
func (db *DB) release(n int) {
	db.inflight.Add(-int64(n))
	if db.waiting.Load() > 0 {
		db.q.mu.Lock()
		db.q.space.Broadcast()
		db.q.mu.Unlock()
	}
}

// push queues e (with its series) for the committer.
func (db *DB) push(e *entry, ser []*series) error {
	q := &db.q
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		db.release(1)
		return fmt.Errorf("tsdb: append: %w", store.ErrClosed)
	}
	if len(ser) > 0 {
		off := len(q.slab)
		q.slab = append(q.slab, ser...)
		e.ser = q.slab[off:len(q.slab):len(q.slab)]
	}
	q.pending = append(q.pending, *e)
	first := len(q.pending) == 1
	q.mu.Unlock()
	if first {
		q.wake()
	}
	return nil
}

// commitLoop is the committer: it takes every queued entry, writes their
// records with one write and one sync, applies them to the head, then
// completes them in order.
func (db *DB) commitLoop() {
	defer db.wg.Done()
	q := &db.q
	for {
		q.mu.Lock()
		for len(q.pending) == 0 {
			if q.closed {
				q.mu.Unlock()
				return
			}
			q.mu.Unlock()
			<-q.kick
			q.mu.Lock()
		}
		batch, slab := q.pending, q.slab
		q.pending, q.slab = db.spare, db.spareSlab
		q.mu.Unlock()

		db.commit(batch)

		clear(batch)
		clear(slab)
		db.spare, db.spareSlab = batch[:0], slab[:0]
	}
}

// maxKeptBuffer bounds the write buffer kept between commits.
const maxKeptBuffer = 8 << 20

func (db *DB) commit(batch []entry) {
	db.applyMu.Lock()
	err := db.Err()
	records, points := 0, 0
	if err == nil {
		buf := db.wbuf[:0]
		for i := range batch {
			e := &batch[i]
			var start int
			switch e.kind {
			case entMessage:
				buf, start = beginFrame(buf)
				buf = appendMessageRecord(buf, e.m)
			case entDelete:
				buf, start = beginFrame(buf)
				buf = appendDeleteRecord(buf, e.dev.name)
			default:
				continue
			}
			finishFrame(buf, start)
			records++
		}
		if records > 0 {
			t0 := time.Now()
			if werr := db.wal.write(buf); werr != nil {
				err = db.fail(werr)
			} else {
				db.m.commitSeconds.Observe(time.Since(t0).Seconds())
				db.m.walFsyncs.Inc()
				db.m.walBytes.Add(float64(len(buf)))
				db.m.commitRecords.Observe(float64(records))
				db.walSinceCkpt += int64(len(buf))
			}
			db.updateWALStats()
		}
		if cap(buf) <= maxKeptBuffer {
			db.wbuf = buf
		} else {
			db.wbuf = nil
		}
	}
	messages := 0
	if err == nil {
		for i := range batch {
			e := &batch[i]
			switch e.kind {
			case entMessage:
				db.apply(e.dev, e.ser, e.m)
				messages++
				points += len(e.m.Points)
			case entDelete:
				db.applyDelete(e.dev, e.delIDs)
			}
		}
	}
	kick := db.walSinceCkpt >= db.opts.CheckpointWALBytes
	db.applyMu.Unlock()

	if messages > 0 {
		db.m.messages.Add(float64(messages))
		db.m.points.Add(float64(points))
	}
	for i := range batch {
		e := &batch[i]
		r := result{dup: e.dup, err: e.err}
		if r.err == nil && err != nil {
			r.dup, r.err = false, err
		}
		if e.w != nil {
			e.w.ch <- r
		} else if e.done != nil {
			e.done(r.dup, r.err)
		}
	}
	db.release(len(batch))
	if kick {
		select {
		case db.ckptKick <- struct{}{}:
		default:
		}
	}
}

// apply adds a durable message to the head and the durable dedup state.
// applyMu is held (or the store is replaying).
func (db *DB) apply(d *device, ser []*series, m *payload.Message) {
	for i := range m.Points {
		p := &m.Points[i]
		s := ser[i]
		s.mu.Lock()
		s.add(p.TS, p.Value)
		s.mu.Unlock()
		s.applied = true
	}
	db.headPoints.Add(int64(len(m.Points)))
	if m.HasSeq {
		d.durable.accept(m.Seq)
		d.dedupDirty = true
	}
}

// applyDelete records a durable tombstone: the next checkpoint deletes the
// device's rows. applyMu is held (or the store is replaying).
func (db *DB) applyDelete(d *device, ids []int64) {
	var n int64
	for _, s := range d.series {
		s.mu.Lock()
		n += int64(s.head.len())
		s.mu.Unlock()
	}
	db.headPoints.Add(-n)
	db.pendingDeletes = append(db.pendingDeletes, deletion{device: d.name, ids: ids})
}
