package admin

import (
	"context"
	"errors"

	"github.com/microhost/microhost/host/admin/adminpb"
	"github.com/microhost/microhost/host/registry"
	"github.com/microhost/microhost/sdk"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// NewServer returns a gRPC server with the admin API (and server
// reflection) registered. The host may register more services on it, such
// as sdk.HostServer for standalone components, before serving it on a
// listener from Listen.
func NewServer(node Node, opts ...grpc.ServerOption) *grpc.Server {
	s := grpc.NewServer(opts...)
	Register(s, node)
	reflection.Register(s)
	return s
}

// Register adds the admin API for node to an existing gRPC server.
func Register(s grpc.ServiceRegistrar, node Node) {
	adminpb.RegisterAdminServer(s, &server{node: node})
}

type server struct {
	adminpb.UnimplementedAdminServer
	node Node
}

func (s *server) Info(context.Context, *adminpb.InfoRequest) (*adminpb.InfoResponse, error) {
	return &adminpb.InfoResponse{Id: s.node.ID(), Network: s.node.Network()}, nil
}

func (s *server) Nodes(ctx context.Context, _ *adminpb.NodesRequest) (*adminpb.NodesResponse, error) {
	nodes, err := s.node.Nodes(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminpb.NodesResponse{Nodes: convertAll(nodes, nodeInfoToPB)}, nil
}

func (s *server) Graph(ctx context.Context, _ *adminpb.GraphRequest) (*adminpb.GraphResponse, error) {
	g, err := s.node.Graph(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminpb.GraphResponse{Local: g.Local, Nodes: convertAll(g.Nodes, nodeInfoToPB), Edges: convertAll(g.Edges, edgeToPB)}, nil
}

func (s *server) Routes(ctx context.Context, req *adminpb.RoutesRequest) (*adminpb.RoutesResponse, error) {
	routes, err := s.node.Routes(ctx, sdk.QueryFromPB(req.GetQuery()))
	if err != nil && !errors.Is(err, sdk.ErrNotFound) { // no match is an empty list
		return nil, toStatus(err)
	}
	return &adminpb.RoutesResponse{Routes: convertAll(routes, sdk.RouteToPB)}, nil
}

func (s *server) Connections(ctx context.Context, _ *adminpb.ConnectionsRequest) (*adminpb.ConnectionsResponse, error) {
	links, err := s.node.Links(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminpb.ConnectionsResponse{Links: convertAll(links, sdk.LinkToPB)}, nil
}

func (s *server) Services(ctx context.Context, _ *adminpb.ServicesRequest) (*adminpb.ServicesResponse, error) {
	svcs, err := s.node.Services(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminpb.ServicesResponse{Services: convertAll(svcs, serviceInfoToPB)}, nil
}

func (s *server) Register(ctx context.Context, req *adminpb.RegisterRequest) (*adminpb.RegisterResponse, error) {
	svc, ttl := sdk.ServiceFromPB(req.GetService()), sdk.DurationFromPB(req.GetTtl())
	if err := registry.Validate(svc, ttl); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.node.Register(ctx, svc, ttl); err != nil {
		return nil, toStatus(err)
	}
	return &adminpb.RegisterResponse{}, nil
}

func (s *server) Deregister(ctx context.Context, req *adminpb.DeregisterRequest) (*adminpb.DeregisterResponse, error) {
	if err := checkInstance(req.GetName(), req.GetAddress()); err != nil {
		return nil, err
	}
	if err := s.node.Deregister(ctx, req.GetName(), req.GetAddress()); err != nil {
		return nil, toStatus(err)
	}
	return &adminpb.DeregisterResponse{}, nil
}

func (s *server) Heartbeat(ctx context.Context, req *adminpb.HeartbeatRequest) (*adminpb.HeartbeatResponse, error) {
	if err := checkInstance(req.GetName(), req.GetAddress()); err != nil {
		return nil, err
	}
	if err := s.node.Heartbeat(ctx, req.GetName(), req.GetAddress()); err != nil {
		return nil, toStatus(err)
	}
	return &adminpb.HeartbeatResponse{}, nil
}

func (s *server) Plugins(ctx context.Context, _ *adminpb.PluginsRequest) (*adminpb.PluginsResponse, error) {
	plugins, err := s.node.Plugins(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminpb.PluginsResponse{Plugins: convertAll(plugins, pluginToPB)}, nil
}

func (s *server) Damping(ctx context.Context, _ *adminpb.DampingRequest) (*adminpb.DampingResponse, error) {
	states, err := s.node.Damping(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminpb.DampingResponse{States: convertAll(states, sdk.DampingToPB)}, nil
}

func (s *server) ProxyAddress(ctx context.Context, _ *adminpb.ProxyAddressRequest) (*adminpb.ProxyAddressResponse, error) {
	addr, err := s.node.ProxyAddress(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminpb.ProxyAddressResponse{Address: addr}, nil
}

func checkInstance(name, address string) error {
	if name == "" || address == "" {
		return status.Error(codes.InvalidArgument, "both the service name and the instance address are required")
	}
	return nil
}

// toStatus gives the node's errors the gRPC code a client can act on.
func toStatus(err error) error {
	code := codes.Unknown
	switch {
	case errors.Is(err, sdk.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, registry.ErrStatic):
		code = codes.FailedPrecondition
	case errors.Is(err, registry.ErrClosed):
		code = codes.Unavailable
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	default:
		if _, ok := status.FromError(err); ok {
			return err
		}
	}
	return status.Error(code, err.Error())
}
