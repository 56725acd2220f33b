package spool

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
)

// On-disk format (all integers little endian).
//
// A segment file is named %016x.seg after its sequence number and starts
// with a 64-byte header:
//
//	[0:8]   magic "FHSPOOL\x00"
//	[8:10]  format version (1)
//	[10:12] flags (bit 0: records are encrypted)
//	[12:16] reserved, zero
//	[16:24] segment sequence number
//	[24:32] base ID: the next ID when the segment was created (every record
//	        in it has an ID >= base)
//	[32:40] creation time, Unix nanoseconds
//	[40:56] key check value (encrypted segments; zero otherwise)
//	[56:60] reserved, zero
//	[60:64] CRC-32C of [0:60]
//
// followed by records. A record is a 24-byte header and a body:
//
//	[0:4]   sync marker F7 5A C3 1E
//	[4:8]   body length
//	[8:16]  record ID
//	[16]    flags (bit 0: body is encrypted)
//	[17:20] reserved, zero
//	[20:24] CRC-32C of header[0:20] followed by the body
//
// A plain body is the record time (int64 Unix nanoseconds), the key length
// (uvarint), the key and the data. An encrypted body is a 12-byte random
// nonce followed by the AES-256-GCM seal of the plain body with the record
// ID (8 bytes LE) as additional data.
//
// A record is valid when its marker, reserved bytes, flags and length are
// well formed, the whole body is present, the CRC matches and its ID is
// greater than the previous valid record's. After an invalid record the
// scanner looks for the next valid one, marker first, so that damage never
// hides the records after it; the chance that random bytes pass as a record
// is below 2^-64 per position (marker, reserved bytes and CRC).
const (
	segMagic      = "FHSPOOL\x00"
	segVersion    = 1
	segHeaderSize = 64
	recHeaderSize = 24

	flagEncrypted = 1

	nonceSize   = 12
	tagSize     = 16
	encOverhead = nonceSize + tagSize

	// minPlainBody is a body with a time and an empty key and data.
	minPlainBody = 8 + 1
	// maxBodyLimit bounds a record body whatever the segment size.
	maxBodyLimit = 16 << 20
)

var recMagic = [4]byte{0xF7, 0x5A, 0xC3, 0x1E}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// status is the outcome of decoding one record.
type status uint8

const (
	stOK    status = iota
	stShort        // well formed so far, but the buffer ends before the record does
	stBad          // not a valid record at this offset
)

// rawRecord is a decoded, CRC-checked record whose body is still sealed
// or encoded.
type rawRecord struct {
	id    uint64
	flags byte
	body  []byte // aliases the input
}

// putRecordHeader fills the header of the record whose body is
// b[recHeaderSize:].
func putRecordHeader(b []byte, id uint64, flags byte) {
	copy(b[0:4], recMagic[:])
	binary.LittleEndian.PutUint32(b[4:8], uint32(len(b)-recHeaderSize))
	binary.LittleEndian.PutUint64(b[8:16], id)
	b[16], b[17], b[18], b[19] = flags, 0, 0, 0
	crc := crc32.Update(crc32.Checksum(b[0:20], castagnoli), castagnoli, b[recHeaderSize:])
	binary.LittleEndian.PutUint32(b[20:24], crc)
}

// decodeRecord checks the record at the start of b. It returns the record
// and its total length when valid.
func decodeRecord(b []byte) (rawRecord, int, status) {
	if len(b) < recHeaderSize {
		// A prefix of a header: short if what is there could start one.
		n := min(len(b), 4)
		if !bytes.Equal(b[:n], recMagic[:n]) {
			return rawRecord{}, 0, stBad
		}
		return rawRecord{}, 0, stShort
	}
	if [4]byte(b[0:4]) != recMagic || b[17] != 0 || b[18] != 0 || b[19] != 0 {
		return rawRecord{}, 0, stBad
	}
	flags := b[16]
	if flags&^flagEncrypted != 0 {
		return rawRecord{}, 0, stBad
	}
	n := int(binary.LittleEndian.Uint32(b[4:8]))
	minBody := minPlainBody
	if flags&flagEncrypted != 0 {
		minBody += encOverhead
	}
	if n < minBody || n > maxBodyLimit {
		return rawRecord{}, 0, stBad
	}
	id := binary.LittleEndian.Uint64(b[8:16])
	if id == 0 {
		return rawRecord{}, 0, stBad
	}
	if len(b)-recHeaderSize < n {
		return rawRecord{}, 0, stShort
	}
	body := b[recHeaderSize : recHeaderSize+n]
	crc := crc32.Update(crc32.Checksum(b[0:20], castagnoli), castagnoli, body)
	if crc != binary.LittleEndian.Uint32(b[20:24]) {
		return rawRecord{}, 0, stBad
	}
	return rawRecord{id: id, flags: flags, body: body}, recHeaderSize + n, stOK
}

// findNext returns the offset of the first valid record in data at or
// after from whose ID is above prev, or -1.
func findNext(data []byte, from int, prev uint64) int {
	for from < len(data) {
		i := bytes.Index(data[from:], recMagic[:])
		if i < 0 {
			return -1
		}
		p := from + i
		if r, _, st := decodeRecord(data[p:]); st == stOK && r.id > prev {
			return p
		}
		from = p + 1
	}
	return -1
}

// damageKind says where a damaged range lies.
type damageKind uint8

const (
	// damageTorn is a damaged range with no valid record after it in its
	// segment: a write cut short (or a damaged last record).
	damageTorn damageKind = iota
	// damageCorrupt is a damaged range followed by valid records.
	damageCorrupt
)

func (k damageKind) String() string {
	if k == damageTorn {
		return "torn"
	}
	return "corrupt"
}

// span is a damaged byte range [from, to) of a segment.
type span struct {
	from, to int
	kind     damageKind
}

// scanResult describes a scan of a segment's records.
type scanResult struct {
	end     int    // end of the last valid record (start when none)
	lastID  uint64 // ID of the last valid record (prev when none)
	damaged []span // in order; at most the last one is torn
}

// scanRecords calls fn with every valid record of data[start:] in order,
// with its offset. Records must have IDs above prev and increasing: a
// well-framed record out of order is skipped alone. Any other bad record
// is skipped by resynchronising at the next valid one. Skipped bytes are
// reported as damage; records and damaged spans tile data[start:].
func scanRecords(data []byte, start int, prev uint64, fn func(off int, r rawRecord)) scanResult {
	res := scanResult{end: start, lastID: prev}
	off := start
	for off < len(data) {
		r, n, st := decodeRecord(data[off:])
		if st == stOK && r.id > res.lastID {
			if fn != nil {
				fn(off, r)
			}
			off += n
			res.end, res.lastID = off, r.id
			continue
		}
		if st == stOK {
			// A well-framed record out of ID order (never written so):
			// skip just that record.
			res.damaged = append(res.damaged, span{off, off + n, damageCorrupt})
			off += n
			res.end = off
			continue
		}
		next := findNext(data, off+1, res.lastID)
		if next < 0 {
			res.damaged = append(res.damaged, span{off, len(data), damageTorn})
			return res
		}
		res.damaged = append(res.damaged, span{off, next, damageCorrupt})
		off = next
	}
	return res
}

// segHeader is a decoded segment header.
type segHeader struct {
	flags   uint16
	seq     uint64
	base    uint64
	created int64
	kcv     [16]byte
}

func (h *segHeader) encode() [segHeaderSize]byte {
	var b [segHeaderSize]byte
	copy(b[0:8], segMagic)
	binary.LittleEndian.PutUint16(b[8:10], segVersion)
	binary.LittleEndian.PutUint16(b[10:12], h.flags)
	binary.LittleEndian.PutUint64(b[16:24], h.seq)
	binary.LittleEndian.PutUint64(b[24:32], h.base)
	binary.LittleEndian.PutUint64(b[32:40], uint64(h.created))
	copy(b[40:56], h.kcv[:])
	binary.LittleEndian.PutUint32(b[60:64], crc32.Checksum(b[0:60], castagnoli))
	return b
}

// decodeSegHeader checks a segment header.
func decodeSegHeader(b []byte) (segHeader, bool) {
	if len(b) < segHeaderSize || string(b[0:8]) != segMagic ||
		binary.LittleEndian.Uint16(b[8:10]) != segVersion ||
		crc32.Checksum(b[0:60], castagnoli) != binary.LittleEndian.Uint32(b[60:64]) {
		return segHeader{}, false
	}
	h := segHeader{
		flags:   binary.LittleEndian.Uint16(b[10:12]),
		seq:     binary.LittleEndian.Uint64(b[16:24]),
		base:    binary.LittleEndian.Uint64(b[24:32]),
		created: int64(binary.LittleEndian.Uint64(b[32:40])),
	}
	copy(h.kcv[:], b[40:56])
	return h, true
}

// appendPlainBody appends a plain record body.
func appendPlainBody(dst []byte, t int64, key string, data []byte) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, uint64(t))
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	dst = append(dst, key...)
	return append(dst, data...)
}

// plainBodySize is the length of a plain body.
func plainBodySize(key string, data []byte) int {
	return 8 + uvarintLen(uint64(len(key))) + len(key) + len(data)
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// parsePlainBody splits a plain body.
func parsePlainBody(b []byte) (t int64, key, data []byte, ok bool) {
	if len(b) < minPlainBody {
		return 0, nil, nil, false
	}
	t = int64(binary.LittleEndian.Uint64(b))
	kl, n := binary.Uvarint(b[8:])
	if n <= 0 || kl > uint64(len(b)-8-n) {
		return 0, nil, nil, false
	}
	k := 8 + n
	return t, b[k : k+int(kl)], b[k+int(kl):], true
}
