package sdk

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/hashicorp/go-hclog"
	pb "github.com/microhost/microhost/sdk/proto/microhost/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// tunnelServer serves a tunnel's link management over gRPC; its sessions
// go over the data path, which it starts when first asked where it is.
type tunnelServer struct {
	pb.UnimplementedTunnelServer
	impl Tunnel
	log  hclog.Logger

	mu      sync.Mutex
	data    *dataPath
	stopped bool
}

func newTunnelServer(impl Tunnel, log hclog.Logger) *tunnelServer {
	return &tunnelServer{impl: impl, log: log}
}

func (s *tunnelServer) Connect(ctx context.Context, req *pb.PeerAddress) (*pb.TunnelEmpty, error) {
	return &pb.TunnelEmpty{}, toStatus(s.impl.Connect(ctx, req.GetAddress()))
}

func (s *tunnelServer) Disconnect(ctx context.Context, req *pb.PeerAddress) (*pb.TunnelEmpty, error) {
	return &pb.TunnelEmpty{}, toStatus(s.impl.Disconnect(ctx, req.GetAddress()))
}

func (s *tunnelServer) Links(ctx context.Context, _ *pb.TunnelEmpty) (*pb.LinkList, error) {
	links, err := s.impl.Links(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.LinkList{}
	for _, l := range links {
		out.Links = append(out.Links, LinkToPB(l))
	}
	return out, nil
}

func (s *tunnelServer) DataPath(context.Context, *pb.TunnelEmpty) (*pb.DataPathInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, status.Error(codes.FailedPrecondition, "the tunnel is closing: it has no data path")
	}
	if s.data == nil {
		d, err := startDataPath(s.impl, s.log)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "cannot start the tunnel data path: %v", err)
		}
		s.data = d
	}
	return &pb.DataPathInfo{Address: "unix:" + s.data.socket, Token: s.data.token}, nil
}

func (s *tunnelServer) stopDataPath() {
	s.mu.Lock()
	d := s.data
	s.data, s.stopped = nil, true
	s.mu.Unlock()
	if d != nil {
		d.stop()
	}
}

// DialDataPath returns a client of a tunnel's data path. It carries
// sessions only: Dial and Listen work, the rest of Tunnel says so. Closing
// it closes every session and listener opened through it.
func DialDataPath(info *pb.DataPathInfo) (Tunnel, error) {
	if _, err := unixPath(info); err != nil {
		return nil, err
	}
	return &dataPathTunnel{info: info, sessions: &dataPathClient{info: info, open: &openSet{}}}, nil
}

// dataPathTunnel is a tunnel client on the data path alone.
type dataPathTunnel struct {
	info     *pb.DataPathInfo
	sessions *dataPathClient
}

var errNotOnDataPath = errors.New("the tunnel data path carries sessions only: ask the host for the rest")

func (t *dataPathTunnel) Info() Info     { return Info{Kind: KindTunnel} }
func (t *dataPathTunnel) Schema() Schema { return Schema{} }
func (t *dataPathTunnel) Configure(context.Context, ConfigureRequest) Diagnostics {
	return Diagnostics{Errorf("", "cannot configure the tunnel", "%v", errNotOnDataPath)}
}
func (t *dataPathTunnel) Health(context.Context) error             { return errNotOnDataPath }
func (t *dataPathTunnel) Connect(context.Context, string) error    { return errNotOnDataPath }
func (t *dataPathTunnel) Disconnect(context.Context, string) error { return errNotOnDataPath }
func (t *dataPathTunnel) Links(context.Context) ([]Link, error)    { return nil, errNotOnDataPath }
func (t *dataPathTunnel) Listen(ctx context.Context, channel string) (Listener, error) {
	return t.sessions.listen(ctx, channel)
}
func (t *dataPathTunnel) Dial(ctx context.Context, channel string, opts DialOptions) (Session, error) {
	return t.sessions.dial(ctx, channel, opts)
}

func (t *dataPathTunnel) Close() error {
	t.sessions.open.closeAll()
	t.sessions.idle.close()
	return nil
}

// tunnelClient is the host's client of a tunnel plugin: links over gRPC,
// sessions over the data path, which it asks the plugin for again after a
// restart moved it.
type tunnelClient struct {
	*componentClient
	rpc      pb.TunnelClient
	sessions *dataPathClient
}

func newTunnelClient(base *componentClient, conn grpc.ClientConnInterface) *tunnelClient {
	rpc := pb.NewTunnelClient(conn)
	return &tunnelClient{componentClient: base, rpc: rpc, sessions: &dataPathClient{
		locate: func(ctx context.Context) (*pb.DataPathInfo, error) {
			info, err := rpc.DataPath(ctx, &pb.TunnelEmpty{})
			if err != nil {
				return nil, fmt.Errorf("tunnel data path: %w", fromStatus(err))
			}
			return info, nil
		},
	}}
}

func (c *tunnelClient) Connect(ctx context.Context, address string) error {
	_, err := c.rpc.Connect(ctx, &pb.PeerAddress{Address: address})
	return fromStatus(err)
}

func (c *tunnelClient) Disconnect(ctx context.Context, address string) error {
	_, err := c.rpc.Disconnect(ctx, &pb.PeerAddress{Address: address})
	return fromStatus(err)
}

func (c *tunnelClient) Links(ctx context.Context) ([]Link, error) {
	res, err := c.rpc.Links(ctx, &pb.TunnelEmpty{})
	if err != nil {
		return nil, fromStatus(err)
	}
	var out []Link
	for _, l := range res.GetLinks() {
		out = append(out, LinkFromPB(l))
	}
	return out, nil
}

// Listen opens the listener; it outlives ctx, which bounds only the wait
// for it to be in place.
func (c *tunnelClient) Listen(ctx context.Context, channel string) (Listener, error) {
	return c.sessions.listen(ctx, channel)
}

// Dial opens a session; it outlives ctx, which bounds only the wait for it
// to open.
func (c *tunnelClient) Dial(ctx context.Context, channel string, opts DialOptions) (Session, error) {
	return c.sessions.dial(ctx, channel, opts)
}
