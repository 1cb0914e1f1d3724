package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/cmd/microhost/cli"
	"github.com/microhost/microhost/host/builtin"
	"github.com/microhost/microhost/sdk"
	"github.com/spf13/cobra"
)

func pluginCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "plugin",
		Short: "List, describe and serve the builtin plugins",
	}
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the builtin plugins",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var infos []sdk.Info
			for _, name := range builtin.Names() {
				infos = append(infos, builtin.Plugins[name](hclog.NewNullLogger()).Info())
			}
			if asJSON {
				return writeJSON(cmd, infos)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tKIND\tVERSION")
			for _, i := range infos {
				fmt.Fprintf(w, "%s\t%s\t%s\n", i.Name, i.Kind, i.Version)
			}
			return w.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	describe := &cobra.Command{
		Use:   "describe NAME",
		Short: "Print a builtin plugin's info and config schema as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			newComponent, err := lookupBuiltin(args[0])
			if err != nil {
				return err
			}
			c := newComponent(hclog.NewNullLogger())
			return writeJSON(cmd, sdk.Description{Info: c.Info(), Schema: c.Schema()})
		},
	}
	serve := &cobra.Command{
		Use:   "serve NAME [describe | serve --listen ADDR --config FILE | debug]",
		Short: "Run a builtin plugin: under a host, standalone as a service, or for a debugger",
		Long: `Run a builtin plugin. The host starts its builtins this way. With
"serve --listen ADDR --config FILE" the plugin runs standalone as a gRPC service
(with gRPC health and reflection) that a host can use through address = "ADDR".`,
		Args:               cobra.MinimumNArgs(1),
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] == "-h" || args[0] == "--help" {
				return cmd.Help()
			}
			newComponent, err := lookupBuiltin(args[0])
			if err != nil {
				return err
			}
			if code := sdk.Main("microhost plugin serve "+args[0], args[1:], newComponent); code != 0 {
				os.Exit(code)
			}
			return nil
		},
	}
	cmd.AddCommand(list, describe, serve, cli.PluginStatusCommand())
	return cmd
}

func lookupBuiltin(name string) (func(hclog.Logger) sdk.Component, error) {
	f, ok := builtin.Plugins[name]
	if !ok {
		return nil, fmt.Errorf("no builtin plugin %q; the builtins are %v", name, builtin.Names())
	}
	return f, nil
}

func writeJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
