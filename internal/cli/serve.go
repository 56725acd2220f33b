package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"github.com/fieldhub/fieldhub/internal/hub"
)

func serveCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the hub: MQTT broker, registry, ingestion and REST API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadHubConfig(cmd.Flags(), os.Getenv)
			if err != nil {
				return err
			}
			log := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
			h, err := hub.New(cfg, log)
			if err != nil {
				return err
			}
			if path := os.Getenv("FIELDHUB_CPU_PROFILE"); path != "" {
				// A CPU profile of the whole run, written at shutdown
				// (go tool pprof), for performance work.
				f, err := os.Create(path)
				if err != nil {
					return fmt.Errorf("FIELDHUB_CPU_PROFILE: %w", err)
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("FIELDHUB_CPU_PROFILE: %w", err)
				}
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
			ctx := cmd.Context()
			if err := h.Start(ctx); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "fieldhub hub ready: api http://%s  (admin token: FIELDHUB_ADMIN_TOKEN or %s/admin-token)\n", h.Addr("http"), cfg.Data)
			<-ctx.Done()
			log.Info("shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return h.Shutdown(sctx)
		},
	}
	addHubFlags(cmd.Flags())
	return cmd
}
