package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Policy says what Append does when the spool would exceed
// Options.MaxBytes (or the disk is full).
type Policy int

const (
	// DropOldest deletes the oldest whole segments, acknowledged or not,
	// and counts every unacknowledged record lost (reason "overflow").
	DropOldest Policy = iota
	// RefuseNew fails the append with ErrFull (counted, reason "refused")
	// and keeps what is spooled.
	RefuseNew
)

func (p Policy) String() string {
	switch p {
	case DropOldest:
		return "drop-oldest"
	case RefuseNew:
		return "refuse-new"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// Defaults of Options.
const (
	DefaultSegmentBytes = 8 << 20
	DefaultMaxBytes     = 1 << 30
	DefaultAckInterval  = 250 * time.Millisecond
	// minSegmentBytes is the smallest segment accepted.
	minSegmentBytes = 1 << 10
)

// Options configure a spool. The zero value is valid: 8 MiB segments, at
// most 1 GiB, no age bound, DropOldest, no encryption, commit as soon as
// the committer is free.
type Options struct {
	// SegmentBytes is the size at which a segment is closed and the next
	// one started (default 8 MiB). A record never spans segments, so it is
	// also the bound on a record. When it is left at zero and MaxBytes is
	// below 4 × 8 MiB, it defaults to MaxBytes/4.
	SegmentBytes int64
	// MaxBytes bounds the bytes of all segments (default 1 GiB). It must
	// be at least twice SegmentBytes. Overflow says what happens at the
	// bound.
	MaxBytes int64
	// MaxAge drops whole segments whose newest record is older than this
	// (counted, reason "age"), checked every AckInterval. 0: no bound.
	MaxAge time.Duration
	// Overflow is the policy at MaxBytes and when the disk is full.
	Overflow Policy
	// Key, when set, is a 32-byte AES-256 key: every record body (key,
	// time, data) is sealed with AES-GCM and a random nonce per record.
	// Opening a spool written with another key, or an encrypted spool
	// without a key, fails with ErrWrongKey. A spool written without a key
	// may be reopened with one: old segments stay readable, new ones are
	// encrypted.
	Key []byte
	// SyncInterval is how long the committer lingers to gather more
	// appends into one write and sync. 0: commit as soon as the committer
	// is free (concurrent appends still share a sync).
	SyncInterval time.Duration
	// AckInterval is how often the acknowledged position is persisted and
	// fully acknowledged segments are deleted (default 250 ms); also the
	// period of the MaxAge check. After a crash, records acknowledged
	// within the last AckInterval may be delivered again.
	AckInterval time.Duration
	// MaxPendingBytes bounds appends queued but not yet written (default
	// 32 MiB); Append and AppendAsync wait for room.
	MaxPendingBytes int64
	// Logger receives damage, drop and error reports (default: discard).
	Logger *slog.Logger
	// Registerer, when set, receives the spool's metrics (fieldhub_spool_*).
	// One open spool per registerer; Close unregisters them.
	Registerer prometheus.Registerer
	// Now is the clock for record times and MaxAge (default time.Now).
	Now func() time.Time

	// fs replaces the file system in tests.
	fs fsys
}

// ensureDefaults fills defaults and validates o.
func (o *Options) ensureDefaults() error {
	if o.MaxBytes < 0 || o.SegmentBytes < 0 || o.MaxAge < 0 || o.SyncInterval < 0 ||
		o.AckInterval < 0 || o.MaxPendingBytes < 0 {
		return fmt.Errorf("%w: negative size or duration", ErrInvalidOptions)
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.SegmentBytes == 0 {
		o.SegmentBytes = min(DefaultSegmentBytes, o.MaxBytes/4)
	}
	if o.SegmentBytes < minSegmentBytes {
		return fmt.Errorf("%w: SegmentBytes %d below %d", ErrInvalidOptions, o.SegmentBytes, minSegmentBytes)
	}
	if o.MaxBytes < 2*o.SegmentBytes {
		return fmt.Errorf("%w: MaxBytes %d below twice SegmentBytes %d", ErrInvalidOptions, o.MaxBytes, o.SegmentBytes)
	}
	if o.Overflow != DropOldest && o.Overflow != RefuseNew {
		return fmt.Errorf("%w: unknown overflow policy %d", ErrInvalidOptions, int(o.Overflow))
	}
	if o.Key != nil && len(o.Key) != 32 {
		return fmt.Errorf("%w: Key must be 32 bytes, got %d", ErrInvalidOptions, len(o.Key))
	}
	if o.AckInterval == 0 {
		o.AckInterval = DefaultAckInterval
	}
	if o.MaxPendingBytes == 0 {
		o.MaxPendingBytes = 32 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.fs == nil {
		o.fs = osFS{}
	}
	return nil
}

// Errors returned by the spool; test with errors.Is.
var (
	// ErrFull: the record was not spooled because the spool is at
	// MaxBytes under RefuseNew, or the disk is full. Counted as a drop.
	ErrFull = errors.New("spool: full")
	// ErrClosed: the spool is closed.
	ErrClosed = errors.New("spool: closed")
	// ErrTooLarge: the record does not fit in a segment.
	ErrTooLarge = errors.New("spool: record too large")
	// ErrWrongKey: the spool was written with another encryption key, or
	// is encrypted and no key was given.
	ErrWrongKey = errors.New("spool: wrong or missing encryption key")
	// ErrInvalidOptions: Options failed validation.
	ErrInvalidOptions = errors.New("spool: invalid options")
	// ErrBadAck: Ack named an ID that was never delivered by Read.
	ErrBadAck = errors.New("spool: acknowledgement beyond the records delivered")
	// ErrLocked: another process has the spool open.
	ErrLocked = errors.New("spool: directory in use by another process")
)

// Record is one spooled message.
type Record struct {
	// ID is assigned by the spool: strictly increasing in append order,
	// never reused, also across restarts.
	ID uint64
	// Key is the caller's key (a sensor id, say).
	Key string
	// Time is when the record was appended (Options.Now).
	Time time.Time
	// Data is the payload. It is not shared with the spool.
	Data []byte
}

// DropStats counts unacknowledged records lost or refused, by reason.
type DropStats struct {
	Overflow uint64 // deleted by DropOldest at MaxBytes or on a full disk
	Age      uint64 // deleted by MaxAge
	Refused  uint64 // refused by RefuseNew at MaxBytes
	NoSpace  uint64 // refused because the disk is full (ENOSPC, EDQUOT)
}

// Total is the sum of all reasons.
func (d DropStats) Total() uint64 { return d.Overflow + d.Age + d.Refused + d.NoSpace }

// DamageStats counts damaged ranges found in segments: each is at least
// one record lost (the count of records inside a damaged range cannot be
// known). Torn is a damaged end of a segment (truncated at open), Corrupt a
// damaged range followed by valid records, or a record whose encryption
// does not authenticate.
type DamageStats struct {
	Torn    uint64
	Corrupt uint64
}

// Stats is a snapshot of the spool's state and counters since Open.
type Stats struct {
	Records   int64         // unacknowledged records on disk
	Bytes     int64         // bytes of all segments
	Segments  int           // segment files
	OldestAge time.Duration // age of the oldest unacknowledged record, to within one Read batch (0: none)
	NextID    uint64        // the ID the next record will get
	AckedID   uint64        // every record with an ID up to this one is acknowledged

	Appended    uint64 // records made durable
	Replayed    uint64 // records returned by Read (again after Rewind)
	Acked       uint64 // records acknowledged
	WriteErrors uint64 // appends failed by a write or sync error other than a full disk
	Syncs       uint64 // group commits: segment syncs after writing records
	Drops       DropStats
	Damage      DamageStats
}
