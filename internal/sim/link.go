package sim

import (
	"context"
	"encoding/json"
	"time"

	"github.com/fieldhub/fieldhub/device"
)

// handler runs a command named name; its answer is {"status":"ok",
// "result": result} or {"status":"error","error": err}.
type handler func(ctx context.Context, name string, params json.RawMessage) (result any, err error)

// link is one life of a simulated device's connection to the hub: the
// SDK client (JSON telemetry) or the simulator's own SenML client. Its
// methods are safe for concurrent use; Close releases it.
type link interface {
	// PublishAt sends one telemetry message and returns once the hub has
	// acknowledged it (or it is buffered while disconnected).
	PublishAt(ctx context.Context, ts time.Time, data map[string]any) error
	// ReportState sends a merge patch of the reported twin.
	ReportState(ctx context.Context, patch map[string]any) error
	// HandleCommand registers h for the commands named name ("*": any).
	HandleCommand(name string, h handler)
	// OnDesired registers f for the desired state; f must not block.
	OnDesired(f func(version int64, state map[string]any))
	// Stats returns the link's counters since it was made.
	Stats() device.Stats
	// Close says "offline" and disconnects, waiting until ctx ends for
	// what is in flight.
	Close(ctx context.Context) error
}

// sdkLink is a link over the device SDK.
type sdkLink struct{ *device.Client }

// HandleCommand implements link.
func (l sdkLink) HandleCommand(name string, h handler) {
	l.Client.HandleCommand(name, func(ctx context.Context, params json.RawMessage) (any, error) {
		cmd, _ := device.CommandFromContext(ctx)
		return h(ctx, cmd.Name, params)
	})
}
