package device

import (
	"context"
	"sync/atomic"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"
)

// connSession is the paho session state of one network connection.
//
// The client keeps its own queue of unacknowledged telemetry (memory or
// BufferDir) and resends from it on every new connection, so paho must
// not: a fresh in-memory state per connection has nothing to retransmit,
// and closing it when the connection ends releases every call still
// waiting for an acknowledgement (paho's shared state would keep them
// waiting until PacketTimeout when the hub has lost the session, e.g.
// after a restart). The broker's session (Clean Start false, Session
// Expiry) is unaffected: it is the hub that keeps queued commands.
//
// Publishes on the pipelined topics (telemetry and twin/reported), which
// only the connection's sender goroutine makes, are sent with paho's
// AsyncSend; their PUBACKs (or an empty packet when the session closes)
// are routed to acks, and the packet id paho allocated is left in lastID.
type connSession struct {
	*state.State
	pipelined [2]string
	acks      chan packets.ControlPacket
	lastID    atomic.Uint32
}

func newConnSession(window int, pipelined ...string) *connSession {
	s := &connSession{State: state.NewInMemory(), acks: make(chan packets.ControlPacket, window+2)}
	copy(s.pipelined[:], pipelined)
	return s
}

// AddToSession implements session.SessionManager.
func (s *connSession) AddToSession(ctx context.Context, p session.Packet, resp chan<- packets.ControlPacket) error {
	pub, ok := p.(*packets.Publish)
	if !ok || (pub.Topic != s.pipelined[0] && pub.Topic != s.pipelined[1]) {
		return s.State.AddToSession(ctx, p, resp)
	}
	if err := s.State.AddToSession(ctx, p, s.acks); err != nil {
		return err
	}
	s.lastID.Store(uint32(pub.PacketID))
	return nil
}
