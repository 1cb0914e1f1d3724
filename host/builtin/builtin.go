// Package builtin lists the plugins compiled into the microhost binary.
// They run out of process like any other plugin: the host re-executes its
// own binary as `microhost plugin serve NAME`.
package builtin

import (
	"sort"

	"github.com/hashicorp/go-hclog"
	proxyrpc "github.com/microhost/microhost/plugins/proxy-rpc"
	resolverdns "github.com/microhost/microhost/plugins/resolver-dns"
	resolverhttp "github.com/microhost/microhost/plugins/resolver-http"
	routermemory "github.com/microhost/microhost/plugins/router-memory"
	tunnelquic "github.com/microhost/microhost/plugins/tunnel-quic"
	"github.com/microhost/microhost/sdk"
)

// Plugins maps builtin names ("<kind>-<type>") to their constructors.
var Plugins = map[string]func(hclog.Logger) sdk.Component{
	"tunnel-quic":   func(l hclog.Logger) sdk.Component { return tunnelquic.New(l) },
	"router-memory": func(l hclog.Logger) sdk.Component { return routermemory.New(l) },
	"resolver-dns":  func(l hclog.Logger) sdk.Component { return resolverdns.New(l) },
	"resolver-http": func(l hclog.Logger) sdk.Component { return resolverhttp.New(l) },
	"proxy-rpc":     func(l hclog.Logger) sdk.Component { return proxyrpc.New(l) },
}

// Names lists the builtins, sorted.
func Names() []string {
	names := make([]string, 0, len(Plugins))
	for n := range Plugins {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
