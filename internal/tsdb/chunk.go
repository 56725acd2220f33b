package tsdb

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"
	"sort"
	"sync"

	"github.com/fieldhub/fieldhub/payload"
)

// ErrCorruptChunk reports a chunk blob that cannot be decoded.
var ErrCorruptChunk = errors.New("tsdb: corrupt chunk")

// cols is a run of points of one series in column form. Number and Bool
// values live in num (Bool as 0 or 1), String values in str. A normalized
// cols is sorted by ts with unique timestamps.
type cols struct {
	ts  []int64
	num []float64
	str []string
}

func (c *cols) len() int { return len(c.ts) }

// appendPoint adds one value; kind tells which column receives it.
func (c *cols) appendPoint(kind payload.ValueKind, ts int64, v payload.Value) {
	c.ts = append(c.ts, ts)
	if kind == payload.String {
		c.str = append(c.str, v.Str)
	} else {
		c.num = append(c.num, v.Num)
	}
}

// value returns the i-th value as a payload.Value of kind.
func (c *cols) value(kind payload.ValueKind, i int) payload.Value {
	if kind == payload.String {
		return payload.Value{Kind: payload.String, Str: c.str[i]}
	}
	return payload.Value{Kind: kind, Num: c.num[i]}
}

// slice returns the points i..j (sharing storage).
func (c *cols) slice(i, j int) cols {
	out := cols{ts: c.ts[i:j]}
	if c.str != nil {
		out.str = c.str[i:j]
	} else if c.num != nil {
		out.num = c.num[i:j]
	}
	return out
}

// clone returns a deep copy of the column slices (strings are shared: they
// are immutable).
func (c *cols) clone() cols {
	out := cols{ts: slices.Clone(c.ts)}
	if c.str != nil {
		out.str = slices.Clone(c.str)
	}
	if c.num != nil {
		out.num = slices.Clone(c.num)
	}
	return out
}

// rangeIdx returns the index range of points with lo <= ts < hi in a
// sorted cols.
func (c *cols) rangeIdx(lo, hi int64) (int, int) {
	i := sort.Search(len(c.ts), func(k int) bool { return c.ts[k] >= lo })
	j := sort.Search(len(c.ts), func(k int) bool { return c.ts[k] >= hi })
	if j < i {
		j = i
	}
	return i, j
}

// sortedUnique reports whether ts is strictly increasing.
func (c *cols) sortedUnique() bool {
	for i := 1; i < len(c.ts); i++ {
		if c.ts[i] <= c.ts[i-1] {
			return false
		}
	}
	return true
}

// normalize sorts c by timestamp, keeping for each timestamp the value
// appended last (last write wins). It works in place.
func (c *cols) normalize() {
	if c.sortedUnique() {
		return
	}
	n := len(c.ts)
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i
	}
	sort.SliceStable(perm, func(a, b int) bool { return c.ts[perm[a]] < c.ts[perm[b]] })
	ts := make([]int64, 0, n)
	var num []float64
	var str []string
	if c.str != nil {
		str = make([]string, 0, n)
	} else {
		num = make([]float64, 0, n)
	}
	for k, i := range perm {
		// Among equal timestamps the stable order keeps arrival order; the
		// last one wins.
		if k+1 < n && c.ts[perm[k+1]] == c.ts[i] {
			continue
		}
		ts = append(ts, c.ts[i])
		if str != nil {
			str = append(str, c.str[i])
		} else {
			num = append(num, c.num[i])
		}
	}
	c.ts, c.num, c.str = ts, num, str
}

// Chunk layout. Every chunk blob is
//
//	byte    version<<4 | flags   (version 1; flag 1: body is DEFLATE-compressed)
//	byte    value kind (payload.ValueKind)
//	uvarint point count
//	body    (raw or DEFLATE)
//
// and the body is a timestamp section followed by a value section:
//
//	timestamps: byte e (every timestamp is a multiple of 10^e, e ≤ 18),
//	            varint t0/10^e, varint first delta, varint delta-of-delta…
//	numbers:    byte encoding
//	            0 decimal delta:  byte k, exceptions, varint v0·10^k, varint deltas…
//	            1 decimal dod:    byte k, exceptions, varint v0·10^k, varint first delta,
//	                              varint delta-of-deltas…
//	              (exceptions: uvarint count, then per exception uvarint index delta and
//	              8 bytes of raw bits (LE); they hold values that are no short decimal,
//	              like -0, NaN or ±Inf, and repeat the previous integer in the stream)
//	            2 XOR:            8 bytes of v0's bits (LE), then per value the XOR with the
//	                              previous value: byte 0 when equal, else byte 0x40|lz<<3|tz
//	                              followed by the 8-lz-tz meaningful bytes (lz/tz = leading/
//	                              trailing zero bytes)
//	bools:      bitmap, LSB first
//	strings:    byte encoding 0 plain: per value uvarint length + bytes;
//	            1 dictionary: uvarint entries, each uvarint length + bytes, then a uvarint
//	            index per value
//
// Varints are zigzag (encoding/binary.AppendVarint). Timestamp arithmetic
// wraps, so any int64 sequence round-trips exactly; numbers round-trip bit
// for bit (a decimal encoding is chosen only when v·10^k / 10^k gives back
// the same float64 for every value).
const (
	chunkVersion   = 1
	chunkFlagFlate = 1

	numDecimalDelta = 0
	numDecimalDoD   = 1
	numXOR          = 2

	strPlain = 0
	strDict  = 1

	// maxChunkCount bounds the point count a decoder accepts.
	maxChunkCount = 1 << 24
	// minFlateBody is the body size below which compression is not tried
	// (small checkpoint chunks are merged by compaction anyway).
	minFlateBody = 256
	// maxStringChunkBody bounds the inflated body of a string chunk.
	maxStringChunkBody = 256 << 20
)

var pow10i [19]int64
var pow10f [10]float64

func init() {
	p := int64(1)
	for i := range pow10i {
		pow10i[i] = p
		p *= 10
	}
	f := 1.0
	for i := range pow10f {
		pow10f[i] = f
		f *= 10
	}
}

// chunkEncoder holds reusable buffers for encoding chunks.
type chunkEncoder struct {
	body  []byte
	ints  []int64
	exc   []int
	out   bytes.Buffer
	level int
	fw    *flate.Writer
}

func newChunkEncoder(level int) *chunkEncoder { return &chunkEncoder{level: level} }

// encode appends the encoding of the normalized points c of the given kind
// to dst.
func (e *chunkEncoder) encode(dst []byte, kind payload.ValueKind, c *cols) []byte {
	n := c.len()
	e.body = e.body[:0]
	e.body = appendTimestamps(e.body, c.ts)
	switch kind {
	case payload.String:
		e.body = appendStrings(e.body, c.str)
	case payload.Bool:
		e.body = appendBools(e.body, c.num)
	default:
		e.body = e.appendNumbers(e.body, c.num)
	}
	flags := byte(0)
	body := e.body
	if len(body) >= minFlateBody {
		if z := e.deflate(body); z != nil && len(z) < len(body) {
			body = z
			flags |= chunkFlagFlate
		}
	}
	dst = append(dst, chunkVersion<<4|flags, byte(kind))
	dst = binary.AppendUvarint(dst, uint64(n))
	return append(dst, body...)
}

func (e *chunkEncoder) deflate(b []byte) []byte {
	e.out.Reset()
	if e.fw == nil {
		fw, err := flate.NewWriter(&e.out, e.level)
		if err != nil {
			return nil
		}
		e.fw = fw
	} else {
		e.fw.Reset(&e.out)
	}
	if _, err := e.fw.Write(b); err != nil {
		return nil
	}
	if err := e.fw.Close(); err != nil {
		return nil
	}
	return e.out.Bytes()
}

// timestampExp returns the largest e ≤ 18 such that every ts is a multiple
// of 10^e.
func timestampExp(ts []int64) int {
	e := 18
	for _, t := range ts {
		for e > 0 && t%pow10i[e] != 0 {
			e--
		}
		if e == 0 {
			break
		}
	}
	return e
}

func appendTimestamps(dst []byte, ts []int64) []byte {
	e := timestampExp(ts)
	dst = append(dst, byte(e))
	div := pow10i[e]
	var prev, prevDelta int64
	for i, t := range ts {
		t /= div
		switch i {
		case 0:
			dst = binary.AppendVarint(dst, t)
		case 1:
			prevDelta = t - prev
			dst = binary.AppendVarint(dst, prevDelta)
		default:
			d := t - prev
			dst = binary.AppendVarint(dst, d-prevDelta)
			prevDelta = d
		}
		prev = t
	}
	return dst
}

// decimalExp returns the smallest k ≥ from (k ≤ 9) such that v is exactly
// float64(int)/10^k for an integer |int| < 2^53.
func decimalExp(v float64, from int) (int, bool) {
	for k := from; k <= 9; k++ {
		if _, ok := decimalInt(v, k); ok {
			return k, true
		}
	}
	return 0, false
}

// decimalInt returns the integer i with float64(i)/10^k == v bit for bit.
func decimalInt(v float64, k int) (int64, bool) {
	s := v * pow10f[k]
	if !(math.Abs(s) < 1<<53) {
		return 0, false
	}
	i := int64(math.Round(s))
	if math.Float64bits(float64(i)/pow10f[k]) != math.Float64bits(v) {
		return 0, false
	}
	return i, true
}

func varintLen(x int64) int {
	ux := uint64(x) << 1
	if x < 0 {
		ux = ^ux
	}
	return (bits.Len64(ux|1) + 6) / 7
}

func (e *chunkEncoder) appendNumbers(dst []byte, vals []float64) []byte {
	// The exponent is the largest of the values' smallest exponents; a
	// value with none (-0, NaN, ±Inf, too many digits or too large) is an
	// exception stored as raw bits, unless exceptions are common.
	k, exc := 0, 0
	for _, v := range vals {
		kv, ok := decimalExp(v, k)
		if !ok {
			exc++
			continue
		}
		k = kv
	}
	if exc*8 > len(vals) {
		return appendXOR(dst, vals)
	}
	e.ints = e.ints[:0]
	e.exc = e.exc[:0]
	var prev int64
	for i, v := range vals {
		x, ok := decimalInt(v, k)
		if !ok {
			e.exc = append(e.exc, i)
			x = prev // keep the integer stream smooth
		}
		e.ints = append(e.ints, x)
		prev = x
	}
	if len(e.exc)*8 > len(vals) {
		return appendXOR(dst, vals)
	}
	ints := e.ints
	// Choose delta or delta-of-delta by the size of their varints.
	var sizeDelta, sizeDoD int
	for i := 1; i < len(ints); i++ {
		d := ints[i] - ints[i-1]
		sizeDelta += varintLen(d)
		if i == 1 {
			sizeDoD += varintLen(d)
		} else {
			sizeDoD += varintLen(d - (ints[i-1] - ints[i-2]))
		}
	}
	enc := byte(numDecimalDelta)
	if sizeDoD < sizeDelta {
		enc = numDecimalDoD
	}
	dst = append(dst, enc, byte(k))
	dst = binary.AppendUvarint(dst, uint64(len(e.exc)))
	last := 0
	for _, i := range e.exc {
		dst = binary.AppendUvarint(dst, uint64(i-last))
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(vals[i]))
		last = i
	}
	if enc == numDecimalDoD {
		var prev, prevDelta int64
		for i, x := range ints {
			switch i {
			case 0:
				dst = binary.AppendVarint(dst, x)
			case 1:
				prevDelta = x - prev
				dst = binary.AppendVarint(dst, prevDelta)
			default:
				d := x - prev
				dst = binary.AppendVarint(dst, d-prevDelta)
				prevDelta = d
			}
			prev = x
		}
		return dst
	}
	prev = 0
	for _, x := range ints {
		dst = binary.AppendVarint(dst, x-prev)
		prev = x
	}
	return dst
}

func appendXOR(dst []byte, vals []float64) []byte {
	dst = append(dst, numXOR)
	var prev uint64
	for i, v := range vals {
		b := math.Float64bits(v)
		if i == 0 {
			dst = binary.LittleEndian.AppendUint64(dst, b)
			prev = b
			continue
		}
		x := b ^ prev
		prev = b
		if x == 0 {
			dst = append(dst, 0)
			continue
		}
		lz := bits.LeadingZeros64(x) / 8
		tz := bits.TrailingZeros64(x) / 8
		dst = append(dst, byte(0x40|lz<<3|tz))
		for j := 7 - lz; j >= tz; j-- {
			dst = append(dst, byte(x>>(8*j)))
		}
	}
	return dst
}

func appendBools(dst []byte, vals []float64) []byte {
	var cur byte
	for i, v := range vals {
		if v != 0 {
			cur |= 1 << (i % 8)
		}
		if i%8 == 7 {
			dst = append(dst, cur)
			cur = 0
		}
	}
	if len(vals)%8 != 0 {
		dst = append(dst, cur)
	}
	return dst
}

func appendStrings(dst []byte, vals []string) []byte {
	dict := make(map[string]int, 16)
	var order []string
	for _, s := range vals {
		if _, ok := dict[s]; !ok {
			dict[s] = len(order)
			order = append(order, s)
			if len(order)*2 > len(vals) {
				break
			}
		}
	}
	if len(order)*2 > len(vals) || len(vals) < 4 {
		dst = append(dst, strPlain)
		for _, s := range vals {
			dst = binary.AppendUvarint(dst, uint64(len(s)))
			dst = append(dst, s...)
		}
		return dst
	}
	dst = append(dst, strDict)
	dst = binary.AppendUvarint(dst, uint64(len(order)))
	for _, s := range order {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	for _, s := range vals {
		dst = binary.AppendUvarint(dst, uint64(dict[s]))
	}
	return dst
}

// chunkDecoder holds reusable buffers for decoding chunks.
type chunkDecoder struct {
	fr  io.ReadCloser
	br  bytes.Reader
	raw bytes.Buffer
}

var decoderPool = sync.Pool{New: func() any { return new(chunkDecoder) }}

// chunkHeader reads the kind and count of a chunk without decoding it.
func chunkHeader(data []byte) (payload.ValueKind, int, []byte, error) {
	if len(data) < 3 || data[0]>>4 != chunkVersion {
		return 0, 0, nil, fmt.Errorf("%w: bad header", ErrCorruptChunk)
	}
	kind := payload.ValueKind(data[1])
	if kind > payload.String {
		return 0, 0, nil, fmt.Errorf("%w: kind %d", ErrCorruptChunk, kind)
	}
	n, k := binary.Uvarint(data[2:])
	if k <= 0 || n > maxChunkCount {
		return 0, 0, nil, fmt.Errorf("%w: count", ErrCorruptChunk)
	}
	return kind, int(n), data[2+k:], nil
}

// decode decodes a chunk blob. The result does not alias data.
func (d *chunkDecoder) decode(data []byte) (payload.ValueKind, cols, error) {
	kind, n, body, err := chunkHeader(data)
	if err != nil {
		return 0, cols{}, err
	}
	if data[0]&chunkFlagFlate != 0 {
		d.br.Reset(body)
		if d.fr == nil {
			d.fr = flate.NewReader(&d.br)
		} else if err := d.fr.(flate.Resetter).Reset(&d.br, nil); err != nil {
			return 0, cols{}, fmt.Errorf("%w: %v", ErrCorruptChunk, err)
		}
		d.raw.Reset()
		// A body never expands beyond what n points can need; bound the
		// read so that a hostile blob cannot balloon.
		limit := int64(n)*20 + 64
		if kind == payload.String {
			limit = maxStringChunkBody
		}
		if _, err := d.raw.ReadFrom(io.LimitReader(d.fr, limit+1)); err != nil {
			return 0, cols{}, fmt.Errorf("%w: inflate: %v", ErrCorruptChunk, err)
		}
		if int64(d.raw.Len()) > limit {
			return 0, cols{}, fmt.Errorf("%w: body too large", ErrCorruptChunk)
		}
		if d.br.Len() != 0 {
			return 0, cols{}, fmt.Errorf("%w: %d bytes after the compressed body", ErrCorruptChunk, d.br.Len())
		}
		body = d.raw.Bytes()
	}
	r := reader{b: body}
	var c cols
	c.ts = make([]int64, n)
	r.timestamps(c.ts)
	switch kind {
	case payload.String:
		c.str = make([]string, n)
		r.strings(c.str)
	case payload.Bool:
		c.num = make([]float64, n)
		r.bools(c.num)
	default:
		c.num = make([]float64, n)
		r.numbers(c.num)
	}
	if r.err != nil {
		return 0, cols{}, r.err
	}
	if r.off != len(r.b) {
		return 0, cols{}, fmt.Errorf("%w: %d trailing bytes", ErrCorruptChunk, len(r.b)-r.off)
	}
	return kind, c, nil
}

// decodeChunk decodes a chunk blob with a pooled decoder.
func decodeChunk(data []byte) (payload.ValueKind, cols, error) {
	d := decoderPool.Get().(*chunkDecoder)
	defer decoderPool.Put(d)
	return d.decode(data)
}

// reader is a bounds-checked cursor over a chunk body; the first error
// sticks.
type reader struct {
	b    []byte
	off  int
	err  error
	base error // wrapped by err; ErrCorruptChunk when nil
}

func (r *reader) fail(what string) {
	if r.err == nil {
		base := r.base
		if base == nil {
			base = ErrCorruptChunk
		}
		r.err = fmt.Errorf("%w: %s at byte %d", base, what, r.off)
	}
	r.off = len(r.b)
}

func (r *reader) byte() byte {
	if r.off >= len(r.b) {
		r.fail("short")
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) varint() int64 {
	v, k := binary.Varint(r.b[r.off:])
	if k <= 0 {
		r.fail("varint")
		return 0
	}
	r.off += k
	return v
}

func (r *reader) uvarint() uint64 {
	v, k := binary.Uvarint(r.b[r.off:])
	if k <= 0 {
		r.fail("uvarint")
		return 0
	}
	r.off += k
	return v
}

func (r *reader) bytes(n uint64) []byte {
	if n > uint64(len(r.b)-r.off) {
		r.fail("short bytes")
		return nil
	}
	b := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return b
}

func (r *reader) timestamps(ts []int64) {
	e := int(r.byte())
	if e > 18 {
		r.fail("timestamp exponent")
		return
	}
	mul := pow10i[e]
	var prev, delta int64
	for i := range ts {
		if r.err != nil {
			return
		}
		switch i {
		case 0:
			prev = r.varint()
		case 1:
			delta = r.varint()
			prev += delta
		default:
			delta += r.varint()
			prev += delta
		}
		ts[i] = prev * mul
	}
}

func (r *reader) numbers(vals []float64) {
	enc := r.byte()
	switch enc {
	case numDecimalDelta, numDecimalDoD:
		k := int(r.byte())
		if k > 9 {
			r.fail("decimal exponent")
			return
		}
		nexc := r.uvarint()
		if nexc > uint64(len(vals)) {
			r.fail("exception count")
			return
		}
		type exception struct {
			i    int
			bits uint64
		}
		var excs []exception
		at := uint64(0)
		for j := uint64(0); j < nexc && r.err == nil; j++ {
			at += r.uvarint()
			b := r.bytes(8)
			if b == nil || at >= uint64(len(vals)) {
				r.fail("exception")
				return
			}
			excs = append(excs, exception{int(at), binary.LittleEndian.Uint64(b)})
		}
		div := pow10f[k]
		var x, delta int64
		for i := range vals {
			if r.err != nil {
				return
			}
			switch {
			case i == 0:
				x = r.varint()
			case enc == numDecimalDelta:
				x += r.varint()
			case i == 1:
				delta = r.varint()
				x += delta
			default:
				delta += r.varint()
				x += delta
			}
			vals[i] = float64(x) / div
		}
		for _, ex := range excs {
			vals[ex.i] = math.Float64frombits(ex.bits)
		}
	case numXOR:
		var prev uint64
		for i := range vals {
			if i == 0 {
				b := r.bytes(8)
				if b == nil {
					return
				}
				prev = binary.LittleEndian.Uint64(b)
				vals[0] = math.Float64frombits(prev)
				continue
			}
			h := r.byte()
			if h != 0 {
				if h&0xC0 != 0x40 {
					r.fail("xor header")
					return
				}
				lz, tz := int(h>>3&7), int(h&7)
				if lz+tz > 7 {
					r.fail("xor header")
					return
				}
				b := r.bytes(uint64(8 - lz - tz))
				if b == nil {
					return
				}
				var x uint64
				for _, c := range b {
					x = x<<8 | uint64(c)
				}
				prev ^= x << (8 * tz)
			}
			vals[i] = math.Float64frombits(prev)
		}
	default:
		r.fail("number encoding")
	}
}

func (r *reader) bools(vals []float64) {
	b := r.bytes(uint64((len(vals) + 7) / 8))
	if b == nil && len(vals) > 0 {
		return
	}
	for i := range vals {
		if b[i/8]&(1<<(i%8)) != 0 {
			vals[i] = 1
		}
	}
}

func (r *reader) strings(vals []string) {
	switch r.byte() {
	case strPlain:
		for i := range vals {
			b := r.bytes(r.uvarint())
			if r.err != nil {
				return
			}
			vals[i] = string(b)
		}
	case strDict:
		n := r.uvarint()
		if n > uint64(len(r.b)) {
			r.fail("dictionary size")
			return
		}
		dict := make([]string, n)
		for i := range dict {
			b := r.bytes(r.uvarint())
			if r.err != nil {
				return
			}
			dict[i] = string(b)
		}
		for i := range vals {
			j := r.uvarint()
			if j >= n {
				r.fail("dictionary index")
				return
			}
			vals[i] = dict[j]
		}
	default:
		r.fail("string encoding")
	}
}
