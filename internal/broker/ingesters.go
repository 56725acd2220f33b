package broker

import "github.com/fieldhub/fieldhub/topic"

// Ingesters is an Ingester together with the optional interfaces it also
// implements, resolved once. The embedded broker and the hub's link to an
// external broker both hand messages on through Call.
type Ingesters struct {
	Ingester
	Batch     BatchIngester    // nil when the Ingester is not one
	Alerts    AlertIngester    // nil when the Ingester is not one
	Responses ResponseIngester // nil when the Ingester is not one
	Twins     TwinIngester     // nil when the Ingester is not one
}

// NewIngesters resolves the optional interfaces of ing.
func NewIngesters(ing Ingester) Ingesters {
	in := Ingesters{Ingester: ing}
	in.Batch, _ = ing.(BatchIngester)
	in.Alerts, _ = ing.(AlertIngester)
	in.Responses, _ = ing.(ResponseIngester)
	in.Twins, _ = ing.(TwinIngester)
	return in
}

// Call returns the call that hands payload, published on t (with its
// MQTT 5 correlation data, nil from 3.1.1), to the ingester of t's kind,
// or nil when none takes that kind (status topics, and kinds whose
// optional interface the Ingester lacks).
func (in Ingesters) Call(t topic.Topic, correlation, payload []byte) func(done func(error)) {
	switch t.Kind {
	case topic.KindTelemetry:
		return func(done func(error)) { in.Ingest(t.Device, payload, done) }
	case topic.KindBatch:
		if in.Batch != nil {
			return func(done func(error)) { in.Batch.IngestBatch(t.Device, payload, done) }
		}
	case topic.KindAlerts:
		if in.Alerts != nil {
			return func(done func(error)) { in.Alerts.IngestAlert(t.Device, payload, done) }
		}
	case topic.KindResponse:
		if in.Responses != nil {
			return func(done func(error)) { in.Responses.IngestResponse(t.Device, t.Rest, correlation, payload, done) }
		}
	case topic.KindTwinReported:
		if in.Twins != nil {
			return func(done func(error)) { in.Twins.IngestReported(t.Device, payload, done) }
		}
	}
	return nil
}
