package live

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fieldhub/fieldhub/payload"
)

func msg(dev string, v float64) *payload.Message {
	return &payload.Message{Device: dev, Points: []payload.Point{{Metric: "t", TS: 1, Value: payload.NumberValue(v)}}}
}

func TestPublishAndSlowConsumerDrop(t *testing.T) {
	reg := prometheus.NewRegistry()
	b := New(Options{Buffer: 2, Registerer: reg})
	fast, cancelFast, err := b.Subscribe("d1")
	if err != nil {
		t.Fatal(err)
	}
	defer cancelFast()
	slow, cancelSlow, err := b.Subscribe("d1")
	if err != nil {
		t.Fatal(err)
	}
	other, cancelOther, _ := b.Subscribe("d2")
	defer cancelOther()
	for i := range 5 {
		b.Publish(msg("d1", float64(i)))
		if m := <-fast; m.Points[0].Value.Num != float64(i) {
			t.Fatalf("fast subscriber got %v, want %d", m.Points[0].Value.Num, i)
		}
	}
	// slow never read: 2 buffered, 3 dropped.
	if got := testutil.ToFloat64(b.dropped); got != 3 {
		t.Fatalf("fieldhub_live_dropped_total = %v, want 3", got)
	}
	if n := len(slow); n != 2 {
		t.Fatalf("slow buffered %d, want 2", n)
	}
	if len(other) != 0 {
		t.Fatal("d2's subscriber got d1's message")
	}
	cancelSlow()
	cancelSlow() // twice is fine
	for range slow {
	}
	if n := b.Subscribers(); n != 2 {
		t.Fatalf("Subscribers = %d, want 2", n)
	}
	if n, err := testutil.GatherAndCount(reg, "fieldhub_live_dropped_total"); err != nil || n != 1 {
		t.Fatalf("registered: %d, %v", n, err)
	}
}

func TestLimitsAndClose(t *testing.T) {
	b := New(Options{PerDevice: 2, Total: 3})
	var cancels []func()
	for _, d := range []string{"a", "a", "b"} {
		_, c, err := b.Subscribe(d)
		if err != nil {
			t.Fatal(err)
		}
		cancels = append(cancels, c)
	}
	if _, _, err := b.Subscribe("a"); !errors.Is(err, ErrTooMany) {
		t.Fatalf("third on a: %v, want ErrTooMany", err)
	}
	if _, _, err := b.Subscribe("c"); !errors.Is(err, ErrTooMany) {
		t.Fatalf("fourth in all: %v, want ErrTooMany", err)
	}
	cancels[2]()
	ch, _, err := b.Subscribe("c")
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if _, ok := <-ch; ok {
		t.Fatal("channel open after Close")
	}
	for _, c := range cancels {
		c() // after Close: no double close
	}
	if _, _, err := b.Subscribe("a"); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
	b.Publish(msg("a", 1))
}
