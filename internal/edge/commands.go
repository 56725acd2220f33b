package edge

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/internal/broker"
	"github.com/fieldhub/fieldhub/payload"
	"github.com/fieldhub/fieldhub/topic"
)

// relayCommand hands a command from the hub (devices/{sensor}/commands/
// {name}) to the sensor on the local broker, asking for the answer on
// devices/{sensor}/responses/{cid}, which IngestResponse forwards to the
// hub. A sensor that is not connected to the edge gets the command
// answered at once with an error, so that it fails at the hub instead of
// waiting for its expiry.
func (e *Edge) relayCommand(p *paho.Publish) {
	t, err := topic.Parse(p.Topic)
	if err != nil || t.Kind != topic.KindCommand {
		e.log.Warn("unexpected message from the hub", "topic", p.Topic)
		return
	}
	var cmd struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(p.Payload, &cmd); err != nil || cmd.ID == "" {
		e.log.Warn("command without an id from the hub", "topic", p.Topic, "err", err)
		return
	}
	e.m.commands.WithLabelValues("received").Inc()
	if !e.broker.HasSubscriber(p.Topic) {
		e.m.commands.WithLabelValues("sensor_offline").Inc()
		go e.answerHub(t.Device, cmd.ID, []byte(`{"status":"error","error":"the sensor is not connected to edge gateway `+e.cfg.ID+`"}`))
		return
	}
	err = e.broker.PublishMessage(broker.Message{
		Topic: p.Topic, Payload: p.Payload, QoS: 1,
		ResponseTopic: topic.Response(t.Device, cmd.ID), CorrelationData: []byte(cmd.ID),
		ContentType: "application/json",
	})
	if err != nil {
		e.log.Warn("relaying a command failed", "sensor", t.Device, "command", cmd.ID, "err", err)
	}
}

// answerHub sends an answer to a command to the hub.
func (e *Edge) answerHub(device, cid string, body []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err := e.up.publish(ctx, &paho.Publish{Topic: topic.Response(device, cid), QoS: 1, Payload: body,
		Properties: &paho.PublishProperties{CorrelationData: []byte(cid)}})
	if err != nil {
		e.log.Warn("answering a command at the hub failed", "sensor", device, "command", cid, "err", err)
	}
}

// IngestResponse implements broker.ResponseIngester for the local
// listener: a sensor's answer to a relayed command goes to the hub, and the
// sensor gets its PUBACK once the hub has it (no PUBACK while the uplink is
// down, so the sensor sends it again).
func (e *Edge) IngestResponse(device, commandID string, correlation, payload []byte, done func(error)) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		p := &paho.Publish{Topic: topic.Response(device, commandID), QoS: 1, Payload: payload}
		if len(correlation) > 0 {
			p.Properties = &paho.PublishProperties{CorrelationData: correlation}
		}
		err := e.up.publish(ctx, p)
		if err == nil {
			e.m.commands.WithLabelValues("answered").Inc()
		} else {
			e.log.Log(ctx, slog.LevelWarn, "forwarding a command answer failed", "sensor", device, "command", commandID, "err", err)
		}
		done(err)
	}()
}

// ReasonUplinkDown refuses a sensor's reported twin patch while the
// uplink to the hub is down (PUBACK with an error code; the sensor
// reports again later).
const ReasonUplinkDown = "uplink_down"

// IngestReported implements broker.TwinIngester for the local listener: a
// sensor's reported twin patch (its firmware version, say) goes to the hub
// on devices/{sensor}/twin/reported, and the sensor gets its PUBACK once
// the hub has stored it. Reported patches are not spooled: while the
// uplink is down, or when the hub does not answer, the patch is refused
// (reason uplink_down) and the sensor reports again later.
func (e *Edge) IngestReported(device string, body []byte, done func(error)) {
	if !e.up.connected.Load() {
		done(&payload.Error{Reason: ReasonUplinkDown, Msg: "the gateway's uplink to the hub is down; report again later"})
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		err := e.up.publish(ctx, &paho.Publish{Topic: topic.TwinReported(device), QoS: 1, Payload: body})
		if err != nil {
			e.log.Warn("forwarding a reported twin patch failed", "sensor", device, "err", err)
			err = &payload.Error{Reason: ReasonUplinkDown, Msg: "the hub did not take the patch: " + err.Error()}
		}
		done(err)
	}()
}
