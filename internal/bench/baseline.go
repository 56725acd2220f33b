package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// BaselineBroker is a bare mochi-mqtt server: the same broker the hub
// embeds, with no authentication, storage or ingest, on a loopback plain
// TCP listener. The hub's ingest figures are read beside it to show what
// durability and the hub's own work cost.
type BaselineBroker struct {
	srv  *mqtt.Server
	addr net.Addr
	once sync.Once
}

// StartBaseline starts a baseline broker on addr, which must be a loopback
// address (the broker admits anyone); a port of 0 picks a free one.
func StartBaseline(addr string, logger *slog.Logger) (*BaselineBroker, error) {
	return startBaseline(addr, logger, nil, new(allowHook))
}

// startBaseline starts the broker with the given hooks and, when tlsConfig
// is set, TLS (tests use both).
func startBaseline(addr string, logger *slog.Logger, tlsConfig *tls.Config, hooks ...mqtt.Hook) (*BaselineBroker, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := checkLoopback(addr); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("baseline broker: %w", err)
	}
	bound := ln.Addr()
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	caps := mqtt.NewDefaultServerCapabilities()
	// Deliberately 0 (no maximum): mochi's default of 24 h would stamp an
	// expiry on forwarded v5 messages and purge retained ones, which the
	// hub does not do either. Nothing is retained in an ingest run; this
	// only keeps the two brokers configured alike.
	caps.MaximumMessageExpiryInterval = 0
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       logger.With("component", "baseline-broker"),
	})
	for _, h := range hooks {
		if err := srv.AddHook(h, nil); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("baseline broker: %w", err)
		}
	}
	if err := srv.AddListener(listeners.NewNet("baseline", ln)); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("baseline broker: %w", err)
	}
	if err := srv.Serve(); err != nil {
		_ = srv.Close()
		return nil, fmt.Errorf("baseline broker: %w", err)
	}
	return &BaselineBroker{srv: srv, addr: bound}, nil
}

// Addr returns the address the broker listens on.
func (b *BaselineBroker) Addr() net.Addr { return b.addr }

// Close disconnects every client and stops the broker. It is safe to call
// more than once.
func (b *BaselineBroker) Close() error {
	var err error
	b.once.Do(func() { err = b.srv.Close() })
	return err
}

// ServeBaseline starts a baseline broker on the loopback address addr and
// returns the address it listens on; the broker stops when ctx ends.
func ServeBaseline(ctx context.Context, addr string, logger *slog.Logger) (net.Addr, error) {
	b, err := StartBaseline(addr, logger)
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, func() { _ = b.Close() })
	return b.Addr(), nil
}

// RunBaselineBroker is the body of the hidden `fieldhub bench
// baseline-broker --addr ADDR` command: it starts a baseline broker,
// writes the address it listens on as one line to out (which
// StartProcess reads), and serves until ctx ends.
func RunBaselineBroker(ctx context.Context, addr string, out io.Writer, logger *slog.Logger) error {
	b, err := StartBaseline(addr, logger)
	if err != nil {
		return err
	}
	defer b.Close()
	if _, err := fmt.Fprintln(out, b.Addr().String()); err != nil {
		return fmt.Errorf("baseline broker: writing address: %w", err)
	}
	<-ctx.Done()
	return nil
}

// ErrNotLoopback is returned for an address that is not on loopback where
// only loopback is allowed.
var ErrNotLoopback = errors.New("address is not on loopback")

// checkLoopback accepts host:port whose host is a loopback IP or
// "localhost".
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%w: %q (the baseline broker admits anyone)", ErrNotLoopback, addr)
	}
	return nil
}

// allowHook admits every client and allows every topic. It is mochi's
// hooks/auth.AllowHook, restated here because that package also imports
// gopkg.in/yaml.v3 (for its ledger), a module this repository does not
// otherwise need.
type allowHook struct {
	mqtt.HookBase
}

// ID names the hook.
func (h *allowHook) ID() string { return "allow-all-auth" }

// Provides reports that the hook authenticates and checks ACLs.
func (h *allowHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

// OnConnectAuthenticate admits every client.
func (h *allowHook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

// OnACLCheck allows every topic.
func (h *allowHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }
