// Package edge is the composition root of `fieldhub edge`, the gateway
// that runs beside the sensors: a local MQTT listener (the same broker and
// topics as the hub), the processing pipeline, a durable spool that a
// sensor's PUBACK waits for, and an uplink that drains the spool to the hub
// in batches, acknowledging spool records only after the hub's PUBACK.
package edge

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
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

	"github.com/fieldhub/fieldhub/internal/broker"
	"github.com/fieldhub/fieldhub/internal/pipeline"
	"github.com/fieldhub/fieldhub/internal/spool"
)

// Edge is a running gateway. Create it with New, then Start; stop it with
// Shutdown.
type Edge struct {
	cfg Config
	log *slog.Logger
	reg *prometheus.Registry
	m   *metrics

	spool  *spool.Spool
	pipeMu sync.Mutex
	pipe   *pipeline.Pipeline
	broker *broker.Broker
	up     *uplink
	httpLn net.Listener
	http   *http.Server

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	started  atomic.Bool
	shutdown atomic.Bool
}

// New validates cfg and returns an edge ready to Start.
func New(cfg Config, logger *slog.Logger) (*Edge, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Edge{cfg: cfg, log: logger.With("gateway", cfg.ID), reg: prometheus.NewRegistry()}, nil
}

// Start opens the spool, starts the local listener, the uplink and the
// HTTP endpoints. On error, what was started is stopped again.
func (e *Edge) Start(ctx context.Context) (err error) {
	if !e.started.CompareAndSwap(false, true) {
		return errors.New("edge already started")
	}
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			e.Shutdown(sctx)
		}
	}()
	cfg := e.cfg
	e.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	e.m = newMetrics(e.reg)
	if err := os.MkdirAll(cfg.Data, 0o700); err != nil {
		return fmt.Errorf("creating data folder: %w", err)
	}
	so := spool.Options{
		SegmentBytes: cfg.Spool.SegmentBytes,
		MaxBytes:     cfg.Spool.MaxBytes,
		MaxAge:       time.Duration(cfg.Spool.MaxAge),
		Logger:       e.log.With("component", "spool"),
		Registerer:   e.reg,
	}
	if cfg.Spool.Overflow == "refuse_new" {
		so.Overflow = spool.RefuseNew
	}
	if cfg.Spool.EncryptionKeyFile != "" {
		if so.Key, err = readKey(cfg.Spool.EncryptionKeyFile); err != nil {
			return fmt.Errorf("spool.encryption_key_file: %w", err)
		}
	}
	if e.spool, err = spool.Open(filepath.Join(cfg.Data, "spool"), so); err != nil {
		return fmt.Errorf("opening spool: %w", err)
	}
	if st := e.spool.Stats(); st.Records > 0 {
		e.log.Info("spool recovered", "records", st.Records, "bytes", st.Bytes)
	}
	pc := cfg.Pipeline
	if e.pipe, err = pipeline.New(pc); err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}
	bcfg := broker.Config{
		TCPAddr:    cfg.Listen.MQTTAddr,
		OpenPolicy: cfg.Listen.AllowAnonymous,
		Logger:     e.log,
		Registerer: e.reg,
	}
	if e.broker, err = broker.New(bcfg, newSensorAuth(cfg.Sensors), e, nil); err != nil {
		return fmt.Errorf("local listener: %w", err)
	}
	if e.up, err = newUplink(cfg, e.spool, e.m, e.log.With("component", "uplink")); err != nil {
		return err
	}
	e.up.relay = e.relayCommand
	if err := e.broker.Start(ctx); err != nil {
		return fmt.Errorf("listen.mqtt_addr: %w", err)
	}
	if cfg.HTTPAddr != "off" {
		if e.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return fmt.Errorf("http_addr: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
		mux.HandleFunc("GET /readyz", e.readyz)
		mux.Handle("GET /metrics", promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{Registry: e.reg}))
		e.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.wg.Add(3)
	go func() { defer e.wg.Done(); e.up.run(runCtx) }()
	go func() { defer e.wg.Done(); e.flushLoop(runCtx) }()
	go func() { defer e.wg.Done(); e.reportLoop(runCtx) }()
	if e.http != nil {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			if err := e.http.Serve(e.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				e.log.Error("http server stopped", "err", err)
			}
		}()
	}
	e.log.Info("edge started", "mqtt", e.broker.Addr("tcp").String(), "hub", cfg.Hub.Addr, "http", addrString(e.httpLn))
	return nil
}

func (e *Edge) readyz(w http.ResponseWriter, _ *http.Request) {
	if e.shutdown.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	st := e.spool.Stats()
	fmt.Fprintf(w, "ready\nuplink_connected %v\nspool_records %d\nspool_bytes %d\n", e.up.connected.Load(), st.Records, st.Bytes)
}

// flushLoop closes the pipeline's aggregation windows as time passes.
func (e *Edge) flushLoop(ctx context.Context) {
	t := time.NewTicker(time.Duration(e.cfg.FlushInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			e.pipeMu.Lock()
			out := e.pipe.Flush(now)
			e.pipeMu.Unlock()
			if err := e.spoolOutput(ctx, out); err != nil {
				e.log.Warn("spooling aggregates failed", "err", err)
			}
		}
	}
}

// Shutdown stops the listener (draining pending acks), the uplink, and
// closes the spool. Safe to call twice.
func (e *Edge) Shutdown(ctx context.Context) error {
	if !e.shutdown.CompareAndSwap(false, true) {
		return nil
	}
	var errs []error
	if e.http != nil {
		e.http.Shutdown(ctx)
	} else if e.httpLn != nil {
		e.httpLn.Close()
	}
	if e.broker != nil {
		if err := e.broker.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stopping local listener: %w", err))
		}
	}
	if e.cancel != nil {
		e.cancel()
	}
	e.wg.Wait()
	if e.spool != nil {
		if err := e.spool.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing spool: %w", err))
		}
	}
	e.log.Info("edge stopped")
	return errors.Join(errs...)
}

// Addr returns the bound address of "mqtt" (the local listener) or "http".
func (e *Edge) Addr(name string) net.Addr {
	switch name {
	case "mqtt":
		return e.broker.Addr("tcp")
	case "http":
		if e.httpLn != nil {
			return e.httpLn.Addr()
		}
	}
	return nil
}

// Metrics returns the edge's metrics registry.
func (e *Edge) Metrics() *prometheus.Registry { return e.reg }

// Spool returns the edge's spool (for tests and benchmarks).
func (e *Edge) Spool() *spool.Spool { return e.spool }

// UplinkConnected reports whether the uplink to the hub is up.
func (e *Edge) UplinkConnected() bool { return e.up != nil && e.up.connected.Load() }

func addrString(l net.Listener) string {
	if l == nil {
		return "off"
	}
	return l.Addr().String()
}

func readKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != 32 {
		return nil, errors.New("want 32 bytes, base64")
	}
	return k, nil
}
