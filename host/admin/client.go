package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/microhost/microhost/host/admin/adminpb"
	"github.com/microhost/microhost/sdk"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

var (
	// ErrUnreachable is wrapped by a Client's errors when no admin API
	// answers at its address.
	ErrUnreachable = errors.New("cannot reach the admin API")
	// ErrRejected is wrapped by a Client's errors when the node refused the
	// request as invalid: trying again will not help.
	ErrRejected = errors.New("rejected by the node")
)

// maxMessage bounds replies: a large network has large route tables.
const maxMessage = 64 << 20

// Client calls the admin API of a node.
type Client struct {
	addr string
	conn *grpc.ClientConn
	rpc  adminpb.AdminClient
}

// Dial returns a client of the admin API at addr ("HOST:PORT" or
// "unix:/path"). It does not connect until the first call.
func Dial(addr string, opts ...grpc.DialOption) (*Client, error) {
	network, address, err := splitAddress(addr)
	if err != nil {
		return nil, err
	}
	target := "passthrough:///" + address
	if network == "unix" {
		target = "unix://" + address
		if address[0] != '/' {
			target = "unix:" + address // relative path
		}
	}
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage)),
	}, opts...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("admin address %q: %w", addr, err)
	}
	return &Client{addr: addr, conn: conn, rpc: adminpb.NewAdminClient(conn)}, nil
}

// Address is the address the client was dialled with.
func (c *Client) Address() string { return c.addr }

// Close releases the connection.
func (c *Client) Close() error { return c.conn.Close() }

// fromStatus turns a gRPC status back into an error callers can test.
func (c *Client) fromStatus(err error) error {
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch s.Code() {
	case codes.Unavailable:
		return fmt.Errorf("%w at %s: %s", ErrUnreachable, c.addr, s.Message())
	case codes.NotFound:
		return fmt.Errorf("%s: %w", s.Message(), sdk.ErrNotFound)
	case codes.InvalidArgument, codes.FailedPrecondition:
		return fmt.Errorf("%s (%w)", s.Message(), ErrRejected)
	case codes.Canceled:
		return fmt.Errorf("%s: %w", s.Message(), context.Canceled)
	case codes.DeadlineExceeded:
		return fmt.Errorf("admin API at %s: %s: %w", c.addr, s.Message(), context.DeadlineExceeded)
	}
	return errors.New(s.Message())
}

// Info returns the node's id and network name.
func (c *Client) Info(ctx context.Context) (id, network string, err error) {
	resp, err := c.rpc.Info(ctx, &adminpb.InfoRequest{})
	if err != nil {
		return "", "", c.fromStatus(err)
	}
	return resp.GetId(), resp.GetNetwork(), nil
}

func (c *Client) Nodes(ctx context.Context) ([]NodeInfo, error) {
	resp, err := c.rpc.Nodes(ctx, &adminpb.NodesRequest{})
	if err != nil {
		return nil, c.fromStatus(err)
	}
	return convertAll(resp.GetNodes(), nodeInfoFromPB), nil
}

func (c *Client) Graph(ctx context.Context) (Graph, error) {
	resp, err := c.rpc.Graph(ctx, &adminpb.GraphRequest{})
	if err != nil {
		return Graph{}, c.fromStatus(err)
	}
	return Graph{Local: resp.GetLocal(), Nodes: convertAll(resp.GetNodes(), nodeInfoFromPB), Edges: convertAll(resp.GetEdges(), edgeFromPB)}, nil
}

// Routes returns the routes matching q; none is an empty list, not an error.
func (c *Client) Routes(ctx context.Context, q sdk.Query) ([]sdk.Route, error) {
	resp, err := c.rpc.Routes(ctx, &adminpb.RoutesRequest{Query: sdk.QueryToPB(q)})
	if err != nil {
		return nil, c.fromStatus(err)
	}
	return convertAll(resp.GetRoutes(), sdk.RouteFromPB), nil
}

func (c *Client) Links(ctx context.Context) ([]sdk.Link, error) {
	resp, err := c.rpc.Connections(ctx, &adminpb.ConnectionsRequest{})
	if err != nil {
		return nil, c.fromStatus(err)
	}
	return convertAll(resp.GetLinks(), sdk.LinkFromPB), nil
}

func (c *Client) Services(ctx context.Context) ([]ServiceInfo, error) {
	resp, err := c.rpc.Services(ctx, &adminpb.ServicesRequest{})
	if err != nil {
		return nil, c.fromStatus(err)
	}
	return convertAll(resp.GetServices(), serviceInfoFromPB), nil
}

func (c *Client) Register(ctx context.Context, svc sdk.Service, ttl time.Duration) error {
	_, err := c.rpc.Register(ctx, &adminpb.RegisterRequest{Service: sdk.ServiceToPB(svc), Ttl: sdk.DurationToPB(ttl)})
	if err != nil {
		return c.fromStatus(err)
	}
	return nil
}

func (c *Client) Deregister(ctx context.Context, name, address string) error {
	_, err := c.rpc.Deregister(ctx, &adminpb.DeregisterRequest{Name: name, Address: address})
	if err != nil {
		return c.fromStatus(err)
	}
	return nil
}

func (c *Client) Heartbeat(ctx context.Context, name, address string) error {
	_, err := c.rpc.Heartbeat(ctx, &adminpb.HeartbeatRequest{Name: name, Address: address})
	if err != nil {
		return c.fromStatus(err)
	}
	return nil
}

func (c *Client) Plugins(ctx context.Context) ([]PluginStatus, error) {
	resp, err := c.rpc.Plugins(ctx, &adminpb.PluginsRequest{})
	if err != nil {
		return nil, c.fromStatus(err)
	}
	return convertAll(resp.GetPlugins(), pluginFromPB), nil
}

func (c *Client) Damping(ctx context.Context) ([]sdk.DampingState, error) {
	resp, err := c.rpc.Damping(ctx, &adminpb.DampingRequest{})
	if err != nil {
		return nil, c.fromStatus(err)
	}
	return convertAll(resp.GetStates(), sdk.DampingFromPB), nil
}

func (c *Client) ProxyAddress(ctx context.Context) (string, error) {
	resp, err := c.rpc.ProxyAddress(ctx, &adminpb.ProxyAddressRequest{})
	if err != nil {
		return "", c.fromStatus(err)
	}
	return resp.GetAddress(), nil
}
