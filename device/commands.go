package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/topic"
)

// CommandHandler runs a command. params is the command's "params" member
// as sent (nil when absent). A nil error answers
// {"status":"ok","result":result} (result omitted when nil; it must
// encode as JSON); an error answers {"status":"error","error":err.Error()}.
// ctx ends at the command's expiry, if it has one, and when the client is
// closed; CommandFromContext(ctx) describes the command.
type CommandHandler func(ctx context.Context, params json.RawMessage) (result any, err error)

// Command describes the command a handler is running.
type Command struct {
	ID      string    // the command id ("id"); empty if the hub sent none
	Name    string    // the last level of devices/{id}/commands/{name}
	Expires time.Time // zero when the command has no expiry
}

type commandKey struct{}

// CommandFromContext returns the command that a handler's ctx belongs to.
func CommandFromContext(ctx context.Context) (Command, bool) {
	cmd, ok := ctx.Value(commandKey{}).(Command)
	return cmd, ok
}

// Limits of command handling.
const (
	maxConcurrentCommands = 16
	recentCommands        = 256 // command ids remembered for redeliveries
)

// commandState holds the handlers and the recent command ids.
type commandState struct {
	mu       sync.Mutex
	handlers map[string]CommandHandler
	changed  chan struct{} // closed and replaced when a handler is added
	recent   map[string]*recentCommand
	order    []string // recent ids, oldest first
	sem      chan struct{}
	// busy counts commands being run or answered, which Close waits for.
	busy     atomic.Int32
	received uint64
	expired  uint64
}

type recentCommand struct {
	response []byte // nil while the handler runs (or when expired)
	target   responseTarget
}

// responseTarget is where a command's response goes.
type responseTarget struct {
	topic       string
	correlation []byte
}

func (s *commandState) init() {
	s.handlers = make(map[string]CommandHandler)
	s.changed = make(chan struct{})
	s.recent = make(map[string]*recentCommand)
	s.sem = make(chan struct{}, maxConcurrentCommands)
}

func (s *commandState) counts() (received, expired uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.received, s.expired
}

// HandleCommand registers h for the commands named name
// (devices/{id}/commands/{name}); "*" handles every command without a
// handler of its own. A nil h removes the handler.
//
// The client answers each command once its handler returns: on the MQTT 5
// response topic, with the command's correlation data, when the command
// has one, else on devices/{id}/responses/{command-id}, at QoS 1 (retried
// after a reconnect until the command expires or the client closes). The
// payload is {"status":"ok","result":…} or {"status":"error","error":"…"}.
//
// A command whose "expires" has passed when it arrives is not run and not
// answered (the hub has marked it expired); it is counted in
// Stats.CommandsExpired. A command for which no handler is registered
// within Config.CommandGrace is answered with the error "unknown command
// NAME". A redelivered command id (after a reconnect) does not run again:
// its response, when there is one, is sent again. Handlers run
// concurrently (at most 16 at a time) on goroutines of the client; a
// panic is answered as an error.
func (c *Client) HandleCommand(name string, h CommandHandler) {
	s := &c.cmd
	s.mu.Lock()
	defer s.mu.Unlock()
	if h == nil {
		delete(s.handlers, name)
		return
	}
	s.handlers[name] = h
	close(s.changed)
	s.changed = make(chan struct{})
}

// handler returns the handler for name, or "*", and a channel closed when
// the handlers change.
func (s *commandState) handler(name string) (CommandHandler, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h := s.handlers[name]; h != nil {
		return h, nil
	}
	return s.handlers["*"], s.changed
}

// onPublish routes the messages the hub sends (paho's receive goroutine:
// it must not block).
func (c *Client) onPublish(pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	switch {
	case p.Topic == c.topics.desired:
		c.receiveDesired(p.Payload)
	case strings.HasPrefix(p.Topic, c.topics.cmdPrefix):
		c.receiveCommand(strings.TrimPrefix(p.Topic, c.topics.cmdPrefix), p)
	default:
		c.log.Debug("ignoring a message on an unexpected topic", "topic", p.Topic)
	}
	return true, nil
}

// responseTargetFor says where the answer to command cid of device goes:
// the MQTT 5 response topic with the correlation data when the command
// has one, else devices/{device}/responses/{cid}; an empty topic when
// neither is possible.
func responseTargetFor(device, cid string, props *paho.PublishProperties) responseTarget {
	if props != nil && props.ResponseTopic != "" {
		return responseTarget{topic: props.ResponseTopic, correlation: props.CorrelationData}
	}
	if cid == "" {
		return responseTarget{}
	}
	name := topic.Response(device, cid)
	if t, err := topic.Parse(name); err != nil || t.Kind != topic.KindResponse || t.Rest != cid {
		return responseTarget{}
	}
	return responseTarget{topic: name}
}

// commandMsg is the payload of devices/{id}/commands/{name}.
type commandMsg struct {
	ID      string          `json:"id"`
	Params  json.RawMessage `json:"params"`
	Expires string          `json:"expires"`
}

func (c *Client) receiveCommand(name string, p *paho.Publish) {
	var msg commandMsg
	perr := json.Unmarshal(p.Payload, &msg)
	cmd := Command{ID: msg.ID, Name: name}
	target := responseTargetFor(c.cfg.DeviceID, msg.ID, p.Properties)
	log := c.log.With("command", name, "command_id", msg.ID)
	if target.topic == "" {
		log.Warn("ignoring a command with neither an id nor a response topic", "parse_err", perr)
		return
	}
	if perr == nil && msg.Expires != "" {
		t, err := time.Parse(time.RFC3339Nano, msg.Expires)
		if err != nil {
			perr = fmt.Errorf("expires: %w", err)
		}
		cmd.Expires = t
	}

	s := &c.cmd
	s.mu.Lock()
	if msg.ID != "" {
		if r := s.recent[msg.ID]; r != nil {
			resp := r.response
			s.mu.Unlock()
			if resp != nil {
				log.Debug("command redelivered; sending its response again")
				c.goRespond(cmd, target, resp)
			}
			return
		}
		s.recent[msg.ID] = &recentCommand{target: target}
		s.order = append(s.order, msg.ID)
		if len(s.order) > recentCommands {
			delete(s.recent, s.order[0])
			s.order = s.order[1:]
		}
	}
	expired := perr == nil && !cmd.Expires.IsZero() && !time.Now().Before(cmd.Expires)
	if expired {
		s.expired++
	} else {
		s.received++
	}
	s.mu.Unlock()

	switch {
	case expired:
		log.Info("skipping an expired command", "expires", cmd.Expires)
	case perr != nil:
		log.Warn("malformed command", "err", perr)
		c.goRespond(cmd, target, responseBody(nil, fmt.Errorf("malformed command: %w", perr)))
	default:
		c.goCommand(cmd, target, msg.Params)
	}
}

// goCommand runs a command on a goroutine of the client. The receive
// goroutine that calls it exists only while the run goroutine does, so
// the wait group is never at zero here.
func (c *Client) goCommand(cmd Command, target responseTarget, params json.RawMessage) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := c.commandContext(cmd)
		defer cancel()
		h, ok := c.waitHandler(ctx, cmd.Name)
		if !ok {
			return
		}
		c.cmd.busy.Add(1)
		defer c.cmd.busy.Add(-1)
		body := responseBody(nil, fmt.Errorf("unknown command %s", cmd.Name))
		if h != nil {
			select {
			case c.cmd.sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			result, err := c.callHandler(ctx, h, params)
			<-c.cmd.sem
			body = responseBody(result, err)
		}
		c.cmd.mu.Lock()
		if r := c.cmd.recent[cmd.ID]; r != nil && cmd.ID != "" {
			r.response = body
		}
		c.cmd.mu.Unlock()
		c.respond(ctx, cmd, target, body)
	}()
}

// goRespond sends a response on a goroutine of the client.
func (c *Client) goRespond(cmd Command, target responseTarget, body []byte) {
	c.wg.Add(1)
	c.cmd.busy.Add(1)
	go func() {
		defer c.wg.Done()
		defer c.cmd.busy.Add(-1)
		ctx, cancel := c.commandContext(cmd)
		defer cancel()
		c.respond(ctx, cmd, target, body)
	}()
}

// commandContext returns a context that ends at cmd's expiry or when the
// client stops.
func (c *Client) commandContext(cmd Command) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), commandKey{}, cmd))
	stop := context.AfterFunc(c.lifetime, cancel)
	if !cmd.Expires.IsZero() {
		var cancelT context.CancelFunc
		ctx, cancelT = context.WithDeadline(ctx, cmd.Expires)
		return ctx, func() { cancelT(); stop(); cancel() }
	}
	return ctx, func() { stop(); cancel() }
}

// waitHandler returns the handler for name, waiting for one to be
// registered until Config.CommandGrace has passed (then nil, true), or
// false when ctx ends first.
func (c *Client) waitHandler(ctx context.Context, name string) (CommandHandler, bool) {
	grace := time.NewTimer(c.cfg.CommandGrace)
	defer grace.Stop()
	for {
		h, changed := c.cmd.handler(name)
		if h != nil {
			return h, true
		}
		select {
		case <-changed:
		case <-grace.C:
			return nil, true
		case <-ctx.Done():
			return nil, false
		}
	}
}

func (c *Client) callHandler(ctx context.Context, h CommandHandler, params json.RawMessage) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			cmd, _ := CommandFromContext(ctx)
			c.log.Error("command handler panicked", "command", cmd.Name, "command_id", cmd.ID, "panic", r)
			result, err = nil, fmt.Errorf("command handler panicked: %v", r)
		}
	}()
	if len(params) == 0 || string(params) == "null" {
		params = nil
	}
	return h(ctx, params)
}

// responseBody encodes a command response.
func responseBody(result any, err error) []byte {
	type response struct {
		Status string `json:"status"`
		Result any    `json:"result,omitempty"`
		Error  string `json:"error,omitempty"`
	}
	r := response{Status: "ok", Result: result}
	if err != nil {
		r = response{Status: "error", Error: err.Error()}
	}
	b, merr := json.Marshal(r)
	switch {
	case merr != nil:
		b, _ = json.Marshal(response{Status: "error", Error: "encoding the result: " + merr.Error()})
	case len(b) > MaxPayloadBytes:
		b, _ = json.Marshal(response{Status: "error", Error: fmt.Sprintf("the result is too large: %d bytes encoded, at most %d", len(b), MaxPayloadBytes)})
	}
	return b
}

// respond publishes a response at QoS 1, waiting for a connection and
// trying again after a drop, until ctx ends.
func (c *Client) respond(ctx context.Context, cmd Command, target responseTarget, body []byte) {
	pub := &paho.Publish{QoS: 1, Topic: target.topic, Payload: body}
	if target.correlation != nil {
		pub.Properties = &paho.PublishProperties{CorrelationData: target.correlation}
	}
	for {
		cn, err := c.waitUp(ctx)
		if err != nil {
			c.log.Warn("command response not sent", "command", cmd.Name, "command_id", cmd.ID, "err", err)
			return
		}
		resp, err := cn.cli.Publish(ctx, pub)
		if err == nil {
			return
		}
		if resp != nil && resp.ReasonCode >= 0x80 {
			c.log.Warn("the hub refused a command response", "command", cmd.Name, "command_id", cmd.ID,
				"topic", target.topic, "reason_code", fmt.Sprintf("0x%02x", resp.ReasonCode))
			return
		}
		if ctx.Err() != nil || errors.Is(err, paho.ErrInvalidArguments) {
			c.log.Warn("command response not sent", "command", cmd.Name, "command_id", cmd.ID, "err", err)
			return
		}
		// The connection dropped: wait for the next one.
		select {
		case <-cn.cli.Done():
		case <-ctx.Done():
		}
	}
}
