// Package fsutil holds the file-system calls the durable logs share (the
// hub's write-ahead log and the edge's spool): a data sync that skips
// timestamps, and an exclusive lock so that two processes never open the
// same folder.
package fsutil
