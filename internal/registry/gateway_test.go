package registry

import (
	"context"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/store"
)

func TestGatewayRelations(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := t.Context()
	f.create(t, CreateRequest{ID: "gw"})
	f.create(t, CreateRequest{ID: "a", Gateway: "gw"})
	f.create(t, CreateRequest{ID: "lone"})

	check := func(when string) func(gw, dev string, want bool) {
		return func(gw, dev string, want bool) {
			t.Helper()
			if got := f.svc.IsChild(ctx, gw, dev); got != want {
				t.Errorf("%s: IsChild(%q, %q) = %v; want %v", when, gw, dev, got, want)
			}
		}
	}
	isChild := check("at start")
	isChild("gw", "a", true)
	isChild("gw", "lone", false)
	isChild("gw", "gw", false)
	isChild("lone", "a", false)
	isChild("gw", "nobody", false)
	isChild("", "a", false)
	for _, tt := range []struct {
		id   string
		want bool
	}{{"gw", true}, {"a", false}, {"lone", false}, {"nobody", false}} {
		if got := f.svc.IsGateway(ctx, tt.id); got != tt.want {
			t.Errorf("IsGateway(%q) = %v; want %v", tt.id, got, tt.want)
		}
	}

	// Creating a child and deleting the gateway take effect at once,
	// cached negative and positive answers notwithstanding.
	f.create(t, CreateRequest{ID: "nobody", Gateway: "lone"})
	isChild = check("after create")
	isChild("gw", "nobody", false)
	isChild("lone", "nobody", true)
	if !f.svc.IsGateway(ctx, "lone") {
		t.Error("after create: IsGateway(lone) = false")
	}
	if err := f.svc.Delete(ctx, "gw"); err != nil {
		t.Fatal(err)
	}
	check("after deleting the gateway")("gw", "a", false)
	if f.svc.IsGateway(ctx, "gw") {
		t.Error("after delete: IsGateway(gw) = true")
	}
}

// TestGatewayCacheTTL: a change made behind the service's back (another
// process) is seen once the cached answer expires.
func TestGatewayCacheTTL(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := t.Context()
	f.create(t, CreateRequest{ID: "gw"})
	f.create(t, CreateRequest{ID: "a"})
	if f.svc.IsChild(ctx, "gw", "a") || f.svc.IsGateway(ctx, "gw") {
		t.Fatal("a is a child of gw before it is")
	}
	d, err := f.db.GetDevice(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	d.Gateway = "gw"
	if err := f.db.UpdateDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	if f.svc.IsChild(ctx, "gw", "a") || f.svc.IsGateway(ctx, "gw") {
		t.Error("cached answers were not used within the TTL")
	}
	later := time.Now().Add(GatewayCacheTTL + time.Second)
	f.now.Store(&later)
	if !f.svc.IsChild(ctx, "gw", "a") || !f.svc.IsGateway(ctx, "gw") {
		t.Error("answers are stale after the TTL")
	}
}

// TestGatewayLookupFailureDenies: a registry that cannot be read answers
// false and caches nothing.
func TestGatewayLookupFailureDenies(t *testing.T) {
	f := newFixture(t, Options{})
	f.create(t, CreateRequest{ID: "gw"})
	f.create(t, CreateRequest{ID: "a", Gateway: "gw"})
	svc := New(failingRegistry{f.db}, nil, Options{Password: cheap})
	ctx := context.Background()
	if svc.IsChild(ctx, "gw", "a") || svc.IsGateway(ctx, "gw") {
		t.Error("a failing registry granted gateway rights")
	}
}

// failingRegistry fails every read.
type failingRegistry struct{ store.Registry }

func (failingRegistry) GetDevice(context.Context, string) (store.Device, error) {
	return store.Device{}, store.ErrClosed
}

func (failingRegistry) ListDevices(context.Context, store.ListOptions) ([]store.Device, error) {
	return nil, store.ErrClosed
}
