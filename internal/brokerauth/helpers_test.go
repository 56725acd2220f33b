package brokerauth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	paho "github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/internal/fhtest"
	"github.com/fieldhub/fieldhub/internal/registry"
	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/internal/store/sqlite"
)

const testTimeout = 10 * time.Second

// cheap argon2id parameters: these tests are not about hashing cost.
var cheap = registry.PasswordParams{Memory: 64, Iterations: 1}

type env struct {
	db  *sqlite.DB
	svc *registry.Service
}

// newEnv opens a real registry (embedded store, CA, service); opts may
// set the OnPassword hook.
func newEnv(t testing.TB, opts registry.Options) *env {
	t.Helper()
	db, ca := fhtest.CA(t)
	opts.Password = cheap
	return &env{db: db, svc: registry.New(db, ca, opts)}
}

// create registers a device and returns its password ("" for certificate
// devices).
func (e *env) create(t testing.TB, id, gateway string, auth store.AuthKind) string {
	t.Helper()
	_, c, err := e.svc.Create(context.Background(), registry.CreateRequest{ID: id, Gateway: gateway, Auth: auth})
	if err != nil {
		t.Fatalf("Create(%q) = %v", id, err)
	}
	return c.Password
}

func randomSecret() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// client is an MQTT 5 client (paho.golang) that records what it receives.
type client struct {
	c            *paho.Client
	mu           sync.Mutex
	got          []string // topics received
	received     chan string
	disconnected chan struct{}
	once         sync.Once
}

// dial connects user with password (client id = user) to addr.
func dial(t *testing.T, addr, user, password string) (*client, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	cl := &client{received: make(chan string, 100), disconnected: make(chan struct{})}
	closed := func() { cl.once.Do(func() { close(cl.disconnected) }) }
	cl.c = paho.NewClient(paho.ClientConfig{
		Conn: pahopackets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			cl.mu.Lock()
			cl.got = append(cl.got, pr.Packet.Topic)
			cl.mu.Unlock()
			cl.received <- pr.Packet.Topic
			return true, nil
		}},
		OnServerDisconnect: func(*paho.Disconnect) { closed() },
		OnClientError:      func(error) { closed() },
		PacketTimeout:      testTimeout,
	})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	_, err = cl.c.Connect(ctx, &paho.Connect{
		ClientID: user, CleanStart: true, KeepAlive: 30,
		Username: user, UsernameFlag: true,
		Password: []byte(password), PasswordFlag: true,
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	t.Cleanup(func() {
		_ = cl.c.Disconnect(&paho.Disconnect{})
		conn.Close()
	})
	return cl, nil
}

func mustDial(t *testing.T, addr, user, password string) *client {
	t.Helper()
	cl, err := dial(t, addr, user, password)
	if err != nil {
		t.Fatalf("connect %s: %v", user, err)
	}
	return cl
}

// publish sends a QoS 1 message and returns the PUBACK reason code.
func (cl *client) publish(t *testing.T, name string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	pr, err := cl.c.Publish(ctx, &paho.Publish{Topic: name, QoS: 1, Payload: []byte(`{"data":{"t":1}}`)})
	if pr == nil {
		t.Fatalf("publish %s: %v", name, err)
	}
	return pr.ReasonCode
}

// subscribe subscribes to filters at QoS 1 and returns the reason codes.
func (cl *client) subscribe(t *testing.T, filters ...string) []byte {
	t.Helper()
	return fhtest.Subscribe(t, cl.c, testTimeout, filters...)
}

// waitFor waits until cl has received a message on name.
func (cl *client) waitFor(t *testing.T, name string) {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		if cl.has(name) {
			return
		}
		select {
		case <-cl.received:
		case <-deadline:
			t.Fatalf("no message on %s", name)
		}
	}
}

func (cl *client) has(name string) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for _, g := range cl.got {
		if g == name {
			return true
		}
	}
	return false
}

// lockedWriter is an io.Writer safe for a process's stdout and stderr.
type lockedWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
