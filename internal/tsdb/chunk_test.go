package tsdb

import (
	"compress/flate"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fieldhub/fieldhub/payload"
)

func roundTrip(t *testing.T, kind payload.ValueKind, c cols) []byte {
	t.Helper()
	blob := newChunkEncoder(flate.BestCompression).encode(nil, kind, &c)
	gotKind, got, err := decodeChunk(blob)
	if err != nil {
		t.Fatalf("decodeChunk: %v", err)
	}
	if gotKind != kind {
		t.Fatalf("kind = %v; want %v", gotKind, kind)
	}
	if len(got.ts) != len(c.ts) {
		t.Fatalf("decoded %d points; want %d", len(got.ts), len(c.ts))
	}
	for i := range c.ts {
		if got.ts[i] != c.ts[i] {
			t.Fatalf("ts[%d] = %d; want %d", i, got.ts[i], c.ts[i])
		}
		switch kind {
		case payload.String:
			if got.str[i] != c.str[i] {
				t.Fatalf("str[%d] = %q; want %q", i, got.str[i], c.str[i])
			}
		default:
			if math.Float64bits(got.num[i]) != math.Float64bits(c.num[i]) {
				t.Fatalf("num[%d] = %v (%x); want %v (%x)", i, got.num[i], math.Float64bits(got.num[i]), c.num[i], math.Float64bits(c.num[i]))
			}
		}
	}
	return blob
}

func seqTS(n int, start, step int64) []int64 {
	ts := make([]int64, n)
	for i := range ts {
		ts[i] = start + int64(i)*step
	}
	return ts
}

func TestChunkRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	walk := func(n int, step, round float64) []float64 {
		v := make([]float64, n)
		x := 20.0
		for i := range v {
			x += (r.Float64() - 0.5) * step
			v[i] = math.Round(x/round) * round
		}
		return v
	}
	const t0 = 1_700_000_000_000_000_000
	tests := []struct {
		name string
		kind payload.ValueKind
		c    cols
	}{
		{"one point", payload.Number, cols{ts: []int64{t0}, num: []float64{1.5}}},
		{"two points", payload.Number, cols{ts: []int64{t0, t0 + 7}, num: []float64{1.5, -2}}},
		{"walk 0.01", payload.Number, cols{ts: seqTS(3600, t0, 1e9), num: walk(3600, 0.2, 0.01)}},
		{"walk 0.001 ms jitter", payload.Number, cols{ts: func() []int64 {
			ts := seqTS(1000, t0, 1e9)
			for i := range ts {
				ts[i] += int64(r.IntN(20)) * 1e6
			}
			return ts
		}(), num: walk(1000, 2, 0.001)}},
		{"ns timestamps", payload.Number, cols{ts: []int64{1, 2, 3, 5, 8, 13, 21}, num: []float64{1, 2, 3, 4, 5, 6, 7}}},
		{"extreme timestamps", payload.Number, cols{ts: []int64{math.MinInt64, -1, 0, 1, math.MaxInt64}, num: []float64{1, 2, 3, 4, 5}}},
		{"integers", payload.Number, cols{ts: seqTS(100, 0, 60e9), num: func() []float64 {
			v := make([]float64, 100)
			for i := range v {
				v[i] = float64(i * i * 1000)
			}
			return v
		}()}},
		{"smooth (dod)", payload.Number, cols{ts: seqTS(500, t0, 1e9), num: func() []float64 {
			v := make([]float64, 500)
			for i := range v {
				v[i] = float64(i) * 0.25
			}
			return v
		}()}},
		{"arbitrary floats (xor)", payload.Number, cols{ts: seqTS(300, t0, 1e9), num: func() []float64 {
			v := make([]float64, 300)
			for i := range v {
				v[i] = r.NormFloat64() * 1e3
			}
			return v
		}()}},
		{"specials", payload.Number, cols{ts: seqTS(8, t0, 1), num: []float64{
			math.NaN(), math.Inf(1), math.Inf(-1), math.Copysign(0, -1), 0, math.MaxFloat64, math.SmallestNonzeroFloat64, 1e300}}},
		{"big integers", payload.Number, cols{ts: seqTS(3, t0, 1), num: []float64{1 << 53, -(1 << 53), 1<<53 + 2}}},
		{"bools", payload.Bool, cols{ts: seqTS(77, t0, 1e9), num: func() []float64 {
			v := make([]float64, 77)
			for i := range v {
				if r.IntN(3) == 0 {
					v[i] = 1
				}
			}
			return v
		}()}},
		{"strings dict", payload.String, cols{ts: seqTS(200, t0, 1e9), str: func() []string {
			v := make([]string, 200)
			for i := range v {
				v[i] = []string{"idle", "running", "error", ""}[r.IntN(4)]
			}
			return v
		}()}},
		{"strings plain", payload.String, cols{ts: seqTS(50, t0, 1e9), str: func() []string {
			v := make([]string, 50)
			for i := range v {
				v[i] = string(rune('a'+i%26)) + "-é-" + string(make([]byte, i))
			}
			return v
		}()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			roundTrip(t, tt.kind, tt.c)
		})
	}
}

func TestChunkSizeRandomWalk(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	n := 86400
	c := cols{ts: seqTS(n, 1_700_000_000e9, 1e9), num: make([]float64, n)}
	x := 20.0
	for i := range c.num {
		x += (r.Float64() - 0.5) * 0.2
		c.num[i] = math.Round(x*100) / 100
	}
	blob := roundTrip(t, payload.Number, c)
	bpp := float64(len(blob)) / float64(n)
	t.Logf("1 Hz random walk rounded to 0.01, one day in one chunk: %d bytes, %.3f bytes/point", len(blob), bpp)
	if bpp > 2 {
		t.Errorf("chunk bytes/point = %.3f; want ≤ 2", bpp)
	}
}

func TestDecimalInt(t *testing.T) {
	tests := []struct {
		v    float64
		k    int
		want int64
		ok   bool
	}{
		{0.29, 2, 29, true},
		{0.29, 1, 0, false},
		{1.23, 2, 123, true},
		{-20.05, 2, -2005, true},
		{100, 0, 100, true},
		{1e-9, 9, 1, true},
		{1e-10, 9, 0, false},
		{math.NaN(), 0, 0, false},
		{math.Inf(1), 0, 0, false},
		{math.Copysign(0, -1), 0, 0, false},
		{1 << 54, 0, 0, false},
	}
	for _, tt := range tests {
		got, ok := decimalInt(tt.v, tt.k)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("decimalInt(%v, %d) = %d, %v; want %d, %v", tt.v, tt.k, got, ok, tt.want, tt.ok)
		}
	}
}

func TestChunkDecodeCorrupt(t *testing.T) {
	c := cols{ts: seqTS(100, 1e18, 1e9), num: make([]float64, 100)}
	good := newChunkEncoder(flate.DefaultCompression).encode(nil, payload.Number, &c)
	bad := [][]byte{
		nil,
		{0x10},
		{0x20, 0, 1, 0},
		append([]byte{0x10, 9}, good[2:]...),
		good[:len(good)-1],
		append(append([]byte{}, good...), 0),
		binary.AppendUvarint([]byte{0x10, 0}, 1<<30),
	}
	for i, b := range bad {
		if _, _, err := decodeChunk(b); !errors.Is(err, ErrCorruptChunk) {
			t.Errorf("decodeChunk(bad #%d) err = %v; want ErrCorruptChunk", i, err)
		}
	}
}

func TestNormalizeLastWriteWins(t *testing.T) {
	c := cols{ts: []int64{5, 3, 5, 1, 3, 9}, num: []float64{1, 2, 3, 4, 5, 6}}
	c.normalize()
	wantTS := []int64{1, 3, 5, 9}
	wantV := []float64{4, 5, 3, 6}
	for i := range wantTS {
		if c.ts[i] != wantTS[i] || c.num[i] != wantV[i] {
			t.Fatalf("normalize = %v %v; want %v %v", c.ts, c.num, wantTS, wantV)
		}
	}
}

func TestMergePriority(t *testing.T) {
	a := cols{ts: []int64{1, 2, 3}, num: []float64{10, 20, 30}}
	b := cols{ts: []int64{2, 4}, num: []float64{200, 400}}
	c := cols{ts: []int64{3}, num: []float64{3000}}
	got := merge([]src{{prio: 5, c: b}, {prio: 1, c: a}, {prio: 9, c: c}})
	wantTS := []int64{1, 2, 3, 4}
	wantV := []float64{10, 200, 3000, 400}
	if len(got.ts) != 4 {
		t.Fatalf("merge = %v %v", got.ts, got.num)
	}
	for i := range wantTS {
		if got.ts[i] != wantTS[i] || got.num[i] != wantV[i] {
			t.Fatalf("merge = %v %v; want %v %v", got.ts, got.num, wantTS, wantV)
		}
	}
}

func FuzzChunk(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9}, uint8(0))
	f.Add([]byte("hello world, hello chunks"), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, k uint8) {
		kind := payload.ValueKind(k % 3)
		// Build points from the bytes: ts deltas and values.
		var c cols
		ts := int64(0)
		for i := 0; i+2 <= len(data); i += 2 {
			ts += int64(int8(data[i])) * 1000
			c.ts = append(c.ts, ts)
			switch kind {
			case payload.String:
				c.str = append(c.str, string(data[i:i+2]))
			case payload.Bool:
				c.num = append(c.num, float64(data[i+1]&1))
			default:
				c.num = append(c.num, float64(int8(data[i+1]))/100)
			}
		}
		if len(c.ts) == 0 {
			// Also feed the raw bytes to the decoder: it must not panic.
			decodeChunk(data)
			return
		}
		c.normalize()
		roundTrip(t, kind, c)
		decodeChunk(data)
	})
}

func TestChunkDecimalExceptions(t *testing.T) {
	n := 1000
	c := cols{ts: seqTS(n, 0, 1e9), num: make([]float64, n)}
	for i := range c.num {
		c.num[i] = float64(i%200-100) / 100
	}
	c.num[3] = math.Copysign(0, -1)
	c.num[500] = math.NaN()
	c.num[999] = math.Inf(-1)
	blob := roundTrip(t, payload.Number, c)
	if len(blob) > 2*n {
		t.Errorf("chunk with 3 exceptions is %d bytes for %d points; want the decimal encoding", len(blob), n)
	}
}
