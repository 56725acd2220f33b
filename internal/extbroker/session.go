package extbroker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// errSessionClosed is returned by calls on a session whose connection has ended.
var errSessionClosed = errors.New("extbroker: connection closed")

// session is one MQTT 5 connection to the broker, a new one per
// reconnect. It is a deliberately small client on paho's packet codec:
// paho's own client tracks manual acknowledgements in a list it scans for
// every message (two-thirds of the hub's CPU at 20k messages/s with a
// window of 1,024), where this one keeps the received QoS 1 messages in a
// queue and sends their PUBACKs in receive order in O(1) per message,
// coalescing the writes.
type session struct {
	nc      net.Conn
	handler func(s *session, p *packets.Publish, ack func())

	wmu sync.Mutex // serializes writes to bw
	bw  *bufio.Writer

	// Received QoS 1 publishes in receive order: acks[i] is the message
	// with sequence number base+i.
	amu      sync.Mutex
	acks     []inbound
	base     uint64
	ackReady chan struct{} // the queue's head is acknowledged (capacity 1)

	// Our own QoS 1 publishes and subscriptions waiting for their answer.
	omu     sync.Mutex
	nextID  uint16
	waiting map[uint16]chan []byte // packet id → reason codes

	lastRecv  atomic.Int64 // Unix ns of the last packet received
	done      chan struct{}
	closeOnce sync.Once
	errMu     sync.Mutex
	err       error
}

type inbound struct {
	id   uint16
	done bool
}

// dial connects over nc as an MQTT 5 client with cp and waits for the
// CONNACK. On success the session's reader, acknowledger and keep-alive
// goroutines run until Disconnect or a connection error; Done is closed
// then, and they have returned or return at once.
func dial(ctx context.Context, nc net.Conn, cp *packets.Connect, handler func(*session, *packets.Publish, func())) (*session, *packets.Connack, error) {
	s := &session{
		nc: nc, handler: handler,
		bw:       bufio.NewWriterSize(nc, 32<<10),
		ackReady: make(chan struct{}, 1),
		waiting:  make(map[uint16]chan []byte),
		done:     make(chan struct{}),
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	if err := s.write(cp); err != nil {
		return nil, nil, err
	}
	pkt, err := packets.ReadPacket(br)
	if err != nil {
		return nil, nil, fmt.Errorf("reading CONNACK: %w", err)
	}
	ca, ok := pkt.Content.(*packets.Connack)
	if !ok {
		return nil, nil, fmt.Errorf("expected CONNACK, got %s", pkt.PacketType())
	}
	if ca.ReasonCode >= 0x80 {
		reason := ""
		if ca.Properties != nil {
			reason = ca.Properties.ReasonString
		}
		return nil, ca, fmt.Errorf("connection refused: reason code 0x%02x %s", ca.ReasonCode, reason)
	}
	nc.SetDeadline(time.Time{})
	s.lastRecv.Store(time.Now().UnixNano())
	keepAlive := time.Duration(cp.KeepAlive) * time.Second
	if ca.Properties != nil && ca.Properties.ServerKeepAlive != nil {
		keepAlive = time.Duration(*ca.Properties.ServerKeepAlive) * time.Second
	}
	go s.readLoop(br)
	go s.ackLoop()
	if keepAlive > 0 {
		go s.pingLoop(keepAlive)
	}
	return s, ca, nil
}

// Done is closed when the connection has ended.
func (s *session) Done() <-chan struct{} { return s.done }

// Err is why the connection ended.
func (s *session) Err() error {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// close ends the connection with err as its cause.
func (s *session) close(err error) {
	s.closeOnce.Do(func() {
		s.errMu.Lock()
		s.err = err
		s.errMu.Unlock()
		s.nc.Close()
		close(s.done)
	})
}

// Disconnect sends DISCONNECT with reason code rc (0: normal; the session
// stays with the broker for its expiry) and closes the connection.
func (s *session) Disconnect(rc byte) {
	s.nc.SetWriteDeadline(time.Now().Add(2 * time.Second)) // a stuck broker does not hold us
	s.write(&packets.Disconnect{ReasonCode: rc, Properties: &packets.Properties{}})
	s.close(errSessionClosed)
}

// write writes and flushes one packet.
func (s *session) write(p io.WriterTo) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := p.WriteTo(s.bw); err != nil {
		s.close(err)
		return err
	}
	if err := s.bw.Flush(); err != nil {
		s.close(err)
		return err
	}
	return nil
}

func (s *session) readLoop(br *bufio.Reader) {
	for {
		pkt, err := packets.ReadPacket(br)
		if err != nil {
			s.close(fmt.Errorf("reading: %w", err))
			return
		}
		s.lastRecv.Store(time.Now().UnixNano())
		switch p := pkt.Content.(type) {
		case *packets.Publish:
			switch p.QoS {
			case 0:
				s.handler(s, p, func() {})
			case 1:
				s.handler(s, p, s.enqueue(p.PacketID))
			default:
				// We subscribe at QoS 1 at most.
				s.close(fmt.Errorf("QoS %d publish on %s: not subscribed above QoS 1", p.QoS, p.Topic))
				return
			}
		case *packets.Puback:
			s.answer(p.PacketID, []byte{p.ReasonCode})
		case *packets.Suback:
			s.answer(p.PacketID, p.Reasons)
		case *packets.Disconnect:
			reason := ""
			if p.Properties != nil {
				reason = p.Properties.ReasonString
			}
			s.close(fmt.Errorf("the broker disconnected: reason code 0x%02x %s", p.ReasonCode, reason))
			return
		}
	}
}

// enqueue records a received QoS 1 message and returns the function that
// acknowledges it (once; the PUBACK goes out when every message received
// before it is acknowledged too).
func (s *session) enqueue(id uint16) func() {
	s.amu.Lock()
	seq := s.base + uint64(len(s.acks))
	s.acks = append(s.acks, inbound{id: id})
	s.amu.Unlock()
	var once atomic.Bool
	return func() {
		if !once.CompareAndSwap(false, true) {
			return
		}
		s.amu.Lock()
		head := false
		if i := seq - s.base; i < uint64(len(s.acks)) {
			s.acks[i].done = true
			head = i == 0
		}
		s.amu.Unlock()
		if head {
			select {
			case s.ackReady <- struct{}{}:
			default:
			}
		}
	}
}

// ackLoop writes the PUBACKs of the acknowledged prefix of the queue,
// many per write.
func (s *session) ackLoop() {
	var ids []uint16
	for {
		select {
		case <-s.done:
			return
		case <-s.ackReady:
		}
		s.amu.Lock()
		n := 0
		for n < len(s.acks) && s.acks[n].done {
			ids = append(ids, s.acks[n].id)
			n++
		}
		s.acks = s.acks[n:]
		s.base += uint64(n)
		if len(s.acks) == 0 {
			s.acks = s.acks[:0:0] // let the old array go
		}
		s.amu.Unlock()
		if len(ids) == 0 {
			continue
		}
		s.wmu.Lock()
		var err error
		for _, id := range ids {
			if _, err = (&packets.Puback{PacketID: id, Properties: &packets.Properties{}}).WriteTo(s.bw); err != nil {
				break
			}
		}
		if err == nil {
			err = s.bw.Flush()
		}
		s.wmu.Unlock()
		if err != nil {
			s.close(err)
			return
		}
		ids = ids[:0]
	}
}

func (s *session) pingLoop(keepAlive time.Duration) {
	t := time.NewTicker(keepAlive / 2)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, s.lastRecv.Load())) > keepAlive*3/2 {
			s.close(errors.New("keep alive: nothing received from the broker"))
			return
		}
		if err := s.write(&packets.Pingreq{}); err != nil {
			return
		}
	}
}

// request sends a packet that carries a fresh packet id and waits for the
// broker's answer (a PUBACK's or SUBACK's reason codes).
func (s *session) request(ctx context.Context, setID func(uint16), p io.WriterTo) ([]byte, error) {
	ch := make(chan []byte, 1)
	s.omu.Lock()
	var id uint16
	for {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		if _, busy := s.waiting[s.nextID]; !busy {
			id = s.nextID
			break
		}
	}
	s.waiting[id] = ch
	s.omu.Unlock()
	defer func() {
		s.omu.Lock()
		delete(s.waiting, id)
		s.omu.Unlock()
	}()
	setID(id)
	if err := s.write(p); err != nil {
		return nil, err
	}
	select {
	case rc := <-ch:
		return rc, nil
	case <-s.done:
		return nil, errSessionClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *session) answer(id uint16, codes []byte) {
	s.omu.Lock()
	ch := s.waiting[id]
	s.omu.Unlock()
	if ch != nil {
		select {
		case ch <- codes:
		default:
		}
	}
}

// Publish sends p at QoS 1 and returns the PUBACK's reason code.
func (s *session) Publish(ctx context.Context, p *packets.Publish) (byte, error) {
	p.QoS = 1
	codes, err := s.request(ctx, func(id uint16) { p.PacketID = id }, p)
	if err != nil {
		return 0, err
	}
	return codes[0], nil
}

// Subscribe subscribes and returns the SUBACK's reason codes.
func (s *session) Subscribe(ctx context.Context, subs []packets.SubOptions) ([]byte, error) {
	p := &packets.Subscribe{Subscriptions: subs, Properties: &packets.Properties{}}
	return s.request(ctx, func(id uint16) { p.PacketID = id }, p)
}
