package supervisor

import (
	"context"
	"errors"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// swapConn is a gRPC connection whose target can be replaced: component
// clients built on it keep working when their plugin process is restarted.
// Calls in flight at the swap fail and their callers retry.
type swapConn struct {
	conn atomic.Pointer[grpc.ClientConn]
}

var errNoPlugin = errors.New("the plugin is not running")

func (s *swapConn) current() (*grpc.ClientConn, error) {
	c := s.conn.Load()
	if c == nil {
		return nil, status.Error(codes.Unavailable, errNoPlugin.Error())
	}
	return c, nil
}

func (s *swapConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	c, err := s.current()
	if err != nil {
		return err
	}
	return c.Invoke(ctx, method, args, reply, opts...)
}

func (s *swapConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	c, err := s.current()
	if err != nil {
		return nil, err
	}
	return c.NewStream(ctx, desc, method, opts...)
}
