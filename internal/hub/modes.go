package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fieldhub/fieldhub/internal/broker"
	"github.com/fieldhub/fieldhub/internal/brokerauth"
	"github.com/fieldhub/fieldhub/internal/config"
	"github.com/fieldhub/fieldhub/internal/extbroker"
	"github.com/fieldhub/fieldhub/internal/store/postgres"
	"github.com/fieldhub/fieldhub/internal/store/sqlite"
	"github.com/fieldhub/fieldhub/internal/tsdb"
	"github.com/fieldhub/fieldhub/topic"
)

// openStores opens the state and telemetry stores of cfg.Storage: files
// under the data folder, or PostgreSQL.
func (h *Hub) openStores(ctx context.Context) error {
	cfg := h.cfg
	if cfg.Storage == "postgres" {
		pg, err := postgres.Open(ctx, cfg.PostgresURL, postgres.Options{Logger: h.log.With("component", "postgres")})
		if err != nil {
			return fmt.Errorf("opening PostgreSQL: %w", err)
		}
		h.db = pg
		tel, err := pg.Telemetry(ctx, postgres.TelemetryOptions{
			Retention:  time.Duration(cfg.Retention),
			Logger:     h.log.With("component", "telemetry"),
			Registerer: h.reg,
		})
		if err != nil {
			return fmt.Errorf("opening PostgreSQL telemetry: %w", err)
		}
		h.tel = tel
		return nil
	}
	db, err := sqlite.Open(filepath.Join(cfg.Data, "registry.db"))
	if err != nil {
		return fmt.Errorf("opening registry: %w", err)
	}
	h.db = db
	tdb, err := tsdb.Open(filepath.Join(cfg.Data, "telemetry"), tsdb.Options{
		Retention:          time.Duration(cfg.Retention),
		DedupWindow:        cfg.DedupWindow,
		CheckpointInterval: time.Duration(cfg.CheckpointInterval),
		Logger:             h.log,
		Registerer:         h.reg,
	})
	if err != nil {
		return fmt.Errorf("opening telemetry store: %w", err)
	}
	h.tel = tdb
	return nil
}

// newEmbeddedBroker builds the hub's own MQTT broker.
func (h *Hub) newEmbeddedBroker(serverCert tls.Certificate) error {
	cfg := h.cfg
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}
	b, err := broker.New(broker.Config{
		TCPAddr:   off(cfg.MQTTAddr),
		TLSAddr:   off(cfg.MQTTSAddr),
		WSAddr:    off(cfg.WSAddr),
		WSSAddr:   off(cfg.WSSAddr),
		TLS:       tlsCfg,
		ClientCAs: h.ca.Pool(),
		// Clients that present only their own certificate still chain.
		ClientIntermediates: h.ca.Intermediates(),
		VerifyClient: func(certs []*x509.Certificate) error {
			_, err := h.ca.VerifyClient(certs, time.Now())
			return err
		},
		OpenPolicy: cfg.InsecureOpenPolicy,
		Gateways:   h.devices,
		// Payloads a little over the limit get a reasoned refusal
		// (too_large); far larger packets are cut off by the broker.
		MaxPacketSize: uint32(max(256<<10, 2*cfg.MaxPayloadBytes)),
		IdleAfter:     idleAfter(cfg.MQTTIdleAfter),
		Logger:        h.log,
		Registerer:    h.reg,
	}, h.devices, h.ingester(), h.presence)
	if err != nil {
		return err
	}
	h.broker, h.pub = b, b
	h.presence.online = b.Online
	h.presence.count = b.OnlineCount
	h.devices.OnRevoke(func(id string) {
		b.Disconnect(id)
	})
	return nil
}

// newExternalBroker builds the link to an external broker: the hub's
// consumer of device traffic through shared subscriptions. Presence comes
// from the devices' retained status messages, which every instance reads.
func (h *Hub) newExternalBroker() error {
	cfg := h.cfg
	id := cfg.ExternalBrokerClientID
	if id == "" {
		hn, err := os.Hostname()
		if err != nil || hn == "" {
			return fmt.Errorf("external_broker_client_id: not set and no host name to derive it from")
		}
		id = "fieldhub-" + hn
		h.cfg.ExternalBrokerClientID = id
	}
	var tlsCfg *tls.Config
	if cfg.ExternalBrokerCAFile != "" {
		pem, err := os.ReadFile(cfg.ExternalBrokerCAFile)
		if err != nil {
			return fmt.Errorf("external_broker_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("external_broker_ca_file: no certificate in %s", cfg.ExternalBrokerCAFile)
		}
		tlsCfg = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	c, err := extbroker.New(extbroker.Config{
		URL:        cfg.ExternalBrokerURL,
		ClientID:   id,
		Username:   cfg.ExternalBrokerUsername,
		Password:   []byte(cfg.ExternalBrokerPassword),
		TLS:        tlsCfg,
		ShareGroup: cfg.ShareGroup,
		Known: func(device string) bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return h.devices.Known(ctx, device)
		},
		Logger:     h.log.With("component", "extbroker"),
		Registerer: h.reg,
	}, h.ingester(), h.presence.externalStatus)
	if err != nil {
		return err
	}
	h.ext, h.pub = c, c
	h.presence.online = h.presence.statusOnline
	h.presence.count = h.presence.onlineCount
	h.devices.OnRevoke(func(id string) {
		// The external broker keeps a live session until the device
		// disconnects; its credentials are gone at the next sync.
		h.log.Info("device revoked; an external broker ends its session only when it next authenticates", "device", id)
	})
	return nil
}

// externalConnectTimeout bounds how long Start waits for the external broker.
const externalConnectTimeout = 30 * time.Second

// startBroker starts the embedded broker, or connects to the external one.
func (h *Hub) startBroker(ctx context.Context) error {
	if h.ext != nil {
		cctx, cancel := context.WithTimeout(ctx, externalConnectTimeout)
		defer cancel()
		return h.ext.Start(cctx)
	}
	if err := h.broker.Start(ctx); err != nil {
		return err
	}
	return h.broker.Subscribe(topic.Prefix+"/+/status", 1, h.presence.statusPublished)
}

// ingester is what the brokers hand device traffic to.
func (h *Hub) ingester() ingester {
	return ingester{h.ingest, h.commands, h.twins, h.presence.Seen}
}

// hubUsers is the hub's own user at the external broker (the same for
// every instance), written to Mosquitto's files and accepted as superuser
// by the HTTP authentication endpoint.
func (h *Hub) hubUsers() []brokerauth.HubUser {
	if h.cfg.ExternalBrokerUsername == "" || h.cfg.ExternalBrokerPassword == "" {
		return nil
	}
	return []brokerauth.HubUser{{Name: h.cfg.ExternalBrokerUsername, Password: h.cfg.ExternalBrokerPassword}}
}

// idleAfter maps mqtt_idle_after (0: never park) to broker.Config.IdleAfter
// (0: the default, negative: never).
func idleAfter(d config.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return time.Duration(d)
}
