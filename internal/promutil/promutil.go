// Package promutil holds the few Prometheus helpers shared by components
// that register and unregister their own collectors.
package promutil

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrAlreadyRegistered is wrapped when a collector of the same name is
// already registered: one component instance per registerer.
var ErrAlreadyRegistered = errors.New("metrics already registered (one instance per registerer)")

// Register registers every collector with r. When one fails it
// unregisters those it registered, so that nothing is left half done. A
// nil r registers nothing.
func Register(r prometheus.Registerer, cs []prometheus.Collector) error {
	if r == nil {
		return nil
	}
	for i, c := range cs {
		if err := r.Register(c); err != nil {
			Unregister(r, cs[:i])
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return fmt.Errorf("%w: %w", ErrAlreadyRegistered, err)
			}
			return fmt.Errorf("registering metrics: %w", err)
		}
	}
	return nil
}

// Unregister unregisters every collector from r (nil: nothing).
func Unregister(r prometheus.Registerer, cs []prometheus.Collector) {
	if r == nil {
		return
	}
	for _, c := range cs {
		r.Unregister(c)
	}
}

// RegisterOrExisting registers c with r and returns it, or returns the
// equal collector already registered there (several instances of a
// component sharing one registerer then share their metrics). A
// conflicting collector leaves c unregistered rather than failing. A nil
// r registers nothing.
func RegisterOrExisting[C prometheus.Collector](r prometheus.Registerer, c C) C {
	if r == nil {
		return c
	}
	if err := r.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
