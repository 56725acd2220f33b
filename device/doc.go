// Package device is fieldhub's device SDK: a Go client that connects a
// device to a fieldhub hub (or edge gateway) over MQTT 5 and does the
// robust things for it.
//
//	import "github.com/fieldhub/fieldhub/device"
//
//	c, err := device.Connect(ctx, device.Config{
//		Server:   "mqtts://hub.example.com:8883",
//		DeviceID: "sensor-1",
//		Password: password,       // or Certificate: a tls.Certificate
//		CAFile:   "ca.pem",       // the hub's DIR/ca.pem
//	})
//	...
//	err = c.Publish(ctx, map[string]any{"temperature": 21.5})
//
// What the client does (DESIGN §3 is the wire contract):
//
//   - Connection. MQTT 5 over TLS (password or client certificate) or
//     plain TCP, client id and user name = the device id, Clean Start
//     false with a Session Expiry (1 h by default) so that QoS 1 commands
//     queued by the hub survive short drops. Lost connections are
//     re-established with exponential backoff and full jitter.
//   - Presence. The will is a retained "offline" on devices/{id}/status;
//     every connection publishes a retained "online" there; Close
//     publishes "offline".
//   - Telemetry. Publish sends {"ts","seq","data"} on
//     devices/{id}/telemetry at QoS 1. seq starts at the Unix time in
//     milliseconds and grows by one per message, so the hub, which ignores
//     a (device, seq) it has stored, keeps each message once however often
//     it is resent. Messages wait in a bounded buffer, in memory or on disk
//     (Config.BufferDir), until the hub acknowledges them — which means
//     they are durably stored — and are sent in order, pipelined, on every
//     new connection.
//   - Commands. The client subscribes to devices/{id}/commands/+ on every
//     connection, runs the handler registered with HandleCommand and
//     answers on the MQTT 5 response topic with the correlation data, or
//     on devices/{id}/responses/{command-id}.
//   - Twin. ReportState publishes JSON merge patches of the reported state
//     on devices/{id}/twin/reported; OnDesired and Desired follow the
//     retained {"version","state"} on devices/{id}/twin/desired.
//
// Every goroutine the client starts is stopped by Close.
package device
