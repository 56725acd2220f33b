package broker

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestIdleConnectionRSS measures the broker's resident memory per idle
// MQTT 3.1.1 connection (plain TCP and TLS), with the clients in a child
// process. It runs only when FIELDHUB_MEASURE_RSS is set to the number of
// connections (e.g. 2000); mind `ulimit -n`.
func TestIdleConnectionRSS(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("FIELDHUB_MEASURE_RSS"))
	if n <= 0 {
		t.Skip("set FIELDHUB_MEASURE_RSS=<connections> to measure")
	}
	if os.Getenv("FIELDHUB_RSS_HEAP_PROFILE") != "" {
		runtime.MemProfileRate = 1 // every allocation, for an exact breakdown
	}
	p := newTestPKI(t, "rss CA")
	// mtls: TLS with a client certificate (each connection keeps its
	// parsed copy); the helper gets the certificate as PEM files.
	cert := p.clientCert(t, "rss-device")
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(t.TempDir(), "cert.pem"), filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"tcp", "tls", "mtls"} {
		t.Run(kind, func(t *testing.T) {
			cfg := p.brokerConfig()
			cfg.TCPAddr = "127.0.0.1:0"
			cfg.OpenPolicy = true
			e := startEnv(t, cfg, "ok")
			runtime.GC()
			debug.FreeOSMemory()
			before := rssBytes(t)
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)

			cmd := exec.Command(os.Args[0], "-test.run=^TestRSSClientHelper$", "-test.timeout=120s")
			cmd.Env = append(os.Environ(), fmt.Sprintf("FIELDHUB_RSS_CLIENT=%s,%s,%d,%s,%s", kind, e.addr(strings.TrimPrefix(kind, "m")), n, certFile, keyFile))
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				stdin.Close()
				done := make(chan error, 1)
				go func() { done <- cmd.Wait() }()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					_ = cmd.Process.Kill()
					<-done
				}
			}()
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "ready") {
				t.Fatalf("client helper: %q, %v", line, err)
			}
			eventually(t, "all connected", func() bool { return e.b.OnlineCount() >= n })
			time.Sleep(time.Second)
			for i := 0; i < 5; i++ { // each GC halves stacks using under a quarter of their size
				runtime.GC()
			}
			debug.FreeOSMemory()
			after := rssBytes(t)
			runtime.ReadMemStats(&m1)
			t.Logf("per connection: heap in use %.1f KiB, stacks %.1f KiB",
				(float64(m1.HeapInuse)-float64(m0.HeapInuse))/float64(n)/1024, (float64(m1.StackInuse)-float64(m0.StackInuse))/float64(n)/1024)
			if f := os.Getenv("FIELDHUB_RSS_HEAP_PROFILE"); f != "" {
				if out, err := os.Create(f + "." + kind); err == nil {
					_ = pprof.Lookup("heap").WriteTo(out, 0)
					out.Close()
				}
			}
			t.Logf("%s: %d idle connections: RSS %.1f MiB -> %.1f MiB: %.1f KiB per connection (goroutines %d)",
				kind, n, float64(before)/(1<<20), float64(after)/(1<<20), float64(after-before)/float64(n)/1024, runtime.NumGoroutine())
		})
	}
}

// TestRSSClientHelper is the client side of TestIdleConnectionRSS.
func TestRSSClientHelper(t *testing.T) {
	spec := os.Getenv("FIELDHUB_RSS_CLIENT")
	if spec == "" {
		t.Skip("helper process only")
	}
	parts := strings.Split(spec, ",")
	n, _ := strconv.Atoi(parts[2])
	var conns []net.Conn
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", parts[1], testTimeout)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		switch parts[0] {
		case "tls":
			c = tls.Client(c, &tls.Config{InsecureSkipVerify: true})
		case "mtls":
			cert, err := tls.LoadX509KeyPair(parts[3], parts[4])
			if err != nil {
				t.Fatal(err)
			}
			c = tls.Client(c, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}})
		}
		pk := packets.Packet{
			FixedHeader:     packets.FixedHeader{Type: packets.Connect},
			ProtocolVersion: 4,
			Connect: packets.ConnectParams{
				ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 600, ClientIdentifier: fmt.Sprintf("rss-%d", i),
			},
		}
		var buf bytes.Buffer
		if err := pk.ConnectEncode(&buf); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(buf.Bytes()); err != nil {
			t.Fatalf("connect %d: %v", i, err)
		}
		ack := make([]byte, 4)
		_ = c.SetReadDeadline(time.Now().Add(testTimeout))
		if _, err := c.Read(ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
			t.Fatalf("connack %d: %x, %v", i, ack, err)
		}
		conns = append(conns, c)
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
	for _, c := range conns {
		c.Close()
	}
}

func rssBytes(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skip("no /proc/self/statm")
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}
