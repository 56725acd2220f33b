package spool

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
)

// encodeTestRecord returns one plain record.
func encodeTestRecord(id uint64, t int64, key string, data []byte) []byte {
	body := appendPlainBody(nil, t, key, data)
	b := make([]byte, recHeaderSize+len(body))
	copy(b[recHeaderSize:], body)
	putRecordHeader(b, id, 0)
	return b
}

// testSegment returns a segment header and n records with IDs from first.
func testSegment(first uint64, n int) []byte {
	h := segHeader{seq: 1, base: first, created: 1}
	hdr := h.encode()
	out := append([]byte(nil), hdr[:]...)
	for i := range n {
		out = append(out, encodeTestRecord(first+uint64(i), int64(i), "sensor", fmt.Appendf(nil, "value %d", i))...)
	}
	return out
}

func TestDecodeRecord(t *testing.T) {
	rec := encodeTestRecord(7, 42, "k", []byte("data"))
	tests := []struct {
		name string
		b    []byte
		want status
	}{
		{"valid", rec, stOK},
		{"empty", nil, stShort},
		{"marker prefix", rec[:2], stShort},
		{"header only", rec[:recHeaderSize], stShort},
		{"one byte short", rec[:len(rec)-1], stShort},
		{"not a marker", []byte("hello world, this is not a record"), stBad},
		{"flipped body", flip(rec, len(rec)-1), stBad},
		{"flipped crc", flip(rec, 21), stBad},
		{"reserved byte", flip(rec, 18), stBad},
		{"unknown flag", flip(rec, 16), stBad},
		{"id zero", withCRC(func(b []byte) { binary.LittleEndian.PutUint64(b[8:], 0) }, rec), stBad},
		{"length below minimum", withCRC(func(b []byte) { binary.LittleEndian.PutUint32(b[4:], 3) }, rec), stBad},
	}
	for _, tc := range tests {
		if _, _, got := decodeRecord(tc.b); got != tc.want {
			t.Errorf("decodeRecord(%s) = %d; want %d", tc.name, got, tc.want)
		}
	}
	r, n, _ := decodeRecord(rec)
	tm, key, data, ok := parsePlainBody(r.body)
	if n != len(rec) || r.id != 7 || tm != 42 || string(key) != "k" || string(data) != "data" || !ok {
		t.Fatalf("decodeRecord = %+v, %d; parse = %d %q %q %v", r, n, tm, key, data, ok)
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x10
	return c
}

// withCRC edits a record's header and recomputes its CRC.
func withCRC(edit func([]byte), rec []byte) []byte {
	c := bytes.Clone(rec)
	edit(c)
	crc := crc32.Update(crc32.Checksum(c[0:20], castagnoli), castagnoli, c[recHeaderSize:])
	binary.LittleEndian.PutUint32(c[20:24], crc)
	return c
}

func TestScanRecords(t *testing.T) {
	seg := testSegment(1, 10)
	var offs []int
	scanRecords(seg, segHeaderSize, 0, func(off int, _ rawRecord) { offs = append(offs, off) })
	tests := []struct {
		name        string
		data        []byte
		wantIDs     int
		wantTorn    int
		wantCorrupt int
	}{
		{"intact", seg, 10, 0, 0},
		{"torn tail", seg[:len(seg)-3], 9, 1, 0},
		{"garbage tail", append(bytes.Clone(seg), 0, 0, 0, 0, 1, 2, 3), 10, 1, 0},
		{"flipped middle", flip(seg, offs[4]+30), 9, 0, 1},
		{"two flipped", flip(flip(seg, offs[2]+30), offs[6]+2), 8, 0, 2},
		{"out of order ID", withCRCAt(seg, offs[5], func(b []byte) { binary.LittleEndian.PutUint64(b[8:], 2) }), 9, 0, 1},
		{"inserted garbage", slicesInsert(seg, offs[3], []byte("\xf7\x5a\xc3\x1e junk junk junk")), 10, 0, 1},
	}
	for _, tc := range tests {
		var got []uint64
		res := scanRecords(tc.data, segHeaderSize, 0, func(_ int, r rawRecord) { got = append(got, r.id) })
		torn, corrupt := 0, 0
		for _, d := range res.damaged {
			if d.kind == damageTorn {
				torn++
			} else {
				corrupt++
			}
		}
		if len(got) != tc.wantIDs || torn != tc.wantTorn || corrupt != tc.wantCorrupt {
			t.Errorf("%s: %d records, %d torn, %d corrupt; want %d, %d, %d (%v)",
				tc.name, len(got), torn, corrupt, tc.wantIDs, tc.wantTorn, tc.wantCorrupt, res.damaged)
		}
	}
}

func withCRCAt(seg []byte, off int, edit func([]byte)) []byte {
	c := bytes.Clone(seg)
	_, n, _ := decodeRecord(c[off:])
	copy(c[off:], withCRC(edit, c[off:off+n]))
	return c
}

func slicesInsert(b []byte, at int, ins []byte) []byte {
	out := append([]byte(nil), b[:at]...)
	out = append(out, ins...)
	return append(out, b[at:]...)
}

func TestSegmentHeader(t *testing.T) {
	h := segHeader{flags: flagEncrypted, seq: 3, base: 99, created: 12345, kcv: [16]byte{1, 2, 3}}
	b := h.encode()
	got, ok := decodeSegHeader(b[:])
	if !ok || got != h {
		t.Fatalf("decodeSegHeader(encode(%+v)) = %+v, %v", h, got, ok)
	}
	for i := range segHeaderSize {
		c := b
		c[i] ^= 1
		if _, ok := decodeSegHeader(c[:]); ok {
			t.Fatalf("header with byte %d flipped accepted", i)
		}
	}
}

func TestAckSlot(t *testing.T) {
	b := encodeAckSlot(5, 100, 200)
	if seq, a, n, ok := decodeAckSlot(b[:]); !ok || seq != 5 || a != 100 || n != 200 {
		t.Fatalf("decodeAckSlot = %d %d %d %v", seq, a, n, ok)
	}
	b[20] ^= 1
	if _, _, _, ok := decodeAckSlot(b[:]); ok {
		t.Fatal("damaged ack slot accepted")
	}
}

var writeSeeds = flag.Bool("write-fuzz-seeds", false, "rewrite testdata/fuzz/FuzzDecodeRecord")

// fuzzSeeds are the checked-in seeds of FuzzDecodeRecord.
func fuzzSeeds() map[string][]byte {
	seg := testSegment(1, 6)
	var offs []int
	scanRecords(seg, segHeaderSize, 0, func(off int, _ rawRecord) { offs = append(offs, off) })
	return map[string][]byte{
		"segment":         seg,
		"record":          encodeTestRecord(1, 0, "k", []byte("v")),
		"torn":            seg[:len(seg)-5],
		"flipped":         flip(seg, offs[2]+27),
		"marker-only":     append(bytes.Repeat(recMagic[:], 8), 1, 2, 3),
		"out-of-order":    withCRCAt(seg, offs[3], func(b []byte) { binary.LittleEndian.PutUint64(b[8:], 1) }),
		"huge-length":     withCRCAt(seg, offs[1], func(b []byte) { binary.LittleEndian.PutUint32(b[4:], 1<<30) }),
		"empty":           {},
		"header-no-recs":  seg[:segHeaderSize],
		"garbage-between": slicesInsert(seg, offs[4], []byte("\xf7\x5a\xc3\x1e\x10\x00\x00\x00")),
	}
}

func TestWriteFuzzSeeds(t *testing.T) {
	if !*writeSeeds {
		t.Skip("run with -write-fuzz-seeds to rewrite the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeRecord")
	os.MkdirAll(dir, 0o755)
	for name, b := range fuzzSeeds() {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzDecodeRecord checks the record decoder and the resynchronising
// scanner on arbitrary bytes: no panic, every record returned passes its
// CRC with increasing IDs, and records and damage tile the input.
func FuzzDecodeRecord(f *testing.F) {
	for _, b := range fuzzSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if r, n, st := decodeRecord(data); st == stOK {
			checkRecord(t, data, 0, n, r)
		}
		decodeSegHeader(data)
		start := 0
		if _, ok := decodeSegHeader(data); ok {
			start = segHeaderSize
		}
		var prev uint64
		lastOff := -1
		res := scanRecords(data, start, 0, func(off int, r rawRecord) {
			_, n, _ := decodeRecord(data[off:])
			if off <= lastOff {
				t.Fatalf("record at %d after one at %d", off, lastOff)
			}
			lastOff = off
			checkRecord(t, data, off, n, r)
			if r.id <= prev {
				t.Fatalf("record ID %d after %d", r.id, prev)
			}
			prev = r.id
			parsePlainBody(r.body)
		})
		// Records and damage together cover data[start:] exactly.
		covered := make([]bool, len(data))
		scanRecords(data, start, 0, func(off int, r rawRecord) {
			_, n, _ := decodeRecord(data[off:])
			for i := off; i < off+n; i++ {
				if covered[i] {
					t.Fatalf("byte %d in two records", i)
				}
				covered[i] = true
			}
		})
		last := start
		for _, d := range res.damaged {
			if d.from < last || d.to <= d.from || d.to > len(data) {
				t.Fatalf("damaged span %+v out of order or bounds (data %d bytes)", d, len(data))
			}
			for i := d.from; i < d.to; i++ {
				if covered[i] {
					t.Fatalf("byte %d both damaged and in a record", i)
				}
				covered[i] = true
			}
			last = d.to
		}
		for i := start; i < len(data); i++ {
			if !covered[i] {
				t.Fatalf("byte %d neither in a record nor damaged", i)
			}
		}
		if res.end > len(data) || res.end < start {
			t.Fatalf("end %d out of bounds", res.end)
		}
	})
}

// checkRecord verifies a returned record independently of the decoder.
func checkRecord(t *testing.T, data []byte, off, n int, r rawRecord) {
	t.Helper()
	if off+n > len(data) || n < recHeaderSize {
		t.Fatalf("record [%d, %d) beyond %d bytes", off, off+n, len(data))
	}
	b := data[off : off+n]
	if [4]byte(b[0:4]) != recMagic {
		t.Fatalf("record at %d without marker", off)
	}
	if int(binary.LittleEndian.Uint32(b[4:8])) != n-recHeaderSize || len(r.body) != n-recHeaderSize {
		t.Fatalf("record at %d: length mismatch", off)
	}
	want := crc32.Checksum(append(bytes.Clone(b[0:20]), b[recHeaderSize:]...), castagnoli)
	if want != binary.LittleEndian.Uint32(b[20:24]) {
		t.Fatalf("record at %d fails its CRC", off)
	}
	if binary.LittleEndian.Uint64(b[8:16]) != r.id {
		t.Fatalf("record at %d: ID mismatch", off)
	}
}
