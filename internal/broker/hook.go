package broker

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/fieldhub/fieldhub/topic"
)

// Connect refusal reasons decided by the broker itself (an Authenticator's
// RefusalReason labels the rest).
const (
	ReasonAnonymous          = "anonymous"
	ReasonClientIDMismatch   = "client_id_mismatch"
	ReasonClientIDReserved   = "client_id_reserved" // mochi's inline client id, "inline"
	ReasonWillNotAuthorized  = "will_not_authorized"
	ReasonAuthUnavailable    = "auth_unavailable"
	ReasonRefused            = "refused" // an Authenticator error without RefusalReason
	invalidFilterMarker      = "#/fieldhub-refused-filter"
	maxLoggedTopicLen        = 96
	maxRefusalReasonLabelLen = 40
)

// connackCode is a CONNACK refusal in both protocol versions.
type connackCode struct {
	v5, v3 byte
	text   string
}

var (
	codeBadCredentials = connackCode{0x86, 0x04, "bad user name or password"}
	codeNotAuthorized  = connackCode{0x87, 0x05, "not authorized"}
	codeClientID       = connackCode{0x85, 0x02, "client identifier not valid"}
	codeUnavailable    = connackCode{0x88, 0x03, "server unavailable"}
)

// errConnectRefused ends a refused connection after its CONNACK.
var errConnectRefused = errors.New("connect refused")

// hook is the broker's mochi hook: authentication, ACLs, topic bounds,
// telemetry ingest, presence and drop accounting.
type hook struct {
	mqtt.HookBase
	b *Broker
	// approved holds clients OnConnect accepted, for OnConnectAuthenticate.
	approved sync.Map
}

// ID names the hook in mochi's logs.
func (h *hook) ID() string { return "fieldhub" }

// Provides lists the hook methods overridden here.
func (h *hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck,
		mqtt.OnPacketRead, mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnPublish,
		mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect,
		mqtt.OnPublishDropped, mqtt.OnQosDropped:
		return true
	}
	return false
}

// OnConnect authenticates the CONNECT. mochi's own refusal path (a false
// OnConnectAuthenticate) always answers "bad user name or password", so
// the decision is made here, where a refusal can write its own CONNACK
// (0x86/0x04 bad credentials, 0x87/0x05 not authorized, 0x85/0x02 client id,
// 0x88/0x03 unavailable) and end the connection by returning an error.
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	b := h.b
	if cl.ID == mqtt.InlineClientId {
		// A client with the inline client's id would take its session over.
		return h.refuse(cl, ReasonClientIDReserved, codeClientID, nil)
	}
	if b.cfg.OpenPolicy {
		if pk.Connect.WillFlag && checkTopicShape(pk.Connect.WillTopic) != nil {
			return h.refuse(cl, ReasonWillNotAuthorized, codeNotAuthorized, nil)
		}
		h.approved.Store(cl, struct{}{})
		return nil
	}
	username, password := string(pk.Connect.Username), pk.Connect.Password
	certs := peerCertificates(cl.Net.Conn)
	if username == "" && len(password) == 0 && len(certs) == 0 {
		return h.refuse(cl, ReasonAnonymous, codeNotAuthorized, nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.authTimeout)
	defer cancel()
	select {
	case b.authSem <- struct{}{}:
	case <-ctx.Done():
		return h.refuse(cl, ReasonAuthUnavailable, codeUnavailable, errors.New("too many authentications in progress"))
	}
	device, err := b.auth.Authenticate(ctx, cl.ID, username, password, certs)
	<-b.authSem
	if err != nil {
		reason, code := classifyAuthError(err, password, certs)
		return h.refuse(cl, reason, code, err)
	}
	if device != cl.ID {
		return h.refuse(cl, ReasonClientIDMismatch, codeClientID, nil)
	}
	// mochi publishes (and retains) a will without any ACL check: allow it
	// only on the device's own device → hub topics, and not on telemetry or
	// alerts, which would bypass ingest.
	if pk.Connect.WillFlag {
		if publishACL(device, pk.Connect.WillTopic) != "" || pk.Connect.WillTopic == topic.Telemetry(device) ||
			(b.ings.Alerts != nil && pk.Connect.WillTopic == topic.Alerts(device)) {
			return h.refuse(cl, ReasonWillNotAuthorized, codeNotAuthorized, nil)
		}
	}
	h.approved.Store(cl, struct{}{})
	return nil
}

// refuse counts, logs (rate-limited per remote address and reason) and
// answers a refused CONNECT.
func (h *hook) refuse(cl *mqtt.Client, reason string, code connackCode, err error) error {
	b := h.b
	b.metrics.refusal(reason)
	if b.limiter.allow("connect|" + reason + "|" + remoteHost(cl.Net.Remote)) {
		b.log.Warn("connection refused", "reason", reason, "client", cl.ID,
			"remote", cl.Net.Remote, "listener", cl.Net.Listener, "error", err)
	}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: code.v3}
	if cl.Properties.ProtocolVersion == 5 {
		ack.ReasonCode = code.v5
		ack.Properties.ReasonString = code.text
	}
	_ = cl.WritePacket(ack)
	return errConnectRefused
}

// classifyAuthError maps an Authenticator error to a metric label and a
// CONNACK code.
func classifyAuthError(err error, password []byte, certs []*x509.Certificate) (string, connackCode) {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return ReasonAuthUnavailable, codeUnavailable
	}
	reason := refusalReason(err)
	if reason == "" {
		reason = ReasonRefused
	}
	var bc interface{ BadCredentials() bool }
	switch {
	case errors.As(err, &bc):
		if bc.BadCredentials() {
			return reason, codeBadCredentials
		}
		return reason, codeNotAuthorized
	case len(password) > 0 && len(certs) == 0:
		return reason, codeBadCredentials
	}
	return reason, codeNotAuthorized
}

// refusalReason returns err's RefusalReason() as a safe metric label
// ([a-z0-9_], bounded), or "" when err has none.
func refusalReason(err error) string {
	var rr interface{ RefusalReason() string }
	if !errors.As(err, &rr) {
		return ""
	}
	r := rr.RefusalReason()
	if r == "" || len(r) > maxRefusalReasonLabelLen {
		return "other"
	}
	for i := 0; i < len(r); i++ {
		if c := r[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return "other"
		}
	}
	return r
}

// OnConnectAuthenticate accepts exactly the clients OnConnect approved.
// Their client certificate has served its purpose then.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	_, ok := h.approved.LoadAndDelete(cl)
	if ok {
		dropPeerCertificates(cl.Net.Conn)
	}
	return ok
}

// OnACLCheck is mochi's check for every PUBLISH (write), every SUBSCRIBE
// filter and every delivery (read). Publish denials are counted here;
// subscribe denials in OnSubscribe (a read check cannot tell a filter from
// a delivery).
func (h *hook) OnACLCheck(cl *mqtt.Client, name string, write bool) bool {
	b := h.b
	if cl.Net.Inline {
		return true
	}
	if b.cfg.OpenPolicy {
		if write {
			if err := checkTopicShape(name); err != nil {
				b.deny(cl, "publish", boundsDenial(err), name)
				return false
			}
		}
		return true
	}
	if write {
		if r := b.publishDenial(cl.ID, name); r != "" {
			b.deny(cl, "publish", r, name)
			return false
		}
		return true
	}
	return b.readDenial(cl.ID, name) == ""
}

// OnPacketRead bounds SUBSCRIBE and UNSUBSCRIBE filters (length, levels,
// shape) before mochi indexes them: mochi's topic index costs time
// quadratic in the number of levels (65,535 levels: about 15 s of CPU). An
// MQTT 5 client gets 0x8F (SUBACK) or 0x11 (UNSUBACK) for such a filter; an
// MQTT 3.1.1 client, which has no way to be told, is disconnected.
func (h *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Subscribe && pk.FixedHeader.Type != packets.Unsubscribe {
		return pk, nil
	}
	for i := range pk.Filters {
		err := topic.ValidateFilter(pk.Filters[i].Filter)
		if err == nil {
			continue
		}
		h.b.deny(cl, "subscribe", boundsDenial(err), pk.Filters[i].Filter)
		if cl.Properties.ProtocolVersion < 5 {
			return pk, packets.ErrRejectPacket // mochi closes the connection
		}
		pk.Filters[i].Filter = invalidFilterMarker // mochi answers 0x8F, cheaply
	}
	return pk, nil
}

// OnSubscribe counts and logs the filters the ACL will deny (mochi then
// answers 0x87, or 0x80 to MQTT 3.1.1).
func (h *hook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	b := h.b
	if cl.Net.Inline || b.cfg.OpenPolicy {
		return pk
	}
	for _, f := range pk.Filters {
		if f.Filter == invalidFilterMarker {
			continue
		}
		if r := b.readDenial(cl.ID, f.Filter); r != "" {
			b.deny(cl, "subscribe", r, f.Filter)
		}
	}
	return pk
}

// OnSubscribed tells the SubscribeWatcher which filters a client was
// granted.
func (h *hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	b := h.b
	if cl.Net.Inline || b.subs == nil {
		return
	}
	var granted []string
	for i, f := range pk.Filters {
		if i < len(reasonCodes) && reasonCodes[i] < 0x80 && f.Filter != invalidFilterMarker {
			granted = append(granted, f.Filter)
		}
	}
	if len(granted) > 0 {
		b.subs.Subscribed(cl.ID, granted)
	}
}

// OnSessionEstablish runs before mochi hands a persistent session over to
// a reconnecting client and resends its unacknowledged messages. With a
// ResponseIngester (which then owns command redelivery), it drops from the
// old session the unacknowledged publishes of the device's own commands
// (the command service resends those still due) and any command whose
// Message Expiry has passed, so that an expired command is never
// delivered late.
func (h *hook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	b := h.b
	if cl.Net.Inline || b.ings.Responses == nil || pk.Connect.Clean {
		return
	}
	old, ok := b.server.Clients.Get(cl.ID)
	if !ok || old == cl || old.State.Inflight.Len() == 0 {
		return
	}
	own := topic.Prefix + "/" + cl.ID + "/commands/"
	now := b.now().Unix()
	for _, m := range old.State.Inflight.GetAll(false) {
		if m.FixedHeader.Type != packets.Publish {
			continue
		}
		t, err := topic.Parse(m.TopicName)
		if err != nil || t.Kind != topic.KindCommand {
			continue
		}
		if strings.HasPrefix(m.TopicName, own) || (m.Expiry > 0 && m.Expiry <= now) {
			if old.State.Inflight.Delete(m.PacketID) {
				atomic.AddInt64(&b.server.Info.Inflight, -1)
				old.State.Inflight.IncreaseSendQuota()
			}
		}
	}
}

// OnPublish takes telemetry, gateway batches and (with the optional
// ingesters) alerts, command responses and reported twin patches off
// mochi's normal path (see ingest.go); other device topics go on through
// mochi to subscribers (the hub's services subscribe through the inline
// client).
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	b := h.b
	if cl.Net.Inline {
		return pk, nil
	}
	t, err := topic.Parse(pk.TopicName)
	if err != nil {
		b.metrics.receivedKind(topic.KindUnknown)
		return pk, nil
	}
	b.metrics.receivedKind(t.Kind)
	call := b.ings.Call(t, pk.Properties.CorrelationData, pk.Payload)
	if call == nil {
		// Status, or a kind this broker's Ingester does not take (only
		// under OpenPolicy for batches: the ACL denies them otherwise).
		return pk, nil
	}
	slots := b.slots
	switch t.Kind {
	case topic.KindTelemetry, topic.KindBatch:
		if !b.cfg.OpenPolicy && t.Device != cl.ID {
			return pk, packets.ErrRejectPacket // unreachable: the ACL ran first
		}
		if t.Kind == topic.KindBatch {
			slots = b.bslots
		}
	}
	// For alerts, responses and reported state, t.Device is the client's
	// own id or, as the ACL checked, one of the devices behind it.
	return b.ingest(cl, pk, slots, t.Device, t.Kind, call)
}

// OnSessionEstablished counts the connection and marks its device online.
func (h *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	b := h.b
	if cl.Net.Inline {
		return
	}
	b.metrics.connections.WithLabelValues(cl.Net.Listener).Inc()
	b.metrics.connects.Inc()
	device := b.identity(cl)
	if device == "" {
		return
	}
	b.presMu.Lock()
	defer b.presMu.Unlock()
	// mochi runs this hook after the CONNACK is written, so a newer
	// connection with the same client id may already have taken the
	// session over; then this one is not the device's any more.
	if cur, ok := b.server.Clients.Get(cl.ID); ok && cur != cl {
		return
	}
	b.online[device] = cl
	if b.presence != nil {
		b.presence.Connected(device, b.now())
	}
}

// OnDisconnect marks the device offline unless a newer connection of the
// same client id took the session over (that one is the device's now).
func (h *hook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	b := h.b
	if cl.Net.Inline {
		return
	}
	b.metrics.connections.WithLabelValues(cl.Net.Listener).Dec()
	b.dropSession(cl)
	device := b.identity(cl)
	if device == "" {
		return
	}
	b.presMu.Lock()
	defer b.presMu.Unlock()
	if b.online[device] != cl {
		return
	}
	delete(b.online, device)
	if b.presence != nil {
		b.presence.Disconnected(device, b.now())
	}
}

// OnPublishDropped logs a message dropped because a subscriber's write
// queue was full (mochi counts it in Info.MessagesDropped).
func (h *hook) OnPublishDropped(cl *mqtt.Client, pk packets.Packet) {
	if h.b.limiter.allow("drop|" + DropWritesPending + "|" + cl.ID) {
		h.b.log.Warn("message dropped: client write queue full", "client", cl.ID,
			"topic", truncate(pk.TopicName), "max_writes_pending", h.b.cfg.MaxWritesPending)
	}
}

// OnQosDropped counts and logs an unacknowledged QoS 1/2 message discarded.
func (h *hook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	h.b.metrics.qosDropped.Add(1)
	if h.b.limiter.allow("drop|" + DropQoS + "|" + cl.ID) {
		h.b.log.Warn("unacknowledged QoS message dropped", "client", cl.ID, "packet_id", pk.PacketID)
	}
}

// deny counts an ACL or bounds denial and logs it, at most once per client
// per action and reason per interval.
func (b *Broker) deny(cl *mqtt.Client, action, reason, name string) {
	b.metrics.denial(action, reason)
	if b.limiter.allow("acl|" + action + "|" + reason + "|" + cl.ID) {
		b.log.Warn("acl denied", "action", action, "reason", reason, "client", cl.ID,
			"topic", truncate(name), "remote", cl.Net.Remote)
	}
}

func truncate(s string) string {
	if len(s) <= maxLoggedTopicLen {
		return s
	}
	return s[:maxLoggedTopicLen] + "…"
}
