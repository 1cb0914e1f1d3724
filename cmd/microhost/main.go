// Command microhost runs a node of a microhost service network and talks to
// a running one.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/microhost/microhost/cmd/microhost/cli"
	"github.com/microhost/microhost/host/node"
	"github.com/spf13/cobra"
)

func main() {
	if err := rootCommand().Execute(); err != nil {
		var diags *node.DiagnosticsError
		if errors.As(err, &diags) {
			fmt.Fprintln(os.Stderr, err) // already says "Error:" with its place in the file
		} else {
			fmt.Fprintln(os.Stderr, "Error:", err)
		}
		os.Exit(exitCode(err))
	}
}

// exitError carries an exit code other than 1 out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	if e, ok := err.(*exitError); ok {
		return e.code
	}
	return 1
}

func rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "microhost",
		Short: "A self-hosted service network: any gRPC client reaches any service by name",
		Long: `microhost joins nodes on many machines into one overlay over QUIC. Every node
learns which services live where, and any gRPC client calls any service by
name through its local node, over the cheapest route.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		runCommand(),
		validateCommand(),
		demoCommand(),
		pluginCommand(),
		caCommand(),
		versionCommand(),
		callCommand(),
	)
	root.AddCommand(cli.Commands()...)
	return root
}
