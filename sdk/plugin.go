package sdk

import (
	"cmp"
	"context"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	pb "github.com/microhost/microhost/sdk/proto/microhost/v1"
	"google.golang.org/grpc"
)

// ProtocolVersion is the version of the plugin protocol; a host refuses a
// plugin that speaks another.
const ProtocolVersion = 1

// Handshake is the go-plugin handshake every microhost plugin uses.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "MICROHOST_PLUGIN",
	MagicCookieValue: "d6f3b0a2-microhost-component",
}

// PluginName is the name of the one plugin in every plugin binary's set.
const PluginName = "component"

// GRPCPlugin is the go-plugin glue for a component of any kind. A plugin
// sets Impl. A host dispenses a *PluginConn and builds its client with
// NewClient, so that it can keep one client across plugin restarts.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl Component
	// Logger is where the shim logs what it sees go wrong (a tunnel's data
	// path, say); hclog's default logger if nil.
	Logger hclog.Logger

	server *pluginServer
}

// GRPCServer serves Impl; host callbacks are dialled through the broker.
func (p *GRPCPlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	p.server = registerComponent(s, p.Impl, func(req *pb.ConfigureRequest) (*grpc.ClientConn, error) {
		if req.GetHostBrokerId() != 0 {
			return broker.DialWithOptions(req.GetHostBrokerId(), MessageSizeDialOptions()...)
		}
		return dialHostAddress(req.GetHostAddress())
	}, cmp.Or(p.Logger, hclog.Default()))
	return nil
}

// PluginConn is what a host gets from dispensing a plugin.
type PluginConn struct {
	Broker *plugin.GRPCBroker
	Conn   *grpc.ClientConn
}

// GRPCClient hands the host the plugin's connection and broker.
func (p *GRPCPlugin) GRPCClient(_ context.Context, broker *plugin.GRPCBroker, conn *grpc.ClientConn) (any, error) {
	return &PluginConn{Broker: broker, Conn: conn}, nil
}

// ServeHostOverBroker returns a ClientOptions.ServeHost that serves the
// host's callbacks to the plugin through broker.
func ServeHostOverBroker(broker *plugin.GRPCBroker) func(Host) (uint32, string, error) {
	return func(h Host) (uint32, string, error) {
		id := broker.NextId()
		go broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
			s := grpc.NewServer(append(opts, MessageSizeServerOptions()...)...)
			NewHostServer(h).Register(s)
			return s
		})
		return id, "", nil
	}
}
