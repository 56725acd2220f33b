// Package spool is the edge gateway's durable store-and-forward queue: a
// checksummed, segmented log on local disk between the sensors and the
// uplink to the hub.
//
// # Contract
//
// Append returns once the record is durable (written and synced; one
// committer goroutine writes everything queued with one write and one
// sync, so concurrent appenders share the cost), so the edge can send a
// sensor its PUBACK. Records get IDs that increase in append order and are
// never reused, also across restarts. Read delivers records in ID order
// from a cursor; Ack(id) tells the spool the hub has every record up to
// id; Rewind (after the uplink reconnects) makes Read start again at the
// oldest unacknowledged record. A segment file is deleted when all its
// records are acknowledged, or by a counted policy: MaxBytes with
// DropOldest (reason "overflow") or RefuseNew (ErrFull, reason
// "refused"), MaxAge (reason "age"), a full disk (DropOldest, or ErrFull
// with reason "nospace"). Every drop is counted exactly, in Stats and in
// fieldhub_spool_dropped_total: records never delivered are counted when
// their segment is deleted; records delivered but not yet acknowledged are
// counted at the next Rewind (or Close) unless an Ack shows they reached
// the hub first. So the drop counter equals the records the hub never
// acknowledged.
//
// The acknowledged position is persisted every AckInterval and at Close:
// after a crash, up to one AckInterval of acknowledged records may be
// delivered again (the hub deduplicates); an unacknowledged record is
// never lost. One Read returns records of one segment at most.
//
// # Files
//
//	dir/LOCK        advisory lock: one process per spool
//	dir/ack         acknowledged position and next ID (two checksummed slots)
//	dir/*.seg       segments, named by sequence number (format in format.go)
//
// # Damage
//
// Every record carries a sync marker, its length, its ID and a CRC-32C
// over header and body. Open reads every segment: a bad record (a write
// cut by power loss, a flipped bit) is skipped by scanning forward for the
// next valid marker and CRC, so damage never hides the records after it;
// damage at the end of a segment (torn) is truncated away. Damage is
// counted (Stats.Damage, fieldhub_spool_damaged_records_total{kind}) and
// logged. A write or sync error fails the appends of that commit (nothing
// unsynced is acknowledged), cuts the segment back, and continues in a new
// segment after a failed sync.
//
// # Encryption
//
// With Options.Key, every record body (key, time, data) is sealed with
// AES-256-GCM under a random 96-bit nonce, with the record ID as
// additional data; headers (IDs, lengths, CRCs) stay in the clear. Each
// segment header holds a key check value, so a wrong key is refused at
// Open (ErrWrongKey) instead of reading as damage. Random nonces keep the
// chance of a repeat below 2^-32 for the first 2^32 records under one key:
// rotate the key (drain, delete the spool, reopen) well before that.
package spool
