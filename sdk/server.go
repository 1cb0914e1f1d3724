package sdk

import (
	"context"
	"strconv"
	"sync"

	"github.com/hashicorp/go-hclog"
	pb "github.com/microhost/microhost/sdk/proto/microhost/v1"
	"google.golang.org/grpc"
)

// hostDialer connects a component to the host that configures it. Under
// go-plugin it dials the broker; standalone it dials an address.
type hostDialer func(req *pb.ConfigureRequest) (*grpc.ClientConn, error)

// registerComponent serves c on s: the Plugin service every component has,
// plus the service of c's kind. log is where the shim itself logs.
func registerComponent(s *grpc.Server, c Component, dial hostDialer, log hclog.Logger) *pluginServer {
	ps := &pluginServer{impl: c, dial: dial}
	pb.RegisterPluginServer(s, ps)
	switch impl := c.(type) {
	case Tunnel:
		ps.tunnel = newTunnelServer(impl, log)
		pb.RegisterTunnelServer(s, ps.tunnel)
	case Router:
		pb.RegisterRouterServer(s, &routerServer{impl: impl})
	case Resolver:
		pb.RegisterResolverServer(s, &resolverServer{impl: impl})
	case Proxy:
		pb.RegisterProxyServer(s, &proxyServer{impl: impl})
	}
	return ps
}

type pluginServer struct {
	pb.UnimplementedPluginServer
	impl   Component
	dial   hostDialer
	tunnel *tunnelServer // set for tunnels: close stops their data path

	closeOnce sync.Once
	closeErr  error

	mu       sync.Mutex
	hostConn *grpc.ClientConn
	hostKey  string
}

func (s *pluginServer) Info(context.Context, *pb.InfoRequest) (*pb.InfoResponse, error) {
	i := s.impl.Info()
	return &pb.InfoResponse{Name: i.Name, Kind: string(i.Kind), Version: i.Version, Capabilities: i.Capabilities}, nil
}

func (s *pluginServer) Schema(context.Context, *pb.SchemaRequest) (*pb.SchemaResponse, error) {
	return schemaToPB(s.impl.Schema()), nil
}

func (s *pluginServer) Configure(ctx context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	host, err := s.host(req)
	if err != nil {
		return &pb.ConfigureResponse{Diagnostics: diagnosticsToPB(Diagnostics{
			Errorf("", "cannot reach the host", "%v", err),
		})}, nil
	}
	diags := s.impl.Configure(ctx, ConfigureRequest{
		Config: req.GetConfigJson(),
		Node:   nodeConfigFromPB(req.GetNode()),
		Host:   host,
	})
	return &pb.ConfigureResponse{Diagnostics: diagnosticsToPB(diags)}, nil
}

// host returns a client of the host's callbacks, reusing the connection
// across re-configurations that name the same endpoint.
func (s *pluginServer) host(req *pb.ConfigureRequest) (Host, error) {
	if req.GetHostBrokerId() == 0 && req.GetHostAddress() == "" {
		return nil, nil
	}
	key := req.GetHostAddress()
	if req.GetHostBrokerId() != 0 {
		key = "broker:" + strconv.FormatUint(uint64(req.GetHostBrokerId()), 10)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hostConn == nil || s.hostKey != key {
		if s.hostConn != nil {
			s.hostConn.Close()
		}
		conn, err := s.dial(req)
		if err != nil {
			return nil, err
		}
		s.hostConn, s.hostKey = conn, key
	}
	return newHostClient(s.hostConn), nil
}

func (s *pluginServer) Health(ctx context.Context, _ *pb.HealthRequest) (*pb.HealthResponse, error) {
	if err := s.impl.Health(ctx); err != nil {
		return &pb.HealthResponse{Serving: false, Message: err.Error()}, nil
	}
	return &pb.HealthResponse{Serving: true}, nil
}

func (s *pluginServer) Close(context.Context, *pb.CloseRequest) (*pb.CloseResponse, error) {
	return &pb.CloseResponse{}, toStatus(s.close())
}

// close releases what the shim holds and the component, once.
func (s *pluginServer) close() error {
	s.closeOnce.Do(func() {
		if s.tunnel != nil {
			s.tunnel.stopDataPath()
		}
		s.closeErr = s.impl.Close()
		s.mu.Lock()
		if s.hostConn != nil {
			s.hostConn.Close()
		}
		s.mu.Unlock()
	})
	return s.closeErr
}

type resolverServer struct {
	pb.UnimplementedResolverServer
	impl Resolver
}

func (s *resolverServer) Resolve(ctx context.Context, req *pb.ResolveRequest) (*pb.ResolveResponse, error) {
	nodes, err := s.impl.Resolve(ctx, req.GetNetwork())
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.ResolveResponse{}
	for _, n := range nodes {
		out.Nodes = append(out.Nodes, &pb.Node{Address: n.Address, Priority: int32(n.Priority)})
	}
	return out, nil
}

type proxyServer struct {
	pb.UnimplementedProxyServer
	impl Proxy
}

func (s *proxyServer) Address(ctx context.Context, _ *pb.AddressRequest) (*pb.AddressResponse, error) {
	addr, err := s.impl.Address(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.AddressResponse{Address: addr}, nil
}
