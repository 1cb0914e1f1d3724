// Command junkplugin is a resolver plugin that misbehaves the ways plugins
// do: it writes junk to stdout and malformed JSON log lines to stderr once
// it is serving. The host must neither lose the handshake nor crash.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/sdk"
)

type junk struct{}

func (junk) Info() sdk.Info {
	return sdk.Info{Name: "resolver-junk", Kind: sdk.KindResolver, Version: "0.0.1"}
}
func (junk) Schema() sdk.Schema { return sdk.Schema{} }
func (junk) Configure(context.Context, sdk.ConfigureRequest) sdk.Diagnostics {
	fmt.Fprintln(os.Stdout, "junk on stdout after the handshake")
	fmt.Fprintln(os.Stderr, `{"@level":"info","@message": truncated json`)
	fmt.Fprintln(os.Stderr, "plain text on stderr")
	return nil
}
func (junk) Health(context.Context) error { return nil }
func (junk) Close() error                 { return nil }
func (junk) Resolve(context.Context, string) ([]sdk.Node, error) {
	fmt.Fprintln(os.Stdout, "more junk")
	return []sdk.Node{{Address: "127.0.0.1:1", Priority: 1}}, nil
}

func main() {
	go func() {
		// Junk written while idle, too.
		for range time.Tick(50 * time.Millisecond) {
			fmt.Fprintln(os.Stderr, "{not json")
		}
	}()
	sdk.Serve(func(hclog.Logger) sdk.Component { return junk{} })
}
