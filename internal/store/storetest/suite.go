package storetest

import (
	"context"
	"testing"
	"time"
)

// subtest is one check of a conformance suite on a store of type S.
type subtest[S any] struct {
	name string
	fn   func(ctx context.Context, t *testing.T, s S)
}

// runSuite runs every subtest on a new store from open, each with a
// 30-second context.
func runSuite[S any](t *testing.T, open func(t *testing.T) S, tests []subtest[S]) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			tt.fn(ctx, t, open(t))
		})
	}
}
