package extbroker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/fieldhub/fieldhub/internal/fhtest"
	"github.com/fieldhub/fieldhub/topic"
)

func TestMain(m *testing.M) { fhtest.Main(m) }

const (
	hubUser     = "fieldhub-hub"
	hubPassword = "hub-secret-for-tests"
	adminToken  = "cluster-test-admin-token-0123456789"
)

// mosquitto is a Mosquitto broker started for a test, with password and
// ACL files in dir.
type mosquitto struct {
	addr string
	dir  string
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan struct{}
}

// startMosquitto starts Mosquitto on a free loopback port with a config
// for shared subscriptions on persistent sessions: no queue limit (the
// default 1,000 would drop the backlog of an instance that is away) and a
// larger in-flight window. Its password and ACL files start empty: the
// hubs write them from the registry and signal Mosquitto through its pid
// file.
func startMosquitto(t *testing.T) *mosquitto {
	t.Helper()
	path, err := exec.LookPath("mosquitto")
	if err != nil {
		fhtest.Unavailable(t, fmt.Errorf("mosquitto: %w", fhtest.ErrNotInstalled))
	}
	dir := t.TempDir()
	m := &mosquitto{dir: dir, out: &bytes.Buffer{}, done: make(chan struct{})}
	for _, f := range []string{"passwd", "acl"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m.addr = fhtest.FreePort(t)
	_, port, _ := net.SplitHostPort(m.addr)
	conf := fmt.Sprintf(`per_listener_settings false
listener %s 127.0.0.1
allow_anonymous false
password_file %s
acl_file %s
pid_file %s
persistence false
max_queued_messages 0
max_inflight_messages 1000
log_dest stderr
log_type error
log_type warning
`, port, m.file("passwd"), m.file("acl"), m.file("pid"))
	if os.Geteuid() == 0 {
		conf += "user root\n"
	}
	file := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	m.cmd = exec.Command(path, "-c", file)
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.cmd.Wait(); close(m.done) }()
	t.Cleanup(func() { m.cmd.Process.Kill(); <-m.done })
	fhtest.Eventually(t, 10*time.Second, "mosquitto listening", func() bool {
		c, err := net.Dial("tcp", m.addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return m
}

func (m *mosquitto) file(name string) string { return filepath.Join(m.dir, name) }

// hubProc is one `fieldhub serve` instance.
type hubProc struct {
	name string
	http string
	*fhtest.Serve
}

func newHub(t *testing.T, name, pgURL string, mq *mosquitto, masterKey string) *hubProc {
	dir := t.TempDir()
	addr := fhtest.FreePort(t)
	return &hubProc{name: name, http: addr, Serve: &fhtest.Serve{
		HTTPAddr: addr,
		Args: []string{
			"--data", filepath.Join(dir, "data"),
			"--storage", "postgres",
			"--broker", "external",
			"--external-broker-url", "mqtt://" + mq.addr,
			"--mosquitto-password-file", mq.file("passwd"),
			"--mosquitto-acl-file", mq.file("acl"),
			"--mosquitto-pid-file", mq.file("pid"),
			"--external-broker-client-id", name,
			"--external-broker-username", hubUser,
			"--http-addr", addr,
			"--log-level", "warn",
		},
		Env: []string{
			"FIELDHUB_ADMIN_TOKEN=" + adminToken,
			"FIELDHUB_MASTER_KEY=" + masterKey,
			"FIELDHUB_POSTGRES_URL=" + pgURL,
			"FIELDHUB_EXTERNAL_BROKER_PASSWORD=" + hubPassword,
		},
	}}
}

// api calls the hub's REST API with the admin token.
func (h *hubProc) api(t *testing.T, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+h.http+path, rd)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decoding %s: %v", method, path, b, err)
		}
	}
	if resp.StatusCode >= 300 {
		t.Logf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode
}

// metric reads a counter from /metrics: name alone sums its labels,
// name{labels} reads one series.
func (h *hubProc) metric(name string) float64 {
	resp, err := http.Get("http://" + h.http + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+" ") || (!strings.Contains(name, "{") && strings.HasPrefix(line, name+"{")) {
			var v float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
			sum += v
		}
	}
	return sum
}

type cluster struct {
	mq   *mosquitto
	hubs []*hubProc
}

// startCluster starts Mosquitto, PostgreSQL and n hub instances on them.
func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	pgURL := fhtest.Postgres(t)
	mq := startMosquitto(t)
	key := make([]byte, 32)
	rand.Read(key)
	mk := base64.StdEncoding.EncodeToString(key)
	c := &cluster{mq: mq}
	for i := range n {
		h := newHub(t, fmt.Sprintf("hub-%d", i), pgURL, mq, mk)
		h.Start(t)
		c.hubs = append(c.hubs, h)
	}
	for _, h := range c.hubs {
		h.WaitReady(t)
	}
	return c
}

// createDevice creates a password device through hub 0 and lets Mosquitto know it.
func (c *cluster) createDevice(t *testing.T, id string) string {
	t.Helper()
	var created struct {
		Credentials struct {
			Password string `json:"password"`
		} `json:"credentials"`
	}
	if code := c.hubs[0].api(t, "POST", "/api/v1/devices", map[string]any{"id": id, "auth": "password"}, &created); code != 201 {
		t.Fatalf("creating %s: status %d", id, code)
	}
	if created.Credentials.Password == "" {
		t.Fatalf("no password for %s", id)
	}
	return created.Credentials.Password
}

// waitCanConnect waits until Mosquitto accepts the device's credentials
// (the hub has rewritten its password file and signalled it).
func (c *cluster) waitCanConnect(t *testing.T, id, password string) {
	t.Helper()
	fhtest.Eventually(t, 20*time.Second, "Mosquitto accepting "+id, func() bool {
		cl, err := tryDial(c.mq.addr, id, password, nil)
		if err != nil {
			return false
		}
		cl.Disconnect(&paho.Disconnect{})
		return true
	})
}

func tryDial(addr, id, password string, onPublish func(*paho.Publish)) (*paho.Client, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	cfg := paho.ClientConfig{Conn: conn}
	if onPublish != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			onPublish(pr.Packet)
			return true, nil
		}}
	}
	cl := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := cl.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Username: id, UsernameFlag: true, Password: []byte(password), PasswordFlag: true})
	if err != nil {
		conn.Close()
		if ca != nil {
			return nil, fmt.Errorf("device %s connect: %w (reason 0x%02x)", id, err, ca.ReasonCode)
		}
		return nil, fmt.Errorf("device %s connect: %w", id, err)
	}
	return cl, nil
}

// dialHubUser connects with the hubs' credentials under client id id.
func dialHubUser(t *testing.T, addr, id string) *paho.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cl := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		Username: hubUser, UsernameFlag: true, Password: []byte(hubPassword), PasswordFlag: true}); err != nil {
		t.Fatalf("hub user connect: %v", err)
	}
	t.Cleanup(func() { cl.Disconnect(&paho.Disconnect{}) })
	return cl
}

func dialDevice(t *testing.T, addr, id, password string, onPublish func(*paho.Publish)) *paho.Client {
	t.Helper()
	cl, err := tryDial(addr, id, password, onPublish)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Disconnect(&paho.Disconnect{}) })
	return cl
}

// TestClusterKill9 runs three hub instances on Mosquitto and PostgreSQL;
// devices publish a fixed number of QoS 1 messages; one instance is
// killed with SIGKILL mid-stream and started again. Every message
// Mosquitto acknowledged to a device must be stored exactly once.
func TestClusterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, Mosquitto and three hub processes")
	}
	c := startCluster(t, 3)
	const devices, perDevice = 20, 600
	ids := make([]string, devices)
	pws := make([]string, devices)
	for i := range ids {
		ids[i] = fmt.Sprintf("cl-dev-%02d", i)
		pws[i] = c.createDevice(t, ids[i])
	}
	for i := range ids {
		c.waitCanConnect(t, ids[i], pws[i])
	}

	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	acked := make([][]bool, devices)
	var ackedTotal atomic.Int64
	var wg sync.WaitGroup
	for i := range ids {
		acked[i] = make([]bool, perDevice)
		cl := dialDevice(t, c.mq.addr, ids[i], pws[i], nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(5 * time.Millisecond) // ~200 msgs/s per device
			defer tick.Stop()
			for seq := 1; seq <= perDevice; seq++ {
				<-tick.C
				ts := base.Add(time.Duration(seq) * time.Millisecond)
				body := fmt.Sprintf(`{"seq":%d,"ts":%d,"data":{"n":%d}}`, seq, ts.UnixMilli(), seq)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				r, err := cl.Publish(ctx, &paho.Publish{Topic: topic.Telemetry(ids[i]), QoS: 1, Payload: []byte(body)})
				cancel()
				if err == nil && (r == nil || r.ReasonCode < 0x80) {
					acked[i][seq-1] = true
					ackedTotal.Add(1)
				}
			}
		}()
	}
	// Kill hub-1 once it has stored a share of the stream, while the
	// devices are still publishing.
	victim := c.hubs[1]
	fhtest.Eventually(t, 60*time.Second, "hub-1 storing", func() bool {
		return victim.metric("fieldhub_extbroker_acked_total") >= 300
	})
	victim.Kill()
	t.Logf("killed hub-1 with %d messages acknowledged to devices so far", ackedTotal.Load())
	time.Sleep(time.Second)
	victim.Start(t)
	victim.WaitReady(t)
	wg.Wait()
	if got := ackedTotal.Load(); got != devices*perDevice {
		t.Logf("Mosquitto acknowledged %d of %d publishes", got, devices*perDevice)
	}

	// Every acknowledged message is stored, each once (the points are
	// keyed by time; n is the seq).
	from, to := base.UnixMilli(), base.Add(time.Duration(perDevice+1)*time.Millisecond).UnixMilli()
	for i, id := range ids {
		var want int
		for _, a := range acked[i] {
			if a {
				want++
			}
		}
		var got map[int64]int
		fhtest.Eventually(t, 60*time.Second, "every acknowledged message of "+id+" stored", func() bool {
			got = readSeqs(t, c.hubs[i%3], id, from, to)
			for seq, a := range acked[i] {
				if a && got[int64(seq+1)] == 0 {
					return false
				}
			}
			return true
		})
		for seq, n := range got {
			if n != 1 {
				t.Errorf("%s seq %d stored %d times", id, seq, n)
			}
			if seq < 1 || seq > perDevice {
				t.Errorf("%s: unexpected seq %d", id, seq)
			}
		}
		if len(got) < want {
			t.Errorf("%s: %d stored, %d acknowledged", id, len(got), want)
		}
	}
	var dups float64
	for _, h := range c.hubs {
		dups += h.metric(`fieldhub_telemetry_messages_total{result="duplicate"}`)
	}
	t.Logf("%d devices × %d messages stored exactly once across the kill; %v duplicates dropped after redelivery", devices, perDevice, dups)
}

// readSeqs returns how many points of metric n each value (the seq) has.
func readSeqs(t *testing.T, h *hubProc, id string, fromMS, toMS int64) map[int64]int {
	t.Helper()
	var res struct {
		Series []struct {
			Metric string `json:"metric"`
			Points []struct {
				V float64 `json:"value"`
			} `json:"points"`
		} `json:"series"`
	}
	path := fmt.Sprintf("/api/v1/devices/%s/telemetry?metric=n&from=%d&to=%d&limit=100000", id, fromMS, toMS)
	if code := h.api(t, "GET", path, nil, &res); code != 200 {
		t.Fatalf("GET %s: %d", path, code)
	}
	m := map[int64]int{}
	for _, s := range res.Series {
		for _, p := range s.Points {
			m[int64(p.V)]++
		}
	}
	return m
}

// TestClusterDevices covers, with three instances behind Mosquitto, what
// devices and operators do besides telemetry: a device is confined to its
// own topics by the files the hubs write (it cannot publish as another
// device nor read its commands or desired state); a command created on one
// instance is answered through the shared subscription, stored by
// whichever instance got the answer, and seen by the waiting request on
// the first; a desired-state change made through another instance reaches
// the device retained; a deleted device is cut off.
func TestClusterDevices(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, Mosquitto and three hub processes")
	}
	c := startCluster(t, 3)
	pwA, pwB := c.createDevice(t, "dev-a"), c.createDevice(t, "dev-b")
	c.waitCanConnect(t, "dev-a", pwA)
	c.waitCanConnect(t, "dev-b", pwB)

	type got struct {
		mu   sync.Mutex
		msgs []*paho.Publish
	}
	var gotA, gotB got
	record := func(g *got) func(*paho.Publish) {
		return func(p *paho.Publish) { g.mu.Lock(); g.msgs = append(g.msgs, p); g.mu.Unlock() }
	}
	a := dialDevice(t, c.mq.addr, "dev-a", pwA, record(&gotA))
	var b *paho.Client
	b = dialDevice(t, c.mq.addr, "dev-b", pwB, func(p *paho.Publish) {
		record(&gotB)(p)
		if t, err := topic.Parse(p.Topic); err == nil && t.Kind == topic.KindCommand {
			var cmd struct {
				ID string `json:"id"`
			}
			json.Unmarshal(p.Payload, &cmd)
			go b.Publish(context.Background(), &paho.Publish{Topic: topic.Response("dev-b", cmd.ID), QoS: 1,
				Payload: []byte(`{"status":"ok","result":{"by":"dev-b"}}`)})
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// dev-a tries dev-b's topics: the publish is refused, the
	// subscriptions are granted by Mosquitto but deliver nothing.
	r, err := a.Publish(ctx, &paho.Publish{Topic: topic.Telemetry("dev-b"), QoS: 1, Payload: []byte(`{"seq":1,"data":{"x":1}}`)})
	if err == nil && (r == nil || r.ReasonCode < 0x80) {
		t.Errorf("dev-a publishing dev-b's telemetry was accepted (%+v)", r)
	}
	// Mosquitto 2.0 closes the connection after refusing a publish.
	select {
	case <-a.Done():
	case <-time.After(5 * time.Second):
		a.Disconnect(&paho.Disconnect{})
	}
	a = dialDevice(t, c.mq.addr, "dev-a", pwA, record(&gotA))
	if _, err := a.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "devices/dev-b/commands/+", QoS: 1}, {Topic: "devices/dev-b/twin/desired", QoS: 1},
	}}); err != nil {
		t.Fatalf("dev-a's subscription to dev-b's topics: %v", err)
	}
	if _, err := b.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "devices/dev-b/commands/+", QoS: 1}, {Topic: "devices/dev-b/twin/desired", QoS: 1},
	}}); err != nil {
		t.Fatal(err)
	}
	// dev-b says it is online (retained): every instance reads it.
	if _, err := b.Publish(ctx, &paho.Publish{Topic: topic.Status("dev-b"), QoS: 1, Retain: true, Payload: []byte("online")}); err != nil {
		t.Fatal(err)
	}
	for _, h := range c.hubs {
		fhtest.Eventually(t, 10*time.Second, h.name+" seeing dev-b online", func() bool {
			var d struct {
				Online bool `json:"online"`
			}
			h.api(t, "GET", "/api/v1/devices/dev-b", nil, &d)
			return d.Online
		})
	}

	// A command through hub-2, waited for there.
	var cmd struct {
		ID     string          `json:"id"`
		State  string          `json:"state"`
		Result json.RawMessage `json:"result"`
	}
	if code := c.hubs[2].api(t, "POST", "/api/v1/devices/dev-b/commands?wait=15s", map[string]any{"name": "reboot", "expires_in": "1m"}, &cmd); code != 201 {
		t.Fatalf("command: status %d", code)
	}
	if cmd.State != "succeeded" || !strings.Contains(string(cmd.Result), "dev-b") {
		t.Fatalf("command through hub-2 ended %q with result %s; want succeeded", cmd.State, cmd.Result)
	}
	for _, h := range c.hubs {
		var again struct {
			State string `json:"state"`
		}
		h.api(t, "GET", "/api/v1/commands/"+cmd.ID, nil, &again)
		if again.State != "succeeded" {
			t.Errorf("%s reads the command as %q", h.name, again.State)
		}
	}

	// Desired state through hub-1 reaches dev-b (retained), not dev-a.
	if code := c.hubs[1].api(t, "PATCH", "/api/v1/devices/dev-b/twin", map[string]any{"desired": map[string]any{"interval": 5}}, nil); code != 200 {
		t.Fatalf("twin patch: status %d", code)
	}
	fhtest.Eventually(t, 10*time.Second, "dev-b receiving its desired state", func() bool {
		gotB.mu.Lock()
		defer gotB.mu.Unlock()
		for _, p := range gotB.msgs {
			if p.Topic == topic.TwinDesired("dev-b") && strings.Contains(string(p.Payload), `"interval":5`) {
				return true
			}
		}
		return false
	})
	time.Sleep(300 * time.Millisecond)
	gotA.mu.Lock()
	for _, p := range gotA.msgs {
		t.Errorf("dev-a received %s on %s", p.Payload, p.Topic)
	}
	gotA.mu.Unlock()
	var tel struct {
		Series []json.RawMessage `json:"series"`
	}
	c.hubs[0].api(t, "GET", "/api/v1/devices/dev-b/telemetry", nil, &tel)
	if len(tel.Series) != 0 {
		t.Errorf("dev-b has telemetry %s that dev-a tried to publish", tel.Series)
	}

	// A gateway answers a command for the device behind it: the child
	// has no status of its own, the gateway's "online" stands for it, and
	// Mosquitto's ACL (written by the hubs) lets the gateway read the
	// child's commands and answer for it.
	var gwCreated struct {
		Credentials struct {
			Password string `json:"password"`
		} `json:"credentials"`
	}
	if code := c.hubs[0].api(t, "POST", "/api/v1/devices", map[string]any{"id": "gw-1", "auth": "password"}, &gwCreated); code != 201 {
		t.Fatalf("creating gw-1: %d", code)
	}
	if code := c.hubs[0].api(t, "POST", "/api/v1/devices", map[string]any{"id": "child-1", "auth": "password", "gateway": "gw-1"}, nil); code != 201 {
		t.Fatalf("creating child-1: %d", code)
	}
	pwGW := gwCreated.Credentials.Password
	c.waitCanConnect(t, "gw-1", pwGW)
	var gw *paho.Client
	gw = dialDevice(t, c.mq.addr, "gw-1", pwGW, func(p *paho.Publish) {
		if tp, err := topic.Parse(p.Topic); err == nil && tp.Kind == topic.KindCommand && tp.Device == "child-1" {
			var cmd struct {
				ID string `json:"id"`
			}
			json.Unmarshal(p.Payload, &cmd)
			go gw.Publish(context.Background(), &paho.Publish{Topic: topic.Response("child-1", cmd.ID), QoS: 1,
				Payload: []byte(`{"status":"ok","result":{"via":"gw-1"}}`)})
		}
	})
	// The hubs rewrite the ACL with the gateway's block after the child
	// is created; until Mosquitto has reloaded, the subscription delivers
	// nothing, so subscribe once the child's command topic is readable.
	fhtest.Eventually(t, 20*time.Second, "Mosquitto's ACL granting gw-1 its child's commands", func() bool {
		b, err := os.ReadFile(c.mq.file("acl"))
		return err == nil && strings.Contains(string(b), "devices/child-1/commands")
	})
	time.Sleep(500 * time.Millisecond) // the SIGHUP follows the write
	if _, err := gw.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/child-1/commands/+", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Publish(ctx, &paho.Publish{Topic: topic.Status("gw-1"), QoS: 1, Retain: true, Payload: []byte("online")}); err != nil {
		t.Fatal(err)
	}
	fhtest.Eventually(t, 10*time.Second, "hub-1 seeing gw-1 online", func() bool {
		var d struct {
			Online bool `json:"online"`
		}
		c.hubs[1].api(t, "GET", "/api/v1/devices/gw-1", nil, &d)
		return d.Online
	})
	cmd.State, cmd.Result = "", nil
	if code := c.hubs[1].api(t, "POST", "/api/v1/devices/child-1/commands?wait=15s", map[string]any{"name": "blink"}, &cmd); code != 201 {
		t.Fatalf("command to child-1: status %d", code)
	}
	if cmd.State != "succeeded" || !strings.Contains(string(cmd.Result), "gw-1") {
		t.Errorf("command to child-1 through its gateway ended %q with %s; want succeeded", cmd.State, cmd.Result)
	}

	// A message for an id the registry does not have (here published
	// with the hubs' own credentials, which the broker lets write
	// anywhere under devices/) is dropped and counted, not stored.
	hubConn := dialHubUser(t, c.mq.addr, "stray-hub-client")
	if _, err := hubConn.Publish(ctx, &paho.Publish{Topic: topic.Telemetry("ghost"), QoS: 1, Payload: []byte(`{"seq":1,"data":{"x":1}}`)}); err != nil {
		t.Fatal(err)
	}
	fhtest.Eventually(t, 10*time.Second, "the ghost's message counted as from an unknown device", func() bool {
		var n float64
		for _, h := range c.hubs {
			n += h.metric("fieldhub_extbroker_unknown_device_total")
		}
		return n == 1
	})

	// Deleting dev-a through hub-2 cuts it off: Mosquitto reloads its
	// files and closes the session, and refuses it afterwards.
	if code := c.hubs[2].api(t, "DELETE", "/api/v1/devices/dev-a", nil, nil); code != 204 {
		t.Fatalf("delete: status %d", code)
	}
	select {
	case <-a.Done():
	case <-time.After(20 * time.Second):
		t.Error("dev-a's session survived its deletion")
	}
	if cl, err := tryDial(c.mq.addr, "dev-a", pwA, nil); err == nil {
		cl.Disconnect(&paho.Disconnect{})
		t.Error("a deleted device connected to Mosquitto")
	}
}
