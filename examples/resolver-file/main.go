// Command resolver-file is an example third-party microhost plugin, written
// only against the sdk: a resolver that reads a network's peers from a file.
//
//	resolver "file" {
//	  plugin = "./resolver-file"
//	  config { path = "/etc/microhost/peers" }
//	}
//
// The file is either the JSON answer of the HTTP resolver,
// {"nodes":[{"address":"host:port","priority":N}]}, or one peer per line:
// "host:port [priority]", with blank lines and # comments ignored. It is
// re-read on every Resolve, so edits take effect without a restart.
package main

import (
	"github.com/hashicorp/go-hclog"
	"github.com/microhost/microhost/sdk"
)

func main() {
	sdk.Serve(func(log hclog.Logger) sdk.Component { return newFileResolver(log) })
}
