package sdk

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "github.com/microhost/microhost/sdk/proto/microhost/v1"
	"google.golang.org/grpc"
)

// ClientOptions say how a component client serves the host's callbacks.
type ClientOptions struct {
	// ServeHost makes h reachable by the component and returns the endpoint
	// to put in ConfigureRequest. Nil means the component gets no host.
	ServeHost func(h Host) (brokerID uint32, address string, err error)
}

// NewClient returns a client of the component of the given kind served on
// conn. The value implements Component and the interface of its kind
// (Tunnel, Router, Resolver or Proxy).
func NewClient(conn grpc.ClientConnInterface, kind Kind, opts ClientOptions) (Component, error) {
	base := newComponentClient(conn, kind)
	base.serveHost = opts.ServeHost
	switch kind {
	case KindTunnel:
		return newTunnelClient(base, conn), nil
	case KindRouter:
		return &routerClient{componentClient: base, rpc: pb.NewRouterClient(conn)}, nil
	case KindResolver:
		return &resolverClient{componentClient: base, rpc: pb.NewResolverClient(conn)}, nil
	case KindProxy:
		return &proxyClient{componentClient: base, rpc: pb.NewProxyClient(conn)}, nil
	}
	return nil, fmt.Errorf("unknown component kind %q", kind)
}

// componentClient implements Component over the Plugin service; the kind
// clients embed it.
type componentClient struct {
	kind      Kind
	rpc       pb.PluginClient
	serveHost func(Host) (uint32, string, error)
	info      Info
}

func newComponentClient(conn grpc.ClientConnInterface, kind Kind) *componentClient {
	return &componentClient{kind: kind, rpc: pb.NewPluginClient(conn)}
}

// Info returns what the component said of itself when last asked through
// FetchInfo, since the Component interface has no error to report.
func (c *componentClient) Info() Info { return c.info }

// FetchInfo asks the component for its Info and checks its kind.
func (c *componentClient) FetchInfo(ctx context.Context) (Info, error) {
	res, err := c.rpc.Info(ctx, &pb.InfoRequest{})
	if err != nil {
		return Info{}, fromStatus(err)
	}
	info := Info{Name: res.GetName(), Kind: Kind(res.GetKind()), Version: res.GetVersion(), Capabilities: res.GetCapabilities()}
	if info.Kind != c.kind {
		return info, fmt.Errorf("component %q is a %s, not a %s", info.Name, info.Kind, c.kind)
	}
	c.info = info
	return info, nil
}

// Schema returns the component's schema, or an empty one if it cannot be
// fetched; use FetchSchema to see the error.
func (c *componentClient) Schema() Schema {
	s, _ := c.FetchSchema(context.Background())
	return s
}

// FetchSchema asks the component for its config schema.
func (c *componentClient) FetchSchema(ctx context.Context) (Schema, error) {
	res, err := c.rpc.Schema(ctx, &pb.SchemaRequest{})
	if err != nil {
		return Schema{}, fromStatus(err)
	}
	return schemaFromPB(res), nil
}

func (c *componentClient) Configure(ctx context.Context, req ConfigureRequest) Diagnostics {
	pbReq := &pb.ConfigureRequest{ConfigJson: req.Config, Node: nodeConfigToPB(req.Node)}
	if req.Host != nil {
		if c.serveHost == nil {
			return Diagnostics{Errorf("", "cannot serve the host to the component", "this client has no way to serve host callbacks")}
		}
		id, addr, err := c.serveHost(req.Host)
		if err != nil {
			return Diagnostics{Errorf("", "cannot serve the host to the component", "%v", err)}
		}
		pbReq.HostBrokerId, pbReq.HostAddress = id, addr
	}
	res, err := c.rpc.Configure(ctx, pbReq)
	if err != nil {
		return Diagnostics{Errorf("", "configure failed", "%v", fromStatus(err))}
	}
	return diagnosticsFromPB(res.GetDiagnostics())
}

func (c *componentClient) Health(ctx context.Context) error {
	res, err := c.rpc.Health(ctx, &pb.HealthRequest{})
	if err != nil {
		return fromStatus(err)
	}
	if !res.GetServing() {
		if res.GetMessage() == "" {
			return errors.New("not serving")
		}
		return errors.New(res.GetMessage())
	}
	return nil
}

// Close asks the component to drain and release what it holds. The
// connection and process are the caller's to close afterwards.
func (c *componentClient) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	_, err := c.rpc.Close(ctx, &pb.CloseRequest{})
	return fromStatus(err)
}

// closeTimeout bounds a component's drain on Close.
const closeTimeout = 5 * time.Second

type resolverClient struct {
	*componentClient
	rpc pb.ResolverClient
}

func (c *resolverClient) Resolve(ctx context.Context, network string) ([]Node, error) {
	res, err := c.rpc.Resolve(ctx, &pb.ResolveRequest{Network: network})
	if err != nil {
		return nil, fromStatus(err)
	}
	var out []Node
	for _, n := range res.GetNodes() {
		out = append(out, Node{Address: n.GetAddress(), Priority: int(n.GetPriority())})
	}
	return out, nil
}

type proxyClient struct {
	*componentClient
	rpc pb.ProxyClient
}

func (c *proxyClient) Address(ctx context.Context) (string, error) {
	res, err := c.rpc.Address(ctx, &pb.AddressRequest{})
	if err != nil {
		return "", fromStatus(err)
	}
	return res.GetAddress(), nil
}

// MaxMessageSize is the message limit on every connection between the host
// and its plugins, gRPC or the tunnel's data path; gRPC's 4 MiB default is
// too small for session messages.
const MaxMessageSize = 256 << 20

// MessageSizeServerOptions raise a gRPC server's message limits.
func MessageSizeServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize)}
}

// MessageSizeDialOptions raise a gRPC client's message limits.
func MessageSizeDialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize))}
}
