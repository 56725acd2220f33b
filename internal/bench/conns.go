package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ConnConfig describes a run of idle connections.
type ConnConfig struct {
	Addr        string
	TLS         *tls.Config // nil for plain TCP
	Conns       int         // how many connections to hold open
	Concurrency int         // connects in flight; default 64
	Protocol    byte        // 4 or 5; default 4
	Settle      time.Duration
	ServerPID   int // the broker's process, for RSS; 0 to skip
	ClientID    func(i int) string
	// Keepalive in seconds sent in CONNECT (0: none). The connections
	// send nothing after CONNECT, so keep it above 2/3 of the run.
	Keepalive uint16
	// Settled, when set, is called after the RSS is read, with every
	// connection still open.
	Settled func(ctx context.Context) error
}

// ConnResult is what RunConnections measured.
type ConnResult struct {
	Conns          int
	ConnectsPerSec float64
	RSSBefore      int64 // server RSS before the first connect, bytes
	RSSAfter       int64 // server RSS with every connection open and idle
	PerConn        float64
	Elapsed        time.Duration
}

// RunConnections opens cfg.Conns MQTT connections (CONNECT with keep
// alive 0, so they stay idle), waits cfg.Settle, reads the server's RSS,
// then closes them all.
func RunConnections(ctx context.Context, cfg ConnConfig) (ConnResult, error) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	if cfg.Protocol == 0 {
		cfg.Protocol = 4
	}
	if cfg.ClientID == nil {
		cfg.ClientID = func(i int) string { return fmt.Sprintf("idle-%06d", i) }
	}
	var res ConnResult
	if cfg.ServerPID > 0 {
		rss, err := ProcRSS(cfg.ServerPID)
		if err != nil {
			return res, err
		}
		res.RSSBefore = rss
	}
	conns := make([]net.Conn, cfg.Conns)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= cfg.Conns {
					return
				}
				c, err := idleConnect(ctx, cfg, cfg.ClientID(i))
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("connection %d: %w", i, err) })
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	if firstErr != nil {
		return res, firstErr
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.Conns = cfg.Conns
	res.ConnectsPerSec = float64(cfg.Conns) / res.Elapsed.Seconds()
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(cfg.Settle):
	}
	if cfg.ServerPID > 0 {
		rss, err := ProcRSS(cfg.ServerPID)
		if err != nil {
			return res, err
		}
		res.RSSAfter = rss
		res.PerConn = float64(res.RSSAfter-res.RSSBefore) / float64(cfg.Conns)
	}
	if cfg.Settled != nil {
		if err := cfg.Settled(ctx); err != nil {
			return res, err
		}
	}
	return res, nil
}

func idleConnect(ctx context.Context, cfg ConnConfig, id string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if cfg.TLS != nil {
		tc := tls.Client(c, cfg.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		c = tc
	}
	if _, err := c.Write(appendConnect(nil, cfg.Protocol, id, "", "", cfg.Keepalive)); err != nil {
		c.Close()
		return nil, err
	}
	buf := make([]byte, 0, 64)
	for {
		if len(buf) == cap(buf) {
			c.Close()
			return nil, errors.New("connack too large")
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		first, body, _, perr := splitPacket(buf)
		if perr == nil {
			if first>>4 != 2 {
				c.Close()
				return nil, fmt.Errorf("want CONNACK, got packet type %d", first>>4)
			}
			ca, err := parseConnack(cfg.Protocol, body)
			if err != nil {
				c.Close()
				return nil, err
			}
			if ca.refused() {
				c.Close()
				return nil, fmt.Errorf("connect refused: code 0x%02x %s", ca.code, ca.reason)
			}
			c.SetDeadline(time.Time{})
			return c, nil
		}
		if !errors.Is(perr, errIncomplete) {
			c.Close()
			return nil, perr
		}
		if err != nil {
			c.Close()
			if errors.Is(err, io.EOF) {
				return nil, errors.New("closed before CONNACK")
			}
			return nil, err
		}
	}
}

// Table prints r.
func (r ConnResult) Table(w io.Writer, label string) {
	fmt.Fprintf(w, "%-28s %8d conns  %8.0f connects/s  RSS %6.1f → %6.1f MiB  %6.2f KiB/conn\n",
		label, r.Conns, r.ConnectsPerSec, float64(r.RSSBefore)/(1<<20), float64(r.RSSAfter)/(1<<20), r.PerConn/1024)
}
