// Package hub is the composition root of `fieldhub serve`: it builds the
// stores, the CA, the registry, the ingest path, the command and twin
// services, the broker and the API in order, and stops them in the reverse
// order.
package hub

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
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
	"github.com/fieldhub/fieldhub/internal/command"
	"github.com/fieldhub/fieldhub/internal/config"
	"github.com/fieldhub/fieldhub/internal/live"
	"github.com/fieldhub/fieldhub/internal/pki"
	"github.com/fieldhub/fieldhub/internal/registry"
	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/store/sqlite"
	"github.com/fieldhub/fieldhub/internal/telemetry"
	"github.com/fieldhub/fieldhub/internal/tsdb"
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
	regDB      *sqlite.DB
	tdb        *tsdb.DB
	ca         *pki.CA
	devices    *registry.Service
	presence   *presence
	ingest     *telemetry.Ingester
	commands   *command.Service
	live       *live.Broadcaster
	twins      *twin.Service
	broker     *broker.Broker
	api        *api.API
	httpSrv    *http.Server
	httpLn     net.Listener

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	started  atomic.Bool
	shutdown atomic.Bool
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
	if h.regDB, err = sqlite.Open(filepath.Join(cfg.Data, "registry.db")); err != nil {
		return fmt.Errorf("opening registry: %w", err)
	}
	if h.ca, err = pki.Open(ctx, h.regDB, sealKey, h.log.With("component", "pki")); err != nil {
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
	h.tdb, err = tsdb.Open(filepath.Join(cfg.Data, "telemetry"), tsdb.Options{
		Retention:          time.Duration(cfg.Retention),
		DedupWindow:        cfg.DedupWindow,
		CheckpointInterval: time.Duration(cfg.CheckpointInterval),
		Logger:             h.log,
		Registerer:         h.reg,
	})
	if err != nil {
		return fmt.Errorf("opening telemetry store: %w", err)
	}
	h.devices = registry.New(h.regDB, h.ca, registry.Options{Logger: h.log.With("component", "registry")})
	h.presence = newPresence(h.regDB, h.log.With("component", "presence"), h.reg)
	// Gateways act for the devices registered behind them (the registry's
	// cached IsChild/IsGateway); alerts go to the registry database.
	// Stored telemetry is fanned out to the live streams of the API.
	h.live = live.New(live.Options{Registerer: h.reg})
	h.ingest = telemetry.New(h.tdb, telemetry.Options{
		Limits:     payload.Limits{MaxBytes: cfg.MaxPayloadBytes, MaxPoints: cfg.MaxPointsPerMessage},
		Logger:     h.log.With("component", "ingest"),
		Registerer: h.reg,
		Seen:       h.presence.Seen,
		Gateways:   h.devices,
		Alerts:     h.regDB,
		Stored:     h.live.Publish,
	})
	// Commands and twins publish through the broker, which is built next
	// (brokerLink reads h.broker when called).
	if h.commands, err = command.New(command.Options{
		Store:      h.regDB,
		Publisher:  brokerLink{h},
		Logger:     h.log.With("component", "command"),
		Registerer: h.reg,
	}); err != nil {
		return err
	}
	if h.twins, err = twin.New(twin.Options{
		Store:      h.regDB,
		Publisher:  brokerLink{h},
		Logger:     h.log.With("component", "twin"),
		Registerer: h.reg,
	}); err != nil {
		return err
	}
	h.presence.devices = h.commands
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}
	h.broker, err = broker.New(broker.Config{
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
		Logger:        h.log,
		Registerer:    h.reg,
	}, h.devices, ingester{h.ingest, h.commands, h.twins, h.presence.Seen}, h.presence)
	if err != nil {
		return err
	}
	h.presence.online = h.broker.Online
	h.presence.count = h.broker.OnlineCount
	h.devices.OnRevoke(func(id string) {
		h.broker.Disconnect(id)
	})

	h.api = api.New(api.Options{
		AdminToken: h.adminToken,
		Registry:   deviceAdmin{h},
		Telemetry:  h.tdb,
		Alerts:     h.regDB,
		Commands:   h.commands,
		Twins:      h.twins,
		Live:       h.live,
		Presence:   h.presence,
		CAPEM:      h.ca.CertPEM(),
		Metrics:    promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{Registry: h.reg}),
		Ready:      h.ready,
		Logger:     h.log.With("component", "api"),
	})
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
	if err := h.broker.Start(ctx); err != nil {
		return err
	}
	if err := h.broker.Subscribe(topic.Prefix+"/+/status", 1, h.presence.statusPublished); err != nil {
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
	h.log.Info("hub started", "data", cfg.Data, "http", h.httpLn.Addr().String(),
		"mqtt", addrString(h.broker.Addr("tcp")), "mqtts", addrString(h.broker.Addr("tls")),
		"ws", addrString(h.broker.Addr("ws")), "wss", addrString(h.broker.Addr("wss")))
	return nil
}

func (h *Hub) ready() error {
	if h.shutdown.Load() {
		return errors.New("shutting down")
	}
	return h.tdb.Err()
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
	if h.cancel != nil {
		h.cancel()
	}
	h.wg.Wait()
	if h.tdb != nil {
		if err := h.tdb.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing telemetry store: %w", err))
		}
	}
	if h.regDB != nil {
		if err := h.regDB.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing registry: %w", err))
		}
	}
	h.log.Info("hub stopped")
	return errors.Join(errs...)
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
	if l.h.broker == nil {
		return broker.ErrClosed
	}
	return l.h.broker.PublishMessage(broker.Message{
		Topic: name, Payload: payload, QoS: 1,
		ResponseTopic: responseTopic, CorrelationData: correlation,
		ContentType: "application/json", Expiry: expiry,
	})
}

// HasSubscriber implements command.Publisher.
func (l brokerLink) HasSubscriber(name string) bool {
	return l.h.broker != nil && l.h.broker.HasSubscriber(name)
}

// Publish implements twin.Publisher.
func (l brokerLink) Publish(name string, payload []byte, retain bool, qos byte) error {
	if l.h.broker == nil {
		return broker.ErrClosed
	}
	return l.h.broker.Publish(name, payload, retain, qos)
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
	if err := d.h.tdb.DeleteDevice(ctx, id); err != nil {
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
