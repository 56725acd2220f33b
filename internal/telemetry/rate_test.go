package telemetry

import (
	"fmt"
	"math"
	"sync"
	"testing"
	"time"
)

// The ingester counts stored messages per device over the last minute:
// duplicates, refusals and failures are not counted, batch readings count
// for their own device, the window slides, and Forget drops a device.
func TestMessageRate(t *testing.T) {
	var mu sync.Mutex
	clock := now
	at := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	set := func(t time.Time) { mu.Lock(); clock = t; mu.Unlock() }
	in := New(&memAppender{}, Options{Now: at, Gateways: children{"c1": "gw"}})
	ingest := func(dev, body string) { call(t, func(done func(error)) { in.Ingest(dev, []byte(body), done) }) }

	for i := 1; i <= 30; i++ {
		set(now.Add(time.Duration(i) * time.Second))
		ingest("d1", fmt.Sprintf(`{"seq":%d,"data":{"t":1}}`, i))
	}
	ingest("d1", `{"seq":30,"data":{"t":1}}`) // duplicate
	ingest("d1", `not json`)                  // refused
	ingest("broken", `{"seq":1,"data":{"t":1}}`)
	call(t, func(done func(error)) {
		in.IngestBatch("gw", []byte(`{"readings":[{"device":"c1","seq":1,"data":{"t":1}},{"device":"c1","seq":2,"data":{"t":2}}]}`), done)
	})
	for _, c := range []struct {
		dev  string
		want float64
	}{{"d1", 30}, {"c1", 2}, {"gw", 0}, {"broken", 0}, {"nobody", 0}} {
		if got := in.MessageRate(c.dev); got != c.want {
			t.Errorf("MessageRate(%q) = %v; want %v", c.dev, got, c.want)
		}
	}
	// 90 s after the first message, those older than a minute have left the window.
	set(now.Add(90 * time.Second))
	if got := in.MessageRate("d1"); got < 0 || got > 1.0001 {
		t.Errorf("MessageRate(d1) 90 s on = %v; want at most 1 (the messages of the last minute)", got)
	}
	set(now.Add(3 * time.Minute))
	if got := in.MessageRate("d1"); got != 0 {
		t.Errorf("MessageRate(d1) after 3 min of silence = %v; want 0", got)
	}
	in.Forget("c1")
	if got := in.MessageRate("c1"); got != 0 {
		t.Errorf("MessageRate(c1) after Forget = %v; want 0", got)
	}
}

// A steady sender reads as its rate; silent devices are swept away, so
// memory follows the devices sending, and the number counted is bounded.
func TestRatesWindowAndMemory(t *testing.T) {
	r := newRates()
	t0 := now
	for i := range 120 { // 2 msg/s for 60 s
		r.observe("steady", t0.Add(time.Duration(i)*500*time.Millisecond))
	}
	for _, off := range []time.Duration{60 * time.Second, 62500 * time.Millisecond} {
		if got := r.perMinute("steady", t0.Add(off)); math.Abs(got-120) > 10 {
			t.Errorf("perMinute at +%v = %v; want about 120", off, got)
		}
	}
	for i := range 1000 {
		r.observe(fmt.Sprint("once-", i), t0)
	}
	if n := r.len(); n != 1001 {
		t.Fatalf("%d devices counted; want 1001", n)
	}
	r.observe("steady", t0.Add(5*time.Minute)) // sweeps the silent ones
	if n := r.len(); n != 1 {
		t.Errorf("%d devices counted after the sweep; want 1", n)
	}
	r.max = 2
	r.observe("a", t0.Add(5*time.Minute))
	r.observe("b", t0.Add(5*time.Minute))
	if n := r.len(); n != 2 || r.perMinute("b", t0.Add(5*time.Minute)) != 0 {
		t.Errorf("with a bound of 2: %d devices, b counted %v; want 2 and 0", n, r.perMinute("b", t0.Add(5*time.Minute)))
	}
}
