package sdk

import (
	"context"

	pb "github.com/microhost/microhost/sdk/proto/microhost/v1"
	"google.golang.org/grpc"
)

type routerServer struct {
	pb.UnimplementedRouterServer
	impl Router
}

func (s *routerServer) Create(ctx context.Context, r *pb.Route) (*pb.RouterEmpty, error) {
	return &pb.RouterEmpty{}, toStatus(s.impl.Create(ctx, RouteFromPB(r)))
}

func (s *routerServer) Update(ctx context.Context, r *pb.Route) (*pb.RouterEmpty, error) {
	return &pb.RouterEmpty{}, toStatus(s.impl.Update(ctx, RouteFromPB(r)))
}

func (s *routerServer) Delete(ctx context.Context, r *pb.Route) (*pb.RouterEmpty, error) {
	return &pb.RouterEmpty{}, toStatus(s.impl.Delete(ctx, RouteFromPB(r)))
}

func (s *routerServer) List(ctx context.Context, _ *pb.RouterEmpty) (*pb.Routes, error) {
	routes, err := s.impl.List(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.Routes{Routes: routesToPB(routes)}, nil
}

func (s *routerServer) Lookup(ctx context.Context, q *pb.Query) (*pb.Routes, error) {
	routes, err := s.impl.Lookup(ctx, QueryFromPB(q))
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.Routes{Routes: routesToPB(routes)}, nil
}

func (s *routerServer) Watch(_ *pb.RouterEmpty, stream grpc.ServerStreamingServer[pb.Event]) error {
	w, err := s.impl.Watch(stream.Context())
	if err != nil {
		return toStatus(err)
	}
	defer w.Stop()
	return forward(stream.Context(), w.Next, EventToPB, stream.Send)
}

func (s *routerServer) Advertise(_ *pb.RouterEmpty, stream grpc.ServerStreamingServer[pb.Advert]) error {
	a, err := s.impl.Advertise(stream.Context())
	if err != nil {
		return toStatus(err)
	}
	defer a.Stop()
	return forward(stream.Context(), a.Next, AdvertToPB, stream.Send)
}

func (s *routerServer) Process(ctx context.Context, a *pb.Advert) (*pb.RouterEmpty, error) {
	return &pb.RouterEmpty{}, toStatus(s.impl.Process(ctx, AdvertFromPB(a)))
}

func (s *routerServer) Solicit(ctx context.Context, _ *pb.RouterEmpty) (*pb.Advert, error) {
	a, err := s.impl.Solicit(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return AdvertToPB(a), nil
}

func (s *routerServer) Damping(ctx context.Context, _ *pb.RouterEmpty) (*pb.DampingStates, error) {
	states, err := s.impl.Damping(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.DampingStates{}
	for _, d := range states {
		out.States = append(out.States, DampingToPB(d))
	}
	return out, nil
}

// forward pumps a Go stream into a gRPC stream until either ends.
func forward[T any, P any](ctx context.Context, next func(context.Context) (T, error), conv func(T) P, send func(P) error) error {
	for {
		v, err := next(ctx)
		if err != nil {
			return toStatus(err)
		}
		if err := send(conv(v)); err != nil {
			return err
		}
	}
}

type routerClient struct {
	*componentClient
	rpc pb.RouterClient
}

func (c *routerClient) Create(ctx context.Context, r Route) error {
	_, err := c.rpc.Create(ctx, RouteToPB(r))
	return fromStatus(err)
}

func (c *routerClient) Update(ctx context.Context, r Route) error {
	_, err := c.rpc.Update(ctx, RouteToPB(r))
	return fromStatus(err)
}

func (c *routerClient) Delete(ctx context.Context, r Route) error {
	_, err := c.rpc.Delete(ctx, RouteToPB(r))
	return fromStatus(err)
}

func (c *routerClient) List(ctx context.Context) ([]Route, error) {
	res, err := c.rpc.List(ctx, &pb.RouterEmpty{})
	if err != nil {
		return nil, fromStatus(err)
	}
	return routesFromPB(res.GetRoutes()), nil
}

func (c *routerClient) Lookup(ctx context.Context, q Query) ([]Route, error) {
	res, err := c.rpc.Lookup(ctx, QueryToPB(q))
	if err != nil {
		return nil, fromStatus(err)
	}
	return routesFromPB(res.GetRoutes()), nil
}

func (c *routerClient) Watch(ctx context.Context) (Watcher, error) {
	return openStream(ctx, func(ctx context.Context) (grpc.ServerStreamingClient[pb.Event], error) {
		return c.rpc.Watch(ctx, &pb.RouterEmpty{})
	}, EventFromPB)
}

func (c *routerClient) Advertise(ctx context.Context) (AdvertStream, error) {
	return openStream(ctx, func(ctx context.Context) (grpc.ServerStreamingClient[pb.Advert], error) {
		return c.rpc.Advertise(ctx, &pb.RouterEmpty{})
	}, AdvertFromPB)
}

func (c *routerClient) Process(ctx context.Context, a *Advert) error {
	_, err := c.rpc.Process(ctx, AdvertToPB(a))
	return fromStatus(err)
}

func (c *routerClient) Solicit(ctx context.Context) (*Advert, error) {
	res, err := c.rpc.Solicit(ctx, &pb.RouterEmpty{})
	if err != nil {
		return nil, fromStatus(err)
	}
	return AdvertFromPB(res), nil
}

func (c *routerClient) Damping(ctx context.Context) ([]DampingState, error) {
	res, err := c.rpc.Damping(ctx, &pb.RouterEmpty{})
	if err != nil {
		return nil, fromStatus(err)
	}
	var out []DampingState
	for _, d := range res.GetStates() {
		out = append(out, DampingFromPB(d))
	}
	return out, nil
}

// clientStream adapts a server-streaming call to the Next/Stop shape of
// Watcher, AdvertStream and ServiceWatcher.
type clientStream[P any, T any] struct {
	stream grpc.ServerStreamingClient[P]
	conv   func(*P) T
	cancel context.CancelFunc
}

// openStream opens the stream under ctx: it ends when ctx does or on Stop.
func openStream[P any, T any](ctx context.Context, open func(context.Context) (grpc.ServerStreamingClient[P], error), conv func(*P) T) (*clientStream[P, T], error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := open(ctx)
	if err != nil {
		cancel()
		return nil, fromStatus(err)
	}
	return &clientStream[P, T]{stream: stream, conv: conv, cancel: cancel}, nil
}

// Next returns the next item. Like the in-process implementations, ending
// ctx ends the whole stream, not only this wait.
func (s *clientStream[P, T]) Next(ctx context.Context) (T, error) {
	stop := context.AfterFunc(ctx, s.cancel)
	defer stop()
	var zero T
	v, err := s.stream.Recv()
	if err != nil {
		return zero, fromStatus(err)
	}
	return s.conv(v), nil
}

func (s *clientStream[P, T]) Stop() { s.cancel() }
