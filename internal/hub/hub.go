// Package hub is the composition root of `fieldhub serve`: it builds the
// stores, the CA, the registry, the ingest path, the command and twin
// services, the broker and the API in order, and stops them in the reverse
// order.
package hub

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fieldhub/fieldhub/internal/api"
	"github.com/fieldhub/fieldhub/internal/broker"
	"github.com/fieldhub/fieldhub/internal/brokerauth"
	"github.com/fieldhub/fieldhub/internal/command"
	"github.com/fieldhub/fieldhub/internal/config"
	"github.com/fieldhub/fieldhub/internal/extbroker"
	"github.com/fieldhub/fieldhub/internal/influx"
	"github.com/fieldhub/fieldhub/internal/live"
	"github.com/fieldhub/fieldhub/internal/pki"
	"github.com/fieldhub/fieldhub/internal/registry"
	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/telemetry"
	"github.com/fieldhub/fieldhub/internal/twin"
	"github.com/fieldhub/fieldhub/internal/web"
	"github.com/fieldhub/fieldhub/payload"
	"github.com/fieldhub/fieldhub/topic"
)

// Hub is a running hub. Create it with New, then Start; stop it with Shutdown.
type Hub struct {
	cfg config.Hub
	log *slog.Logger
	reg *prometheus.Registry

	adminToken string
	db         stateStore     // registry, CA, alerts, commands, twins
	tel        telemetryStore // telemetry
	ca         *pki.CA
	devices    *registry.Service
	presence   *presence
	ingest     *telemetry.Ingester
	commands   *command.Service
	live       *live.Broadcaster
	twins      *twin.Service
	broker     *broker.Broker        // the embedded broker, nil with an external one
	ext        *extbroker.Client     // the link to an external broker, or nil
	mosquitto  *brokerauth.Mosquitto // keeps an external Mosquitto's files, or nil
	influx     *influx.Sink          // exports telemetry to InfluxDB, or nil
	pub        publisher             // broker or ext
	api        *api.API
	httpSrv    *http.Server
	httpLn     net.Listener

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	started  atomic.Bool
	shutdown atomic.Bool
}

// stateStore is what the hub keeps beside telemetry: the embedded SQLite
// store or PostgreSQL.
type stateStore interface {
	store.Registry
	store.KV
	store.Alerts
	store.Commands
	store.Twins
	HasChildren(ctx context.Context, gateway string) (bool, error)
	Close() error
}

// locker is implemented by stores shared by several hub instances.
type locker interface {
	Locked(ctx context.Context, name string, fn func(ctx context.Context) error) error
}

// telemetryStore is the embedded time-series store or PostgreSQL's.
type telemetryStore interface {
	store.Telemetry
	// Err is the error that stopped the store, nil while it works.
	Err() error
}

// publisher sends the hub's own messages (commands, desired twin state)
// through the embedded or the external broker.
type publisher interface {
	PublishMessage(m broker.Message) error
	Publish(name string, payload []byte, retain bool, qos byte) error
}

// New validates cfg and returns a hub ready to Start.
func New(cfg config.Hub, logger *slog.Logger) (*Hub, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Hub{cfg: cfg, log: logger, reg: prometheus.NewRegistry()}, nil
}

// Start opens the data folder and starts every listener. On error, what
// was started is stopped again.
func (h *Hub) Start(ctx context.Context) (err error) {
	if !h.started.CompareAndSwap(false, true) {
		return errors.New("hub already started")
	}
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			h.Shutdown(sctx)
		}
	}()
	cfg := h.cfg
	if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
		return fmt.Errorf("creating data folder: %w", err)
	}
	h.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	if h.adminToken, err = adminToken(cfg, h.log); err != nil {
		return err
	}
	keyFile := cfg.MasterKeyFile
	if keyFile == "" {
		keyFile = config.DefaultMasterKeyFile()
	}
	sealKey, err := pki.LoadSealKey(keyFile, cfg.MasterKey)
	if err != nil {
		return fmt.Errorf("loading master key: %w", err)
	}
	if err := h.openStores(ctx); err != nil {
		return err
	}
	openCA := func(ctx context.Context) (err error) {
		h.ca, err = pki.Open(ctx, h.db, sealKey, h.log.With("component", "pki"))
		return err
	}
	if l, ok := h.db.(locker); ok {
		// Instances sharing the database create the CA once.
		err = l.Locked(ctx, "fieldhub-ca", openCA)
	} else {
		err = openCA(ctx)
	}
	if err != nil {
		return fmt.Errorf("opening CA: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(cfg.Data, "ca.pem"), h.ca.CertPEM(), 0o644); err != nil {
		return err
	}
	names := append([]string{"localhost", "127.0.0.1", "::1"}, cfg.Hostnames...)
	if hn, err := os.Hostname(); err == nil && hn != "" {
		names = append(names, hn)
	}
	serverCert, err := h.ca.ServerCertificate(ctx, names)
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	regOpts := registry.Options{Logger: h.log.With("component", "registry")}
	if cfg.MosquittoPasswordFile != "" {
		// Mosquitto cannot verify argon2id: new and rotated passwords
		// also get a Mosquitto hash, written to its password file.
		if h.mosquitto, err = brokerauth.NewMosquitto(h.db, h.db, brokerauth.MosquittoConfig{
			PasswordFile: cfg.MosquittoPasswordFile,
			ACLFile:      cfg.MosquittoACLFile,
			PIDFile:      cfg.MosquittoPIDFile,
			HubUsers:     h.hubUsers(),
			Logger:       h.log.With("component", "mosquitto"),
			Registerer:   h.reg,
		}); err != nil {
			return err
		}
		regOpts.OnPassword = h.mosquitto.OnPassword
	}
	h.devices = registry.New(h.db, h.ca, regOpts)
	if h.mosquitto != nil {
		h.mosquitto.Watch(h.devices)
		if _, err := h.mosquitto.Sync(ctx); err != nil {
			return fmt.Errorf("writing Mosquitto's files: %w", err)
		}
	}
	h.presence = newPresence(h.db, h.log.With("component", "presence"), h.reg)
	// Gateways act for the devices registered behind them (the registry's
	// cached IsChild/IsGateway); alerts go to the registry database.
	// Stored telemetry is fanned out to the live streams of the API.
	h.live = live.New(live.Options{Registerer: h.reg})
	if cfg.Export.InfluxDB.Enabled() {
		if h.influx, err = influx.New(cfg.Export.InfluxDB, influx.Options{
			Logger: h.log.With("component", "influxdb"), Registerer: h.reg,
		}); err != nil {
			return fmt.Errorf("export.influxdb: %w", err)
		}
	}
	h.ingest = telemetry.New(h.tel, telemetry.Options{
		Limits:     payload.Limits{MaxBytes: cfg.MaxPayloadBytes, MaxPoints: cfg.MaxPointsPerMessage},
		Logger:     h.log.With("component", "ingest"),
		Registerer: h.reg,
		Seen:       h.presence.Seen,
		Gateways:   h.devices,
		Alerts:     h.db,
		Stored:     h.stored,
	})
	// Commands and twins publish through the broker, which is built next
	// (brokerLink reads h.pub when called).
	var pollWaiters time.Duration
	if cfg.Storage == "postgres" {
		// Another instance may store the answer a waiter waits for.
		pollWaiters = 100 * time.Millisecond
	}
	if h.commands, err = command.New(command.Options{
		Store:       h.db,
		PollWaiters: pollWaiters,
		Publisher:   brokerLink{h},
		Logger:      h.log.With("component", "command"),
		Registerer:  h.reg,
	}); err != nil {
		return err
	}
	if h.twins, err = twin.New(twin.Options{
		Store:      h.db,
		Publisher:  brokerLink{h},
		Logger:     h.log.With("component", "twin"),
		Registerer: h.reg,
	}); err != nil {
		return err
	}
	h.presence.devices = h.commands
	if cfg.Broker == "external" {
		if err := h.newExternalBroker(); err != nil {
			return err
		}
	} else if err := h.newEmbeddedBroker(serverCert); err != nil {
		return err
	}

	h.api = api.New(api.Options{
		AdminToken: h.adminToken,
		Registry:   deviceAdmin{h},
		Telemetry:  h.tel,
		Alerts:     h.db,
		Commands:   h.commands,
		Twins:      h.twins,
		Live:       h.live,
		Presence:   h.presence,
		Rates:      h.ingest,
		TwinIndex:  h.db,
		CAPEM:      h.ca.CertPEM(),
		Metrics:    promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{Registry: h.reg}),
		Ready:      h.ready,
		Logger:     h.log.With("component", "api"),
	})
	if cfg.BrokerAuthSecret != "" {
		ba, err := brokerauth.NewHandler(h.devices, brokerauth.HandlerConfig{
			Secret:            cfg.BrokerAuthSecret,
			HubUsers:          h.hubUsers(),
			CertificateLogins: cfg.BrokerAuthCertificates,
			Logger:            h.log.With("component", "brokerauth"),
			Registerer:        h.reg,
		})
		if err != nil {
			return err
		}
		h.api.Handle("POST /internal/broker/", http.StripPrefix("/internal/broker", ba))
	}
	web.Mount(h.api, web.Options{Registry: deviceAdmin{h}, Presence: h.presence})
	if h.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return fmt.Errorf("http_addr: %w", err)
	}
	if cfg.HTTPTLS {
		h.httpLn = tls.NewListener(h.httpLn, &tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12})
	}
	h.httpSrv = &http.Server{
		Handler:           h.api,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
	}
	if err := h.startBroker(ctx); err != nil {
		return err
	}
	// Retained messages live in the broker's memory: publish the stored
	// desired twin documents again.
	if n, err := h.twins.PublishAll(ctx); err != nil {
		return err
	} else if n > 0 {
		h.log.Info("published desired twin states", "devices", n)
	}
	h.commands.Start()

	runCtx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	if h.mosquitto != nil {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.mosquitto.Run(runCtx, time.Duration(cfg.MosquittoSyncInterval))
		}()
	}
	h.wg.Add(2)
	go func() {
		defer h.wg.Done()
		if err := h.httpSrv.Serve(h.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.log.Error("http server stopped", "err", err)
		}
	}()
	go func() {
		defer h.wg.Done()
		h.presence.run(runCtx, 10*time.Second)
	}()
	if h.ext != nil {
		h.log.Info("hub started", "data", cfg.Data, "storage", cfg.Storage, "http", h.httpLn.Addr().String(),
			"external_broker", cfg.ExternalBrokerURL, "client_id", h.cfg.ExternalBrokerClientID)
	} else {
		h.log.Info("hub started", "data", cfg.Data, "storage", cfg.Storage, "http", h.httpLn.Addr().String(),
			"mqtt", addrString(h.broker.Addr("tcp")), "mqtts", addrString(h.broker.Addr("tls")),
			"ws", addrString(h.broker.Addr("ws")), "wss", addrString(h.broker.Addr("wss")))
	}
	return nil
}

func (h *Hub) ready() error {
	if h.shutdown.Load() {
		return errors.New("shutting down")
	}
	if h.ext != nil && !h.ext.Connected() {
		return errors.New("not connected to the external broker")
	}
	return h.tel.Err()
}

// Shutdown stops the listeners, drains ingest, then closes the stores. It
// is safe to call more than once.
func (h *Hub) Shutdown(ctx context.Context) error {
	if !h.shutdown.CompareAndSwap(false, true) {
		return nil
	}
	var errs []error
	if h.commands != nil {
		h.commands.StopWaiting() // ?wait= long polls answer now
	}
	if h.live != nil {
		h.live.Close() // live telemetry streams end now
	}
	if h.httpSrv != nil {
		if err := h.httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stopping http: %w", err))
		}
	} else if h.httpLn != nil {
		h.httpLn.Close()
	}
	if h.broker != nil {
		if err := h.broker.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stopping broker: %w", err))
		}
	}
	if h.ext != nil {
		if err := h.ext.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("disconnecting from the external broker: %w", err))
		}
	}
	if h.commands != nil {
		// After the broker: no answers come in any more.
		if err := h.commands.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stopping commands: %w", err))
		}
	}
	if h.ingest != nil {
		// After the broker: nothing hands in alerts any more.
		if err := h.ingest.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stopping ingest: %w", err))
		}
	}
	if h.influx != nil {
		// After ingest: nothing is stored any more.
		if err := h.influx.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stopping the InfluxDB export: %w", err))
		}
	}
	if h.cancel != nil {
		h.cancel()
	}
	h.wg.Wait()
	if h.tel != nil {
		if err := h.tel.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing telemetry store: %w", err))
		}
	}
	if h.db != nil {
		if err := h.db.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing registry: %w", err))
		}
	}
	h.log.Info("hub stopped")
	return errors.Join(errs...)
}

// stored is told of every message once it is durable: the live streams
// and the exports get it.
func (h *Hub) stored(m *payload.Message) {
	h.live.Publish(m)
	if h.influx != nil {
		h.influx.Write(m)
	}
}

// Addr returns the bound address of a listener: "http", "mqtt", "mqtts",
// "ws" or "wss"; nil when it is off.
func (h *Hub) Addr(name string) net.Addr {
	switch name {
	case "http":
		if h.httpLn != nil {
			return h.httpLn.Addr()
		}
		return nil
	}
	if h.broker == nil {
		return nil
	}
	switch name {
	case "mqtt":
		return h.broker.Addr("tcp")
	case "mqtts":
		return h.broker.Addr("tls")
	default:
		return h.broker.Addr(name)
	}
}

// AdminToken returns the API's bearer token.
func (h *Hub) AdminToken() string { return h.adminToken }

// CAPEM returns the certificates devices must trust.
func (h *Hub) CAPEM() []byte { return h.ca.CertPEM() }

// CA returns the hub's certificate authority.
func (h *Hub) CA() *pki.CA { return h.ca }

// Devices returns the registry service (used by the demo).
func (h *Hub) Devices() *registry.Service { return h.devices }

// Metrics returns the hub's metrics registry.
func (h *Hub) Metrics() *prometheus.Registry { return h.reg }

// ingester is the broker's Ingester: telemetry, batches and alerts to the
// telemetry ingester, command answers to the command service, reported
// twin patches to the twin service. A stored answer or patch marks the
// device seen.
type ingester struct {
	*telemetry.Ingester
	commands *command.Service
	twins    *twin.Service
	seen     func(device string, at time.Time)
}

// IngestResponse implements broker.ResponseIngester.
func (i ingester) IngestResponse(device, cid string, correlation, payload []byte, done func(error)) {
	i.commands.IngestResponse(device, cid, correlation, payload, i.markSeen(device, done))
}

// IngestReported implements broker.TwinIngester.
func (i ingester) IngestReported(device string, payload []byte, done func(error)) {
	i.twins.IngestReported(device, payload, i.markSeen(device, done))
}

func (i ingester) markSeen(device string, done func(error)) func(error) {
	return func(err error) {
		if err == nil {
			i.seen(device, time.Now())
		}
		done(err)
	}
}

// brokerLink publishes for the command and twin services through the
// hub's broker.
type brokerLink struct{ h *Hub }

// PublishCommand implements command.Publisher.
func (l brokerLink) PublishCommand(name string, payload []byte, responseTopic string, correlation []byte, expiry time.Duration) error {
	if l.h.pub == nil {
		return broker.ErrClosed
	}
	return l.h.pub.PublishMessage(broker.Message{
		Topic: name, Payload: payload, QoS: 1,
		ResponseTopic: responseTopic, CorrelationData: correlation,
		ContentType: "application/json", Expiry: expiry,
	})
}

// HasSubscriber implements command.Publisher.
func (l brokerLink) HasSubscriber(name string) bool {
	if l.h.ext != nil {
		// An external broker does not say who subscribes: a device
		// whose retained status is "online" is taken to listen, and so
		// is a device behind a gateway that is online.
		t, err := topic.Parse(name)
		if err != nil {
			return false
		}
		if l.h.presence.Online(t.Device) {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d, err := l.h.devices.Get(ctx, t.Device)
		return err == nil && d.Gateway != "" && l.h.presence.Online(d.Gateway)
	}
	return l.h.broker != nil && l.h.broker.HasSubscriber(name)
}

// Publish implements twin.Publisher.
func (l brokerLink) Publish(name string, payload []byte, retain bool, qos byte) error {
	if l.h.pub == nil {
		return broker.ErrClosed
	}
	return l.h.pub.Publish(name, payload, retain, qos)
}

// deviceAdmin is the registry as the API sees it: deleting a device also
// deletes its telemetry, presence, commands and twin.
type deviceAdmin struct{ h *Hub }

func (d deviceAdmin) Create(ctx context.Context, req registry.CreateRequest) (store.Device, registry.Credentials, error) {
	return d.h.devices.Create(ctx, req)
}

func (d deviceAdmin) Get(ctx context.Context, id string) (store.Device, error) {
	return d.h.devices.Get(ctx, id)
}

func (d deviceAdmin) List(ctx context.Context, o store.ListOptions) ([]store.Device, error) {
	return d.h.devices.List(ctx, o)
}

func (d deviceAdmin) Rotate(ctx context.Context, id string, csrPEM []byte) (registry.Credentials, error) {
	return d.h.devices.Rotate(ctx, id, csrPEM)
}

func (d deviceAdmin) Delete(ctx context.Context, id string) error {
	if err := d.h.devices.Delete(ctx, id); err != nil {
		return err
	}
	d.h.presence.Forget(id)
	if err := d.h.tel.DeleteDevice(ctx, id); err != nil {
		return fmt.Errorf("deleting telemetry of %s: %w", id, err)
	}
	if err := d.h.commands.DeleteDevice(ctx, id); err != nil {
		return err
	}
	return d.h.twins.Delete(ctx, id)
}

func off(addr string) string {
	if addr == "off" {
		return ""
	}
	return addr
}

func addrString(a net.Addr) string {
	if a == nil {
		return "off"
	}
	return a.String()
}

// adminToken returns FIELDHUB_ADMIN_TOKEN, or the token in DATA/admin-token,
// created with a random value (mode 0600) on first start.
func adminToken(cfg config.Hub, log *slog.Logger) (string, error) {
	if cfg.AdminToken != "" {
		return cfg.AdminToken, nil
	}
	path := filepath.Join(cfg.Data, "admin-token")
	b, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if len(tok) < config.MinAdminTokenLength {
			return "", fmt.Errorf("admin token in %s is shorter than %d characters", path, config.MinAdminTokenLength)
		}
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			log.Warn("admin token file is readable by others; chmod 600 it", "path", path)
		}
		return tok, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading admin token: %w", err)
	}
	raw := make([]byte, 24)
	rand.Read(raw)
	tok := hex.EncodeToString(raw)
	if err := writeFileAtomic(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", err
	}
	log.Info("generated the admin API token", "path", path)
	return tok, nil
}

// writeFileAtomic writes data to path through a synced temporary file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
