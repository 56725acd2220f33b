package broker

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/system"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/idleconn"
	"github.com/fieldhub/fieldhub/topic"
)

// Drop reasons (fieldhub_mqtt_dropped_total{reason}).
const (
	DropWritesPending = "writes_pending" // a slow subscriber's write queue was full
	DropInflightFull  = "inflight_full"  // a client's store of unacked QoS 1/2 messages was full
	DropQoS           = "qos_dropped"    // an unacked QoS 1/2 message was discarded (clean session end, refused ack, expiry)
)

type metrics struct {
	connections   *prometheus.GaugeVec
	connects      prometheus.Counter
	refusals      *prometheus.CounterVec
	aclDenials    *prometheus.CounterVec
	received      []prometheus.Counter // by topic.Kind; index 0 ("unknown") is for non-device topics
	ingestLatency prometheus.Histogram
	ingestPending prometheus.Gauge
	ingestRefused *prometheus.CounterVec
	ingestFailed  prometheus.Counter
	qosDropped    atomic.Int64
}

func newMetrics(reg prometheus.Registerer, info *system.Info, poller *atomic.Pointer[idleconn.Poller]) (*metrics, error) {
	m := &metrics{
		connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fieldhub_mqtt_connections",
			Help: "MQTT sessions currently established, by listener.",
		}, []string{"listener"}),
		connects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_mqtt_connects_total",
			Help: "MQTT sessions established (CONNACK success).",
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldhub_mqtt_connect_refusals_total",
			Help: "Connections refused at the TLS handshake or at CONNECT, by reason.",
		}, []string{"reason"}),
		aclDenials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldhub_mqtt_acl_denials_total",
			Help: "Publishes and subscriptions denied by the topic ACL or the topic bounds, by action and reason.",
		}, []string{"action", "reason"}),
		ingestLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fieldhub_ingest_latency_seconds",
			Help:    "Time from a telemetry PUBLISH being received to the ingester completing it.",
			Buckets: prometheus.ExponentialBuckets(0.00025, 2, 16),
		}),
		ingestPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fieldhub_ingest_pending",
			Help: "Telemetry messages handed to the ingester and not yet completed.",
		}),
		ingestRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldhub_ingest_refused_total",
			Help: "Telemetry messages refused (payload invalid or metric type mismatch), by reason.",
		}, []string{"reason"}),
		ingestFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fieldhub_ingest_failed_total",
			Help: "Telemetry messages whose ingest failed; the client was disconnected unacked to resend.",
		}),
	}
	received := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fieldhub_mqtt_messages_received_total",
		Help: "PUBLISH packets accepted by the ACL, by kind of topic (other: not a device topic).",
	}, []string{"kind"})
	for k := topic.KindUnknown; k <= topic.KindBatch; k++ {
		name := k.String()
		if k == topic.KindUnknown {
			name = "other"
		}
		m.received = append(m.received, received.WithLabelValues(name))
	}
	for _, l := range []string{ListenerTCP, ListenerTLS, ListenerWS, ListenerWSS} {
		m.connections.WithLabelValues(l)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{
		m.connections, m.connects, m.refusals, m.aclDenials, received,
		m.ingestLatency, m.ingestPending, m.ingestRefused, m.ingestFailed,
		&dropCollector{info: info, qos: &m.qosDropped},
		&parkCollector{poller: poller},
	} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("broker: registering metrics (one Broker per registry): %w", err)
			}
			return nil, fmt.Errorf("broker: registering metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) refusal(reason string) { m.refusals.WithLabelValues(reason).Inc() }

func (m *metrics) denial(action, reason string) { m.aclDenials.WithLabelValues(action, reason).Inc() }

func (m *metrics) receivedKind(k topic.Kind) {
	if int(k) < 0 || int(k) >= len(m.received) {
		k = topic.KindUnknown
	}
	m.received[k].Inc()
}

var dropDesc = prometheus.NewDesc("fieldhub_mqtt_dropped_total",
	"Messages the broker dropped instead of delivering, by reason.", []string{"reason"}, nil)

// dropCollector exports mochi's drop counters (system.Info) with ours.
type dropCollector struct {
	info *system.Info
	qos  *atomic.Int64
}

func (c *dropCollector) Describe(ch chan<- *prometheus.Desc) { ch <- dropDesc }

func (c *dropCollector) Collect(ch chan<- prometheus.Metric) {
	for _, d := range []struct {
		reason string
		v      int64
	}{
		{DropWritesPending, atomic.LoadInt64(&c.info.MessagesDropped)},
		{DropInflightFull, atomic.LoadInt64(&c.info.InflightDropped)},
		{DropQoS, c.qos.Load()},
	} {
		ch <- prometheus.MustNewConstMetric(dropDesc, prometheus.CounterValue, float64(d.v), d.reason)
	}
}

var (
	parkedDesc = prometheus.NewDesc("fieldhub_mqtt_connections_parked",
		"TCP and TLS connections idle without a goroutine, watched by epoll until their next packet.", nil, nil)
	resumesDesc = prometheus.NewDesc("fieldhub_mqtt_connection_resumes_total",
		"Parked connections resumed, by cause (readable, deadline: keepalive passed, closed).", []string{"cause"}, nil)
	parkFailuresDesc = prometheus.NewDesc("fieldhub_mqtt_park_failures_total",
		"Idle connections that could not park (epoll failed or the broker was stopping) and were closed.", nil, nil)
)

// parkCollector exports the idle-connection poller's state. poller points
// at Broker.poller, set by Start (before any connection can park).
type parkCollector struct {
	poller *atomic.Pointer[idleconn.Poller]
}

func (c *parkCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- parkedDesc
	ch <- resumesDesc
	ch <- parkFailuresDesc
}

func (c *parkCollector) Collect(ch chan<- prometheus.Metric) {
	var parked int64
	var readable, deadline, closed, failures uint64
	if p := c.poller.Load(); p != nil {
		parked = p.Parked()
		readable, deadline, closed = p.Resumes()
		failures = p.Failures()
	}
	ch <- prometheus.MustNewConstMetric(parkFailuresDesc, prometheus.CounterValue, float64(failures))
	ch <- prometheus.MustNewConstMetric(parkedDesc, prometheus.GaugeValue, float64(parked))
	for _, r := range []struct {
		cause string
		v     uint64
	}{{"readable", readable}, {"deadline", deadline}, {"closed", closed}} {
		ch <- prometheus.MustNewConstMetric(resumesDesc, prometheus.CounterValue, float64(r.v), r.cause)
	}
}
