package brokerauth

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fieldhub/fieldhub/internal/registry"
	"github.com/fieldhub/fieldhub/internal/store"
)

func TestMosquittoHashMatchesMosquittoPasswd(t *testing.T) {
	bin, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		t.Skip("mosquitto_passwd not installed (apt-get install mosquitto)")
	}
	file := filepath.Join(t.TempDir(), "pw")
	if out, err := exec.Command(bin, "-c", "-b", file, "dev-1", "s3cret pw").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	b, _ := os.ReadFile(file)
	_, hash, _ := strings.Cut(strings.TrimSpace(string(b)), ":")
	for _, tt := range []struct {
		pw   string
		want bool
	}{{"s3cret pw", true}, {"s3cret", false}, {"", false}} {
		if ok, err := VerifyMosquittoHash(hash, tt.pw); ok != tt.want || err != nil {
			t.Errorf("VerifyMosquittoHash(mosquitto_passwd's %s, %q) = %v, %v; want %v", hash, tt.pw, ok, err, tt.want)
		}
	}
	ours := MosquittoHash("s3cret pw", 0)
	if !strings.HasPrefix(ours, "$7$101$") || len(strings.Split(ours, "$")[3]) != 16 || len(strings.Split(ours, "$")[4]) != 88 {
		t.Errorf("MosquittoHash = %s; want $7$101$<16 base64 chars>$<88 base64 chars>", ours)
	}
	if ok, _ := VerifyMosquittoHash(ours, "s3cret pw"); !ok {
		t.Errorf("VerifyMosquittoHash(MosquittoHash(pw), pw) = false")
	}
}

// mosquitto is a Mosquitto process started from the test's own config.
type mosquitto struct {
	addr string
	cmd  *exec.Cmd
	out  *strings.Builder
}

// startMosquitto runs Mosquitto on a free loopback port with the syncer's
// files, a pid_file and use_username_as_clientid, as docs/brokers.md
// describes (without TLS).
func startMosquitto(t *testing.T, dir, pwFile, aclFile, pidFile string) *mosquitto {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		t.Skip("mosquitto not installed (apt-get install mosquitto)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	var conf strings.Builder
	fmt.Fprintf(&conf, "per_listener_settings false\nallow_anonymous false\npassword_file %s\nacl_file %s\npid_file %s\n", pwFile, aclFile, pidFile)
	conf.WriteString("persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n")
	fmt.Fprintf(&conf, "listener %s 127.0.0.1\nuse_username_as_clientid true\n", port)
	if os.Geteuid() == 0 {
		conf.WriteString("user root\n") // else it switches to the mosquitto user, who cannot read t.TempDir()
	}
	file := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(file, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &mosquitto{addr: addr, out: &strings.Builder{}}
	m.cmd = exec.Command(bin, "-c", file)
	m.cmd.Stderr = &lockedWriter{b: m.out}
	m.cmd.Stdout = m.cmd.Stderr
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = m.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("mosquitto output:\n%s", m.output())
		}
	})
	deadline := time.Now().Add(testTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto not listening on %s: %v\n%s", addr, err, m.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return m
}

func (m *mosquitto) output() string {
	w := m.cmd.Stderr.(*lockedWriter)
	w.mu.Lock()
	defer w.mu.Unlock()
	return m.out.String()
}

// eventually retries connecting until ok(err) or the timeout.
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestMosquittoSync(t *testing.T) {
	if _, err := exec.LookPath("mosquitto"); err != nil {
		t.Skip("mosquitto not installed (apt-get install mosquitto)")
	}
	ctx := context.Background()
	dir := t.TempDir()
	pwFile, aclFile, pidFile := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl"), filepath.Join(dir, "mosquitto.pid")
	hub := HubUser{Name: "fieldhub-hub", Password: randomSecret()}

	// The syncer needs the store before the registry exists (the hook).
	var sync *Mosquitto
	e := newEnv(t, registry.Options{OnPassword: func(ctx context.Context, d store.Device, pw string) error {
		return sync.OnPassword(ctx, d, pw)
	}})
	var err error
	sync, err = NewMosquitto(e.db, e.db, MosquittoConfig{
		PasswordFile: pwFile, ACLFile: aclFile, PIDFile: pidFile, HubUsers: []HubUser{hub},
	})
	if err != nil {
		t.Fatal(err)
	}
	pwA := e.create(t, "dev-a", "", "")
	pwB := e.create(t, "dev-b", "", "")
	pwG := e.create(t, "gw-1", "", "")
	pwC := e.create(t, "child-1", "gw-1", "")
	pwS := e.create(t, "stranger", "", "")
	e.create(t, "cert-1", "", store.AuthCertificate)

	res, err := sync.Sync(ctx)
	if err != nil {
		t.Fatalf("first Sync = %v", err)
	}
	if res.Passwords != 5 || res.Certificates != 1 || res.Gateways != 1 || res.NoHash != 0 || !res.Changed || res.Reloaded {
		t.Errorf("first Sync (no mosquitto yet, no pid file) = %+v; want 5 passwords, 1 certificate, 1 gateway, changed, not reloaded", res)
	}
	for _, f := range []string{pwFile, aclFile} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("stat %s = %v, %v; want mode 0600", f, fi.Mode(), err)
		}
	}
	pwText, _ := os.ReadFile(pwFile)
	if strings.Contains(string(pwText), "cert-1") || strings.Contains(string(pwText), pwA) {
		t.Errorf("password file holds a certificate device or a clear password:\n%s", pwText)
	}

	mq := startMosquitto(t, dir, pwFile, aclFile, pidFile)
	addr := mq.addr

	hubc := mustDial(t, addr, hub.Name, hub.Password)
	if r := hubc.subscribe(t, "$share/hubs/devices/#"); r[0] >= 0x80 {
		t.Fatalf("hub shared subscription refused: %#x", r[0])
	}
	a := mustDial(t, addr, "dev-a", pwA)
	b := mustDial(t, addr, "dev-b", pwB)

	t.Run("own telemetry", func(t *testing.T) {
		if rc := a.publish(t, "devices/dev-a/telemetry"); rc >= 0x80 {
			t.Fatalf("dev-a publishing its telemetry: PUBACK %#x", rc)
		}
		hubc.waitFor(t, "devices/dev-a/telemetry")
	})
	t.Run("foreign topics denied", func(t *testing.T) {
		for _, name := range []string{"devices/dev-b/telemetry", "devices/dev-b/commands/reboot", "devices/dev-a/commands/reboot", "devices/dev-b/twin/desired", "other/topic"} {
			if rc := a.publish(t, name); rc != 0x87 {
				t.Errorf("dev-a publishing %s: PUBACK %#x; want 0x87 not authorized", name, rc)
			}
		}
	})
	t.Run("no foreign commands", func(t *testing.T) {
		// Mosquitto grants these SUBSCRIBEs (its ACL is checked per
		// delivery), but delivers nothing of dev-b to dev-a.
		a.subscribe(t, "devices/dev-b/commands/+", "devices/dev-b/#", "devices/+/commands/+")
		a.subscribe(t, "devices/dev-a/commands/+")
		b.subscribe(t, "devices/dev-b/commands/+")
		if rc := hubc.publish(t, "devices/dev-b/commands/reboot"); rc >= 0x80 {
			t.Fatalf("hub publishing a command: PUBACK %#x", rc)
		}
		if rc := hubc.publish(t, "devices/dev-a/commands/ping"); rc >= 0x80 {
			t.Fatalf("hub publishing a command: PUBACK %#x", rc)
		}
		b.waitFor(t, "devices/dev-b/commands/reboot")
		a.waitFor(t, "devices/dev-a/commands/ping") // sent after dev-b's: dev-a had its chance
		time.Sleep(100 * time.Millisecond)
		if a.has("devices/dev-b/commands/reboot") {
			t.Error("dev-a received dev-b's command")
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		if _, err := dial(t, addr, "dev-a", pwB); err == nil {
			t.Error("dev-a with dev-b's password: connected")
		}
		if _, err := dial(t, addr, "dev-a", ""); err == nil {
			t.Error("dev-a without password: connected")
		}
		if _, err := dial(t, addr, "cert-1", "x"); err == nil {
			t.Error("certificate device with a password: connected")
		}
	})
	t.Run("gateway", func(t *testing.T) {
		g := mustDial(t, addr, "gw-1", pwG)
		c := mustDial(t, addr, "child-1", pwC)
		s := mustDial(t, addr, "stranger", pwS)
		for name, want := range map[string]bool{
			"devices/gw-1/batch":            true,
			"devices/child-1/alerts":        true,
			"devices/child-1/twin/reported": true,
			"devices/child-1/telemetry":     false,
			"devices/stranger/alerts":       false,
			"devices/stranger/status":       false,
		} {
			if rc := g.publish(t, name); (rc < 0x80) != want {
				t.Errorf("gw-1 publishing %s: PUBACK %#x; want allowed=%v", name, rc, want)
			}
		}
		if rc := c.publish(t, "devices/gw-1/batch"); rc != 0x87 {
			t.Errorf("child publishing its gateway's batch: PUBACK %#x; want 0x87", rc)
		}
		g.subscribe(t, "devices/child-1/commands/+", "devices/stranger/commands/+")
		s.subscribe(t, "devices/stranger/commands/+")
		hubc.publish(t, "devices/stranger/commands/x")
		hubc.publish(t, "devices/child-1/commands/x")
		s.waitFor(t, "devices/stranger/commands/x")
		g.waitFor(t, "devices/child-1/commands/x")
		time.Sleep(100 * time.Millisecond)
		if g.has("devices/stranger/commands/x") {
			t.Error("gateway received a stranger's command")
		}
	})
	t.Run("unchanged", func(t *testing.T) {
		res, err := sync.Sync(ctx)
		if err != nil || res.Changed || res.Reloaded {
			t.Errorf("Sync with nothing new = %+v, %v; want unchanged, no reload", res, err)
		}
	})
	t.Run("created after start", func(t *testing.T) {
		pwD := e.create(t, "dev-d", "", "")
		if _, err := dial(t, addr, "dev-d", pwD); err == nil {
			t.Fatal("dev-d connected before the sync")
		}
		res, err := sync.Sync(ctx)
		if err != nil || !res.Changed || !res.Reloaded {
			t.Fatalf("Sync after a create = %+v, %v; want changed and reloaded", res, err)
		}
		var d *client
		eventually(t, "dev-d can connect after SIGHUP", func() bool {
			d, err = dial(t, addr, "dev-d", pwD)
			return err == nil
		})
		if rc := d.publish(t, "devices/dev-d/telemetry"); rc >= 0x80 {
			t.Errorf("dev-d publishing its telemetry: PUBACK %#x", rc)
		}
	})
	t.Run("rotated", func(t *testing.T) {
		c, err := e.svc.Rotate(ctx, "stranger", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sync.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the old password is refused after the rotation", func() bool {
			_, err := dial(t, addr, "stranger", pwS)
			return err != nil
		})
		mustDial(t, addr, "stranger", c.Password)
	})
	t.Run("deleted", func(t *testing.T) {
		// dev-a is connected. Mosquitto 2.0 re-checks the password of
		// every live session on reload: a deleted device's session is
		// closed by the reload, not only its next CONNECT refused.
		if err := e.svc.Delete(ctx, "dev-a"); err != nil {
			t.Fatal(err)
		}
		if _, err := sync.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case <-a.disconnected:
		case <-time.After(testTimeout):
			t.Error("the deleted device's live session was not closed by the reload")
		}
		eventually(t, "the deleted device is refused", func() bool {
			_, err := dial(t, addr, "dev-a", pwA)
			return err != nil
		})
		mustDial(t, addr, "dev-b", pwB) // others unaffected
	})
}
