// Package tsdb is fieldhub's embedded telemetry store: a group-committed
// write-ahead log in front of compressed chunks kept in SQLite. It
// implements store.Telemetry and store.AsyncAppender.
//
// # Write path
//
// Append and AppendAsync admit a message under its device's lock: the
// (device, seq) duplicate check (an anti-replay window, see window), the
// value-kind check and the queueing happen atomically per device. One
// committer goroutine takes everything queued, encodes the records into
// one buffer, writes it with one write and one fdatasync, applies the
// records to the in-memory head, then completes every caller in queue
// order: many publishers share one sync. A failed write or sync makes the
// store fail-stop (Err, ErrFailed); nothing is acknowledged after it.
//
// # Files
//
//	dir/LOCK            advisory lock: one process per store
//	dir/wal/*.wal       WAL segments (format in wal.go and record.go)
//	dir/wal/corrupt/    damaged segments kept after a salvage
//	dir/telemetry.db    SQLite (journal_mode=WAL, synchronous=FULL):
//	                    series(id, device, metric, kind, last_ts, last_bits, last_str)
//	                    chunks(series_id, min_ts, max_ts, count, data)  -- a rowid table
//	                    dedup(device, hwm, window)
//	                    meta(key, value): format, wal_start
//
// # Checkpoints, chunks and compaction
//
// A checkpoint (every CheckpointInterval, when CheckpointWALBytes of WAL
// were written, and at Close) starts a new WAL segment while the committer
// is paused, freezes every series' head, writes the frozen points as
// chunks (split at hour boundaries) with the dedup state in one SQLite
// transaction, records the new segment as wal_start, and removes the
// older segments. Open replays the segments from wal_start. Until their
// transaction commits, frozen points stay visible to queries.
//
// Compaction merges the chunks of a series that lie in an hour that is
// over (by two checkpoint intervals) into one chunk, and those of a day
// that is over into one chunk of at most MaxChunkPoints points, so a
// closed day of a 1 Hz metric is one chunk of 86,400 points. Chunk
// encoding is in chunk.go: delta-of-delta timestamps in the largest power
// of ten dividing them, decimal-aware integer deltas for numbers (XOR when
// values are not short decimals), bit-packed bools, dictionary strings,
// and DEFLATE over the whole.
//
// # Semantics
//
// Points of a series may arrive in any order. Per (series, timestamp) the
// last write wins, in queries and in storage. Latest is the point with the
// greatest timestamp. A series keeps the kind of its first point; a
// message with a point of another kind is refused whole with
// store.ErrTypeMismatch. DeleteDevice writes a WAL tombstone, so a
// deletion survives a crash and a replay.
package tsdb
