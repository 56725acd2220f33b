package fhtest

import (
	"context"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Subscribe subscribes the MQTT 5 client c to filters at QoS 1 and
// returns the SUBACK's reason codes, failing t when no SUBACK comes
// within timeout.
func Subscribe(t testing.TB, c *paho.Client, timeout time.Duration, filters ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	subs := make([]paho.SubscribeOptions, 0, len(filters))
	for _, f := range filters {
		subs = append(subs, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs})
	if sa == nil {
		t.Fatalf("subscribe %v: %v", filters, err)
	}
	return sa.Reasons
}
