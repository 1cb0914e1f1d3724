package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/host/node"
	"github.com/microhost/microhost/host/supervisor"
	"github.com/spf13/cobra"
)

func runCommand() *cobra.Command {
	var flags configFlags
	var logLevel string
	var logJSON bool
	cmd := &cobra.Command{
		Use:   "run [FILE]",
		Short: "Run a node: start its plugins, join the network, serve the admin API",
		Long: `Run a node from a configuration file (default config.hcl). The node starts one
plugin process per component, joins its peers and serves the admin API that the
other microhost commands talk to. SIGINT or SIGTERM stop it gracefully: it tells
its peers it is leaving and stops its plugins in dependency order. SIGHUP reloads
certificates without dropping links.

MICROHOST_REATTACH, printed by a plugin started with "debug", attaches to a
plugin running under a debugger instead of starting it.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := flags.takeArgs(cmd, args); err != nil {
				return err
			}
			cfg, decoded, err := flags.load(cmd)
			if err != nil {
				return err
			}
			reattach, err := supervisor.ParseReattach(os.Getenv("MICROHOST_REATTACH"))
			if err != nil {
				return err
			}
			log := hclog.New(&hclog.LoggerOptions{
				Name:       "microhost",
				Level:      hclog.LevelFromString(logLevel),
				JSONFormat: logJSON,
				Output:     cmd.ErrOrStderr(),
			})
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			n, err := node.Start(ctx, node.Options{Config: cfg, Decoded: decoded, Log: log, Reattach: reattach})
			if err != nil {
				return err
			}
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			for {
				select {
				case <-hup:
					log.Info("SIGHUP: reloading certificates")
					n.Reload()
				case <-ctx.Done():
					log.Info("shutting down")
					shutdown, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
					defer cancel()
					n.Stop(shutdown)
					return nil
				}
			}
		},
	}
	flags.add(cmd)
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "trace, debug, info, warn or error")
	cmd.Flags().BoolVar(&logJSON, "log-json", false, "log JSON lines")
	return cmd
}
