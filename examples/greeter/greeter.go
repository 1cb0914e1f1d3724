// Package greeter is a small gRPC service for the demo and the examples.
package greeter

import (
	"context"
	"fmt"

	"github.com/microhost/microhost/examples/greeter/greeterpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// ServiceName is the gRPC service name of the greeter.
const ServiceName = "microhost.examples.greeter.Greeter"

type server struct {
	greeterpb.UnimplementedGreeterServer
	servedBy string
}

// Register adds the greeter, and server reflection, to s; replies name servedBy.
func Register(s *grpc.Server, servedBy string) {
	greeterpb.RegisterGreeterServer(s, &server{servedBy: servedBy})
	reflection.Register(s)
}

func (s *server) SayHello(_ context.Context, req *greeterpb.HelloRequest) (*greeterpb.HelloReply, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is empty: say who to greet")
	}
	return &greeterpb.HelloReply{Message: fmt.Sprintf("Hello, %s!", req.GetName()), ServedBy: s.servedBy}, nil
}
