// Package telquery holds what the telemetry stores (tsdb and postgres)
// share to answer a store.Query whatever their storage: checking the
// query, and the opaque cursor that pages through its result.
package telquery

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"

	"github.com/fieldhub/fieldhub/internal/store"
)

// Check returns an error wrapping invalid when q cannot be answered: an
// unknown aggregate, an aggregate without a step > 0, a negative limit.
func Check(q store.Query, invalid error) error {
	if !q.Agg.Valid() {
		return fmt.Errorf("%w: unknown aggregate %q", invalid, q.Agg)
	}
	if q.Agg != store.AggNone && q.Step <= 0 {
		return fmt.Errorf("%w: aggregate %q needs a step > 0", invalid, q.Agg)
	}
	if q.Limit < 0 {
		return fmt.Errorf("%w: negative limit", invalid)
	}
	return nil
}

// Cursor is the position of the last point (or bucket) a page returned:
// store.Result.Next, and the store.Query.After of the next page.
type Cursor struct {
	Metric string
	TS     int64
}

const version = 1

// Encode returns c as an opaque URL-safe string.
func (c Cursor) Encode() string {
	b := []byte{version}
	b = binary.AppendUvarint(b, uint64(len(c.Metric)))
	b = append(b, c.Metric...)
	b = binary.AppendVarint(b, c.TS)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Decode parses a string made by Encode; any other string is an error
// wrapping invalid.
func Decode(s string, invalid error) (Cursor, error) {
	bad := fmt.Errorf("%w: bad cursor", invalid)
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) == 0 || b[0] != version {
		return Cursor{}, bad
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return Cursor{}, bad
	}
	c := Cursor{Metric: string(b[k : k+int(n)])}
	b = b[k+int(n):]
	ts, k := binary.Varint(b)
	if k <= 0 || k != len(b) {
		return Cursor{}, bad
	}
	c.TS = ts
	return c, nil
}

// Next returns where the next page of q resumes in c's metric: the
// timestamp after c.TS for raw points, the start of the bucket after c.TS
// for an aggregate (q.Step > 0, see Check). ok is false when that is past
// MaxInt64: nothing of c's metric remains.
func (c Cursor) Next(q store.Query) (ts int64, ok bool) {
	next := c.TS + 1
	if q.Agg != store.AggNone {
		next = c.TS + q.Step
	}
	return next, next >= c.TS
}
