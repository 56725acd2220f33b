package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/fieldhub/fieldhub/internal/bench"
)

// benchHub is a `fieldhub serve` child process of a benchmark: its data
// folder and master key under Dir, its API on HTTPAddr with Token.
type benchHub struct {
	// Exe is the fieldhub executable; default this one (tests pass the
	// binary they built).
	Exe                  string
	Dir, HTTPAddr, Token string
	// Args are the other flags (listeners…); Env is added to the
	// environment beside FIELDHUB_ADMIN_TOKEN.
	Args, Env []string
	// Wait is the address start waits for (a listener); default HTTPAddr.
	Wait     string
	LogLevel string // default "warn"
	Log      *slog.Logger
}

// newBenchHub returns a benchHub on dir with a free API port, a random
// admin token and args.
func newBenchHub(dir string, log *slog.Logger, args ...string) (*benchHub, error) {
	httpAddr, err := bench.FreePort()
	if err != nil {
		return nil, err
	}
	raw := make([]byte, 16)
	rand.Read(raw)
	return &benchHub{Dir: dir, HTTPAddr: httpAddr, Token: hex.EncodeToString(raw), Args: args, Log: log}, nil
}

// start starts the process (this executable) and waits until it listens
// on Wait. It may be called again after the process stopped.
func (h *benchHub) start(ctx context.Context) (*bench.Process, error) {
	exe := h.Exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	level := h.LogLevel
	if level == "" {
		level = "warn"
	}
	wait := h.Wait
	if wait == "" {
		wait = h.HTTPAddr
	}
	args := append([]string{"serve", "--data", filepath.Join(h.Dir, "data"), "--master-key-file", filepath.Join(h.Dir, "master.key"),
		"--http-addr", h.HTTPAddr, "--log-level", level}, h.Args...)
	p, err := bench.StartProcess(ctx, bench.ProcessConfig{
		Path: exe, Args: args, Env: append([]string{"FIELDHUB_ADMIN_TOKEN=" + h.Token}, h.Env...),
		Addr: wait, StartTimeout: time.Minute, Logger: h.Log,
	})
	if err != nil {
		return nil, fmt.Errorf("starting the hub: %w", err)
	}
	return p, nil
}

// api returns a client of the hub's REST API.
func (h *benchHub) api() *apiClient {
	return &apiClient{base: "http://" + h.HTTPAddr, token: h.Token, http: &http.Client{Timeout: 30 * time.Second}}
}
