package device

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/fieldhub/fieldhub/topic"
)

// Defaults of the Config fields left at their zero value.
const (
	DefaultKeepAlive      = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	DefaultBackoffMin     = 500 * time.Millisecond
	DefaultBackoffMax     = time.Minute
	DefaultOfflineBuffer  = 10000
	DefaultSessionExpiry  = time.Hour
	// DefaultCommandGrace is how long a command whose name has no handler
	// yet is held before it is answered with an "unknown command" error.
	DefaultCommandGrace = 5 * time.Second
)

// Config says where a device connects and how. The zero value of every
// field but Server and DeviceID means its documented default.
type Config struct {
	// Server is the hub's MQTT address: "mqtts://host:8883" (TLS; also
	// "tls://" and "ssl://") or "mqtt://host:1883" (plain TCP; also
	// "tcp://"). The port defaults to 8883 for TLS and 1883 for plain TCP.
	Server string
	// DeviceID is the device's id, sent as the MQTT client id and user
	// name (DESIGN §3: 1–128 characters of [A-Za-z0-9._:-]).
	DeviceID string
	// Password authenticates a device registered with password auth.
	Password string
	// Certificate is the client certificate of a device registered with
	// certificate auth (used when it holds at least one certificate; TLS
	// only). A password is ignored by the hub when a certificate is given.
	Certificate tls.Certificate
	// CAFile is a PEM file of the certificates the hub's server
	// certificate must chain to (the hub's DIR/ca.pem). RootCAs is the same
	// as a pool; when both are empty the system roots are used.
	CAFile  string
	RootCAs *x509.CertPool
	// ServerName overrides the name checked in the hub's certificate;
	// by default the host of Server.
	ServerName string

	// KeepAlive is the MQTT keep-alive interval. Default 30 s.
	KeepAlive time.Duration
	// ConnectTimeout bounds each connection attempt (dial, TLS handshake,
	// CONNACK). Default 10 s.
	ConnectTimeout time.Duration
	// BackoffMin and BackoffMax bound the reconnect delay: attempt n
	// waits a uniformly random time in [0, min(BackoffMax, BackoffMin·2ⁿ)]
	// ("full jitter"), so that a fleet dropped at once does not come back
	// at once. After a lost connection the first attempt waits in
	// [0, BackoffMin]. Defaults 500 ms and 1 min.
	BackoffMin, BackoffMax time.Duration
	// SessionExpiry is how long the hub keeps the MQTT session (and the
	// QoS 1 commands queued in it) after the connection drops. The client
	// always connects with Clean Start false. Default 1 h; the hub caps it.
	SessionExpiry time.Duration

	// OfflineBuffer bounds the telemetry messages held until the hub
	// acknowledges them (the messages in flight included). When it is
	// full, the oldest message is dropped and counted in Stats.Dropped.
	// Default 10,000.
	OfflineBuffer int
	// BufferDir, when set, makes the buffer durable: every message is
	// appended to a checksummed log in this folder (with fsync) before
	// Publish returns, and the messages not yet acknowledged are replayed,
	// in order and with their seq and ts, by the next Connect with the
	// same folder. One Client at a time may use a folder.
	BufferDir string
	// SeqStart is the seq of the first message. Default: the Unix time in
	// milliseconds at Connect, so that seq keeps increasing across reboots
	// as long as the device averages under 1,000 messages a second (the
	// hub ignores a seq it has seen recently, so a seq that went back
	// could lose messages). It is raised above the seq of any message
	// replayed from BufferDir.
	SeqStart uint64

	// CommandGrace is how long a command with no handler registered for
	// its name (nor "*") waits for one before it is answered with an
	// "unknown command" error; it covers commands queued in the session
	// that arrive before the program has called HandleCommand. Default 5 s.
	CommandGrace time.Duration

	// NoWait makes Connect return as soon as the configuration is valid
	// (and BufferDir is open), connecting in the background; Publish then
	// buffers until the connection is up. See WaitConnected.
	NoWait bool

	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
}

// LogValue implements slog.LogValuer: a Config logs without its secrets.
func (c Config) LogValue() slog.Value {
	auth := "anonymous"
	switch {
	case len(c.Certificate.Certificate) > 0:
		auth = "certificate"
	case c.Password != "":
		auth = "password"
	}
	return slog.GroupValue(
		slog.String("server", c.Server),
		slog.String("device_id", c.DeviceID),
		slog.String("auth", auth),
		slog.String("buffer_dir", c.BufferDir),
	)
}

// ErrInvalidConfig is wrapped by the errors of an unusable Config.
var ErrInvalidConfig = errors.New("device: invalid config")

// withDefaults validates c and fills in its defaults.
func (c Config) withDefaults() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return c, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	if !topic.ValidDeviceID(c.DeviceID) {
		return bad("DeviceID %q: want 1–128 characters of [A-Za-z0-9._:-]", c.DeviceID)
	}
	if c.Server == "" {
		return bad("Server is required")
	}
	if _, _, err := parseServer(c.Server); err != nil {
		return bad("Server: %v", err)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"KeepAlive", &c.KeepAlive, DefaultKeepAlive},
		{"ConnectTimeout", &c.ConnectTimeout, DefaultConnectTimeout},
		{"BackoffMin", &c.BackoffMin, DefaultBackoffMin},
		{"BackoffMax", &c.BackoffMax, DefaultBackoffMax},
		{"SessionExpiry", &c.SessionExpiry, DefaultSessionExpiry},
		{"CommandGrace", &c.CommandGrace, DefaultCommandGrace},
	} {
		if *d.v < 0 {
			return bad("%s: %v is negative", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.KeepAlive > 65535*time.Second {
		return bad("KeepAlive: %v is above the MQTT maximum of 65535 s", c.KeepAlive)
	}
	if c.SessionExpiry/time.Second > 1<<32-1 {
		return bad("SessionExpiry: %v is above the MQTT maximum", c.SessionExpiry)
	}
	if c.BackoffMax < c.BackoffMin {
		return bad("BackoffMax %v is below BackoffMin %v", c.BackoffMax, c.BackoffMin)
	}
	if c.OfflineBuffer < 0 {
		return bad("OfflineBuffer: %d is negative", c.OfflineBuffer)
	}
	if c.OfflineBuffer == 0 {
		c.OfflineBuffer = DefaultOfflineBuffer
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// parseServer returns the host:port to dial and whether to use TLS.
func parseServer(s string) (addr string, useTLS bool, err error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", false, err
	}
	port := "1883"
	switch u.Scheme {
	case "mqtts", "tls", "ssl":
		useTLS, port = true, "8883"
	case "mqtt", "tcp":
	default:
		return "", false, fmt.Errorf("%q: want mqtts://host:port or mqtt://host:port", s)
	}
	if u.Hostname() == "" {
		return "", false, fmt.Errorf("%q: no host", s)
	}
	if u.Port() != "" {
		port = u.Port()
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", false, fmt.Errorf("%q: only scheme, host and port are allowed", s)
	}
	return net.JoinHostPort(u.Hostname(), port), useTLS, nil
}

// tlsConfig builds the client's TLS configuration (nil for plain TCP).
func (c Config) tlsConfig() (*tls.Config, error) {
	addr, useTLS, err := parseServer(c.Server)
	if err != nil || !useTLS {
		if len(c.Certificate.Certificate) > 0 && err == nil {
			return nil, fmt.Errorf("%w: a client certificate needs an mqtts:// Server", ErrInvalidConfig)
		}
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: c.RootCAs, ServerName: c.ServerName}
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(addr)
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: CAFile: %w", ErrInvalidConfig, err)
		}
		if cfg.RootCAs == nil {
			cfg.RootCAs = x509.NewCertPool()
		} else {
			cfg.RootCAs = cfg.RootCAs.Clone() // the caller's pool stays as it is
		}
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: CAFile: no certificate in %s", ErrInvalidConfig, c.CAFile)
		}
	}
	if len(c.Certificate.Certificate) > 0 {
		cfg.Certificates = []tls.Certificate{c.Certificate}
	}
	return cfg, nil
}
