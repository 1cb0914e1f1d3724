package main

import (
	"encoding/json"
	"fmt"

	"github.com/hashicorp/hcl/v2"
	"github.com/microhost/microhost/host/config"
	"github.com/microhost/microhost/host/node"
	"github.com/spf13/cobra"
)

// configFlags are the flags of every command that reads a config file.
type configFlags struct {
	path string
	vars map[string]string
}

func (f *configFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.path, "config", "c", "config.hcl", "HCL configuration file (or give it as the argument)")
	cmd.Flags().StringToStringVar(&f.vars, "var", nil, "set a variable: --var name=value (repeatable)")
	cmd.Args = cobra.MaximumNArgs(1)
}

// takeArgs lets the file be named as the command's argument.
func (f *configFlags) takeArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if cmd.Flags().Changed("config") {
		return fmt.Errorf("name the configuration file once: as an argument or with --config, not both")
	}
	f.path = args[0]
	return nil
}

// load reads the config and checks every component's config { } block
// against its plugin's schema. On errors it prints them all and returns an
// exitError.
func (f *configFlags) load(cmd *cobra.Command) (*config.Config, map[string]json.RawMessage, error) {
	cfg, diags := config.Load(f.path, f.vars)
	// Components that were read are checked even when other parts of the
	// file are wrong, so that every error is reported at once.
	decoded, more := node.DecodeComponents(cmd.Context(), cfg)
	diags = append(diags, more...)
	if !diags.HasErrors() {
		_, more = node.Identity(cfg)
		diags = append(diags, more...)
	}
	if len(diags) > 0 {
		config.WriteDiagnostics(cmd.ErrOrStderr(), diags, cfg.Files)
	}
	if diags.HasErrors() {
		return nil, nil, &exitError{code: 1, err: fmt.Errorf("%s: %d error(s) in the configuration", f.path, countErrors(diags))}
	}
	return cfg, decoded, nil
}

func countErrors(diags hcl.Diagnostics) int {
	n := 0
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			n++
		}
	}
	return n
}

func validateCommand() *cobra.Command {
	var flags configFlags
	cmd := &cobra.Command{
		Use:   "validate [FILE]",
		Short: "Check a configuration file without starting anything",
		Long: `Check a configuration file: syntax, types, required arguments, and every
component's config { } block against the schema its plugin publishes. All
errors are printed at once with file, line and column. Exits 1 on errors.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := flags.takeArgs(cmd, args); err != nil {
				return err
			}
			if _, _, err := flags.load(cmd); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is valid\n", flags.path)
			return nil
		},
	}
	flags.add(cmd)
	return cmd
}
