package telquery

import (
	"errors"
	"math"
	"testing"

	"github.com/fieldhub/fieldhub/internal/store"
)

var errTest = errors.New("test invalid")

func TestCursorRoundTrip(t *testing.T) {
	for _, c := range []Cursor{{}, {"temp", 1}, {"a/b é", math.MinInt64}, {"x", math.MaxInt64}, {"", -5}} {
		s := c.Encode()
		got, err := Decode(s, errTest)
		if err != nil || got != c {
			t.Errorf("Decode(%q) = %+v, %v; want %+v", s, got, err, c)
		}
	}
}

func TestDecodeBad(t *testing.T) {
	good := Cursor{"temp", 42}.Encode()
	for _, s := range []string{"", "!!", "AQ", "Ag", good + "A", good[:len(good)-1], "AQUAAA"} {
		if c, err := Decode(s, errTest); !errors.Is(err, errTest) {
			t.Errorf("Decode(%q) = %+v, %v; want an error wrapping errTest", s, c, err)
		}
	}
}

func TestCheck(t *testing.T) {
	for _, q := range []store.Query{
		{Agg: "median", Step: 1},
		{Agg: store.AggAvg},
		{Agg: store.AggAvg, Step: -1},
		{Limit: -1},
	} {
		if err := Check(q, errTest); !errors.Is(err, errTest) {
			t.Errorf("Check(%+v) = %v; want an error wrapping errTest", q, err)
		}
	}
	for _, q := range []store.Query{{}, {Limit: 3}, {Agg: store.AggLast, Step: 1}} {
		if err := Check(q, errTest); err != nil {
			t.Errorf("Check(%+v) = %v", q, err)
		}
	}
}

func TestNext(t *testing.T) {
	raw := store.Query{}
	agg := store.Query{Agg: store.AggAvg, Step: 10}
	for _, c := range []struct {
		c    Cursor
		q    store.Query
		want int64
		ok   bool
	}{
		{Cursor{TS: 5}, raw, 6, true},
		{Cursor{TS: 5}, agg, 15, true},
		{Cursor{TS: math.MaxInt64}, raw, 0, false},
		{Cursor{TS: math.MaxInt64 - 5}, agg, 0, false},
		{Cursor{TS: math.MaxInt64 - 10}, agg, math.MaxInt64, true},
	} {
		got, ok := c.c.Next(c.q)
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("%+v.Next(%+v) = %d, %v; want %d, %v", c.c, c.q, got, ok, c.want, c.ok)
		}
	}
}

// FuzzDecode: no string makes Decode panic, and what it accepts encodes
// to a cursor that decodes to the same position.
func FuzzDecode(f *testing.F) {
	f.Add(Cursor{Metric: "temperature", TS: 1700000000000000000}.Encode())
	f.Add(Cursor{}.Encode())
	f.Add("")
	f.Add("AQ")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Decode(s, errTest)
		if err != nil {
			return
		}
		again, err := Decode(c.Encode(), errTest)
		if err != nil || again != c {
			t.Fatalf("Decode(Encode(%+v)) = %+v, %v", c, again, err)
		}
	})
}
