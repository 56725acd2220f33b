package broker

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/fieldhub/fieldhub/internal/idleconn"
)

// WSPath is the HTTP path of the WebSocket listeners.
const WSPath = "/mqtt"

// listener implements mochi's listeners.Listener on a net.Listener the
// broker bound itself (so port 0 works and TLS is ours). Unlike mochi's Net
// listener it survives temporary Accept errors (EMFILE during a reconnect
// storm would otherwise stop it for good), bounds the time to the CONNECT
// packet, and logs per-connection failures at debug level only (refusals
// are counted and logged, rate-limited, by the hooks).
type listener struct {
	id     string
	ln     net.Listener
	tlsCfg *tls.Config // nil for plain listeners
	// refused logs a connection's error if its handshake refused a client
	// certificate (Broker.logRefusal). WSS handshakes never end here:
	// net/http runs them, and wsTLSConfig logs their refusals.
	refused        func(err error, remote string)
	connectTimeout time.Duration
	log            *slog.Logger
	httpSrv        *http.Server // WebSocket listeners only
	establish      listeners.EstablishFn
	// closeClients disconnects this listener's clients; it stands in for
	// the CloseFn mochi passes to Close (see Broker.closeListenerClients).
	closeClients func(listenerID string)
	// poller parks idle TCP and TLS connections; nil: they never park.
	poller *idleconn.Poller

	closeOnce sync.Once
	closed    chan struct{} // closed by stopAccepting
	served    chan struct{} // closed when Serve returns
}

var _ listeners.Listener = (*listener)(nil)

func (l *listener) ID() string      { return l.id }
func (l *listener) Address() string { return l.ln.Addr().String() }
func (l *listener) Protocol() string {
	return l.id
}

// Init is called by mochi's AddListener; the listener keeps its own logger.
func (l *listener) Init(*slog.Logger) error { return nil }

// Serve accepts connections until stopAccepting and hands each to mochi.
func (l *listener) Serve(establish listeners.EstablishFn) {
	defer close(l.served)
	l.establish = establish
	if l.httpSrv != nil {
		ln := l.ln
		if l.tlsCfg != nil {
			ln = tls.NewListener(ln, l.tlsCfg)
		}
		if err := l.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			l.log.Error("websocket listener stopped", "error", err)
		}
		return
	}
	var backoff time.Duration
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.closed:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary (EMFILE, ENFILE, ECONNABORTED…): back off and retry,
			// as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("accept failed; retrying", "error", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-l.closed:
				return
			}
			continue
		}
		backoff = 0
		conn = l.poller.Wrap(conn)
		_ = conn.SetDeadline(time.Now().Add(l.connectTimeout)) // mochi moves it to the keepalive after CONNECT
		if l.tlsCfg != nil {
			if pc, ok := conn.(*idleconn.Conn); ok {
				conn = idleconn.NewTLSConn(pc, l.tlsCfg)
			} else {
				conn = tls.Server(conn, l.tlsCfg)
			}
		}
		go l.run(conn)
	}
}

// run serves one connection in mochi until it ends.
func (l *listener) run(conn net.Conn) {
	if err := l.establish(l.id, conn); err != nil {
		l.refused(err, conn.RemoteAddr().String())
		l.log.Debug("connection ended", "remote", conn.RemoteAddr().String(), "error", err)
	}
}

// stopAccepting closes the listening socket; live connections stay.
func (l *listener) stopAccepting() {
	l.closeOnce.Do(func() {
		close(l.closed)
		if l.httpSrv != nil {
			_ = l.httpSrv.Close() // closes the listener and un-upgraded conns; upgraded ones belong to mochi
		} else {
			_ = l.ln.Close()
		}
	})
}

// Close is called by mochi's Server.Close: stop accepting, then disconnect
// this listener's clients.
func (l *listener) Close(closeClients listeners.CloseFn) {
	l.stopAccepting()
	if l.closeClients != nil {
		l.closeClients(l.id)
		return
	}
	closeClients(l.id)
}

// initWS prepares the HTTP server of a WebSocket listener: MQTT over
// WebSocket on WSPath, subprotocol "mqtt" (or "mqttv3.1").
func (l *listener) initWS() {
	up := &websocket.Upgrader{
		Subprotocols:    []string{"mqtt", "mqttv3.1"},
		ReadBufferSize:  netBufferSize,
		WriteBufferSize: netBufferSize,
		// Credentials travel in CONNECT, not in cookies: there is no ambient
		// authority for a cross-origin page to abuse.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	mux := http.NewServeMux()
	mux.HandleFunc(WSPath, func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return // Upgrade already answered with an HTTP error
		}
		conn := &wsConn{Conn: c.NetConn(), ws: c, tlsState: r.TLS}
		_ = conn.SetDeadline(time.Now().Add(l.connectTimeout))
		l.run(conn)
	})
	l.httpSrv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: l.connectTimeout,
		ReadTimeout:       l.connectTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(l.log.Handler(), slog.LevelDebug),
	}
}

// wsConn carries an MQTT byte stream over binary WebSocket messages and
// satisfies net.Conn (deadlines and addresses come from the underlying
// connection). An MQTT packet may span messages and a message may hold
// several packets.
type wsConn struct {
	net.Conn
	ws       *websocket.Conn
	tlsState *tls.ConnectionState
	r        io.Reader
	wmu      sync.Mutex
}

var errWSNotBinary = errors.New("websocket: MQTT requires binary messages")

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			mt, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if mt != websocket.BinaryMessage {
				return 0, errWSNotBinary
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error { return c.ws.Close() }

// ConnectionState returns the TLS state of a wss connection (zero for ws),
// like (*tls.Conn).ConnectionState.
func (c *wsConn) ConnectionState() tls.ConnectionState {
	if c.tlsState == nil {
		return tls.ConnectionState{}
	}
	return *c.tlsState
}
