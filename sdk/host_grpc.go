package sdk

import (
	"context"
	"errors"

	pb "github.com/microhost/microhost/sdk/proto/microhost/v1"
	"google.golang.org/grpc"
)

// HostServer serves a Host to components over gRPC.
type HostServer struct {
	pb.UnimplementedHostServer
	host Host
}

// NewHostServer wraps h. h.Tunnel must return the host's client of its
// tunnel plugin: its data path is what components are told to dial.
func NewHostServer(h Host) *HostServer {
	return &HostServer{host: h}
}

// Register adds the Host service to s.
func (s *HostServer) Register(g *grpc.Server) { pb.RegisterHostServer(g, s) }

func (s *HostServer) WatchServices(_ *pb.HostEmpty, stream grpc.ServerStreamingServer[pb.ServiceEvent]) error {
	w, err := s.host.WatchServices(stream.Context())
	if err != nil {
		return toStatus(err)
	}
	defer w.Stop()
	return forward(stream.Context(), w.Next, func(e ServiceEvent) *pb.ServiceEvent {
		return &pb.ServiceEvent{Type: pb.EventType(e.Type), Service: ServiceToPB(e.Service)}
	}, stream.Send)
}

func (s *HostServer) WatchRoutes(_ *pb.HostEmpty, stream grpc.ServerStreamingServer[pb.Event]) error {
	w, err := s.host.WatchRoutes(stream.Context())
	if err != nil {
		return toStatus(err)
	}
	defer w.Stop()
	return forward(stream.Context(), w.Next, EventToPB, stream.Send)
}

// TunnelDataPath is asked afresh on every call, because the tunnel plugin
// may have been restarted with a new endpoint.
func (s *HostServer) TunnelDataPath(ctx context.Context, _ *pb.HostEmpty) (*pb.DataPathInfo, error) {
	t, err := s.host.Tunnel(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	info, err := TunnelDataPath(ctx, t)
	return info, toStatus(err)
}

var errTunnelInProcess = errors.New("the tunnel runs in this process: it has no data path to hand out")

// TunnelDataPath asks a tunnel client where its data path is.
func TunnelDataPath(ctx context.Context, t Tunnel) (*pb.DataPathInfo, error) {
	switch t := t.(type) {
	case *tunnelClient:
		info, err := t.rpc.DataPath(ctx, &pb.TunnelEmpty{})
		return info, fromStatus(err)
	case *dataPathTunnel:
		return t.info, nil
	}
	return nil, errTunnelInProcess
}

// hostClient implements Host for a component, over gRPC.
type hostClient struct {
	rpc pb.HostClient
}

func newHostClient(conn grpc.ClientConnInterface) *hostClient {
	return &hostClient{rpc: pb.NewHostClient(conn)}
}

func (c *hostClient) WatchServices(ctx context.Context) (ServiceWatcher, error) {
	return openStream(ctx, func(ctx context.Context) (grpc.ServerStreamingClient[pb.ServiceEvent], error) {
		return c.rpc.WatchServices(ctx, &pb.HostEmpty{})
	}, func(e *pb.ServiceEvent) ServiceEvent {
		return ServiceEvent{Type: EventType(e.GetType()), Service: ServiceFromPB(e.GetService())}
	})
}

func (c *hostClient) WatchRoutes(ctx context.Context) (Watcher, error) {
	return openStream(ctx, func(ctx context.Context) (grpc.ServerStreamingClient[pb.Event], error) {
		return c.rpc.WatchRoutes(ctx, &pb.HostEmpty{})
	}, EventFromPB)
}

// Tunnel connects straight to the tunnel plugin's data path.
func (c *hostClient) Tunnel(ctx context.Context) (Tunnel, error) {
	info, err := c.rpc.TunnelDataPath(ctx, &pb.HostEmpty{})
	if err != nil {
		return nil, fromStatus(err)
	}
	return DialDataPath(info)
}
